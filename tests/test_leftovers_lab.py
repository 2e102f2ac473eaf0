"""A lab whose nodes are killed (a second Ctrl-C while they stop) waits for them and
records each one's exit code (-9), not null."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from test_lab_signals import lab_args
from typer.testing import CliRunner

from declora.cli import lab_swarm
from declora.cli.app import app

STUBBORN = (  # a node that ignores SIGTERM: only SIGKILL ends it
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
)


def test_nodes_killed_by_a_second_ctrl_c_have_their_exit_code_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the lab killed them and wrote results.json at once: exit code null."""

    def stubborn(*_: Any) -> list[str]:
        return [sys.executable, "-c", STUBBORN]

    def second_ctrl_c(_: Any, grace: float = 60.0) -> None:
        raise KeyboardInterrupt  # while the lab waits for the nodes to stop

    monkeypatch.setattr(lab_swarm, "node_command", stubborn)
    monkeypatch.setattr(lab_swarm, "_stop", second_ctrl_c)
    out = tmp_path / "out"
    args = [*lab_args(tmp_path, out), "--nodes", "2", "--topology", "ring", "--timeout", "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1, res.output
    summary = json.loads((out / "results.json").read_text())
    assert summary["timed_out"] and not summary["ok"]
    assert summary["exit_codes"] == {"lab-0": -9, "lab-1": -9}
