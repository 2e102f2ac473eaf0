"""Codecs for adapter-delta messages: 1-D float32 vector in, self-describing bytes out.

Pure numpy, no I/O.  Every payload carries its own header, so :func:`decode` needs
nothing but the bytes.  Spec strings (see :func:`make_codec`)::

    fp32                  identity; decode(encode(x)) == x bit for bit
    fp16                  IEEE half, round-to-nearest-even; |x| >= 65520 is refused
    bf16                  bfloat16, round-to-nearest-even from the float32 bits
    q8 | q4 | q2          stochastic uniform quantization, per-block scales
    q4:block=64           ... with a block size other than the default 256
    topk:0.01             keep the ceil(F*n) largest-|x| entries (fp32 values)
    topk:0.01+q4          ... and quantize the kept values (any non-topk codec)

What callers may rely on:

* ``fp32`` is exact; ``fp16``/``bf16`` round to nearest even (relative error
  <= 2**-11 / 2**-8 in the normal range).
* ``qB`` (B in 8, 4, 2) uses ``L = 2**(B-1) - 1`` levels each side and per block
  ``scale = max|x_block| / L`` (float32).  Each element is rounded stochastically
  to a neighbouring level with the rng passed to ``encode``, so
  ``E[decode(encode(x))] == x`` (unbiased; the round-up probability is exact to
  2**-22, the rest is float32 rounding of x/scale and level*scale), and
  ``|decoded - x| <= scale`` of its block (up to that float32 rounding).  Zero
  blocks decode to exact zeros.  The same rng state gives the same bytes.
* ``topk`` keeps exactly ``ceil(F*n)`` entries of largest magnitude (ties: lowest
  index first), zeros the rest, and stores indices as uint32.  With ``+qB`` the
  kept values are quantized as one vector in index order (blocks of kept values).
* Error feedback is not here: the gossip state keeps it (`gossip.GossipState`: what
  rounding lost stays in x_i - x̂_i and is sent next round).
* Any malformed payload -- bad magic, unknown codec id, truncation, wrong length,
  a flipped byte (CRC32), out-of-range fields, non-finite values -- raises
  :class:`CodecError`; numpy never sees an unchecked length.

Wire format (little-endian)::

    magic  b"DLC1"          4 bytes
    id     u8                codec id: 1 fp32, 2 fp16, 3 bf16, 4 quant; | 0x10 = top-k
    bits   u8                2/4/8 for quant, else 0
    rsvd   u16               0
    block  u32               quant block size, else 0
    n      u64               decoded length
    k      u64               stored values (== n unless top-k)
    body                     [k uint32 indices if top-k] + values
                             values: fp32 k*4 | fp16/bf16 k*2 |
                                     quant ceil(k/block) float32 scales + ceil(k*bits/8) codes
    crc    u32               zlib.crc32(header + body)

Quantized codes are ``q + L`` in ``[0, 2L]``, packed ``8 // bits`` per byte, first
element in the least significant bits; unused trailing bits are zero.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = [
    "Codec",
    "CodecError",
    "compressed_size_ratio",
    "decode",
    "encoded_size",
    "make_codec",
]

F32 = npt.NDArray[np.float32]

MAGIC: Final = b"DLC1"
_HEADER: Final = struct.Struct("<4sBBHIQQ")  # magic, id, bits, reserved, block, n, k
_CRC: Final = struct.Struct("<I")
HEADER_SIZE: Final = _HEADER.size  # 28
OVERHEAD: Final = HEADER_SIZE + _CRC.size  # 32 bytes on top of the body

_FP32: Final = 0x01
_FP16: Final = 0x02
_BF16: Final = 0x03
_QUANT: Final = 0x04
_TOPK: Final = 0x10
_KIND_NAMES: Final = {_FP32: "fp32", _FP16: "fp16", _BF16: "bf16", _QUANT: "q"}

DEFAULT_BLOCK: Final = 256
_MAX_BLOCK: Final = 2**32 - 1
_MAX_TOPK_N: Final = 2**32  # indices are uint32
# Smallest |x| that rounds to +-inf in fp16 / bf16 (round-to-nearest-even).
_FP16_LIMIT: Final = 65520.0
_BF16_LIMIT: Final = float(np.array(0x7F7F8000, dtype=np.uint32).view(np.float32)[()])

ACCEPTED_SPECS: Final = (
    "fp32 | fp16 | bf16 | q8|q4|q2[:block=N] (N>=1, default 256) | "
    "topk:F[+fp32|fp16|bf16|q8|q4|q2[:block=N]] (0<F<=1)"
)


class CodecError(ValueError):
    """A payload, spec string or input vector that a codec cannot accept."""


@runtime_checkable
class Codec(Protocol):
    """What :func:`make_codec` returns.

    ``spec`` (read-only) is canonical: ``make_codec(c.spec).spec == c.spec``.  ``encode`` takes a
    1-D float32 array of finite values (anything else raises :class:`CodecError`);
    ``decode`` returns a new writable 1-D float32 array and raises
    :class:`CodecError` on a corrupt payload or one written by a different codec.
    """

    @property
    def spec(self) -> str:
        """Canonical spec string of this codec."""
        ...

    def encode(self, x: np.ndarray, rng: np.random.Generator) -> bytes: ...

    def decode(self, payload: bytes) -> np.ndarray: ...


# --------------------------------------------------------------------------- values


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


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _check_limit(x: F32, limit: float, name: str) -> None:
    if x.size and max(float(x.max()), -float(x.min())) >= limit:
        raise CodecError(
            f"{name} cannot represent |x| >= {limit:g} (max |x| = {float(np.abs(x).max()):g});"
            " use fp32 or a quantizing codec"
        )


def _check_finite_decoded(out: F32) -> None:
    if not bool(np.isfinite(out).all()):
        raise CodecError("corrupt payload: decoded values contain NaN or Inf")


# Elements processed per step by the vectorised loops below: large enough that the
# per-call numpy overhead is negligible, small enough that the scratch arrays stay
# in L2 cache (each pass over a 32 MiB vector would otherwise go to memory).
_CHUNK: Final = 1 << 15

_HALF_DENORM_MAGIC: Final = np.uint32(((127 - 15) + (23 - 10) + 1) << 23)
_HALF_REBIAS: Final = np.uint32((((15 - 127) << 23) + 0xFFF) & 0xFFFFFFFF)  # mod 2**32
_HALF_MIN_NORMAL_BITS: Final = 113 << 23  # float32 bits of 2**-14


def _to_fp16(x: F32) -> np.ndarray:
    """float32 -> IEEE half bits (<u2), round to nearest even; |x| < 65520 required.

    Same bits as ``x.astype(np.float16)`` but several times faster (numpy's cast is
    scalar); normal results by integer rounding, subnormal ones by a float add.
    """
    n = x.size
    out = np.empty(n, "<u2")
    bits = x.view(np.uint32)
    c = max(1, min(n, _CHUNK))
    a = np.empty(c, np.uint32)
    t = np.empty(c, np.uint32)
    d = np.empty(c, np.float32)
    small = np.empty(c, np.bool_)
    magic = _HALF_DENORM_MAGIC.view(np.float32)
    for s in range(0, n, c):
        b = bits[s : s + c]
        e = b.size
        aa, tt, dd, ss = a[:e], t[:e], d[:e], small[:e]
        np.bitwise_and(b, 0x7FFFFFFF, out=aa)
        np.right_shift(aa, 13, out=tt)
        tt &= 1
        tt += aa
        tt += _HALF_REBIAS  # wraps for |x| < 2**-14; those are replaced below
        tt >>= 13
        np.less(aa, _HALF_MIN_NORMAL_BITS, out=ss)
        if ss.any():
            np.add(aa.view(np.float32), magic, out=dd)
            dv = dd.view(np.uint32)
            dv -= _HALF_DENORM_MAGIC
            np.copyto(tt, dv, where=ss)
        np.right_shift(b, 16, out=aa)
        aa &= 0x8000
        tt |= aa
        np.copyto(out[s : s + e], tt, casting="unsafe")
    return out


def _to_bf16(x: F32) -> np.ndarray:
    """float32 -> bfloat16 bits (<u2), round to nearest even; finite x required."""
    n = x.size
    out = np.empty(n, "<u2")
    bits = x.view(np.uint32)
    c = max(1, min(n, _CHUNK))
    t = np.empty(c, np.uint32)
    for s in range(0, n, c):
        b = bits[s : s + c]
        tt = t[: b.size]
        np.right_shift(b, 16, out=tt)
        tt &= 1
        tt += 0x7FFF
        tt += b  # no wrap: finite inputs are < 0xFF800000
        tt >>= 16
        np.copyto(out[s : s + b.size], tt, casting="unsafe")
    return out


# numpy bit generators whose random_raw() yields 64 random bits per value.
_RAW64: Final = (np.random.PCG64, np.random.PCG64DXSM, np.random.Philox, np.random.SFC64)


def _uniform_1_2(rng: np.random.Generator, e: int) -> F32:
    """``e`` float32 draws from [1, 2) on the grid 1 + j*2**-23 (uniform for raw-64 generators).

    Then ``P(u < 1 + f) = f`` to within 2**-23 for any f in [0, 1).
    """
    if isinstance(rng.bit_generator, _RAW64):
        raw = rng.bit_generator.random_raw((e + 1) // 2)  # two draws per 64-bit word
        w = raw.view(np.uint32)[:e]
        w >>= 9
        w |= 0x3F800000
        return w.view(np.float32)
    u = rng.random(e, dtype=np.float32)  # k * 2**-24; +1 rounds to the 2**-23 grid
    u += 1
    return u


_F32_MAX: Final = float(np.finfo(np.float32).max)


def _block_scales(xc: F32, scratch: F32, lv: np.float32) -> tuple[F32, bool]:
    """Per-row scale with ``L*scale >= max|row|`` exactly; flag if clipping is needed.

    Raises CodecError if a row holds NaN or Inf (they propagate through the max).
    """
    absmax = np.abs(xc, out=scratch).max(axis=1)
    if not bool(np.isfinite(absmax).all()):
        raise CodecError("input contains NaN or Inf; refusing to encode")
    scale = absmax / lv
    # Round up where L*scale < absmax (exact in float64): then |x / scale| <= L.  This
    # also keeps scale > 0 for a non-zero block whose absmax / L underflows.
    prod = scale.astype(np.float64) * float(lv)
    low = prod < absmax
    if low.any():
        scale[low] = np.nextafter(scale[low], np.float32(np.inf))
        prod = scale.astype(np.float64) * float(lv)
    over = prod > _F32_MAX  # decoded L*scale would overflow: round down and clip
    if over.any():
        scale[over] = np.nextafter(scale[over], np.float32(0))
        return scale, True
    return scale, False


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack uint8 codes (< 2**bits; length a multiple of 8 // bits), first in low bits."""
    width = bits
    while width < 8:  # merge neighbouring fields pairwise through a 16-bit view
        w = codes.view("<u2")
        mask = (1 << width) - 1
        merged = w & mask
        merged |= (w >> (8 - width)) & (mask << width)
        codes = merged.astype(np.uint8)
        width *= 2
    return codes


def _quantize(
    x: F32, bits: int, block: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Per-block scales (<f4) and packed codes (u8) for ``x``; CodecError if not finite.

    code = floor(v) + Bernoulli(frac(v)) + L with v = x / scale, so E[code - L] == v.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    lv = np.float32((1 << (bits - 1)) - 1)
    n = x.size
    if n == 0:
        return np.zeros(0, "<f4"), np.zeros(0, np.uint8)
    nb = _ceil_div(n, block)
    block = min(block, n)  # a single block needs no padding beyond n
    pad = nb * block - n
    xb = (x if pad == 0 else np.concatenate([x, np.zeros(pad, np.float32)])).reshape(nb, block)
    per = 8 // bits
    scales = np.empty(nb, "<f4")
    packed = np.empty(_ceil_div(n, per), np.uint8)
    # Blocks per step: a multiple of 8 so every step but the last starts on a byte.
    step = min(nb, max(8, _CHUNK // block // 8 * 8))
    size = step * block
    v = np.empty(size, np.float32)
    g = np.empty(size, np.float32)
    hit = np.empty(size, np.bool_)
    codes = np.empty(size + per, np.uint8)
    one = np.float32(1)
    for b0 in range(0, nb, step):
        b1 = min(nb, b0 + step)
        e = (b1 - b0) * block
        xc = xb[b0:b1]
        vc, gc, hc = v[:e], g[:e], hit[:e]
        sc, clip = _block_scales(xc, vc.reshape(b1 - b0, block), lv)
        scales[b0:b1] = sc
        np.divide(xc, np.where(sc > 0, sc, one)[:, None], out=vc.reshape(b1 - b0, block))
        if clip:
            np.clip(vc, -lv, lv, out=vc)
        np.floor(vc, out=gc)
        gc -= one
        vc -= gc  # frac(v) + 1, in [1, 2]; exactly 1 when v is a level
        np.less(_uniform_1_2(rng, e), vc, out=hc)  # P = frac(v)
        gc += hc
        start = b0 * block
        cnt = min(n, start + e) - start
        dest = packed[start : start + cnt] if bits == 8 else codes[:cnt]
        np.add(gc[:cnt], lv + one, out=dest, casting="unsafe")  # code in [0, 2L]
        if bits == 8:
            continue
        used = _ceil_div(cnt, per) * per
        codes[cnt:used] = 0  # padding bits are zero
        packed[start // per : (start + used) // per] = _pack(codes[:used], bits)
    return scales, packed


def _lut(bits: int) -> F32:
    """Byte -> (8//bits) signed levels (code - L) as float32, shape (256, 8//bits)."""
    per = 8 // bits
    mask = (1 << bits) - 1
    levels = (1 << (bits - 1)) - 1
    byte = np.arange(256, dtype=np.int32)[:, None]
    shifts = np.arange(per, dtype=np.int32)[None, :] * bits
    return (((byte >> shifts) & mask) - levels).astype(np.float32)


_LUTS: Final = {b: _lut(b) for b in (2, 4, 8)}


def _has_invalid_code(packed: np.ndarray, bits: int) -> bool:
    """True if any ``bits``-wide field is all ones (code 2L+1, not a level)."""
    if bits == 8:
        return bool((packed == 0xFF).any())
    t = packed & (packed >> np.uint8(1))
    if bits == 4:
        t &= t >> np.uint8(2)
        return bool((t & np.uint8(0x11)).any())
    return bool((t & np.uint8(0x55)).any())


def _dequantize(buf: memoryview, offset: int, count: int, bits: int, block: int) -> F32:
    levels = (1 << (bits - 1)) - 1
    nb = _ceil_div(count, block)
    block = max(1, min(block, count))  # never allocate for a block longer than the data
    per = 8 // bits
    m = _ceil_div(count, per)
    scales = np.frombuffer(buf, dtype="<f4", count=nb, offset=offset).astype(np.float32)
    packed = np.frombuffer(buf, dtype=np.uint8, count=m, offset=offset + 4 * nb)
    if count == 0:
        return np.zeros(0, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        ok = np.isfinite(scales * np.float32(levels)) & (scales >= 0)
    if not bool(ok.all()):
        raise CodecError("corrupt payload: quantization scale is negative, NaN, Inf or too large")
    if _has_invalid_code(packed, bits):
        raise CodecError(f"corrupt payload: quantized code {2 * levels + 1} is not a valid level")
    used = count - (m - 1) * per  # fields used in the last byte
    if used < per and int(packed[-1]) >> (used * bits):
        raise CodecError("corrupt payload: non-zero padding bits after the last code")
    out = np.empty(max(m * per, nb * block), np.float32)
    lut = _LUTS[bits]
    step = min(nb, max(8, _CHUNK // block // 8 * 8))
    for b0 in range(0, nb, step):
        b1 = min(nb, b0 + step)
        e0, e1 = b0 * block, b1 * block
        p0, p1 = e0 // per, min(m, _ceil_div(e1, per))
        np.take(
            lut, packed[p0:p1], axis=0, out=out[p0 * per : p1 * per].reshape(-1, per), mode="clip"
        )
        if p1 * per < e1:
            out[p1 * per : e1] = 0
        blocks = out[e0:e1].reshape(b1 - b0, block)
        blocks *= scales[b0:b1, None]
    return out[:count]


# --------------------------------------------------------------------------- codecs


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


def _assemble(cid: int, values: _Values, n: int, k: int, parts: Sequence[np.ndarray]) -> bytes:
    header = _HEADER.pack(MAGIC, cid, values.bits, 0, values.block, n, k)
    views = [np.ascontiguousarray(p).data for p in parts]
    crc = zlib.crc32(header)
    for v in views:
        crc = zlib.crc32(v, crc)
    return b"".join([header, *views, _CRC.pack(crc)])


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


# --------------------------------------------------------------------------- decoding


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


def decode(payload: bytes, *, max_n: int | None = None, spec: str | None = None) -> np.ndarray:
    """Decode any payload from its header alone; new 1-D float32 array.

    Raises :class:`CodecError` on any malformed or corrupted payload.  Dense payloads
    can only declare as many elements as their bytes hold, but a top-k header may
    declare up to 2**32; pass ``max_n`` (e.g. the adapter size) to refuse anything
    longer before allocating when the payload comes from an untrusted peer.  Pass
    ``spec`` to also refuse a payload that ``make_codec(spec)`` did not write (a
    sender's declared codec that its bytes contradict).
    """
    if spec is None:
        return _decode(payload, max_n=max_n)
    codec = make_codec(spec)
    assert isinstance(codec, _Dense | _TopK)
    return _decode(payload, expect=codec, max_n=max_n)


# --------------------------------------------------------------------------- specs

_VALUE_RE: Final = re.compile(r"(fp32|fp16|bf16)|q([248])(?::block=([0-9]+))?")
_TOPK_RE: Final = re.compile(r"topk:([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?|[0-9]+\.)(?:\+(.+))?")


def _bad_spec(spec: str, why: str = "") -> CodecError:
    extra = f" ({why})" if why else ""
    return CodecError(f"bad codec spec {spec!r}{extra}; accepted forms: {ACCEPTED_SPECS}")


def _parse_values(text: str, spec: str) -> _Values:
    m = _VALUE_RE.fullmatch(text)
    if m is None:
        raise _bad_spec(spec)
    if m.group(1):
        return _Values({"fp32": _FP32, "fp16": _FP16, "bf16": _BF16}[m.group(1)])
    block = DEFAULT_BLOCK if m.group(3) is None else int(m.group(3))
    if not 1 <= block <= _MAX_BLOCK:
        raise _bad_spec(spec, f"block must be in 1..{_MAX_BLOCK}")
    return _Values(_QUANT, int(m.group(2)), block)


def make_codec(spec: str) -> Codec:
    """Codec for a spec string (case-insensitive, surrounding blanks ignored).

    The returned codec's ``spec`` is canonical (lower case, default block and
    ``+fp32`` omitted, F as Python's shortest float repr) and round-trips:
    ``make_codec(c.spec).spec == c.spec``.  Raises :class:`CodecError` naming the
    accepted forms for anything else.
    """
    if not isinstance(spec, str):
        raise CodecError(f"codec spec must be a str, got {type(spec).__name__}")
    text = spec.strip().lower()
    if text.startswith("topk"):
        m = _TOPK_RE.fullmatch(text)
        if m is None:
            raise _bad_spec(spec)
        fraction = float(m.group(1))
        if not 0.0 < fraction <= 1.0:
            raise _bad_spec(spec, "F must satisfy 0 < F <= 1")
        inner = _parse_values(m.group(2), spec) if m.group(2) else _Values(_FP32)
        return _TopK(fraction, inner)
    return _Dense(_parse_values(text, spec))


def encoded_size(spec: str, n: int) -> int:
    """Exact payload size in bytes for ``n`` values under ``spec``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    codec = make_codec(spec)
    assert isinstance(codec, _Dense | _TopK)
    return codec.encoded_size(n)


def compressed_size_ratio(spec: str, n: int) -> float:
    """Payload bytes / raw float32 bytes (4*n) for ``n >= 1`` values; q4 -> ~0.127."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return encoded_size(spec, n) / (4 * n)
