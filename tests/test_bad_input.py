"""Bad input against a real daemon: each refused with a status, a reason and a counter.

One daemon D (a real `declora-node start` process) has one neighbour F, an in-test
gRPC server that answers D's handshake with D's own swarm, fingerprint and protocol
and takes D's round-1 push, but never sends its own round-1 message. D waits for it
(`--round-deadline 600`), so its state is frozen while F's client side sends one bad
input per case. For each, D must answer with the expected gRPC status and a reason,
count it once under the expected reason in Status (`rejected`) and in its Prometheus
metrics (`declora_rejected_total{reason}`), and keep an equal `state_digest`. Last, F
sends the valid round-1 message and D completes round 1: the refusals wedged nothing.

Every message is built with `declora.node.wire` from a valid base: a real fp32 delta
of D's tensor schema, which F reads from D's own state (Pull) after its handshake.
"""

from __future__ import annotations

import dataclasses
import struct
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from daemon_helpers import HOST, Cluster, Node, free_ports, serve_fake_peer, train_args
from grpc import StatusCode as Code
from prometheus_client.parser import text_string_to_metric_families

from declora.cli.client import fetch_status
from declora.node import PROTOCOL_VERSION, __version__
from declora.node.adapter import AdapterSchema, TensorSpec
from declora.node.codecs import HEADER_SIZE, make_codec
from declora.node.daemon.inbox import MAX_ROUNDS_AHEAD
from declora.node.kill_revive import KEYFRAME, MAGIC, pack_mask
from declora.node.lora_names import A_MARK, LORA_MARK
from declora.node.wire import chunks, make_header
from declora.proto import pb, pb_grpc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

START = 150.0  # seconds for D to import torch, build tiny-bert, train round 1 and push it
RPC = 30.0  # seconds for one RPC
MAX_MIB = 1  # D's --max-message-mib
CHUNK_KIB = 16  # D's --chunk-kib: gRPC refuses a single message over 16 + 64 KiB
F_ID = "fake-peer"


# ---------------------------------------------------------------- the fake peer F


class FakePeer(pb_grpc.SwarmServicer):
    """F's server side: welcomes D as one of its swarm and takes every push."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.pushed_rounds: list[int] = []  # rounds of the payloads D pushed to F
        self.session = b""  # the token D gave F in its Hello: F presents it to D
        self.tracking = False  # F's gradient tracking: D's, as its Hello says

    def hello(self, swarm_id: str, fingerprint: str) -> pb.Hello:
        return pb.Hello(
            protocol_version=PROTOCOL_VERSION,
            package_version=__version__,
            node_id=F_ID,
            swarm_id=swarm_id,
            fingerprint=fingerprint,
            listen_address=self.address,
            gradient_tracking=self.tracking,
        )

    def Handshake(self, request: pb.Hello, context: grpc.ServicerContext) -> pb.Welcome:
        self.session, self.tracking = request.session, request.gradient_tracking
        return pb.Welcome(accepted=True, node=self.hello(request.swarm_id, request.fingerprint))

    def Push(
        self, request_iterator: Iterator[pb.Chunk], context: grpc.ServicerContext
    ) -> pb.PushAck:
        headers = [c.header for c in request_iterator if c.WhichOneof("body") == "header"]
        self.pushed_rounds += [h.round for h in headers]
        return pb.PushAck(accepted=True)


@dataclass
class Probe:
    """D, F's client stub to it, and what a valid round-1 message from F looks like."""

    cluster: Cluster
    node: Node
    stub: pb_grpc.SwarmStub
    fake: FakePeer
    swarm_id: str
    fingerprint: str
    schema: AdapterSchema
    metrics_url: str

    @property
    def n(self) -> int:
        return self.schema.numel

    def delta(self, values: np.ndarray | None = None, codec: str = "fp32") -> bytes:
        """A real encoded delta of D's adapter size (small random values by default)."""
        if values is None:
            values = np.random.default_rng(1).normal(0, 1e-3, self.n).astype(np.float32)
        return make_codec(codec).encode(values, np.random.default_rng(2))

    def header(
        self, data: bytes, schema: AdapterSchema | None = None, /, **fields: int | str
    ) -> pb.PayloadHeader:
        """F's valid round-1 delta header for `data`, then `fields` overwritten."""
        h = make_header(
            sender_id=F_ID,
            swarm_id=self.swarm_id,
            fingerprint=self.fingerprint,
            round=1,
            sender_degree=1,
            kind=pb.PAYLOAD_KIND_DELTA,
            codec="fp32",
            seq=1,
            data=data,
            schema=schema or self.schema,
            session=self.fake.session,
            receiver_id=self.node.node_id,
        )
        for name, value in fields.items():
            setattr(h, name, value)
        return h

    def stream(
        self, data: bytes | None = None, schema: AdapterSchema | None = None, /, **fields: int | str
    ) -> list[pb.Chunk]:
        """The chunks of one push: `data` (a valid delta by default) under its header."""
        payload = self.delta() if data is None else data
        return list(chunks(self.header(payload, schema, **fields), payload, CHUNK_KIB * 1024))

    def pull_request(self, **fields: int | str | bytes) -> pb.PullRequest:
        """F's valid pull of D's state, then `fields` overwritten."""
        request = pb.PullRequest(
            node_id=F_ID,
            swarm_id=self.swarm_id,
            kind=pb.PAYLOAD_KIND_STATE,
            session=self.fake.session,
            receiver_id=self.node.node_id,
        )
        for name, value in fields.items():
            setattr(request, name, value)
        return request

    def hello(self, **fields: int | str) -> pb.Hello:
        h = self.fake.hello(self.swarm_id, self.fingerprint)
        for name, value in fields.items():
            setattr(h, name, value)
        return h


# ---------------------------------------------------------------- what one case observes


@dataclass(frozen=True)
class Outcome:
    code: Code
    reason: str  # status details, or the reason in PushAck/Welcome when the status is OK
    accepted: bool = False


def push(probe: Probe, stream: Iterable[pb.Chunk]) -> Outcome:
    try:
        ack = probe.stub.Push(iter(stream), timeout=RPC)
    except grpc.RpcError as exc:
        return Outcome(exc.code(), exc.details() or "")
    return Outcome(Code.OK, ack.reason, ack.accepted)


def handshake(probe: Probe, hello: pb.Hello) -> Outcome:
    welcome = probe.stub.Handshake(hello, timeout=RPC)
    return Outcome(Code.OK, welcome.reason, welcome.accepted)


def pull(probe: Probe, request: pb.PullRequest) -> Outcome:
    try:
        list(probe.stub.Pull(request, timeout=RPC))
    except grpc.RpcError as exc:
        return Outcome(exc.code(), exc.details() or "")
    return Outcome(Code.OK, "", True)


def rejected_metrics(url: str) -> dict[str, float]:
    """`declora_rejected_total` by reason, from D's metrics endpoint."""
    with urllib.request.urlopen(url, timeout=RPC) as reply:
        text = reply.read().decode()
    return {
        s.labels["reason"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "declora_rejected_total"
    }


# ---------------------------------------------------------------- crafted payloads


def recrc(payload: bytes) -> bytes:
    """`payload` with its codec CRC (the last 4 bytes) made valid again."""
    body = payload[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def with_value(probe: Probe, value: float, codec: str = "fp32") -> bytes:
    values = np.zeros(probe.n, np.float32)
    data = bytearray(probe.delta(values, codec))
    struct.pack_into("<f", data, HEADER_SIZE + 4 * 7, value)  # the 8th value (fp32 body)
    return recrc(bytes(data))


def q8_scale(probe: Probe, scale: float) -> bytes:
    """A q8 delta whose first block scale is `scale` (scales follow the codec header)."""
    data = bytearray(probe.delta(codec="q8"))
    struct.pack_into("<f", data, HEADER_SIZE, scale)
    return recrc(bytes(data))


def other_length(probe: Probe, n: int) -> bytes:
    return probe.delta(np.zeros(n, np.float32))


def corrupt_codec_crc(probe: Probe) -> bytes:
    data = bytearray(probe.delta())
    data[HEADER_SIZE + 1] ^= 0x40  # a value byte: the codec's own CRC no longer matches
    return bytes(data)


def schema_with(probe: Probe, index: int, **change: str | tuple[int, ...]) -> AdapterSchema:
    """D's schema with one tensor's name, shape or dtype changed."""
    specs = list(probe.schema.tensors)
    specs[index] = dataclasses.replace(specs[index], **change)  # type: ignore[arg-type]
    return AdapterSchema(tuple(specs))


def data_chunk(data: bytes) -> pb.Chunk:
    return pb.Chunk(data=data)


# ---------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class Case:
    name: str
    send: Callable[[Probe], Outcome]
    code: Code
    reason: str  # a substring of the answer's reason
    counter: str | None  # the reason it is counted under (None: not a refusal)


def _cases() -> list[Case]:
    big = MAX_MIB * 1024 * 1024 + 1
    invalid, out_of_range = Code.INVALID_ARGUMENT, Code.OUT_OF_RANGE

    def stream(**fields: int | str) -> Callable[[Probe], Outcome]:
        return lambda p: push(p, p.stream(**fields))

    def payload(make: Callable[[Probe], bytes], **fields: int | str) -> Callable[[Probe], Outcome]:
        return lambda p: push(p, p.stream(make(p), **fields))

    return [
        # framing
        Case(
            "data before header",
            lambda p: push(p, [data_chunk(b"x"), *p.stream()]),
            invalid,
            "data before the header",
            "malformed",
        ),
        Case(
            "second header",
            lambda p: push(p, [*p.stream(), p.stream()[0]]),
            invalid,
            "a second header",
            "malformed",
        ),
        Case(
            "empty chunk",
            lambda p: push(p, [p.stream()[0], pb.Chunk(), *p.stream()[1:]]),
            invalid,
            "an empty chunk",
            "malformed",
        ),
        Case("empty stream", lambda p: push(p, []), invalid, "an empty stream", "malformed"),
        Case(
            "more bytes than announced",
            lambda p: push(p, [*p.stream(), data_chunk(b"\0")]),
            invalid,
            "more than the announced",
            "malformed",
        ),
        Case(
            "truncated stream",
            lambda p: push(p, [p.stream()[0], data_chunk(p.delta()[:100])]),
            invalid,
            "truncated stream",
            "truncated",
        ),
        Case(
            "wrong checksum",
            lambda p: push(p, p.stream(crc32=zlib.crc32(p.delta()) ^ 1)),
            invalid,
            "checksum mismatch",
            "bad_checksum",
        ),
        # size
        Case(
            "larger than the limit (announced)",
            stream(total_bytes=big),
            Code.RESOURCE_EXHAUSTED,
            f"exceeds the limit of {MAX_MIB * 1024 * 1024}",
            "too_large",
        ),
        Case(
            "larger than the limit (sent)",
            lambda p: push(p, p.stream(bytes(big))),
            Code.RESOURCE_EXHAUSTED,
            f"exceeds the limit of {MAX_MIB * 1024 * 1024}",
            "too_large",
        ),
        Case(
            "chunk over gRPC's message limit",
            lambda p: push(p, [*p.stream(bytes(100 * 1024))[:1], data_chunk(bytes(100 * 1024))]),
            Code.RESOURCE_EXHAUSTED,
            "larger than max",
            "truncated",  # gRPC itself refuses the chunk; D sees the stream end early
        ),
        Case(
            "streams over the limit, announced small",
            lambda p: push(
                p, [p.stream()[0], *(data_chunk(bytes(CHUNK_KIB * 1024)) for _ in range(65))]
            ),
            invalid,
            "more than the announced",
            "malformed",
        ),
        # tensor schema
        Case(
            "wrong tensor name",
            lambda p: push(p, p.stream(None, schema_with(p, 0, name="evil.weight"))),
            invalid,
            "tensor schema differs",
            "wrong_schema",
        ),
        Case(
            "wrong tensor shape",
            lambda p: push(p, p.stream(None, schema_with(p, 1, shape=(4, 4, 4)))),
            invalid,
            "tensor schema differs",
            "wrong_schema",
        ),
        Case(
            "wrong tensor dtype",
            lambda p: push(p, p.stream(None, schema_with(p, 2, dtype="float16"))),
            invalid,
            "tensor schema differs",
            "wrong_schema",
        ),
        Case(
            "missing tensor",
            lambda p: push(p, p.stream(None, AdapterSchema(p.schema.tensors[:-1]))),
            invalid,
            "tensors, expected",
            "wrong_schema",
        ),
        # values
        Case(
            "NaN (fp32)",
            payload(lambda p: with_value(p, float("nan"))),
            invalid,
            "NaN",
            "bad_values",
        ),
        Case(
            "Inf (fp32)",
            payload(lambda p: with_value(p, float("inf"))),
            invalid,
            "Inf",
            "bad_values",
        ),
        Case(
            "NaN scale (q8)",
            payload(lambda p: q8_scale(p, float("nan")), codec="q8"),
            invalid,
            "quantization scale",
            "bad_values",
        ),
        Case(
            "Inf scale (q8)",
            payload(lambda p: q8_scale(p, float("inf")), codec="q8"),
            invalid,
            "quantization scale",
            "bad_values",
        ),
        Case(
            "too few values",
            payload(lambda p: other_length(p, p.n - 1)),
            invalid,
            "values, expected",
            "bad_values",
        ),
        Case(
            "too many values",
            payload(lambda p: other_length(p, p.n + 1)),
            invalid,
            "more than max_n",
            "bad_values",
        ),
        Case(
            "corrupt codec payload",
            payload(corrupt_codec_crc),
            invalid,
            "payload corrupted",
            "bad_values",
        ),
        Case(
            "payload not in the declared codec",
            payload(lambda p: p.delta(), codec="q8"),
            invalid,
            "not with this codec (q8)",
            "bad_values",
        ),
        # gradient tracking (D does not track)
        Case(
            "tracking message to a node that does not track",
            lambda p: push(p, p.stream(p.delta() + p.delta(), tracker_bytes=len(p.delta()))),
            invalid,
            "this node does not track",
            "bad_tracking",
        ),
        Case(
            "tracker_bytes beyond the payload",
            stream(tracker_bytes=10**9),
            invalid,
            "does not fit",
            "malformed",
        ),
        Case(
            "handshake: gradient tracking on",
            lambda p: handshake(p, p.hello(node_id="h4", gradient_tracking=True)),
            Code.OK,
            "gradient tracking is on at 'h4' and off at",
            "handshake",
        ),
        # rounds
        Case("stale round", stream(round=0), out_of_range, "round 0 outside (0, ", "stale_round"),
        Case(
            "future round",
            stream(round=1 + MAX_ROUNDS_AHEAD),
            out_of_range,
            f"outside (0, {MAX_ROUNDS_AHEAD}]",
            "future_round",
        ),
        # who sends it
        Case(
            "sender never shook hands",
            stream(sender_id="stranger"),
            Code.UNAUTHENTICATED,
            "has not shaken hands",
            "no_handshake",
        ),
        Case(
            "wrong swarm id",
            stream(swarm_id="other-swarm"),
            Code.PERMISSION_DENIED,
            "swarm 'other-swarm'",
            "wrong_swarm",
        ),
        Case(
            "wrong fingerprint",
            stream(fingerprint="0" * 16),
            Code.FAILED_PRECONDITION,
            "another base model or LoRA config",
            "wrong_fingerprint",
        ),
        # kind and codec
        Case("unknown payload kind", stream(kind=7), invalid, "unknown payload kind 7", "bad_kind"),
        Case(
            "unspecified payload kind",
            stream(kind=0),
            invalid,
            "unknown payload kind 0",
            "bad_kind",
        ),
        Case(
            "STATE pushed",
            stream(kind=pb.PAYLOAD_KIND_STATE),
            invalid,
            "served by Pull, never pushed",
            "bad_kind",
        ),
        Case(
            "unknown codec", stream(codec="zstd"), invalid, "bad codec spec 'zstd'", "unknown_codec"
        ),
        Case(
            "codec not canonical",
            stream(codec="FP32"),
            invalid,
            "not in canonical form 'fp32'",
            "unknown_codec",
        ),
        # handshakes (refused in the Welcome; the RPC itself succeeds)
        Case(
            "wrong protocol version",
            lambda p: handshake(p, p.hello(node_id="h1", protocol_version=PROTOCOL_VERSION + 1)),
            Code.OK,
            f"protocol version {PROTOCOL_VERSION + 1} != {PROTOCOL_VERSION}",
            "handshake",
        ),
        Case(
            "handshake: wrong swarm",
            lambda p: handshake(p, p.hello(node_id="h2", swarm_id="other-swarm")),
            Code.OK,
            "swarm 'other-swarm' !=",
            "handshake",
        ),
        Case(
            "handshake: wrong fingerprint",
            lambda p: handshake(p, p.hello(node_id="h3", fingerprint="0" * 16)),
            Code.OK,
            "the swarm's recipe differs: --model is '?' at 'h3'",
            "handshake",
        ),
        Case(
            "handshake: empty node id",
            lambda p: handshake(p, p.hello(node_id="")),
            Code.OK,
            "empty node id",
            "handshake",
        ),
        Case(
            "handshake: D's own node id",
            lambda p: handshake(p, p.hello(node_id=p.node.node_id)),
            Code.OK,
            "is this node's own id",
            "handshake",
        ),
        # pulls
        Case(
            "pull without handshake",
            lambda p: pull(
                p,
                pb.PullRequest(node_id="stranger", swarm_id=p.swarm_id, kind=pb.PAYLOAD_KIND_STATE),
            ),
            Code.PERMISSION_DENIED,
            "needs a handshake first",
            "no_handshake",
        ),
        Case(
            "pull in a neighbour's name without its session",
            lambda p: pull(
                p,
                pb.PullRequest(
                    node_id=F_ID,
                    swarm_id=p.swarm_id,
                    kind=pb.PAYLOAD_KIND_STATE,
                    receiver_id=p.node.node_id,
                    session=b"x" * 16,
                ),
            ),
            Code.UNAUTHENTICATED,
            "without its session",
            "bad_session",
        ),
        Case(
            "pull of kind DELTA",
            lambda p: pull(p, p.pull_request(kind=pb.PAYLOAD_KIND_DELTA)),
            invalid,
            "pull serves STATE only",
            "bad_kind",
        ),
        Case(
            "pull of kind KEYFRAME (keyframes travel by Push)",
            lambda p: pull(p, p.pull_request(kind=pb.PAYLOAD_KIND_KEYFRAME)),
            invalid,
            "pull serves STATE only",
            "bad_kind",
        ),
        Case(
            "push in a neighbour's name without its session",
            stream(session=b"y" * 16),
            Code.UNAUTHENTICATED,
            "without its session",
            "bad_session",
        ),
        Case(
            "push meant for another node",
            stream(receiver_id="someone-else"),
            Code.UNAUTHENTICATED,
            "without its session",
            "bad_session",
        ),
        Case(
            "huge but finite values",
            payload(lambda p: with_value(p, 1e30)),
            invalid,
            "above the bound",
            "bad_values",
        ),
        Case(
            "handshake: a 10 kB node id",
            lambda p: handshake(p, p.hello(node_id="x" * 10_000)),
            Code.OK,
            "at most 64",
            "handshake",
        ),
        Case(
            "handshake: round 2^64 - 1",
            lambda p: handshake(p, p.hello(node_id="h5", round=2**64 - 1)),
            Code.OK,
            "out of range",
            "handshake",
        ),
        # not a refusal: a delta out of sequence asks for a keyframe and changes nothing
        Case("delta out of sequence", stream(seq=7), Code.OK, "send a keyframe", None),
    ]


CASES = _cases()
ROWS: list[tuple[str, str, str]] = []  # (case, status code, counter) as observed


# ---------------------------------------------------------------- D and F


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory, synthetic_jsonl: Path) -> Iterator[Probe]:
    yield from start_probe(tmp_path_factory.mktemp("bad-input"), synthetic_jsonl, [])


def start_probe(folder: Path, data: Path, extra: list[str]) -> Iterator[Probe]:
    """D (started with `extra` flags last) and F, F handshaken with D."""
    f_port, d_port, metrics_port = free_ports(3)
    f_address = f"{HOST}:{f_port}"
    fake = FakePeer(f_address)
    server = serve_fake_peer(fake, f_address)
    cluster = Cluster(folder, data)
    args = [*train_args(data), "--swarm-id", cluster.swarm_id, "--peers", f_address]
    args += ["--round-deadline", "600", "--rounds", "0", "--eval-every", "0"]
    args += ["--metrics-port", str(metrics_port), "--max-message-mib", str(MAX_MIB)]
    args += ["--chunk-kib", str(CHUNK_KIB), "--max-pushes-per-round", "1000"]  # no rate limit
    node = cluster.add("d", d_port, [*args, *extra])
    channel = grpc.insecure_channel(node.address)
    try:
        node.start()
        cluster.wait_until(
            "D to push round 1 to F and wait for F's",
            lambda: 1 in fake.pushed_rounds,
            START,
            [node],
        )
        status = fetch_status(node.address, RPC)
        assert (status.round, status.state) == (0, "exchanging"), status
        stub = pb_grpc.SwarmStub(channel)
        hello = fake.hello(cluster.swarm_id, status.fingerprint)
        welcome = stub.Handshake(hello, timeout=RPC)
        assert welcome.accepted, "D refused F's handshake"
        assert welcome.node.session == fake.session, "D's token for F changed"
        request = pb.PullRequest(
            node_id=F_ID,
            swarm_id=cluster.swarm_id,
            kind=pb.PAYLOAD_KIND_STATE,
            session=fake.session,
            receiver_id=node.node_id,
        )
        state = list(stub.Pull(request, timeout=RPC))
        schema = AdapterSchema(
            tuple(TensorSpec(t.name, tuple(t.shape), t.dtype) for t in state[0].header.tensors)
        )
        yield Probe(
            cluster,
            node,
            stub,
            fake,
            cluster.swarm_id,
            status.fingerprint,
            schema,
            f"http://{HOST}:{metrics_port}/metrics",
        )
    finally:
        channel.close()
        cluster.close()
        server.stop(grace=None)


def snapshot(probe: Probe) -> tuple[str, dict[str, int], dict[str, float]]:
    """D's state digest, Status `rejected` and metric counts, checking D is still frozen."""
    reply = fetch_status(probe.node.address, RPC, include_digest=True)
    assert (reply.round, reply.state) == (0, "exchanging"), "D left its round-1 wait"
    assert reply.state_digest, "no state digest"
    return reply.state_digest, dict(reply.rejected), rejected_metrics(probe.metrics_url)


def plus_one(counts: Mapping[str, float], counter: str | None) -> dict[str, float]:
    out = dict(counts)
    if counter is not None:
        out[counter] = out.get(counter, 0) + 1
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_counted_and_changes_nothing(probe: Probe, case: Case) -> None:
    digest, rejected, metrics = snapshot(probe)
    outcome = case.send(probe)
    ROWS.append((case.name, outcome.code.name, case.counter or "-"))
    assert (outcome.code, outcome.accepted) == (case.code, False), outcome
    assert case.reason in outcome.reason, outcome
    after_digest, after_rejected, after_metrics = snapshot(probe)
    assert after_rejected == plus_one(rejected, case.counter), "Status `rejected`"
    assert after_metrics == plus_one(metrics, case.counter), "declora_rejected_total"
    assert after_digest == digest, "a refused message changed D's state"


def test_valid_round_1_message_completes_the_round(probe: Probe) -> None:
    digest, rejected, metrics = snapshot(probe)
    outcome = push(probe, probe.stream())
    assert outcome == Outcome(Code.OK, "", True)
    probe.cluster.wait_until(
        "D to complete round 1 and push round 2",
        lambda: 2 in probe.fake.pushed_rounds,
        START,
        [probe.node],
    )
    reply = fetch_status(probe.node.address, RPC, include_digest=True)
    assert reply.round >= 1 and reply.state_digest != digest
    assert dict(reply.rejected) == rejected and rejected_metrics(probe.metrics_url) == metrics
    width = max(len(r[0]) for r in ROWS) if ROWS else 4
    print(f"\n{'case':<{width}}  {'status':<20}  counter")
    for name, code, counter in ROWS:
        print(f"{name:<{width}}  {code:<20}  {counter}")


# ---------------------------------------------------------------- Kill-and-Revive's messages


def kr_layout(schema: AdapterSchema) -> tuple[int, int]:
    """(LoRA modules, non-LoRA entries) of a Kill-and-Revive adapter of `schema`."""
    modules = sum(A_MARK in t.name for t in schema.tensors)
    return modules, sum(t.numel for t in schema.tensors if LORA_MARK not in t.name)


def _kr_cases() -> list[Case]:
    """A Kill-and-Revive D (with tracking): its masked messages, each refused."""
    invalid = Code.INVALID_ARGUMENT

    def every(p: Probe, magic: bytes = MAGIC) -> bytes:
        return pack_mask(np.ones(kr_layout(p.schema)[0], dtype=bool), magic)

    def none(p: Probe) -> bytes:
        return pack_mask(np.zeros(kr_layout(p.schema)[0], dtype=bool))

    def send(make: Callable[[Probe], bytes], **fields: int | str) -> Callable[[Probe], Outcome]:
        return lambda p: push(p, p.stream(make(p), **fields))

    def stray_bits(p: Probe) -> bytes:
        head = bytearray(every(p))
        head[-1] |= 0x80  # a bit past the last module (tiny-bert has 4)
        return bytes(head) + p.delta()

    def z_under_another_mask(p: Probe, magic: bytes = MAGIC, **fields: int) -> Outcome:
        z = none(p) + make_codec("fp32").encode(
            np.zeros(kr_layout(p.schema)[1], np.float32), np.random.default_rng(0)
        )
        return push(p, p.stream(every(p, magic) + p.delta() + z, tracker_bytes=len(z), **fields))

    keyframe = {"kind": pb.PAYLOAD_KIND_KEYFRAME}
    return [
        Case(
            "kill-revive: a delta without its mask",
            send(lambda p: p.delta()),
            invalid,
            "not a kill-revive delta",
            "bad_values",
        ),
        Case(
            "kill-revive: a mask for 5 modules",
            send(lambda p: pack_mask(np.ones(5, dtype=bool)) + p.delta()),
            invalid,
            "mask for 5 modules",
            "bad_values",
        ),
        Case(
            "kill-revive: mask bits past its modules",
            send(stray_bits),
            invalid,
            "bits beyond its modules",
            "bad_values",
        ),
        Case(
            "kill-revive: every value under a mask of none",
            send(lambda p: none(p) + p.delta()),
            invalid,
            "for a mask of",
            "bad_values",
        ),
        Case(
            "kill-revive: huge but finite values",
            send(lambda p: every(p) + with_value(p, 1e30)),
            invalid,
            "above the bound",
            "bad_values",
        ),
        Case(
            "kill-revive: a keyframe's header on a delta",
            send(lambda p: every(p, KEYFRAME) + p.delta()),
            invalid,
            "not a kill-revive delta",
            "bad_values",
        ),
        Case(
            "kill-revive: a delta's header on a keyframe",
            send(lambda p: every(p) + p.delta(), **keyframe),
            invalid,
            "not a kill-revive keyframe",
            "bad_values",
        ),
        Case(
            "kill-revive: a keyframe of too few values",
            send(lambda p: every(p, KEYFRAME) + other_length(p, p.n - 1), **keyframe),
            invalid,
            "values, expected",
            "bad_values",
        ),
        Case(
            "kill-revive: a z under another mask than its delta",
            z_under_another_mask,
            invalid,
            "under another mask",
            "bad_values",
        ),
        Case(
            "kill-revive: a z under another mask than its keyframe",
            lambda p: z_under_another_mask(p, KEYFRAME, kind=pb.PAYLOAD_KIND_KEYFRAME),
            invalid,
            "under another mask",
            "bad_values",
        ),
    ]


KR_CASES = _kr_cases()


@pytest.fixture(scope="module")
def kr_probe(tmp_path_factory: pytest.TempPathFactory, synthetic_jsonl: Path) -> Iterator[Probe]:
    extra = ["--method", "kill-revive", "--gradient-tracking"]
    yield from start_probe(tmp_path_factory.mktemp("bad-input-kr"), synthetic_jsonl, extra)


@pytest.mark.parametrize("case", KR_CASES, ids=[c.name for c in KR_CASES])
def test_kill_revive_bad_input_is_refused_counted_and_changes_nothing(
    kr_probe: Probe, case: Case
) -> None:
    test_bad_input_is_refused_counted_and_changes_nothing(kr_probe, case)


# ---------------------------------------------------------------- a bad state at catch-up


class AheadPeer(FakePeer):
    """A neighbour that claims round 5 and serves a state without any tensors."""

    def hello(self, swarm_id: str, fingerprint: str) -> pb.Hello:
        hello = super().hello(swarm_id, fingerprint)
        hello.round = 5
        self.swarm_id, self.fingerprint = swarm_id, fingerprint
        return hello

    def Pull(self, request: pb.PullRequest, context: grpc.ServicerContext) -> Iterator[pb.Chunk]:
        data = b"\0" * 64
        header = pb.PayloadHeader(
            sender_id=F_ID,
            swarm_id=self.swarm_id,
            fingerprint=self.fingerprint,
            round=5,
            kind=pb.PAYLOAD_KIND_STATE,
            codec="fp32",
            total_bytes=len(data),
            crc32=zlib.crc32(data),
        )
        yield from chunks(header, data, 1024)


def test_corrupt_state_at_catch_up_is_refused_and_the_node_goes_on(
    tmp_path: Path, synthetic_jsonl: Path
) -> None:
    f_port, d_port = free_ports(2)
    fake = AheadPeer(f"{HOST}:{f_port}")
    server = serve_fake_peer(fake, fake.address)
    cluster = Cluster(tmp_path, synthetic_jsonl)
    args = [*train_args(synthetic_jsonl), "--swarm-id", cluster.swarm_id, "--peers", fake.address]
    args += ["--round-deadline", "600", "--rounds", "0", "--eval-every", "0"]
    node = cluster.add("d", d_port, args)
    try:
        node.start()
        cluster.wait_until("D to push to F", lambda: fake.pushed_rounds, START, [node])
        assert "could not take a neighbour's state (tensor schema differs" in node.log()
        # D kept its own adapter, and F's claim of round 5 alone moves nothing (no
        # validated payload backs it): D's first push is for round 1.
        assert fake.pushed_rounds[0] == 1, fake.pushed_rounds
    finally:
        cluster.close()
        server.stop(grace=None)
