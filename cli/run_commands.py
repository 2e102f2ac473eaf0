"""`simulate` (N virtual nodes in this process) and `lab` (N real daemons on
127.0.0.1), each beside centralized LoRA; their options are their config model's
fields (`cli/options.py`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from declora.cli.checks import check_format, check_output
from declora.cli.exits import Interrupts, config_hint, fail, fail_with, show_traceback
from declora.cli.flags import ForceOpt

if TYPE_CHECKING:
    from pydantic import ValidationError


def simulate(
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Folder for the results: run.json, run.md, run.png."),
    ] = Path("runs/simulate"),
    force: ForceOpt = False,
    options: dict[str, Any] | None = None,
) -> None:
    """Run Dec-LoRA with N virtual nodes in this process, beside centralized LoRA."""
    untouched = "interrupted before the simulation wrote its results; nothing was written"
    with Interrupts(
        untouched, f"interrupted while writing the results: {output} may hold some"
    ) as guard:
        _simulate(output, force, options or {}, guard)


def _simulate(output: Path, force: bool, options: dict[str, Any], guard: Interrupts) -> None:
    from pydantic import ValidationError

    from declora.cli.experiment import run_one
    from declora.cli.options import given
    from declora.node.data_files import DataError
    from declora.node.model_source import ModelError
    from declora.node.partition import scheme_for_data
    from declora.node.sim_config import SimConfig

    try:
        cfg = SimConfig(**given(options))
    except ValidationError as exc:
        _bad_configuration(exc, "simulate")
    check_output(output, "--output", force)
    try:  # the scheme the run uses is the one its header and run.json name
        scheme, why = scheme_for_data(
            cfg.partition_scheme,
            "partition_scheme" in cfg.model_fields_set,
            bool(cfg.labels),
            cfg.task,
            cfg.data,
            cfg.label_column,
        )
    except DataError as exc:
        fail_with(exc)
    if why:
        typer.echo(f"simulate: {why}", err=True)
        cfg = SimConfig(**given(options), partition_scheme=scheme)
    guard.watch(output)  # run_one writes its results only at the end
    try:
        run_one(cfg, output)
    except (DataError, ModelError) as exc:  # the data (shared out among --nodes), the model
        show_traceback()
        fail_with(exc)


def lab(
    fmt: Annotated[
        str, typer.Option("--format", help="text or json for the final summary.")
    ] = "text",
    force: ForceOpt = False,
    options: dict[str, Any] | None = None,
) -> None:
    """Start N real daemons on 127.0.0.1 and compare them with centralized LoRA.

    Shows every node live, then each node's accuracy (perplexity for --task lm) and
    its gap to a centralized reference trained on the same samples.
    """
    stopped = "interrupted: every node was stopped; the output folder may hold partial results"
    with Interrupts("interrupted before any node started; nothing was written", stopped) as guard:
        _lab(fmt, force, options or {}, guard)


def _lab(fmt: str, force: bool, options: dict[str, Any], guard: Interrupts) -> None:
    from pydantic import ValidationError

    from declora.cli.lab import LabConfig, run_lab
    from declora.cli.options import given

    check_format(fmt)
    try:
        cfg = LabConfig(**given(options))
    except ValidationError as exc:
        _bad_configuration(exc, "lab")
    check_output(cfg.output, "--output", force)
    from declora.node.data_files import DataError
    from declora.node.model_source import ModelError

    # a Ctrl-C while the nodes run: run_lab stops them, sums up; it rewrites lab-N
    guard.watch(cfg.output, [f"lab-{i}" for i in range(cfg.nodes)])
    try:
        summary: dict[str, Any] = run_lab(cfg)
    except (DataError, ModelError) as exc:  # the reference's data or model, in process
        show_traceback()
        fail_with(exc)
    if fmt == "json":
        typer.echo(json.dumps(summary, indent=2, default=str))
    raise typer.Exit(0 if summary.get("ok") else 1)


def _bad_configuration(exc: ValidationError, command: str) -> NoReturn:
    """Exit 2 naming each bad option of `command`'s config model: `--option: message`."""
    from declora.node.settings_report import error_hints, error_message

    errors = exc.errors()
    problems = "; ".join(_problem(e["loc"], error_message(e)) for e in errors)
    fail(f"bad configuration: {problems}", hint=error_hints(errors) or config_hint(command))


def _problem(loc: tuple[int | str, ...], msg: str) -> str:
    """One validation error as the user would fix it: `--option: message`."""
    option = "-".join(str(p) for p in loc).replace("_", "-")
    return f"--{option}: {msg}" if option else msg  # model-level checks name their options
