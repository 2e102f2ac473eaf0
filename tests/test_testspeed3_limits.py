"""test_limits.py's flood on two in-process daemons (torch loaded once), each run by
`Daemon.run` as `start` runs it, served over real gRPC on 127.0.0.1, in one event loop
on a thread of its own while the flood's raw gRPC client runs here: refused, counted,
logged at DEBUG, and the flooded node keeps mixing with its neighbour. The
`declora-node start` version: test_limits.py (make test-slow)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch
from daemon_helpers import HOST, free_ports, status_or_none, train_args
from test_limits import HANDSHAKES, PULLS, PUSHES, START, flood
from test_testspeed3_simulator import options

from declora.node.daemon import Daemon
from declora.node.daemon.transport import Transport
from declora.node.settings import NodeSettings
from declora.node.trainer import LoraModel
from declora.proto import pb

SWARM = "limits"


class _Log(logging.Handler):
    """Every line the in-process daemons log at INFO and above, a node's default
    --log-level (one log: the nodes share the logger)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class Member:
    """An in-process daemon as the flood sees it; `log` is both nodes' log, so a check
    that a line is absent is checked on both."""

    def __init__(self, daemon: Daemon, log: _Log) -> None:
        self.daemon, self._log = daemon, log
        self.node_id, self.address = daemon.settings.node_id, daemon.settings.advertise

    def status(self) -> pb.StatusReply | None:
        return status_or_none(self.address)

    def log(self) -> str:
        return "\n".join(self._log.lines)


@pytest.fixture
def pair(synthetic_jsonl: Path, tmp_path: Path) -> Iterator[tuple[Member, Member]]:
    """test_limits.py's pair (a limited, mixing with --robust-mixing clip; b plain), in
    process; both stopped after, each exit code 0."""
    ports = free_ports(2)
    limits = f"--max-handshakes-per-minute {HANDSHAKES} --max-pushes-per-round {PUSHES} "
    limits += f"--max-pulls-per-minute {PULLS} --robust-mixing clip"
    run = "--rounds 0 --eval-every 0 --round-deadline 60 --min-peers -1 --startup-timeout 300"
    daemons = []
    for i in range(2):
        flags = train_args(synthetic_jsonl) + run.split() + (limits.split() if i == 0 else [])
        s = NodeSettings(
            node_id=f"n{i}",
            swarm_id=SWARM,
            listen=f"{HOST}:{ports[i]}",
            peers=[f"{HOST}:{ports[1 - i]}"],
            partition=f"{i}/2",
            checkpoint_dir=tmp_path / f"n{i}",
            **options(flags),
        )
        daemons.append(Daemon(s, Transport(s, None)))
    log, logger = _Log(), logging.getLogger("declora")
    level, threads = logger.level, torch.get_num_threads()
    logger.addHandler(log)
    logger.setLevel(logging.INFO)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runs: list[Future[int]] = []
    try:
        for d in daemons:  # one build at a time: two in threads share torch's global seed
            runs.append(asyncio.run_coroutine_threadsafe(d.run(), loop))
            while d.parts is None:  # and so the base model's weights (the fingerprint)
                assert not runs[-1].done(), runs[-1].result()
                time.sleep(0.1)
        yield Member(daemons[0], log), Member(daemons[1], log)
        for d in daemons:
            loop.call_soon_threadsafe(d.request_stop)
        assert [r.result(timeout=120) for r in runs] == [0, 0], log.lines[-20:]
    finally:
        for d in daemons:  # a failed test: stop whatever still runs
            if not d.progress.stop_requested:
                loop.call_soon_threadsafe(d.request_stop)
        for r in runs:
            r.exception(timeout=120)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=60)
        loop.close()
        logger.removeHandler(log)
        logger.setLevel(level)
        torch.set_num_threads(threads)


@pytest.mark.timeout(360)
def test_flood_of_an_in_process_node_is_refused_counted_and_it_keeps_mixing(
    pair: tuple[Member, Member], tiny_lm: LoraModel
) -> None:
    a, b = pair

    def wait(what: str, check: Callable[[], pb.StatusReply | None]) -> pb.StatusReply:
        deadline = time.monotonic() + START
        while (reply := check()) is None:
            for run in (a, b):
                assert not run.daemon.progress.stop_requested, f"{run.node_id} stopping"
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}\n" + a.log()[-3000:])
            time.sleep(0.2)
        return reply

    flood(a, b, SWARM, wait, tiny_lm)
