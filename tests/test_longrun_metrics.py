"""The metrics endpoint of a node that runs for days holds no thread for a connection
left idle (audit "longrun": 200 idle connections held 200 threads, for ever)."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

import pytest
from daemon_helpers import HOST, free_ports

from declora.node import metrics
from declora.node.metrics import NodeMetrics

IDLE = 40  # connections opened and left idle
DEADLINE = 20.0  # seconds the test polls for the server to close them


def closed(s: socket.socket) -> bool:
    """Whether the server closed `s` (nothing was sent on it)."""
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_idle_connections_are_closed_and_hold_few_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "IDLE_SECONDS", 0.5, raising=False)
    handler = getattr(metrics, "_QuietHandler", None)
    if handler is not None:
        monkeypatch.setattr(handler, "timeout", 0.5)
    (port,) = free_ports(1)
    node = NodeMetrics()
    node.rounds.inc()
    base = threading.active_count()
    node.serve(port)
    idle = [socket.create_connection((HOST, port)) for _ in range(IDLE)]
    for s in idle:
        s.setblocking(False)
    most, end = 0, time.monotonic() + DEADLINE
    while not all(closed(s) for s in idle) and time.monotonic() < end:
        most = max(most, threading.active_count() - base - 1)  # less the server's own
        time.sleep(0.05)
    shut = sum(closed(s) for s in idle)
    print(f"{IDLE} idle connections: at most {most} threads at once, {shut} closed by the server")
    for s in idle:
        s.close()
    assert shut == IDLE
    assert most <= metrics.MAX_CONNECTIONS
    body = urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5).read().decode()
    assert "declora_rounds_total 1.0" in body  # and it still serves
