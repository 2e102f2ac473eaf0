"""The lines of a user error, without typer: `exits.say_error` (the app) and
`client.show_status` (`status`' fast path, which loads no typer) print the same."""

from __future__ import annotations

from declora.node.logs import safe_text


def error_lines(message: str, hint: str = "") -> list[str]:
    """`error: message`, then `hint: hint` when there is one, each `shown_lines`."""
    return [f"error: {shown_lines(message)}", *([f"hint: {shown_lines(hint)}"] if hint else [])]


def shown_lines(text: str) -> str:
    """`text`'s own lines, each `shown_text`, every line after the first indented by at
    least two spaces: a message of several lines (the startup timeout's, a line per
    missing peer) keeps them, and no line of it passes for an `error:` or `hint:` line
    of its own (a folder name holding a newline)."""
    first, *rest = (shown_text(line) for line in text.split("\n"))
    return "\n".join([first, *(x if x.startswith("  ") else f"  {x}" for x in rest)])


def shown_text(text: str) -> str:
    """`text` on one line: control characters escaped (`logs.safe_text`: a folder name
    holding a newline cannot forge a line), the bytes of a non-UTF-8 path (which Python
    holds as surrogates) as \\xff escapes, as `ls -b` shows them (not \\udcff)."""
    text = safe_text(text, limit=None)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate not from a file name: left as it is
        return text
