"""The lines of a user error, without typer: `exits.say_error` (the app) and
`client.show_status` (`status`' fast path, which loads no typer) print the same."""

from __future__ import annotations


def error_lines(message: str, hint: str = "") -> list[str]:
    """`error: message`, then `hint: hint` when there is one."""
    return [f"error: {message}", *([f"hint: {hint}"] if hint else [])]
