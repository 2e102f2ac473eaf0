"""`status` beside an mTLS node presents the node's own TLS files when it is given no
--tls-* flags (DECLORA_TLS_*, else --config's tls_*), as `status --check` and `start`
read them: `docker exec NODE declora-node status` failed with "the node closed the
connection" in a container whose node runs under mTLS."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from daemon_helpers import HOST, InProcess, free_ports, node_settings, train_args
from test_security import mint, node_tls

from declora.cli.client import show_status
from declora.node.option_values import OptionValues
from declora.node.security import TlsFiles


@pytest.mark.timeout(300)
def test_status_presents_the_nodes_own_tls_files(
    synthetic_jsonl: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pki = tmp_path / "pki"
    mint(pki, "n0")
    [port] = free_ports(1)
    flags = [*train_args(synthetic_jsonl), "--rounds", "0", "--eval-every", "0", "--solo"]
    swarm = InProcess()
    try:
        node = swarm.start(
            node_settings(
                flags + node_tls(pki, "n0"),
                node_id="n0",
                listen=f"{HOST}:{port}",
                checkpoint_dir=tmp_path / "n0",
            )
        )
        for name, path in (("CERT", "n0.pem"), ("KEY", "n0-key.pem"), ("CA", "ca.pem")):
            monkeypatch.setenv(f"DECLORA_TLS_{name}", str(pki / path))
        node.tls = TlsFiles.load(pki / "cli.pem", pki / "cli-key.pem", pki / "ca.pem")
        deadline = time.monotonic() + 120
        while node.status() is None:  # serving (asked with the CLI's certificate)
            assert time.monotonic() < deadline, node.log()[-2000:]
            time.sleep(0.2)
        capsys.readouterr()
        assert show_status(f"{HOST}:{port}", True, 5.0, None) == 0, capsys.readouterr().err
        assert json.loads(capsys.readouterr().out)["node_id"] == "n0"
        for name in ("CERT", "KEY", "CA"):  # from --config's keys as well
            monkeypatch.delenv(f"DECLORA_TLS_{name}")
        config = {"tls_cert": str(pki / "n0.pem"), "tls_key": str(pki / "n0-key.pem")}
        config["tls_ca"] = str(pki / "ca.pem")
        assert show_status(f"{HOST}:{port}", True, 5.0, None, OptionValues(config=config)) == 0
        monkeypatch.setenv("DECLORA_TLS_CERT", str(tmp_path / "missing.pem"))
        assert show_status(f"{HOST}:{port}", True, 5.0, None) == 2  # named, as --check does
        assert "DECLORA_TLS_CERT" in capsys.readouterr().err
    finally:
        codes = swarm.close()
    assert codes == [0]
