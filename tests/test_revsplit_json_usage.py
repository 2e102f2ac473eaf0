"""`start` with JSON logs asked (--log-format json, DECLORA_LOG_FORMAT, the --config
file's log_format) refuses a command line that does not parse (an unknown option, a
value of the wrong type) as one JSON log record, as it refuses a bad value: every line
on stderr is JSON. Without JSON logs, and for other commands, the two plain lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from declora.cli.app import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_log_format_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DECLORA_LOG_FORMAT", raising=False)


def _record(args: list[str]) -> dict[str, object]:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.strip().splitlines()
    record: dict[str, object] = json.loads(line)
    assert (record["level"], record["exit_code"]) == ("ERROR", 2)
    assert record["hint"] == "see `declora-node start --help`"
    return record


def test_an_unknown_option_is_a_json_record() -> None:
    record = _record(["start", "--log-format", "json", "--bogus"])
    assert str(record["message"]).startswith("No such option: --bogus")


def test_a_value_of_the_wrong_type_is_a_json_record(monkeypatch: pytest.MonkeyPatch) -> None:
    record = _record(["start", "--log-format=json", "--rank", "abc"])
    assert "'--rank'" in str(record["message"])
    monkeypatch.setenv("DECLORA_LOG_FORMAT", "json")
    assert "'--rank'" in str(_record(["start", "--rank", "abc"])["message"])


def test_the_config_files_log_format_counts(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('log_format = "json"\n')
    _record(["start", "--config", str(config), "--bogus"])


@pytest.mark.parametrize(
    "args",
    [
        ["start", "--bogus"],
        ["start", "--log-format", "text", "--bogus"],
        ["config", "--log-format", "json", "--bogus"],
    ],
)
def test_otherwise_the_two_plain_lines(args: list[str]) -> None:
    """A guard: the plain `error:` and `hint:` lines."""
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    error, hint = res.stderr.strip().splitlines()
    assert error.startswith("error: No such option: --bogus") and hint.startswith("hint: see")
