"""Header-only calls opened as fast as raw HTTP/2 connections send them keep no caller
out (revsec2; a real node, real gRPC on 127.0.0.1, `revsec2_h2.Stalled`). The
interceptor (`first_message`) cuts calls waiting for their message, but a cut call
keeps its place in gRPC's cap until its refusal went out, and a stranger opening
calls faster than the node refuses them (8 connections from 127.0.0.2) had an honest
Status refused `Concurrent RPC limit exceeded!` (19 of 20 here; 36 of 78 in 15 s from
2 connections). A connection may now hold `transport.STREAMS_PER_CONNECTION` calls at
once: gRPC refuses the others (REFUSED_STREAM) before any reaches the node."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from daemon_helpers import Cluster, free_ports, status_or_none, train_args
from revsec2_h2 import Stalled

STRANGER = "127.0.0.2"
CONNECTIONS = 8
FLOOD_SECONDS = 8.0  # how long the stranger floods
ASKED = 20  # honest Status calls meanwhile (one every FLOOD_SECONDS / ASKED s)


@pytest.fixture
def node(cluster: Cluster) -> Iterator[Any]:
    args = [*train_args(cluster.data), "--swarm-id", cluster.swarm_id, "--solo"]
    n0 = cluster.add("n0", free_ports(1)[0], args).start()
    cluster.wait_until("n0 answers Status", n0.status, 120.0, running=[n0])
    yield n0


@pytest.mark.slow  # ~15 s of a real node, make test-slow (so is attack 13); test_side_streams.py
# (calls per connection) and test_redteam2_first_message.py (header-only calls) stay
def test_a_flood_of_header_only_calls_keeps_no_caller_out(node: Any) -> None:
    conns = [Stalled(node.address, STRANGER) for _ in range(CONNECTIONS)]
    done = threading.Event()

    def flood(conn: Stalled) -> None:
        while not done.is_set():
            try:
                conn.open_calls("/declora.v1.Swarm/Handshake", 200)
            except OSError:
                return

    threads = [threading.Thread(target=flood, args=(c,), daemon=True) for c in conns]
    for t in threads:
        t.start()
    answered = 0
    try:
        for _ in range(ASKED):
            # a fresh connection each time, as the CLI's: before, most were refused
            answered += status_or_none(node.address, timeout=5.0) is not None
            time.sleep(FLOOD_SECONDS / ASKED)
    finally:
        done.set()
        for t in threads:
            t.join(10)
        for c in conns:
            c.close()
    assert node.running()
    assert answered == ASKED
