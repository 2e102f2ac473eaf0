"""The user's mistakes: one class of error that carries its hint apart.

`HintedError(message, hint)`: `message` and `hint` are one line each; `str()` joins
them as "message (hint: hint)" for logs and Python callers, and the CLI prints them as
its two lines, `error:` and `hint:`. Data, model and adapter errors are HintedErrors."""

from __future__ import annotations

import re


def one_line(text: str) -> str:
    """`text` with every run of whitespace (newlines too) as one space."""
    return re.sub(r"\s+", " ", text).strip()


class HintedError(ValueError):
    """A mistake the user can fix: `message` (what is wrong), `hint` (what to do)."""

    def __init__(self, message: str, hint: str = "") -> None:
        self.message = one_line(message)
        self.hint = one_line(hint)
        super().__init__(f"{self.message} (hint: {self.hint})" if self.hint else self.message)
