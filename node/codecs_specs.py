"""Codec spec strings (`--codec`): `make_codec` parses one into its codec."""

from __future__ import annotations

import re
from typing import Final

from declora.node.codecs_common import _BF16, _FP16, _FP32, _QUANT, DEFAULT_BLOCK, Codec, CodecError
from declora.node.codecs_dense_topk import _Dense, _TopK
from declora.node.codecs_wire import _Values

ACCEPTED_SPECS: Final = (
    "fp32 | fp16 | bf16 | q8|q4|q2[:block=N] (N>=1, default 256) | "
    "topk:F[+fp32|fp16|bf16|q8|q4|q2[:block=N]] (0<F<=1)"
)
_MAX_BLOCK: Final = 2**32 - 1
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
