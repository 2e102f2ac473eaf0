"""A running node applies a revocation while it waits for its neighbours (rev-tls): the
list is looked at by a task of its own (`auth.watch_revocations`), started before the
startup wait. It was looked at by the reconnect loop only, which starts after that wait
(minutes, up to --startup-timeout) and runs a dial round (up to three 5 s timeouts a
peer) between two looks: a neighbour revoked meanwhile stayed live and was served."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from daemon_helpers import free_ports
from test_auth_mismatch import live, serve, stop
from test_daemon_parts import settings
from test_revocation_grpc import load

from declora.cli.certs import mint, revoke
from declora.node.daemon.daemon import Daemon
from declora.node.daemon.transport import Transport


def test_a_neighbour_revoked_during_the_startup_wait_is_dropped(
    synthetic_jsonl: Path, tmp_path: Path
) -> None:
    """a wants 2 neighbours and has only b: it is still in its startup wait when b is
    revoked; a drops b within a few looks at the list, and refuses b's Hello after."""
    pki = tmp_path / "pki"
    mint(pki, ["a", "b"], ["127.0.0.1", "localhost"], 30, False)
    crl = revoke(pki, [], ["0x1234"], None).crl
    pa, pb_ = free_ports(2)
    sa = settings("a", synthetic_jsonl, 0, [], min_peers=2, startup_timeout=120.0)
    sb = settings("b", synthetic_jsonl, 1, [])
    sa.listen = sa.advertise = f"127.0.0.1:{pa}"
    sb.listen = sb.advertise = f"127.0.0.1:{pb_}"
    da = Daemon(sa, Transport(sa, load(pki, "a", crl)))
    db = Daemon(sb, Transport(sb, load(pki, "b")))
    b = db.build()

    async def until(check: object, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if check():  # type: ignore[operator]
                return True
            await asyncio.sleep(0.1)
        return False

    async def go() -> None:
        await serve([(db, b)])
        running = asyncio.create_task(da.run())
        try:
            joined = False
            end = time.monotonic() + 60
            while not joined and time.monotonic() < end:  # a answers once it has loaded
                joined = await b.handshaker.dial(sa.advertise) is not None
                await asyncio.sleep(0.2)
            assert joined and da.parts is not None
            a = da.parts
            assert live(a) == {"b"} and len(a.peers.live) < 2  # still waiting
            revoke(pki, [pki / "b.pem"], [], crl)
            assert await until(lambda: live(a) == set(), 20), "b is still live"
            assert a.counters.rejected.get("revoked") == 1
            assert await b.handshaker.dial(sa.advertise) is None
        finally:
            da.progress.stop_requested = True
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await da.transport.stop(grace=0)
            await stop([(db, b)])

    asyncio.run(go())
