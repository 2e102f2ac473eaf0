"""Prometheus metrics of one node, on their own registry (served on --metrics-port).

The endpoint (`NodeMetrics.serve`) holds at most `MAX_CONNECTIONS` connections at
once, each with a thread of its own, and closes one that sends or reads nothing for
`IDLE_SECONDS`: a client that opens connections and leaves them idle (a scraper cut
off mid-request, a stray process) never piles up threads in a node that runs for
days. A connection past the limit closes the oldest one open (logged once a window),
so a client holding every slot (idle, or trickling a byte before each timeout) cannot
lock a scraper out: a scrape, served in milliseconds, is the newest connection."""

from __future__ import annotations

import contextlib
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
EVICT_WAIT = 2.0  # seconds a new connection waits for the oldest one's thread to end


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
    """A thread per connection, at most `MAX_CONNECTIONS` at once: a new one past that
    closes the oldest (its thread ends, then the new one's starts)."""

    daemon_threads = True

    def __init__(self, *args: Any, **kw: Any) -> None:
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.lock = threading.Lock()
        self.open: dict[Any, None] = {}  # connections served now, the oldest first
        super().__init__(*args, **kw)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self._close_oldest()
            if not self.slots.acquire(timeout=EVICT_WAIT):  # its thread did not end
                self.shutdown_request(request)
                return
        with self.lock:
            self.open[request] = None
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._ended(request)
            raise

    def _close_oldest(self) -> None:
        """Shut the oldest connection served (its thread's read or write fails, the
        thread ends and frees its slot)."""
        with self.lock:
            oldest = next(iter(self.open), None)
            self.open.pop(oldest, None)
        if oldest is None:
            return
        log.warning(  # the same line each time: written once a window (`logs`)
            "metrics endpoint: %d connections open already; closed the oldest",
            MAX_CONNECTIONS,
        )
        with contextlib.suppress(OSError):  # it closed meanwhile
            oldest.shutdown(socket.SHUT_RDWR)

    def _ended(self, request: Any) -> None:
        with self.lock:
            self.open.pop(request, None)
        self.slots.release()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._ended(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection timed out or broke: closed, nothing printed (socketserver
        prints a traceback to stderr)."""


class _BoundedServer6(_BoundedServer):
    address_family = socket.AF_INET6
