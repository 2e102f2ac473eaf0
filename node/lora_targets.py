"""Which layers of a base model LoRA adapts, and wrapping the base with LoRA.

Callers may rely on:

- `default_targets(family, model)`: the q and v projections of a known family
  (`DEFAULT_TARGETS`), else derived from the model's attention layers
  (`derive_targets`), else every linear layer but the output head (`all-linear`);
- `check_targets` refuses, before anything is built, a --targets name that matches no
  layer LoRA can adapt (listing the model's layer names), `all-linear` combined with
  other names, and the input embeddings or output head of a model that ties them;
- `wrap_lora` applies one LoRA shape with a fixed seed: every node that uses the same
  (base, LoRA config, seed) starts from identical adapter tensors, which lets the swarm
  skip sending a first full copy.

Errors are `model_source.ModelError` (one line, with a hint).
"""

from __future__ import annotations

import torch
from torch import nn

from declora.node.model_source import ModelError
from declora.node.models import BaseModel, Task

ALL_LINEAR = "all-linear"  # every linear layer but the output head (PEFT's shorthand)
QV = ("q_proj", "v_proj")
DEFAULT_TARGETS = {
    "bert": ("query", "value"),
    "llama": QV,
    "qwen2": QV,
    "mistral": QV,
    "gemma": QV,
    "gemma2": QV,
    "phi3": ("qkv_proj",),  # q, k and v fused in one projection
    "gpt2": ("c_attn",),  # likewise (a Conv1D)
}
QV_NAMES = (QV, ("query", "value"), ("q_lin", "v_lin"), ("q", "v"), ("wq", "wv"))


def default_targets(family: str, model: nn.Module | None = None) -> tuple[str, ...]:
    """LoRA target modules for a model family (q and v projections, as in the paper);
    for a family not in `DEFAULT_TARGETS`, derived from `model` (`derive_targets`)."""
    if family in DEFAULT_TARGETS:
        return DEFAULT_TARGETS[family]
    if model is None:
        raise ModelError(
            f"no default LoRA targets for model family {family!r}; pass --targets explicitly"
        )
    return derive_targets(model)


def derive_targets(model: nn.Module) -> tuple[str, ...]:
    """Targets from the linear layers inside the attention blocks (modules named
    *attn* / *attention*): a q/v pair when there is one, else every such layer (as
    `parent.leaf`); without attention-named modules, every linear layer but the
    output head (`all-linear`)."""
    from transformers.pytorch_utils import Conv1D

    in_attention: set[tuple[str, str]] = set()
    for name, module in model.named_modules():
        parts = name.split(".")
        attention = any(w in p.lower() for p in parts[:-1] for w in ("attn", "attention"))
        if isinstance(module, nn.Linear | Conv1D) and attention:
            in_attention.add((parts[-2], parts[-1]))
    leaves = {leaf for _, leaf in in_attention}
    for q, v in QV_NAMES:
        if q in leaves and v in leaves:
            return (q, v)
    if in_attention:
        return tuple(sorted(f"{parent}.{leaf}" for parent, leaf in in_attention))
    return (ALL_LINEAR,)


CLS_HEADS = ("classifier", "score")  # PEFT trains these whole for sequence classification
TARGETS_SHOWN = 30  # layer names a refusal lists at most


def lora_layers(model: nn.Module, task: Task) -> list[str]:
    """The paths of the modules LoRA can adapt (what PEFT's LoRA supports: linear
    layers, quantized ones included, GPT-2's Conv1D, embeddings, convolutions,
    nn.MultiheadAttention), leaving out a classifier's head for "cls" (PEFT trains it
    whole and never adapts it)."""
    from transformers.pytorch_utils import Conv1D

    kinds = (
        nn.Linear,
        Conv1D,
        nn.Embedding,
        nn.Conv1d,
        nn.Conv2d,
        nn.Conv3d,
        nn.MultiheadAttention,
    )
    out = []
    for path, module in model.named_modules():
        if not path or not (isinstance(module, kinds) or "Linear" in type(module).__name__):
            continue
        if task == "cls" and any(part in CLS_HEADS for part in path.split(".")):
            continue
        out.append(path)
    return out


def names_layer(target: str, path: str) -> bool:
    """Whether --targets name `target` names the layer at module path `path`: the
    whole path or a dotted end of it (PEFT's matching)."""
    return path == target or path.endswith("." + target)


def check_targets(base: BaseModel, targets: tuple[str, ...]) -> None:
    """ModelError, before LoRA is built, for any name in `targets` that matches no
    layer LoRA can adapt (PEFT's rule: a layer matches a name that is its path or a
    dotted suffix of it), listing the model's layer names; PEFT itself would adapt the
    names that match and silently skip the others. ("all-linear",) stands alone."""
    if not targets:
        raise ModelError("--targets: no LoRA target given", "name layers, or all-linear")
    if ALL_LINEAR in targets:
        if len(targets) > 1:
            others = ",".join(t for t in targets if t != ALL_LINEAR)
            raise ModelError(
                f"--targets {ALL_LINEAR} cannot be combined with other targets",
                f"give --targets {ALL_LINEAR} alone (it already adapts every linear layer), "
                f"or name the layers alone: --targets {others}",
            )
        return
    layers = lora_layers(base.model, base.task)
    unknown = [t for t in targets if not any(names_layer(t, p) for p in layers)]
    if not unknown:
        _check_tied(base, targets)
        return
    names = sorted({p.rsplit(".", 1)[-1] for p in layers})
    shown = ", ".join(names[:TARGETS_SHOWN]) + (
        f" and {len(names) - TARGETS_SHOWN} more" if len(names) > TARGETS_SHOWN else ""
    )
    pairs = [p.split(".")[-2:] for p in layers if "." in p]
    pairs = [pair for pair in pairs if not pair[0].isdigit()]
    attention = [pair for pair in pairs if "att" in pair[0] or pair[0] == "self"]
    example = ".".join((attention or pairs or [[""]])[0])
    suffix = f", a dotted end of a layer's path such as {example}" if example else ""
    raise ModelError(
        f"--targets {','.join(unknown)}: the model {base.name!r} has no layer that LoRA can "
        f"adapt (linear, Conv1D, embedding, convolution) by "
        f"{'that name' if len(unknown) == 1 else 'those names'}",
        f"its layer names are {shown or 'none'}{suffix}, or {ALL_LINEAR}",
    )


def wrap_lora(
    base: BaseModel,
    rank: int,
    alpha: int,
    targets: tuple[str, ...],
    seed: int,
    *,
    dropout: float = 0.0,
    rslora: bool = False,
    dora: bool = False,
) -> nn.Module:
    """Return the PEFT model; only LoRA factors (DoRA: and magnitudes; and a
    classification head) train. `targets` ("all-linear",) is PEFT's shorthand; every
    other name must match a layer (`check_targets`)."""
    from peft import LoraConfig, TaskType, get_peft_model

    if rank < 1:
        raise ModelError(
            f"LoRA rank must be >= 1, got {rank}", "give --rank 1 or more (8 by default)"
        )
    check_targets(base, targets)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=ALL_LINEAR if targets == (ALL_LINEAR,) else list(targets),
        lora_dropout=dropout,
        use_rslora=rslora,
        use_dora=dora,
        fan_in_fan_out=base.family == "gpt2",  # its Conv1D stores weights transposed
        task_type=TaskType.SEQ_CLS if base.task == "cls" else TaskType.CAUSAL_LM,
    )
    torch.manual_seed(seed)
    try:
        return get_peft_model(base.model, config)
    except ValueError as exc:
        raise ModelError(
            f"cannot apply LoRA to {base.name!r}: {exc}",
            f"name other --targets (linear layers are the safest), or {ALL_LINEAR}",
        ) from exc


def _check_tied(base: BaseModel, targets: tuple[str, ...]) -> None:
    """ModelError for a target that is the input embeddings or the output head of a model
    that ties them: merging its LoRA into the shared weight would change both."""
    model = base.model
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    inp = get_in() if callable(get_in) else None
    out = get_out() if callable(get_out) else None
    if inp is None or out is None or getattr(inp, "weight", None) is not getattr(out, "weight", 0):
        return
    paths = [p for p, m in model.named_modules() if m is inp or m is out]
    tied = [t for t in targets if any(names_layer(t, p) for p in paths)]
    if tied:
        raise ModelError(
            f"--targets {','.join(tied)}: the model {base.name!r} ties its input embeddings "
            "and output head (tie_word_embeddings), so merging this adapter would change both",
            "adapt other layers (e.g. the attention projections), or use a model without "
            "tied embeddings",
        )
