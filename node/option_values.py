"""Rules every reader of the options applies, whichever source a value comes from
(flag, `DECLORA_*` variable, config file) and whichever command reads it (`start`'s
settings, `status --check`'s probe, which loads no pydantic):

- a path that is empty or only spaces is refused (`blank_path`, `BLANK_PATH`): it
  was taken for the working folder (or a file named by spaces);
- a `DECLORA_*` variable is found in any case, as pydantic-settings finds it
  (`env_value`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

BLANK_PATH = "is empty: give a file's path, or leave the option out"


def blank_path(value: object) -> bool:
    """Whether `value`, a path option's text, is empty or only spaces."""
    return isinstance(value, str | Path) and not str(value).strip()


def env_value(name: str, environ: Mapping[str, str]) -> str | None:
    """The value of variable `name` (any case) in `environ`, None when it is unset."""
    return next((v for k, v in environ.items() if k.upper() == name), None)
