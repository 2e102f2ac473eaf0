"""The two codec kinds, dense (`_Dense`) and top-k (`_TopK`), and `_decode`, which
reads any payload and, given an expected codec, refuses one another codec wrote."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from declora.node.codecs_common import (
    _FP32,
    _MAX_TOPK_N,
    _QUANT,
    _TOPK,
    F32,
    HEADER_SIZE,
    OVERHEAD,
    CodecError,
    _ceil_div,
)
from declora.node.codecs_wire import _assemble, _parse, _Values, _view


def _check_input(x: object) -> F32:
    if not isinstance(x, np.ndarray):
        raise CodecError(f"expected a numpy.ndarray, got {type(x).__name__}")
    if x.ndim != 1:
        raise CodecError(f"expected a 1-D array, got shape {x.shape}")
    if x.dtype.kind != "f" or x.dtype.itemsize != 4:
        raise CodecError(f"expected a float32 array, got {x.dtype}; cast with x.astype(np.float32)")
    return np.ascontiguousarray(x, dtype=np.float32)


def _require_finite(x: F32) -> None:
    finite = np.isfinite(x)
    if not bool(finite.all()):
        bad = x.size - int(np.count_nonzero(finite))
        raise CodecError(f"input contains NaN or Inf ({bad} of {x.size}); refusing to encode")


@dataclass(frozen=True)
class _Dense:
    values: _Values

    @property
    def spec(self) -> str:
        return self.values.spec

    def encode(self, x: np.ndarray, rng: np.random.Generator) -> bytes:
        """Encode a 1-D float32 array of finite values."""
        xs = _check_input(x)
        if self.values.kind != _QUANT:  # quantization checks finiteness itself
            _require_finite(xs)
        parts = self.values.encode(xs, rng)
        return _assemble(self.values.kind, self.values, xs.size, xs.size, parts)

    def decode(self, payload: bytes) -> np.ndarray:
        """Decode a payload written by this codec (else :class:`CodecError`)."""
        return _decode(payload, expect=self)

    def encoded_size(self, n: int) -> int:
        return OVERHEAD + self.values.size(n)


@dataclass(frozen=True)
class _TopK:
    fraction: float
    values: _Values

    @property
    def spec(self) -> str:
        base = f"topk:{self.fraction!r}"
        return base if self.values.kind == _FP32 else f"{base}+{self.values.spec}"

    def k_for(self, n: int) -> int:
        """ceil(F*n), computed exactly from the canonical decimal F."""
        f = Fraction(repr(self.fraction))
        return _ceil_div(f.numerator * n, f.denominator)

    def encode(self, x: np.ndarray, rng: np.random.Generator) -> bytes:
        """Keep the ceil(F*n) largest-|x| entries (ties: lowest index); indices ascending."""
        xs = _check_input(x)
        _require_finite(xs)
        n = xs.size
        if n > _MAX_TOPK_N:
            raise CodecError(f"topk stores uint32 indices; n={n} is too large")
        k = self.k_for(n)
        if k == n:
            idx = np.arange(n, dtype="<u4")
        else:
            a = np.abs(xs)
            thr = np.partition(a, n - k)[n - k]
            mask = a > thr
            short = k - int(np.count_nonzero(mask))
            if short:
                mask[np.flatnonzero(a == thr)[:short]] = True
            idx = np.flatnonzero(mask).astype("<u4")
        parts = [idx, *self.values.encode(xs[idx], rng)]
        return _assemble(_TOPK | self.values.kind, self.values, n, k, parts)

    def decode(self, payload: bytes) -> np.ndarray:
        """Decode a payload written by this codec (else :class:`CodecError`)."""
        return _decode(payload, expect=self)

    def encoded_size(self, n: int) -> int:
        k = self.k_for(n)
        return OVERHEAD + 4 * k + self.values.size(k)


_CodecImpl = _Dense | _TopK


def _decode(payload: object, expect: _CodecImpl | None = None, max_n: int | None = None) -> F32:
    mv = _view(payload)
    hdr = _parse(mv)
    values = hdr.values()
    if max_n is not None and hdr.n > max_n:
        raise CodecError(f"payload declares {hdr.n} elements, more than max_n={max_n}")
    if expect is not None:
        matches = values == expect.values and (
            (isinstance(expect, _TopK) and hdr.topk and hdr.k == expect.k_for(hdr.n))
            or (isinstance(expect, _Dense) and not hdr.topk)
        )
        if not matches:
            raise CodecError(
                f"payload was encoded as {hdr.describe()}, not with this codec ({expect.spec});"
                " use codecs.decode() to accept any codec"
            )
    if not hdr.topk:
        return values.decode(mv, HEADER_SIZE, hdr.n)
    k, n = hdr.k, hdr.n
    idx = np.frombuffer(mv, dtype="<u4", count=k, offset=HEADER_SIZE)
    if k and (int(idx[-1]) >= n or not bool((idx[1:] > idx[:-1]).all())):
        raise CodecError("corrupt payload: top-k indices not strictly increasing below n")
    vals = values.decode(mv, HEADER_SIZE + 4 * k, k)
    out = np.zeros(n, np.float32)
    out[idx] = vals
    return out
