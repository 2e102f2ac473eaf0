"""`--debug` adds the traceback to a user error (README: "`declora-node --debug ...`
adds the traceback"): the `error:` and `hint:` lines and the exit code stay. It raised
instead: a bare traceback, exit 1 for a mistake that exits 2."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner, Result

from declora.cli.app import app

runner = CliRunner()


def _traceback_then_error(res: Result, error: str, hint: str) -> None:
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert res.stderr.startswith("Traceback (most recent call last):"), res.stderr
    assert res.stderr.strip().splitlines()[-2:] == [f"error: {error}", f"hint: {hint}"]


def test_debug_adds_the_traceback_to_a_bad_configuration(tmp_path: Path) -> None:
    missing = tmp_path / "nofile.txt"
    res = runner.invoke(app, ["--debug", "config", "--labels", f"@{missing}"])
    _traceback_then_error(
        res,
        f"bad configuration: --labels: label file not found: {missing}",
        "pass --labels @FILE with an existing file",
    )


def test_a_commands_own_debug_adds_the_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "no-adapter"
    args = ["export", str(missing), "--output", str(tmp_path / "out")]
    plain = runner.invoke(app, args)
    assert plain.exit_code == 2 and "Traceback" not in plain.stderr, plain.output
    error, hint = plain.stderr.strip().splitlines()
    res = runner.invoke(app, [*args, "--debug"])
    _traceback_then_error(res, error.removeprefix("error: "), hint.removeprefix("hint: "))
