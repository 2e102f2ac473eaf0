"""Revocation against real `declora-node start` processes (mTLS pair, tiny model): a
node started with --tls-crl follows the file while running. Revoking its neighbour's
certificate (`declora-node certs revoke`) drops the neighbour within seconds and keeps
it out (its Hellos refused, counted `revoked`); revoking the CLI's certificate ends
its Status calls; a list that turns to garbage keeps the last good one, one warning."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from daemon_helpers import Cluster, live_ids
from test_security import START, log_has, mint, node_tls, pair
from typer.testing import CliRunner

from declora.cli.app import app
from declora.node.security import TlsFiles

runner = CliRunner()
RUN = ["--rounds", "0", "--local-steps", "1", "--eval-every", "0", "--round-deadline", "30"]


def revoke(pki: Path, *args: str) -> None:
    res = runner.invoke(app, ["certs", "revoke", "--output", str(pki), *args])
    assert res.exit_code == 0, res.output


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_running_node_drops_and_refuses_what_its_list_revokes(
    cluster: Cluster, tmp_path: Path
) -> None:
    pki = tmp_path / "pki"
    mint(pki, "n0,n1")
    revoke(pki, "--serial", "0x1234")  # a list that revokes none of them yet
    crl = pki / "crl.pem"
    n0, n1 = pair(cluster, ("n0", "n1"), RUN)
    n0.start([*node_tls(pki, "n0"), "--tls-crl", str(crl)])
    n1.start(node_tls(pki, "n1"))
    for node in (n0, n1):
        node.tls = TlsFiles.load(pki / "cli.pem", pki / "cli-key.pem", pki / "ca.pem")

    def live(node_id: str, want: set[str]) -> bool:
        node = n0 if node_id == "n0" else n1
        return live_ids(node.status()) == want

    cluster.wait_until("n0 and n1 joined", lambda: live("n0", {"n1"}), START, running=[n0, n1])
    crl.write_text("garbage\n")  # keeps the last good list, one warning
    cluster.wait_until(
        "n0's warning about the bad list",
        functools.partial(log_has, n0, r"WARNING.*--tls-crl: .*keeping the 1 revocations"),
        60,
        running=[n0],
    )
    assert live("n0", {"n1"})
    crl.unlink()
    revoke(pki, "--cert", str(pki / "n1.pem"))
    cluster.wait_until(
        "n0 dropping n1",
        functools.partial(
            log_has,
            n0,
            r"neighbour n1 left the live set: certificate serial .* is revoked by --tls-crl",
        ),
        60,
        running=[n0],
    )
    cluster.wait_until(
        "n1's Hellos refused",
        functools.partial(
            log_has, n0, r"refused a message: certificate serial .* \(n1\) is revoked"
        ),
        60,
        running=[n0],
    )
    assert live("n0", set()), cluster.report()
    assert n0.log().count("keeping the 1 revocations") == 1
    revoke(pki, "--cert", str(pki / "cli.pem"))
    cluster.wait_until("the CLI refused", lambda: n0.status() is None, 60, running=[n0])
    status = runner.invoke(app, ["status", "--target", n0.address, *node_tls(pki, "cli")])
    assert status.exit_code == 1 and "(cli) is revoked by --tls-crl" in status.stderr, status.output
