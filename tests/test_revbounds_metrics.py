"""The metrics endpoint's connection cap (node/metrics.py) cannot lock a scraper out: a
client holding every slot, idle or trickling, loses its oldest connection to a new
one (before: every scrape was closed unanswered while it held them)."""

from __future__ import annotations

import socket
import urllib.request

from daemon_helpers import HOST, free_ports

from declora.node.metrics import MAX_CONNECTIONS, NodeMetrics


def test_a_client_holding_every_slot_does_not_lock_prometheus_out() -> None:
    (port,) = free_ports(1)
    node = NodeMetrics()
    node.rounds.inc()
    node.serve(port)
    held = [socket.create_connection((HOST, port)) for _ in range(MAX_CONNECTIONS)]
    for s in held[::2]:
        s.sendall(b"GET /metr")  # half trickle a request (never finished), half idle
    try:
        for _ in range(3):
            url = f"http://{HOST}:{port}/metrics"
            body = urllib.request.urlopen(url, timeout=10).read().decode()
            assert "declora_rounds_total 1.0" in body
    finally:
        for s in held:
            s.close()
