"""Every user error is an `error:` line and a `hint:` line: the --target, --timeout and
--format checks, the mistakes of `inspect`, `export` and `experiment`, and a
validator's own hint (a --labels file that is missing) in place of the generic one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from declora.cli.app import app

runner = CliRunner()


def _error_and_hint(args: list[str]) -> tuple[str, str]:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    error, hint = lines
    assert error.startswith("error: ") and hint.startswith("hint: "), lines
    return error, hint


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["status", "--target", "bad host"], "--target"),
        (["status", "--target", "127.0.0.1:0"], "--target"),
        (["inspect", "--target", "bad"], "--target"),
        (["status", "--timeout", "0"], "--timeout"),
        (["inspect", "--format", "yaml"], "--format"),
        (["status", "--format", "yaml"], "--format"),
        (["inspect"], "PATH or --target"),
        (["export", "some-adapter"], "--output"),
        (["experiment", "--task", "nope"], "--task"),
    ],
)
def test_a_mistake_in_a_command_line_has_a_hint(args: list[str], named: str) -> None:
    error, _ = _error_and_hint(args)
    assert named in error


def test_a_validators_hint_is_the_hint_line_of_config(tmp_path: Path) -> None:
    """`config --labels @missing` folded the label file's hint into the error line and
    printed the generic `see --help` hint; the file's own hint is now the hint line."""
    missing = tmp_path / "nofile.txt"
    error, hint = _error_and_hint(["config", "--labels", f"@{missing}"])
    assert error == f"error: bad configuration: --labels: label file not found: {missing}"
    assert hint == "hint: pass --labels @FILE with an existing file"


def test_a_validators_hint_is_the_hint_line_of_simulate(tmp_path: Path) -> None:
    missing = tmp_path / "nofile.txt"
    error, hint = _error_and_hint(["simulate", "--labels", f"@{missing}"])
    assert error == f"error: bad configuration: --labels: label file not found: {missing}"
    assert hint == "hint: pass --labels @FILE with an existing file"


def test_a_validators_hint_is_the_json_records_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`start --log-format json`: the refusal is one JSON record, hint apart."""
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["start", "--log-format", "json", "--labels", "@nofile.txt"])
    assert res.exit_code == 2, res.output
    (record,) = [json.loads(line) for line in res.stderr.strip().splitlines()]
    assert record["message"] == "bad configuration: --labels: label file not found: nofile.txt"
    assert record["hint"] == "pass --labels @FILE with an existing file"


def test_settings_without_a_validators_hint_keep_the_generic_one() -> None:
    """A guard: a bad value whose validator gives no hint keeps `see --help`."""
    error, hint = _error_and_hint(["config", "--rank", "0"])
    assert error.startswith("error: bad configuration: --rank: ")
    assert "declora-node config --help" in hint
