"""The daemon's parts in-process: the handshake rule, the peer table and the round
exchange, wired through an in-memory transport (`memory_transport`), no sockets."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from conftest import TINY_SPEC
from memory_transport import MemoryNetwork, MemoryTransport
from pydantic import ValidationError

from declora.node import PROTOCOL_VERSION
from declora.node.codecs import make_codec
from declora.node.daemon import Daemon
from declora.node.daemon.admission import check_hello
from declora.node.daemon.catchup import CATCH_UP_WINDOW
from declora.node.daemon.daemon import Parts
from declora.node.daemon.inbox import MAX_ROUNDS_AHEAD
from declora.node.daemon.service import SwarmService
from declora.node.daemon.status import state_digest
from declora.node.identity import node_id_problem
from declora.node.settings import NodeSettings
from declora.node.wire import WireError, chunks, make_header
from declora.proto import pb

FAR = 120.0  # s: a deadline beyond any load; a round that ended before it did not wait
RULE = {"node_id": "me", "swarm_id": "s", "fingerprint": "f" * 16, "gradient_tracking": False}


def hello(**changes: object) -> pb.Hello:
    fields: dict[str, object] = {
        "protocol_version": PROTOCOL_VERSION,
        "node_id": "peer",
        "swarm_id": "s",
        "fingerprint": "f" * 16,
    }
    return pb.Hello(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, ""),
        ({"protocol_version": PROTOCOL_VERSION + 1}, "protocol version"),
        ({"swarm_id": "other"}, "swarm 'other' != 's'"),
        ({"fingerprint": "0" * 16}, "fingerprint"),
        ({"gradient_tracking": True}, "gradient tracking is on at 'peer' and off at 'me'"),
        ({"node_id": ""}, "empty node id"),
        ({"node_id": "me"}, "this node's own id"),
        ({"round": 2**64 - 1}, "out of range"),
        ({"node_id": "x" * 300_000}, "characters (at most 64)"),
    ],
)
def test_check_hello_names_the_reason(changes: dict[str, object], reason: str) -> None:
    got = check_hello(hello(**changes), **RULE)  # type: ignore[arg-type]
    assert (got == "") if not reason else (reason in got)


def settings(name: str, data: Path, i: int, peers: list[str], **extra: object) -> NodeSettings:
    # Dec-LoRA as published unless a test asks (the adaptive defaults: test_swarm_recipe)
    plain = {"gradient_tracking": False, "validation_fraction": 0.0}
    options: dict[str, object] = {
        # beside the test data (a pytest temp folder), never in the working tree
        "checkpoint_dir": Path(tempfile.mkdtemp(prefix=f"{name}-", dir=data.parent)),
        "round_deadline": 2.0,
        "local_steps": 2,
        "lr": 0.05,
        **plain,
        **extra,
    }
    if extra.get("method") != "deca":  # DECA refuses LoRA's options
        options |= {"rank": TINY_SPEC.rank, "alpha": TINY_SPEC.alpha}
    return NodeSettings(
        node_id=name,
        swarm_id="parts",
        listen=f"127.0.0.1:{7400 + i}",
        peers=peers,
        model=TINY_SPEC.model,
        max_length=TINY_SPEC.max_length,
        data=str(data),
        partition=f"{i}/2",
        **options,  # type: ignore[arg-type]
    )


def pair(
    data: Path, first: dict[str, object] | None = None, **extra: object
) -> tuple[list[Daemon], list[Parts]]:
    """Two daemons' parts, served on one in-memory network, not yet introduced; `first`
    holds options for node a only (e.g. resuming a's run, which b may not)."""
    network = MemoryNetwork()
    daemons, parts = [], []
    for i, name in enumerate(("a", "b")):
        s = settings(name, data, i, [], **extra, **((first or {}) if i == 0 else {}))
        d = Daemon(s, MemoryTransport(network, s, None))
        p = d.build()
        network.serve(s.advertise, SwarmService(p))
        daemons.append(d)
        parts.append(p)
    return daemons, parts


def test_handshake_admits_both_sides_at_the_shared_init(synthetic_jsonl: Path) -> None:
    _, (a, b) = pair(synthetic_jsonl)

    async def go() -> None:
        peer = await a.handshaker.dial(b.settings.advertise)
        assert peer is not None and peer.node_id == "b"

    asyncio.run(go())
    pa, pb_ = a.peers.get("b"), b.peers.get("a")
    assert pa is not None and pb_ is not None and pa.live and pb_.live
    # both still at the seeded init: no keyframe, the next delta is seq 1
    assert (pa.expected_seq, pa.send_keyframe) == (1, False)
    assert "b" in a.node.gossip.peers and "a" in b.node.gossip.peers


def test_peer_table_drop_forgets_the_copy_and_caps_neighbours(synthetic_jsonl: Path) -> None:
    _, (a, _b) = pair(synthetic_jsonl, max_neighbors=1)
    first = a.peers.admit(hello(node_id="x", listen_address="127.0.0.1:1", fingerprint="?"))
    assert first is not None and "x" in a.node.gossip.peers
    assert a.peers.admit(hello(node_id="y", listen_address="127.0.0.1:2")) is None  # at capacity
    a.peers.drop(first, "test")
    assert not first.live and first.expected_seq is None and "x" not in a.node.gossip.peers
    assert a.peers.live == []


def test_one_round_in_memory_mixes_to_the_mean(synthetic_jsonl: Path) -> None:
    """fp32, two nodes of degree 1: MH weights 1/2, so both end at the mean of their
    trained adapters (Dec-LoRA's exact average) and agree."""
    (da, db), (a, b) = pair(synthetic_jsonl)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        await asyncio.gather(da.run_round(a, train=True), db.run_round(b, train=True))

    asyncio.run(go())
    assert a.progress.round == b.progress.round == 1
    np.testing.assert_allclose(a.node.vector(), b.node.vector(), rtol=0, atol=1e-6)
    assert a.report.self_weight == pytest.approx(0.5)
    assert a.node.bytes_sent > 0 and a.node.bytes_received == b.node.bytes_sent
    assert a.peers.get("b").expected_seq == 2  # type: ignore[union-attr]
    # the token of a validated payload is remembered (`PeerTable.admit` keeps it valid)
    assert b.peers.get("a").token_used == a.peers.get("b").token_out  # type: ignore[union-attr]


def test_a_mix_gone_non_finite_drops_the_held_back_step_and_its_optimizer_move(
    synthetic_jsonl: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With the step after mixing, a round's last mix takes the held-back AdamW step;
    if the result is not finite the node rolls back to before the mix: adapter, and
    the optimizer state the step moved, and drops the neighbour."""
    fields = {"gradient_tracking": True, "step_after_mixing": True, "local_steps": 1}
    (da, db), (a, b) = pair(synthetic_jsonl, **fields)
    take = a.node.trainer.apply_deferred

    def poisoned(correction: list[torch.Tensor]) -> None:
        take(correction)
        assert a.node.trainer.optimizer.state  # AdamW moved its moments
        a.node.trainer.tensors[0].data.fill_(float("nan"))

    a.node.trainer.apply_deferred = poisoned  # type: ignore[method-assign]

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        await asyncio.gather(da.run_round(a, train=True), db.run_round(b, train=True))

    with caplog.at_level("INFO"):
        asyncio.run(go())
    assert a.node.is_finite() and a.node.trainer.deferred is None
    np.testing.assert_array_equal(a.node.vector(), a.node.initial)  # as before the mix
    assert a.exchange.last_contributors == []  # the mix was undone: nobody's payload used
    lines = [r.getMessage() for r in caplog.records if "done in" in r.getMessage()]
    mine = [line for line in lines if "self weight 1.000" in line]  # b's: 0.500
    assert len(mine) == 1 and "mixed with 0 neighbours" in mine[0], lines
    assert not a.node.trainer.optimizer.state  # the step's moments were undone
    assert not a.peers.get("b").live  # type: ignore[union-attr]
    assert b.node.is_finite() and np.abs(b.node.vector() - b.node.initial).max() > 0


def test_a_silent_neighbour_is_dropped_at_the_deadline(synthetic_jsonl: Path) -> None:
    (da, _db), (a, b) = pair(synthetic_jsonl)

    async def go() -> float:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await da.run_round(a, train=False)  # b never runs its round
        return loop.time() - t0

    took = asyncio.run(go())
    peer = a.peers.get("b")
    assert peer is not None and not peer.live and peer.missed == 1  # one deadline missed
    assert took >= a.settings.round_deadline  # at the deadline, not before it
    assert a.report.self_weight == 1.0  # nobody delivered: the node keeps its own


def push_stream(a: Parts, round: int, **changes: object):  # type: ignore[no-untyped-def]
    """`a`'s next delta to b as a stream, with header fields changed by `changes`."""
    data = a.node.outgoing()
    peer = a.peers.get("b")
    assert peer is not None
    fields: dict[str, object] = {
        "sender_id": "a",
        "swarm_id": "parts",
        "fingerprint": a.lm.fingerprint,
        "round": round,
        "sender_degree": 1,
        "kind": pb.PAYLOAD_KIND_DELTA,
        "codec": "fp32",
        "seq": 1,
        "data": data,
        "schema": a.lm.schema,
        "session": peer.token_out,
        "receiver_id": "b",
    }
    header = make_header(**{**fields, **changes})  # type: ignore[arg-type]

    async def stream():  # type: ignore[no-untyped-def]
        for c in chunks(header, data, 1 << 20):
            yield c

    return stream()


@pytest.mark.parametrize(
    ("round", "changes", "counter"),
    [
        (0, {}, "stale_round"),  # not after b's round 0
        (1, {"session": b"x" * 16}, "bad_session"),  # a third party in a's name
        (1, {"receiver_id": "c"}, "bad_session"),  # meant for another node
        (1, {"sender_id": "zz"}, "no_handshake"),
        (10**12, {}, "future_round"),
    ],
)
def test_a_refused_push_changes_nothing(
    synthetic_jsonl: Path, round: int, changes: dict[str, object], counter: str
) -> None:
    _, (a, b) = pair(synthetic_jsonl)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        before = state_digest(b.node, b.inbox.queued)
        with pytest.raises(WireError) as info:
            await b.inbox.receive(push_stream(a, round, **changes))
        assert info.value.counter == counter
        assert state_digest(b.node, b.inbox.queued) == before
        assert b.inbox.open_streams == {}

    asyncio.run(go())


def test_a_huge_but_finite_keyframe_is_refused(synthetic_jsonl: Path) -> None:
    _, (a, b) = pair(synthetic_jsonl)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        huge = np.full(a.node.size, 1e30, np.float32)
        data = make_codec("fp32").encode(huge, np.random.default_rng(0))
        peer = a.peers.get("b")
        assert peer is not None
        header = make_header(
            sender_id="a", swarm_id="parts", fingerprint=a.lm.fingerprint, round=1,
            sender_degree=1, kind=pb.PAYLOAD_KIND_KEYFRAME, codec="fp32", seq=1, data=data,
            schema=a.lm.schema, session=peer.token_out, receiver_id="b",
        )  # fmt: skip

        async def stream():  # type: ignore[no-untyped-def]
            for c in chunks(header, data, 1 << 20):
                yield c

        before = state_digest(b.node, b.inbox.queued)
        with pytest.raises(WireError) as info:
            await b.inbox.receive(stream())
        assert info.value.counter == "bad_values" and "above the bound" in info.value.reason
        assert state_digest(b.node, b.inbox.queued) == before

    asyncio.run(go())


def test_a_crashed_neighbour_is_dropped_by_the_probe_not_the_deadline(
    synthetic_jsonl: Path,
) -> None:
    (da, _db), (a, b) = pair(synthetic_jsonl, round_deadline=FAR)
    network = da.transport.network  # type: ignore[attr-defined]

    async def go() -> bool:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        network.take_down(b.settings.advertise)  # its port now refuses connections
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FAR  # at or before the round's own
        await da.run_round(a, train=False)
        return loop.time() < deadline

    assert asyncio.run(go()), "waited the deadline for a neighbour whose port refuses"
    peer = a.peers.get("b")
    assert peer is not None and not peer.live


def test_one_neighbour_moves_a_node_by_at_most_the_window(synthetic_jsonl: Path) -> None:
    _, (a, b) = pair(synthetic_jsonl)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None

    asyncio.run(go())
    peer = b.peers.get("a")
    assert peer is not None
    peer.claimed_round = 10**9  # what a Hello may claim: moves nothing
    b.exchange.align_round()
    assert b.progress.round == 0
    peer.round = 10**9  # even a verified round moves it by the window at most
    b.exchange.align_round()
    assert b.progress.round == MAX_ROUNDS_AHEAD
    b.exchange.align_round()  # ...and the next skip waits that many rounds
    assert b.progress.round == MAX_ROUNDS_AHEAD
    b.progress.round = 2 * MAX_ROUNDS_AHEAD
    b.exchange.align_round()
    assert b.progress.round == 3 * MAX_ROUNDS_AHEAD


def test_a_node_far_behind_takes_the_state_instead_of_waiting(synthetic_jsonl: Path) -> None:
    """A healed partition: a neighbour that joins mid-round from beyond the window sends
    rounds this node refuses, so the round does not wait for it (nor drop it at the
    deadline, just as its renewed handshake re-admits it); the next round takes its
    state."""
    (_da, db), (a, b) = pair(synthetic_jsonl)
    far = 5 * MAX_ROUNDS_AHEAD
    a.node.train(3)  # a state that differs from b's
    a.progress.round = far

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None  # mid-round
        await b.exchange.exchange(1)

    asyncio.run(go())
    peer = b.peers.get("a")
    assert peer is not None and peer.live, "waited for it and dropped it at the deadline"
    asyncio.run(db.run_round(b, train=False))  # a does not run: b mixes with nobody
    assert b.progress.round == far + 1
    np.testing.assert_array_equal(b.node.vector(), a.node.vector())


def test_with_three_neighbours_one_alone_cannot_move_a_node(synthetic_jsonl: Path) -> None:
    _, (_a, b) = pair(synthetic_jsonl)
    peers = [
        b.peers.admit(hello(node_id=f"p{i}", listen_address=f"127.0.0.1:{i + 1}")) for i in range(3)
    ]
    assert all(p is not None for p in peers)
    peers[0].round = 5  # type: ignore[union-attr]
    b.exchange.align_round()
    assert b.progress.round == 0
    peers[1].round = 3  # type: ignore[union-attr]
    b.exchange.align_round()
    assert b.progress.round == 3  # the second-most-advanced


def test_catch_up_needs_a_second_claim_where_there_are_several(synthetic_jsonl: Path) -> None:
    _, (a, _b) = pair(synthetic_jsonl)
    liar = a.peers.admit(hello(node_id="liar", listen_address="127.0.0.1:1", round=10**9))
    honest = a.peers.admit(hello(node_id="honest", listen_address="127.0.0.1:2", round=40))
    assert liar is not None and honest is not None
    target = a.transfer.catch_up_target()
    assert target is not None and target[0] is honest and target[1] == 40
    liar.proven = True  # a neighbour that delivered valid payloads is trusted more
    target = a.transfer.catch_up_target()
    assert target is not None and target[0] is liar
    liar.proven = False
    a.peers.drop(honest, "test")
    target = a.transfer.catch_up_target()  # one neighbour: it is the swarm...
    # ...within --rounds 0's window (`catchup.CATCH_UP_WINDOW`)
    assert target is not None and target[0] is liar and target[1] == CATCH_UP_WINDOW


def test_a_catch_up_stays_within_the_plan_and_a_failed_one_drops_the_claim(
    synthetic_jsonl: Path,
) -> None:
    """A neighbour claiming round 10^9 (and serving that state) cannot move a node past
    its planned rounds; the refused state sets its claim back to what it has proven."""
    (_, _), (a, b) = pair(synthetic_jsonl, rounds=20, consensus_rounds=5)
    end = 20 * a.settings.exchanges_per_round + 5
    b.node.train(2)
    b.progress.round = 10**9
    before = a.node.vector().copy()

    async def go() -> None:
        source = await a.handshaker.dial(b.settings.advertise)
        assert source is not None and source.claimed_round == 10**9
        assert a.transfer.catch_up_target() == (source, end)
        with pytest.raises(WireError, match=rf"round {10**9}, outside \(0, {end}\]"):
            await a.transfer.catch_up()
        assert source.claimed_round == source.round == 0
        assert a.transfer.catch_up_target() is None
        source.claimed_round = 10**9  # claimed again (a new handshake)
        a.progress.round = end  # at its planned end a node takes no state
        assert a.transfer.catch_up_target() is None

    asyncio.run(go())
    np.testing.assert_array_equal(a.node.vector(), before)


def test_a_proven_source_further_on_than_its_stale_claim_is_taken(
    synthetic_jsonl: Path,
) -> None:
    """A Hello sent during a partition arrives when it heals, with a round the sender has
    long passed: a proven source's state is taken anywhere within the plan (seen in
    tests/test_faults.py: the slower half trained alone for 20 s after refusing it); an
    unproven one's must stay within a few rounds of its claim."""
    (_, _), (a, b) = pair(synthetic_jsonl, rounds=40, consensus_rounds=5)
    b.node.train(2)
    b.progress.round = 30 * a.settings.exchanges_per_round

    async def go(proven: bool) -> None:
        source = await a.handshaker.dial(b.settings.advertise)
        assert source is not None
        source.claimed_round, source.proven = 2 * MAX_ROUNDS_AHEAD, proven
        await a.transfer.catch_up()

    with pytest.raises(WireError, match="outside"):
        asyncio.run(go(proven=False))
    assert a.progress.round == 0
    asyncio.run(go(proven=True))
    assert a.progress.round == b.progress.round
    np.testing.assert_array_equal(a.node.vector(), b.node.vector())


@pytest.mark.parametrize("at, expected", [(2, 5), (5, 2), (7, 0), (9, 0)])
def test_a_resumed_finish_runs_only_what_is_left_of_it(
    synthetic_jsonl: Path, at: int, expected: int
) -> None:
    """--rounds 2 --consensus-rounds 5 plans rounds up to 7: a node resumed (or caught
    up) at round `at` runs the finish's gossip rounds up to 7, not 5 more. Before: 5
    more from wherever it was."""
    (da, _), (a, b) = pair(synthetic_jsonl, rounds=2, consensus_rounds=5)
    assert da.rounds is not None
    loop = da.rounds
    ran: list[int] = []

    async def gossip(train: bool) -> bool:
        assert not train
        ran.append(a.progress.round)
        a.progress.round += 1
        return False

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        a.progress.round = at
        loop.run_round = gossip  # type: ignore[method-assign]
        a.node.disagreement = lambda live: 1.0  # type: ignore[method-assign]
        await loop.train_loop()

    asyncio.run(go())
    assert ran == list(range(at, 7)) and len(ran) == expected


def test_a_pull_that_is_not_read_is_cut_and_frees_its_slot(
    synthetic_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller that stops reading a pulled state holds its Pull slot at most
    max(PULL_SECONDS, round deadline): then DEADLINE_EXCEEDED `slow_stream`."""
    from declora.node.daemon import service

    monkeypatch.setattr(service, "PULL_SECONDS", 0.2)
    _, (a, b) = pair(synthetic_jsonl, round_deadline=0.1)
    aborted: list[tuple[object, str]] = []

    class Stuck:  # a reader that never takes the first chunk
        def peer(self) -> str:
            return "ipv4:127.0.0.1:1"

        async def write(self, message: object) -> None:
            await asyncio.Event().wait()

        async def abort(self, code: object, details: str = "") -> None:
            aborted.append((code, details))

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        peer = a.peers.get("b")
        assert peer is not None
        request = pb.PullRequest(
            node_id="a",
            swarm_id="parts",
            kind=pb.PAYLOAD_KIND_STATE,
            session=peer.token_out,
            receiver_id="b",
        )
        service_b = service.SwarmService(b)
        await asyncio.wait_for(service_b.Pull(request, Stuck()), timeout=5)  # type: ignore[arg-type]
        assert service_b.pools.in_use.get("Pull", 0) == 0

    asyncio.run(go())
    [(code, details)] = aborted
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "not read within 0.2s" in details
    assert b.counters.rejected.get("slow_stream") == 1


def test_failed_catch_ups_back_off(synthetic_jsonl: Path) -> None:
    """Each failed catch-up doubles the wait before the next (to CATCH_UP_MAX_WAIT),
    counted from its end; a good one resets it; with nobody ahead nothing is tried and
    nothing delays the next try (a start's catch-up must not hold back a later one)."""
    (da, _), (a, b) = pair(synthetic_jsonl)
    assert da.rounds is not None
    loop = da.rounds
    asyncio.run(loop.catch_up())  # no neighbour yet
    assert loop.next_catch_up == 0.0 and loop.catch_up_wait == 10.0
    b.node.train(2)

    async def attempt(claim: int) -> float:
        source = await a.handshaker.dial(b.settings.advertise)
        assert source is not None
        source.claimed_round = claim
        await loop.catch_up()
        return loop.catch_up_wait

    b.progress.round = 10**9  # its state is refused: far outside any claim but its own
    waits = [asyncio.run(attempt(5 * MAX_ROUNDS_AHEAD)) for _ in range(6)]
    assert waits == [20.0, 40.0, 80.0, 160.0, 160.0, 160.0]
    b.progress.round = 5 * MAX_ROUNDS_AHEAD
    assert asyncio.run(attempt(5 * MAX_ROUNDS_AHEAD)) == 10.0
    assert a.progress.round == 5 * MAX_ROUNDS_AHEAD


def test_peer_table_is_bounded_merges_and_backs_off(synthetic_jsonl: Path) -> None:
    _, (a, _b) = pair(synthetic_jsonl, max_neighbors=2, max_known_peers=3)
    table = a.peers
    for i in range(50):  # a flood of fresh ids, each dropped after its handshake
        p = table.admit(hello(node_id=f"fake-{i}", listen_address=f"127.0.0.9:{1000 + i}"))
        assert p is not None
        table.drop(p, "test")
    assert len(table.peers) <= 3
    # a new id at the address of an entry that is not live replaces it
    table.admit(hello(node_id="moved", listen_address="127.0.0.9:1049"))
    assert "fake-49" not in table.peers and "moved" in table.peers
    # an id that introduced itself and proved nothing is re-dialled once, then never
    intro = table.get("fake-48")
    assert intro is not None and not intro.live
    now = intro.next_dial + 1
    assert intro in table.due_for_dial(now)
    assert intro not in table.due_for_dial(now + 1000)
    # ...also when that one dial succeeded: answering a dial does not make it configured
    table.admit(hello(node_id="fake-48", listen_address=intro.address), dialled=intro.address)
    assert not intro.configured
    table.drop(intro, "test")
    later = intro.next_dial + 1
    assert intro in table.due_for_dial(later)  # a good handshake earns one more dial...
    assert intro not in table.due_for_dial(later + 1000)  # ...not a configured one's
    # a configured address backs off: 2, 4, 8, 8 s
    intro.configured = True
    gaps = []
    for _ in range(4):
        t = intro.next_dial
        assert intro in table.due_for_dial(t)
        gaps.append(intro.next_dial - t)
    assert gaps == [4.0, 8.0, 8.0, 8.0]


def test_node_ids_are_bounded() -> None:
    for bad in ("x" * 65, "a b", "a\nb", "-lead", ""):
        assert node_id_problem(bad), bad
        assert check_hello(hello(node_id=bad), **RULE)  # type: ignore[arg-type]
    assert node_id_problem("lab-0") == "" and node_id_problem("node-127.0.0.1-7070") == ""
    with pytest.raises(ValidationError):
        NodeSettings(node_id="x" * 300)


# ---------------------------------------------------------------- gossip steps


def test_exchange_numbers_map_to_training_rounds() -> None:
    from declora.node.schedule import is_training_exchange, training_round

    assert [is_training_exchange(e, 1) for e in (1, 2, 3)] == [True, True, True]
    assert [training_round(e, 1) for e in (1, 2, 3)] == [1, 2, 3]
    trains = [e for e in range(1, 10) if is_training_exchange(e, 3)]
    assert trains == [1, 4, 7]
    assert [training_round(e, 3) for e in range(1, 10)] == [1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_deca_refuses_gossip_steps(synthetic_jsonl: Path) -> None:
    with pytest.raises(ValidationError, match="--method deca cannot be combined with --gossip"):
        settings("a", synthetic_jsonl, 0, [], method="deca", gossip_steps=2)
    assert settings("a", synthetic_jsonl, 0, [], method="kill-revive", gossip_steps=2)


def test_gossip_steps_daemons_match_simulator(
    synthetic_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gossip_steps 2, 2 training rounds: each daemon runs exchanges 1-4, trains at 1
    and 3 (training rounds 1 and 2, so the lr schedule's), evaluates and checkpoints
    after 2 and 4, and ends with its virtual node's adapter, bit for bit."""
    import json

    from declora.node.simulator import SimConfig, Simulation

    monkeypatch.chdir(tmp_path)  # each node's state dir: declora-state/<node-id>
    recipe: dict[str, object] = {"rounds": 2, "gossip_steps": 2, "swarm_size": 2}
    recipe |= {"consensus_rounds": 0, "gradient_tracking": True, "lr_schedule": "cosine"}
    recipe |= {"validation_fraction": 0.1}  # both hold out the same rows
    (da, db), (a, b) = pair(synthetic_jsonl, round_deadline=60.0, checkpoint_every=1, **recipe)
    assert a.handshaker.recipe["gossip_steps"] == "2"
    trained: dict[str, list[int]] = {"a": [], "b": []}
    one_at_a_time = threading.Lock()  # torch's global rng (dropout) is per process
    for p in (a, b):
        train = p.node.train

        def spy(steps: int, stop: object, r: int, name: str = p.settings.node_id, f=train) -> float:
            trained[name].append(r)
            with one_at_a_time:
                return f(steps, stop, r)

        p.node.train = spy  # type: ignore[method-assign]

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        assert da.rounds is not None and db.rounds is not None
        await asyncio.gather(da.rounds.train_loop(), db.rounds.train_loop())

    asyncio.run(go())
    cfg = SimConfig(
        model=TINY_SPEC.model, data=str(synthetic_jsonl), nodes=2, topology="complete",
        rank=TINY_SPEC.rank, alpha=TINY_SPEC.alpha, max_length=TINY_SPEC.max_length,
        partition_scheme="iid", local_steps=2, lr=0.05, centralized=False, **recipe,  # type: ignore[arg-type]
    )  # fmt: skip
    sim = Simulation(cfg)
    sim.run()
    assert trained == {"a": [1, 2], "b": [1, 2]}
    for i, p in enumerate((a, b)):
        assert p.progress.round == 4 and p.node.trainer.step == 4
        history = [json.loads(line) for line in (p.settings.state_dir / "rounds.jsonl").open()]
        assert [(e["round"], e["phase"]) for e in history] == [
            (1, "train"), (2, "gossip"), (3, "train"), (4, "gossip"), (4, "final")
        ]  # fmt: skip
        assert [e["eval"] is not None for e in history] == [False, True, False, True, True]
        assert p.node.tracker is not None and np.abs(p.node.tracker.correction()).max() > 0
        np.testing.assert_array_equal(p.node.vector(), sim.nodes[i].vector())
    assert sorted(c.name for c in (a.settings.state_dir).glob("ckpt-*")) == [
        "ckpt-00000002", "ckpt-00000004"
    ]  # fmt: skip


def test_a_pull_during_slow_steps_serves_the_state_before_them(synthetic_jsonl: Path) -> None:
    """Local steps that take 3 s (an LLM on CPU) and have half-updated the adapter:
    a Pull meanwhile answers at once with the state from before them (it waited for
    the steps before, and a puller's timeout could run out)."""
    from declora.node.wire import read_stream

    (_da, db), (a, b) = pair(synthetic_jsonl)
    before = b.node.vector().copy()
    mid_step, served_first = threading.Event(), threading.Event()
    released: list[bool] = []
    train = b.node.train

    def slow(steps: int, stop: object, r: int) -> float:
        with torch.no_grad():
            b.node.trainer.tensors[0].add_(1.0)  # half-way through an update...
        mid_step.set()
        released.append(served_first.wait(FAR))  # ...until the pull was served
        return train(steps, stop, r)

    b.node.train = slow  # type: ignore[method-assign]

    async def go() -> np.ndarray:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        steps = asyncio.create_task(db.run_round(b, train=True))
        while not mid_step.is_set():
            await asyncio.sleep(0.01)
        assert np.abs(b.node.vector() - before).max() > 0.5  # the live state is mid-step
        peer = a.peers.get("b")
        assert peer is not None
        request = pb.PullRequest(
            node_id="a", swarm_id="parts", kind=pb.PAYLOAD_KIND_STATE,
            session=peer.token_out, receiver_id="b",
        )  # fmt: skip
        stream = a.peers.stub(peer).Pull(request, timeout=2 * FAR)
        payload = await read_stream(
            stream, swarm_id="parts", fingerprint=a.lm.fingerprint, schema=a.lm.schema,
            max_bytes=a.inbox.max_bytes,
        )  # fmt: skip
        served_first.set()
        await steps
        assert payload.header.round == 0
        return a.node.check_state("b", payload.data)

    served = asyncio.run(go())
    assert released == [True], "the pull waited for the steps"
    np.testing.assert_array_equal(served, before)
    assert b.progress.round == 1 and np.abs(b.node.vector() - before).max() > 0.5


def test_a_round_encodes_no_state_until_a_pull_asks(
    synthetic_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state a Pull may want is taken as a vector copy when steps begin and encoded
    only when a Pull comes (before: every round encoded the whole adapter on the event
    loop), off the event loop, once for all Pulls during those steps."""
    from declora.node.dec_lora import DecLoraNode
    from declora.node.wire import read_stream

    (_da, db), (a, b) = pair(synthetic_jsonl)
    encodes: list[str] = []
    full_state = DecLoraNode.full_state

    def counted(node: DecLoraNode[str], vector: np.ndarray | None = None) -> bytes:
        encodes.append(threading.current_thread().name)
        return full_state(node, vector)

    monkeypatch.setattr(DecLoraNode, "full_state", counted)
    mid_step, go_on = threading.Event(), threading.Event()
    train = b.node.train

    def slow(steps: int, stop: object, r: int) -> float:
        if r == 3:  # the third round's steps: half-way, until the pulls are served
            with torch.no_grad():
                b.node.trainer.tensors[0].add_(1.0)
            mid_step.set()
            go_on.wait(10)
        return train(steps, stop, r)

    b.node.train = slow  # type: ignore[method-assign]

    async def pull() -> np.ndarray:
        peer = a.peers.get("b")
        assert peer is not None
        request = pb.PullRequest(
            node_id="a", swarm_id="parts", kind=pb.PAYLOAD_KIND_STATE,
            session=peer.token_out, receiver_id="b",
        )  # fmt: skip
        stream = a.peers.stub(peer).Pull(request, timeout=10)
        payload = await read_stream(
            stream, swarm_id="parts", fingerprint=a.lm.fingerprint, schema=a.lm.schema,
            max_bytes=a.inbox.max_bytes,
        )  # fmt: skip
        return a.node.check_state("b", payload.data)

    async def go() -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        for _ in range(2):  # rounds (alone: no neighbour yet) that no Pull asks about
            await db.run_round(b, train=True)
        assert encodes == [] and b.transfer.published is None
        assert await a.handshaker.dial(b.settings.advertise) is not None
        before = b.node.vector().copy()
        steps = asyncio.create_task(db.run_round(b, train=True))
        while not mid_step.is_set():
            await asyncio.sleep(0.01)
        served = list(await asyncio.gather(pull(), pull(), pull()))
        go_on.set()
        await steps
        out = list(await b.transfer.state_chunks())  # between steps: the state now
        assert out[0].header.round == 3
        return before, served, a.node.check_state("b", b"".join(c.data for c in out[1:]))

    before, served, after = asyncio.run(go())
    assert len(encodes) == 2, encodes  # one for the three pulls during steps, one after
    assert all(name != threading.main_thread().name for name in encodes)  # off the loop
    for state in served:
        np.testing.assert_array_equal(state, before)
    np.testing.assert_array_equal(after, b.node.vector())
    assert np.abs(after - before).max() > 0.5


def test_the_round_line_counts_the_payloads_mixed_not_who_is_left_after(
    synthetic_jsonl: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A neighbour whose payload arrived and which then said goodbye in the same round
    is mixed in and dropped after the mix: the round's line counts it as mixed."""
    (da, db), (a, b) = pair(synthetic_jsonl)
    mix = a.exchange.mix

    def leave_then_mix(r: int, own_degree: int) -> None:
        a.exchange.on_leave(a.peers.peers["b"], "it left after round 1")  # arrives mid-round
        mix(r, own_degree)

    a.exchange.mix = leave_then_mix  # type: ignore[method-assign]

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        await asyncio.gather(da.run_round(a, train=True), db.run_round(b, train=True))

    with caplog.at_level("INFO"):
        asyncio.run(go())
    assert a.report.self_weight == pytest.approx(0.5) and a.peers.live == []
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("round 1 done")]
    assert len(lines) == 2 and all("mixed with 1 neighbours" in line for line in lines), lines


def test_rounds_alone_leave_the_adaptive_deadline_as_it_was(synthetic_jsonl: Path) -> None:
    """A node whose neighbours are all out trains alone in a blink: those rounds must
    not pull the deadline down to its floor, below what the links need once the
    neighbours are back (a real-network audit: a slow neighbour was then never kept)."""
    (da, db), (a, b) = pair(synthetic_jsonl)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        await asyncio.gather(da.run_round(a, train=True), db.run_round(b, train=True))
        assert len(a.exchange.recent) == 1  # a round that mixed with b is observed
        a.peers.drop(a.peers.peers["b"], "test: every neighbour out")
        for _ in range(4):
            await da.run_round(a, train=True)

    asyncio.run(go())
    assert a.progress.round == 5 and a.exchange.last_contributors == []
    assert len(a.exchange.recent) == 1, a.exchange.recent  # the rounds alone are not
