"""A connection that makes no TLS or HTTP/2 handshake is closed by the node within
`transport.HANDSHAKE_MS` (10 s), not gRPC's default 120 s: a stranger's silent
connections hold a file descriptor each only that long (needs
/tmp/revsec4-transport.patch, `grpc.server_handshake_timeout_ms`). A real node, a raw
TCP connection to its port that sends nothing."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from daemon_helpers import Cluster

from declora.cli.certs import mint
from declora.cli.client import fetch_status
from declora.node.security import TlsFiles

START = 120.0
READ_SECONDS = 90.0  # well past the node's 10 s (slack for a loaded machine), before gRPC's 120 s


@pytest.mark.integration
@pytest.mark.slow
def test_a_silent_connection_is_closed_by_the_node(cluster: Cluster) -> None:
    (a,) = cluster.static(1, [], ["--rounds", "0", "--eval-every", "0", "--solo"])
    a.start()
    cluster.wait_until("n0 answering", lambda: a.status(), START, [a])
    host, port = a.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        assert closed_within(s, READ_SECONDS), (
            f"the node kept a silent connection open for {READ_SECONDS:g} s"
        )
    assert a.running() and a.status() is not None


def closed_within(s: socket.socket, seconds: float) -> bool:
    """Whether the other end closes `s` within `seconds` (what it sends first, the
    server's own HTTP/2 settings, is read and dropped)."""
    end = time.monotonic() + seconds
    try:
        while (left := end - time.monotonic()) > 0:
            s.settimeout(left)
            if not s.recv(1024):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        pass
    return False


RATE = 1_000_000 / 8  # bytes a second: a 1 Mbit/s link...
DELAY = 0.1  # ...with 100 ms each way


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes from `reader` to `writer` at `RATE`, each piece `DELAY` s late."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    free = loop.time()

    async def deliver() -> None:
        while data := (item := await queue.get())[1]:
            await asyncio.sleep(max(0.0, item[0] - loop.time()))
            writer.write(data)
            await writer.drain()
        writer.close()

    task = asyncio.create_task(deliver())
    while data := await reader.read(1400):
        free = max(free, loop.time()) + len(data) / RATE
        queue.put_nowait((free + DELAY, data))
    queue.put_nowait((free + DELAY, b""))
    await task


def slow_link(target: str) -> tuple[str, Callable[[], None]]:
    """A TCP proxy to `target` on a slow link (`pump` both ways): its address, and
    what stops it."""
    host, port = target.rsplit(":", 1)
    loop = asyncio.new_event_loop()
    started: list[asyncio.Server] = []

    async def link(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(
            pump(reader, up_writer), pump(up_reader, writer), return_exceptions=True
        )

    async def serve() -> str:
        server = await asyncio.start_server(link, "127.0.0.1", 0)
        started.append(server)
        return f"127.0.0.1:{server.sockets[0].getsockname()[1]}"

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    address = asyncio.run_coroutine_threadsafe(serve(), loop).result(10)

    async def shutdown() -> None:
        started[0].close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

    return address, stop


@pytest.mark.integration
@pytest.mark.slow
def test_a_tls_node_on_a_slow_link_still_shakes_hands(cluster: Cluster, tmp_path: Path) -> None:
    """A guard: an mTLS Status call over a 1 Mbit/s link with 100 ms each way (a new
    connection, its TLS and HTTP/2 handshakes) is answered within the node's 10 s."""
    pki = tmp_path / "pki"
    mint(pki, ["n0"], ["127.0.0.1", "localhost"], 1, False)
    (a,) = cluster.static(1, [], ["--rounds", "0", "--eval-every", "0", "--solo"])
    a.start(
        [
            *("--tls-cert", str(pki / "n0.pem"), "--tls-key", str(pki / "n0-key.pem")),
            *("--tls-ca", str(pki / "ca.pem")),
        ]
    )
    a.tls = TlsFiles.load(pki / "cli.pem", pki / "cli-key.pem", pki / "ca.pem")
    cluster.wait_until("n0 answering", lambda: a.status(), START, [a])
    address, stop = slow_link(a.address)
    try:
        began = time.monotonic()
        reply = fetch_status(address, timeout=60, tls=a.tls)
        print(f"\nmTLS Status over 1 Mbit/s, 100 ms each way: {time.monotonic() - began:.2f} s")
    finally:
        stop()
    assert reply.node_id == "n0"
