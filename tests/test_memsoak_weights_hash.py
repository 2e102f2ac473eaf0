"""The adapter's weights hash, computed at every checkpoint, keeps no memory behind
(audit "memsoak": safetensors' torch reader kept about 60 bytes a tensor read for good,
so a node that checkpoints every few rounds grew for as long as it ran), and it is the
hash torch's reader gave, for every dtype an adapter may hold."""

from __future__ import annotations

import gc
import hashlib
import tracemalloc
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from declora.node.adapter_card import weights_sha256

CALLS = 2000


def torch_sha256(path: Path) -> str:
    """The hash as torch's reader computed it (the recorded hashes of earlier saves)."""
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(path), "pt") as fh:
        for name in sorted(fh.keys()):
            t = fh.get_tensor(name).contiguous()
            h.update(f"{name}|{str(t.dtype).removeprefix('torch.')}|{list(t.shape)}\n".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def adapter_file(path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    tensors = {f"layer.{i}.lora_A.weight": torch.randn(4, 32, generator=g) for i in range(8)}
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def test_hashing_at_every_checkpoint_keeps_no_memory(tmp_path: Path) -> None:
    """Before: 2,000 hashes of an 8-tensor file kept about 450 kB."""
    path = adapter_file(tmp_path / "a.safetensors")
    digest = weights_sha256(path)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(CALLS):
            assert weights_sha256(path) == digest
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    print(f"{CALLS} hashes of an 8-tensor adapter: {kept:,} bytes kept")
    assert kept < 20_000


def test_the_hash_is_the_one_torch_gave_for_every_dtype(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    tensors = {
        "b.f32": torch.randn(3, 5, generator=g),
        "a.bf16": torch.randn(7, generator=g).to(torch.bfloat16),
        "c.f16": torch.randn(2, 2, generator=g).to(torch.float16),
        "d.i64": torch.arange(6).reshape(2, 3),
        "e.bool": torch.tensor([True, False, True]),
        "f.scalar": torch.tensor(1.5),
        "g.empty": torch.zeros(0, 4),
    }
    path = tmp_path / "mixed.safetensors"
    save_file(tensors, str(path), metadata={"note": "metadata is not hashed"})
    assert weights_sha256(path) == torch_sha256(path)


@pytest.mark.parametrize(
    "body",
    [b"", b"\x05", (10**9).to_bytes(8, "little") + b"{}", (2).to_bytes(8, "little") + b"[]",
     (40).to_bytes(8, "little") + b'{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'[:40],
     (13).to_bytes(8, "little") + b'{"x":{"a":1}}'],
)  # fmt: skip
def test_a_file_that_is_not_safetensors_is_a_value_error(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(body)
    with pytest.raises(ValueError):
        weights_sha256(path)
