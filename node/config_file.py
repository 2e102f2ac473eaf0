"""A node's config file (`--config`: TOML, JSON or YAML) and its swarm secret file, read
as `start` reads them. Errors name the file, the line and the column, never quote its
text (it may hold the swarm secret). A relative path in the file is read against the
current folder, as a flag's is (`check_paths` refuses one meant for another)."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from declora.node.errors import HintedError, one_line
from declora.node.option_values import blank_path, option_name
from declora.node.security import secret_text


class ConfigFileError(HintedError):
    """The config file is missing, unreadable, not valid TOML, JSON or YAML (the message
    names the line and column, never the file's text: it may hold the swarm secret) or
    not a mapping."""


SYNTAX_HINT = "fix the syntax there (the file's text is not shown: it may hold the swarm secret)"


def _at(line: int, column: int) -> str:
    return f"line {line}, column {column}"


def _syntax_error(path: Path, kind: str, exc: Exception) -> ConfigFileError:
    """`exc`, a parser's error, as one line naming `path`, the line(s) and column(s) and
    the parser's description, less any text of the file quoted in it."""
    if isinstance(exc, json.JSONDecodeError):
        what = f"{exc.msg.removesuffix(' at')} at {_at(exc.lineno, exc.colno)}"
    elif kind == "TOML":  # "Invalid value (at line 2, column 7)"
        what = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", r" at \1", str(exc))
        what = what.replace("at end of document", "at the end of the file")
    else:  # yaml.MarkedYAMLError: context and problem, each with a mark (0-based)
        parts = []
        for text_name, mark_name in (("context", "context_mark"), ("problem", "problem_mark")):
            text, mark = getattr(exc, text_name, None), getattr(exc, mark_name, None)
            if text or mark is not None:
                at = f" at {_at(mark.line + 1, mark.column + 1)}" if mark is not None else ""
                parts.append(f"{text or 'error'}{at}")
        what = ": ".join(parts) or type(exc).__name__
    what = re.sub(r"'[^'\s,]{5,}'", "'...'", one_line(what))  # an alias's name, say
    return ConfigFileError(f"{path}: not valid {kind}: {what}", SYNTAX_HINT)


def read_config_file(path: Path) -> dict[str, Any]:
    """Options from a TOML, JSON or YAML file (keys as in `NodeSettings`, - or _);
    ConfigFileError when it cannot be read or parsed (naming the line and column, never
    quoting the file), is not a mapping, or spells one option both ways."""
    suffix = path.suffix.lower()
    kinds = {".toml": "TOML", ".json": "JSON", ".yaml": "YAML", ".yml": "YAML"}
    if path.is_dir():
        raise ConfigFileError(f"config file {path} is a folder, not a file")
    if not path.is_file():
        raise ConfigFileError(f"config file not found: {path}")
    if suffix not in kinds:
        raise ConfigFileError(f"{path}: use a .toml, .json or .yaml config file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path}: not UTF-8 text", "save it as UTF-8") from None
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    kind = kinds[suffix]
    try:
        if kind == "TOML":
            import tomllib

            data: object = tomllib.loads(text)
        elif kind == "JSON":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except ImportError as exc:
        raise ConfigFileError(f"{path}: cannot read {kind}: {exc}") from None
    except Exception as exc:  # the parsers' own errors (yaml's are no ValueError)
        raise _syntax_error(path, kind, exc) from None  # no chain: it quotes the file
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: the top level must be a mapping of options")
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for k, v in data.items():
        key = str(k).replace("-", "_")
        if key in out:  # text-column and text_column: which one would win is a guess
            raise ConfigFileError(
                f"{path}: keys {spelled[key]!r} and {str(k)!r} are both the option "
                f"{option_name(key)}",
                "keep one of them",
            )
        out[key], spelled[key] = v, str(k)
    return out


MAX_SECRET_FILE = 64 * 1024  # an `openssl rand -hex 32` secret is 65 bytes


def read_secret_file(path: Path) -> str:
    """The swarm secret `path` holds, as it signs (`security.secret_text`: less
    surrounding whitespace, a final newline); ValueError (never quoting the file) when it
    is not a regular file (a link to one is: a Kubernetes secret mount; a FIFO or a
    device such as a terminal is refused without waiting for a writer), cannot be read, is
    larger than `MAX_SECRET_FILE`, is not UTF-8 or holds fewer than 16 characters."""
    try:  # O_NONBLOCK: opening a FIFO with no writer would wait forever
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path}: not a regular file (a folder, FIFO or device)")
        raw = b""
        while len(raw) <= MAX_SECRET_FILE and (more := os.read(fd, MAX_SECRET_FILE + 1 - len(raw))):
            raw += more
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_SECRET_FILE:
        raise ValueError(f"{path}: larger than {MAX_SECRET_FILE // 1024} KiB: not a secret file")
    try:
        text = secret_text(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text (e.g. `openssl rand -hex 32 > FILE`)") from None
    if len(text) < 16:
        raise ValueError(
            f"{path}: the secret must be at least 16 characters (e.g. `openssl rand -hex 32`)"
        )
    return text


# options whose value may be a path (`labels` as "@FILE"; `model` and `data` also take
# names: a name that is no path is never found beside the file either)
PATH_OPTIONS = (
    "checkpoint_dir",
    "data",
    "model",
    "labels",
    "tls_cert",
    "tls_key",
    "tls_ca",
    "tls_crl",
    "swarm_secret_file",
)


def check_paths(config_file: Path, data: dict[str, Any], keys: Iterable[str]) -> None:
    """The first `misplaced_path` among the path options of `keys` (those whose value
    `data`, the file's, gives), raised."""
    for key in (k for k in PATH_OPTIONS if k in keys and k in data):
        if misplaced := misplaced_path(config_file, key, data[key]):
            raise misplaced


def misplaced_path(config_file: Path, key: str, value: object) -> ConfigFileError | None:
    """A ConfigFileError when `value`, option `key`'s relative path in `config_file`,
    names nothing against the current folder (where it is read, as a flag's is) but
    something beside the config file: the file was written to be used from its own
    folder. Never guessed either way: a `checkpoint_dir` read against the other folder
    would begin a fresh run beside the one it was meant to resume. None for a path that
    names something here (both places too), nothing in either (a new run's folder),
    an absolute or `~` path, and `labels` other than "@FILE"."""
    if not isinstance(value, str) or blank_path(value):
        return None
    if key == "labels" and not value.startswith("@"):  # names, not "@FILE"
        return None
    text = value.removeprefix("@") if key == "labels" else value
    if text.startswith("~"):  # the home folder's (`option_values.home_path`)
        return None
    path = Path(text)
    beside = config_file.parent / path
    try:
        if path.is_absolute() or path.exists() or not beside.exists():
            return None
        here, there, folder = Path.cwd(), beside.absolute(), config_file.parent.absolute()
    except OSError:  # the current folder was deleted, a name too long...
        return None
    fresh = f"; a new run here: --checkpoint-dir {shlex.quote(text)}"
    absolute = value.replace(text, str(there), 1)  # labels: "@" kept
    return ConfigFileError(
        f"{config_file}: key {key!r}: {text} is not in the current folder ({here}) but "
        f"beside the config file ({there})",
        "a relative path in the config file is read against the current folder, not the "
        f"file's: give {_key_line(config_file, key, absolute)}, or start in {folder} "
        "(systemd: WorkingDirectory=)" + (fresh if key == "checkpoint_dir" else ""),
    )


def _key_line(config_file: Path, key: str, value: str) -> str:
    """The line that gives option `key` the text `value` in `config_file`'s language."""
    quoted = json.dumps(value)  # a TOML basic string and a YAML double-quoted one too
    suffix = config_file.suffix.lower()
    if suffix == ".json":
        return f"{json.dumps(key)}: {quoted}"
    return f"{key}: {quoted}" if suffix in (".yaml", ".yml") else f"{key} = {quoted}"
