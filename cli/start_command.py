"""`start` (run a node) and `config` (the settings it would use, and where each came
from): the settings from flags, environment and config file, refused as one `error:`
line or, with --log-format json, as one JSON log record."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from declora.cli.checks import check_format
from declora.cli.exits import Interrupts, config_hint, fail, interrupted, show_traceback, warn
from declora.cli.flags import ConfigOpt, FormatOpt

if TYPE_CHECKING:
    from declora.node.settings import Resolved


def json_logs_asked(options: dict[str, Any], config: Path | None) -> bool:
    """Whether `start` was given --log-format json (flag, then DECLORA_LOG_FORMAT, then
    the config file's log_format, as the settings take them), known before they are
    built or when they are refused. A log format that is itself refused is not json:
    what was asked is unknown, so that refusal is the plain `error:` line."""
    from declora.node.config_file import ConfigFileError, read_config_file
    from declora.node.option_values import OptionValues

    value = options.get("log_format")
    if value is None:
        try:
            data = read_config_file(config) if config is not None else {}
        except ConfigFileError:
            data = {}
        given = OptionValues(config=data).get("log_format")
        value = given[0] if given is not None else None
    return value == "json"


def json_logs_in(args: list[str]) -> bool:
    """`json_logs_asked` of `start`'s command line `args` that did not parse (a usage
    error): --log-format and --config as given there."""
    from declora.cli.loading import option_value

    config = option_value(args, "--config")
    options = {"log_format": option_value(args, "--log-format")}
    return json_logs_asked(options, Path(config) if config else None)


def _settings(
    options: dict[str, Any], config: Path | None, command: str = "start", json_logs: bool = False
) -> Resolved:
    """Settings from flags, environment, file, defaults (exit 2 naming a bad value);
    warns about DECLORA_* variables that are no option. With `json_logs` the warnings
    and the refusal are JSON log records (`exits.fail`)."""
    from declora.node.config_file import ConfigFileError
    from declora.node.settings import resolve_settings, unknown_env_vars
    from declora.node.settings_report import SettingsError

    for line in unknown_env_vars(dict(os.environ)):
        warn(line, json_logs)
    try:
        resolved = resolve_settings(options, config)
    except (SettingsError, ConfigFileError) as exc:
        show_traceback(json_logs=json_logs)
        hint = exc.hint or config_hint(command, config=command == "start")
        fail(exc.message, hint=hint, json_logs=json_logs)
    for line in resolved.warnings:  # a key or secret open to others, a certificate ending
        warn(line, json_logs)
    return resolved


def start(config: ConfigOpt = None, options: dict[str, Any] | None = None) -> None:
    """Run a node: train LoRA locally and mix with live neighbours every round.

    Every option is also an environment variable (DECLORA_RANK for --rank) and a config
    file key (rank); a flag wins over the environment, which wins over the file.
    `declora-node config` shows what applies and where it came from.
    """
    # once launch has checked the configuration, a stop signal stops the node (`signals`)
    not_started = "interrupted before the node started; nothing was written"
    with Interrupts(not_started) as guard:
        json_logs = guard.json_logs = json_logs_asked(options or {}, config)
        settings = _settings(options or {}, config, json_logs=json_logs).settings
        from declora.node.daemon.launch import launch
        from declora.node.daemon.signals import NotStarted
        from declora.node.daemon.startup import as_user_error
    try:
        code = launch(settings)
    except NotStarted:
        interrupted(not_started, settings.log_format == "json")
    except Exception as exc:
        mistake = as_user_error(exc)
        if mistake is None:  # a bug: its traceback
            raise
        json_logs = settings.log_format == "json"
        show_traceback(json_logs=json_logs)
        fail(mistake.message, mistake.code, mistake.hint, json_logs)
    raise typer.Exit(code)


def config_command(
    config: ConfigOpt = None, fmt: FormatOpt = "text", options: dict[str, Any] | None = None
) -> None:
    """Print the settings `start` would use, and where each came from.

    Sources: flag, env (the variable), file (the config file), default, or the option
    a value is taken from (advertise: listen; swarm-secret: swarm-secret-file).
    """
    check_format(fmt)
    resolved = _settings(options or {}, config, "config")
    values = resolved.settings.model_dump(mode="json")
    rows = {k: {"value": values[k], "source": resolved.sources[k]} for k in values}
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from declora.cli.client import folded, report_console
    from declora.node.settings import default_text

    table = Table("option", "value", "source", box=None, pad_edge=False)
    for name, row in rows.items():
        value = row["value"]
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        if shown in (None, ""):
            shown = f"({default_text(name)})"
        table.add_row(name.replace("_", "-"), str(shown), row["source"])
    report_console().print(folded(table))  # a long path folded, never cut with an ellipsis
