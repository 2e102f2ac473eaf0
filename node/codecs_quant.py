"""Stochastic uniform quantization (q8/q4/q2) with per-block float32 scales.

`_quantize` is unbiased given the rng and refuses NaN/Inf; `_dequantize` checks
every scale, code and padding bit of an untrusted payload before using it.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from declora.node.codecs_common import F32, CodecError, _ceil_div
from declora.node.codecs_float import _CHUNK

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
