"""A payload's layout: how its values are stored (`_Values`), its header and CRC
written (`_assemble`) and read back (`_parse`: magic, CRC, header fields and length
checked, `CodecError` on any mismatch, before the body is decoded)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from declora.node.codecs_common import (
    _BF16,
    _CRC,
    _FP16,
    _FP32,
    _HEADER,
    _KIND_NAMES,
    _MAX_TOPK_N,
    _QUANT,
    _TOPK,
    DEFAULT_BLOCK,
    F32,
    MAGIC,
    OVERHEAD,
    CodecError,
    _ceil_div,
)
from declora.node.codecs_float import (
    _BF16_LIMIT,
    _FP16_LIMIT,
    _check_finite_decoded,
    _check_limit,
    _to_bf16,
    _to_fp16,
)
from declora.node.codecs_quant import _dequantize, _quantize


@dataclass(frozen=True)
class _Values:
    """How a run of float32 values is stored: kind (fp32/fp16/bf16/quant)."""

    kind: int
    bits: int = 0
    block: int = 0

    @property
    def spec(self) -> str:
        if self.kind != _QUANT:
            return _KIND_NAMES[self.kind]
        base = f"q{self.bits}"
        return base if self.block == DEFAULT_BLOCK else f"{base}:block={self.block}"

    def size(self, count: int) -> int:
        """Bytes needed for ``count`` values."""
        if self.kind == _FP32:
            return 4 * count
        if self.kind in (_FP16, _BF16):
            return 2 * count
        return 4 * _ceil_div(count, self.block) + _ceil_div(count * self.bits, 8)

    def encode(self, x: F32, rng: np.random.Generator) -> list[np.ndarray]:
        """Buffers (little-endian) for finite float32 ``x``."""
        if self.kind == _FP32:
            return [x.astype("<f4", copy=False)]
        if self.kind == _FP16:
            _check_limit(x, _FP16_LIMIT, "fp16")
            return [_to_fp16(x)]
        if self.kind == _BF16:
            _check_limit(x, _BF16_LIMIT, "bf16")
            return [_to_bf16(x)]
        scales, packed = _quantize(x, self.bits, self.block, rng)
        return [scales, packed]

    def decode(self, buf: memoryview, offset: int, count: int) -> F32:
        """Values from ``buf[offset:offset+self.size(count)]`` (length already checked)."""
        if self.kind == _FP32:
            out = np.frombuffer(buf, dtype="<f4", count=count, offset=offset).astype(np.float32)
            _check_finite_decoded(out)
            return out
        if self.kind == _FP16:
            out = np.frombuffer(buf, dtype="<f2", count=count, offset=offset).astype(np.float32)
            _check_finite_decoded(out)
            return out
        if self.kind == _BF16:
            raw = np.frombuffer(buf, dtype="<u2", count=count, offset=offset)
            if count and bool(np.any((raw & 0x7F80) == 0x7F80)):
                raise CodecError("corrupt payload: decoded bf16 values contain NaN or Inf")
            wide = raw.astype(np.uint32)
            wide <<= 16
            return wide.view(np.float32)
        return _dequantize(buf, offset, count, self.bits, self.block)


def _assemble(cid: int, values: _Values, n: int, k: int, parts: Sequence[np.ndarray]) -> bytes:
    header = _HEADER.pack(MAGIC, cid, values.bits, 0, values.block, n, k)
    views = [np.ascontiguousarray(p).data for p in parts]
    crc = zlib.crc32(header)
    for v in views:
        crc = zlib.crc32(v, crc)
    return b"".join([header, *views, _CRC.pack(crc)])


@dataclass(frozen=True)
class _Header:
    cid: int
    bits: int
    reserved: int
    block: int
    n: int
    k: int

    @property
    def topk(self) -> bool:
        return bool(self.cid & _TOPK)

    def values(self) -> _Values:
        """The value layout, or CodecError if the fields are inconsistent."""
        kind = self.cid & ~_TOPK
        if kind not in _KIND_NAMES:
            raise CodecError(f"unknown codec id 0x{self.cid:02x}")
        if self.reserved:
            raise CodecError(f"corrupt header: reserved field is {self.reserved}, expected 0")
        if kind == _QUANT:
            if self.bits not in (2, 4, 8):
                raise CodecError(f"corrupt header: quantization bits {self.bits} not in 2, 4, 8")
            if self.block < 1:
                raise CodecError("corrupt header: quantization block size is 0")
        elif self.bits or self.block:
            raise CodecError(
                f"corrupt header: {_KIND_NAMES[kind]} expects bits=0 block=0,"
                f" got bits={self.bits} block={self.block}"
            )
        if self.topk:
            if self.k > self.n or self.n > _MAX_TOPK_N:
                raise CodecError(f"corrupt header: top-k k={self.k} n={self.n}")
        elif self.k != self.n:
            raise CodecError(f"corrupt header: dense payload with k={self.k} != n={self.n}")
        return _Values(kind, self.bits, self.block)

    def total_size(self) -> int:
        values = self.values()
        body = values.size(self.k) + (4 * self.k if self.topk else 0)
        return OVERHEAD + body

    def describe(self) -> str:
        try:
            vspec = self.values().spec
        except CodecError:
            return f"codec id 0x{self.cid:02x}"
        return f"topk(k={self.k} of {self.n})+{vspec}" if self.topk else vspec


def _view(payload: object) -> memoryview:
    try:
        mv = memoryview(payload)  # type: ignore[arg-type]
    except TypeError:
        raise CodecError(f"payload must be bytes-like, got {type(payload).__name__}") from None
    if mv.ndim != 1 or mv.itemsize != 1:
        mv = mv.cast("B")
    return mv


def _parse(mv: memoryview) -> _Header:
    size = len(mv)
    if size < OVERHEAD:
        raise CodecError(f"truncated payload: {size} bytes, a payload has at least {OVERHEAD}")
    magic, cid, bits, reserved, block, n, k = _HEADER.unpack_from(mv)
    if magic != MAGIC:
        raise CodecError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    hdr = _Header(cid, bits, reserved, block, n, k)
    (stored,) = _CRC.unpack_from(mv, size - _CRC.size)
    if zlib.crc32(mv[: size - _CRC.size]) != stored:
        try:
            expected = hdr.total_size()
        except CodecError:
            expected = size
        if expected != size:
            raise CodecError(
                f"wrong payload length: {size} bytes, header declares {expected}"
                " (truncated or corrupted)"
            )
        raise CodecError("checksum mismatch: payload corrupted")
    expected = hdr.total_size()  # raises on unknown id / bad fields
    if expected != size:
        raise CodecError(f"wrong payload length: {size} bytes, header declares {expected}")
    return hdr
