"""A push from a node's old process, still being checked when its restarted process's
Hello is admitted, is not queued onto the new copy (secleft3). The check (off the
event loop) is held on an event while the restart's Hello (seq 0: the copy restarts
at the init) is admitted; before, the old process's keyframe was queued for the
next mix and set the new copy's round and seq."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
from test_daemon_parts import hello, pair, push_stream

from declora.node.daemon.daemon import Parts
from declora.node.wire import WireError
from declora.proto import pb


def held_check(b: Parts, name: str) -> tuple[threading.Event, threading.Event]:
    """Hold `b`'s core check `name` (run off the event loop) until `go` is set;
    `started` is set when a check began."""
    started, go = threading.Event(), threading.Event()
    check = getattr(b.node, name)

    def held(*args: object) -> object:
        started.set()
        go.wait(30)
        return check(*args)

    setattr(b.node, name, held)
    return started, go


def test_an_old_process_keyframe_checked_across_a_restart_is_not_queued(
    synthetic_jsonl: Path,
) -> None:
    _, (a, b) = pair(synthetic_jsonl)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        before = b.peers.get("a")
        assert before is not None
        before.expected_seq = 6  # a's old process had sent seq 5
        started, release = held_check(b, "check_keyframe")
        keyframe = push_stream(a, 1, kind=pb.PAYLOAD_KIND_KEYFRAME, seq=6, data=a.node.keyframe())
        old = asyncio.create_task(b.inbox.receive(keyframe))
        await asyncio.to_thread(started.wait, 30)
        # a's restarted process shakes hands: its copy restarts at the init (seq 0)
        restarted = hello(
            node_id="a",
            swarm_id="parts",
            fingerprint=a.lm.fingerprint,
            listen_address=a.settings.advertise,
            session=b"r" * 16,
        )
        assert b.peers.admit(restarted, host="127.0.0.1") is before and before.live
        release.set()
        with pytest.raises(WireError) as info:
            await old
        assert info.value.counter == "raced"
        assert b.inbox.queued == {}
        assert (before.expected_seq, before.round, before.proven) == (1, 0, False)
        assert np.array_equal(b.node.gossip.peers["a"], b.node.initial)

    asyncio.run(go())
