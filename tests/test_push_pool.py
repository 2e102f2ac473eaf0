"""The push stream pool in front of the push buffer: streams that send no header (or
drip part of one) from several networks filled all `--max-concurrent-streams` places
until the idle cut, again and again, and a live neighbour's push was refused ("64 Push
calls already in flight") round after round. Now a header must come within
`HEADER_SECONDS`, and a stream still waiting for it gives its place to a newer one
(`service.Pools.push`)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
from daemon_helpers import HOST, free_ports
from test_attacks import HostAlias
from test_daemon_parts import push_stream, settings

from declora.node.daemon import Daemon
from declora.node.daemon.daemon import Parts
from declora.node.daemon.service import SwarmService, pool_total
from declora.node.wire import WireError
from declora.proto import pb, pb_grpc

NETWORKS = ("127.1.0.2", "127.2.0.2", "127.3.0.2", "127.4.0.2")  # four /24s: 16 streams each


async def serve(name: str, data: Path, i: int, port: int) -> tuple[Daemon, Parts, SwarmService]:
    """A daemon's parts served by gRPC on 127.0.0.1:`port` (real sockets)."""
    address = f"{HOST}:{port}"
    s = settings(name, data, i, []).model_copy(update={"listen": address, "advertise": address})
    d = Daemon(s)
    p = d.build()
    service = SwarmService(p)
    assert await d.transport.start(service, pool_total(s.max_concurrent_streams)) == port
    return d, p, service


async def silent(stop: asyncio.Event) -> AsyncIterator[pb.Chunk]:
    """A push stream that sends nothing until `stop`."""
    await stop.wait()
    return
    yield  # an async generator


async def keep_streams_open(
    stub: pb_grpc.SwarmStub, n: int, stop: asyncio.Event
) -> Counter[grpc.StatusCode]:
    """The attack from one network: `n` header-less pushes open, each reopened as soon as
    it ends, until `stop`; how those that ended before were refused."""
    open_: set[asyncio.Future[pb.PushAck]] = set()
    ended: Counter[grpc.StatusCode] = Counter()
    while not stop.is_set():
        while len(open_) < n:
            open_.add(asyncio.ensure_future(stub.Push(silent(stop), timeout=60)))
        done, open_ = await asyncio.wait(open_, timeout=0.1, return_when="FIRST_COMPLETED")
        if not stop.is_set():
            ended.update(f.exception().code() for f in done)  # type: ignore[union-attr]
        await asyncio.sleep(0.02)
    await asyncio.gather(*open_, return_exceptions=True)
    return ended


def test_header_less_streams_from_four_networks_leave_room_for_a_neighbours_push(
    synthetic_jsonl: Path,
) -> None:
    port_a, port_b = free_ports(2)

    async def go() -> tuple[list[str], Counter[grpc.StatusCode], int, float]:
        (da, a, _), (db, b, service) = [
            await serve(n, synthetic_jsonl, i, p)
            for i, (n, p) in enumerate((("a", port_a), ("b", port_b)))
        ]
        relays = [HostAlias(b.settings.advertise, source) for source in NETWORKS]
        channels = [grpc.aio.insecure_channel(r.address) for r in relays]
        stop = asyncio.Event()
        pools, pool = service.pools, b.settings.max_concurrent_streams
        attacks: list[asyncio.Task[Counter[grpc.StatusCode]]] = []
        try:
            assert await a.handshaker.dial(b.settings.advertise) is not None
            share = pool // len(NETWORKS)
            assert share <= pools.per_host  # each network within its own share
            attacks = [
                asyncio.create_task(keep_streams_open(pb_grpc.SwarmStub(c), share, stop))
                for c in channels
            ]
            deadline = time.monotonic() + 30
            while pools.in_use.get("Push", 0) < pool:
                assert time.monotonic() < deadline, pools.in_use
                await asyncio.sleep(0.05)
            peer = a.peers.get("b")
            assert peer is not None
            answers, most, t0 = [], 0, time.monotonic()
            for r in (1, 2, 3):  # three rounds' pushes while the pool is kept full
                try:
                    ack = await a.peers.stub(peer).Push(push_stream(a, r, seq=r), timeout=10)
                    answers.append("accepted" if ack.accepted else ack.reason)
                except grpc.aio.AioRpcError as exc:
                    answers.append(f"{exc.code().name} {exc.details()}")
                most = max(most, pools.in_use.get("Push", 0), *pools.push_hosts.values())
                await asyncio.sleep(0.5)
            stop.set()
            ended = sum(await asyncio.gather(*attacks), Counter[grpc.StatusCode]())
            return answers, ended, most, time.monotonic() - t0
        finally:
            stop.set()
            await asyncio.gather(*attacks, return_exceptions=True)
            for c in channels:
                await c.close()
            for relay in relays:
                relay.close()
            for d in (da, db):
                await d.transport.stop(grace=0)

    answers, ended, most, seconds = asyncio.run(go())
    assert answers == ["accepted"] * 3, answers
    assert most <= 64  # the pool's size, and each network's share, still hold
    # the attackers' streams gave way to newer ones, or were cut for want of a header
    assert set(ended) <= {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
    print(f"\n3 pushes accepted in {seconds:.1f}s; the attackers' streams ended: {ended}")


# ---------------------------------------------------------------- the pool's rule


def test_a_full_pool_cuts_the_oldest_waiting_stream_of_the_busiest_network() -> None:
    from declora.node.daemon.service import Pools  # imported here: the test above runs on old code

    async def go() -> None:
        pools = Pools(push_streams=4, per_host=3)
        with ExitStack() as held:
            x1, x2, y1, z1 = (held.enter_context(pools.push(h)) for h in "xxyz")
            pools.header_came(z1)  # a stream past its header never gives way
            y2 = held.enter_context(pools.push("y"))  # x has 2 waiting, y 1: x's oldest goes
            assert [s.cut for s in (x1, x2, y1, z1, y2)] == [True, False, False, False, False]
            assert pools.in_use["Push"] == 4 and pools.push_hosts == {"x": 1, "y": 2, "z": 1}
            with pytest.raises(WireError, match="4 Push calls already in flight"):
                held.enter_context(pools.push("y"))  # y has the most waiting: none for it
            x3 = held.enter_context(pools.push("x"))  # y has 2, x 1: y's oldest goes
            assert y1.cut and not (x2.cut or y2.cut)
            held.enter_context(pools.push("z"))  # x has 2, y 1, z 0: x's oldest goes
            assert x2.cut and not x3.cut and pools.in_use["Push"] == 4
        assert pools.in_use["Push"] == 0 and pools.push_hosts == {} and pools.waiting == {}
        one = Pools(push_streams=4, per_host=1)
        full = pytest.raises(WireError, match="1 pushes from x already in flight")
        with one.push("x"), full, one.push("x"):
            pass

    asyncio.run(go())


@pytest.mark.parametrize("cut", [False, True])
def test_a_stream_without_a_header_is_cut_in_seconds(cut: bool) -> None:
    from declora.node.daemon.service import HeaderFirst, Pools

    async def go() -> WireError:
        pools = Pools(push_streams=1, per_host=1)
        stop = asyncio.Event()
        with pools.push("x") as slot:
            task = asyncio.ensure_future(anext(HeaderFirst(silent(stop), slot, pools, 0.2)))
            await asyncio.sleep(0.05)
            if cut:
                with pools.push("y"), pytest.raises(WireError) as exc:
                    await asyncio.wait_for(task, 0.1)
            else:
                with pytest.raises(WireError) as exc:
                    await asyncio.wait_for(task, 1.0)
        return exc.value

    got = asyncio.run(go())
    if cut:
        assert (got.code, got.counter) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited")
        assert "gave way to a newer one" in got.reason
    else:
        assert (got.code, got.counter) == (grpc.StatusCode.DEADLINE_EXCEEDED, "idle_stream")
        assert "idle for more than 0.2s before its header" in got.reason
