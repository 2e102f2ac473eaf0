"""The push stream pool in front of the push buffer: streams that send no header (or
drip part of one) from several networks filled all `--max-concurrent-streams` places
until the idle cut, again and again, and a live neighbour's push was refused ("64 Push
calls already in flight") round after round. Now a header must come within
`service.header_seconds` (longer for an adapter whose header is large), a stream still
waiting for it gives its place to a newer one, one from a live neighbour's IP never
does, and a network at its share cuts its own oldest waiting stream
(`service.Pools.push`)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from daemon_helpers import HOST, free_ports
from test_attacks import HostAlias
from test_daemon_parts import push_stream, settings

from declora.node.adapter import AdapterSchema, TensorSpec
from declora.node.daemon import Daemon
from declora.node.daemon.daemon import Parts
from declora.node.daemon.service import HeaderFirst, Pools, SwarmService, pool_total
from declora.node.daemon.state import Identity
from declora.node.wire import WireError, tensor_meta
from declora.proto import pb, pb_grpc

NETWORKS = ("127.1.0.2", "127.2.0.2", "127.3.0.2", "127.4.0.2")  # four /24s: 16 streams each


class Handlers:
    """Push handlers running (`now`), counted around `service.Push`."""

    def __init__(self, service: SwarmService) -> None:
        self.now = 0
        push = service.Push

        async def counted(request_iterator: AsyncIterator[pb.Chunk], context: object) -> object:
            self.now += 1
            try:
                return await push(request_iterator, context)  # type: ignore[arg-type]
            finally:
                self.now -= 1

        service.Push = counted  # type: ignore[assignment,method-assign]


async def serve(
    name: str, data: Path, i: int, port: int
) -> tuple[Daemon, Parts, SwarmService, Handlers]:
    """A daemon's parts served by gRPC on 127.0.0.1:`port` (real sockets)."""
    address = f"{HOST}:{port}"
    s = settings(name, data, i, []).model_copy(update={"listen": address, "advertise": address})
    d = Daemon(s)
    p = d.build()
    service = SwarmService(p)
    handlers = Handlers(service)
    assert await d.transport.start(service, pool_total(s.max_concurrent_streams)) == port
    return d, p, service, handlers


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

    async def go() -> tuple[list[str], Counter[grpc.StatusCode], tuple[object, ...], float]:
        (da, a, _, _), (db, b, service, handlers) = [
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
            # a's pushes get kept places: it is live at HOST (its Hello's host)...
            assert (service.allowance(HOST), service.allowance(NETWORKS[0])) == (2, 0)
            known = b.peers.get("a")
            assert known is not None and known.host == HOST
            known.host = "10.0.0.7"  # ...or wherever its last Hello came from...
            assert (service.allowance("10.0.0.7"), service.allowance(HOST)) == (2, 0)
            known.host = ""  # ...else its address's IP
            assert service.allowance(HOST) == 2
            known.host = HOST
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
            answers, t0 = [], time.monotonic()
            for r in (1, 2, 3):  # three rounds' pushes while the pool is kept full
                try:
                    ack = await a.peers.stub(peer).Push(push_stream(a, r, seq=r), timeout=10)
                    answers.append("accepted" if ack.accepted else ack.reason)
                except grpc.aio.AioRpcError as exc:
                    answers.append(f"{exc.code().name} {exc.details()}")
                await asyncio.sleep(0.5)
            stop.set()
            ended = sum(await asyncio.gather(*attacks), Counter[grpc.StatusCode]())
            seconds = time.monotonic() - t0
            deadline = time.monotonic() + 10
            while handlers.now and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            # every handler ended, and so did every place it held, cut or not
            left = (handlers.now, pools.in_use["Push"], pools.push_hosts, pools.kept, pools.waiting)
            return answers, ended, left, seconds
        finally:
            stop.set()
            await asyncio.gather(*attacks, return_exceptions=True)
            for c in channels:
                await c.close()
            for relay in relays:
                relay.close()
            for d in (da, db):
                await d.transport.stop(grace=0)

    answers, ended, left, seconds = asyncio.run(go())
    assert answers == ["accepted"] * 3, answers
    assert left == (0, 0, {}, {}, {}), left
    # the attackers' streams gave way to newer ones, or were cut for want of a header
    assert set(ended) <= {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
    print(f"\n3 pushes accepted in {seconds:.1f}s; the attackers' streams ended: {ended}")


# ---------------------------------------------------------------- the pool's rule


def test_a_full_pool_cuts_the_oldest_waiting_stream_of_the_busiest_network() -> None:
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
        with one.push("x") as x, full:  # its header came: nothing of x's to cut
            one.header_came(x)
            with one.push("x"):
                pass

    asyncio.run(go())


@pytest.mark.parametrize("cut", [False, True])
def test_a_stream_without_a_header_is_cut_in_seconds(cut: bool) -> None:
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


# ---------------------------------------------------------------- a network at its cap


def test_a_network_at_its_cap_cuts_its_own_oldest_waiting_stream() -> None:
    """Header-less streams filling a neighbour's own /24 (or /64) no longer keep its push
    out: a newcomer from that network cuts the network's oldest waiting stream."""

    async def go() -> None:
        pools = Pools(push_streams=64, per_host=16)
        with ExitStack() as held:
            attack = [held.enter_context(pools.push("10.0.0.0/24")) for _ in range(16)]
            honest = held.enter_context(pools.push("10.0.0.0/24"))  # 10.0.0.7's push
            assert [s.cut for s in attack] == [True] + [False] * 15 and not honest.cut
            assert pools.push_hosts == {"10.0.0.0/24": 16} and pools.in_use["Push"] == 16
            for s in (honest, *attack[1:]):
                pools.header_came(s)  # 16 past their header: none of them gives way
            with pytest.raises(WireError, match=r"16 pushes from 10\.0\.0\.0/24 already"):
                held.enter_context(pools.push("10.0.0.0/24"))
        assert pools.in_use["Push"] == 0 and pools.push_hosts == {} and pools.waiting == {}

    asyncio.run(go())


# ---------------------------------------------------------------- live neighbours' places


async def header_after(delay: float, stop: asyncio.Event | None = None) -> AsyncIterator[str]:
    if stop is not None:
        await stop.wait()
    await asyncio.sleep(delay)
    yield "header"


CHURN = 200  # opens while the live neighbour's header is held back: 3 pools' worth


def test_a_live_neighbours_waiting_stream_is_never_cut_by_churn() -> None:
    """One header-less stream from each of 66 /64s (one /56), each reopened at once:
    every open cuts a waiting stream. A stream from a live neighbour's IP
    (`allowance`), opened into the full pool, whose header comes only after `CHURN`
    more opens (counted, not timed: a slow machine churns as much) is not among them:
    a pool that cut the oldest waiting stream would have cut it at the 64th."""

    async def push(pools: Pools, host: str, allowance: int, stream: AsyncIterator[str]) -> str:
        try:
            with pools.push(host, host, allowance) as slot:
                # the header's time limit is no part of this test: it never runs out
                return str(await anext(HeaderFirst(stream, slot, pools, 600.0)))  # type: ignore[arg-type]
        except WireError as exc:
            return exc.counter

    async def go() -> tuple[str, Counter[str]]:
        pools, stop, held = Pools(push_streams=64, per_host=16), asyncio.Event(), asyncio.Event()
        nets = [f"2001:db8:0:{i:x}::/64" for i in range(66)]
        attack = [
            asyncio.ensure_future(push(pools, n, 0, header_after(0, stop))) for n in nets[:64]
        ]
        honest = asyncio.ensure_future(push(pools, "10.0.0.7", 2, header_after(0, held)))
        for opens in range(CHURN):
            await asyncio.sleep(0)  # each stream waits for its header before the next
            assert not honest.done(), (opens, honest.result())
            attack.append(
                asyncio.ensure_future(push(pools, nets[opens % 66], 0, header_after(0, stop)))
            )
        held.set()
        got = await honest
        stop.set()
        ended = Counter(await asyncio.gather(*attack))
        assert pools.in_use["Push"] == 0 and not (pools.kept or pools.push_hosts or pools.waiting)
        return got, ended

    got, ended = asyncio.run(go())
    assert got == "header", got
    assert ended["rate_limited"] == CHURN + 1  # every open cut one (the honest one's too)


def test_a_live_neighbours_ip_holds_its_allowance_past_its_networks_cap() -> None:
    async def go() -> None:
        pools = Pools(push_streams=4, per_host=2)
        with ExitStack() as held:
            x1, x2 = (held.enter_context(pools.push("net", "x", 0)) for _ in range(2))
            n1, n2 = (held.enter_context(pools.push("net", "n", 2)) for _ in range(2))
            assert not (x1.cut or x2.cut) and n1.kept and n2.kept  # past the cap of 2
            assert pools.kept == {"n": 2} and pools.push_hosts == {"net": 2}
            n3 = held.enter_context(pools.push("net", "n", 2))  # beyond its allowance:
            assert not n3.kept and x1.cut  # a stream of its network, cutting x's oldest
            y = held.enter_context(pools.push("other", "y", 0))  # the pool is full: ...
            assert x2.cut and not (n1.cut or n2.cut or n3.cut)  # ...a waiting one gives way
            m = held.enter_context(pools.push("net", "m", 2))  # kept, into a full pool:
            assert m.kept and n3.cut and not y.cut  # the oldest waiting (a tie) gives way
            pools.header_came(y)
            with pytest.raises(WireError, match="4 Push calls already in flight"):
                held.enter_context(pools.push("net", "m", 2))  # none waiting: refused
            assert (pools.in_use["Push"], pools.kept) == (4, {"n": 2, "m": 1})
        assert pools.in_use["Push"] == 0 and pools.kept == {} and pools.push_hosts == {}

    asyncio.run(go())


# ---------------------------------------------------------------- the header's time


def big_identity(layers: int) -> Identity:
    """This node's identity with an all-linear LoRA of `layers` layers (80: a 70B model)."""
    mods = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    tensors = tuple(
        TensorSpec(
            f"base_model.model.model.layers.{i}.{'self_attn' if m[0] in 'qkvo' else 'mlp'}"
            f".{m}.lora_{ab}.weight",
            (16, 8192),
        )
        for i in range(layers)
        for m in mods
        for ab in "AB"
    )
    return Identity("r" * 64, "s" * 32, "f" * 64, AdapterSchema(tensors), "int8")


def test_the_header_time_follows_the_adapters_header_size() -> None:
    from declora.node.daemon.inbox import header_bytes
    from declora.node.daemon.service import header_seconds

    tiny, big = header_bytes(big_identity(1)), header_bytes(big_identity(80))
    assert 89_000 < big < 100_000  # 1120 TensorMeta
    assert header_seconds(tiny, 10.0) == 3.0  # HEADER_SECONDS
    assert header_seconds(big, 10.0) == 2 * big / (32 * 1024)  # twice its time at PUSH_PACE
    assert header_seconds(big, 4.0) == 4.0  # never past --stream-idle-seconds
    s = SimpleNamespace(max_concurrent_streams=64, max_neighbors=8, stream_idle_seconds=10.0)
    me, transport = big_identity(80), SimpleNamespace()  # the service tells the transport
    parts = SimpleNamespace(
        settings=s,
        inbox=SimpleNamespace(me=me),
        handshaker=SimpleNamespace(transport=transport),
        counters=SimpleNamespace(count=lambda reason: None),  # the interceptor's refusals
    )
    assert SwarmService(parts).header_seconds > 5.4  # type: ignore[arg-type]


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rate: float) -> None:
    """`reader` to `writer`, at `rate` bytes a second (0: at once)."""
    try:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
            if rate:
                await asyncio.sleep(len(data) / rate)
    finally:
        writer.close()


def test_a_large_header_at_the_slowest_pace_comes_in_time() -> None:
    """A header of 100 all-linear layers' tensors (~112 KB, 3.4 s at 32 KiB/s) over a
    link at PUSH_PACE's rate reaches the handler within its time (was cut at 3 s)."""
    from declora.node.daemon.inbox import header_bytes
    from declora.node.daemon.service import header_seconds

    me = big_identity(100)

    class Receiver(pb_grpc.SwarmServicer):
        def __init__(self) -> None:
            self.pools = Pools(push_streams=4, per_host=4)
            self.seconds = header_seconds(header_bytes(me), 10.0)

        async def Push(self, it: AsyncIterator[pb.Chunk], context: object) -> pb.PushAck:
            try:
                with self.pools.push("10.0.0.0/24") as slot:
                    first = await anext(HeaderFirst(it, slot, self.pools, self.seconds))
                    return pb.PushAck(accepted=len(first.header.tensors) == 1400)
            except WireError as exc:
                return pb.PushAck(accepted=False, reason=exc.reason)

    async def go() -> pb.PushAck:
        server = grpc.aio.server()
        pb_grpc.add_SwarmServicer_to_server(Receiver(), server)
        port = server.add_insecure_port(f"{HOST}:0")
        await server.start()

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            ur, uw = await asyncio.open_connection(HOST, port)
            await asyncio.gather(relay(r, uw, 32 * 1024), relay(ur, w, 0))

        slow = await asyncio.start_server(handle, HOST, 0)
        header = pb.PayloadHeader(sender_id="n" * 64, tensors=tensor_meta(me.schema))
        try:
            async with grpc.aio.insecure_channel(
                f"{HOST}:{slow.sockets[0].getsockname()[1]}"
            ) as channel:
                stub = pb_grpc.SwarmStub(channel)
                return await stub.Push(iter([pb.Chunk(header=header)]), timeout=30)
        finally:
            slow.close()
            await server.stop(0)

    t0 = time.monotonic()
    ack = asyncio.run(go())
    assert ack.accepted, ack.reason
    assert time.monotonic() - t0 > 3.0  # slower than the old fixed limit
