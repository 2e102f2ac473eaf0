"""Prometheus metrics of one node, on their own registry (served on --metrics-port).

The endpoint (`NodeMetrics.serve`) holds at most `MAX_CONNECTIONS` connections at
once, each with a thread of its own, and closes one that sends or reads nothing for
`IDLE_SECONDS`: a client that opens connections and leaves them idle (a scraper cut
off mid-request, a stray process) never piles up threads in a node that runs for
days. A connection past the limit is closed at once (logged once a window); a scraper
asks again."""

from __future__ import annotations

import logging
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 16  # connections to the metrics endpoint served at once
IDLE_SECONDS = 10.0  # a connection silent this long (either way) is closed


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rounds = Counter("declora_rounds_total", "Completed rounds", registry=r)
        self.bytes_sent = Counter("declora_bytes_sent_total", "Payload bytes pushed", registry=r)
        self.bytes_received = Counter(
            "declora_bytes_received_total", "Payload bytes accepted", registry=r
        )
        self.rejected = Counter(
            "declora_rejected_total", "Messages refused, by reason", ["reason"], registry=r
        )
        self.neighbors = Gauge("declora_live_neighbors", "Neighbours in the live set", registry=r)
        self.loss = Gauge("declora_train_loss", "Mean training loss of the last round", registry=r)
        self.accuracy = Gauge("declora_eval_accuracy", "Last evaluation accuracy", registry=r)
        self.round = Gauge("declora_round", "Current round", registry=r)
        self.round_seconds = Histogram(
            "declora_round_seconds",
            "Wall time of a round",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
            registry=r,
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> WSGIServer:
        """Serve the metrics on addr:port from a daemon thread (OSError when the port
        is taken); the server, bounded as the module says."""
        server = make_server(
            addr,
            port,
            make_wsgi_app(self.registry),
            _BoundedServer6 if ":" in addr else _BoundedServer,
            handler_class=_QuietHandler,
        )
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        return server


class _QuietHandler(WSGIRequestHandler):
    """Logs no request; its socket times out after `IDLE_SECONDS` of silence."""

    timeout = IDLE_SECONDS  # StreamRequestHandler sets it on the connection

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _BoundedServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most `MAX_CONNECTIONS` at once."""

    daemon_threads = True

    def __init__(self, *args: Any, **kw: Any) -> None:
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kw)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: closed, the client asks again
            log.warning(  # the same line each time: written once a window (`logs`)
                "metrics endpoint: %d connections open already; closed a new one",
                MAX_CONNECTIONS,
            )
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection timed out or broke: closed, nothing printed (socketserver
        prints a traceback to stderr)."""


class _BoundedServer6(_BoundedServer):
    address_family = socket.AF_INET6
