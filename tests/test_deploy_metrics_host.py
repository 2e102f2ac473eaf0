"""--metrics-host: the metrics endpoint bound 127.0.0.1 only, so Prometheus in another
container or pod (or on another machine) could never scrape a node in a container;
`DECLORA_METRICS_HOST=0.0.0.0` binds every interface (the default stays loopback)."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from declora.cli.app import app
from declora.node.daemon.startup import serve_metrics
from declora.node.metrics import NodeMetrics
from declora.node.settings import load_settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _listening_on(port: int) -> set[str]:
    """The local IPv4 addresses (hex, as /proc/net/tcp writes them) listening on `port`."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        host, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # LISTEN
            found.add(host)
    return found


@pytest.mark.parametrize(("host", "bound"), [("0.0.0.0", "00000000"), ("127.0.0.1", "0100007F")])
def test_metrics_bind_the_host_given(host: str, bound: str) -> None:
    port = _free_port()
    serve_metrics(NodeMetrics(), port, host)
    assert _listening_on(port) == {bound}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200


def test_metrics_host_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert load_settings({}).metrics_host == "127.0.0.1"  # loopback unless asked
    monkeypatch.setenv("DECLORA_METRICS_HOST", "0.0.0.0")
    assert load_settings({}).metrics_host == "0.0.0.0"
    monkeypatch.setenv("DECLORA_METRICS_HOST", "prometheus.local")
    res = CliRunner().invoke(app, ["start", "--solo", "--checkpoint-dir", str(tmp_path / "s")])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: ") and "DECLORA_METRICS_HOST" in res.stderr
    assert "not an IP address" in res.stderr and "Traceback" not in res.output
    assert not (tmp_path / "s").exists()
