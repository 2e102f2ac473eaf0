"""The paper's comparison on the embedded default: centralized LoRA vs Dec-LoRA.

Every run varies one factor from the base setting (8 nodes, ring, Dirichlet 0.1,
rank 8, K = 5, fp32): topology, data split, rank, local steps, message codec. The
number of samples every run sees is the same (8 nodes x 75 local steps x 16), so
K = 1 runs 75 rounds. The `gt-*` runs add gradient tracking (`node/tracking.py`).
Each run writes `<name>.json` and `<name>.png`; a finished run is not repeated, so an
interrupted experiment resumes where it stopped. The centralized baseline trains once
per (rank, training data, learning rate, seed) and is shared by the runs that have
the same; a run at another learning rate than the base is compared with the better of
centralized at the base rate and at its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from declora.node.acceleration import UNACCELERATED
from declora.node.lm_data import IGNORE
from declora.node.report import markdown_table, plot, to_jsonable, write_json
from declora.node.scores import score_for
from declora.node.simulator import SimConfig, Simulation, describe_partition

# The grids below were run before the adaptive recipe, the dedupe and the validation
# split (issue 14, `cli/generalization.py`): they pin what they ran with, so their
# committed results stay reproducible.
PUBLISHED: dict[str, Any] = {
    **UNACCELERATED,
    "gradient_tracking": False,
    "weighting": "nodes",  # the grids' tracked variants (copies of BASE) keep it
    "gossip_steps": 1,
    "swarm_size": 1,
    "lr_schedule": "constant",
    "warmup_steps": 0,
    "dedupe": False,
    "validation_fraction": 0.0,
    "eval_before_consensus": True,
}

BASE = SimConfig(
    **PUBLISHED,
    nodes=8,
    topology="ring",
    partition_scheme="dirichlet:0.1",
    rounds=15,
    local_steps=5,
    lr=2e-3,
    rank=8,
    alpha=16,
    codec="fp32",
    eval_every=3,
    node_eval_every=1000,
    centralized=False,
)


def _variant(**changes: Any) -> SimConfig:
    return BASE.model_copy(update=changes)


# K = 1: 75 rounds of one local step each (the same 9,600 samples)
K1: dict[str, Any] = {"local_steps": 1, "rounds": 75, "eval_every": 15}
GT_K1: dict[str, Any] = {**K1, "gradient_tracking": True, "lr": 5.7e-3}

PAPER_GRID: dict[str, SimConfig] = {  # in the order they run: the targets first
    "base": BASE,
    "q4": _variant(codec="q4"),
    # the averaged model takes one step per node-step of 8 nodes (an 8x larger batch):
    # scale Adam's learning rate by sqrt(8) for it
    "base-lr-5.7e-3": _variant(lr=5.7e-3),
    # gradient tracking: local steps follow the swarm's gradient, not the node's own
    "gt": _variant(gradient_tracking=True),
    "gt-lr-5.7e-3": _variant(gradient_tracking=True, lr=5.7e-3),
    "gt-lr-5.7e-3-q4": _variant(gradient_tracking=True, lr=5.7e-3, codec="q4"),
    # the same with another seed: another Dirichlet draw, init and batch order
    "gt-lr-5.7e-3-seed-1": _variant(gradient_tracking=True, lr=5.7e-3, seed=1),
    "base-lr-5.7e-3-seed-1": _variant(lr=5.7e-3, seed=1),
    # seed 1 is still climbing at the last round: one gossip step per local step
    # (K = 1 closed 6 points without tracking), three seeds, fp32 and q4
    "gt-lr-5.7e-3-k-1": _variant(**GT_K1),
    "gt-lr-5.7e-3-k-1-seed-1": _variant(**GT_K1, seed=1),
    "gt-lr-5.7e-3-k-1-q4": _variant(**GT_K1, codec="q4"),
    "gt-lr-5.7e-3-k-1-q4-seed-1": _variant(**GT_K1, codec="q4", seed=1),
    "gt-lr-5.7e-3-k-1-seed-2": _variant(**GT_K1, seed=2),
    "gt-lr-5.7e-3-k-1-q4-seed-2": _variant(**GT_K1, codec="q4", seed=2),
    "q8": _variant(codec="q8"),
    "q2": _variant(codec="q2"),
    "iid": _variant(partition_scheme="iid"),
    "er-0.3": _variant(topology="er:0.3"),
    "skew": _variant(partition_scheme="skew:0.85"),
    "k-1": _variant(**K1),
    "rank-2": _variant(rank=2, alpha=4),
    "rank-4": _variant(rank=4, alpha=8),
    "rank-16": _variant(rank=16, alpha=32),
}


# Causal LM: the embedded SmolLM2-135M-Instruct on BBC News texts (packed into
# 128-token blocks with EOS), five nodes that each hold one category (non-IID by
# topic), on a ring; held-out perplexity on 32 test articles. The recipe was fixed
# before any run, not tuned: lr 1e-3 (a common LoRA rate for a 135M model at this
# batch) with 2 warmup steps and cosine decay; centralized LoRA uses the same.
LM_BASE = SimConfig(
    **{**PUBLISHED, "lr_schedule": "cosine", "warmup_steps": 2},
    model="smollm2",
    task="lm",
    nodes=5,
    topology="ring",
    partition_scheme="skew:1",
    rounds=12,
    local_steps=2,
    batch_size=4,
    max_length=128,
    rank=8,
    lr=1e-3,
    codec="fp32",
    max_eval=32,
    eval_every=12,
    node_eval_every=1000,
    consensus_rounds=300,
    centralized=False,
    threads=2,
)
# The swarm's recipe for label skew (README, the lab's defaults): gradient tracking,
# one local step a round (24 rounds: the same samples), the learning rate scaled by
# 2 x sqrt(nodes) for the averaged model's larger batch. Chosen after lm-base missed,
# from the rule the lab uses for classification, not tuned on this data.
LM_SWARM: dict[str, Any] = {
    "gradient_tracking": True,
    "local_steps": 1,
    "rounds": 24,
    "eval_every": 24,
    "lr": round(LM_BASE.lr * 2 * 5**0.5, 6),
}
LM_GRID: dict[str, SimConfig] = {
    "lm-base": LM_BASE,
    "lm-gt-k1": LM_BASE.model_copy(update=LM_SWARM),
    "lm-gt-k1-q4": LM_BASE.model_copy(update={**LM_SWARM, "codec": "q4"}),
    # chat format: the headline chats of the same articles, loss on the headline only;
    # the run records greedy headlines of held-out stories before and after
    "lm-chat": LM_BASE.model_copy(
        update={"data": "bbc-headlines", "max_length": 160, "rounds": 6, "eval_every": 6}
    ),
}
SAMPLES = 3  # held-out conversations a chat run answers before and after training


@dataclass(frozen=True)
class Grid:
    """A comparison `experiment` runs: its base setting, its runs, where they go."""

    base: SimConfig
    runs: dict[str, SimConfig]
    output: Path


GRIDS = {
    "cls": Grid(BASE, PAPER_GRID, Path("results/paper")),
    "lm": Grid(LM_BASE, LM_GRID, Path("results/llm")),
}


def _grid_of(cfg: SimConfig) -> Grid:
    return GRIDS[cfg.task]


def _central_key(cfg: SimConfig, lr: float) -> str:
    """Runs whose centralized baselines are identical share one."""
    base = _grid_of(cfg).base
    data = (
        "skew" if cfg.partition_scheme.startswith("skew") else "all"
    )  # iid/dirichlet use every sample
    samples = cfg.nodes * cfg.rounds * cfg.local_steps * cfg.batch_size
    key = f"central-r{cfg.rank}-{data}-{samples}"
    if cfg.task != "cls":
        key = f"{cfg.task}-{key}"
    if cfg.data != base.data:
        key += f"-{cfg.data}"
    if lr != base.lr:
        key += f"-lr-{lr:g}"
    return key if cfg.seed == base.seed else f"{key}-seed-{cfg.seed}"


def _central_lrs(cfg: SimConfig) -> list[float]:
    """Centralized LoRA trains at the base learning rate it is tuned at and, for a run
    with another one, at the run's too: the run is compared with the better of them."""
    base = _grid_of(cfg).base
    return [base.lr] if cfg.lr == base.lr else [base.lr, cfg.lr]


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
    if sim.test_data.chats is not None:
        res["loss_token_fraction"] = loss_token_fraction(sim)
        res["samples"] = chat_samples(sim, SAMPLES)
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / f"{name}.json", res)
    plot(res, output / f"{name}.png", title=f"{name}: {cfg.label}")
    table = markdown_table([(name, res)])
    (output / f"{name}.md").write_text(table)
    console.print(table)
    return res


def loss_token_fraction(sim: Simulation) -> float:
    """The share of the training tokens (padding excluded) that carry loss."""
    enc = sim.train_enc
    return float((enc.labels != IGNORE).sum() / enc.attention_mask.sum())


def chat_samples(sim: Simulation, count: int) -> list[dict[str, str]]:
    """Greedy answers to the first `count` held-out conversations: by the base model
    (the shared initial adapter, whose B factors are zero) and by the swarm's averaged
    adapter; with the reference answer."""
    import numpy as np
    import torch

    from declora.node.lm_data import encode_prompt

    lm, tok = sim.lm, sim.lm.tokenizer
    initial = torch.cat([t.reshape(-1).float() for t in lm.initial_tensors()]).numpy()
    chats = (sim.test_data.chats or ())[:count]
    out: list[dict[str, str]] = [{"prompt": c[0][1], "reference": c[-1][1]} for c in chats]
    for key, vec in (("base", initial), ("swarm", sim.average())):
        with lm.using(np.asarray(vec, dtype=np.float32)), torch.no_grad():
            lm.model.eval()
            for row, chat in zip(out, chats, strict=True):
                ids = torch.tensor([encode_prompt(tok, [{"role": "user", "content": chat[0][1]}])])
                new = lm.model.generate(  # type: ignore[operator]
                    input_ids=ids.to(lm.device),
                    attention_mask=torch.ones_like(ids).to(lm.device),
                    max_new_tokens=32,
                    do_sample=False,
                    eos_token_id=tok.eos_id,
                    pad_token_id=tok.pad_id,
                )[0, ids.shape[1] :]
                row[key] = tok.decode([int(i) for i in new if int(i) != tok.eos_id]).strip()
    return out


def _best_central(cfg: SimConfig, output: Path) -> dict[str, Any] | None:
    """The better of the finished centralized baselines of `cfg` (None if none is)."""
    import json

    found = []
    for lr in _central_lrs(cfg):
        path = output / f"{_central_key(cfg, lr)}.json"
        if path.is_file():
            found.append({"lr": lr, **json.loads(path.read_text())})
    if not found:
        return None
    score = score_for(cfg.task)
    best = score.best(c["final"][score.key] for c in found)
    return next(c for c in found if c["final"][score.key] == best)


def _central(cfg: SimConfig, output: Path) -> dict[str, Any]:
    """Train the missing centralized baselines of `cfg`; the better one."""
    for lr in _central_lrs(cfg):
        path = output / f"{_central_key(cfg, lr)}.json"
        if not path.is_file():
            sim = Simulation(cfg.model_copy(update={"centralized": True, "lr": lr}))
            write_json(path, sim.run_centralized())
    best = _best_central(cfg, output)
    assert best is not None
    return best


def write_table(output: Path, grid: Grid = GRIDS["cls"]) -> str:
    """`table.md` from the finished runs of `grid` in `output` (grid order); returns it."""
    import json

    rows = []
    for name, cfg in grid.runs.items():
        path = output / f"{name}.json"
        if path.is_file():
            res = json.loads(path.read_text())
            res["centralized"] = _best_central(cfg, output) or res.get("centralized")
            rows.append((name, res))
    missing = [name for name in grid.runs if not (output / f"{name}.json").is_file()]
    table = markdown_table(rows)
    if missing:
        table += f"\nNot run yet: {', '.join(missing)}.\n"
    (output / "table.md").write_text(table)
    return table


def run_grid(output: Path, names: list[str] | None = None, grid: Grid = GRIDS["cls"]) -> str:
    """Run (or resume) `grid`; writes and returns `table.md`."""
    for name, cfg in grid.runs.items():
        path = output / f"{name}.json"
        rerun = names is not None and name in names
        if rerun or (names is None and not path.is_file()):
            run_one(cfg, output, name, _central(cfg, output))
            write_table(output, grid)
    return write_table(output, grid)
