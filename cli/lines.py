"""The lines of a user error, without typer: `exits.say_error` (the app) and
`client.show_status` (`status`' fast path, which loads no typer) print the same."""

from __future__ import annotations

from declora.node.logs import safe_text


def error_lines(message: str, hint: str = "") -> list[str]:
    """`error: message`, then `hint: hint` when there is one, each `shown_text`."""
    return [f"error: {shown_text(message)}", *([f"hint: {shown_text(hint)}"] if hint else [])]


def shown_text(text: str) -> str:
    """`text` on one line: control characters escaped (`logs.safe_text`: a folder name
    holding a newline cannot forge a line), the bytes of a non-UTF-8 path (which Python
    holds as surrogates) as \\xff escapes, as `ls -b` shows them (not \\udcff)."""
    text = safe_text(text, limit=None)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate not from a file name: left as it is
        return text
