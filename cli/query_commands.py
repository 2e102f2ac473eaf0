"""`status` and `inspect`: ask a running node (over gRPC, with the CLI's own TLS
files), or describe a saved adapter or checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from declora.cli.checks import check_call, check_format, client_tls, need_temp_folder
from declora.cli.exits import fail, fail_with
from declora.cli.flags import FormatOpt, TlsCa, TlsCert, TlsCrl, TlsKey

if TYPE_CHECKING:
    from declora.node.option_values import OptionValues
    from declora.node.security import TlsFiles


def status(
    target: Annotated[
        str | None,
        typer.Option(
            help="host:port of a running node.",
            show_default="the node beside it: its --listen (DECLORA_LISTEN, else "
            "--config's listen; 0.0.0.0 or :: as 127.0.0.1), else 127.0.0.1:7070",
        ),
    ] = None,
    fmt: FormatOpt = "text",
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the answer (at most 3600).")
    ] = 5.0,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_ca: TlsCa = None,
    tls_crl: TlsCrl = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="The node's config file (`start --config`), read as `start` reads it "
            "(DECLORA_* win): its listen is the node asked without --target, its "
            "swarm_secret(_file) signs, and its tls_* files are presented without --tls-*.",
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Only whether the node serves (grpc.health.v1): exit 0, else 1; a "
            "healthcheck's command.",
        ),
    ] = False,
) -> None:
    """Show a node's round, loss, last evaluation and neighbours. Without --tls-* it
    presents the node's own TLS files (DECLORA_TLS_*, else --config's), as `start`
    reads them."""
    # `main` answers the plain forms without this app (`cli/fast.py`), in a fraction of
    # the time; both end in `client.show_status`.
    from declora.cli.client import show_status

    check_format(fmt)
    check_call(target, timeout)
    values = node_values(config)
    if target is None:  # the node beside it
        target = node_target(values)
    tls = client_tls(tls_cert, tls_key, tls_ca, tls_crl)
    if check:
        probe(target, fmt, timeout, tls, values)
    raise typer.Exit(show_status(target, fmt == "json", timeout, tls, values))


def node_values(config: Path | None) -> OptionValues:
    """The node's own options as `start` reads them less its flags (DECLORA_*, else the
    `config` file's keys); exit 2 when the file cannot be read."""
    from declora.node.option_values import OptionValues

    if config is None:
        return OptionValues()
    from declora.node.config_file import ConfigFileError, read_config_file

    try:
        return OptionValues(config=read_config_file(config), config_name=config.name)
    except ConfigFileError as exc:
        fail(exc.message, hint=exc.hint or "fix the file, or give --target")


def node_target(values: OptionValues) -> str:
    """The address of the node beside this one (`client.own_target`), its --listen from
    its `values`; exit 2 when it is not host:port."""
    from declora.cli.client import own_target

    try:
        return own_target(values)
    except ValueError as exc:
        fail(str(exc), hint="set --listen as `start` takes it, or give --target")


def probe(
    target: str, fmt: str, timeout: float, tls: TlsFiles | None, values: OptionValues
) -> NoReturn:
    """`status --check` (`cli.health_check`): one line, exit 0 while the node serves."""
    from declora.cli.health_check import check_main

    if fmt != "text":
        fail("--check prints one line, no --format json", hint="leave out --format")
    raise typer.Exit(check_main(target, timeout, tls, values))


def inspect(
    path: Annotated[
        Path | None, typer.Argument(help="A saved adapter or checkpoint directory.")
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="host:port: show that node's peer view.")
    ] = None,
    fmt: FormatOpt = "text",
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_ca: TlsCa = None,
    tls_crl: TlsCrl = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="With --target: the node's config file (`start --config`), read as "
            "`status --config` reads it: its swarm_secret(_file) signs, and its tls_* files "
            "are presented without --tls-*.",
        ),
    ] = None,
) -> None:
    """Describe a saved adapter/checkpoint (config, tensors, fingerprint) or a node's
    peers. With --target and without --tls-* it presents the node's own TLS files
    (DECLORA_TLS_*, else --config's), as `status` does."""
    check_format(fmt)
    if (path is None) == (target is None):
        fail(
            "give either PATH or --target",
            hint="a saved adapter's folder (e.g. declora-state/NODE/adapter), or a node's "
            "host:port (e.g. --target 127.0.0.1:7070)",
        )
    if config is not None and path is not None:
        fail("--config is the node's, for --target", hint="leave out --config with PATH")
    check_call(target)
    values = node_values(config)
    need_temp_folder()  # cli.inspect imports torch (a --target too)
    from declora.cli.inspect import InspectError, inspect_path, inspect_target

    tls = client_tls(tls_cert, tls_key, tls_ca, tls_crl)
    try:
        info = inspect_path(path) if path is not None else inspect_target(str(target), tls, values)
    except InspectError as exc:  # a path that is no adapter: the user's; a node: runtime
        # (but a secret's environment that cannot be used: `client.SecretEnvError`, 2)
        fail_with(exc, 2 if path is not None else getattr(exc.__cause__, "code", 1))
    from declora.cli.inspect import render

    if fmt == "json":
        typer.echo(json.dumps(info, indent=2, default=str))
    else:
        render(info)
