"""How `start` and `config` name a node's options in what they print: each bad value
where it was given (`--flag`, `DECLORA_VARIABLE`, `file: key 'k'`), the hints of the
validators that refused it, and the warnings a start prints before it runs."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from declora.node.address import split_address
from declora.node.errors import HintedError
from declora.node.option_values import option_name
from declora.node.security import exposed_file_warning

if TYPE_CHECKING:
    from declora.node.settings import NodeSettings


class SettingsError(HintedError):
    """Settings that cannot be built: `message` is one line naming each bad value where
    it was given (`--flag`, `DECLORA_VARIABLE` or `file: key 'k'`); `hint` joins the
    hints its validators gave apart (`error_hints`), '' when none did."""


def suggest(word: str, choices: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def given_name(field: str, origins: dict[str, str], config_file: Path | None) -> str:
    """Option `field` named where its value came from (`_origins`): `DECLORA_X`,
    `file.toml key 'x'`, else `--x` (a flag, or the default: the flag that sets it)."""
    where = origins.get(field, "")
    if where.startswith("env "):
        return where.removeprefix("env ")
    if where.startswith("file ") and config_file is not None:
        return f"{config_file.name} key {field!r}"
    return option_name(field)


def error_message(error: Any) -> str:
    """One pydantic validation error's message; a validator's `HintedError` (data,
    model, TLS files) without its hint, which `error_hints` gives apart."""
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, HintedError):
        return cause.message
    return str(error["msg"]).removeprefix("Value error, ")


def error_hints(errors: list[Any]) -> str:
    """The hints of pydantic validation errors' `HintedError`s, each once, in order."""
    hints = (getattr(e.get("ctx", {}).get("error"), "hint", "") for e in errors)
    return "; ".join(dict.fromkeys(h for h in hints if h))


def problem(
    error: Any, origins: dict[str, str], config_file: Path | None, options: list[str]
) -> str:
    """One validation error, named where the user gave the value; a config file key
    that is not one of `options` with the closest of them."""
    loc = error["loc"]
    msg = error_message(error)
    if not loc:
        return msg  # model-level checks name their options
    field = str(loc[0])
    where = origins.get(field, "")
    if error["type"] == "extra_forbidden":
        name = config_file.name if config_file else "config"
        return f"{name}: key {field!r} is not an option" + suggest(field, options)
    if where.startswith("env "):
        return f"{where.removeprefix('env ')}: {msg}"
    if where.startswith("file ") and config_file is not None:
        return f"{config_file.name}: key {field!r}: {msg}"
    return f"{option_name(field)}: {msg}"


def advertise_warning(
    settings: NodeSettings, origins: dict[str, str], config_file: Path | None
) -> str:
    """'' unless a node that is not --solo advertises an unspecified address (0.0.0.0,
    ::: the image's --listen without --advertise, which a given --advertise may not
    be), which no peer can dial: then what to set. A warning, not a refusal: its Hello
    states no address (`Handshaker.hello`), but peers given this node's real address
    (--peers) still reach it; a node id taken from it is the same on every node so
    started."""
    if settings.solo:
        return ""
    host, port = split_address(settings.advertise)
    try:
        if not ipaddress.ip_address(host.split("%", 1)[0]).is_unspecified:
            return ""
    except ValueError:  # a DNS name
        return ""
    name = given_name("advertise", origins, config_file)
    if origins.get("advertise") == "listen":
        name = f"{name} (unset: {given_name('listen', origins, config_file)})"
    same_id = (
        f"; --node-id {settings.node_id}, taken from it, is the same on every node so started"
        if origins.get("node_id") == "default" and settings.tls() is None
        else ""
    )
    return (
        f"{name} is {settings.advertise}, which peers cannot dial: its Hello states no "
        f"address, so only peers given this node's (--peers) reach it{same_id}; set "
        f"--advertise HOST:{port} (this machine's address as peers reach it)"
    )


def start_warnings(
    settings: NodeSettings,
    config_file: Path | None,
    data: dict[str, Any],
    secret_file: str = "--swarm-secret-file",
) -> list[str]:
    """What to fix before it bites, one line each: a config file holding swarm_secret,
    a --swarm-secret-file or a --tls-key open to others than the owner (`chmod 600`), a
    certificate of this node or its CA expiring within a week (`TlsFiles.warnings`);
    `secret_file` names the option as it was given."""
    found = []
    if config_file is not None and data.get("swarm_secret") is not None:
        found.append(exposed_file_warning("config file (holding swarm_secret)", config_file))
    if settings.swarm_secret_file is not None:
        found.append(exposed_file_warning(secret_file, settings.swarm_secret_file))
    tls = settings.tls()
    return [line for line in found if line] + (tls.warnings() if tls is not None else [])
