"""Tests for declora.node.codecs: exactness, error bounds, unbiasedness, wire integrity."""

from __future__ import annotations

import math
import struct
import zlib
from fractions import Fraction
from typing import Any, cast

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from declora.node.codecs import (
    Codec,
    CodecError,
    compressed_size_ratio,
    decode,
    encoded_size,
    make_codec,
)

HEADER = struct.Struct("<4sBBHIQQ")  # documented wire header
F32_MAX = float(np.finfo(np.float32).max)
TINY = 2.0**-149  # smallest float32 subnormal
BF16_SAFE = float(np.float32(3.3e38))  # below the bf16 overflow threshold

FAST = settings(max_examples=40, deadline=None)
MEDIUM = settings(max_examples=80, deadline=None)

finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


def f32_arrays(
    max_size: int = 200, elements: st.SearchStrategy[float] = finite32
) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.float32, st.integers(0, max_size), elements=elements)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def forge(cid: int, bits: int, block: int, n: int, k: int, body: bytes) -> bytes:
    """A payload built by hand from the documented format, with a valid CRC."""
    head = HEADER.pack(b"DLC1", cid, bits, 0, block, n, k) + body
    return head + struct.pack("<I", zlib.crc32(head))


def quant_bound(x: np.ndarray, bits: int, block: int) -> np.ndarray:
    """Per-element bound max|x_block| / L (float64), plus float32 rounding slack."""
    levels = 2 ** (bits - 1) - 1
    nb = -(-x.size // block)
    a = np.zeros(nb * block)
    a[: x.size] = np.abs(x.astype(np.float64))
    scale = np.repeat(a.reshape(nb, block).max(axis=1) / levels, block)[: x.size]
    return scale * (1 + 2.0**-15) + TINY


def expected_topk_mask(x: np.ndarray, k: int) -> np.ndarray:
    """Documented rule: k largest |x|, ties broken by lowest index."""
    order = np.argsort(-np.abs(x.astype(np.float64)), kind="stable")
    mask = np.zeros(x.size, dtype=bool)
    mask[order[:k]] = True
    return mask


def topk_k(fraction: str, n: int) -> int:
    return math.ceil(Fraction(fraction) * n)


# --------------------------------------------------------------------------- fp32 / fp16 / bf16


@FAST
@given(f32_arrays())
def test_fp32_roundtrip_is_bit_exact(x: np.ndarray) -> None:
    codec = make_codec("fp32")
    payload = codec.encode(x, rng())
    for out in (codec.decode(payload), decode(payload)):
        assert out.dtype == np.float32 and out.ndim == 1 and out.flags.writeable
        np.testing.assert_array_equal(out.view(np.uint32), x.view(np.uint32))  # keeps -0.0


@pytest.mark.parametrize("n", [0, 1, 2, 3, 255, 257, 100_003])
def test_fp32_sizes_and_layouts(n: int) -> None:
    base = rng(n).standard_normal(2 * n).astype(np.float32)
    for x in (base[:n], base[::2], base[:n].astype(">f4")):  # contiguous, strided, big-endian
        out = decode(make_codec("fp32").encode(x, rng()))
        np.testing.assert_array_equal(out, x)
        assert out.dtype == np.float32 and not np.shares_memory(out, x)


@MEDIUM
@given(f32_arrays(elements=st.floats(-65519.0, 65519.0, width=32)))
def test_fp16_round_to_nearest_even(x: np.ndarray) -> None:
    out = decode(make_codec("fp16").encode(x, rng()))
    ref = x.astype(np.float16).astype(np.float32)  # numpy's cast is IEEE RNE
    np.testing.assert_array_equal(out.view(np.uint32), ref.view(np.uint32))
    err = np.abs(out.astype(np.float64) - x)
    bound = np.maximum(np.abs(x.astype(np.float64)) * 2.0**-11, 2.0**-25)
    assert np.all(err <= bound)


def test_fp16_rounding_edges() -> None:
    x = np.array(
        [0.0, -0.0, 65504.0, 65519.99, -65519.0, 2**-24, 2**-25, 2**-25 * 1.0001, 3 * 2**-26,
         6.1e-5, 2**-14, 1 + 2**-11, 1 + 3 * 2**-11, 1e-8],
        dtype=np.float32,
    )  # fmt: skip
    out = decode(make_codec("fp16").encode(x, rng()))
    ref = x.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(out.view(np.uint32), ref.view(np.uint32))
    # every float32 bit pattern in a dense sweep of the fp16 range
    sweep = np.arange(0, 0x477FF000, 4099, dtype=np.uint32).view(np.float32)
    sweep = np.concatenate([sweep, -sweep])
    out = decode(make_codec("fp16").encode(sweep, rng()))
    ref = sweep.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(out.view(np.uint32), ref.view(np.uint32))


def bf16_reference(x: np.ndarray) -> np.ndarray:
    """Nearest of the two bf16 neighbours (in float64), ties to even mantissa."""
    bits = x.view(np.uint32).astype(np.int64)
    lo = bits & 0xFFFF0000
    hi = lo + 0x10000
    lo_f = lo.astype(np.uint32).view(np.float32).astype(np.float64)
    hi_f = hi.astype(np.uint32).view(np.float32).astype(np.float64)
    xf = x.astype(np.float64)
    d_lo, d_hi = np.abs(xf - lo_f), np.abs(hi_f - xf)
    even_hi = ((hi >> 16) & 1) == 0
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & even_hi)
    return np.where(pick_hi, hi, lo).astype(np.uint32).view(np.float32)


@MEDIUM
@given(f32_arrays(elements=st.floats(-BF16_SAFE, BF16_SAFE, width=32)))
def test_bf16_round_to_nearest_even(x: np.ndarray) -> None:
    out = decode(make_codec("bf16").encode(x, rng()))
    np.testing.assert_array_equal(out.view(np.uint32), bf16_reference(x).view(np.uint32))
    err = np.abs(out.astype(np.float64) - x)
    assert np.all(err <= np.maximum(np.abs(x.astype(np.float64)) * 2.0**-8, 2.0**-134))


def test_bf16_ties_go_to_even() -> None:
    # 1 + 2**-8 is halfway between 1 and 1 + 2**-7: even mantissa is 1.0
    # 1 + 3*2**-8 is halfway between 1 + 2**-7 and 1 + 2**-6: even is 1 + 2**-6
    x = np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8)], dtype=np.float32)
    out = decode(make_codec("bf16").encode(x, rng()))
    np.testing.assert_array_equal(out, np.array([1.0, 1 + 2**-6, -1.0], dtype=np.float32))
    # the largest float32 that still rounds to the largest finite bf16 (0x7F7F)
    edge = np.array([0x7F7F7FFF, 0xFF7F7FFF], dtype=np.uint32).view(np.float32)
    out = decode(make_codec("bf16").encode(edge, rng()))
    np.testing.assert_array_equal(out.view(np.uint32), [0x7F7F0000, 0xFF7F0000])
    with pytest.raises(CodecError, match="bf16"):  # the next float32 rounds to Inf
        make_codec("bf16").encode(np.array([0x7F7F8000], np.uint32).view(np.float32), rng())


@pytest.mark.parametrize(("spec", "value"), [("fp16", 65520.0), ("fp16", -1e5), ("bf16", F32_MAX)])
def test_half_formats_refuse_overflow(spec: str, value: float) -> None:
    x = np.array([0.0, value], dtype=np.float32)
    with pytest.raises(CodecError, match=spec):
        make_codec(spec).encode(x, rng())


# --------------------------------------------------------------------------- quantization


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_quantization_is_unbiased(bits: int) -> None:
    gen = rng(1234)
    block = 16
    x = gen.standard_normal(6 * block).astype(np.float32)
    x[block : 2 * block] = 0.0  # an all-zero block
    x[2 * block : 3 * block] *= np.float32(1e-3)
    x[3 * block] = 5.0  # one block dominated by an outlier
    codec = make_codec(f"q{bits}:block={block}")
    m = 1500
    total = np.zeros(x.size)
    for seed in range(m):
        total += codec.decode(codec.encode(x, rng(seed)))
    mean = total / m
    levels = 2 ** (bits - 1) - 1
    absmax = np.repeat(np.abs(x.astype(np.float64)).reshape(-1, block).max(axis=1), block)
    scale = absmax / levels
    v = np.divide(x, scale, out=np.zeros(x.size), where=scale > 0)
    frac = v - np.floor(v)
    var = scale**2 * frac * (1 - frac)  # variance of one stochastic rounding
    # each element: within 5 sigma of its own mean (sigma <= scale / (2 sqrt(m))); elements
    # exactly on a level (sigma 0) may only be off by float32 rounding of the scale
    assert np.all(np.abs(mean - x) <= 5 * np.sqrt(var / m) + 2.0**-20 * absmax)
    # all elements together: the standardised sum of errors is ~N(0, 1)
    z = np.sum(mean - x) / math.sqrt(np.sum(var) / m)
    assert abs(z) < 5
    # and the test is not vacuous: single decodes do round
    single = codec.decode(codec.encode(x, rng(0)))
    assert np.any(single != x)
    np.testing.assert_array_equal(single[block : 2 * block], 0.0)


@MEDIUM
@given(
    x=f32_arrays(300),
    bits=st.sampled_from([8, 4, 2]),
    block=st.sampled_from([1, 3, 16, 64, 256, 1000]),
    seed=st.integers(0, 2**32 - 1),
)
def test_quantization_error_within_block_scale(
    x: np.ndarray, bits: int, block: int, seed: int
) -> None:
    spec = f"q{bits}" if block == 256 else f"q{bits}:block={block}"
    codec = make_codec(spec)
    payload = codec.encode(x, rng(seed))
    out = decode(payload)
    assert out.shape == x.shape and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert np.all(np.abs(out.astype(np.float64) - x) <= quant_bound(x, bits, block))
    assert len(payload) == encoded_size(spec, x.size)


@pytest.mark.parametrize("spec", ["q8", "q4:block=7", "q2:block=1000", "topk:0.3+q4:block=100"])
def test_quantization_large_vector_across_chunks(spec: str) -> None:
    gen = rng(5)
    n = 3 * 2**15 + 1234  # several internal chunks plus a ragged tail
    x = (gen.standard_normal(n) * np.exp(gen.uniform(-20, 5, n))).astype(np.float32)
    codec = make_codec(spec)
    out = decode(codec.encode(x, rng(1)))
    values = make_codec(spec.split("+")[-1])
    bits = int(values.spec[1])
    block = int(spec.split("block=")[1]) if "block=" in spec else 256
    if spec.startswith("topk"):
        keep = expected_topk_mask(x, topk_k("0.3", n))
        np.testing.assert_array_equal(out[~keep], 0.0)
        x, out = x[keep], out[keep]
    assert np.all(np.abs(out.astype(np.float64) - x) <= quant_bound(x, bits, block))


def test_quantization_extreme_magnitudes() -> None:
    x = np.array([F32_MAX, -F32_MAX, 1.0, 0.0, 1e-45, -3e-45, 1e-40], dtype=np.float32)
    for bits in (8, 4, 2):
        for block in (1, 2, 256):
            out = decode(make_codec(f"q{bits}:block={block}").encode(x, rng(bits)))
            assert np.all(np.isfinite(out))
            assert np.all(np.abs(out.astype(np.float64) - x) <= quant_bound(x, bits, block))
    tiny = np.array([1e-45, -1e-45, 3e-45], dtype=np.float32)  # absmax / L underflows
    out = decode(make_codec("q8").encode(tiny, rng()))
    assert np.all(np.abs(out.astype(np.float64) - tiny) <= 3e-45)


def test_q2_uses_three_levels() -> None:
    x = rng(3).standard_normal(4096).astype(np.float32)
    out = decode(make_codec("q2:block=64").encode(x, rng()))
    scale = np.repeat(np.abs(x).reshape(-1, 64).max(axis=1), 64)
    levels = np.round(out / scale)
    assert set(np.unique(levels).tolist()) == {-1.0, 0.0, 1.0}
    np.testing.assert_allclose(out, levels * scale, rtol=1e-6)


@pytest.mark.parametrize("spec", ["q8", "q4", "q2:block=5", "topk:0.2+q4"])
def test_same_seed_same_bytes(spec: str) -> None:
    x = rng(11).standard_normal(1001).astype(np.float32)
    codec = make_codec(spec)
    a = codec.encode(x, rng(42))
    assert a == codec.encode(x, rng(42))
    assert a != codec.encode(x, rng(43))  # the rounding really is random


def test_quantization_reads_bits_from_any_generator() -> None:
    x = rng(2).standard_normal(300).astype(np.float32)
    for gen in (np.random.MT19937(1), np.random.Philox(1), np.random.SFC64(1)):
        out = decode(make_codec("q4:block=32").encode(x, np.random.Generator(gen)))
        assert np.all(np.abs(out.astype(np.float64) - x) <= quant_bound(x, 4, 32))
    with pytest.raises(TypeError):
        make_codec("q4").encode(x, cast(Any, None))


def test_q4_is_at_least_7x_smaller_than_fp32() -> None:
    x = rng().standard_normal(65536).astype(np.float32)
    fp32 = make_codec("fp32").encode(x, rng())
    q4 = make_codec("q4").encode(x, rng())
    assert len(fp32) >= 7 * len(q4)
    assert len(q4) == 32 + 65536 // 2 + 4 * (65536 // 256)
    assert compressed_size_ratio("q4", 65536) == pytest.approx(len(q4) / (4 * 65536))


# --------------------------------------------------------------------------- top-k


@MEDIUM
@given(
    x=f32_arrays(300, elements=st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.5]) | finite32),
    fraction=st.sampled_from(["0.01", "0.07", "0.1", "0.333", "0.5", "1"]),
)
def test_topk_keeps_exactly_the_largest(x: np.ndarray, fraction: str) -> None:
    codec = make_codec(f"topk:{fraction}")
    payload = codec.encode(x, rng())
    out = decode(payload)
    k = topk_k(fraction, x.size)
    mask = expected_topk_mask(x, k)
    np.testing.assert_array_equal(out, np.where(mask, x, np.float32(0)))
    if 0 < k < x.size:
        assert np.abs(x[mask]).min() >= np.abs(x[~mask]).max()
    assert len(payload) == 32 + 8 * k  # uint32 index + fp32 value per kept entry
    idx = np.frombuffer(payload, "<u4", count=k, offset=HEADER.size)
    assert np.all(np.diff(idx.astype(np.int64)) > 0)


def test_topk_count_uses_exact_decimal_fraction() -> None:
    # 0.07 * 100 is 7.000000000000001 in binary floating point; k must still be 7
    x = np.arange(1, 101, dtype=np.float32)
    out = decode(make_codec("topk:0.07").encode(x, rng()))
    np.testing.assert_array_equal(np.flatnonzero(out), np.arange(93, 100))


@FAST
@given(x=f32_arrays(400, elements=st.floats(-1e6, 1e6, width=32)), seed=st.integers(0, 1000))
def test_topk_then_q4(x: np.ndarray, seed: int) -> None:
    spec = "topk:0.25+q4:block=8"
    payload = make_codec(spec).encode(x, rng(seed))
    out = decode(payload)
    k = topk_k("0.25", x.size)
    mask = expected_topk_mask(x, k)
    np.testing.assert_array_equal(out[~mask], 0.0)
    # kept values are quantized in index order, in blocks of 8 kept values
    assert np.all(np.abs(out[mask].astype(np.float64) - x[mask]) <= quant_bound(x[mask], 4, 8))
    assert len(payload) == 32 + 4 * k + 4 * (-(-k // 8)) + (-(-k // 2))


def test_topk_q4_is_unbiased_on_kept_entries() -> None:
    x = rng(8).standard_normal(200).astype(np.float32)
    codec = make_codec("topk:0.2+q4:block=16")
    m = 800
    mean = sum(codec.decode(codec.encode(x, rng(s))).astype(np.float64) for s in range(m)) / m
    mask = expected_topk_mask(x, 40)
    sigma = quant_bound(x[mask], 4, 16) / (2 * math.sqrt(m))
    assert np.all(np.abs(mean[mask] - x[mask]) <= 5 * sigma)
    np.testing.assert_array_equal(mean[~mask], 0.0)


# --------------------------------------------------------------------------- corruption

SPECS = ["fp32", "fp16", "bf16", "q8", "q4", "q2:block=3", "topk:0.3", "topk:0.3+q4:block=4"]
_X = rng(99).standard_normal(37).astype(np.float32)
PAYLOADS = {spec: make_codec(spec).encode(_X, rng(1)) for spec in SPECS}


@settings(max_examples=300, deadline=None)
@given(spec=st.sampled_from(SPECS), data=st.data())
def test_any_flipped_byte_is_detected(spec: str, data: st.DataObject) -> None:
    payload = bytearray(PAYLOADS[spec])
    pos = data.draw(st.integers(0, len(payload) - 1), label="position")
    payload[pos] ^= data.draw(st.integers(1, 255), label="xor")
    with pytest.raises(CodecError):
        decode(bytes(payload))
    with pytest.raises(CodecError):
        make_codec(spec).decode(bytes(payload))


@settings(max_examples=150, deadline=None)
@given(spec=st.sampled_from(SPECS), data=st.data())
def test_truncated_or_extended_payload_is_detected(spec: str, data: st.DataObject) -> None:
    payload = PAYLOADS[spec]
    cut = data.draw(st.integers(0, len(payload) - 1), label="cut")
    with pytest.raises(CodecError):
        decode(payload[:cut])
    with pytest.raises(CodecError, match="length"):
        decode(payload + b"\x00")


def test_error_messages_are_specific() -> None:
    good = PAYLOADS["q4"]
    with pytest.raises(CodecError, match="magic"):
        decode(b"XXXX" + good[4:])
    with pytest.raises(CodecError, match="truncated"):
        decode(good[:10])
    with pytest.raises(CodecError, match="length"):
        decode(good[:-7])
    flipped = bytearray(good)
    flipped[40] ^= 1
    with pytest.raises(CodecError, match="checksum"):
        decode(bytes(flipped))
    with pytest.raises(CodecError, match="unknown codec id"):
        decode(forge(0x07, 0, 0, 1, 1, b"\0\0\0\0"))
    with pytest.raises(CodecError, match="bytes-like"):
        decode(cast(Any, "not bytes"))


@pytest.mark.parametrize(
    "payload",
    [
        forge(0x01, 0, 0, 2, 2, np.array([1.0, np.nan], "<f4").tobytes()),  # fp32 NaN
        forge(0x01, 0, 0, 1, 1, np.array([np.inf], "<f4").tobytes()),  # fp32 Inf
        forge(0x02, 0, 0, 1, 1, np.array([np.inf], "<f2").tobytes()),  # fp16 Inf
        forge(0x03, 0, 0, 1, 1, b"\x80\x7f"),  # bf16 +Inf
        forge(0x04, 4, 256, 2, 2, np.array([1.0], "<f4").tobytes() + b"\xf7"),  # code 15
        forge(0x04, 4, 256, 1, 1, np.array([1.0], "<f4").tobytes() + b"\x37"),  # padding bits
        forge(0x04, 8, 256, 1, 1, np.array([np.inf], "<f4").tobytes() + b"\x01"),  # Inf scale
        forge(0x04, 8, 256, 1, 1, np.array([-1.0], "<f4").tobytes() + b"\x01"),  # scale < 0
        forge(0x04, 8, 256, 1, 1, np.array([F32_MAX], "<f4").tobytes() + b"\x01"),  # L*s = Inf
        forge(0x04, 3, 256, 1, 1, np.array([1.0], "<f4").tobytes() + b"\x01"),  # 3 bits
        forge(0x04, 4, 0, 1, 1, b"\x07"),  # block 0
        forge(0x01, 4, 0, 1, 1, b"\0\0\0\0"),  # fp32 with bits
        forge(0x01, 0, 0, 2, 1, b"\0\0\0\0"),  # dense with k != n
        forge(0x11, 0, 0, 4, 2, np.array([2, 1], "<u4").tobytes() + bytes(8)),  # unsorted
        forge(0x11, 0, 0, 4, 2, np.array([1, 1], "<u4").tobytes() + bytes(8)),  # duplicate
        forge(0x11, 0, 0, 4, 1, np.array([4], "<u4").tobytes() + bytes(4)),  # index >= n
        forge(0x11, 0, 0, 1, 2, np.array([0, 1], "<u4").tobytes() + bytes(8)),  # k > n
        forge(0x01, 0, 0, 2**40, 2**40, bytes(8)),  # huge n, tiny body
    ],
)
def test_forged_payloads_with_valid_crc_are_rejected(payload: bytes) -> None:
    with pytest.raises(CodecError):
        decode(payload)


def test_max_n_refuses_oversized_topk_before_allocating() -> None:
    huge = forge(0x11, 0, 0, 2**32, 1, np.array([7], "<u4").tobytes() + bytes(4))
    with pytest.raises(CodecError, match="max_n"):
        decode(huge, max_n=1_000_000)
    payload = make_codec("topk:0.5").encode(_X, rng())
    assert decode(payload, max_n=_X.size).shape == _X.shape
    with pytest.raises(CodecError, match="max_n"):
        decode(payload, max_n=_X.size - 1)


def test_block_longer_than_data_costs_nothing_extra() -> None:
    x = rng().standard_normal(10).astype(np.float32)
    payload = make_codec("q4:block=4294967295").encode(x, rng())
    assert len(payload) == 32 + 4 + 5
    out = decode(payload)
    assert np.all(np.abs(out.astype(np.float64) - x) <= quant_bound(x, 4, 10))


def test_codec_decode_rejects_other_codecs_payload() -> None:
    q8 = make_codec("q8").encode(_X, rng())
    with pytest.raises(CodecError, match="q8"):
        make_codec("q4").decode(q8)
    with pytest.raises(CodecError):
        make_codec("topk:0.5").decode(make_codec("topk:0.3").encode(_X, rng()))
    assert decode(q8).shape == _X.shape  # the module-level decoder accepts anything
    assert decode(q8, spec="q8").shape == _X.shape  # ... or only the codec a sender declared
    with pytest.raises(CodecError, match=r"encoded as q8, not with this codec \(fp32\)"):
        decode(q8, spec="fp32")


def test_wire_format_matches_documentation() -> None:
    x = rng(6).standard_normal(21).astype(np.float32)
    payload = make_codec("q4:block=8").encode(x, rng())
    magic, cid, bits, reserved, block, n, k = HEADER.unpack_from(payload)
    assert (magic, cid, bits, reserved, block, n, k) == (b"DLC1", 0x04, 4, 0, 8, 21, 21)
    assert struct.unpack("<I", payload[-4:])[0] == zlib.crc32(payload[:-4])
    scales = np.frombuffer(payload, "<f4", count=3, offset=HEADER.size)
    packed = np.frombuffer(payload, np.uint8, offset=HEADER.size + 12, count=11)
    codes = np.stack([packed & 0x0F, packed >> 4], axis=1).reshape(-1)
    assert codes[21] == 0  # unused trailing bits are zero
    manual = (codes[:21].astype(np.float32) - 7) * np.repeat(scales, 8)[:21]
    np.testing.assert_array_equal(manual, decode(payload))


# --------------------------------------------------------------------------- specs and inputs


@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        ("fp32", "fp32"),
        (" FP16 ", "fp16"),
        ("bf16", "bf16"),
        ("q8", "q8"),
        ("q4:block=256", "q4"),
        ("Q2:block=064", "q2:block=64"),
        ("topk:0.010", "topk:0.01"),
        ("topk:1", "topk:1.0"),
        ("topk:1e-3+fp32", "topk:0.001"),
        ("topk:.5+q4", "topk:0.5+q4"),
        ("topk:0.25+q8:block=32", "topk:0.25+q8:block=32"),
        ("topk:0.25+bf16", "topk:0.25+bf16"),
    ],
)
def test_canonical_spec_round_trips(spec: str, canonical: str) -> None:
    codec = make_codec(spec)
    assert codec.spec == canonical
    assert make_codec(codec.spec).spec == canonical
    assert isinstance(codec, Codec)


@pytest.mark.parametrize(
    "spec",
    [
        "", "fp64", "int8", "q3", "q16", "q4:", "q4:block=0", "q4:block=-1", "q4:block=abc",
        "q4:blk=64", "q4:block=64:block=32", "q4 block=64", "q4:block=4294967296", "topk",
        "topk:", "topk:0", "topk:0.0", "topk:1.5", "topk:-0.1", "topk:nan", "topk:inf",
        "topk:1_0", "topk:0.1+", "topk:0.1+topk:0.2", "topk:0.1+q5", "fp32+q4", "q4+topk:0.1",
    ],
)  # fmt: skip
def test_bad_spec_raises_naming_accepted_forms(spec: str) -> None:
    with pytest.raises(CodecError, match="accepted forms"):
        make_codec(spec)


def test_non_string_spec_is_refused() -> None:
    with pytest.raises(CodecError):
        make_codec(cast(Any, 4))


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused(spec: str, bad: float) -> None:
    x = rng().standard_normal(600).astype(np.float32)
    x[517] = bad
    with pytest.raises(CodecError, match="NaN or Inf"):
        make_codec(spec).encode(x, rng())


@pytest.mark.parametrize(
    "x",
    [np.zeros((2, 3), np.float32), np.zeros(4, np.float64), np.zeros(4, np.int32), [1.0, 2.0]],
    ids=["2-D", "float64", "int32", "list"],
)
def test_wrong_input_kind_is_refused(x: object) -> None:
    for spec in ("fp32", "q4", "topk:0.5"):
        with pytest.raises(CodecError):
            make_codec(spec).encode(cast(Any, x), rng())


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("n", [0, 1, 2, 5, 513])
def test_sizes_are_predicted_and_empty_works(spec: str, n: int) -> None:
    x = rng(n).standard_normal(n).astype(np.float32)
    payload = make_codec(spec).encode(x, rng())
    assert len(payload) == encoded_size(spec, n)
    out = decode(payload)
    assert out.shape == (n,) and out.dtype == np.float32
