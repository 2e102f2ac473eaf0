"""`declora-node`: start a node, look at nodes and adapters, run a lab or a simulation.

This module assembles the command group (`cli/lazy_group.py`) from the command
modules: `start_command` (start, config), `run_commands` (simulate, lab),
`query_commands` (status, inspect), `certs_command`, `experiment_command`,
`adapter_commands` (predict, generate, export); `exits` is how each one ends other
than by finishing. Stop signals are covered while it loads (`loading`)."""

# ruff: noqa: E402 (stop signals are covered before the other imports)
from __future__ import annotations

from declora.cli import loading

loading.cover()  # the first thing, so the imports below are covered; `uncover` at the end

import atexit
import contextlib
import gc
import os
import sys
from typing import Annotated

try:  # the slow imports; one that fails puts Python's own Ctrl-C handler back first
    import typer

    from declora.cli.adapter_commands import export, generate, predict
    from declora.cli.certs_command import certs_app
    from declora.cli.exits import STATE
    from declora.cli.experiment_command import experiment
    from declora.cli.flags import DebugOpt
    from declora.cli.lazy_group import LazyGroup
    from declora.cli.query_commands import inspect, status
    from declora.node import __version__
except BaseException:
    loading.uncover()
    raise


app = typer.Typer(
    name="declora-node",
    cls=LazyGroup,
    help="Peer-to-peer decentralized LoRA fine-tuning (Dec-LoRA).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"declora {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """Peer-to-peer decentralized LoRA fine-tuning (Dec-LoRA)."""
    STATE["debug"] = debug


# in the order help lists them, after the ones built lazily (`lazy_group.LAZY`)
app.command()(status)
app.command()(inspect)
app.add_typer(certs_app)
for _command in (experiment, predict, generate, export):
    app.command()(_command)


def main() -> None:
    import warnings

    # gRPC's C core logs every failed TLS handshake (hundreds of lines a minute when
    # certificates do not match); errors only, unless the user asks for more. Set
    # before grpc is imported, and inherited by `lab`'s daemons.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    # transformers deprecation chatter is not the user's business
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    from declora.node.daemon.signals import Interrupt

    with contextlib.suppress(ValueError):  # not the main thread: nothing to install
        loading.taken_over(Interrupt.handle, loading.OTHER_STOPS)
    try:
        if sys.argv[1:2] == ["status"]:  # the plain forms without building the app
            from declora.cli.fast import status_main

            STATE["began"] = True
            code = status_main(sys.argv[2:])
            if code is not None:
                sys.stdout.flush()  # a closed pipe fails here, not in the exit's flush
                sys.exit(code)
        app(prog_name="declora-node")
    except KeyboardInterrupt:  # before the app handles them (`LazyGroup.invoke`)
        typer.echo(loading.NOT_BEGUN if STATE["began"] is None else "interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:  # `status | head`: the reader left (click's commands say
        # nothing and exit 1 too); stdout to /dev/null, or the exit's flush fails again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    finally:
        # The exit's collections would walk every object torch and transformers made
        # (~400k for a node: seconds of CPU, tens on a loaded machine, after the node
        # has stopped); frozen, they are skipped. Frozen at the exit (atexit), not here:
        # a process that called `main` and goes on (a test run) keeps collecting.
        atexit.register(gc.freeze)


loading.uncover()  # `main` handles them

if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
