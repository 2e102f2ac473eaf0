"""A refused `start` under --log-format json says so as a JSON log record (the fields of
every other record, plus `hint` and `exit_code`), so a log pipeline parses it; the
plain format keeps its `error:` and `hint:` lines. A refusal of the log format itself
is plain: what was asked for is unknown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from declora.cli.app import app

runner = CliRunner()
FIELDS = {"time", "level", "logger", "node", "round", "message"}


def _records(stderr: str) -> list[dict[str, object]]:
    lines = stderr.splitlines()
    assert lines, "nothing on stderr"
    return [json.loads(line) for line in lines]  # every line: a JSON record


def test_a_refused_start_is_a_json_record(tmp_path: Path) -> None:
    res = runner.invoke(
        app, ["start", "--log-format", "json", "--checkpoint-dir", str(tmp_path / "s")]
    )
    assert res.exit_code == 2, res.output
    last = _records(res.stderr)[-1]
    assert set(last) >= FIELDS
    assert last["level"] == "ERROR" and last["exit_code"] == 2
    assert last["message"] == "no peers: this node would train alone"
    assert "--solo" in str(last["hint"])
    assert last["node"] == "node-127.0.0.1-7070"


def test_bad_settings_and_warnings_under_json_from_env_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "n.toml"
    config.write_text('log_format = "json"\nrounds = -5\n')
    monkeypatch.setenv("DECLORA_NO_SUCH_OPTION", "1")
    res = runner.invoke(app, ["start", "--config", str(config)])
    assert res.exit_code == 2, res.output
    warning, error = _records(res.stderr)
    assert warning["level"] == "WARNING" and "DECLORA_NO_SUCH_OPTION" in str(warning["message"])
    assert error["level"] == "ERROR" and "n.toml: key 'rounds'" in str(error["message"])
    monkeypatch.delenv("DECLORA_NO_SUCH_OPTION")
    monkeypatch.setenv("DECLORA_LOG_FORMAT", "json")
    res = runner.invoke(app, ["start", "--rounds", "-5"])
    assert _records(res.stderr)[-1]["message"] == (
        "bad configuration: --rounds: Input should be greater than or equal to 0"
    )


def test_the_plain_format_and_a_bad_log_format_keep_the_error_line() -> None:
    for args in (["--rounds", "-5"], ["--log-format", "jsn", "--rounds", "-5"]):
        res = runner.invoke(app, ["start", *args])
        assert res.exit_code == 2, res.output
        first, second = res.stderr.splitlines()
        assert first.startswith("error: bad configuration: --rounds:"), first
        assert second.startswith("hint: "), second
