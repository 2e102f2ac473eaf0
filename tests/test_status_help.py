"""`status --help` shows users what the command does, not notes for developers."""

from __future__ import annotations

from typer.testing import CliRunner

from declora.cli.app import app


def test_status_help_has_no_developer_note() -> None:
    res = CliRunner().invoke(app, ["status", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "Show a node's round, loss, last evaluation and neighbours." in res.stdout
    assert "cli/fast.py" not in res.stdout and "show_status" not in res.stdout
