"""How every reader takes a node's options, whichever source a value comes from (flag,
`DECLORA_*` variable, config file) and whichever command reads it (`start`'s settings,
`status`' probe of the node beside it, which loads no pydantic):

- a `DECLORA_*` variable is found in any case, as pydantic-settings finds it
  (`env_key`), and wins over the config file's key (`OptionValues`);
- a path that is empty or only spaces is refused (`blank_path`, `BLANK_PATH`): it
  was taken for the working folder (or a file named by spaces);
- a path's leading `~` is the home folder (`home_path`), as a shell reads a flag's: no
  shell reads a config file's key or a variable given by systemd or Docker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ENV_PREFIX = "DECLORA_"
BLANK_PATH = "is empty: give a file's path, or leave the option out"


def env_name(option: str) -> str:
    """The variable of option `option` (a field name: tls_cert -> DECLORA_TLS_CERT)."""
    return ENV_PREFIX + option.upper()


def option_name(option: str) -> str:
    """The flag of option `option` (a field name: tls_cert -> --tls-cert)."""
    return "--" + option.replace("_", "-")


def env_key(name: str, environ: Mapping[str, str]) -> str | None:
    """The key of variable `name` in `environ` as it is spelled there (any case), None
    when it is unset."""
    return next((k for k in environ if k.upper() == name), None)


def blank_path(value: object) -> bool:
    """Whether `value`, a path option's text, is empty or only spaces."""
    return isinstance(value, str | Path) and not str(value).strip()


def home_path(value: str | Path) -> Path:
    """`value` as a path, a leading `~` or `~user` read as that home folder (any other
    path unchanged); ValueError naming it when that home folder is unknown."""
    try:
        return Path(value).expanduser()
    except RuntimeError:  # no HOME, no such user
        home = str(value).split("/", 1)[0]
        raise ValueError(f"{home} in {str(value)!r}: no such home folder here") from None


@dataclass(frozen=True)
class OptionValues:
    """A node's options as `start` takes them, less its flags (a caller's own flags
    win): `DECLORA_<OPTION>` in any case, else the key of its config file (`config`:
    `settings.read_config_file`'s mapping of the file named `config_name`)."""

    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    config: Mapping[str, object] = field(default_factory=dict)
    config_name: str = "the config file"

    def get(self, option: str) -> tuple[object, str] | None:
        """(value, where) for option `option` (a field name): its variable's value and
        name, else the config file's value and `NAME key 'option'` (a null there is
        no value); None when neither gives it."""
        key = env_key(env_name(option), self.environ)
        if key is not None:
            return self.environ[key], key
        if self.config.get(option) is not None:
            return self.config[option], f"{self.config_name} key {option!r}"
        return None
