"""Crash-safe checkpoints of one node.

A checkpoint is a directory `ckpt-<round>` holding the adapter in the PEFT format
(`adapter_config.json`, `adapter_model.safetensors`, `declora.json`) and `state.pt`
(round, optimizer, sampler position and batch size, gossip public copy, sequence and
codec, the gradient-tracking correction when the node tracks, the method's own state:
Kill-and-Revive's module scores, and what identifies the node's training share:
`training_share`, checked by `check_share` before a resume). A resume may change the
batch size and codec: each one that differs is a warning (`option_change`). For DECA
the folder holds the full model and `state.pt` also the active block's vector, the
block and the node's trained copies of every block it visited. A file `LATEST` names
the newest complete checkpoint; it is replaced by rename only after the directory is
fully written and fsynced, so a crash at any moment leaves `LATEST` pointing at a
complete checkpoint (or absent, before the first). The two newest checkpoints are
kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import operator
import os
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from declora.node import faults, run_folder
from declora.node.adapter import (
    AdapterSchema,
    atomic_replace_dir,
    disk_failures,
    fsync_dir,
    fsync_tree,
    new_build_dir,
)
from declora.node.deca_model import BlockTrainer
from declora.node.errors import HintedError
from declora.node.identity import MAX_OWN_ROUND, MAX_SEQ, shown
from declora.node.lora_names import saved_name
from declora.node.trainer import Encoded, LocalTrainer, LoraModel

LATEST = "LATEST"
KEEP = 2

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """No usable checkpoint, or one written for another adapter."""


class CheckpointMismatch(HintedError, CheckpointError):
    """The checkpoint was written for another configuration (labels, spec, recipe,
    training share) or is past --rounds: the user's options, not the files, are what to
    change (`hint`: how, when more precise than "resume with that run's options")."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(
            message,
            hint
            or "resume with the data, --partition, --labels and options that run used, or "
            "begin afresh in another --checkpoint-dir (this one is kept)",
        )


@dataclass
class NodeState:
    """What a node needs to continue: adapter, optimizer, sampler and gossip state."""

    round: int
    seq: int
    vector: np.ndarray
    public: np.ndarray
    trainer: dict[str, Any]
    fingerprint: str
    correction: np.ndarray | None = None  # gradient tracking's c_i, when tracking
    # the vector the model folder holds when it is not `vector` (DECA's whole model);
    # `vector` then goes into state.pt
    saved: np.ndarray | None = None
    # the method's own state (`NodeSnapshot.method_state`: Kill-and-Revive's scores)
    method_state: dict[str, np.ndarray] = field(default_factory=dict)
    # what identifies the node's training share (`training_share`); None: a checkpoint
    # written before it was recorded
    share: dict[str, Any] | None = None
    # the message codec the run sent with (`--codec`: a resume may change it, each
    # payload names its own); None: a checkpoint written before it was recorded
    codec: str | None = None
    path: Path | None = None  # the checkpoint it was read from (`load`)


# the sampler's options a resume may change (the swarm does not agree on them): the
# trainer's attribute, as `trainer_state` records it, and its option
SAMPLER_OPTIONS = (("batch_size", "--batch-size"), ("grad_accumulation", "--grad-accumulation"))


def trainer_state(trainer: LocalTrainer) -> dict[str, Any]:
    """Optimizer, sampler (position and step size: `SAMPLER_OPTIONS`), fp16's loss
    scaler (and a DECA trainer's block and trained copies). The sampler's `order` is
    an int64 tensor, so the state pickles with no numpy globals (checkpoints written
    before hold an ndarray; `restore_trainer` takes either)."""
    blocks = trainer.block_state() if isinstance(trainer, BlockTrainer) else {}
    scaler = {} if trainer.scaler is None else {"scaler": trainer.scaler.state_dict()}
    return {
        **scaler,
        "optimizer": trainer.optimizer.state_dict(),
        "step": trainer.step,
        "epoch": trainer.epoch,
        "cursor": trainer.cursor,
        "order": torch.from_numpy(np.asarray(trainer.order, dtype=np.int64).copy()),
        **{key: int(getattr(trainer, key)) for key, _ in SAMPLER_OPTIONS},
        **blocks,
    }


def option_change(option: str, there: object, here: object) -> str:
    """The warning for a resume whose `option` is `here` where the checkpoint's run
    used `there`, e.g. "resuming with --batch-size 8; the checkpoint's run used 16";
    '' when they agree or the checkpoint does not record it (`there` None: written
    before it was recorded, so unknown)."""
    if there is None or there == here:
        return ""
    return f"resuming with {option} {here}; the checkpoint's run used {there}"


def restore_trainer(trainer: LocalTrainer, state: dict[str, Any], vector: np.ndarray) -> None:
    """Back to a checkpoint's trainer state: adapter, AdamW moments, sampler position.
    The optimizer's hyperparameters (lr, weight decay, betas, eps) stay the ones this
    start built it with: `load_state_dict` would bring back the checkpoint's, so a
    resume with another --lr or --weight-decay would silently train with the old ones
    (a decaying schedule sets each step's lr itself; a flat one never does). So do the
    sampler's step size and micro-batches (`SAMPLER_OPTIONS`): the position indexes
    the share's rows whatever the batch, and each option that differs from the
    recorded one is a warning line (`option_change`)."""
    for key, option in SAMPLER_OPTIONS:
        if note := option_change(option, state.get(key), getattr(trainer, key)):
            log.warning("%s", note)
    if isinstance(trainer, BlockTrainer):
        trainer.restore_blocks(state)  # first: the vector and optimizer are its block's
    trainer.set_vector(vector)
    given = [{k: v for k, v in g.items() if k != "params"} for g in trainer.optimizer.param_groups]
    trainer.optimizer.load_state_dict(state["optimizer"])
    for group, options in zip(trainer.optimizer.param_groups, given, strict=True):
        group.update(options)  # the moments (optimizer.state) stay the checkpoint's
    if trainer.scaler is not None and "scaler" in state:  # older checkpoints lack it
        trainer.scaler.load_state_dict(state["scaler"])
    trainer.step = int(state["step"])
    trainer.epoch = int(state["epoch"])
    trainer.cursor = int(state["cursor"])
    order = state["order"]
    if isinstance(order, torch.Tensor):
        order = order.numpy()
    trainer.order = np.asarray(order, dtype=np.int64)


def save(root: Path, lm: LoraModel, state: NodeState, meta: dict[str, Any]) -> Path:
    """Write checkpoint `ckpt-<round>` and point LATEST at it; returns its path. A
    write that fails (OSError: a full or read-only disk, also when the writer raised
    another kind: `adapter.disk_failures`) leaves no half-written folder or pointer:
    LATEST and the checkpoints before stay as they were. The folder (when
    this creates it) and every checkpoint are the user's alone (0700), LATEST too
    (0600), whatever the umask: who may rewrite them chooses what a resume loads."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    final = root / f"ckpt-{state.round:08d}"
    build = new_build_dir(final)
    size = sum(a.nbytes for a in (state.vector, state.public, folder_vector(state)))
    try:
        with disk_failures(root, size):  # a full disk is an OSError, whatever writes
            peft_dir = build / "adapter"
            lm.save_adapter(folder_vector(state), peft_dir, {"round": state.round, **meta})
            extra = {} if state.saved is None else {"vector": torch.from_numpy(state.vector.copy())}
            torch.save(
                {
                    **extra,
                    "round": state.round,
                    "seq": state.seq,
                    "public": torch.from_numpy(state.public.copy()),
                    "trainer": state.trainer,
                    "fingerprint": state.fingerprint,
                    "correction": None
                    if state.correction is None
                    else torch.from_numpy(state.correction.copy()),
                    "method_state": {
                        k: torch.from_numpy(v.copy()) for k, v in state.method_state.items()
                    },
                    **({} if state.share is None else {"share": dict(state.share)}),
                    **({} if state.codec is None else {"codec": state.codec}),
                },
                build / "state.pt",
            )
            fsync_tree(build)
            faults.crash_point("checkpoint")
            atomic_replace_dir(build, final)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    tmp = root / f".{LATEST}.tmp"
    try:
        tmp.unlink(missing_ok=True)  # a crash's leftover, perhaps of another mode
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            fh.write(final.name + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:  # LATEST still names the checkpoint before
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    faults.crash_point("checkpoint_pointer")
    os.replace(tmp, root / LATEST)
    fsync_dir(root)
    _prune(root, keep=final.name)
    return final


def folder_vector(state: NodeState) -> np.ndarray:
    """What a checkpoint's model folder holds: the adapter, or DECA's whole model."""
    return state.vector if state.saved is None else state.saved


def _prune(root: Path, keep: str) -> None:
    ckpts = sorted(p for p in root.glob("ckpt-*") if p.is_dir())
    for old in ckpts[:-KEEP]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)
    if run_folder.held(root):  # else another node's may be being written
        for stale in root.glob(".ckpt-*"):  # half-written builds from a crash
            shutil.rmtree(stale, ignore_errors=True)


def latest(root: Path) -> Path | None:
    """The checkpoint a resume continues from (`run_folder.resume_point`): the one
    LATEST names when it is complete, or without LATEST (a crash before it was
    written) the newest complete ckpt-*; None if there is none."""
    return run_folder.resume_point(root)


def _empty_bytes(*args: object) -> bytes:
    """`bytes()` as protocol 2 pickles an empty buffer (an empty ndarray's data); any
    argument is refused (`bytes(n)` would allocate n bytes)."""
    if args:
        raise pickle.UnpicklingError("bytes() with arguments is not allowed")
    return b""


def _array_globals() -> list[Any]:
    """What a checkpoint's numpy arrays and scalars unpickle through (the sampler's
    order, an ndarray in checkpoints written before it became a tensor): array
    reconstruction under numpy 2's (`numpy._core`) and numpy 1's (`numpy.core`) names,
    so either numpy reads what the other wrote, every numpy dtype but `object`, whose
    items would be arbitrary pickles, and the empty `bytes()` an empty array's data
    pickles as."""
    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # a numpy 1 without numpy._core
        multiarray = importlib.import_module("numpy.core.multiarray")
    dtypes = [
        c
        for c in vars(np.dtypes).values()
        if isinstance(c, type) and issubclass(c, np.dtype) and c is not np.dtypes.ObjectDType
    ]
    spelled = [
        (obj, f"{module}.multiarray.{obj.__name__}")
        for obj in (multiarray._reconstruct, multiarray.scalar)
        for module in ("numpy._core", "numpy.core")
    ]
    return [*spelled, (_empty_bytes, "builtins.bytes"), np.ndarray, np.dtype, *dtypes]


def read_state(path: Path) -> dict[str, Any]:
    """The `state.pt` of checkpoint directory `path` (CheckpointError if it cannot be
    read: truncated, corrupt, or not a checkpoint). It is unpickled with torch's
    `weights_only` loader, which builds tensors, containers, numbers, strings and
    numpy arrays only: a file holding any other object is refused, never run, so
    opening a checkpoint someone else wrote (`inspect`, `--resume`) cannot run code."""
    try:
        with torch.serialization.safe_globals(_array_globals()):
            raw = torch.load(path / "state.pt", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():  # a damaged pickle, not a refused one
            raise CheckpointError(f"{path / 'state.pt'} cannot be read: corrupt") from exc
        raise CheckpointError(
            f"{path / 'state.pt'} holds Python objects a declora checkpoint never holds "
            "(refused unread: loading them could run code)"
        ) from exc
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise CheckpointError(
            f"{path / 'state.pt'} cannot be read ({type(exc).__name__}): truncated or corrupt"
        ) from exc
    if not isinstance(raw, dict) or not {"round", "seq", "fingerprint"} <= raw.keys():
        raise CheckpointError(f"{path / 'state.pt'} is not a declora checkpoint")
    return raw


def round_problem(round_: object, seq: object) -> str:
    """'' when a checkpoint's `round_` and `seq` are ones a node may resume at (whole
    numbers, not bools, round at most `MAX_OWN_ROUND`, seq at most `MAX_SEQ`), else
    what is out of range (a round past it would soon pass the bound every neighbour's
    Hello check holds this node to)."""
    try:
        r, q = operator.index(round_), operator.index(seq)  # type: ignore[arg-type]
    except TypeError:
        r, q = -1, -1
    if isinstance(round_, bool) or isinstance(seq, bool):
        r = -1
    if 0 <= r <= MAX_OWN_ROUND and 0 <= q <= MAX_SEQ:
        return ""
    return f"round {shown(round_, 40)}, seq {shown(seq, 40)} (at most {MAX_OWN_ROUND}, {MAX_SEQ})"


def load(root: Path, lm: LoraModel) -> NodeState:
    """Read the checkpoint `latest` picks (its `path`); refuses one made for another
    adapter. One that cannot be read (truncated, corrupt) or is at a round or seq a
    node may not resume at (`round_problem`) gives way, with a warning naming both,
    to the newest other complete checkpoint that can be used; CheckpointError when
    none can (`startup` tells the user to begin afresh in another --checkpoint-dir)."""
    path = latest(root)
    if path is None:
        named = run_folder.named(root) or ""
        others = [p.name for p in run_folder.complete_checkpoints(root)]
        raise CheckpointError(
            f"no checkpoint in {root}"
            + (f": {LATEST} names {named!r}, which is missing or incomplete" if named else "")
            + (f" (other checkpoints: {', '.join(others)})" if others else "")
        )
    try:
        return _load(path, lm)
    except CheckpointMismatch:
        raise
    except CheckpointError as damaged:
        for other in reversed(run_folder.complete_checkpoints(root)):
            if other == path:
                continue
            try:
                state = _load(other, lm)
            except CheckpointMismatch:
                raise
            except CheckpointError:
                continue
            log.warning(
                "%s; resuming from the newest intact checkpoint, %s (round %d)",
                damaged,
                other,
                state.round,
            )
            return state
        raise


def _load(path: Path, lm: LoraModel) -> NodeState:
    """Read checkpoint `path`: CheckpointError when it cannot be read, CheckpointMismatch
    when it was made for another adapter."""
    raw = read_state(path)
    bad = round_problem(raw["round"], raw["seq"])
    if bad:
        raise CheckpointError(
            f"{path} is at {bad}: a node resumed there would run rounds its neighbours refuse"
        )
    if raw["fingerprint"] != lm.fingerprint and not labels_read_otherwise(path, raw, lm):
        from declora.node.adapter_io import recorded_differences

        diffs = recorded_differences(path / "adapter", lm)  # "there": the checkpoint's
        raise CheckpointMismatch(
            f"{path} was written for fingerprint {raw['fingerprint']}, "
            f"this node has {lm.fingerprint}" + (f": {'; '.join(diffs)}" if diffs else "")
        )
    if "vector" in raw:  # the folder holds a full model (DECA): the vector is here
        vector = raw["vector"].numpy()
    else:
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path / "adapter" / "adapter_model.safetensors"))
        except Exception as exc:  # a missing, truncated or corrupt file
            raise CheckpointError(
                f"{path / 'adapter'} holds no readable adapter ({type(exc).__name__}): {exc}"
            ) from exc
        vector = peft_tensors_to_vector(tensors, lm.schema)
    return NodeState(
        path=path,
        round=int(raw["round"]),
        seq=int(raw["seq"]),
        vector=vector,
        public=raw["public"].numpy(),
        trainer=raw["trainer"],
        fingerprint=raw["fingerprint"],
        correction=None if raw.get("correction") is None else raw["correction"].numpy(),
        method_state={k: v.numpy() for k, v in raw.get("method_state", {}).items()},
        share=raw.get("share"),
        codec=raw["codec"] if isinstance(raw.get("codec"), str) else None,
    )


def labels_read_otherwise(path: Path, raw: dict[str, Any], lm: LoraModel) -> bool:
    """Whether checkpoint `path` (its state `raw`) is `lm`'s but for how its labels were
    spelled: recorded before whole-number labels were read in integer form ("2.0", now
    "2": `data.label_name`), the same classes in the same order, and nothing else
    differs (its fingerprint is `lm`'s with the recorded labels)."""
    from declora.node.adapter import fingerprint
    from declora.node.adapter_card import DECLORA_INFO
    from declora.node.data import label_name

    try:
        info = json.loads((path / "adapter" / DECLORA_INFO).read_text())
    except (OSError, ValueError, RecursionError):  # a damaged card: deep nesting too
        return False
    recorded = info.get("labels") if isinstance(info, dict) else None
    if not lm.label_names or not isinstance(recorded, list):
        return False
    if [label_name(v) for v in recorded] != list(lm.label_names):
        return False
    identity = {**lm.identity, "labels": [str(v) for v in recorded]}
    return fingerprint(lm.spec.model, lm.base_digest, identity, lm.schema) == raw["fingerprint"]


def peft_tensors_to_vector(tensors: dict[str, torch.Tensor], schema: AdapterSchema) -> np.ndarray:
    """Flatten a PEFT safetensors mapping in our schema order."""
    by_peft = {saved_name(n): n for n in schema.names}
    missing = sorted(set(by_peft) - set(tensors))
    if missing:
        raise CheckpointError(f"adapter file lacks tensors {missing[:3]}")
    return schema.flatten({by_peft[k]: tensors[k] for k in by_peft})


# ------------------------------------------------------------ the training share
SHARE_NAMES = ("data", "partition", "partition_scheme", "validation_fraction")
SHARE_ROWS = 4096  # rows hashed at a time (bounded memory on a large share)


def training_share(encoded: Encoded, /, **named: Any) -> dict[str, Any]:
    """What identifies a node's training share: the options that chose it (`named`:
    --data as given, --partition, ...), its number of examples and a digest of their
    tokens and labels in order (the sampler's order and cursor index these rows),
    read as int64 whatever dtype holds them (a compact int32 copy digests the same)."""
    digest = hashlib.blake2b(digest_size=16)
    for tensor in (encoded.input_ids, encoded.attention_mask, encoded.labels):
        digest.update(f"{torch.int64}{tuple(tensor.shape)}".encode())
        for start in range(0, int(tensor.shape[0]), SHARE_ROWS):
            chunk = tensor[start : start + SHARE_ROWS].detach().to("cpu", torch.int64)
            digest.update(chunk.contiguous().numpy().tobytes())
    return {**named, "examples": len(encoded), "digest": digest.hexdigest()}


def check_share(
    path: Path, recorded: dict[str, Any] | None, here: dict[str, Any], order: np.ndarray
) -> bool:
    """Refuse (CheckpointMismatch) to resume checkpoint `path` on another training
    share than the one it was written on, naming what differs ("partition: '0/1'
    there, '0/2' here"). Whether the share could be checked: a checkpoint written
    before the share was recorded (`recorded` None) is only checked against the size
    of its sampler `order` (a permutation of the share's rows, empty before the first
    step)."""
    if recorded is None:
        if len(order) and len(order) != here["examples"]:
            raise CheckpointMismatch(
                f"{path} was written on a training share of {len(order)} examples, "
                f"this node has {here['examples']} (--data {here.get('data')!s}, "
                f"--partition {here.get('partition') or 'none'})"
            )
        return False
    if recorded.get("digest") == here["digest"]:
        return True  # the same examples in the same order, whatever the file is called now
    diffs = [
        f"{name}: {recorded[name]!r} there, {here.get(name)!r} here"
        for name in (*SHARE_NAMES, "examples")
        if name in recorded and recorded[name] != here.get(name)
    ]
    if not diffs:  # the same options and size: the file's contents changed
        diffs.append(
            f"the contents of its {here['examples']} training examples differ (the file "
            f"--data {here.get('data')!s} changed since, or how it is read: the columns, "
            "--data-format, --packing, --max-length, the tokenizer)"
        )
    raise CheckpointMismatch(f"{path} was written on another training share: {'; '.join(diffs)}")
