"""Fuzzing: random and mutated payloads, streams and handshakes never break a node.

Property tests (hypothesis) drive the two parsers of untrusted bytes directly:
`codecs.decode` may only raise `CodecError` and, when it returns, returns exactly the
declared number of finite float32 values within `max_n`, in bounded memory;
`wire.read_stream` may only raise `WireError` with a refusal status, and when it
returns, the payload matches its header. The live test sends a few hundred random
and mutated Push streams, Handshakes and Pulls (plus raw TCP garbage) to one node of
a real 2-node swarm while it trains, and checks every answer's status, that nothing
was accepted, and that the pair keeps mixing with finite adapters afterwards.

Both use the same mutators, fed either by hypothesis (`Drawn`) or by a seeded
`random.Random` (`Seeded`), so every live message is reproducible from its seed.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
import re
import socket
import struct
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import grpc
import numpy as np
import pytest
from daemon_helpers import HOST, Cluster, live_ids, read_adapter
from grpc import StatusCode as Code
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from declora.cli.client import fetch_status
from declora.node import PROTOCOL_VERSION
from declora.node.adapter import AdapterSchema, TensorSpec
from declora.node.codecs import HEADER_SIZE, CodecError, decode, make_codec
from declora.node.trainer import LoraModel
from declora.node.wire import Payload, WireError, check_header, chunks, make_header, read_stream
from declora.proto import pb, pb_grpc

# What read_stream may answer with (it never judges rounds or senders).
WIRE_CODES = {
    Code.INVALID_ARGUMENT,
    Code.PERMISSION_DENIED,
    Code.FAILED_PRECONDITION,
    Code.RESOURCE_EXHAUSTED,
}
WIRE_COUNTERS = {
    "malformed",
    "truncated",
    "bad_checksum",
    "too_large",
    "wrong_schema",
    "wrong_swarm",
    "wrong_fingerprint",
    "bad_kind",
    "unknown_codec",
}
# What a node may answer a fuzzed RPC with: a refusal, or OK for a refused handshake or
# an out-of-step delta. Never UNKNOWN or INTERNAL (an unhandled error in the node).
LIVE_CODES = WIRE_CODES | {Code.OK, Code.OUT_OF_RANGE, Code.UNAUTHENTICATED, Code.ABORTED}

SPECS = ["fp32", "fp16", "bf16", "q8", "q4", "q2", "q4:block=7", "topk:0.1", "topk:0.3+q4"]
SPECS += ["topk:0.5+bf16", "q2:block=3"]
MAX_N = 600  # the decoder's max_n in the property tests

SWARM, FINGERPRINT = "fuzz-swarm", "f" * 16
SCHEMA = AdapterSchema((TensorSpec("a.lora_A", (4, 8)), TensorSpec("a.lora_B", (8, 4))))
MAX_BYTES = 4096  # read_stream's size limit in the property tests
U64 = 2**64 - 1
FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


# ---------------------------------------------------------------- sources of choices

T = TypeVar("T")


class Source(Protocol):
    """Where a mutator's choices come from."""

    def integer(self, lo: int, hi: int) -> int: ...

    def blob(self, max_size: int) -> bytes: ...


class Drawn:
    """Choices drawn by hypothesis (so failures shrink)."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))

    def blob(self, max_size: int) -> bytes:
        return self.data.draw(st.binary(max_size=max_size))


class Seeded:
    """Choices from a seeded `random.Random` (the live fuzzer)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def blob(self, max_size: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, max_size))


def pick(src: Source, options: Sequence[T]) -> T:
    return options[src.integer(0, len(options) - 1)]


def edge_int(src: Source, hi: int) -> int:
    """An integer in [0, hi], often at an edge."""
    return pick(src, [0, 1, hi, hi - 1, hi // 2, src.integer(0, hi), src.integer(0, min(hi, 300))])


# ---------------------------------------------------------------- codec payload mutations

_CODEC_FIELDS = [(4, "B", 255), (5, "B", 255), (6, "H", 2**16 - 1), (8, "I", 2**32 - 1)]
_CODEC_FIELDS += [(12, "Q", U64), (20, "Q", U64)]  # id, bits, reserved, block, n, k


def recrc(payload: bytes) -> bytes:
    """`payload` with its codec CRC (the last 4 bytes) recomputed."""
    body = payload[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def mutate_payload(payload: bytes, src: Source) -> bytes:
    """1-3 random edits of a codec payload; often with a valid CRC afterwards."""
    data = bytearray(payload)
    for _ in range(src.integer(1, 3)):
        op = src.integer(0, 5)
        if op == 0 and data:  # flip one byte
            data[src.integer(0, len(data) - 1)] ^= 1 << src.integer(0, 7)
        elif op == 1 and len(data) >= HEADER_SIZE:  # a header field set to an edge value
            offset, fmt, hi = _CODEC_FIELDS[src.integer(0, len(_CODEC_FIELDS) - 1)]
            struct.pack_into("<" + fmt, data, offset, edge_int(src, hi))
        elif op == 2:  # truncate
            del data[src.integer(0, len(data)) :]
        elif op == 3:  # extend
            data += src.blob(64)
        elif op == 4 and len(data) >= HEADER_SIZE + 4:  # a float32 in the body: NaN, Inf, ...
            special = pick(src, [math.nan, math.inf, -math.inf, -1.0, 3e38, 1e-45])
            struct.pack_into("<f", data, src.integer(HEADER_SIZE, len(data) - 4), special)
        elif op == 5 and len(data) > HEADER_SIZE:  # overwrite a run of body bytes
            start = src.integer(HEADER_SIZE, len(data) - 1)
            noise = src.blob(16)
            data[start : start + len(noise)] = noise
    fixed = bytes(data)
    return recrc(fixed) if len(fixed) >= 4 and src.integer(0, 3) else fixed


def check_decoded(payload: bytes) -> None:
    """decode(max_n) raises CodecError or returns the declared count of finite values."""
    tracemalloc.start()
    try:
        out = decode(payload, max_n=MAX_N)
    except CodecError as exc:
        event(f"CodecError: {re.sub(r'[^a-z -].*', '', str(exc)).strip()}")
        return
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak <= 64 * (MAX_N + len(payload)) + (1 << 20), f"decode peaked at {peak} bytes"
    (declared,) = struct.unpack_from("<Q", payload, 12)
    event("decoded")
    assert out.dtype == np.float32 and out.ndim == 1
    assert out.size == declared <= MAX_N
    assert np.isfinite(out).all()


@FUZZ
@given(st.binary(max_size=3000))
def test_decode_random_bytes(payload: bytes) -> None:
    check_decoded(payload)


def documented_size(cid: int, bits: int, block: int, k: int) -> int:
    """Payload bytes for these header fields, from the documented wire format."""
    values = {1: 4 * k, 2: 2 * k, 3: 2 * k}.get(cid & 0x0F)
    if values is None:  # quantized: block scales, then packed codes
        values = 4 * -(-k // max(block, 1)) + -(-k * bits // 8)
    return 32 + values + (4 * k if cid & 0x10 else 0)


@FUZZ
@given(st.data())
def test_decode_forged_headers(data: st.DataObject) -> None:
    """The documented header with random, mostly consistent fields and a valid CRC."""
    src = Drawn(data)
    cid = pick(src, [0x01, 0x02, 0x03, 0x04, 0x11, 0x12, 0x13, 0x14, src.integer(0, 255)])
    quant = cid & 0x0F == 0x04
    bits = pick(src, [2, 4, 8] if quant else [0]) if src.integer(0, 3) else src.integer(0, 255)
    block = (
        (edge_int(src, 2**32 - 1) if quant else 0)
        if src.integer(0, 3)
        else src.integer(0, 2**32 - 1)
    )
    reserved = 0 if src.integer(0, 3) else src.integer(1, 2**16 - 1)
    n = edge_int(src, pick(src, [MAX_N, MAX_N + 1, U64]))
    k = pick(src, [n, n, n, src.integer(0, min(n, 1000)), edge_int(src, U64)])
    size = documented_size(cid, bits, block, k)
    body = src.blob(3000)
    if src.integer(0, 1) and size <= 40_000:  # the exact length, so decoding gets past the header
        body = (body * (size // max(len(body), 1) + 1))[: size - 32] if body else bytes(size - 32)
    head = struct.pack("<4sBBHIQQ", b"DLC1", cid, bits, reserved, block, n, k)
    check_decoded(recrc(head + body + bytes(4)))


@FUZZ
@given(
    spec=st.sampled_from(SPECS), n=st.integers(0, MAX_N), seed=st.integers(0, 2**16), data=st.data()
)
def test_decode_mutated_payloads(spec: str, n: int, seed: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, float(rng.choice([1e-3, 1.0, 100.0])), n).astype(np.float32)
    valid = make_codec(spec).encode(x, rng)
    assert decode(valid, max_n=MAX_N).size == n
    check_decoded(mutate_payload(valid, Drawn(data)))


def test_decode_refuses_an_oversized_declaration_before_allocating() -> None:
    """A top-k header may declare 2**32 values in a few bytes: max_n refuses it cheaply."""
    head = struct.pack("<4sBBHIQQ", b"DLC1", 0x11, 0, 0, 0, 2**32, 1)
    payload = recrc(head + struct.pack("<If", 7, 1.0) + bytes(4))
    tracemalloc.start()
    with pytest.raises(CodecError, match="max_n"):
        decode(payload, max_n=MAX_N)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20


# ---------------------------------------------------------------- stream mutations


def valid_stream(src: Source, sender: str = "peer", data: bytes | None = None) -> list[pb.Chunk]:
    """A well-formed push of `data` (a valid fp32 delta by default) in random-size chunks."""
    if data is None:
        x = np.random.default_rng(src.integer(0, 2**16)).normal(0, 1, SCHEMA.numel)
        data = make_codec("fp32").encode(x.astype(np.float32), np.random.default_rng(0))
    header = make_header(
        sender_id=sender,
        swarm_id=SWARM,
        fingerprint=FINGERPRINT,
        round=src.integer(0, 10),
        sender_degree=1,
        kind=pb.PAYLOAD_KIND_DELTA,
        codec="fp32",
        seq=src.integer(0, 10),
        data=data,
        schema=SCHEMA,
    )
    return list(chunks(header, data, src.integer(1, len(data) + 8)))


def mutate_header(header: pb.PayloadHeader, src: Source, senders: Sequence[str]) -> None:
    """Set one field of `header` to a random or edge value."""
    field = src.integer(0, 12)
    if field == 0:
        header.sender_id = pick(src, [*senders, "", "x" * 300])
    elif field == 1:
        header.swarm_id = pick(src, [header.swarm_id, "", "other-swarm"])
    elif field == 2:
        header.fingerprint = pick(src, [header.fingerprint, "", "0" * 16])
    elif field == 3:
        header.round = edge_int(src, U64)
    elif field == 4:
        header.sender_degree = edge_int(src, 2**32 - 1)
    elif field == 5:
        header.kind = src.integer(0, 9)  # type: ignore[assignment]
    elif field == 6:
        header.codec = pick(src, ["fp32", "q8", "Q8", "topk:0.1+q4", "zstd", "", "q9"])
    elif field == 7:
        header.seq = edge_int(src, U64)
    elif field == 8:
        header.total_bytes = edge_int(src, U64)
    elif field == 9:
        header.crc32 = edge_int(src, 2**32 - 1)
    elif field == 10:
        header.mac = src.blob(40)
    elif field == 11:
        header.tracker_bytes = edge_int(src, U64)
    elif header.tensors:
        t = header.tensors[src.integer(0, len(header.tensors) - 1)]
        change = src.integer(0, 4)
        if change == 0:
            t.name += "x"
        elif change == 1:
            t.shape.append(src.integer(0, 2**32 - 1))
        elif change == 2:
            t.dtype = "float16"
        elif change == 3:
            del header.tensors[-1]
        else:
            header.tensors.add(name="extra", shape=[1], dtype="float32")


def mutate_stream(stream: list[pb.Chunk], src: Source, senders: Sequence[str]) -> list[pb.Chunk]:
    """1-3 random edits: chunks dropped, repeated, swapped, inserted or changed."""
    out = [pb.Chunk.FromString(c.SerializeToString()) for c in stream]
    for _ in range(src.integer(1, 3)):
        op = src.integer(0, 7)
        i = src.integer(0, max(len(out) - 1, 0))
        if op == 0 and out:
            del out[i]
        elif op == 1 and out:
            out.insert(i, pb.Chunk.FromString(out[i].SerializeToString()))
        elif op == 2 and out:
            j = src.integer(0, len(out) - 1)
            out[i], out[j] = out[j], out[i]
        elif op == 3:
            out.insert(i, pb.Chunk())
        elif op == 4:
            out.insert(i, pb.Chunk(data=src.blob(64)))
        elif op == 5 and out and out[i].WhichOneof("body") == "data" and out[i].data:
            raw = bytearray(out[i].data)
            raw[src.integer(0, len(raw) - 1)] ^= 1 << src.integer(0, 7)
            out[i].data = bytes(raw)
        elif op == 6 and out and out[i].WhichOneof("body") == "data":
            out[i].data = out[i].data[: src.integer(0, len(out[i].data))]
        elif out and out[0].WhichOneof("body") == "header":
            mutate_header(out[0].header, src, senders)
    return out


def random_stream(src: Source, senders: Sequence[str], base: pb.PayloadHeader) -> list[pb.Chunk]:
    """0-6 chunks of random kinds: mutated headers, random data, empty chunks."""
    out = []
    for _ in range(src.integer(0, 6)):
        kind = src.integer(0, 2)
        if kind == 0:
            header = pb.PayloadHeader.FromString(base.SerializeToString())
            mutate_header(header, src, senders)
            out.append(pb.Chunk(header=header))
        elif kind == 1:
            out.append(pb.Chunk(data=src.blob(200)))
        else:
            out.append(pb.Chunk())
    return out


async def _aiter(stream: list[pb.Chunk]) -> AsyncIterator[pb.Chunk]:
    for chunk in stream:
        yield chunk


def check_read(stream: list[pb.Chunk]) -> None:
    """read_stream refuses with a wire status and counter, or returns a consistent payload."""
    try:
        payload: Payload = asyncio.run(
            read_stream(
                _aiter(stream),
                swarm_id=SWARM,
                fingerprint=FINGERPRINT,
                schema=SCHEMA,
                max_bytes=MAX_BYTES,
            )
        )
    except WireError as exc:
        event(f"WireError: {exc.counter}")
        assert exc.code in WIRE_CODES and exc.counter in WIRE_COUNTERS, exc
        assert exc.reason
        return
    event("accepted")
    assert len(payload.data) == payload.header.total_bytes
    assert zlib.crc32(payload.data) == payload.header.crc32
    assert len(payload.tracker) == payload.header.tracker_bytes
    assert payload.adapter + payload.tracker == payload.data
    check_header(
        payload.header, swarm_id=SWARM, fingerprint=FINGERPRINT, schema=SCHEMA, max_bytes=MAX_BYTES
    )


@FUZZ
@given(st.data())
def test_read_stream_random_chunks(data: st.DataObject) -> None:
    src = Drawn(data)
    check_read(random_stream(src, ["peer"], valid_stream(src)[0].header))


@FUZZ
@given(st.data())
def test_read_stream_mutated_streams(data: st.DataObject) -> None:
    src = Drawn(data)
    check_read(mutate_stream(valid_stream(src), src, ["peer"]))


# ---------------------------------------------------------------- live: a real swarm under fuzz

START = 150.0  # seconds for two daemons to start and mix (see test_daemon)
MESSAGES = 300  # fuzzed RPCs
GARBAGE = 20  # raw TCP connections writing garbage
MORE_ROUNDS = 3  # rounds both nodes must complete after the fuzz
RPC = 10.0


@dataclass
class Target:
    """The fuzzed node n0, as its real neighbour n1 would address it."""

    stub: pb_grpc.SwarmStub
    swarm: str
    fingerprint: str
    schema: AdapterSchema
    n0: str
    n1: str
    round: int = 0  # n0's round, refreshed while fuzzing

    @property
    def senders(self) -> list[str]:
        return [self.n1, "fuzzer", self.n0]


def fuzz_push(src: Source, t: Target) -> tuple[Code, bool]:
    """A random, valid-looking or mutated push around n0's current round.

    Its codec payload never decodes (the codec's own CRC is broken), and a push in the
    real neighbour n1's name lacks n1's session token, so none can be accepted.
    """
    x = np.random.default_rng(src.integer(0, 2**16)).normal(0, 1e-3, t.schema.numel)
    good = make_codec("fp32").encode(x.astype(np.float32), np.random.default_rng(0))
    data = good[:-1] + bytes([good[-1] ^ 0xFF])
    header = make_header(
        sender_id=pick(src, t.senders),
        swarm_id=t.swarm,
        fingerprint=t.fingerprint,
        round=max(0, t.round + src.integer(-2, 10)),
        sender_degree=1,
        kind=src.integer(1, 2),
        codec="fp32",
        seq=src.integer(0, t.round + 10),
        data=data,
        schema=t.schema,
    )
    valid = list(chunks(header, data, src.integer(1, len(data) + 8)))
    shape = src.integer(0, 4)
    if shape == 0:
        stream = random_stream(src, t.senders, header)
    elif shape == 1:
        stream = valid
    else:
        stream = mutate_stream(valid, src, t.senders)
    try:
        ack = t.stub.Push(iter(stream), timeout=RPC)
    except grpc.RpcError as exc:
        return exc.code(), False
    return Code.OK, ack.accepted


def fuzz_handshake(src: Source, t: Target) -> tuple[Code, bool]:
    """A Hello with at least one of the fields a node checks wrong, or all random."""
    hello = pb.Hello(
        protocol_version=PROTOCOL_VERSION,
        node_id=f"fuzz-{src.integer(0, 9)}",
        swarm_id=t.swarm,
        fingerprint=t.fingerprint,
        round=edge_int(src, U64),
        live_degree=edge_int(src, 2**32 - 1),
        listen_address=pick(src, ["", f"{HOST}:1", "not an address"]),
        seq=edge_int(src, U64),
    )
    broken = src.integer(0, 4)
    if broken == 0:
        hello.protocol_version = pick(src, [0, PROTOCOL_VERSION + 1, 2**32 - 1])
    elif broken == 1:
        hello.swarm_id = pick(src, ["", "other-swarm", t.swarm + "x"])
    elif broken == 2:
        hello.fingerprint = pick(src, ["", "0" * 16, t.fingerprint.upper()])
    elif broken == 3:
        hello.node_id = pick(src, ["", t.n0])
    else:
        hello = pb.Hello(
            protocol_version=src.integer(0, 5),
            node_id=src.blob(8).hex(),
            swarm_id=src.blob(8).hex(),
            fingerprint=src.blob(8).hex(),
        )
    try:
        welcome = t.stub.Handshake(hello, timeout=RPC)
    except grpc.RpcError as exc:
        return exc.code(), False
    return Code.OK, welcome.accepted


def fuzz_pull(src: Source, t: Target) -> tuple[Code, bool]:
    """A Pull by a stranger or in n1's name, of a random kind, never with a session:
    none may be served (a served one counts as accepted)."""
    kind = src.integer(0, 9)
    request = pb.PullRequest(node_id=pick(src, t.senders), swarm_id=t.swarm, kind=kind)  # type: ignore[arg-type]
    try:
        list(t.stub.Pull(request, timeout=RPC))
    except grpc.RpcError as exc:
        return exc.code(), False
    return Code.OK, True


def tcp_garbage(address: str, src: Source) -> None:
    """Connect, write random bytes (sometimes after the HTTP/2 preface), close."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" if src.integer(0, 1) else b""
        try:
            sock.sendall(preface + src.blob(4096))
            sock.recv(1024)  # the server's answer (settings, GOAWAY) or its close
        except OSError:
            pass  # the server may close first: that is a fine answer to garbage


@pytest.mark.slow  # ~15 s of processes, make test-slow; in-process fuzzing stays
@pytest.mark.integration
@pytest.mark.timeout(360)
def test_live_swarm_survives_fuzzing(
    tmp_path: Path, synthetic_jsonl: Path, tiny_lm: LoraModel
) -> None:
    cluster = Cluster(tmp_path, synthetic_jsonl)
    try:
        args = ["--rounds", "0", "--eval-every", "0", "--local-steps", "1"]
        n0, n1 = cluster.static(2, [(0, 1)], [*args, "--round-deadline", "30"])
        n0.start()
        n1.start()

        def mixing(after: int) -> bool:
            replies = [n0.status(), n1.status()]
            return all(
                r is not None and r.round >= after and live_ids(r) == {other.node_id}
                for r, other in zip(replies, [n1, n0], strict=True)
            )

        cluster.wait_until("the pair mixing", lambda: mixing(1), START, [n0, n1])
        before = fetch_status(n0.address, RPC)
        channel = grpc.insecure_channel(n0.address)
        stub = pb_grpc.SwarmStub(channel)
        assert before.fingerprint == tiny_lm.fingerprint
        schema = tiny_lm.schema  # n0's tensor schema, as n1 knows it
        target = Target(stub, cluster.swarm_id, before.fingerprint, schema, n0.node_id, n1.node_id)
        src = Seeded(20240)
        senders = {"push": fuzz_push, "handshake": fuzz_handshake, "pull": fuzz_pull}
        kinds = ["push"] * 6 + ["handshake"] * 3 + ["pull"]
        codes: collections.Counter[str] = collections.Counter()
        accepted: list[str] = []
        t0 = time.monotonic()
        try:
            for i in range(MESSAGES):
                if i % 20 == 0:
                    target.round = fetch_status(n0.address, RPC).round
                what = kinds[src.integer(0, len(kinds) - 1)]
                code, ok = senders[what](src, target)
                codes[f"{what} {code.name}"] += 1
                assert code in LIVE_CODES, f"message #{i} ({what}) answered {code.name}"
                if ok:
                    accepted.append(f"#{i} {what}")
                if i % (MESSAGES // GARBAGE) == 0:
                    tcp_garbage(n0.address, src)
        finally:
            channel.close()
        seconds = time.monotonic() - t0
        print(f"\n{MESSAGES} fuzzed RPCs and {GARBAGE} garbage connections in {seconds:.1f}s:")
        for key, count in sorted(codes.items()):
            print(f"  {key:<32} {count}")
        assert not accepted, f"fuzzed messages accepted: {accepted}"

        after = fetch_status(n0.address, RPC)
        counted = sum(after.rejected.values()) - sum(before.rejected.values())
        refused = sum(c for k, c in codes.items() if not k.endswith(" OK"))
        refused += codes["handshake OK"]  # every fuzzed handshake is refused in its Welcome
        print(f"n0 counted {counted} refusals: {dict(after.rejected)}")
        assert counted >= refused, f"{refused} refused, only {counted} counted"
        print(f"rounds: n0 at {before.round} before the fuzz, {after.round} after it")
        cluster.wait_until(
            f"the pair to mix {MORE_ROUNDS} more rounds",
            lambda: mixing(after.round + MORE_ROUNDS),
            START,
            [n0, n1],
        )
        for node in (n0, n1):
            reply = node.status()
            assert reply is not None and math.isfinite(reply.loss), reply
            node.signal()
        assert cluster.wait_exit([n0, n1], 60) == [0, 0], cluster.report()
        for node in (n0, n1):
            adapter = read_adapter(node.ckpt / "adapter")
            assert all(np.isfinite(v).all() for v in adapter.values()), node.node_id
    finally:
        cluster.close()
