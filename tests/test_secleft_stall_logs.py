"""What gRPC logs for calls a caller stalls and then cuts stays a few lines (secleft; a
guard, it held before: the node's log folds a library's repeats, `logs.RepeatFilter`).
Each connection that closes with an answer it never read makes grpc.aio log an ERROR
with a traceback ("ExecuteBatchError raised in core by servicer method [...]"); a
stranger opening and cutting such connections at will writes that record once per
method and window, the rest counted."""

from __future__ import annotations

import asyncio
import io
import logging
import sys
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc
from revsec2_h2 import Stalled

from declora.node import logs
from declora.node.daemon.first_message import FirstMessage
from declora.node.daemon.health import SERVING, Health

CONNECTIONS = 30  # each cut with a Watch and a Check left unread
PATHS = ("/grpc.health.v1.Health/Watch", "/grpc.health.v1.Health/Check")
MARK = "ExecuteBatchError raised in core"


@pytest.fixture
def stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The node's log configuration, writing to a string."""
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    logger = logs.configure("victim", "text", "INFO")
    try:
        yield out
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, logs._LibraryHandler)]:
            root.removeHandler(handler)
        logger.handlers.clear()
        logger.propagate = True


def test_cut_stalled_calls_write_a_few_log_records(stderr: io.StringIO) -> None:
    async def go() -> None:
        server = grpc.aio.server(interceptors=[FirstMessage()])
        health = Health()
        health.set("", SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            for _ in range(CONNECTIONS):
                stalled = await asyncio.to_thread(Stalled, f"127.0.0.1:{port}", "127.0.0.2")
                for path in PATHS:
                    stalled.call(path)
                await asyncio.sleep(0.05)
                await asyncio.to_thread(stalled.close)
            await asyncio.sleep(0.5)
        finally:
            await server.stop(None)

    asyncio.run(go())
    written = stderr.getvalue()
    assert 0 < written.count(MARK) <= len(PATHS), written[-3000:]
