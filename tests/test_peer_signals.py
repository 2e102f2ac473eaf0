"""Ctrl-C at any moment of `declora-node start`: a real process, a real SIGINT.

The early one comes as soon as the node's port accepts connections (`launch` reserves
it before it imports torch and starts the event loop): before this fix a
KeyboardInterrupt there exited 130 with grpc's InvalidStateError printed, or was
lost. Now it is a stop like any later one: `stop requested`, exit 0, and as nothing
was trained, no checkpoint or adapter is written (the folder still takes a plain start).
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest
from daemon_helpers import HOST, Cluster, free_ports, train_args

from declora.node import run_folder
from declora.node.daemon.startup import check_config
from declora.node.settings import NodeSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

START = 150.0  # seconds for a node to import torch and build tiny-bert (a loaded machine)


def accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


def stopped_cleanly(cluster: Cluster, node_log: str, code: int) -> None:
    assert code == 0, cluster.report()
    assert "stop requested" in node_log and "stopped after round" in node_log, cluster.report()
    for bad in ("Traceback", "InvalidStateError", "Error", "second interrupt"):
        assert bad not in node_log, cluster.report()


def test_sigint_right_after_start_stops_like_a_later_one(
    cluster: Cluster, synthetic_jsonl: Path
) -> None:
    [port] = free_ports(1)
    node = cluster.add("early", port, [*train_args(synthetic_jsonl), "--solo", "--rounds", "0"])
    node.start()
    cluster.wait_until("the port to be reserved", lambda: accepts(port), START, [node])
    node.signal(signal.SIGINT)
    t0 = time.monotonic()
    [code] = cluster.wait_exit([node], START)
    stopped_cleanly(cluster, node.log(), code)
    assert "round 1 done" not in node.log()  # it did not train on
    print(f"\nexit {code} {time.monotonic() - t0:.1f}s after an early SIGINT")
    # nothing trained: no untrained checkpoint or adapter (before: ckpt-00000000,
    # LATEST and adapter/, and the folder then refused a plain start, exit 2)
    left = sorted(p.name for p in node.ckpt.iterdir()) if node.ckpt.exists() else []
    assert not [n for n in left if n in ("LATEST", "adapter") or n.startswith("ckpt-")], left
    assert "checkpoint written" not in node.log() and "final adapter written" not in node.log()
    settings = NodeSettings(solo=True, checkpoint_dir=node.ckpt, data=str(synthetic_jsonl))
    try:
        check_config(settings)  # a plain start in it is not refused
    finally:
        run_folder.release(node.ckpt)
    assert settings.resume is False


def test_sigint_while_training_still_finishes_the_round(
    cluster: Cluster, synthetic_jsonl: Path
) -> None:
    [port] = free_ports(1)
    node = cluster.add("late", port, [*train_args(synthetic_jsonl), "--solo", "--rounds", "0"])
    node.start()
    cluster.wait_until("round 1", lambda: "round 1 done" in node.log(), START, [node])
    node.signal(signal.SIGINT)
    [code] = cluster.wait_exit([node], START)
    stopped_cleanly(cluster, node.log(), code)
