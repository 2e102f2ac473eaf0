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

The parts live in `codecs_common` (header layout, codec ids, `CodecError`, `Codec`),
`codecs_float` (fp16, bf16), `codecs_quant` (q8/q4/q2), `codecs_wire` (value layouts,
header and CRC), `codecs_dense_topk` (the two codec kinds and decoding) and
`codecs_specs` (`make_codec`); this module names the public parts, as callers import.
"""

from __future__ import annotations

import numpy as np

from declora.node.codecs_common import DEFAULT_BLOCK as DEFAULT_BLOCK
from declora.node.codecs_common import F32 as F32
from declora.node.codecs_common import HEADER_SIZE as HEADER_SIZE
from declora.node.codecs_common import MAGIC as MAGIC
from declora.node.codecs_common import OVERHEAD as OVERHEAD
from declora.node.codecs_common import Codec, CodecError
from declora.node.codecs_dense_topk import _decode, _Dense, _TopK
from declora.node.codecs_specs import ACCEPTED_SPECS as ACCEPTED_SPECS
from declora.node.codecs_specs import make_codec

__all__ = [
    "Codec",
    "CodecError",
    "compressed_size_ratio",
    "decode",
    "encoded_size",
    "make_codec",
]


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
