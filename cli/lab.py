"""`declora-node lab`: a swarm of real daemons on 127.0.0.1.

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

import contextlib
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from declora.node import run_folder
from declora.node.daemon.signals import Interrupt
from declora.node.errors import HintedError
from declora.node.recipe import Recipe
from declora.node.scores import Score, score_for
from declora.node.topology import SPEC_FORMS, Topology

BASE_LR = 2e-3  # AdamW for one adapter at batch 16 (the centralized reference)
# Recipe's adaptive defaults
RESOLVED = ("lr_schedule", "warmup_steps", "gradient_tracking", "weighting")
LAB_MINUTES = "about 4"  # `make run` on 2 idle cores (3 min 33 s measured; 7.5 min when busy)
MIB_PER_MINILM_NODE = 1050  # memory of one MiniLM daemon (PSS 1.0-1.08 GB, RSS 1.2 GB)


class LabConfig(Recipe):
    """A lab: the swarm's `Recipe` (lab defaults) plus how many daemons, wired how."""

    model_config = ConfigDict(extra="forbid")

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


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free port on 127.0.0.1")


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


def read_rounds(folder: Path) -> list[dict[str, Any]]:
    """A node's history, oldest round first: its rounds.jsonl.1 (the older lines a
    rotation moved out, `status.HISTORY_CAP`), then its rounds.jsonl (a line still
    being written is skipped); empty when it has neither."""
    texts: list[str] = []  # newest file first: read before a rotation can move it
    seen: set[tuple[int, int]] = set()
    for name in (run_folder.HISTORY, run_folder.OLDER_HISTORY):
        path = folder / name
        if not path.is_file():
            continue
        try:
            with path.open("rb") as f:
                st = os.fstat(f.fileno())
                if (st.st_dev, st.st_ino) not in seen:  # else: rotated since read
                    seen.add((st.st_dev, st.st_ino))
                    texts.append(f.read().decode())
        except FileNotFoundError:  # rotated away between the two looks
            continue
    out = []
    for line in (line for text in reversed(texts) for line in text.splitlines()):
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


def _number(row: dict[str, Any], key: str) -> float | None:
    """A finite number `row` holds under `key` (rounds.jsonl is the node's own file,
    read leniently: anything else is None)."""
    value = row.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _last_figure(rows: list[dict[str, Any]], key: str) -> float | None:
    """The last evaluation's `key` (accuracy, perplexity) in a node's history."""
    for row in reversed(rows):
        evals = row.get("eval")
        if isinstance(evals, dict) and _number(evals, key) is not None:
            return _number(evals, key)
    return None


def _ended_row(n: LabNode, code: int, rows: list[dict[str, Any]], st: Any, key: str) -> list[str]:
    """An exited node's row: where it ended by its rounds.jsonl (its last status, else
    nothing, when it recorded no round), no live neighbour."""
    if rows:
        last = rows[-1]
        r, loss = _number(last, "round"), _number(last, "loss")
        phase = last.get("phase")
        where = "" if r is None else f"{r:.0f}" + (f" ({phase})" if isinstance(phase, str) else "")
        acc, sent = _last_figure(rows, key), _number(last, "bytes_sent")
    elif st is not None:
        where, loss = f"{st.round}/{st.total_rounds or '∞'}", st.loss
        acc, sent = st.last_eval.get(key), float(st.bytes_sent)
    else:
        where, loss, acc, sent = "", None, None, None
    return [
        n.node_id,
        f"exited ({code})",
        where,
        "" if loss is None else f"{loss:.4f}",
        "" if acc is None else f"{acc:.3f}",
        "",
        "" if sent is None else f"{sent / 1024:,.0f} KiB",
        str(n.process.pid),
    ]


def _table(nodes: list[LabNode], statuses: dict[str, Any], title: str, key: str) -> Any:
    """The lab's table: a running node's last status (the neighbours it sees live, less
    the lab's nodes that exited); an exited node's end from its rounds.jsonl."""
    from rich.table import Table

    from declora.cli.client import folded

    table = Table(title=title)
    for col in ("node", "state", "round", "loss", key, "live neighbours", "sent", "pid"):
        table.add_column(col)
    exited = {n.node_id for n in nodes if n.process.poll() is not None}
    for n in nodes:
        st = statuses.get(n.node_id)
        code = n.process.poll()
        if code is not None:
            table.add_row(*_ended_row(n, code, read_rounds(n.folder), st, key))
            continue
        if st is None:
            table.add_row(n.node_id, "starting", "", "", "", "", "", str(n.process.pid))
            continue
        acc = st.last_eval.get(key)
        live = [p.node_id for p in st.neighbors if p.live and p.node_id not in exited]
        table.add_row(
            n.node_id,
            st.state,
            f"{st.round}/{st.total_rounds or '∞'}",
            f"{st.loss:.4f}",
            "" if acc is None else f"{acc:.3f}",
            ", ".join(live),
            f"{st.bytes_sent / 1024:,.0f} KiB",
            str(n.process.pid),
        )
    return folded(table)


def _stop(nodes: list[LabNode], grace: float = 60.0) -> None:
    for n in nodes:
        if n.process.poll() is None:
            n.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for n in nodes:
        left = max(deadline - time.monotonic(), 0.1)
        try:
            n.process.wait(timeout=left)
        except subprocess.TimeoutExpired:
            n.process.kill()
            n.process.wait()


KILL_WAIT = 5.0  # seconds the lab waits for the nodes a second Ctrl-C killed


def _kill(nodes: list[LabNode]) -> None:
    """SIGKILL every node still running (a second Ctrl-C), then wait for them, up to
    `KILL_WAIT` seconds in all (a third Ctrl-C ends the wait): each one's exit code is
    then -9, as results.json records a node ended by a signal, not null."""
    for n in nodes:
        if n.process.poll() is None:
            n.process.kill()
    deadline = time.monotonic() + KILL_WAIT
    with contextlib.suppress(KeyboardInterrupt):
        for n in nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                n.process.wait(timeout=max(deadline - time.monotonic(), 0))


def centralized_reference(cfg: LabConfig) -> dict[str, Any]:
    """One adapter on all the nodes' data, for the swarm's total samples, at the
    learning rate for one adapter (`central_lr`), not the swarm's scaled one; one torch
    thread, as each node (two threads beside busy cores measured 2.4x slower a step)."""
    import torch

    from declora.node.deca_model import model_vector
    from declora.node.workload import load_workload

    torch.set_num_threads(1)
    work = load_workload(cfg.recipe().model_copy(update={"lr": cfg.central_lr}), cfg.nodes)
    trainer = work.centralized_trainer()
    steps = work.centralized_steps()
    t0 = time.perf_counter()
    trainer.train_steps(steps)
    test = work.encoded_test()
    return {
        "steps": steps,
        "batch_size": cfg.batch_size,
        "lr": cfg.central_lr,
        "seconds": time.perf_counter() - t0,
        "eval": work.lm.evaluate(model_vector(trainer), test) if test is not None else {},
    }


def summary_line(
    node_id: str, value: float | None, reference: float | None, score: Score | None = None
) -> str:
    """One node's line of the lab summary: its figure (accuracy or perplexity) and its
    gap to the centralized reference (`Score.gap_text`)."""
    score = score or score_for("cls")
    if value is None:
        return f"  {node_id}: no final adapter"
    versus = "" if reference is None else f" ({score.gap_text(value, reference)} vs centralized)"
    return f"  {node_id}: {score.key} {value:.4f}{versus}"


def failure_line(node_id: str, code: int, log: Path) -> str:
    """The lab summary's line for a node that exited with `code` and no final adapter:
    the `error:` and `hint:` lines its log ends with (the daemon's own report), else
    where the log is."""
    try:
        tail = log.read_text(errors="replace").splitlines()[-40:]
    except OSError:
        tail = []
    errors = [i for i, line in enumerate(tail) if line.startswith("error: ")]
    if not errors:
        return f"  {node_id}: exited {code} (see {log})"
    said = [tail[errors[-1]].removeprefix("error: ")]
    hint = tail[errors[-1] + 1 : errors[-1] + 2]
    said += [h.removeprefix("hint: ") for h in hint if h.startswith("hint: ")]
    return f"  {node_id}: exited {code}: {'; '.join(said)} (log: {log})"


class Reference(threading.Thread):
    """The centralized reference, trained beside the nodes (it fills a core the nodes
    leave idle while they wait for each other); `result` once done."""

    def __init__(self, cfg: LabConfig) -> None:
        super().__init__(name="centralized-reference", daemon=True)  # Ctrl-C: no wait
        self.cfg = cfg
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = centralized_reference(self.cfg)
        except BaseException as exc:  # reported by the lab, never lost in a thread
            self.error = exc


def plot_lab(
    histories: dict[str, list[dict[str, Any]]],
    central: dict[str, Any] | None,
    path: Path,
    score: Score,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for node_id, rows in sorted(histories.items()):
        evals = [(r["round"], r.get("eval") or {}) for r in rows]  # None: not evaluated
        pts = [(n, e[score.key]) for n, e in evals if score.key in e]
        if pts:
            ax1.plot(*zip(*pts, strict=True), marker=".", label=node_id)
        dis = [  # None: not yet measured (DECA after a resume)
            (r["round"], max(r["disagreement"], 1e-12))
            for r in rows
            if r.get("disagreement") is not None
        ]
        if dis:
            ax2.semilogy(*zip(*dis, strict=True), label=node_id)
    if central:
        ax1.axhline(
            central["eval"][score.key], color="r", ls="--", label="centralized (same samples)"
        )
    ax1.set_xlabel("round")
    ax1.set_ylabel(f"test {score.key}")
    if score.percent:
        ax1.set_ylim(0, 1)
    ax1.grid(alpha=0.3)
    if ax1.get_legend_handles_labels()[0]:  # nothing to plot: no node evaluated
        ax1.legend(loc="lower right" if score.higher_is_better else "upper right")
    ax2.set_xlabel("round")
    ax2.set_ylabel("max ||x̂_j - x_i|| / ||x_i|| over neighbours")
    ax2.grid(alpha=0.3)
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class LabBusyError(HintedError):
    """Another lab is writing into this output folder (it holds the folder: `output_lock`)."""


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold `out` for the block as a node holds its --checkpoint-dir (`run_folder.hold`:
    an flock on the folder, which the kernel drops with its process, so a lab that
    crashed or was killed leaves none behind); `LabBusyError` at once, with nothing in
    `out` changed, while another process, or another lab of this one, holds it."""
    try:
        if run_folder.held(out):  # by another lab of this process
            raise run_folder.FolderBusy(out, os.getpid())
        held = run_folder.hold(out)
    except run_folder.FolderBusy as busy:
        raise LabBusyError(
            f"--output {out} is in use by another lab" + (f" (pid {busy.pid})" if busy.pid else ""),
            "wait for it to finish (or stop it), or choose another --output",
        ) from None
    try:
        yield
    finally:
        if held:
            run_folder.release(out)


def run_lab(cfg: LabConfig) -> dict[str, Any]:
    """Run the lab to the end, a Ctrl-C or `--timeout`; returns the summary written to
    results.json (`ok` false unless every node finished). The output folder is the
    lab's alone while it runs (`output_lock`): a second lab into it is refused, one
    `error:` line and a hint, exit 2, before it touches anything. Past `--timeout` the
    nodes are stopped (each checkpoints and writes its adapter), the summary is written
    as far as they got (`timed_out`) and an `error:` line with a hint ends the report."""
    from declora.node.topology import from_spec

    cfg, note = lab_scheme(cfg)  # these refuse bad input before the folder is made
    cfg, held = lab_validation(cfg)
    note = "\n".join(line for line in (note, held) if line)
    topo = from_spec(cfg.topology, cfg.nodes, seed=cfg.seed)
    out = cfg.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with output_lock(out), stops_as_interrupt():
            _check_unheld(out, cfg.nodes)
            return _run_lab(cfg, out, note, topo)
    except LabBusyError as exc:
        from declora.cli.exits import fail_with

        fail_with(exc)  # exit 2


@contextlib.contextmanager
def stops_as_interrupt() -> Iterator[None]:
    """Within the block (in the main thread) SIGTERM and SIGHUP raise KeyboardInterrupt,
    as Ctrl-C does, so a killed lab or a closed terminal stops the nodes (started in
    their own sessions, they get neither signal) and writes the results as
    interrupted; a SIGHUP ignored (nohup) stays ignored. A stop signal (Ctrl-C too)
    within `ECHO_SECONDS` of the one before is that one delivered twice, not a second
    (which kills the nodes). The old handlers after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    Interrupt.last = -math.inf
    try:
        for sig, handler in old.items():
            if handler is not signal.SIG_IGN:
                signal.signal(sig, Interrupt.handle)
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _check_unheld(out: Path, nodes: int) -> None:
    """`LabBusyError` when a process holds one of the node folders a lab replaces
    (`run_folder.hold`: a node still running there, left by a lab killed with SIGKILL),
    before any of them is deleted."""
    for i in range(nodes):
        folder = out / f"lab-{i}"
        if not folder.is_dir():
            continue
        try:
            held = run_folder.hold(folder)
        except run_folder.FolderBusy as busy:
            who = f"pid {busy.pid}" if busy.pid else "another process"
            raise LabBusyError(
                f"--output {out}: {folder.name} is in use by a running node ({who})",
                "stop that node first (it was left by a lab that was killed), or choose "
                "another --output",
            ) from None
        except OSError:
            continue  # an unreadable folder: rmtree says what is wrong
        if held:
            run_folder.release(folder)


def _run_lab(cfg: LabConfig, out: Path, note: str, topo: Topology) -> dict[str, Any]:
    from rich.live import Live

    from declora.cli.client import StatusError, fetch_status, report_console

    console = report_console(stderr=True)
    if note:
        console.print(note, soft_wrap=True)
    key = score_for(cfg.task).key
    swarm = f"lab-{uuid.uuid4().hex[:8]}"
    ports = []
    for i in range(cfg.nodes):
        port = _free_port(cfg.base_port + i if cfg.base_port else 0)
        while port in ports:
            port = _free_port(0)
        ports.append(port)
    addresses = [f"127.0.0.1:{p}" for p in ports]
    nodes: list[LabNode] = []
    interrupted = timed_out = False
    t0 = time.time()
    reference = Reference(cfg) if cfg.centralized else None
    if cfg.model == "minilm":
        models = cfg.nodes + int(cfg.centralized)
        console.print(
            f"lab: needs about {models * MIB_PER_MINILM_NODE / 1024:.1f} GB of memory "
            f"({models} MiniLM models: the daemons and the centralized reference, "
            f"~{MIB_PER_MINILM_NODE / 1024:.1f} GB each) and minutes of CPU "
            f"({LAB_MINUTES} on 2 idle cores at the defaults, more when they are busy)"
        )
    statuses: dict[str, Any] = {}
    try:
        for i in range(cfg.nodes):
            folder = out / f"lab-{i}"
            if folder.exists():
                import shutil

                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            cmd = node_command(
                cfg, i, addresses[i], [addresses[j] for j in topo.neighbors(i)], folder, swarm
            )
            console.print(f"lab-{i}: declora-node start --config {cmd[-1]}", soft_wrap=True)
            log = (out / f"lab-{i}.log").open("wb")
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            nodes.append(LabNode(i, f"lab-{i}", addresses[i], folder, proc, log))
        console.print(
            f"lab: {cfg.nodes} daemons ({cfg.topology}, {cfg.partition_scheme}, "
            f"{cfg.rounds} rounds x {cfg.local_steps} steps, {cfg.model}) on "
            f"{', '.join(addresses)}; logs in {out}"
        )
        if reference is not None:
            console.print("lab: training the centralized reference (same samples) beside them")
            reference.start()
        # transient: the table printed once every node has stopped replaces it
        with Live(console=console, refresh_per_second=2, transient=True) as live:
            while any(n.process.poll() is None for n in nodes):
                if time.time() - t0 > cfg.timeout:
                    timed_out = True
                    console.print(f"lab: --timeout {cfg.timeout:g}s reached, stopping every node")
                    break
                for n in nodes:
                    if n.process.poll() is None:
                        with contextlib.suppress(StatusError):
                            statuses[n.node_id] = fetch_status(n.address, timeout=1.0)
                live.update(
                    _table(nodes, statuses, f"declora lab {swarm} ({time.time() - t0:.0f}s)", key)
                )
                time.sleep(1.0)
    except KeyboardInterrupt:
        interrupted = True
        console.print("lab: interrupted, stopping every node (Ctrl-C again to kill)")
    finally:
        try:
            _stop(nodes)
        except KeyboardInterrupt:
            _kill(nodes)
        for n in nodes:
            n.log.close()
    if nodes:
        console.print(
            _table(nodes, statuses, f"declora lab {swarm} ({time.time() - t0:.0f}s)", key)
        )
    summary = _summarize(cfg, out, swarm, nodes, reference, t0, interrupted, timed_out, console)
    if timed_out:
        console.print(
            f"[red]error: lab did not finish within {cfg.timeout:g}s[/]\n"
            f"hint: raise --timeout (it was {cfg.timeout:g} seconds) or give fewer --rounds; "
            f"results.json holds what the nodes had done (timed_out), each node's folder "
            "its last checkpoint",
            soft_wrap=True,
        )
    return summary


def _summarize(
    cfg: LabConfig,
    out: Path,
    swarm: str,
    nodes: list[LabNode],
    reference: Reference | None,
    t0: float,
    interrupted: bool,
    timed_out: bool,
    console: Any,
) -> dict[str, Any]:
    """Write results.json and results.png from what every (stopped) node left, print
    the per-node summary; the summary. A lab cut short (interrupted, timed out) does
    not wait for the centralized reference."""
    cut = interrupted or timed_out
    histories = {n.node_id: read_rounds(n.folder) for n in nodes}
    finals = {}
    for n in nodes:
        meta = n.folder / "adapter" / "declora.json"
        finals[n.node_id] = json.loads(meta.read_text()) if meta.is_file() else None
    central = None
    if reference is not None and reference.is_alive() and not cut:
        console.print("lab: waiting for the centralized reference...")
        reference.join()
    if reference is not None and reference.error is not None:
        raise reference.error
    if reference is not None and not cut:
        central = reference.result
    score = score_for(cfg.task)
    accs = {k: (v or {}).get("eval", {}).get(score.key) for k, v in finals.items()}
    ref = (central or {}).get("eval", {}).get(score.key)
    # results.json keeps its meaning: accuracy points above the reference (negative:
    # below), or for perplexity the percent above the reference (positive: worse), to
    # 0.1 as the summary lines show it (a tie is 0.0, not -0.0)
    signed = {
        k: None if a is None or ref is None else score.signed_gap(a, ref) for k, a in accs.items()
    }
    summary: dict[str, Any] = {
        "config": cfg.model_dump(mode="json"),
        "swarm_id": swarm,
        "seconds": time.time() - t0,
        "interrupted": interrupted,
        "timed_out": timed_out,
        "exit_codes": {n.node_id: n.process.returncode for n in nodes},
        f"final_{score.key}": accs,
        "gap_points" if score.percent else "perplexity_gap_percent": signed,
        "centralized": central,
        "histories": histories,
        "ok": not cut
        and all(n.process.returncode == 0 for n in nodes)
        and all(a is not None for a in accs.values()),
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    plot_lab(histories, central, out / "results.png", score)
    lines = [
        failure_line(n.node_id, n.process.returncode, out / f"{n.node_id}.log")
        if accs[n.node_id] is None and n.process.returncode and not cut
        else summary_line(n.node_id, accs[n.node_id], ref, score)
        + _reached(histories[n.node_id], cut)
        for n in nodes
    ]
    if ref is not None:
        lines.append(
            f"  centralized reference: {score.key} {ref:.4f} "
            f"({central['steps'] if central else '?'} steps of {cfg.batch_size} at lr "
            f"{cfg.central_lr:g}, all the data)"
        )
    ended = (
        "interrupted after" if interrupted else "timed out after" if timed_out else "finished in"
    )
    console.print(
        f"lab {ended} {summary['seconds']:.0f}s\n" + "\n".join(lines) + f"\nresults: {out}",
        soft_wrap=True,
    )
    return summary


def _reached(rows: list[dict[str, Any]], cut: bool) -> str:
    """For a lab cut short: the round a node had reached ("" otherwise)."""
    if not cut:
        return ""
    r = _number(rows[-1], "round") if rows else None
    return f" (stopped at round {r:.0f})" if r is not None else " (no round done)"
