"""Push streams that trickle (a header announcing the largest message, then a byte now
and then) hold only the bytes they sent, and only until their `Pace` runs out, so a
neighbour's push still fits (audit: four such streams from two member ids held
the whole shared buffer, and every honest push was refused)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from daemon_helpers import HOST, free_ports
from test_daemon_parts import hello, pair, push_stream, settings

from declora.node.adapter import AdapterSchema, TensorSpec
from declora.node.daemon import Daemon, inbox
from declora.node.daemon.daemon import Parts
from declora.node.daemon.service import SwarmService, pool_total
from declora.node.wire import Pace, WireError, chunks, make_header, read_stream
from declora.proto import pb, pb_grpc

ATTACKERS = ("m1", "m2")


def trickle(b: Parts, sender: str, stop: asyncio.Event, every: float = 0.05):  # type: ignore[no-untyped-def]
    """A push from member `sender` to b announcing b's largest message, then a byte
    every `every` s until `stop`."""
    peer = b.peers.get(sender)
    assert peer is not None
    header = make_header(
        sender_id=sender, swarm_id="parts", fingerprint=b.lm.fingerprint, round=1,
        sender_degree=1, kind=pb.PAYLOAD_KIND_DELTA, codec="fp32", seq=1, data=b"",
        schema=b.lm.schema, session=peer.token_in, receiver_id="b",
    )  # fmt: skip
    header.total_bytes = b.inbox.max_bytes

    async def stream():  # type: ignore[no-untyped-def]
        yield pb.Chunk(header=header)
        while not stop.is_set():
            yield pb.Chunk(data=b"\0")
            await asyncio.sleep(every)

    return stream()


async def start_trickles(b: Parts, stop: asyncio.Event) -> list[asyncio.Task[pb.PushAck]]:
    """Two streams from each attacker id (its most), once each has sent a byte."""
    for mid in ATTACKERS:
        member = hello(node_id=mid, swarm_id="parts", listen_address=f"127.0.0.1:{len(mid)}")
        assert b.peers.admit(member) is not None
    tasks = [
        asyncio.create_task(b.inbox.receive(trickle(b, mid, stop)))
        for mid in ATTACKERS
        for _ in range(2)
    ]
    while b.inbox.budget.used < len(tasks):
        await asyncio.sleep(0.01)
    assert sum(b.inbox.open_streams.values()) == len(tasks)
    return tasks


def test_trickling_streams_do_not_crowd_out_an_honest_push(synthetic_jsonl: Path) -> None:
    _, (a, b) = pair(synthetic_jsonl)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        stop = asyncio.Event()
        tasks = await start_trickles(b, stop)
        try:
            # the four announced b's whole buffer (4 largest messages)...
            ack = await b.inbox.receive(push_stream(a, 1))
            assert ack.accepted, ack
            assert "a" in b.inbox.arrived(1)
            # ...but hold only the bytes they sent
            assert b.inbox.budget.used < 1024 < b.inbox.max_bytes
        finally:
            stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert b.inbox.budget.used == 0 and b.inbox.open_streams == {}

    asyncio.run(go())


def test_a_trickle_is_cut_when_its_pace_runs_out(
    synthetic_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes keep arriving, so the idle cut never fires; the pace's deadline does."""
    monkeypatch.setattr(inbox, "PUSH_PACE", Pace(min_seconds=0.5, bytes_per_second=1e12))
    _, (a, b) = pair(synthetic_jsonl, stream_idle_seconds=0.3)  # the pace: max(0.5, 0.3) s

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        stop = asyncio.Event()
        tasks = await start_trickles(b, stop)
        try:  # a hang guard far beyond any load: the streams end at their cut
            results = await asyncio.wait_for(
                asyncio.gather(*tasks, return_exceptions=True), timeout=120
            )
        finally:
            stop.set()
        for exc in results:
            assert isinstance(exc, WireError), exc
            assert (exc.code, exc.counter) == (grpc.StatusCode.DEADLINE_EXCEEDED, "slow_stream")
            assert "too slow" in exc.reason
        assert b.inbox.budget.used == 0 and b.inbox.open_streams == {}
        assert (await b.inbox.receive(push_stream(a, 1))).accepted  # and a's push is taken

    asyncio.run(go())


def test_pace_allows_the_announced_size_at_the_minimum_rate() -> None:
    schema = AdapterSchema((TensorSpec("w", (4,), "float32"),))
    data = bytes(16)
    header = make_header(
        sender_id="s", swarm_id="w", fingerprint="f", round=1, sender_degree=1,
        kind=pb.PAYLOAD_KIND_DELTA, codec="fp32", seq=1, data=data, schema=schema,
    )  # fmt: skip

    async def read(every: float, pace: Pace) -> object:
        async def stream():  # type: ignore[no-untyped-def]
            for c in chunks(header, data, 4):
                yield c
                await asyncio.sleep(every)

        try:
            return await read_stream(
                stream(), swarm_id="w", fingerprint="f", schema=schema, max_bytes=64,
                idle_seconds=0.25, pace=pace,
            )  # fmt: skip
        except WireError as exc:
            return exc.counter

    # 16 bytes in 4 chunks 0.1 s apart take 0.4-0.5 s, never idle for the 0.25 s idle cut:
    # within 16 bytes at 20 bytes/s (0.8 s)...
    assert not isinstance(asyncio.run(read(0.1, Pace(0.3, 20.0))), str)
    # ...not within 0.3 s (16 bytes at 100 bytes/s: 0.16 s, less than the floor)
    assert asyncio.run(read(0.1, Pace(0.3, 100.0))) == "slow_stream"
    # a silent stream is still cut as idle first
    assert asyncio.run(read(2.0, Pace(0.5, 100.0))) == "idle_stream"


# ---------------------------------------------------------------- one host's share


async def serve_real(name: str, data: Path, i: int, port: int) -> tuple[Daemon, Parts]:
    """A daemon's parts served by gRPC on 127.0.0.1:`port` (real sockets)."""
    address = f"{HOST}:{port}"
    s = settings(name, data, i, []).model_copy(update={"listen": address, "advertise": address})
    d = Daemon(s)
    p = d.build()
    assert await d.transport.start(SwarmService(p), pool_total(s.max_concurrent_streams)) == port
    return d, p


def stalled_push(b: Parts, hello: pb.Hello, session: bytes, sent: int, release: asyncio.Event):  # type: ignore[no-untyped-def]
    """A member's push announcing b's largest message: `sent` bytes fast, then silence."""
    header = make_header(
        sender_id=hello.node_id, swarm_id="parts", fingerprint=b.lm.fingerprint, round=1,
        sender_degree=1, kind=pb.PAYLOAD_KIND_DELTA, codec="fp32", seq=1, data=b"",
        schema=b.lm.schema, session=session, receiver_id="b",
    )  # fmt: skip
    header.total_bytes = b.inbox.max_bytes

    async def stream():  # type: ignore[no-untyped-def]
        yield pb.Chunk(header=header)
        for at in range(0, sent, 1 << 16):
            yield pb.Chunk(data=bytes(min(1 << 16, sent - at)))
        await release.wait()

    return stream()


def test_one_host_cannot_crowd_out_a_neighbours_push_over_grpc(synthetic_jsonl: Path) -> None:
    """An attacker on 127.0.0.2 joins as 4 member ids, each opens its 2 pushes, sends
    half a largest message on each (all 8: the whole buffer) and stalls. Before the
    per-sender and per-host shares b refused its honest neighbour's push as `busy`;
    now the attacker holds at most HOST_SHARE messages and the push is taken."""
    from test_attacks import ATTACKER_HOST, HostAlias

    port_a, port_b = free_ports(2)

    async def go() -> tuple[pb.PushAck, list[object], int, int]:
        (da, a), (db, b) = [
            await serve_real(n, synthetic_jsonl, i, p)
            for i, (n, p) in enumerate((("a", port_a), ("b", port_b)))
        ]
        relay = HostAlias(b.settings.advertise)
        release = asyncio.Event()
        channel = grpc.aio.insecure_channel(relay.address)
        try:
            assert await a.handshaker.dial(b.settings.advertise) is not None
            stub = pb_grpc.SwarmStub(channel)
            half = b.inbox.max_bytes // 2
            calls = []
            for k in range(4):
                hello = a.handshaker.hello(receiver="b", session=bytes(16))
                hello.node_id, hello.listen_address = f"m{k}", f"{ATTACKER_HOST}:{2000 + k}"
                welcome = await stub.Handshake(hello, timeout=10)
                assert welcome.accepted, welcome.reason
                session = welcome.node.session
                for _ in range(2):
                    stream = stalled_push(b, hello, session, half, release)
                    calls.append(asyncio.ensure_future(stub.Push(stream, timeout=30)))
            # every attack stream has either been refused or buffered all it sent
            deadline = time.monotonic() + 30
            while b.inbox.budget.used + half * sum(c.done() for c in calls) < half * len(calls):
                assert time.monotonic() < deadline, (b.inbox.budget.used, calls)
                await asyncio.sleep(0.05)
            held = b.inbox.budget.used
            peer = a.peers.get("b")
            assert peer is not None
            try:
                ack = await a.peers.stub(peer).Push(push_stream(a, 1), timeout=10)
            except grpc.aio.AioRpcError as exc:
                ack = pb.PushAck(accepted=False, reason=f"{exc.code().name} {exc.details()}")
            release.set()
            results = await asyncio.gather(*calls, return_exceptions=True)
            return ack, results, held, b.inbox.max_bytes
        finally:
            release.set()
            await channel.close()
            relay.close()
            for d in (da, db):
                await d.transport.stop(grace=0)

    ack, results, held, largest = asyncio.run(go())
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert ack.accepted, f"{ack.reason} (the attacker held {held} bytes)"
    # each of its 4 live ids holds at most its own reservation (one largest message);
    # the honest neighbour's push went into its own
    assert held <= 4 * largest
    busy = [r for r in refused if r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED]
    print(f"\nattacker held {held} of {4 * largest} bytes; {len(busy)} of 8 streams refused")


def test_shares_per_sender_and_host_never_refuse_a_lone_largest_message() -> None:
    from declora.node.daemon.pushbuffer import BUFFERED_MESSAGES, HOST_SHARE, PushBuffer

    largest = 100
    buf = PushBuffer(largest)
    alone = buf.stream("10.0.0.1")
    alone.sender = "honest"
    alone.take(largest)  # the largest message, with the buffer otherwise idle
    alone.give(largest)
    assert buf.used == 0 and buf.by_sender == {} and buf.by_host == {}

    first, second = buf.stream("10.0.0.2"), buf.stream("10.0.0.2")
    first.sender = second.sender = "m1"
    first.take(60)
    with pytest.raises(WireError) as info:  # one id: one largest message at most
        second.take(50)
    assert info.value.counter == "rate_limited"
    others = [buf.stream("10.0.0.2") for _ in range(3)]
    for k, s in enumerate(others):
        s.sender = f"m{k + 2}"
    others[0].take(largest)
    with pytest.raises(WireError):  # one host: HOST_SHARE largest messages at most
        others[1].take(HOST_SHARE * largest - 160 + 1)
    other_host = buf.stream("10.0.1.3")  # another /24 (10.0.0.3: the same network)
    other_host.sender = "honest"
    other_host.take(largest)  # the rest stays free for other hosts
    assert buf.used == 160 + largest <= BUFFERED_MESSAGES * largest
    for s in (first, second, *others, other_host):
        s.give(s.used)
    assert buf.used == 0 and buf.by_sender == {} and buf.by_host == {}
