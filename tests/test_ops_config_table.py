"""`config`'s table shows every value whole (a long path was cut with an ellipsis at
80 columns, written to a pipe) and names where it came from: the variable of an env
source (`env DECLORA_ROUNDS`), the flag, the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from declora.cli.app import app


def test_a_long_value_is_shown_whole_and_the_env_source_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    long = tmp_path / ("state-" + "x" * 80)
    monkeypatch.setenv("DECLORA_CHECKPOINT_DIR", str(long))
    monkeypatch.setenv("DECLORA_ROUNDS", "3")
    res = CliRunner().invoke(app, ["config", "--seed", "7"])
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line.split()[1:] for line in res.stdout.splitlines() if line.strip()}
    assert rows["checkpoint-dir"] == [str(long), "env", "DECLORA_CHECKPOINT_DIR"]
    assert rows["rounds"] == ["3", "env", "DECLORA_ROUNDS"]
    assert rows["seed"] == ["7", "flag"]
