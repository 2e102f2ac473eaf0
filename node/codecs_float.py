"""fp16 and bf16 values: range checks and fast float32 -> 16-bit rounding to nearest
even (fp16: the same bits as numpy's cast); the finiteness check of decoded values."""

from __future__ import annotations

from typing import Final

import numpy as np

from declora.node.codecs_common import F32, CodecError

# Smallest |x| that rounds to +-inf in fp16 / bf16 (round-to-nearest-even).
_FP16_LIMIT: Final = 65520.0
_BF16_LIMIT: Final = float(np.array(0x7F7F8000, dtype=np.uint32).view(np.float32)[()])


def _check_limit(x: F32, limit: float, name: str) -> None:
    if x.size and max(float(x.max()), -float(x.min())) >= limit:
        raise CodecError(
            f"{name} cannot represent |x| >= {limit:g} (max |x| = {float(np.abs(x).max()):g});"
            " use fp32 or a quantizing codec"
        )


def _check_finite_decoded(out: F32) -> None:
    if not bool(np.isfinite(out).all()):
        raise CodecError("corrupt payload: decoded values contain NaN or Inf")


# Elements processed per step by the vectorised loops here and in codecs_quant: large
# enough that the per-call numpy overhead is negligible, small enough that the scratch
# arrays stay in L2 cache (each pass over a 32 MiB vector would otherwise go to memory).
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
