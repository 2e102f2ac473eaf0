"""Every RPC a node serves, fuzzed on an in-process daemon over real gRPC (redteam3).

`test_fuzz.py`'s live fuzzer sends Push, Handshake and Pull; this one covers every
method of every service the node serves (Swarm's six, grpc.health.v1 and reflection,
read from their descriptors, so a new RPC is fuzzed without an edit here), each with
random field values, mutated serialized messages (bit flips, cuts, random tails),
random bytes, compressed requests that inflate to far more than the message limit
(a gzip or deflate bomb: gRPC checks the size after decompressing), oversized and
numerous metadata entries, and unknown or very long method paths. Every answer must
carry a status other than UNKNOWN or INTERNAL (an unhandled error in the node),
nothing may be accepted, and afterwards the node still answers Status, keeps training
and has logged no traceback. Messages come from a seeded `random.Random`, so a
failure names a reproducible message.
"""

from __future__ import annotations

import collections
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from daemon_helpers import (
    HOST,
    InProcess,
    free_ports,
    node_settings,
    status_or_none,
    train_args,
    varint,
)
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc import StatusCode as Code
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from declora.proto import pb

START = 150.0  # seconds for the daemon to load its model and train a round
RPC = 5.0  # each fuzzed call's deadline
MESSAGES = 150  # fuzzed calls besides the bombs, metadata and paths below
# bytes a compressed request inflates to, 4 times its message limit (~1 MiB): gRPC
# stops inflating at the limit (a bare server's peak RSS stayed 36 MiB for a 256 MiB
# bomb), so a larger one checks nothing more and costs the test 0.4 s a call
BOMB = 4 << 20
SERVICES = [
    pb.DESCRIPTOR.services_by_name["Swarm"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
]
METHODS: list[MethodDescriptor] = [m for s in SERVICES for m in s.methods]
# Never UNKNOWN or INTERNAL (an exception in a handler)
ALLOWED = set(Code) - {Code.UNKNOWN, Code.INTERNAL}


def path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def random_value(rng: random.Random, field: FieldDescriptor) -> Any:
    """A value of `field`'s type, often at an edge."""
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return rng.choice(["", "n1", "x" * rng.choice([64, 65, 10_000]), "\n\x1b[31m", "é" * 9])
    if t == FieldDescriptor.TYPE_BYTES:
        return rng.randbytes(rng.choice([0, 1, 16, 32, 33, 4096]))
    if t == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return rng.choice([0.0, -1.0, 1e30, float("nan"), float("inf")])
    if t == FieldDescriptor.TYPE_ENUM:
        return rng.choice([0, 1, 2, 3, 99])
    signed = t in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    )
    wide = t in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    )
    bits = 64 if wide else 32
    if signed:
        return rng.choice([0, -1, 1, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1])
    return rng.choice([0, 1, 3, 7, 2**bits - 1, 2 ** (bits - 1)])


def random_message(rng: random.Random, descriptor: Descriptor, depth: int = 0) -> Message:
    """A message of `descriptor` with random fields set (nested ones to depth 2)."""
    message = GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if rng.random() < 0.4:
            continue
        repeated = field.is_repeated
        count = rng.choice([1, 2, 50]) if repeated else 1
        for _ in range(count):
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                if depth >= 2 or field.message_type.GetOptions().map_entry:
                    break
                value = random_message(rng, field.message_type, depth + 1)
                if repeated:
                    getattr(message, field.name).add().CopyFrom(value)
                else:
                    getattr(message, field.name).CopyFrom(value)
            elif repeated:
                getattr(message, field.name).append(random_value(rng, field))
            else:
                setattr(message, field.name, random_value(rng, field))
    return message


def mutate(rng: random.Random, data: bytes) -> bytes:
    """1-3 random edits of serialized bytes: flip a bit, cut, append random bytes."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randint(0, 2)
        if op == 0 and out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        elif op == 1:
            del out[rng.randint(0, len(out)) :]
        else:
            out += rng.randbytes(rng.randint(1, 64))
    return bytes(out)


def request_bytes(rng: random.Random, method: MethodDescriptor) -> bytes:
    """A random, mutated or garbage serialized request of `method`."""
    shape = rng.randint(0, 3)
    if shape == 3:
        return rng.randbytes(rng.randint(0, 512))
    data = random_message(rng, method.input_type).SerializeToString()
    return mutate(rng, data) if shape == 2 else data


def call(
    channel: grpc.Channel,
    method: MethodDescriptor,
    requests: list[bytes],
    metadata: tuple[tuple[str, str], ...] = (),
    compression: grpc.Compression | None = None,
    at: str = "",
) -> Code:
    """Call `method` (or the path `at`) with raw request bytes; the status it ends with."""
    target = at or path(method)
    same: Callable[[bytes], bytes] = lambda b: b  # noqa: E731
    kwargs: dict[str, Any] = {"timeout": RPC, "metadata": metadata, "compression": compression}
    try:
        if method.client_streaming and method.server_streaming:
            stream = channel.stream_stream(target, same, same)
            list(stream(iter(requests), **kwargs))
        elif method.client_streaming:
            channel.stream_unary(target, same, same)(iter(requests), **kwargs)
        elif method.server_streaming:
            answers = channel.unary_stream(target, same, same)(requests[0], **kwargs)
            if method.name != "Watch":
                list(answers)
            elif next(answers, None) is not None:  # a Watch answers until it is ended
                answers.cancel()  # the node ends it as at its deadline, at once
                return Code.OK
        else:
            channel.unary_unary(target, same, same)(requests[0], **kwargs)
    except grpc.RpcError as exc:
        return exc.code()
    return Code.OK


def fuzzed_calls(rng: random.Random) -> Iterator[tuple[str, Callable[[grpc.Channel], Code]]]:
    """(label, call) for every fuzzed message, in a reproducible order."""
    for i in range(MESSAGES):
        method = METHODS[i % len(METHODS)]
        n = rng.randint(1, 4) if method.client_streaming else 1
        requests = [request_bytes(rng, method) for _ in range(n)]
        yield f"#{i} {method.name}", lambda ch, m=method, r=requests: call(ch, m, r)
    bomb = b"\0" * BOMB  # a field 1 (string/bytes/message) of BOMB bytes: ~16 KiB gzipped
    bomb_message = b"\x0a" + varint(BOMB) + bomb
    for method in METHODS:
        for kind in (grpc.Compression.Gzip, grpc.Compression.Deflate):
            yield (
                f"{kind.name} bomb {method.name}",
                lambda ch, m=method, k=kind: call(ch, m, [bomb_message], compression=k),
            )
    status = METHODS[[m.name for m in METHODS].index("Status")]
    empty = [b""]
    many = tuple((f"x-fuzz-{i}", "v") for i in range(2000))
    yield "2000 metadata entries", lambda ch: call(ch, status, empty, many)
    yield "a 1 MB metadata value", lambda ch: call(ch, status, empty, (("x-fuzz", "v" * 2**20),))
    yield "a 64 KiB path", lambda ch: call(ch, status, empty, at="/" + "a" * 65536)
    yield "unknown method", lambda ch: call(ch, status, empty, at="/declora.v1.Swarm/Nope")


@pytest.mark.timeout(600)
def test_every_rpc_fuzzed_on_an_in_process_node(
    synthetic_jsonl: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (port,) = free_ports(1)
    address = f"{HOST}:{port}"
    run = ["--rounds", "0", "--eval-every", "0", "--local-steps", "1", "--min-peers", "0"]
    swarm = InProcess()
    try:
        node = swarm.start(
            node_settings(
                [*train_args(synthetic_jsonl), *run],
                node_id="fuzzed",
                swarm_id="redteam3",
                listen=address,
                checkpoint_dir=tmp_path / "n",
            )
        )
        deadline = time.monotonic() + START
        while (before := status_or_none(address)) is None or before.round < 1:
            assert swarm.running() and time.monotonic() < deadline, node.log()[-3000:]
            time.sleep(0.2)
        codes: collections.Counter[str] = collections.Counter()
        with grpc.insecure_channel(
            address, options=[("grpc.max_send_message_length", -1)]
        ) as channel:
            for label, send in fuzzed_calls(random.Random(20261206)):
                code = send(channel)
                codes[f"{label.split(' ', 1)[-1]} {code.name}"] += 1
                assert code in ALLOWED, f"{label} answered {code.name}\n{node.log()[-3000:]}"
                assert swarm.running(), f"the node stopped after {label}\n{node.log()[-3000:]}"
        print("\n" + "\n".join(f"  {k:<48} {v}" for k, v in sorted(codes.items())))
        after = status_or_none(address)
        assert after is not None and after.round > before.round, node.log()[-3000:]
        assert not after.neighbors, after  # no fuzzed Hello became a neighbour
        deadline = time.monotonic() + START
        while (later := status_or_none(address)) is None or later.round <= after.round:
            assert swarm.running() and time.monotonic() < deadline, node.log()[-3000:]
            time.sleep(0.2)
    finally:
        exits = swarm.close()
    assert exits == [0], node.log()[-3000:]
    assert "Traceback" not in node.log(), node.log()[-5000:]
    # gRPC logs an exception a handler raised ('Unexpected [...] raised by servicer
    # method', ERROR, with a traceback): a stranger could fill the node's log with them
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("grpc")]
    errors = [m for m in logged if "Unexpected" in m]
    assert not errors, "\n".join(errors[:5])
