"""`declora-node lab`: a swarm of real daemons on 127.0.0.1.

This module holds its configuration (`LabConfig`), each node's options
(`node_config`) and `run_lab`; the swarm's launch and stop are `lab_swarm`'s, the
output folder's lock `lab_lock`'s, the table and the summary `lab_summary`'s.

Starts N `declora-node start` processes wired by a topology (static peers), each on
its own partition of the data, shows a live table of every node (from the Status
RPC), and when all have finished writes `results.json` and `results.png` in the
output folder beside each node's folder (logs, checkpoints, final PEFT adapter,
rounds.jsonl); the last table shows where each node ended (its rounds.jsonl). Ctrl-C,
a SIGTERM or SIGHUP to the lab (`kill`, a closed terminal), `--timeout` (or any
failure) stops every process with SIGTERM, so each one checkpoints; a second one
kills them. A lab holds its output folder's lock (`output_lock`) while it runs: a
second lab into the same folder is refused, and so is one whose node folder a
running process (a node left by a lab killed with SIGKILL) still holds. The
centralized reference trains one adapter on all of the nodes' data for the swarm's
total number of samples, and the summary gives each node's gap to it in points.

The defaults are the swarm's recipe (`Recipe`, as for `simulate`): gradient tracking
with every node's gradient weighed by its examples (`--weighting`), one local step per
round, AdamW at 4e-3 x sqrt(nodes) (`lr` unless given), Chebyshev-accelerated gossip
with the topology's lambda and the step after mixing (handed to every node, whose
`start` cannot work lambda out), and here 60 rounds; the reference trains at 2e-3,
the better rate for one adapter. The lr and K were first picked on seeds 1 and 2
(README, Quick start), and the parity study chose the same on validation; `make run`
reports seed 0.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from declora.node.recipe import Recipe
from declora.node.topology import SPEC_FORMS

BASE_LR = 2e-3  # AdamW for one adapter at batch 16 (the centralized reference)
# Recipe's adaptive defaults
RESOLVED = ("lr_schedule", "warmup_steps", "gradient_tracking", "weighting")


class LabConfig(Recipe):
    """A lab: the swarm's `Recipe` (lab defaults) plus how many daemons, wired how."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN: "a finite number"

    nodes: int = Field(4, ge=1, le=64, description="daemons on 127.0.0.1")
    topology: str = Field(
        "ring",
        description="the graph: "
        + "; ".join(SPEC_FORMS)
        + " (an edge list file: a line 'i j' per edge, # comments)",
    )
    partition_scheme: str = Field(
        "dirichlet:0.5", description="iid, dirichlet:A, skew[:P], shards:K"
    )
    rounds: int = Field(60, ge=1, le=10_000_000, description="training rounds")
    max_eval: int = Field(
        200, ge=0, le=10_000_000, description="test examples each node evaluates on"
    )
    eval_every: int = Field(
        20, ge=0, le=1_000_000, description="evaluate every N rounds (and at the end)"
    )
    consensus_rounds: int = Field(
        50, ge=0, le=1_000_000, description="most gossip-only rounds at the end"
    )
    base_port: int = Field(
        7300,
        ge=0,
        le=65535,
        description="first port: the nodes listen on it and the next ones (0: any free)",
    )
    round_deadline: float = Field(
        120.0, gt=0, le=86_400, description="seconds to wait for neighbours"
    )
    centralized: bool = Field(True, description="also train the centralized reference")
    central_lr: float = Field(
        BASE_LR, gt=0, le=1, description="AdamW learning rate of the centralized reference"
    )
    output: Path = Field(Path("runs/lab"), description="folder for logs and results")
    extra: dict[str, Any] = Field(
        default_factory=dict, description="more `start` options for every node (config keys)"
    )
    timeout: float = Field(
        3600.0, gt=0, le=7 * 86400, description="seconds before the lab gives up (a week at most)"
    )

    @model_validator(mode="after")
    def _ports_fit(self) -> LabConfig:
        """The nodes' ports, --base-port and the next --nodes - 1, must all exist."""
        last = self.base_port + self.nodes - 1
        if self.base_port and last > 65535:
            raise ValueError(
                f"--base-port {self.base_port} with --nodes {self.nodes} needs ports up to "
                f"{last}, past 65535: give --base-port at most {65536 - self.nodes} (or 0: "
                "any free ports)"
            )
        return self

    @model_validator(mode="after")
    def _test_set_ok(self) -> LabConfig:
        self.require_test_set("a lab")
        return self

    @model_validator(mode="after")
    def _swarm_defaults(self) -> LabConfig:
        """`swarm_size` (lr x sqrt(nodes)), `gossip_steps` and the acceleration
        (`Recipe.fill_swarm_defaults`) from the lab's swarm."""
        self.fill_swarm_defaults(self.nodes, self.topology)
        return self


@dataclass
class LabNode:
    index: int
    node_id: str
    address: str
    folder: Path
    process: subprocess.Popen[bytes]
    log: Any


SCHEME = "partition_scheme"


def _own(cfg: LabConfig) -> dict[str, Any]:
    """The recipe options in `cfg.extra`: the lab's own, chosen as a flag is."""
    return {k: v for k, v in cfg.extra.items() if k in Recipe.model_fields}


def lab_scheme(cfg: LabConfig) -> tuple[LabConfig, str]:
    """`cfg` with the partition scheme its daemons are to use, and a line saying why
    when it is not `cfg`'s (`partition.scheme_for_data`: causal-LM data without a label
    column is shared out iid unless the user chose a scheme, in the flags or `extra`;
    a chosen label-based one, or --labels, is a `DataError` before any daemon starts:
    each daemon is handed its scheme, so cannot tell a default from a choice)."""
    from declora.node.partition import scheme_for_data

    chosen = {**cfg.model_dump(include=cfg.model_fields_set), **_own(cfg)}
    merged = {**cfg.model_dump(), **chosen}
    scheme, why = scheme_for_data(
        str(merged[SCHEME]),
        SCHEME in chosen,
        bool(merged["labels"]),
        merged["task"],
        merged["data"],
        merged["label_column"],
    )
    if scheme == merged[SCHEME]:
        return cfg, ""
    iid = LabConfig.model_validate({**cfg.model_dump(include=cfg.model_fields_set), SCHEME: scheme})
    return iid, f"lab: {why}"


FRACTION = "validation_fraction"


def lab_validation(cfg: LabConfig) -> tuple[LabConfig, str]:
    """`cfg` and "" when its validation fraction holds out a row of the nodes' shares
    (`workload.validation_problem`, the data read, no model built), or is 0. One that
    holds out none is, as `simulate` has it, a `DataError` before any daemon starts when
    the user chose it (a flag or `extra`), else dropped: `cfg` with none, and a warning
    line (each daemon, handed the lab's default, would take it as chosen and refuse)."""
    from declora.node.workload import validation_problem

    own = _own(cfg)
    merged = LabConfig.model_validate({**cfg.model_dump(exclude_unset=True), **own})
    if not merged.validation_fraction:
        return cfg, ""
    log = logging.getLogger("declora")  # the read's info lines (duplicates dropped)
    level = log.level  # come again from the nodes and the reference: not twice
    log.setLevel(max(level, logging.WARNING))
    try:
        problem = validation_problem(merged.recipe(), cfg.nodes)
    finally:
        log.setLevel(level)
    if problem is None:
        return cfg, ""
    if FRACTION in cfg.model_fields_set or FRACTION in own:
        raise problem
    none = LabConfig.model_validate({**cfg.model_dump(exclude_unset=True), FRACTION: 0.0})
    return none, f"lab: {problem.message}; going on without validation ({problem.hint})"


def node_config(
    cfg: LabConfig, i: int, address: str, peers: list[str], folder: Path, swarm: str
) -> dict[str, Any]:
    """The `declora-node start` options of lab node `i` (config-file keys): the whole
    recipe, and every neighbour awaited at start (a lone node trains --solo). Recipe
    options in `extra` count as the lab's own: the swarm's defaults are resolved with
    them."""
    own = _own(cfg)
    if own:
        cfg = LabConfig.model_validate({**cfg.model_dump(exclude_unset=True), **own})
    recipe = cfg.recipe().model_dump(mode="json", exclude_none=True)
    for key in RESOLVED:  # each node resolves these from its final options (`extra` too)
        if key not in cfg.model_fields_set:
            recipe.pop(key, None)
    return {
        **recipe,
        "node_id": f"lab-{i}",
        "swarm_id": swarm,
        "listen": address,
        "peers": peers,
        **({"min_peers": -1, "startup_timeout": 600.0} if peers else {"solo": True}),
        "partition": f"{i}/{cfg.nodes}",
        "partition_scheme": cfg.partition_scheme,
        "rounds": cfg.rounds,
        "round_deadline": cfg.round_deadline,
        "checkpoint_dir": str(folder),
        "threads": 1,
        **cfg.extra,
    }


def node_command(
    cfg: LabConfig, i: int, address: str, peers: list[str], folder: Path, swarm: str
) -> list[str]:
    """Write lab node `i`'s config file into `folder`; its `declora-node start` command."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "node.json"
    path.write_text(json.dumps(node_config(cfg, i, address, peers, folder, swarm), indent=1))
    return [sys.executable, "-m", "declora.cli", "start", "--config", str(path)]


def run_lab(cfg: LabConfig) -> dict[str, Any]:
    """Run the lab to the end, a Ctrl-C or `--timeout`; returns the summary written to
    results.json (`ok` false unless every node finished). The output folder is the
    lab's alone while it runs (`output_lock`): a second lab into it is refused, one
    `error:` line and a hint, exit 2, before it touches anything. Past `--timeout` the
    nodes are stopped (each checkpoints and writes its adapter), the summary is written
    as far as they got (`timed_out`) and an `error:` line with a hint ends the report."""
    from declora.cli.lab_lock import LabBusyError, check_unheld, output_lock
    from declora.cli.lab_swarm import run_swarm, stops_as_interrupt
    from declora.node.topology import from_spec

    cfg, note = lab_scheme(cfg)  # these refuse bad input before the folder is made
    cfg, held = lab_validation(cfg)
    note = "\n".join(line for line in (note, held) if line)
    topo = from_spec(cfg.topology, cfg.nodes, seed=cfg.seed)
    out = cfg.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with output_lock(out), stops_as_interrupt():
            check_unheld(out, cfg.nodes)
            return run_swarm(cfg, out, note, topo)
    except LabBusyError as exc:
        from declora.cli.exits import fail_with

        fail_with(exc)  # exit 2
