"""The CLI's own lines escape once, whole, in text and JSON alike (revops4): an error's
text is cut by nothing (`logs.safe_text(limit=None)`), a JSON error record carries the
text line's message (a non-UTF-8 path's bytes as \\xff, no lone surrogate a strict JSON
reader refuses), and a warning line (an unknown DECLORA_* variable's name) cannot forge
a line either."""

from __future__ import annotations

import json

import pytest

from declora.cli.exits import say_error, warn
from declora.node.logs import safe_text

NAME = "folder a\nerror: forged \x1b[2J \udcff"  # a newline, an escape, a non-UTF-8 byte


def test_safe_text_without_a_limit_escapes_all_and_cuts_nothing() -> None:
    text = "\u202e" * 3000 + "\\n"  # each escape 6 characters: past any multiple of 5
    assert safe_text(text, None) == "\\u202e" * 3000 + "\\n"


def test_a_json_error_record_carries_the_text_lines_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    say_error(NAME, 2, hint=f"rename {NAME}")
    error, more, hint, hint_more = capsys.readouterr().err.splitlines()
    say_error(NAME, 2, hint=f"rename {NAME}", json_logs=True)
    [line] = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    # the text keeps the newline as a line of its own, indented: it forges no error line
    assert (error, more) == ("error: folder a", "  error: forged \\x1b[2J \\xff")
    assert (hint, hint_more) == ("hint: rename folder a", "  error: forged \\x1b[2J \\xff")
    assert record["message"] == "folder a\\nerror: forged \\x1b[2J \\xff"
    assert record["hint"] == "rename folder a\\nerror: forged \\x1b[2J \\xff"
    line.encode("utf-8")  # no lone surrogate (it was \udcff)


@pytest.mark.parametrize("json_logs", [False, True])
def test_a_warning_naming_a_variable_cannot_forge_a_line(
    json_logs: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    warn(f"environment variable DECLORA_{NAME} is not an option (ignored)", json_logs)
    [line] = capsys.readouterr().err.splitlines()
    shown = json.loads(line)["message"] if json_logs else line.removeprefix("warning: ")
    assert shown.startswith("environment variable DECLORA_folder a\\nerror: forged \\x1b[2J")
    assert "\x1b" not in line and shown.endswith("\\xff is not an option (ignored)")
