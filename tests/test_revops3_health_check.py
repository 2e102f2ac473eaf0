"""`status --check` with the node's own certificate (revops3's review of opsleft's
1b5a843): the name override that lets a node's own certificate answer for 127.0.0.1
applies to a loopback target only; a remote host is checked against its own name."""

from __future__ import annotations

import pytest

from declora.cli.certs import mint
from declora.cli.health_check import probe_options
from declora.node.security import TlsFiles

OVERRIDE = "grpc.ssl_target_name_override"


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    pki = tmp_path_factory.mktemp("pki")
    mint(pki, ["lab-b"], ["192.0.2.1"], 30, False)
    tls = TlsFiles.load(pki / "lab-b.pem", pki / "lab-b-key.pem", pki / "ca.pem")
    assert tls is not None
    return tls


def test_the_node_beside_it_answers_under_its_own_name(own: TlsFiles) -> None:
    assert probe_options("127.0.0.1:7070", own) == [(OVERRIDE, "192.0.2.1")]  # its name
    assert probe_options("192.0.2.1:7070", own) == []  # named by the certificate


@pytest.mark.parametrize("target", ["198.51.100.7:7070", "peer.example:7070"])
def test_another_host_is_checked_against_its_own_name(own: TlsFiles, target: str) -> None:
    """Before, a peer probed with the node's files had to present the node's own name."""
    assert probe_options(target, own) == []


def test_a_black_holed_target_is_unhealthy_after_the_timeout() -> None:
    """A listener that never answers (its connections wait in the backlog): the probe
    ends at --timeout with exit 1 and an error line, no hang (a guard)."""
    import socket
    import subprocess

    from daemon_helpers import CLI

    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)  # never accepted
        target = f"127.0.0.1:{hole.getsockname()[1]}"
        run = subprocess.run(
            [*CLI, "status", "--check", "--target", target, "--timeout", "1"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 1, run
    assert run.stderr.startswith(f"error: {target} is not healthy"), run.stderr
    assert "\nhint: " in run.stderr and "Traceback" not in run.stderr, run.stderr
