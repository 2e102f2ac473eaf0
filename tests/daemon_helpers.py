"""Helpers for the multi-process daemon tests: real `declora-node start` subprocesses.

Every node is `python -m declora.cli start ...` on 127.0.0.1 with a port picked by
binding to port 0, its stderr (the daemon's log) captured to a file. Tests wait by
polling (the Status RPC or process exit) until a deadline, and a failed wait names
what was awaited and shows the tail of every node's log. `Cluster` kills whatever is
still running when the test ends, so no test leaves processes behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import grpc
import numpy as np
import pytest

from declora.cli.client import StatusError, fetch_status
from declora.node.security import TlsFiles
from declora.proto import pb, pb_grpc

if TYPE_CHECKING:
    from declora.node.daemon import Daemon
    from declora.node.settings import NodeSettings
    from declora.node.simulator import SimConfig, Simulation

HOST = "127.0.0.1"
CLI = [sys.executable, "-m", "declora.cli"]
POLL = 0.2  # seconds between polls
LOG_TAIL = 25  # log lines shown per node when a wait fails
STARTUP_TIMEOUT = 300  # static swarms wait for every peer this long (a loaded machine)

# The swarm's model and training shape; the simulator test passes the same values.
MODEL = "tiny-bert"
RANK = 4
ALPHA = 8
MAX_LENGTH = 32
LR = 0.05
BATCH = 16
LOCAL_STEPS = 5
SEED = 0

T = TypeVar("T")


def serve_fake_peer(servicer: pb_grpc.SwarmServicer, address: str) -> grpc.Server:
    """An in-test gRPC server for a fake neighbour on `address`, started; stop it after."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_SwarmServicer_to_server(servicer, server)
    server.add_insecure_port(address)
    server.start()
    return server


def uid() -> str:
    return uuid.uuid4().hex[:12]


PORT_RANGE = (20000, 32000)  # below Linux's ephemeral range (32768-60999): a port picked
# here cannot be handed to some process's outgoing connection before a node binds it


_HANDED_OUT: set[int] = set()  # ports this process gave out (maybe not bound yet)


def free_ports(n: int) -> list[int]:
    """`n` distinct ports the kernel had free a moment ago (all bound at once), drawn
    from `PORT_RANGE`, never one this process handed out before: two calls before
    anything binds (a pair's ports, then an attacker's) cannot collide."""
    rng = random.Random()
    socks: list[socket.socket] = []
    try:
        while len(socks) < n:
            port = rng.randrange(*PORT_RANGE)
            if port in _HANDED_OUT:
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((HOST, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        ports = [s.getsockname()[1] for s in socks]
        _HANDED_OUT.update(ports)
        return ports
    finally:
        for s in socks:
            s.close()


def train_args(data: Path, method: str = "dec-lora") -> list[str]:
    """Model, data and training flags shared by every node of a swarm: Dec-LoRA as
    published (no tracking, a fixed lr, every row trained on) unless a test adds flags
    after; without LoRA's options for `method` deca (it refuses them)."""
    lora = "" if method == "deca" else f"--rank {RANK} --alpha {ALPHA} "
    flags = (
        f"--model {MODEL} {lora}--max-length {MAX_LENGTH} --lr {LR} "
        f"--batch-size {BATCH} --local-steps {LOCAL_STEPS} --seed {SEED} --threads 1 --device cpu "
        "--no-gradient-tracking --validation-fraction 0 --lr-schedule constant"
    )
    return ["--data", str(data), *flags.split()]


def sim_config(data: Path, nodes: int, **changes: object) -> SimConfig:
    """The simulator's recipe for `nodes` daemons on a ring started with
    `train_args(data)`; `changes` are the fields of the flags a test adds after."""
    from declora.node.acceleration import UNACCELERATED
    from declora.node.simulator import SimConfig

    fields: dict[str, object] = {
        "model": MODEL,
        "data": str(data),
        "nodes": nodes,
        "topology": "ring",
        "local_steps": LOCAL_STEPS,
        "batch_size": BATCH,
        "lr": LR,
        "rank": RANK,
        "alpha": ALPHA,
        "max_length": MAX_LENGTH,
        "seed": SEED,
        "centralized": False,
        "threads": 1,
        "gradient_tracking": False,
        "validation_fraction": 0.0,
        "lr_schedule": "constant",
        **UNACCELERATED,  # `start`'s defaults, which cannot know the swarm's graph
    }
    if changes.get("method") == "deca":  # DECA refuses LoRA's options
        del fields["rank"], fields["alpha"]
    return SimConfig.model_validate({**fields, **changes})


def simulate(cfg: SimConfig) -> Simulation:
    """`cfg` run in this process on one torch thread, as the daemons (restored after)."""
    import torch

    from declora.node.simulator import Simulation

    threads = torch.get_num_threads()
    try:
        sim = Simulation(cfg)
        sim.run()
    finally:
        torch.set_num_threads(threads)
    return sim


def status_or_none(
    address: str, timeout: float = 2.0, tls: TlsFiles | None = None, secret: str = ""
) -> pb.StatusReply | None:
    """The node's Status (over mTLS with `tls`, signed with `secret`), or None while it
    cannot answer."""
    try:
        return fetch_status(address, timeout, tls=tls, secret=secret)
    except StatusError:
        return None


def live_ids(reply: pb.StatusReply | None) -> set[str]:
    return set() if reply is None else {n.node_id for n in reply.neighbors if n.live}


def known_ids(reply: pb.StatusReply | None) -> set[str]:
    return set() if reply is None else {n.node_id for n in reply.neighbors}


@dataclass
class Node:
    """One daemon subprocess and its files."""

    node_id: str
    port: int
    workdir: Path
    args: list[str]
    host: str = HOST
    prefix: list[str] = field(default_factory=list)  # e.g. `ip netns exec NS`
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    tls: TlsFiles | None = None  # the client files `status()` uses (a node serving mTLS)
    secret: str = ""  # the swarm secret `status()` signs with (set by `start` from its env)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ckpt(self) -> Path:
        return self.workdir / "state"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"stderr-{self.starts}.log"

    def start(self, extra: Sequence[str] = (), env: dict[str, str] | None = None) -> Node:
        assert self.proc is None or self.proc.poll() is not None, f"{self.node_id} is running"
        self.starts += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        own = ["--node-id", self.node_id, "--listen", self.address]
        own += ["--checkpoint-dir", str(self.ckpt)]
        cmd = [*self.prefix, *CLI, "start", *own, *self.args, *extra]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
        self.secret = full_env.get("DECLORA_SWARM_SECRET", "")
        with self.log_path.open("wb") as err, (self.workdir / "stdout.log").open("ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=full_env,
            )
        return self

    def status(self) -> pb.StatusReply | None:
        return status_or_none(self.address, tls=self.tls, secret=self.secret)

    def wait_exit(self, node: InProcessNode, timeout: float) -> int:
        """`node`'s exit code once its run ends by itself (TimeoutError after `timeout`)."""
        [run] = [run for daemon, run in self.runs if daemon is node.daemon]
        return run.result(timeout=timeout)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self, start: int | None = None) -> str:
        """The daemon log of one start (default: the latest)."""
        path = self.workdir / f"stderr-{start or self.starts}.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def tail(self, lines: int = LOG_TAIL) -> str:
        state = "not started" if self.proc is None else f"returncode={self.proc.poll()}"
        body = "\n".join(self.log().splitlines()[-lines:])
        return f"----- {self.node_id} ({self.address}, {state}) log tail:\n{body}"

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Cluster:
    """Nodes of one test; `close()` kills leftovers. Waits fail with every node's log."""

    def __init__(self, root: Path, data: Path) -> None:
        self.root = root
        self.data = data
        self.swarm_id = f"test-{uid()}"
        self.nodes: list[Node] = []

    def add(
        self,
        node_id: str,
        port: int,
        args: Sequence[str],
        host: str = HOST,
        prefix: Sequence[str] = (),
    ) -> Node:
        node = Node(node_id, port, self.root / node_id, list(args), host, list(prefix))
        self.nodes.append(node)
        return node

    def static(
        self, n: int, edges: Iterable[tuple[int, int]], extra: Sequence[str] = ()
    ) -> list[Node]:
        """`n` nodes `n0..` of this swarm with static peers along `edges`, partition i/n;
        each waits for all of its peers at start (`extra` may say otherwise)."""
        ports = free_ports(n)
        peers: list[set[int]] = [set() for _ in range(n)]
        for a, b in edges:
            peers[a].add(b)
            peers[b].add(a)
        nodes = []
        for i in range(n):
            static = ",".join(f"{HOST}:{ports[j]}" for j in sorted(peers[i]))
            swarm = ["--swarm-id", self.swarm_id, "--peers", static, "--partition", f"{i}/{n}"]
            wait = ["--min-peers", "-1", "--startup-timeout", str(STARTUP_TIMEOUT)]
            method = extra[list(extra).index("--method") + 1] if "--method" in extra else ""
            args = [*train_args(self.data, method), *swarm, *wait, *extra]
            nodes.append(self.add(f"n{i}", ports[i], args))
        return nodes

    def close(self) -> None:
        for node in self.nodes:
            node.signal(signal.SIGKILL)
        for node in self.nodes:
            node.kill()

    def report(self) -> str:
        return "\n".join(node.tail() for node in self.nodes)

    def fail(self, message: str) -> None:
        pytest.fail(f"{message}\n{self.report()}", pytrace=False)

    def wait_until(
        self,
        what: str,
        check: Callable[[], T | None],
        timeout: float,
        running: Sequence[Node] = (),
    ) -> T:
        """Poll `check` until it returns a truthy value; fail after `timeout` seconds or
        as soon as one of `running` has exited."""
        deadline = time.monotonic() + timeout
        last: T | None = None
        while True:
            last = check()
            if last:
                return last
            for node in running:
                if not node.running():
                    self.fail(f"{node.node_id} exited while waiting for: {what}")
            if time.monotonic() > deadline:
                self.fail(f"timed out after {timeout:g}s waiting for: {what} (last: {last!r})")
            time.sleep(POLL)

    def wait_exit(self, nodes: Sequence[Node], timeout: float) -> list[int]:
        """Wait for every node in `nodes` to exit; their return codes."""

        def done() -> list[int] | None:
            codes = [n.proc.poll() if n.proc is not None else None for n in nodes]
            return None if any(c is None for c in codes) else [int(c) for c in codes]  # type: ignore[arg-type]

        return self.wait_until(f"{[n.node_id for n in nodes]} to exit", done, timeout)


def read_adapter(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a saved PEFT adapter directory, by name, as float32 arrays."""
    from safetensors.numpy import load_file

    return {
        k: v.astype(np.float32)
        for k, v in load_file(str(path / "adapter_model.safetensors")).items()
    }


def node_settings(flags: Sequence[str], **fields: object) -> NodeSettings:
    """The settings `start` builds from `flags` (`--a-b V` is a_b=V, `--x` x=True,
    `--no-x` x=False, the last of a name wins) and `fields` (node_id, listen, ...)."""
    from declora.node.settings import NodeSettings

    out: dict[str, object] = {}
    i = 0
    while i < len(flags):
        name = flags[i].removeprefix("--").replace("-", "_")
        if i + 1 < len(flags) and not flags[i + 1].startswith("--"):
            out[name], i = flags[i + 1], i + 2
        else:
            out[name.removeprefix("no_")], i = not name.startswith("no_"), i + 1
    return NodeSettings(**{**out, **fields})  # type: ignore[arg-type]


class Member(Protocol):
    """What shared checks use of a running node: a `Node` or an `InProcessNode`."""

    tls: TlsFiles | None  # what its Status calls present

    @property
    def node_id(self) -> str: ...

    @property
    def address(self) -> str: ...

    def status(self) -> pb.StatusReply | None: ...

    def log(self) -> str: ...


class _Lines(logging.Handler):
    """A log's INFO lines as 'LEVEL message', a logged traceback's lines after."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.extend(self.format(record).splitlines())


@dataclass
class InProcessNode:
    """A daemon of an `InProcess` swarm as a test sees a `Node` (`tls`: the files its
    Status calls present); `log` is the swarm's one log, 'LEVEL message' a line (its
    daemons share the logger), so a line's absence holds for all."""

    daemon: Daemon
    swarm: InProcess
    tls: TlsFiles | None = None

    @property
    def node_id(self) -> str:
        return self.daemon.settings.node_id

    @property
    def address(self) -> str:
        return self.daemon.settings.advertise

    def status(self) -> pb.StatusReply | None:
        secret = self.daemon.settings.swarm_secret
        secret_text = secret.get_secret_value() if secret else ""
        return status_or_none(self.address, tls=self.tls, secret=secret_text)

    def log(self) -> str:
        return "\n".join(self.swarm.log.lines)


class InProcess:
    """Daemons run by `Daemon.run` (as `start` runs one, served over real gRPC) in one
    event loop on a thread of its own, so a test's blocking gRPC client runs beside
    them; INFO lines (a node's default --log-level) kept in `log`. Each is built before
    the next starts: two builds in threads share torch's global seed, so the base
    weights and fingerprint. `close` stops them all; their exit codes."""

    def __init__(self) -> None:
        import torch

        self.threads = torch.get_num_threads()
        self.log, self.logger = _Lines(), logging.getLogger("declora")
        self.level = self.logger.level
        self.logger.addHandler(self.log)
        self.logger.setLevel(logging.INFO)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runs: list[tuple[Daemon, Future[int]]] = []

    def start(self, settings: NodeSettings) -> InProcessNode:
        from declora.node.daemon import Daemon
        from declora.node.daemon.transport import Transport

        daemon = Daemon(settings, Transport(settings, settings.tls()))
        run = asyncio.run_coroutine_threadsafe(daemon.run(), self.loop)
        self.runs.append((daemon, run))
        while daemon.parts is None:  # built (a failed start: its error here)
            if run.done():
                raise AssertionError(f"{settings.node_id} ended: {run.result()}")
            time.sleep(POLL)
        return InProcessNode(daemon, self)

    def wait_exit(self, node: InProcessNode, timeout: float) -> int:
        """`node`'s exit code once its run ends by itself (TimeoutError after `timeout`)."""
        [run] = [run for daemon, run in self.runs if daemon is node.daemon]
        return run.result(timeout=timeout)

    def running(self) -> bool:
        return all(not run.done() and not d.progress.stop_requested for d, run in self.runs)

    def close(self) -> list[int]:
        import torch

        try:
            for daemon, run in self.runs:
                if not run.done() and not daemon.progress.stop_requested:
                    self.loop.call_soon_threadsafe(daemon.request_stop)
            return [run.result(timeout=120) for _, run in self.runs]
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=60)
            self.loop.close()
            self.logger.removeHandler(self.log)
            self.logger.setLevel(self.level)
            torch.set_num_threads(self.threads)


def varint(n: int) -> bytes:
    """`n` (>= 0) as a protobuf varint: the length prefix of a hand-built message."""
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)
