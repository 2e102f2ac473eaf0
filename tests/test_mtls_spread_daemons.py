"""Revocation spreading between real `declora-node start` processes (mTLS, tiny model):
a line n0-n1-n2-n3, each node started with its own copy of the swarm's --tls-crl.
Revoking n3's certificate into n0's copy alone makes n2 (two hops from n0) drop n3,
and n3's log says it is revoked; nobody copies files and no --tls-crl file changes."""

from __future__ import annotations

import functools
import shutil
import time
from pathlib import Path

import pytest
from daemon_helpers import Cluster, live_ids
from test_revocation_daemons import RUN, revoke
from test_security import START, log_has, mint, node_tls

from declora.node.security import TlsFiles


@pytest.mark.integration
@pytest.mark.slow  # ~1 min of real processes; test_mtls_spread.py has the same line in-process
@pytest.mark.timeout(420)
def test_a_revocation_on_one_node_reaches_the_far_end_of_a_line(
    cluster: Cluster, tmp_path: Path
) -> None:
    pki = tmp_path / "pki"
    mint(pki, "n0,n1,n2,n3")
    revoke(pki, "--serial", "0x1234")  # CRL number 1: revokes none of them
    nodes = cluster.static(4, [(0, 1), (1, 2), (2, 3)], RUN)
    lists = []
    for i, node in enumerate(nodes):
        own = pki / f"n{i}-crl.pem"
        shutil.copy(pki / "crl.pem", own)
        lists.append(own)
        node.start([*node_tls(pki, f"n{i}"), "--tls-crl", str(own)])
        node.tls = TlsFiles.load(pki / "cli.pem", pki / "cli-key.pem", pki / "ca.pem")
    n0, n1, n2, n3 = nodes
    cluster.wait_until(
        "the line joined", lambda: live_ids(n2.status()) == {"n1", "n3"}, START, running=nodes
    )
    untouched = [p.read_bytes() for p in lists[1:]]
    start = time.monotonic()
    revoke(pki, "--cert", str(pki / "n3.pem"), "--crl", str(lists[0]))
    cluster.wait_until(
        "n2 dropping n3",
        functools.partial(
            log_has, n2, r"neighbour n3 left the live set: certificate serial .* revoked"
        ),
        120,
        running=[n0, n1, n2],
    )
    print(f"\nrevoked into n0's --tls-crl; n2 dropped n3 after {time.monotonic() - start:.1f} s")
    assert live_ids(n2.status()) == {"n1"}, cluster.report()
    assert log_has(n1, r"took the newer revocation list of neighbour n0 \(CRL number 2\)")
    cluster.wait_until(
        "n3 told it is revoked",
        functools.partial(log_has, n3, r"refuses this node: .*\(n3\) is revoked"),
        60,
        running=[n3],
    )
    assert [p.read_bytes() for p in lists[1:]] == untouched
