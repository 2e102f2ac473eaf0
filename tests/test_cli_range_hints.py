"""generate's and predict's range checks end in a hint line, like every user error."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from declora.cli.app import app


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "ADAPTER", "-p", "hi", "--max-new-tokens", "0"],
        ["generate", "ADAPTER", "-p", "hi", "--temperature", "-1"],
        ["generate", "ADAPTER", "-p", "hi", "--top-p", "2"],
        ["generate", "ADAPTER", "-p", "hi", "--seed", "-1"],
        ["predict", "ADAPTER", "--batch-size", "0"],
    ],
)
def test_an_option_out_of_range_is_an_error_and_a_hint(tmp_path: Path, args: list[str]) -> None:
    args = [str(tmp_path) if a == "ADAPTER" else a for a in args]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: --"), lines
    assert lines[1].startswith("hint: "), lines
