"""`lab` on data too small for its default validation fraction goes on without a
validation share, as `simulate` does: each daemon took the fraction the lab wrote into
its node.json as the user's choice and refused it (every node exited 2). A fraction the
user chose is refused, as before, but by the lab before any daemon starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from declora.cli.app import app
from declora.cli.lab import LabConfig, lab_scheme, lab_validation, node_config
from declora.node.data_files import DataError
from declora.node.settings import NodeSettings

CLI = [sys.executable, "-m", "declora.cli"]
CAPITALS = ["France", "Italy", "Spain", "Peru", "Chile", "Kenya"] * 2


def chats(folder: Path, rows: int = 12) -> Path:
    """`rows` one-reply conversations: 2 nodes get 5 each to train on, 0.1 x 5 -> 0."""
    path = folder / "chats.jsonl"
    turns = [
        [
            {"role": "user", "content": f"Capital of {CAPITALS[i % 12]}? ({i})"},
            {"role": "assistant", "content": f"Its capital, number {i}."},
        ]
        for i in range(rows)
    ]
    lines = [json.dumps({"messages": t}) for t in turns]
    path.write_text("\n".join(lines) + "\n")
    return path


def lab_config(data: Path, **chosen: object) -> LabConfig:
    cfg, _ = lab_scheme(LabConfig(task="lm", model="tiny-llama", data=str(data), nodes=2, **chosen))
    return cfg


def test_the_lab_default_fraction_that_holds_out_no_row_becomes_none(tmp_path: Path) -> None:
    cfg, line = lab_validation(lab_config(chats(tmp_path)))
    assert cfg.validation_fraction == 0.0
    assert "--validation-fraction 0.1 holds out no row" in line
    assert "going on without validation" in line
    options = node_config(cfg, 0, "127.0.0.1:7001", ["127.0.0.1:7002"], tmp_path, "s")
    assert NodeSettings(**options).validation_fraction == 0.0


@pytest.mark.parametrize(
    "chosen", [{"validation_fraction": 0.1}, {"extra": {"validation_fraction": 0.1}}]
)
def test_a_chosen_fraction_that_holds_out_no_row_is_refused(tmp_path: Path, chosen: dict) -> None:
    with pytest.raises(DataError) as err:
        lab_validation(lab_config(chats(tmp_path), **chosen))
    assert "--validation-fraction 0.1 holds out no row" in err.value.message


def test_the_lab_refuses_a_chosen_fraction_before_any_daemon(tmp_path: Path) -> None:
    """Each daemon refused it, after the lab had made its folder and started them all."""
    out = tmp_path / "lab"
    res = CliRunner().invoke(app, [
        "lab", "--task", "lm", "--model", "tiny-llama", "--data", str(chats(tmp_path)),
        "--nodes", "2", "--rounds", "1", "--validation-fraction", "0.1", "--no-centralized",
        "--base-port", "0", "--output", str(out),
    ])  # fmt: skip
    assert res.exit_code == 2, res.output
    error, hint = res.stderr.strip().splitlines()[-2:]
    assert error.startswith("error: ") and "holds out no row" in error
    assert hint.startswith("hint: use --validation-fraction 0.11 or more")
    assert not out.exists()


def test_a_default_fraction_that_holds_out_rows_is_kept(tmp_path: Path) -> None:
    cfg = lab_config(chats(tmp_path, rows=60))
    assert lab_validation(cfg) == (cfg, "")  # a guard


@pytest.mark.slow  # a 2-node LM lab; lab_validation's in-process cases stay; make test-slow
@pytest.mark.integration
def test_a_lab_on_twelve_conversations_runs_and_says_why_there_is_no_validation(
    tmp_path: Path,
) -> None:
    out = tmp_path / "lab"
    res = subprocess.run([
        *CLI, "lab", "--task", "lm", "--model", "tiny-llama", "--data", str(chats(tmp_path)),
        "--nodes", "2", "--rounds", "1", "--consensus-rounds", "0", "--no-centralized",
        "--base-port", "0", "--output", str(out), "--format", "json",
    ], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout)["ok"]
    assert "holds out no row" in res.stderr and "going on without validation" in res.stderr
