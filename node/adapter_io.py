"""Load a saved declora adapter in one line, run it, and export it merged.

    from declora.node.adapter_io import load_adapter
    adapter = load_adapter("runs/lab/node-0/adapter")
    adapter.predict(["shares rose 3% today"])   # [Prediction(label='business', ...)]

`load_adapter` rebuilds the base the adapter records in `declora.json` (the embedded
MiniLM from its package, a tiny test model from its seed, a local folder by the
absolute path recorded when it was trained, else by its `--model` path as given, or
`base=` given by the caller), checks that it is the base the adapter was trained
on (fingerprint, or weight digest for a `base=` override), and loads the adapter
tensors. A DECA result (a full model folder, `deca_model.BlockModel.save_adapter`)
loads the same way: the recorded base rebuilt and checked, then every trained block
and the head from its `model.safetensors`. `export_merged` writes a plain
transformers model folder with the LoRA update merged into the base weights and the
labels in its config.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from torch import nn

from declora.node import run_folder
from declora.node.adapter import AdapterSchema, SchemaError, atomic_replace_dir, new_build_dir
from declora.node.adapter_card import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    DECLORA_INFO,
    weights_sha256,
)
from declora.node.data import TextDataset
from declora.node.deca_model import FULL_MODEL, MODEL_WEIGHTS, BlockModel
from declora.node.errors import HintedError
from declora.node.lm_data import IGNORE, encode_lm, stop_token_ids
from declora.node.methods import DECA_DEFAULTS
from declora.node.model_source import HUB_IDS, TINY_MODELS, ModelError
from declora.node.models import HeadSizeError
from declora.node.recipe import UNRECORDED_FACTS, Recipe
from declora.node.tokenizers import HFTokenizer, Tokenizer, truncate_counted
from declora.node.trainer import CHATS, LM_ROWS, LoraModel, LoraSpec

_log = logging.getLogger(__name__)

EXPORT_INFO = "declora_export.json"
HEAD_SUFFIXES = (".classifier.weight", ".score.weight", ".classifier.out_proj.weight")


class AdapterError(HintedError):
    """An adapter cannot be loaded or exported: `message`, then `hint`."""


@dataclass(frozen=True)
class Prediction:
    """One text's class: the top label, its probability and every label's probability."""

    label: str
    probability: float
    scores: dict[str, float]


@dataclass
class LoadedAdapter:
    """A ready adapter: `model` (PEFT, eval mode), `tokenizer`, `labels` and helpers.

    `tokenizer(texts, max_length)` returns padded (input_ids, attention_mask) tensors,
    the encoding the adapter was trained with; `labels` are the class names in id
    order (empty for causal LM); `info` is the adapter's `declora.json`.
    """

    model: nn.Module
    tokenizer: Tokenizer
    labels: tuple[str, ...]
    task: str
    max_length: int
    info: dict[str, Any]
    path: Path
    lora: LoraModel = field(repr=False)

    @torch.no_grad()
    def logits(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """Float32 logits on the CPU: (n, labels) for cls, (n, length, vocab) for LM."""
        self.model.eval()
        out = []
        dev = self.lora.device
        cut = 0
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            if self.task == "cls":
                ids, mask, n, _ = truncate_counted(self.tokenizer, batch, self.max_length)
                cut += n
            else:
                ids, mask = self.tokenizer(batch, self.max_length)
            res = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev))
            out.append(res.logits.float().cpu())
        if cut:
            _log.warning(
                "%d of %d texts are longer than the adapter's training --max-length of %d "
                "tokens: only their first %d tokens are classified (to read more, retrain "
                "the adapter with a larger --max-length)",
                cut, len(texts), self.max_length, self.max_length,
            )  # fmt: skip
        if not out:
            return torch.zeros((0, len(self.labels)))
        return torch.cat(out)

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[Prediction]:
        """The most probable label of each text (classification adapters only)."""
        if self.task != "cls":
            raise AdapterError(f"{self.path} is a causal LM adapter: it has no labels to predict")
        probs = torch.softmax(self.logits(texts, batch_size), dim=-1).numpy()
        out = []
        for row in probs:
            top = int(row.argmax())
            scores = {name: float(p) for name, p in zip(self.labels, row, strict=True)}
            out.append(Prediction(self.labels[top], float(row[top]), scores))
        return out

    @torch.no_grad()
    def text_losses(self, texts: Sequence[str], batch_size: int = 16) -> list[float]:
        """Mean next-token cross-entropy of each text, EOS included, as training encodes
        one text per example (causal LM adapters only). Texts longer than the adapter's
        `max_length` are scored on their first tokens, told in one warning for all."""
        if self.task == "cls":
            raise AdapterError(f"{self.path} is a classifier: use predict")
        self.model.eval()
        dev = self.lora.device
        losses: list[float] = []
        if not texts:
            return losses
        every = TextDataset(tuple(texts), None, ())
        all_ids, all_mask, all_labels = encode_lm(
            self.tokenizer, every, self.max_length, packing=False, scoring=True
        )
        for start in range(0, len(texts), batch_size):
            rows = slice(start, start + batch_size)
            ids, mask, labels = all_ids[rows], all_mask[rows], all_labels[rows]
            ids, mask = ids.to(dev, torch.long), mask.to(dev, torch.long)
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()[:, :-1]
            target = labels[:, 1:].to(dev, torch.long)
            keep = (labels[:, 1:] != IGNORE).to(dev).float()
            ce = nn.functional.cross_entropy(
                logits.transpose(1, 2), target.clamp(min=0), reduction="none"
            )
            per_text = (ce * keep).sum(1) / keep.sum(1).clamp(min=1.0)
            losses.extend(float(v) for v in per_text.cpu())
        return losses

    @property
    def trained_on_chats(self) -> bool:
        """Whether `declora.json` records that this causal LM trained on conversations
        (LM_ROWS "chats"); False for plain text, another value, or an adapter saved
        before the record."""
        return self.info.get(LM_ROWS) == CHATS

    @property
    def full_model(self) -> bool:
        """A DECA full model folder: the model itself trained, no LoRA."""
        return isinstance(self.lora, BlockModel)

    @property
    def weights(self) -> Path:
        """The folder's weights file (PEFT adapter, or the full model)."""
        return self.path / (MODEL_WEIGHTS if self.full_model else ADAPTER_WEIGHTS)

    def merge(self) -> nn.Module:
        """Merge the LoRA update into the base weights in place; returns the plain
        transformers model (also `self.model` from then on: predictions are unchanged).
        A full model has nothing to merge: it is returned as it is."""
        if self.full_model:
            return self.model
        merged: nn.Module = self.model.merge_and_unload()  # type: ignore[operator]
        self.model = merged
        return merged


def perplexity(loss: float) -> float:
    """exp(loss), capped like `LoraModel.evaluate` so it stays finite."""
    return math.exp(min(loss, 50.0))


def adapter_folder(path: str | Path) -> Path:
    """The adapter folder of `path`: a PEFT adapter or DECA full model folder, a
    checkpoint, or a checkpoint root (`from_root`: the checkpoint a resume would
    continue from)."""
    p = Path(path)
    if not p.exists():
        raise AdapterError(f"{p} does not exist", "pass a node's adapter/ or a checkpoint folder")
    p = from_root(p)
    if any((p / "adapter" / name).is_file() for name in (ADAPTER_CONFIG, MODEL_WEIGHTS)):
        p = p / "adapter"
    if (p / MODEL_WEIGHTS).is_file() and not (p / ADAPTER_CONFIG).is_file():
        return p  # a full model folder (DECA)
    if not (p / ADAPTER_CONFIG).is_file():
        raise AdapterError(
            f"{p} is not a PEFT adapter folder (no {ADAPTER_CONFIG}) nor a DECA model "
            f"folder (no {MODEL_WEIGHTS})",
            "pass a node's adapter/ or a checkpoint folder",
        )
    if not (p / ADAPTER_WEIGHTS).is_file():
        raise AdapterError(f"{p} has no {ADAPTER_WEIGHTS}", "the save did not finish")
    return p


_told: set[Path] = set()  # checkpoint roots whose damaged or absent LATEST was warned of


def from_root(p: Path) -> Path:
    """The checkpoint of checkpoint root `p` that a resume continues from
    (`run_folder.resume_point`): LATEST's, or, LATEST damaged or absent (a warning,
    once a root), the newest complete ckpt-*; `p` itself when it is no root (no
    LATEST, no complete ckpt-*) or holds its final adapter and no LATEST.
    AdapterError when LATEST names a checkpoint that is missing or incomplete (its hint
    names the root's final adapter/ when it holds one)."""
    name = run_folder.named(p)
    if name is None and ((p / "adapter").is_dir() or not run_folder.complete_checkpoints(p)):
        return p
    found = run_folder.resume_point(p)
    others = [c.name for c in run_folder.complete_checkpoints(p)]
    if found is None:
        what = "which is missing or incomplete" if name else "and it holds no complete ckpt-*"
        hint = (
            f"one of its complete checkpoints ({', '.join(others)}), or a checkpoint "
            "folder itself: its adapter/ is what predict, generate and export read"
            if others
            else "a checkpoint folder itself: its adapter/ is what is read"
        )
        if (p / "adapter").is_dir():  # its checkpoints deleted, its final adapter kept
            hint = f"{p / 'adapter'} for the run's final adapter, or {hint}"
        raise AdapterError(f"{p}: {run_folder.LATEST} names {name!r}, {what}", f"pass {hint}")
    if not run_folder.names_checkpoint(name) and p not in _told:
        _told.add(p)
        if name is None:
            _log.warning("%s holds no LATEST: using its newest complete checkpoint, %s", p, found)
        else:
            _log.warning(
                "%s: LATEST names no checkpoint (%r: damaged): using its newest complete "
                "checkpoint, %s",
                p,
                name,
                found,
            )
    return found


def merged_source(folder: Path) -> str | None:
    """The adapter a merged export in `folder` records it came from (as `export` was
    given it), or None when its declora_export.json names none."""
    try:
        source = json.loads((folder / EXPORT_INFO).read_text()).get("source")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return source if isinstance(source, str) and source else None


def _read_info(folder: Path) -> dict[str, Any]:
    info_file = folder / DECLORA_INFO
    if not info_file.is_file() and (folder / EXPORT_INFO).is_file():
        source = merged_source(folder)
        raise AdapterError(
            f"{folder} is a merged export (`export --merge`): a plain transformers model, "
            "not an adapter",
            f"load it with transformers' from_pretrained or train on it with `start --model "
            f"{folder}`; predict and generate take the adapter it was merged from"
            + (f" ({source})" if source else ""),
        )
    if not info_file.is_file():
        peft = (folder / ADAPTER_CONFIG).is_file()
        loader = "peft.PeftModel.from_pretrained" if peft else "transformers' from_pretrained"
        raise AdapterError(
            f"{folder} has no {DECLORA_INFO}: it was not written by declora",
            f"load it with {loader}",
        )
    try:
        info: dict[str, Any] = json.loads(info_file.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        what = "nested too deeply" if isinstance(exc, RecursionError) else "not UTF-8"
        what = exc.msg if isinstance(exc, json.JSONDecodeError) else what
        raise AdapterError(f"{info_file} is not valid JSON: {what}", _DAMAGED) from exc
    if not isinstance(info, dict):
        raise AdapterError(f"{info_file} is a JSON {type(info).__name__}, not an object", _DAMAGED)
    if not isinstance(info.get("spec"), dict):
        raise AdapterError(f"{info_file} has no spec", "an adapter from an older declora?")
    return info


_DAMAGED = "the file was edited or damaged: save the adapter again, or use a checkpoint's adapter/"


def _num_labels(folder: Path, info: dict[str, Any], tensors: dict[str, torch.Tensor]) -> int:
    recorded = info.get("num_labels")
    if recorded:
        if not isinstance(recorded, int) or isinstance(recorded, bool) or recorded < 1:
            raise AdapterError(
                f"{folder / DECLORA_INFO}: num_labels {recorded!r} is no label count", _DAMAGED
            )
        return recorded
    for name, t in tensors.items():  # adapters written before labels were recorded
        if name.endswith(HEAD_SUFFIXES):
            return int(t.shape[0])
    raise AdapterError(f"{folder}: cannot tell how many labels the adapter's head has", _DAMAGED)


def recorded_differences(folder: Path, lm: LoraModel) -> list[str]:
    """What the adapter saved in `folder` (a checkpoint's `adapter`) records otherwise
    than `lm`: its labels first (count and names), then each spec field and agreed
    recipe fact, e.g. "labels: 3 ['a', 'b', 'c'] there, 2 ['a', 'b'] here"; a field or
    fact a record leaves out is shown as the value that means (the default method
    'dec-lora', weighting 'nodes'), named as the option that sets it (`_fact_difference`).
    Empty when nothing differs or `folder` holds no readable record. For a refusal to
    say why two fingerprints differ (a --resume with another label set or option)."""
    try:
        info = _read_info(folder)
    except AdapterError:
        return []
    out: list[str] = []
    if lm.task == "cls":
        theirs = [str(n) for n in info.get("labels") or ()]
        ours = list(lm.label_names)
        if theirs != ours:
            out.append(f"labels: {len(theirs)} {theirs[:10]} there, {len(ours)} {ours[:10]} here")
    spec, recorded = lm.spec.as_dict(), dict(info.get("spec") or {})
    defaults = {f.name: f.default for f in fields(LoraSpec)}  # as_dict leaves them out
    methods = [str(d.get("method", defaults["method"])) for d in (recorded, spec)]
    keys = set(spec) | set(recorded)
    if methods[0] != methods[1]:  # the method first; another's own options say nothing
        out.append(f"method: {methods[0]!r} there, {methods[1]!r} here")
        keys -= {"method", *(DECA_DEFAULTS if "deca" in methods else ())}
    for key in sorted(keys):
        a, b = recorded.get(key, defaults.get(key)), spec.get(key, defaults.get(key))
        if isinstance(a, list | tuple) and isinstance(b, list | tuple):
            a, b = list(a), list(b)
        if a != b:
            out.append(f"{key}: {a!r} there, {b!r} here")
    agreed = dict(info.get("agreed") or {})
    steps_differ = agreed.get("gossip_steps") != lm.agreed.get("gossip_steps")
    for key in sorted(set(agreed) | set(lm.agreed)):
        if key == "tracking_exchanges" and steps_differ:
            continue  # it follows gossip_steps (recorded only past 1), named on its own line
        if agreed.get(key) != lm.agreed.get(key):
            same = methods[0] == methods[1]  # else the method explains it
            out.append(_fact_difference(key, agreed.get(key), lm.agreed.get(key), same))
    return out


def _fact_difference(key: str, there: object, here: object, explain: bool = True) -> str:
    """One agreed fact recorded as `there` and made as `here` (None: left out), named
    as the option that sets it: tracking_exchanges is recorded only with gradient
    tracking and more than one exchange a round (the caller skips it where gossip_steps
    differs, so here it differs only by tracking), and weighting 'examples' needs
    tracking and a codec other than fp16 (so the resolved weighting differs after a
    --no-gradient-tracking or a --codec fp16; not said unless `explain`)."""
    if key == "tracking_exchanges":
        return f"gradient_tracking: {_on(there)} there, {_on(here)} here"
    a, b = (UNRECORDED_FACTS.get(key) if v is None else v for v in (there, here))
    shown = ["unset" if v is None else repr(v) for v in (a, b)]
    text = f"{key}: {shown[0]} there, {shown[1]} here"
    if explain and key == "weighting" and "examples" in (a, b):
        side = "here" if b != "examples" else "there"
        text += (
            f" (weighting 'examples' needs gradient_tracking and a codec other than fp16: "
            f"tracking is off {side}, --codec is fp16 {side}, or --weighting nodes was given)"
        )
    return text


def _on(value: object) -> str:
    return "off" if value is None else "on"


def _check_labels(
    folder: Path, labels: tuple[str, ...], num_labels: int, tensors: dict[str, torch.Tensor]
) -> None:
    """An `AdapterError` naming what disagrees when the recorded label names, the
    recorded label count and the saved head's rows are not one number (the model
    would refuse it blaming the base, or the fingerprint would differ)."""
    info = folder / DECLORA_INFO
    if labels and len(labels) != num_labels:
        raise AdapterError(
            f"{info} lists {len(labels)} labels {list(labels)} but num_labels {num_labels}",
            "the file was edited or damaged: save the adapter again, or make 'labels' and "
            "'num_labels' agree",
        )
    for name, t in tensors.items():
        if name.endswith(HEAD_SUFFIXES) and t.ndim == 2 and int(t.shape[0]) != num_labels:
            named = f" {list(labels)}" if labels else ""
            raise AdapterError(
                f"{folder}: the saved classification head has {int(t.shape[0])} outputs but "
                f"{info.name} records {num_labels} labels{named}",
                "the folder mixes files of two adapters: save the adapter again",
            )


def _checked_spec(folder: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` (a declora.json's) with each value a training option has checked by that
    option's type and bounds (`Recipe`: rank 1..1024, ...); an `AdapterError` naming
    the first that fails (a hand-edited "rank": "x" reached the model as a traceback)."""
    from pydantic import TypeAdapter, ValidationError

    checked = dict(spec)
    for name, value in spec.items():
        option = Recipe.model_fields.get(name)
        if option is None or name == "model":  # the base: replaced, or loaded by name
            continue
        kind: Any = option.annotation
        if option.metadata:  # its bounds
            kind = Annotated[(kind, *option.metadata)]
        try:
            checked[name] = TypeAdapter(kind).validate_python(value)
            why = "no value" if value is None else ""  # LoraSpec has no optional field
        except ValidationError as exc:
            why = exc.errors()[0]["msg"]
        if why:
            raise AdapterError(
                f"{folder}/{DECLORA_INFO}: bad spec: {name} {value!r} ({why})", _DAMAGED
            )
    return checked


def load_adapter(
    path: str | Path, *, base: str | None = None, device: str = "cpu"
) -> LoadedAdapter:
    """Rebuild the recorded base, check it, load the adapter: ready to predict.

    `path` is an adapter folder (or a checkpoint, or a checkpoint root). `base`
    replaces the recorded base (a local folder or hub id holding the same weights: its
    digest must match the recorded one). Raises `AdapterError` (one line, with a hint)
    when the folder is not a declora adapter, the base cannot be loaded, or the base
    is not the one the adapter was trained on.
    """
    folder = adapter_folder(path)
    info = _read_info(folder)
    full = info.get("format") == FULL_MODEL
    spec_dict = dict(info["spec"])
    recorded = str(spec_dict.get("model"))
    spec_dict["model"] = base if base is not None else recorded_base(folder, info, recorded)
    spec_dict["targets"] = tuple(spec_dict.get("targets") or ())
    try:
        spec = LoraSpec(**_checked_spec(folder, spec_dict))
    except TypeError as exc:
        raise AdapterError(f"{folder}/{DECLORA_INFO}: bad spec: {exc}", _DAMAGED) from exc
    weights = folder / (MODEL_WEIGHTS if full else ADAPTER_WEIGHTS)
    tensors = _load_tensors(weights)
    labels = tuple(str(n) for n in info.get("labels") or ())
    num_labels = _num_labels(folder, info, tensors) if spec.task == "cls" else 2
    if spec.task == "cls":
        _check_labels(folder, labels, num_labels, tensors)
    try:
        agreed = info.get("agreed") or None  # the recipe facts the fingerprint covers
        lm = (BlockModel if full else LoraModel)(
            spec, num_labels, device=device, label_names=labels, agreed=agreed
        )
    except HeadSizeError as exc:
        raise AdapterError(
            f"the base {spec.model!r} has a classification head for {len(exc.head_labels)} "
            f"labels {list(exc.head_labels[:10])}, the adapter {folder} one for "
            f"{num_labels}{f' {list(labels)}' if labels else ''}",
            "pass base= / --base with the model the adapter was trained on",
        ) from exc
    except (ModelError, OSError) as exc:
        raise AdapterError(
            f"cannot load the base {spec.model!r} of {folder}: "
            + (exc.message if isinstance(exc, ModelError) else str(exc)),
            "pass base= / --base with a local copy of it",
        ) from exc
    _check_base(lm, info, folder, same_name=spec.model == recorded)
    vec = _vector(tensors, lm.schema, weights, peft=not full)
    lm.bind(lm.vector_to_tensors(vec), owner=folder)
    lm.model.eval()
    if spec.task == "cls" and not labels:
        id2label: Any = getattr(lm.base.model.config, "id2label", {})
        labels = tuple(str(id2label[i]) for i in range(num_labels))
    return LoadedAdapter(
        model=lm.model,
        tokenizer=lm.tokenizer,
        labels=labels if spec.task == "cls" else (),
        task=spec.task,
        max_length=spec.max_length,
        info=info,
        path=folder,
        lora=lm,
    )


def recorded_base(folder: Path, info: dict[str, Any], recorded: str) -> str:
    """The base to rebuild for the adapter in `folder` trained on --model `recorded`:
    the absolute folder `declora.json` records (`base.local_path`) when it exists and
    `recorded` (a relative path, seen from here) is not that folder; else `recorded`
    (an embedded or tiny name, a hub id, a path that still resolves). `AdapterError`
    naming both when the base was a local folder and neither path exists."""
    if recorded in TINY_MODELS or recorded in HUB_IDS:
        return recorded
    local = (info.get("base") or {}).get("local_path")
    here = Path(recorded).expanduser()
    if local and Path(local).is_dir():
        same = here.exists() and here.resolve() == Path(local).resolve()
        return recorded if same else str(local)
    if not local or here.exists():
        return recorded  # a hub id, or the path as given
    raise AdapterError(
        f"the base model of {folder} is not here: neither {local} (the folder it was "
        f"trained on) nor {recorded!r} (its --model, from {Path.cwd()}) exists",
        "pass --base (base= in Python) with a local copy of that model",
    )


def _load_tensors(weights: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(weights))
    except Exception as exc:  # a truncated or foreign file: one line, no traceback
        raise AdapterError(f"{weights} is not a readable safetensors file: {exc}") from exc


def _vector(
    tensors: dict[str, torch.Tensor], schema: AdapterSchema, weights: Path, peft: bool
) -> np.ndarray:
    """The adapter vector in `schema` order: PEFT-named tensors, or the trained blocks
    and head among a full model's tensors (the rest is the checked base)."""
    from declora.node.checkpoint import CheckpointError, peft_tensors_to_vector

    try:
        if peft:
            return peft_tensors_to_vector(tensors, schema)
        trained = {n: tensors[n] for n in schema.names if n in tensors}
        schema.check(trained)
        return schema.flatten(trained)
    except (CheckpointError, SchemaError) as exc:
        raise AdapterError(f"{weights}: {exc}") from exc


def _check_base(lm: LoraModel, info: dict[str, Any], folder: Path, same_name: bool) -> None:
    if same_name:
        if info.get("fingerprint") and lm.fingerprint != info["fingerprint"]:
            raise AdapterError(
                f"{folder} was trained with fingerprint {info['fingerprint']}, the rebuilt "
                f"base gives {lm.fingerprint}",
                "a different base model or declora version",
            )
        return
    digest = (info.get("base") or {}).get("digest")
    if digest and digest != lm.base_digest:
        raise AdapterError(
            f"the base {lm.spec.model!r} has other weights than the base {folder} was trained on",
            "pass the same model, e.g. its hub copy",
        )


def export_merged(
    path: str | Path, output: str | Path, *, base: str | None = None
) -> tuple[Path, LoadedAdapter]:
    """Write `output`: the base with the adapter merged in (a DECA full model as it
    is), as plain transformers files.

    `AutoModelForSequenceClassification.from_pretrained(output)` (or `...ForCausalLM`)
    loads it with the labels in its config; a transformers tokenizer is saved beside
    it (the tiny test models' byte tokenizer is not a transformers one: `declora_export.
    json` says so). Refuses a non-empty `output`, and one another process holds (a
    running node's folder, `run_folder.hold`); holds `output` while it is written, so a
    node started on it meanwhile is refused. Returns (output, the merged adapter).
    """
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise AdapterError(f"{out} already exists", "choose a new --output or remove it")
    try:
        with run_folder.holding(out):
            if any(out.iterdir()):
                raise AdapterError(f"{out} already exists", "choose a new --output or remove it")
            return _write_merged(path, out, base)
    except run_folder.FolderBusy as busy:
        raise AdapterError(
            f"{out} is held by {busy.who} (a running node's folder?)",
            "stop that process first, or choose another --output",
        ) from None


def _stop_at_turn_end(model: nn.Module, tok: HFTokenizer) -> None:
    """Add EOS and the end-of-turn token training closed replies with
    (`lm_data.stop_token_ids`: ChatML's <|im_end|> when EOS is another) to `model`'s
    generation_config `eos_token_id`, so transformers' `generate` on the export stops
    where `declora-node generate` stops."""
    config = getattr(model, "generation_config", None)
    if config is None:
        return
    ids = stop_token_ids(tok, config.eos_token_id)
    if ids:
        config.eos_token_id = ids[0] if len(ids) == 1 else ids


def _write_merged(path: str | Path, out: Path, base: str | None) -> tuple[Path, LoadedAdapter]:
    """`export_merged` into `out`, an empty folder this process holds."""
    adapter = load_adapter(path, base=base)
    merged = adapter.merge()
    build = new_build_dir(out)
    tokenizer = "byte (declora.node.tokenizers.ByteTokenizer)"
    if isinstance(adapter.tokenizer, HFTokenizer):
        if adapter.task == "lm":
            _stop_at_turn_end(merged, adapter.tokenizer)
        adapter.tokenizer.hf.save_pretrained(str(build))
        tokenizer = "transformers (saved here)"
    merged.save_pretrained(str(build))  # type: ignore[operator]
    export_info = {
        "source": str(adapter.path),
        "fingerprint": adapter.info.get("fingerprint"),
        "adapter_weights_sha256": weights_sha256(adapter.weights),
        "task": adapter.task,
        "labels": list(adapter.labels),
        "max_length": adapter.max_length,
        "tokenizer": tokenizer,
    }
    (build / EXPORT_INFO).write_text(json.dumps(export_info, indent=2))
    atomic_replace_dir(build, out)
    return out, adapter
