"""Revocation against real `declora-node start` processes (mTLS pair, tiny model): a
node started with --tls-crl follows the file while running. Revoking its neighbour's
certificate (`declora-node certs revoke`) drops the neighbour within seconds and keeps
it out (its Hellos refused, counted `revoked`); revoking the CLI's certificate ends
its Status calls; a list that turns to garbage keeps the last good one, one warning."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest
from daemon_helpers import Cluster, Member, live_ids
from test_security import START, log_has, mint, node_tls, pair
from typer.testing import CliRunner

from declora.cli.app import app
from declora.node.security import TlsFiles

runner = CliRunner()
RUN = ["--rounds", "0", "--local-steps", "1", "--eval-every", "0", "--round-deadline", "30"]


def revoke(pki: Path, *args: str) -> None:
    res = runner.invoke(app, ["certs", "revoke", "--output", str(pki), *args])
    assert res.exit_code == 0, res.output


def revocation_checks(
    n0: Member, n1: Member, pki: Path, wait: Callable[[str, Callable[[], object], float], object]
) -> None:
    """n0 (--tls-crl PKI/crl.pem, revoking none of them) and n1 join; a list turned to
    garbage keeps the last good one (one warning); revoking n1 drops it and refuses its
    Hellos; revoking the CLI's certificate ends its Status calls. `wait(what, check,
    timeout)` polls `check` until it is true (and fails when a node stops)."""
    crl = pki / "crl.pem"
    for node in (n0, n1):
        node.tls = TlsFiles.load(pki / "cli.pem", pki / "cli-key.pem", pki / "ca.pem")

    def live(node_id: str, want: set[str]) -> bool:
        node = n0 if node_id == "n0" else n1
        return live_ids(node.status()) == want

    wait("n0 and n1 joined", lambda: live("n0", {"n1"}), START)
    crl.write_text("garbage\n")  # keeps the last good list, one warning
    wait(
        "n0's warning about the bad list",
        functools.partial(log_has, n0, r"WARNING.*--tls-crl: .*keeping the 1 revocations"),
        60,
    )
    assert live("n0", {"n1"})
    crl.unlink()
    revoke(pki, "--cert", str(pki / "n1.pem"))
    wait(
        "n0 dropping n1",
        functools.partial(
            log_has,
            n0,
            r"neighbour n1 left the live set: certificate serial .* is revoked by --tls-crl",
        ),
        60,
    )
    wait(
        "n1's Hellos refused",
        functools.partial(
            log_has, n0, r"refused a message: certificate serial .* \(n1\) is revoked"
        ),
        60,
    )
    assert live("n0", set()), n0.log()[-3000:]
    assert n0.log().count("keeping the 1 revocations") == 1
    revoke(pki, "--cert", str(pki / "cli.pem"))
    wait("the CLI refused", lambda: n0.status() is None, 60)
    status = runner.invoke(app, ["status", "--target", n0.address, *node_tls(pki, "cli")])
    assert status.exit_code == 1 and "(cli) is revoked by --tls-crl" in status.stderr, status.output


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.slow  # ~25 s of processes; test_testspeed3_revocation.py: the same in-process
def test_a_running_node_drops_and_refuses_what_its_list_revokes(
    cluster: Cluster, tmp_path: Path
) -> None:
    """`revocation_checks` on two `declora-node start` processes; make test runs them
    on in-process daemons over real mTLS gRPC (test_testspeed3_revocation.py)."""
    pki = tmp_path / "pki"
    mint(pki, "n0,n1")
    revoke(pki, "--serial", "0x1234")  # a list that revokes none of them yet
    n0, n1 = pair(cluster, ("n0", "n1"), RUN)
    n0.start([*node_tls(pki, "n0"), "--tls-crl", str(pki / "crl.pem")])
    n1.start(node_tls(pki, "n1"))

    def wait(what: str, check: Callable[[], object], timeout: float) -> object:
        return cluster.wait_until(what, check, timeout, running=[n0])

    revocation_checks(n0, n1, pki, wait)
