"""What a saved adapter says about itself: base record, weights hash and model card.

`LoraModel.save_adapter` calls `describe_adapter` on the folder PEFT just wrote; it
adds `declora.json` (fingerprint, spec, labels, base, weights hash, the caller's
meta) and a `README.md` model card, and puts a base name that loads from any directory
in `adapter_config.json` (`portable_base`: PEFT writes the --model as given there).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, TypeGuard

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
DECLORA_INFO = "declora.json"
MODEL_CARD = "README.md"
FULL_MODEL = "full-model"  # declora.json's "format" of a full model folder (DECA)
WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")
# a local base's weight files are hashed only up to this size in all (the first save of
# a node would otherwise stall a round reading a multi-GB base); beyond it, sizes only
MAX_HASH_BYTES = 2 << 30
MAX_HEADER_BYTES = 100 << 20  # safetensors' own bound on a header
# safetensors' dtypes that its torch reader reads (the hashes recorded so far came from
# it): each as torch spells it (the hash's text) and its bytes per element
DTYPES = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2),
    "BF16": ("bfloat16", 2), "I64": ("int64", 8), "I32": ("int32", 4),
    "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1), "U16": ("uint16", 2),
    "U32": ("uint32", 4), "U64": ("uint64", 8), "BOOL": ("bool", 1),
    "F8_E4M3": ("float8_e4m3fn", 1), "F8_E4M3FNUZ": ("float8_e4m3fnuz", 1),
    "F8_E5M2": ("float8_e5m2", 1), "F8_E5M2FNUZ": ("float8_e5m2fnuz", 1),
    "C64": ("complex64", 8),
}  # fmt: skip


class Tensor(NamedTuple):
    """One checked header entry: name, torch's dtype name, shape, byte span in the file."""

    name: str
    dtype: str
    shape: list[int]
    start: int
    end: int


def weights_sha256(path: Path) -> str:
    """sha256 of a safetensors file's tensors: names sorted, each name, dtype, shape, bytes.

    Independent of the file's header layout and metadata, so two adapters with equal
    tensors hash equal however they were written; equal to the hash safetensors' torch
    reader gave. Read from the file itself: that reader keeps about 60 bytes for good
    per tensor read (0.8.0; a node checkpointing every few rounds grew without bound),
    and its numpy reader, which does not, knows no bfloat16. The header is checked as
    safetensors checks it (`read_header`), so each byte is hashed once. A file that is
    not safetensors, or a dtype that reader did not read, raises ValueError.
    """
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for t in sorted(read_header(fh), key=lambda t: t.name):
            h.update(f"{t.name}|{t.dtype}|{t.shape}\n".encode())
            fh.seek(t.start)
            left = t.end - t.start
            while left:
                block = fh.read(min(left, 1 << 20))
                if not block:
                    raise ValueError(f"tensor {t.name!r} is cut short")
                h.update(block)
                left -= len(block)
    return h.hexdigest()


def read_header(fh: BinaryIO) -> list[Tensor]:
    """The tensors the header of open safetensors file `fh` lists, every number bounded:
    a header of at most `MAX_HEADER_BYTES` inside the file, known dtypes, shapes of
    non-negative ints, and byte spans that match them and tile the data that follows the
    header in order up to the end of the file (raises ValueError)."""
    total = os.fstat(fh.fileno()).st_size
    (size,) = struct.unpack("<Q", fh.read(8).ljust(8, b"\xff"))
    if size > min(total - 8, MAX_HEADER_BYTES):
        raise ValueError(f"header of {size} bytes in a file of {total}")
    try:
        header = json.loads(fh.read(size))
    except RecursionError:  # JSON nested thousands deep
        raise ValueError("header nested too deeply") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    header.pop("__metadata__", None)
    tensors = [_entry(name, e, 8 + size) for name, e in header.items()]
    tensors.sort(key=lambda t: (t.start, t.end))
    at = 8 + size
    for t in tensors:
        if t.start != at:
            raise ValueError(f"tensor {t.name!r} overlaps another or leaves a gap before it")
        at = t.end
    if at != total:
        raise ValueError(f"the tensors end at {at} in a file of {total} bytes")
    return tensors


def _entry(name: str, entry: object, base: int) -> Tensor:
    """Header entry `name` checked; its offsets made absolute (`base`: the data's start)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str):
        raise ValueError(f"tensor {name!r}: not a header entry with a dtype")
    dtype, width = DTYPES.get(entry["dtype"]) or (None, 0)
    if dtype is None:
        raise ValueError(f"tensor {name!r}: dtype {entry['dtype'][:20]!r} is not one torch reads")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (_ints(shape) and _ints(offsets) and len(offsets) == 2):
        raise ValueError(f"tensor {name!r}: shape and data_offsets must be non-negative ints")
    start, end = offsets
    count = 0 if 0 in shape else 1
    for dim in shape if count else ():
        count *= dim
        if count > end:  # no product of a thousand big dims computed
            break
    if end - start != count * width:
        raise ValueError(f"tensor {name!r}: {end - start} bytes for shape {shape[:8]} {dtype}")
    return Tensor(name, dtype, shape, base + start, base + end)


def _ints(value: object) -> TypeGuard[list[int]]:
    return isinstance(value, list) and all(type(v) is int and v >= 0 for v in value)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def describe_base(name: str, digest: str) -> dict[str, object]:
    """The base of an adapter: declora name, hub id, local folder, file hashes, digest.

    `files` maps each top-level weight file of a local base to {"bytes", "sha256"}
    (the sha256 the hub shows for that file; None when the files together exceed
    `MAX_HASH_BYTES`); `digest` is declora's sampled digest of the loaded weights
    (`adapter.base_digest`), which the loader checks.
    """
    from declora.node.model_source import HUB_IDS, TINY_MODELS, resolve_path

    record: dict[str, object] = {
        "name": name,
        "hub_id": HUB_IDS.get(name),
        "local_path": None,
        "files": {},
        "digest": digest,
    }
    if name in TINY_MODELS:
        return record
    folder = Path(resolve_path(name))
    if folder.is_dir():
        record["local_path"] = str(folder.resolve())
        weights = sorted({p for g in WEIGHT_GLOBS for p in folder.glob(g)})
        sizes = {p.name: p.stat().st_size for p in weights}
        small = sum(sizes.values()) <= MAX_HASH_BYTES
        record["files"] = {
            p.name: {"bytes": sizes[p.name], "sha256": file_sha256(p) if small else None}
            for p in weights
        }
    elif record["hub_id"] is None:
        record["hub_id"] = name  # a hub id transformers resolved itself
    return record


def portable_base(config_file: Path, base: Mapping[str, Any]) -> None:
    """Set `base_model_name_or_path` in PEFT's `config_file` to a name that loads from
    any directory: an embedded base's hub id, else a local base's absolute folder
    (PEFT writes the --model as given, a path relative to the node's directory); a hub
    id is kept. Neither the fingerprint nor the weights hash reads this file."""
    name = base.get("hub_id") or base.get("local_path")
    if not name or not config_file.is_file():
        return
    try:
        config = json.loads(config_file.read_text())
    except (ValueError, RecursionError):  # undecodable, not JSON, or nested too deeply
        return  # not PEFT's file: left as it is, for the loader to report
    if isinstance(config, dict) and config.get("base_model_name_or_path") != name:
        config["base_model_name_or_path"] = name
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True))


def describe_adapter(folder: Path, info: dict[str, Any], final_path: Path) -> None:
    """Complete a PEFT folder: a portable base name in its config (`portable_base`),
    `declora.json` and `README.md`."""
    portable_base(folder / ADAPTER_CONFIG, info.get("base") or {})
    info = {**info, "weights_sha256": weights_sha256(folder / ADAPTER_WEIGHTS)}
    (folder / DECLORA_INFO).write_text(json.dumps(info, indent=2, default=str))
    (folder / MODEL_CARD).write_text(model_card(info, str(final_path)))


def _fmt_eval(value: object) -> str:
    if not isinstance(value, Mapping) or not value:
        return "-"
    parts = []
    for k, v in value.items():
        parts.append(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}")
    return ", ".join(parts)


class CardHead(NamedTuple):
    """What both kinds of card show first: the base's name, the task, the labels, and
    the table rows (base, task, labels, what trained it, swarm, node, rounds,
    evaluation, fingerprint, weights' sha256)."""

    base_name: str
    is_cls: bool
    title_task: str
    labels: list[str]
    rows: list[tuple[str, str]]


def _card_rows(info: Mapping[str, Any], training: tuple[str, str]) -> CardHead:
    """`CardHead` of the folder `info` describes; `training`: the row saying what
    trained it."""
    base = info.get("base") or {}
    spec = info.get("spec") or {}
    task = info.get("task") or spec.get("task", "cls")
    labels = list(info.get("labels") or [])
    base_name = base.get("hub_id") or base.get("local_path") or base.get("name") or "?"
    is_cls = task == "cls"
    title_task = "text classification" if is_cls else "causal language modelling"
    rows = [
        ("base model", f"`{base_name}` (declora `--model {base.get('name', spec.get('model'))}`)"),
        ("task", f"{title_task}" + (f", {info.get('num_labels')} labels" if is_cls else "")),
    ]
    if is_cls:
        rows.append(("labels", ", ".join(f"{i} `{n}`" for i, n in enumerate(labels)) or "-"))
    return CardHead(
        base_name,
        is_cls,
        title_task,
        labels,
        [
            *rows,
            training,
            ("swarm", str(info.get("swarm_id") or "-")),
            ("node", str(info.get("node_id") or "-")),
            ("rounds", str(info.get("round") if info.get("round") is not None else "-")),
            ("evaluation", _fmt_eval(info.get("eval"))),
            ("fingerprint", f"`{info.get('fingerprint', '')}`"),
            ("weights sha256", f"`{info.get('weights_sha256', '')}`"),
        ],
    )


def model_card(info: Mapping[str, Any], path: str) -> str:
    """A README.md for the adapter in `path`: what it is, where it came from, how to load;
    for a full model folder (`FULL_MODEL`, DECA) what trained it and how transformers
    loads it."""
    if info.get("format") == FULL_MODEL:
        return _full_model_card(info, path)
    base = info.get("base") or {}
    spec = info.get("spec") or {}
    base_name, is_cls, title_task, labels, rows = _card_rows(
        info,
        (
            "LoRA",
            f"r={spec.get('rank')}, alpha={spec.get('alpha')}, targets "
            f"{', '.join(spec.get('targets') or [])}; max length {spec.get('max_length')}; "
            f"seed {spec.get('seed')}",
        ),
    )
    files = base.get("files") or {}
    if files:
        described = [
            f"{k} sha256 `{v.get('sha256')}`" if v.get("sha256") else f"{k} {v.get('bytes')} bytes"
            for k, v in files.items()
        ]
        rows.append(("base files", ", ".join(described)))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    front = [
        "---",
        f"base_model: {base_name}",
        "library_name: peft",
        f"pipeline_tag: {'text-classification' if is_cls else 'text-generation'}",
        "tags:",
        "- lora",
        "- declora",
        "---",
    ]
    load = [
        "```python",
        "from declora.node.adapter_io import load_adapter",
        f"adapter = load_adapter({path!r})  # .model, .tokenizer, .labels, .predict(texts)",
        "```",
    ]
    if base.get("hub_id") or base.get("local_path"):
        peft_class = (
            "AutoPeftModelForSequenceClassification" if is_cls else "AutoPeftModelForCausalLM"
        )
        kwargs = ""
        if is_cls:
            id2label = dict(enumerate(labels)) if labels else None
            kwargs = f", num_labels={info.get('num_labels')}"
            if id2label:
                label2id = {n: i for i, n in id2label.items()}
                kwargs += f", id2label={id2label!r}, label2id={label2id!r}"
        load += [
            "",
            f"With PEFT alone, where `{base_name}` resolves (the hub, or a local copy):",
            "",
            "```python",
            f"from peft import {peft_class}",
            f"model = {peft_class}.from_pretrained({path!r}{kwargs})",
            "```",
        ]
    else:
        load += [
            "",
            f"The base `{base.get('name')}` is declora's seeded random model: "
            "only declora rebuilds it.",
        ]
    body = [
        f"# LoRA adapter: {base_name}, {title_task}",
        "",
        "Trained with declora (decentralized LoRA: every node trains on its own data and "
        "mixes adapters with its neighbours).",
        "",
        "| | |",
        "|---|---|",
        table,
        "",
        "## Load it",
        "",
        *load,
        "",
    ]
    return "\n".join([*front, "", *body])


def _full_model_card(info: Mapping[str, Any], path: str) -> str:
    """`model_card` of a DECA full model folder (`save_pretrained` files, no LoRA)."""
    spec = info.get("spec") or {}
    base_name, is_cls, title_task, _, rows = _card_rows(
        info,
        (
            "training",
            f"DECA block-wise full fine-tuning (no LoRA): {spec.get('deca_blocks')} blocks of "
            f"layers, {spec.get('deca_block_rounds')} rounds a turn; max length "
            f"{spec.get('max_length')}; seed {spec.get('seed')}",
        ),
    )
    auto = "AutoModelForSequenceClassification" if is_cls else "AutoModelForCausalLM"
    front = [
        "---",
        f"base_model: {base_name}",
        "library_name: transformers",
        f"pipeline_tag: {'text-classification' if is_cls else 'text-generation'}",
        "tags:",
        "- deca",
        "- declora",
        "---",
    ]
    body = [
        f"# Full model (DECA): {base_name}, {title_task}",
        "",
        "Trained with declora's DECA (decentralized block-wise full fine-tuning: every "
        "node trains one block of layers at a time on its own data and mixes it with its "
        "neighbours).",
        "",
        "| | |",
        "|---|---|",
        "\n".join(f"| {k} | {v} |" for k, v in rows),
        "",
        "## Load it",
        "",
        "```python",
        "from declora.node.adapter_io import load_adapter",
        f"model = load_adapter({path!r})  # .model, .tokenizer, .labels, .predict(texts)",
        "```",
        "",
        "With transformers alone (the whole model is here):",
        "",
        "```python",
        f"from transformers import {auto}",
        f"model = {auto}.from_pretrained({path!r})",
        "```",
        "",
    ]
    return "\n".join([*front, "", *body])
