"""What peers send cannot keep a live neighbour's pushes out, exhaust an honest
neighbour's push allowance, or get an honest newcomer released mid-upload (audit of
the push buffer and the limits, /tmp/audit_peer2):

1. four member ids on two networks, each pushing all but 40 bytes of the largest
   message and stalling, filled the shared buffer: the honest neighbour's pushes were
   refused `busy` for as long as they kept it up. A live neighbour now pushes into
   its own reservation.
2. a neighbour whose rounds diverged from this node's kept pushing finished rounds;
   each was counted under the current round, and it hit "more than 6 pushes for round
   N". Stale pushes are now refused from the header without counting.
3. a newcomer whose first keyframe takes longer than the silence limit was silent by
   `PeerTable.silent` while its bytes arrived. Bytes at the push pace now count as
   activity; a trickle does not.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from test_daemon_parts import pair, push_stream
from test_push_budget import serve_real, stalled_push

from declora.node.daemon import inbox
from declora.node.daemon.pushbuffer import BUFFERED_MESSAGES, PushBuffer
from declora.node.wire import Pace, WireError, chunks, make_header
from declora.proto import pb, pb_grpc


def test_proven_neighbour_pushes_while_two_networks_fill_the_pool(synthetic_jsonl: Path) -> None:
    """The audit's attack over gRPC: 127.0.0.2 and 127.0.0.3 (two hosts, as two /24s
    would be), two member ids each, one push per id sending all but 40 bytes of b's
    largest message, then stalling. The pool is full (each id and host within its
    share); a's push is taken from its reservation. Before, it was refused `busy`."""
    from daemon_helpers import free_ports
    from test_attacks import HostAlias

    port_a, port_b = free_ports(2)

    async def go() -> tuple[pb.PushAck, int, int, PushBuffer]:
        (da, a), (db, b) = [
            await serve_real(n, synthetic_jsonl, i, p)
            for i, (n, p) in enumerate((("a", port_a), ("b", port_b)))
        ]
        relays = [HostAlias(b.settings.advertise, f"127.0.0.{k}") for k in (2, 3)]
        channels = [grpc.aio.insecure_channel(r.address) for r in relays]
        release = asyncio.Event()
        calls: list[asyncio.Future[pb.PushAck]] = []
        try:
            assert await a.handshaker.dial(b.settings.advertise) is not None
            peer = a.peers.get("b")
            assert peer is not None
            # a delivered once: it is proven at b
            assert (await a.peers.stub(peer).Push(push_stream(a, 1), timeout=10)).accepted
            largest = b.inbox.max_bytes
            for k in range(4):
                stub = pb_grpc.SwarmStub(channels[k % 2])
                hello = a.handshaker.hello(receiver="b", session=bytes(16))
                hello.node_id, hello.listen_address = f"m{k}", f"127.0.0.{2 + k % 2}:{2000 + k}"
                welcome = await stub.Handshake(hello, timeout=10)
                assert welcome.accepted, welcome.reason
                stream = stalled_push(b, hello, welcome.node.session, largest - 40, release)
                calls.append(asyncio.ensure_future(stub.Push(stream, timeout=60)))
            deadline = time.monotonic() + 60
            while b.inbox.budget.used < 4 * (largest - 40):
                assert time.monotonic() < deadline, (b.inbox.budget.used, calls)
                assert not any(c.done() for c in calls), calls
                await asyncio.sleep(0.05)
            held = b.inbox.budget.used
            try:
                ack = await a.peers.stub(peer).Push(push_stream(a, 2, seq=2), timeout=10)
            except grpc.aio.AioRpcError as exc:
                ack = pb.PushAck(accepted=False, reason=f"{exc.code().name} {exc.details()}")
            return ack, held, largest, b.inbox.budget
        finally:
            release.set()
            await asyncio.gather(*calls, return_exceptions=True)
            for c in channels:
                await c.close()
            for r in relays:
                r.close()
            for d in (da, db):
                await d.transport.stop(grace=0)

    ack, held, largest, budget = asyncio.run(go())
    assert ack.accepted, f"{ack.reason} (the attackers held {held} bytes)"
    assert held >= BUFFERED_MESSAGES * largest - 160  # the pool was full
    # memory: the pool and one largest message for each of --max-neighbors
    assert budget.limit == (BUFFERED_MESSAGES + 8) * largest
    print(f"\nattackers held {held} of the pool's {BUFFERED_MESSAGES * largest} bytes")


def test_reservations_are_bounded_and_for_every_live_neighbour() -> None:
    """Every live neighbour, proven or not (its first round, after this node restarted),
    has its own largest message; senders that are not live use the pool."""

    class P:  # the fields of `Peer` a reservation looks at
        def __init__(self, live: bool) -> None:
            self.live = live

    largest = 100
    buf = PushBuffer(largest, neighbors=3)
    assert buf.limit == (BUFFERED_MESSAGES + 3) * largest
    dropped = []
    for k in range(4):  # senders dropped mid-push, on four networks, fill the pool
        s = buf.stream(f"10.0.{k}.1")
        s.sender, s.peer = f"m{k}", P(live=False)
        s.take(largest)
        dropped.append(s)
    with pytest.raises(WireError) as info:
        late = buf.stream("10.9.0.1")
        late.sender, late.peer = "late", P(live=False)
        late.take(1)
    assert info.value.counter == "busy"
    live = []
    for k in range(3):  # each live neighbour: its own largest message, pool full or not
        s = buf.stream("10.0.0.1")  # even from a network that filled its pool share
        s.sender, s.peer = f"n{k}", P(live=True)
        s.take(largest)
        live.append(s)
    assert buf.reserve.used == 3 * largest and buf.used == buf.limit
    with pytest.raises(WireError) as info:  # one id: still one largest message
        live[0].take(1)
    assert info.value.counter == "rate_limited"
    for s in (*dropped, *live):
        s.give(s.used)
    assert buf.used == 0 and buf.by_sender == {} and buf.by_host == {}


def test_neighbours_on_one_network_all_push_their_first_messages_at_once() -> None:
    """Eight live neighbours of one /24 (a LAN), none proven yet (round 1, or this node
    restarted), each pushing a largest message in interleaved chunks: all accepted (the
    review's case: with reservations for proven neighbours only, 4 of 8 were refused)."""

    class P:
        live = True

    largest, chunk = 1_000_000, 65_536
    buf = PushBuffer(largest, neighbors=8)
    streams = []
    for k in range(8):
        s = buf.stream(f"10.0.0.{k + 1}")
        s.sender, s.peer = f"n{k}", P()
        streams.append(s)
    for _ in range(0, largest, chunk):
        for s in streams:
            s.take(min(chunk, largest - s.used))
    assert all(s.used == largest for s in streams)


def test_addresses_of_one_network_share_its_pool_share() -> None:
    """The audit's attack from two addresses of one /24: before, each address had its
    own share and together they filled the pool; now they share the network's."""
    from declora.node.daemon.pushbuffer import HOST_SHARE

    largest = 100
    buf = PushBuffer(largest)
    held, refused = [], 0
    for k in range(4):
        s = buf.stream(f"203.0.113.{2 + k % 2}")
        s.sender = f"m{k}"
        try:
            s.take(largest)
            held.append(s)
        except WireError as exc:
            assert exc.counter == "rate_limited", exc.reason
            refused += 1
    assert (len(held), refused) == (HOST_SHARE, 4 - HOST_SHARE)
    other = buf.stream("198.51.100.7")  # another network: the rest of the pool
    other.sender = "n"
    other.take(largest)
    for s in (*held, other):
        s.give(s.used)
    assert buf.used == 0 and buf.by_host == {}


def test_a_diverged_neighbours_stale_pushes_never_exhaust_its_allowance(
    synthetic_jsonl: Path,
) -> None:
    """b moved on to round 20; a (diverged) keeps pushing its rounds 1..19, three tries
    each: all refused `stale_round`, none `rate_limited`, and a's push for a round b
    reads is taken. Before, the seventh stale push was refused "more than 6 pushes"."""
    _, (a, b) = pair(synthetic_jsonl)
    assert b.limits.pushes.limit == 6

    async def go() -> list[str]:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        b.progress.round = 20
        refused = []
        for r in range(1, 20):
            for _ in range(3):
                try:
                    await b.inbox.receive(push_stream(a, r))
                except WireError as exc:
                    refused.append(exc.counter)
        assert (await b.inbox.receive(push_stream(a, 21))).accepted
        return refused

    refused = asyncio.run(go())
    assert refused == ["stale_round"] * 57, sorted(set(refused))


def slow_push(a, b, seconds: float, pieces: int):  # type: ignore[no-untyped-def]
    """`a`'s next delta to b, its data in `pieces` chunks spread over `seconds`."""
    data = a.node.outgoing()
    peer = a.peers.get("b")
    header = make_header(
        sender_id="a", swarm_id="parts", fingerprint=a.lm.fingerprint, round=1,
        sender_degree=1, kind=pb.PAYLOAD_KIND_DELTA, codec="fp32", seq=1, data=data,
        schema=a.lm.schema, session=peer.token_out, receiver_id="b",
    )  # fmt: skip
    size = -(-len(data) // pieces)

    async def stream():  # type: ignore[no-untyped-def]
        for c in chunks(header, data, size):
            yield c
            if c.WhichOneof("body") == "data":
                await asyncio.sleep(seconds / pieces)

    return stream(), len(data)


@pytest.mark.parametrize("paced", [True, False])
def test_a_push_at_pace_keeps_its_senders_slot_a_trickle_does_not(
    synthetic_jsonl: Path, monkeypatch: pytest.MonkeyPatch, paced: bool
) -> None:
    """b's silence limit is 1 s; newcomer a (live, never delivered) sends its first
    push over 3 s. At twice the pace b accepts, a is never silent while it arrives
    (before: silent after 1 s, its slot free for any stranger's Hello); a trickle (a
    tenth of the pace) buys a tenth of its time, and a is silent."""
    _, (a, b) = pair(synthetic_jsonl, stream_idle_seconds=5.0)

    async def go() -> tuple[list[bool], bool]:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        stream, size = slow_push(a, b, 3.0, 30)
        rate = size / 3.0 / 2 if paced else size / 3.0 * 10
        monkeypatch.setattr(inbox, "PUSH_PACE", Pace(min_seconds=60.0, bytes_per_second=rate))
        b.peers.silence_limit = 1.0
        b.peers.rounds_began = time.monotonic()
        task = asyncio.create_task(b.inbox.receive(stream))
        silent = []
        for _ in range(5):  # at 1.5, 2, 2.5, 3 s...
            await asyncio.sleep(0.5)
            if task.done():
                break
            silent.append("a" in [p.node_id for p in b.peers.silent()])
        ack = await task
        return silent[2:], ack.accepted

    silent, accepted = asyncio.run(go())
    assert accepted
    assert silent and all(s is not paced for s in silent), silent
