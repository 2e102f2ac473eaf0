"""Neighbour slots: ids that shake hands and then never push cannot keep honest peers
out (before: a member filled `--max-neighbors` with such ids, and every later Hello
was refused "node has its maximum of neighbours" for as long as it liked)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from test_daemon_parts import hello, pair, push_stream

from declora.node.daemon.peers import SILENT_GRACE, Peer
from declora.proto import pb


def answer(b, node_id: str, port: int, session: bytes = b""):  # type: ignore[no-untyped-def]
    """b's Welcome to a Hello from `node_id` (from host 127.0.0.9)."""
    h = hello(
        node_id=node_id, swarm_id="parts", listen_address=f"127.0.0.9:{port}", session=session
    )
    h.fingerprint = b.lm.fingerprint
    h.recipe.update(b.handshaker.recipe)
    return b.handshaker.answer(h, None, f"ipv4:127.0.0.9:{port + 1000}")


def test_a_silent_slot_holder_gives_way_to_a_later_hello(
    synthetic_jsonl: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, (a, b) = pair(synthetic_jsonl, max_neighbors=3)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        assert (await b.inbox.receive(push_stream(a, 1))).accepted  # a delivers

    asyncio.run(go())
    table = b.peers
    for k in (1, 2):  # a member's ids: a good handshake, then silence
        assert answer(b, f"mute{k}", 2000 + k).accepted
    assert not answer(b, "honest", 3000).accepted  # full: 3 of 3
    table.rounds_began = time.monotonic()  # this node's rounds start now
    assert table.silent() == [] and not answer(b, "honest", 3000).accepted  # within grace

    long_ago = time.monotonic() - SILENT_GRACE - 1  # as if that much time had passed
    table.rounds_began = long_ago - 5
    for pid in ("a", "mute1", "mute2"):
        table.peers[pid].quiet_since = long_ago - (pid == "mute2")  # mute2: longest silent
    caplog.set_level(logging.WARNING, "declora.node.daemon.handshake")
    assert [p.node_id for p in table.silent()] == ["mute2", "a", "mute1"]
    table.peers["a"].quiet_since = time.monotonic()  # a delivered meanwhile
    assert answer(b, "honest", 3000).accepted
    assert {p.node_id for p in table.live} == {"a", "mute1", "honest"}
    [line] = [r.getMessage() for r in caplog.records if "released" in r.getMessage()]
    assert "mute2" in line and "'honest'" in line

    # the released id cannot take its slot back while the live set is full, and when it
    # gets one it has no new grace (it never delivered): the next newcomer takes it
    assert not table.get("mute2").live  # type: ignore[union-attr]
    mute1 = table.get("mute1")
    assert mute1 is not None
    table.drop(mute1, "test")  # a free slot...
    assert answer(b, "mute1", 2001).accepted  # ...taken back by a silent id
    assert answer(b, "honest2", 3001).accepted  # and given up again
    assert {p.node_id for p in table.live} == {"a", "honest", "honest2"}
    assert not answer(b, "mute2", 2002).accepted  # full, and nobody silent for long


def tokens(peer: Peer | None) -> tuple[bytes, bytes, bytes]:
    assert peer is not None
    return peer.token_in, peer.token_prev, peer.token_out


def test_a_refused_hello_changes_nothing(synthetic_jsonl: Path) -> None:
    """A Hello refused for want of a slot leaves the table as it was: the known id's
    tokens (before: rotated on every refused Hello), the entries, the live set."""
    _, (_a, b) = pair(synthetic_jsonl, max_neighbors=2)
    table = b.peers
    table.max_known = 3
    assert answer(b, "old", 2000, session=b"s-old").accepted
    old = table.get("old")
    assert old is not None
    table.drop(old, "test")  # known, not live
    for k in (1, 2):
        assert answer(b, f"live{k}", 2000 + k).accepted
    before = tokens(old)
    entries = {pid: tokens(p) for pid, p in table.peers.items()}
    for session in (b"another", b"s-old", b""):  # a stranger's, a renewal's, none
        welcome = answer(b, "old", 2000, session=session)
        assert not welcome.accepted and "maximum" in welcome.reason
        assert tokens(table.get("old")) == before and not old.live
    assert not answer(b, "new", 2003).accepted  # the table is full too (3 of 3)
    assert {pid: tokens(p) for pid, p in table.peers.items()} == entries
    assert {p.node_id for p in table.live} == {"live1", "live2"}


def test_a_silent_slot_is_released_only_to_admit_the_newcomer(
    synthetic_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One `admit` per Hello: a silent neighbour is dropped only when that admits the
    Hello, and a known id admitted so keeps the token it was given as `token_prev`
    (before: two rotations left there a token never handed out)."""
    _, (_a, b) = pair(synthetic_jsonl, max_neighbors=2)
    table = b.peers
    table.max_known = 3
    admits: list[str] = []
    admit = table.admit

    def counted(h: pb.Hello, **how: object) -> Peer | None:
        admits.append(h.node_id)
        return admit(h, **how)  # type: ignore[arg-type]

    monkeypatch.setattr(table, "admit", counted)
    assert answer(b, "old", 2000, session=b"s-old").accepted
    old = table.get("old")
    assert old is not None
    given = old.token_in  # what its Welcome handed out
    table.drop(old, "test")
    assert answer(b, "mute", 2001).accepted
    table.rounds_began = time.monotonic() - SILENT_GRACE - 10
    mute = table.get("mute")
    assert mute is not None
    mute.quiet_since = table.rounds_began  # silent for longer than the grace
    assert table.silent() == [mute]
    admits.clear()
    assert answer(b, "room", 2002).accepted  # a free slot: nobody is released
    assert mute.live and admits == ["room"]

    admits.clear()  # full now, mute silent: its slot goes to the known id, in one admit
    welcome = answer(b, "old", 2000, session=b"s-old-2")
    assert welcome.accepted and admits == ["old"]
    assert not mute.live and old.live
    assert old.token_prev == given and welcome.node.session == old.token_in != given

    admits.clear()  # full, nobody silent: refused, nothing dropped
    assert not answer(b, "late", 2003).accepted and admits == ["late"]
    assert {p.node_id for p in table.live} == {"room", "old"}
    assert set(table.peers) == {"room", "old", "mute"}
