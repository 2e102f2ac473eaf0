"""test_revocation_daemons.py's checks on in-process daemons (torch loaded once), run
by `Daemon.run` as `start` runs one and served over real mTLS gRPC on 127.0.0.1
(`daemon_helpers.InProcess`): n0 follows its --tls-crl while running (a garbage list
keeps the last good one, revoking n1 drops it and refuses its Hellos, revoking the
CLI's certificate ends its Status calls). The `declora-node start` version:
test_revocation_daemons.py (make test-slow)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from daemon_helpers import HOST, InProcess, free_ports, node_settings, train_args
from test_revocation_daemons import RUN, revocation_checks, revoke
from test_security import mint, node_tls


@pytest.mark.timeout(300)
def test_an_in_process_node_drops_and_refuses_what_its_list_revokes(
    synthetic_jsonl: Path, tmp_path: Path
) -> None:
    pki = tmp_path / "pki"
    mint(pki, "n0,n1")
    revoke(pki, "--serial", "0x1234")  # a list that revokes none of them yet
    ports = free_ports(2)
    flags = [*train_args(synthetic_jsonl), *RUN]
    crl = ["--tls-crl", str(pki / "crl.pem")]
    swarm = InProcess()
    try:
        n0, n1 = (
            swarm.start(
                node_settings(
                    flags + node_tls(pki, name) + (crl if i == 0 else []),
                    node_id=name,
                    swarm_id="revocation",
                    listen=f"{HOST}:{ports[i]}",
                    peers=[f"{HOST}:{ports[1 - i]}"],
                    partition=f"{i}/2",
                    checkpoint_dir=tmp_path / name,
                )
            )
            for i, name in enumerate(("n0", "n1"))
        )

        def wait(what: str, check: Callable[[], object], timeout: float) -> object:
            deadline = time.monotonic() + timeout
            while not (done := check()):
                assert swarm.running(), f"a node stopped while waiting for {what}"
                if time.monotonic() > deadline:
                    pytest.fail(f"timed out waiting for {what}\n" + n0.log()[-3000:])
                time.sleep(0.2)
            return done

        revocation_checks(n0, n1, pki, wait)
    finally:
        codes = swarm.close()
    assert codes == [0, 0], n0.log()[-3000:]
