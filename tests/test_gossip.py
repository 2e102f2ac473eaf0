"""Tests for declora.node.gossip: exact gossip with fp32, CHOCO consensus with quantization,
and validation of received payloads."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from declora.node.codecs import make_codec
from declora.node.gossip import GossipError, GossipState, consensus_distance
from declora.node.mixing import local_mh_weights, metropolis_hastings
from declora.node.topology import Topology, from_spec, ring

DIM = 1000


def make_swarm(
    topo: Topology, codec: str, x0: np.ndarray, gamma: float = 1.0
) -> list[GossipState[int]]:
    states: list[GossipState[int]] = [GossipState(x0, codec, gamma) for _ in range(topo.n)]
    for i, s in enumerate(states):
        for j in topo.neighbors(i):
            s.add_peer(j, x0)
    return states


def local_weights(topo: Topology) -> list[dict[int, float]]:
    return [
        local_mh_weights(topo.degree(i), {j: topo.degree(j) for j in topo.neighbors(i)})[1]
        for i in range(topo.n)
    ]


def gossip_round(
    states: list[GossipState[int]],
    topo: Topology,
    xs: list[np.ndarray],
    weights: list[dict[int, float]],
    rngs: list[np.random.Generator],
) -> list[np.ndarray]:
    payloads = [
        s.encode_update(x, rngs[i]) for i, (s, x) in enumerate(zip(states, xs, strict=True))
    ]
    for i, s in enumerate(states):
        for j in topo.neighbors(i):
            s.apply_update(j, payloads[j])
    return [s.mix(x, weights[i]) for i, (s, x) in enumerate(zip(states, xs, strict=True))]


@pytest.mark.parametrize("spec", ["ring", "er:0.4"])
def test_fp32_gossip_is_w_times_x(spec: str) -> None:
    n = 7
    topo = from_spec(spec, n, seed=3)
    w = metropolis_hastings(topo)
    weights = local_weights(topo)
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal(DIM).astype(np.float32)  # the shared seeded init
    states = make_swarm(topo, "fp32", x0)
    rngs = [np.random.default_rng(i) for i in range(n)]
    xs = [x0.copy() for _ in range(n)]
    for _ in range(3):
        # "local training": every node moves its own way, then one gossip round
        xs = [x + rng.standard_normal(DIM).astype(np.float32) for x in xs]
        expected = w @ np.stack(xs).astype(np.float64)
        xs = gossip_round(states, topo, xs, weights, rngs)
        np.testing.assert_allclose(np.stack(xs), expected, rtol=0, atol=2e-5)
        # public copies equal the senders' vectors and every holder agrees
        for i, s in enumerate(states):
            for j in topo.neighbors(i):
                assert np.array_equal(s.peers[j], states[j].public)


def test_fp32_from_zero_is_bit_exact_public_copy() -> None:
    s: GossipState[str] = GossipState(np.zeros(5, np.float32), "fp32")
    x = np.array([1.5, -2.25, 3e-30, 0.0, 7.0], np.float32)
    s.encode_update(x, np.random.default_rng(0))
    assert np.array_equal(s.public, x)


@pytest.mark.parametrize("codec", ["q8", "q4"])
def test_choco_quantized_gossip_reaches_consensus_on_a_ring(codec: str) -> None:
    n = 8
    topo = ring(n)
    weights = local_weights(topo)
    rng = np.random.default_rng(1)
    x0 = np.zeros(DIM, np.float32)
    xs = [(1.0 + rng.standard_normal(DIM)).astype(np.float32) for _ in range(n)]
    mean0 = np.mean(np.stack(xs).astype(np.float64), axis=0)
    states = make_swarm(topo, codec, x0)
    rngs = [np.random.default_rng([9, i]) for i in range(n)]
    start = consensus_distance(xs)[1]
    dist = [start]
    for _ in range(100):
        xs = gossip_round(states, topo, xs, weights, rngs)
        dist.append(consensus_distance(xs)[1])
    # measured: ~0.9 -> ~1e-7 (float32 floor) after 100 rounds, like fp32
    assert start > 0.5
    assert dist[50] < 1e-3 * start
    assert dist[100] < 1e-5 * start
    assert dist[100] <= dist[50]
    mean = np.mean(np.stack(xs).astype(np.float64), axis=0)
    assert np.linalg.norm(mean - mean0) / np.linalg.norm(mean0) < 1e-5  # average kept
    # the payloads really are compressed
    fp32_bytes = len(make_codec("fp32").encode(xs[0], rngs[0]))
    assert len(states[0].encode_update(xs[0], rngs[0])) < fp32_bytes / 3


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def receiver() -> GossipState[str]:
    x0 = np.linspace(-1, 1, 64, dtype=np.float32)
    s: GossipState[str] = GossipState(x0, "q8")
    s.add_peer("alice", x0)
    return s


def valid_payload(n: int = 64, codec: str = "fp32") -> bytes:
    sender: GossipState[str] = GossipState(np.zeros(n, np.float32), codec)
    return sender.encode_update(np.full(n, 0.5, np.float32), np.random.default_rng(0))


def raw_fp32_payload(values: np.ndarray) -> bytes:
    """An fp32 payload written by hand per the documented wire format (valid CRC)."""
    v = np.asarray(values, "<f4")
    header = struct.pack("<4sBBHIQQ", b"DLC1", 1, 0, 0, 0, v.size, v.size)
    body = v.tobytes()
    return header + body + struct.pack("<I", zlib.crc32(header + body))


def corrupt_byte(p: bytes) -> bytes:
    b = bytearray(p)
    b[40] ^= 0xFF
    return bytes(b)


def with_nan(p: bytes) -> bytes:
    del p
    v = np.zeros(64, np.float32)
    v[3] = np.nan
    return raw_fp32_payload(v)


def with_inf(p: bytes) -> bytes:
    del p
    v = np.zeros(64, np.float32)
    v[-1] = -np.inf
    return raw_fp32_payload(v)


BAD_PAYLOADS = {
    "corrupted": corrupt_byte,
    "truncated": lambda p: p[:-7],
    "empty": lambda p: b"",
    "too_long": lambda p: p + b"\0",
    "bad_magic": lambda p: b"XXXX" + p[4:],
    "wrong_size": lambda p: valid_payload(65),
    "shorter": lambda p: valid_payload(63, "q4"),
    "nan": with_nan,
    "inf": with_inf,
}


@pytest.mark.parametrize("kind", sorted(BAD_PAYLOADS))
def test_bad_payload_raises_and_changes_nothing(receiver: GossipState[str], kind: str) -> None:
    good = valid_payload()
    assert raw_fp32_payload(np.full(64, 0.5, np.float32)) == good  # the hand-made format holds
    before = receiver.peers["alice"].copy()
    public = receiver.public.copy()
    with pytest.raises(GossipError, match="alice"):
        receiver.apply_update("alice", BAD_PAYLOADS[kind](good))
    with pytest.raises(GossipError):
        receiver.set_copy("alice", receiver.decode_checked("alice", BAD_PAYLOADS[kind](good)))
    assert np.array_equal(receiver.peers["alice"], before)
    assert np.array_equal(receiver.public, public)
    receiver.apply_update("alice", good)  # a valid one still applies afterwards
    np.testing.assert_array_equal(receiver.peers["alice"], before + np.float32(0.5))


def test_overflowing_delta_is_refused(receiver: GossipState[str]) -> None:
    receiver.set_copy("bob", np.full(64, 3e38, np.float32))
    payload = raw_fp32_payload(np.full(64, 3e38, np.float32))  # finite, but the sum is not
    with pytest.raises(GossipError, match="non-finite"), np.errstate(over="ignore"):
        receiver.apply_update("bob", payload)
    assert np.all(receiver.peers["bob"] == np.float32(3e38))


def test_unknown_peer(receiver: GossipState[str]) -> None:
    with pytest.raises(GossipError, match="'mallory'"):
        receiver.apply_update("mallory", valid_payload())
    with pytest.raises(GossipError, match="'mallory'"):
        receiver.add_delta("mallory", np.zeros(64, np.float32), 1.0)
    with pytest.raises(GossipError, match="'mallory'"):
        receiver.mix(receiver.public, {"alice": 0.3, "mallory": 0.3})
    assert set(receiver.peers) == {"alice"}


def test_keyframe_starts_a_new_peer_exactly() -> None:
    rng = np.random.default_rng(0)
    sender: GossipState[str] = GossipState(np.zeros(100, np.float32), "q4")
    for _ in range(3):
        sender.encode_update(rng.standard_normal(100).astype(np.float32), rng)
    receiver: GossipState[str] = GossipState(np.zeros(100, np.float32), "q4")
    receiver.set_copy("s", receiver.decode_checked("s", sender.keyframe()))
    assert np.array_equal(receiver.peers["s"], sender.public)
    receiver.apply_update("s", sender.encode_update(np.ones(100, np.float32), rng))
    assert np.array_equal(receiver.peers["s"], sender.public)
    receiver.drop_peer("s")
    receiver.drop_peer("s")  # idempotent
    assert receiver.peers == {}


def test_mix_is_pure_and_scaled_by_consensus_step() -> None:
    x0 = np.zeros(4, np.float32)
    s: GossipState[str] = GossipState(x0, "fp32", consensus_step=0.5)
    s.set_copy("a", np.array([2, 2, 2, 2], np.float32))
    x = np.ones(4, np.float32)
    out = s.mix(x, {"a": 0.5})
    assert np.array_equal(x, np.ones(4, np.float32))
    np.testing.assert_array_equal(out, np.full(4, 1.5, np.float32))  # 1 + 0.5 * 0.5 * (2 - 0)
    for bad in (0.0, -0.1, 1.01):
        with pytest.raises(ValueError, match="consensus_step"):
            GossipState(x0, "fp32", consensus_step=bad)


def test_consensus_distance() -> None:
    a = np.array([1.0, 2.0], np.float32)
    assert consensus_distance([a, a, a]) == (0.0, 0.0)
    mean_d, max_d = consensus_distance([np.array([1.0, 0.0]), np.array([3.0, 0.0])])
    assert mean_d == pytest.approx(0.5) and max_d == pytest.approx(0.5)


@pytest.mark.parametrize("spec", ["q2", "topk:0.1", "topk:0.1+q4"])
def test_coarse_codecs_converge_with_their_default_steps(spec: str) -> None:
    """q2 and top-k diverge at gamma = 1 without scaling; their defaults must converge."""
    topo = ring(8)
    weights = [local_mh_weights(2, {j: 2 for j in topo.neighbors(i)})[1] for i in range(8)]
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=2048).astype(np.float32) for _ in range(8)]
    mean0 = np.mean(xs, axis=0)
    states = [GossipState(np.zeros(2048, np.float32), spec) for _ in range(8)]
    for i, s in enumerate(states):
        for j in topo.neighbors(i):
            s.add_peer(j, np.zeros(2048, np.float32))
    start = consensus_distance(xs)[1]
    for r in range(200):
        payloads = [
            s.encode_update(x, np.random.default_rng([i, r]))
            for i, (s, x) in enumerate(zip(states, xs, strict=True))
        ]
        for i, s in enumerate(states):
            for j in topo.neighbors(i):
                s.apply_update(j, payloads[j])
        xs = [s.mix(x, weights[i]) for i, (s, x) in enumerate(zip(states, xs, strict=True))]
    assert consensus_distance(xs)[1] < 1e-3 * start
    np.testing.assert_allclose(np.mean(xs, axis=0), mean0, atol=1e-4)


def test_a_masked_update_sends_and_advances_only_its_entries() -> None:
    rng = np.random.default_rng(3)
    x0 = rng.normal(size=40).astype(np.float32)
    x = x0 + rng.normal(size=40).astype(np.float32)
    mask = np.arange(40) % 3 == 0
    for spec in ("fp32", "q2"):
        full, part = GossipState[str](x0, spec), GossipState[str](x0, spec)
        want = full.encode_update(x, np.random.default_rng(0))
        sent = part.encode_update(x, np.random.default_rng(0), mask)
        assert want == make_codec(spec).encode(x - x0, np.random.default_rng(0))
        assert sent == make_codec(spec).encode(x[mask] - x0[mask], np.random.default_rng(0))
        np.testing.assert_array_equal(part.public[~mask], x0[~mask])
        np.testing.assert_array_equal(
            part.public[mask],
            x0[mask] + make_codec(spec).decode(sent) * np.float32(part.update_scale),
        )
