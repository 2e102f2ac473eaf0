"""weights_sha256's own safetensors reader (audit "revsoak"): every number of the header
is bounded before use, and a damaged file is a ValueError, never another exception or a
hash of bytes read twice; the hash is torch's reader's for every dtype that reader reads."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import _TYPES, save_file
from test_memsoak_weights_hash import torch_sha256

from declora.node.adapter_card import DTYPES, weights_sha256


def raw_file(path: Path, header: object, data: bytes = b"") -> Path:
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def entry(dtype: str = "F32", shape: object = (2,), offsets: object = (0, 8)) -> dict:
    return {"dtype": dtype, "shape": list(shape) if isinstance(shape, tuple) else shape,
            "data_offsets": list(offsets) if isinstance(offsets, tuple) else offsets}  # fmt: skip


@pytest.mark.parametrize(
    ("header", "data"),
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, b"", id="nested 100,000 deep"),
        pytest.param({"x": {"a": [[[[[1]]]]] * 1}, "y": "[" * 10}, b"", id="entries not objects"),
        pytest.param({"x": entry(shape="ab")}, bytes(8), id="shape a string"),
        pytest.param({"x": entry(shape=[2.0])}, bytes(8), id="shape of floats"),
        pytest.param({"x": entry(shape=[True, 2])}, bytes(8), id="shape of bools"),
        pytest.param({"x": entry(shape=[-2, -1])}, bytes(8), id="negative dims"),
        pytest.param({"x": entry(offsets=[0.0, 8.0])}, bytes(8), id="float offsets"),
        pytest.param({"x": entry(offsets=["0", "8"])}, bytes(8), id="string offsets"),
        pytest.param({"x": entry(offsets=[-8, 0])}, bytes(8), id="negative offsets"),
        pytest.param({"x": entry(offsets=[0, 8, 9])}, bytes(8), id="three offsets"),
        pytest.param({"x": entry(offsets=[0, 2**70])}, bytes(8), id="huge offset"),
        pytest.param({"x": entry(shape=[2**40] * 1000)}, bytes(8), id="huge shape"),
        pytest.param({"x": entry(shape=[3])}, bytes(8), id="bytes not the shape's"),
        pytest.param({"x": entry(dtype="F4")}, bytes(8), id="dtype torch did not read"),
        pytest.param({"x": entry(dtype=32)}, bytes(8), id="dtype not a string"),
        pytest.param({"x": entry(), "y": entry()}, bytes(8), id="two tensors on one span"),
        pytest.param(
            {"x": entry(shape=[4], offsets=[0, 16]), "y": entry(offsets=[8, 16])},
            bytes(16),
            id="overlapping",
        ),
        pytest.param({"x": entry(offsets=[8, 16])}, bytes(16), id="gap before"),
        pytest.param({"x": entry()}, bytes(12), id="bytes after the last tensor"),
        pytest.param({"x": entry(offsets=[0, 8])}, bytes(4), id="cut short"),
    ],
)
def test_a_damaged_header_is_a_value_error(tmp_path: Path, header: object, data: bytes) -> None:
    """Before: RecursionError for the nested header; the wrong types, the overlapping
    and the out-of-place spans were hashed (a shape 'ab' as ['a', 'b'], offsets 0.0 as
    0, one span's bytes hashed twice)."""
    with pytest.raises(ValueError):
        weights_sha256(raw_file(tmp_path / "bad.safetensors", header, data))


def test_the_dtypes_are_the_ones_torch_reads() -> None:
    """A guard: the table is safetensors' torch reader's, names and widths."""
    assert {k: (str(t).removeprefix("torch."), t.itemsize) for k, t in _TYPES.items()} == DTYPES


@pytest.mark.parametrize("code", sorted(_TYPES))
def test_every_dtype_hashes_as_torch_read_it(tmp_path: Path, code: str) -> None:
    """A guard, each dtype alone and beside others, in the order safetensors writes."""
    dtype = _TYPES[code]
    g = torch.Generator().manual_seed(2)
    t = torch.randint(0, 2, (3, 4), generator=g) if dtype == torch.bool else None
    t = (t if t is not None else torch.randint(0, 100, (3, 4), generator=g)).to(dtype)
    path = tmp_path / f"{code}.safetensors"
    save_file({"z": t, "a": torch.ones(2, dtype=torch.float32), "m": t[:0]}, str(path))
    assert weights_sha256(path) == torch_sha256(path)
