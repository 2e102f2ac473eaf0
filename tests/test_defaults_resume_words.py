"""`--resume`'s error lists every word it takes: `--resume maybe` said "must be true,
false or auto" though yes/no, on/off, 1/0, t/f and y/n (any case) work too."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from declora.cli.app import app

runner = CliRunner()


def _config(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, ["config", "--format", "json", "--solo", *args])
    return res.exit_code, res.stdout, res.stderr


def test_the_error_names_every_word_resume_takes() -> None:
    code, _, err = _config("--resume", "maybe")
    assert code == 2
    error = err.strip().splitlines()[0]
    assert error == (
        "error: bad configuration: --resume: must be true, false or auto (or yes/no, "
        "on/off, 1/0, t/f, y/n; any case), got 'maybe'"
    )


def test_every_word_the_error_names_is_taken() -> None:
    _, _, err = _config("--resume", "maybe")
    listed = err.split("must be ", 1)[1].split(", got", 1)[0]
    words = set(re.findall(r"[a-z0-9]+", listed)) - {"or", "any", "case"}
    assert {
        "true",
        "false",
        "auto",
        "yes",
        "no",
        "on",
        "off",
        "1",
        "0",
        "t",
        "f",
        "y",
        "n",
    } == words
    for word in sorted(words):
        for shown in (word, word.upper()):
            code, out, err = _config(f"--resume={shown}")
            assert code == 0, (shown, err)
            want = word not in ("auto", "false", "no", "off", "0", "f", "n")
            assert json.loads(out)["resume"]["value"] is want, shown
