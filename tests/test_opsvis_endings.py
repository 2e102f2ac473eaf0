"""Every way the app ends on an error is an `error:` line and a `hint:` line (opsvis):
an EOFError out of a command (typer printed 'Aborted!', exit 1) and a click error that
is not a usage error (one `error:` line, no hint); `status`' own error lines are the
app's (`lines.error_lines`)."""

from __future__ import annotations

import pytest
from typer._click.exceptions import ClickException
from typer.testing import CliRunner

from declora.cli import client
from declora.cli.app import app

runner = CliRunner()


def raising(exc: BaseException) -> object:
    def show_status(*_: object) -> int:
        raise exc

    return show_status


@pytest.mark.parametrize("said", ["Ran out of input", ""])
def test_an_eof_error_out_of_a_command_is_an_error_and_a_hint(
    monkeypatch: pytest.MonkeyPatch, said: str
) -> None:
    monkeypatch.setattr(client, "show_status", raising(EOFError(said)))
    res = runner.invoke(app, ["status", "--target", "127.0.0.1:1"])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 1
    assert lines[-2] == "error: an input ended early" + (f" ({said})" if said else "")
    assert lines[-1].startswith("hint: check that the files and standard input")
    assert "Aborted" not in res.output


def test_a_click_error_that_is_no_usage_error_has_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "show_status", raising(ClickException("the file is gone")))
    res = runner.invoke(app, ["status", "--target", "127.0.0.1:1"])
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines()[-2:] == [
        "error: the file is gone",
        "hint: see `declora-node status --help`",
    ]


def test_status_says_its_error_as_the_app_does(capsys: pytest.CaptureFixture[str]) -> None:
    code = client.show_status("127.0.0.1:1", False, 0.5, None)  # no node there
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    assert err[0].startswith("error: ") and err[1].startswith("hint: ") and len(err) == 2
