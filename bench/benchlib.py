"""Shared helpers for the daemon benchmarks: spawn real nodes, clean up, read histories.

Every node is a real `python -m declora.cli start ...` subprocess on 127.0.0.1, its
command line built by `declora.cli.lab.node_command` (the one `declora-node lab`
uses), in its own session so a terminal Ctrl-C reaches only the benchmark, which then
stops the nodes itself: SIGTERM, then SIGKILL after a grace period. Nothing here
asserts a time; the benchmarks print what they measure.

Every benchmark parses its flags with `parse_args`, which adds `--smoke`: the same
code path at tiny sizes (a few seconds; about 30 s where real daemons start), so that
`make bench-smoke` (part of `make test`) notices a benchmark that no longer runs.
Only public names of `declora` are used here and in the benchmarks.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import socket
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

from declora.cli.lab import LabConfig, node_command
from declora.cli.lab_summary import read_rounds
from declora.node.mixing import local_mh_weights
from declora.node.topology import Topology, from_spec

HOST = "127.0.0.1"
SMOKE_NOTE = "smoke run: tiny sizes; the figures only show that the benchmark still runs"


def parse_args(
    ap: argparse.ArgumentParser, smoke: dict[str, Any], argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """Parse `argv` with an added `--smoke` flag that swaps in the `smoke` defaults.

    `smoke` maps option destinations (e.g. "rounds") to their smoke-run values; flags
    given explicitly still win (`--smoke --rounds 5` runs 5 rounds). A key that is not
    an option of `ap` is an error, so a renamed option cannot silently drop out of the
    smoke run. With `--smoke` the note `SMOKE_NOTE` is printed first.
    """
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="the same code path at tiny sizes, a few seconds; figures mean nothing",
    )
    known, _ = ap.parse_known_args(argv)
    unknown = sorted(set(smoke) - set(vars(known)))
    if unknown:
        raise ValueError(f"smoke defaults for options that do not exist: {unknown}")
    if known.smoke:
        ap.set_defaults(**smoke)
    args = ap.parse_args(argv)
    if args.smoke:
        print(SMOKE_NOTE, flush=True)
    return args


def free_ports(n: int) -> list[int]:
    """`n` distinct ports the kernel had free a moment ago (all bound at once)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def stop_processes(procs: Sequence[subprocess.Popen[bytes]], grace: float = 20.0) -> None:
    """SIGTERM every live process, then SIGKILL whichever is still there after `grace`."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait()


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM to the benchmark into SystemExit, so `finally` blocks clean up."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


async def serve_until_sigterm(server: Any, address: str) -> None:
    """Start grpc.aio `server` on `address` (insecure), print "ready" for the parent,
    and serve until SIGTERM."""
    import asyncio

    server.add_insecure_port(address)
    await server.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(grace=0.5)


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (on {os.cpu_count()} CPUs)"


@dataclass
class Node:
    index: int
    node_id: str
    address: str
    folder: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]


class Swarm:
    """N real daemons wired by a topology; `with Swarm(...) as s:` always stops them."""

    def __init__(self, cfg: LabConfig, out: Path) -> None:
        self.cfg = cfg
        self.out = out
        self.nodes: list[Node] = []
        self.swarm_id = f"bench-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> Swarm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        cfg = self.cfg
        topo = from_spec(cfg.topology, cfg.nodes, seed=cfg.seed)
        addresses = [f"{HOST}:{p}" for p in free_ports(cfg.nodes)]
        self.out.mkdir(parents=True, exist_ok=True)
        for i in range(cfg.nodes):
            folder = self.out / f"lab-{i}"
            folder.mkdir(parents=True, exist_ok=True)
            peers = [addresses[j] for j in topo.neighbors(i)]
            cmd = node_command(cfg, i, addresses[i], peers, folder, self.swarm_id)
            log_path = self.out / f"lab-{i}.log"
            log = log_path.open("wb")
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            self.nodes.append(Node(i, f"lab-{i}", addresses[i], folder, proc, log_path, log))

    def wait(self, timeout: float) -> bool:
        """Until every node has exited; False if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(n.process.poll() is not None for n in self.nodes):
                return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        try:
            stop_processes([n.process for n in self.nodes])
        finally:
            for n in self.nodes:
                n.log.close()

    def exit_codes(self) -> dict[str, int | None]:
        return {n.node_id: n.process.poll() for n in self.nodes}

    def histories(self) -> dict[str, list[dict[str, Any]]]:
        return {n.node_id: read_rounds(n.folder) for n in self.nodes}

    def log_lines(self) -> Iterator[tuple[str, str]]:
        """(node id, line) for every line of every node's log, node by node."""
        for n in self.nodes:
            if n.log_path.is_file():
                for line in n.log_path.read_text(errors="replace").splitlines():
                    yield n.node_id, line.strip()

    def log_problems(self, expected: str = "", limit: int = 12) -> list[str]:
        """WARNING/ERROR lines and tracebacks from the nodes' logs (at most `limit`).

        Lines containing `expected` (e.g. the normal goodbye of a neighbour that
        finished its last round) are left out.
        """
        found = [
            f"{node_id}: {line}"
            for node_id, line in self.log_lines()
            if not (expected and expected in line)
            and (" WARNING " in line or " ERROR " in line or line.startswith("Traceback"))
        ]
        return found[:limit] + ([f"... {len(found) - limit} more"] if len(found) > limit else [])


class CpuSampler:
    """Samples the CPU seconds (user + system, all threads) of some processes over time.

    Linux only (`/proc/<pid>/stat`); on other systems `samples` stay empty. The
    resolution is the kernel clock tick (usually 10 ms), so use spans of seconds.
    """

    def __init__(self, pids: Sequence[int], period: float = 0.05) -> None:
        self.pids = list(pids)
        self.period = period
        self.samples: dict[int, list[tuple[float, float]]] = {p: [] for p in self.pids}
        self._tick = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _read(self, pid: int) -> float | None:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = text[text.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                cpu = self._read(pid)
                if cpu is not None:
                    self.samples[pid].append((time.time(), cpu))
            self._stop.wait(self.period)

    def cpu_at(self, pid: int, t: float) -> float:
        """CPU seconds of `pid` at wall time `t` (linear between samples); nan if unknown."""
        xs = self.samples.get(pid, [])
        for (t0, c0), (t1, c1) in itertools.pairwise(xs):
            if t0 <= t <= t1:
                return c0 if t1 == t0 else c0 + (c1 - c0) * (t - t0) / (t1 - t0)
        return float("nan")


def train_rounds(
    histories: dict[str, list[dict[str, Any]]], skip_first: int = 1
) -> list[dict[str, Any]]:
    """Phase-"train" entries of every node, without the first `skip_first` rounds."""
    return [
        r
        for rows in histories.values()
        for r in rows
        if r.get("phase") == "train" and int(r.get("round", 0)) > skip_first
    ]


def round_problems(
    histories: dict[str, list[dict[str, Any]]], topo: Topology, rounds: int, deadline: float
) -> tuple[list[str], list[str]]:
    """(problems, notes) from lab nodes' histories (node ids `lab-<i>`).

    A problem: a train round that did not mix with every neighbour (its recorded self
    weight differs from the Metropolis-Hastings self weight of the full topology), a
    neighbour missing from the live set before the last round, a round that took 90%
    of the deadline, fewer rounds recorded than asked. A note: neighbours missing from
    the live set recorded after the last round; that is expected, since a neighbour
    that finished first says goodbye and leaves while this node completes its mix.
    """
    problems: list[str] = []
    last_round_short = 0
    for node_id, hist in sorted(histories.items()):
        i = int(node_id.rsplit("-", 1)[1])
        degree = topo.degree(i)
        nbr = {f"lab-{j}": topo.degree(j) for j in topo.neighbors(i)}
        want_self, _ = local_mh_weights(degree, nbr)
        train = [r for r in hist if r.get("phase") == "train"]
        if len(train) < rounds:
            problems.append(f"{node_id}: {len(train)} of {rounds} rounds recorded")
        for r in train:
            rnd, live = int(r["round"]), r["live_neighbors"]
            if abs(float(r["self_weight"]) - want_self) > 1e-6:
                problems.append(
                    f"{node_id} round {rnd}: self weight {r['self_weight']:.3f} != "
                    f"{want_self:.3f} (mixed without every neighbour)"
                )
            if len(live) < degree:
                if rnd < rounds:
                    problems.append(
                        f"{node_id} round {rnd}: {len(live)} of {degree} neighbours live {live}"
                    )
                else:
                    last_round_short += 1
            if float(r["seconds"]) >= 0.9 * deadline:
                problems.append(f"{node_id} round {rnd} took {r['seconds']:.1f}s (deadline)")
    notes = []
    if last_round_short:
        notes.append(
            f"{last_round_short} node(s) recorded a neighbour already gone after the last "
            "round (it finished first and said goodbye; the mix still used its payload)"
        )
    return problems, notes


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile by linear interpolation (q in [0, 1]); nan for no values."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
