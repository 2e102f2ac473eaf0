"""deploy/declora-node.service, the systemd unit: it stops the node politely, restarts
failures but not configuration mistakes, leaves it only its state, cache and a private
/tmp to write, and names only real options; `systemd-analyze verify` accepts it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_deploy_hardening import SAVE_SECONDS

from declora.node.daemon.daemon import STOP_GRACE
from declora.node.daemon.startup import CONFIG
from declora.node.settings import NodeSettings

UNIT = Path(__file__).resolve().parents[1] / "deploy" / "declora-node.service"


def directives() -> dict[str, list[str]]:
    """Each `Key=value` of the unit (keys may repeat, as Environment= does)."""
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_stop_restart_and_sandbox() -> None:
    d = directives()
    assert d["ExecStart"][0].split()[1:3] == ["start", "--config"]
    assert d["KillSignal"] == ["SIGTERM"]
    assert float(d["TimeoutStopSec"][0]) >= STOP_GRACE + SAVE_SECONDS
    assert d["Restart"] == ["on-failure"]
    assert str(CONFIG) in d["RestartPreventExitStatus"][0].split()
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "StateDirectory": "declora",
        "WorkingDirectory": "/var/lib/declora",
    }.items():
        assert d[key] == [value], key
    assert d["User"] != ["root"]


def test_environment_names_real_options() -> None:
    names = [v.split("=", 1)[0] for v in directives()["Environment"]]
    declora = [n.removeprefix("DECLORA_").lower() for n in names if n.startswith("DECLORA_")]
    assert declora and set(declora) <= set(NodeSettings.model_fields), declora
    assert directives()["CacheDirectory"] == ["declora"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    node = Path(sys.executable).with_name("declora-node")
    assert node.is_file()
    unit = tmp_path / UNIT.name  # ExecStart pointed at this venv's declora-node
    unit.write_text(UNIT.read_text().replace("/opt/declora/bin/declora-node", str(node)))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
