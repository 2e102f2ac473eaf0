"""`experiment`: reproduce a comparison of Dec-LoRA with centralized LoRA, a grid of
runs (`cli/experiment.py`) or a study chosen on validation (`STUDIES`), resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from declora.cli.checks import check_output
from declora.cli.exits import fail

STUDIES = ("swarm", "lm-parity", "methods")  # experiment --task: selection, then seeds


def _study(task: str, output: Path | None, workers: int, table_only: bool) -> str:
    """Run study `task` (resumable) and return its table; with `table_only` rebuild
    the table from its finished runs and selection.json instead, running nothing."""
    from declora.cli import generalization, lm_parity, methods_study

    if task == "swarm":
        study = generalization.SWARM_STUDY
        folder = output or study.output
        if not table_only:
            return generalization.run_study(study, output, workers, say=typer.echo)
        return generalization.table(study, folder, _selection(folder))
    module = lm_parity if task == "lm-parity" else methods_study
    folder = output or module.OUTPUT
    if not table_only:
        return module.run_study(output, workers, say=typer.echo)
    return module.table(folder, _selection(folder))


def _selection(folder: Path) -> dict[str, Any]:
    path = folder / "selection.json"
    if not path.is_file():
        fail(f"{path} does not exist: no lr chosen yet", hint="run the study without --table")
    try:
        chosen = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        chosen = None
    if not isinstance(chosen, dict):
        fail(f"{path} is not a JSON object", hint="delete it and run the study again")
    return dict(chosen)


def experiment(
    task: Annotated[
        str,
        typer.Option(
            help="cls: the paper's grid (MiniLM); lm: the causal-LM grid (SmolLM2); swarm: "
            "the generalization study (4 topologies x 5 seeds, chosen on validation); "
            "lm-parity: SmolLM2 swarm vs centralized LoRA (3 seeds, chosen on validation); "
            "methods: every --method vs centralized LoRA and full fine-tuning (MiniLM ring "
            "of 8, 3 seeds, chosen on validation)."
        ),
    ] = "cls",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Folder for every run and the table [default: results/paper or llm].",
        ),
    ] = None,
    only: Annotated[str | None, typer.Option(help="Comma-separated run names to (re)run.")] = None,
    list_runs: Annotated[bool, typer.Option("--list", help="List the runs and exit.")] = False,
    table: Annotated[
        bool, typer.Option("--table", help="Only rebuild table.md from finished runs.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            show_default="2",
            help="runs at a time (--task swarm, lm-parity, methods; one thread each)",
        ),
    ] = None,
) -> None:
    """Reproduce a comparison of Dec-LoRA with centralized LoRA (resumable)."""
    from declora.cli.experiment import GRIDS, run_grid, write_table

    help_hint = "see `declora-node experiment --help`"
    if task in STUDIES:
        if only is not None or list_runs:
            fail(
                f"--only and --list are for --task {' or '.join(GRIDS)}: --task {task} runs "
                "its whole study (resumable; --table rebuilds its table)",
                hint=help_hint,
            )
        if table and workers is not None:
            fail("--workers runs studies: --table runs nothing", hint="leave out --workers")
        if output is not None and not table:
            check_output(output, "--output")  # a file there: refused before any run
        typer.echo(_study(task, output, workers or 2, table))
        return

    if task not in GRIDS:
        fail(f"--task must be one of {', '.join([*GRIDS, *STUDIES])}, got {task!r}", hint=help_hint)
    if workers is not None:
        fail(
            f"--workers is for --task {', '.join(STUDIES)}: --task {task} runs its grid one "
            "run at a time",
            hint="leave out --workers",
        )
    if list_runs and table:
        fail("give --list or --table, not both", hint=help_hint)
    if only is not None and (list_runs or table):
        flag = "--list" if list_runs else "--table"
        fail(
            f"--only picks runs to (re)run: {flag} runs nothing",
            hint=f"leave out --only, or {flag}",
        )
    grid = GRIDS[task]
    folder = output or grid.output
    if list_runs:
        for name, cfg in grid.runs.items():
            typer.echo(f"{name:18s} {cfg.label}")
        return
    if table:
        if not folder.is_dir():
            fail(
                f"{folder} is no folder: no finished runs of --task {task} to tabulate",
                hint=f"run `declora-node experiment --task {task}` first, or give the --output "
                "it wrote",
            )
        typer.echo(write_table(folder, grid))
        return
    check_output(folder, "--output")  # a file there: refused before any run
    names = None
    if only is not None:
        names = [n.strip() for n in only.split(",")]
        if not all(names):
            fail(
                f"--only needs run names, comma-separated, got {only!r}",
                hint=f"`declora-node experiment --task {task} --list` lists them; leave out "
                "--only to run them all",
            )
    unknown = sorted(set(names or []) - set(grid.runs))
    if unknown:
        fail(
            f"unknown runs {unknown}",
            hint=f"`declora-node experiment --task {task} --list` lists them",
        )
    run_grid(folder, names, grid)
