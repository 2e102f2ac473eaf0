"""The paper's comparison on the embedded default: centralized LoRA vs Dec-LoRA.

Every run varies one factor from the base setting (8 nodes, ring, Dirichlet 0.1,
rank 8, K = 5, fp32): topology, data split, rank, local steps, message codec. The
number of samples every run sees is the same (8 nodes x 75 local steps x 16), so
K = 1 runs 75 rounds. Each run writes `<name>.json` and `<name>.png`; a finished run
is not repeated, so an interrupted experiment resumes where it stopped. The
centralized baseline trains once per (rank, training data) and is shared by the
runs that have the same.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from declora.node.report import markdown_table, plot, to_jsonable, write_json
from declora.node.simulator import SimConfig, Simulation, describe_partition

BASE = SimConfig(
    nodes=8,
    topology="ring",
    partition="dirichlet:0.1",
    rounds=15,
    local_steps=5,
    rank=8,
    alpha=16,
    codec="fp32",
    eval_every=3,
    node_eval_every=1000,
    centralized=False,
)


def _variant(**changes: Any) -> SimConfig:
    return BASE.model_copy(update=changes)


PAPER_GRID: dict[str, SimConfig] = {  # in the order they run: the targets first
    "base": BASE,
    "q4": _variant(codec="q4"),
    # the averaged model takes one step per node-step of 8 nodes (an 8x larger batch):
    # scale Adam's learning rate by sqrt(8) for it; centralized keeps its tuned 2e-3
    "base-lr-5.7e-3": _variant(lr=5.7e-3),
    "q8": _variant(codec="q8"),
    "q2": _variant(codec="q2"),
    "iid": _variant(partition="iid"),
    "er-0.3": _variant(topology="er:0.3"),
    "skew": _variant(partition="skew:0.85"),
    "k-1": _variant(local_steps=1, rounds=75, eval_every=15),
    "rank-2": _variant(rank=2, alpha=4),
    "rank-4": _variant(rank=4, alpha=8),
    "rank-16": _variant(rank=16, alpha=32),
}


def _central_key(cfg: SimConfig) -> str:
    """Runs whose centralized baselines are identical share one."""
    data = "skew" if cfg.partition.startswith("skew") else "all"  # iid/dirichlet use every sample
    samples = cfg.nodes * cfg.rounds * cfg.local_steps * cfg.batch_size
    return f"central-r{cfg.rank}-{data}-{samples}"


def _progress() -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )


def run_one(
    cfg: SimConfig, output: Path, name: str = "run", central: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One simulation with a progress bar; writes `<name>.json`, `.md` and `.png`."""
    from rich.console import Console

    console = Console(stderr=True)
    sim = Simulation(cfg)
    console.print(f"[bold]{name}[/]: {cfg.label}  ({sim.lm.schema.numel:,} adapter values)")
    console.print(describe_partition(sim))
    with _progress() as progress:
        tasks: dict[str, Any] = {}

        def report(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total)
            progress.update(tasks[phase], completed=done, total=total)

        t0 = time.perf_counter()
        result = sim.run(report)
    res = to_jsonable(result)
    if central is not None:
        res["centralized"] = central
    res["seconds"] = time.perf_counter() - t0
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / f"{name}.json", res)
    plot(res, output / f"{name}.png", title=f"{name}: {cfg.label}")
    table = markdown_table([(name, res)])
    (output / f"{name}.md").write_text(table)
    console.print(table)
    return res


def _central(cfg: SimConfig, output: Path) -> dict[str, Any]:
    key = _central_key(cfg)
    path = output / f"{key}.json"
    if path.is_file():
        import json

        return dict(json.loads(path.read_text()))
    # the centralized baseline always trains at the base learning rate it was tuned at
    sim = Simulation(cfg.model_copy(update={"centralized": True, "lr": BASE.lr}))
    result = sim.run_centralized()
    write_json(path, result)
    return result


def write_table(output: Path) -> str:
    """`table.md` from the finished runs in `output` (grid order); returns it."""
    import json

    rows = [
        (name, json.loads((output / f"{name}.json").read_text()))
        for name in PAPER_GRID
        if (output / f"{name}.json").is_file()
    ]
    missing = [name for name in PAPER_GRID if not (output / f"{name}.json").is_file()]
    table = markdown_table(rows)
    if missing:
        table += f"\nNot run yet: {', '.join(missing)}.\n"
    (output / "table.md").write_text(table)
    return table


def run_grid(output: Path, names: list[str] | None = None) -> str:
    """Run (or resume) the grid; writes and returns `table.md`."""
    for name, cfg in PAPER_GRID.items():
        path = output / f"{name}.json"
        rerun = names is not None and name in names
        if rerun or (names is None and not path.is_file()):
            run_one(cfg, output, name, _central(cfg, output))
            write_table(output)
    return write_table(output)
