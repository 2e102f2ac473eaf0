"""Bad option values, command by command (cliuser's walk): each is one `error:` line
that says what is wrong and one `hint:` line, exit 2, and nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from declora.cli.app import app

runner = CliRunner()
HUGE = str(10**30)

# (arguments, what the error line says)
BAD_VALUES = [
    # lab's own numbers: NaN and infinity said "should be less than or equal to ..."
    (["lab", "--timeout", "nan"], "--timeout: Input should be a finite number"),
    (["lab", "--timeout", "1e309"], "--timeout: Input should be a finite number"),
    (["lab", "--round-deadline", "nan"], "--round-deadline: Input should be a finite number"),
    (["lab", "--central-lr", "inf"], "--central-lr: Input should be a finite number"),
    (["lab", "--lr", "nan"], "--lr: Input should be a finite number"),
    # guards: already refused clearly
    (["lab", "--nodes", "-1"], "--nodes: Input should be greater than or equal to 1"),
    (["lab", "--nodes", HUGE], "--nodes: Input should be less than or equal to 64"),
    (["status", "--timeout", "1e309"], "--timeout must be > 0 and at most 3600 seconds"),
    (["status", "--timeout", "nan"], "--timeout must be > 0 and at most 3600 seconds"),
    (["status", "--target", "bad host"], "--target must be host:port"),
    (["certs", "--output", "OUT", "--nodes", "a", "--days", HUGE], "--days: must be from 1"),
    (["certs", "--output", "OUT", "--nodes", "a", "--days", "-1"], "--days: must be from 1"),
    (["certs", "--output", "OUT", "--nodes", ""], "--nodes: give at least one node name"),
    (["certs", "--output", "OUT", "--nodes", "a", "--hosts", ""], "--hosts: give at least one"),
    (["experiment", "--only", ""], "--only needs run names"),
    (["inspect", "--format", "yaml", "."], "--format must be text or json, got 'yaml'"),
    (["config", "--labels", "@nofile"], "--labels: label file not found: nofile"),
]


@pytest.mark.parametrize(("args", "said"), BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_a_bad_value_is_one_error_and_one_hint(
    args: list[str], said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, [str(tmp_path / "out") if a == "OUT" else a for a in args])
    lines = res.stderr.splitlines()
    assert res.exit_code == 2, res.output
    assert len(lines) == 2, lines
    assert lines[0].startswith("error: ") and said in lines[0], lines
    assert lines[1].startswith("hint: ") and "hint:" not in lines[0]
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("task", ["cls", "swarm"])
def test_experiment_refuses_a_file_as_its_output_before_any_run(
    task: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the grid or study began (minutes of work) with a file as its --output."""
    from declora.cli import experiment, generalization

    ran: list[object] = []
    monkeypatch.setattr(experiment, "run_grid", lambda *a: ran.append(a))
    monkeypatch.setattr(generalization, "run_study", lambda *a, **k: ran.append(a) or "")
    kept = tmp_path / "notes.txt"
    kept.write_text("mine")
    res = runner.invoke(app, ["experiment", "--task", task, "--output", str(kept)])
    assert res.exit_code == 2 and not ran
    assert res.stderr.splitlines() == [
        f"error: --output {kept} is a file, not a folder",
        "hint: give a folder that exists or can be created (not a file, nor inside one)",
    ]
    assert kept.read_text() == "mine"


def test_a_non_utf8_path_is_shown_with_its_bytes_escaped(tmp_path: Path) -> None:
    """A file name that is not UTF-8 printed as \\udcff (Python's surrogate), not \\xff."""
    import subprocess
    import sys

    path = os.fsencode(tmp_path) + b"/q\xffz"
    res = subprocess.run(
        [sys.executable, "-m", "declora.cli", "inspect", path],
        capture_output=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 2
    error = res.stderr.splitlines()[0]
    assert error == b"error: " + os.fsencode(tmp_path) + b"/q\\xffz does not exist"


def test_a_subcommands_usage_error_points_at_its_own_help() -> None:
    """`certs revoke`'s hint named `declora-node revoke --help`, no such command."""
    res = runner.invoke(app, ["certs", "revoke", "--output", "x", "--nodes", "a"])
    assert res.exit_code == 2
    assert res.stderr.splitlines()[-1] == "hint: see `declora-node certs revoke --help`"
