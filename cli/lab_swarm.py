"""A lab's swarm: start its `declora-node start` processes, show the live table until
they end (or --timeout, or a stop signal: `stops_as_interrupt`), stop them (SIGTERM,
then SIGKILL on a second stop), and train the centralized reference beside them
(`Reference`); `run_swarm` returns the summary (`lab_summary.summarize`)."""

from __future__ import annotations

import contextlib
import math
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from declora.cli.lab import LabConfig, LabNode, node_command
from declora.cli.lab_summary import lab_table, summarize
from declora.node.daemon.signals import Interrupt
from declora.node.scores import score_for
from declora.node.topology import Topology

LAB_MINUTES = "about 4"  # `make run` on 2 idle cores (3 min 33 s measured; 7.5 min when busy)
MIB_PER_MINILM_NODE = 1050  # memory of one MiniLM daemon (PSS 1.0-1.08 GB, RSS 1.2 GB)


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free port on 127.0.0.1")


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


def run_swarm(cfg: LabConfig, out: Path, note: str, topo: Topology) -> dict[str, Any]:
    """Start the nodes in `out` (each on its own free port, wired by `topo`), show the
    live table until every node has ended, --timeout or a stop, stop them; the summary
    (`summarize`). `note` is printed first (what the lab changed in `cfg`)."""
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
                    lab_table(
                        nodes, statuses, f"declora lab {swarm} ({time.time() - t0:.0f}s)", key
                    )
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
            lab_table(nodes, statuses, f"declora lab {swarm} ({time.time() - t0:.0f}s)", key)
        )
    summary = summarize(cfg, out, swarm, nodes, reference, t0, interrupted, timed_out, console)
    if timed_out:
        console.print(
            f"[red]error: lab did not finish within {cfg.timeout:g}s[/]\n"
            f"hint: raise --timeout (it was {cfg.timeout:g} seconds) or give fewer --rounds; "
            f"results.json holds what the nodes had done (timed_out), each node's folder "
            "its last checkpoint",
            soft_wrap=True,
        )
    return summary
