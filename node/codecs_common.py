"""What every codec part shares: the payload header's layout and size, the codec
ids, `CodecError` and the `Codec` protocol (`codecs` documents the wire format)."""

from __future__ import annotations

import struct
from typing import Final, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

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
_MAX_TOPK_N: Final = 2**32  # indices are uint32


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


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)
