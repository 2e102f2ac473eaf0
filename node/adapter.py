"""Adapter state: the trainable tensors of a PEFT model, their schema and fingerprint.

The adapter of a node is its trainable tensors (LoRA A and B factors, and the task
head where there is one) in a fixed order. `AdapterSchema` maps them to and from one
flat float32 vector, the unit the codecs and the mixer work on. Two nodes can mix
only if their fingerprints match: the fingerprint covers the base model (name,
config and a digest of its weights), the LoRA config and the tensor schema.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from declora.node.lora_names import LORA_MARK


class SchemaError(ValueError):
    """Tensors do not match the adapter schema (names, shapes or dtypes)."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


@dataclass(frozen=True)
class AdapterSchema:
    """Ordered tensor specs; `flatten`/`unflatten` are exact inverses for float32."""

    tensors: tuple[TensorSpec, ...]

    @classmethod
    def of(cls, named: Iterable[tuple[str, torch.Tensor]]) -> AdapterSchema:
        return cls(tuple(TensorSpec(n, tuple(t.shape)) for n, t in named))

    @property
    def numel(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors)

    def flatten(self, state: Mapping[str, torch.Tensor]) -> np.ndarray:
        """Concatenate `state` in schema order into a new float32 vector."""
        self.check(state)
        parts = [state[t.name].detach().to("cpu", torch.float32).reshape(-1) for t in self.tensors]
        return torch.cat(parts).numpy() if parts else np.zeros(0, np.float32)

    def unflatten(self, vec: np.ndarray) -> dict[str, torch.Tensor]:
        """Split a flat vector into named float32 tensors (copies)."""
        if vec.ndim != 1 or vec.shape[0] != self.numel:
            raise SchemaError(f"vector of shape {vec.shape} does not fit {self.numel} values")
        out: dict[str, torch.Tensor] = {}
        offset = 0
        flat = torch.from_numpy(np.ascontiguousarray(vec, dtype=np.float32))
        for t in self.tensors:
            out[t.name] = flat[offset : offset + t.numel].reshape(t.shape).clone()
            offset += t.numel
        return out

    def check(self, state: Mapping[str, torch.Tensor]) -> None:
        """Raise SchemaError naming the first mismatch between `state` and the schema."""
        if tuple(state) != self.names:
            missing = sorted(set(self.names) - set(state))
            extra = sorted(set(state) - set(self.names))
            raise SchemaError(f"tensor names differ: missing {missing[:3]}, unexpected {extra[:3]}")
        for t in self.tensors:
            shape = tuple(state[t.name].shape)
            if shape != t.shape:
                raise SchemaError(f"{t.name}: shape {shape}, expected {t.shape}")

    def to_json(self) -> list[dict[str, object]]:
        return [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in self.tensors]


def trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The model's trainable parameters in registration order (the adapter)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def base_digest(model: nn.Module, sample_bytes: int = 4096) -> str:
    """Digest of the frozen weights: names, shapes, dtypes and a sample of each tensor.

    Sampling (first and last `sample_bytes` of each tensor) keeps this fast on
    multi-GB models while still telling different checkpoints apart. LoRA factors are
    never part of it, even frozen ones (ConLoRA's A): they are the adapter's.
    """
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        if p.requires_grad or LORA_MARK in name:
            continue
        raw = p.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy()
        h.update(f"{name}|{tuple(p.shape)}|{p.dtype}|".encode())
        h.update(raw[:sample_bytes].tobytes())
        h.update(raw[-sample_bytes:].tobytes())
    return h.hexdigest()


def fingerprint(
    base_name: str, digest: str, lora: Mapping[str, object], schema: AdapterSchema
) -> str:
    """A short hex id; equal iff base model, LoRA config and tensor schema agree."""
    blob = json.dumps(
        {"base": base_name, "digest": digest, "lora": lora, "schema": schema.to_json()},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


OUTPUT_HINT = "give a folder that exists or can be created (not a file, nor inside one)"


def output_problem(path: Path) -> str | None:
    """Why `path` cannot be an output folder (an existing file, or below one; an
    unwritable parent), or None when it is a folder or can be made one. Creates nothing."""
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder"
    existing = next((p for p in path.parents if p.exists()), Path.cwd())
    if not existing.is_dir():
        return f"{path}: {existing} is a file, not a folder"
    if not path.exists() and not os.access(existing, os.W_OK | os.X_OK):
        return f"{path}: cannot create it in {existing} (not writable)"
    return None


def atomic_replace_dir(build: Path, final: Path) -> None:
    """Move a fully written directory into place, durably. An old `final` is replaced
    whole: moved aside to `final.old` first, so a crash between the two renames leaves
    the old one there, never a mix of both."""
    final.parent.mkdir(parents=True, exist_ok=True)
    backup = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(final, backup)
    os.replace(build, final)
    shutil.rmtree(backup, ignore_errors=True)
    fsync_dir(final.parent)


def fsync_dir(path: Path) -> None:
    """fsync a directory (its entries: renames into it become durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb+") as fh:
                os.fsync(fh.fileno())


def new_build_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))


MIN_FREE = 1 << 20  # less free than this in a folder being written: it is full


def disk_cause(folder: Path, size: int) -> OSError | None:
    """What `folder`'s file system says made a write there of about `size` bytes fail:
    EROFS when it is mounted read-only, ENOSPC when less than `size` bytes (or
    `MIN_FREE`) are free to this user; None when neither (or it cannot be asked)."""
    try:
        fs = os.statvfs(folder)
    except OSError:
        return None
    if fs.f_flag & os.ST_RDONLY:
        code = errno.EROFS
    elif fs.f_bavail * fs.f_frsize < max(size, MIN_FREE):
        code = errno.ENOSPC
    else:
        return None
    return OSError(code, os.strerror(code), str(folder))


@contextlib.contextmanager
def disk_failures(folder: Path, size: int) -> Iterator[None]:
    """Run a write of about `size` bytes into `folder`, raising a writer's failure that
    is not an OSError (torch.save's RuntimeError, safetensors' SafetensorError on a
    full disk) as the OSError `disk_cause` finds, chained to it; any other failure
    unchanged. Put it inside the cleanup of a half-written build: the space the build
    took counts."""
    try:
        yield
    except Exception as exc:
        cause = None if isinstance(exc, OSError) else disk_cause(folder, size)
        if cause is None:
            raise
        raise cause from exc


@contextlib.contextmanager
def built_atomically(final: Path, size: int) -> Iterator[Path]:
    """A fresh build folder beside `final` for a write of about `size` bytes. When the
    block ends, the build is fsynced and replaces `final` in one rename; when it
    raises, the build is removed, and a writer's failure on a full or read-only disk is
    raised as its OSError (`disk_failures`, judged before the build's space is freed).
    So `final` is the old folder or the whole new one, and no build is left behind."""
    build = new_build_dir(final)
    try:
        with disk_failures(final.parent, size):
            yield build
        fsync_tree(build)
        atomic_replace_dir(build, final)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
