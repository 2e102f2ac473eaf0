"""A swarm agrees on its label set (issue 11): real daemons, one shard lacking a class.

Without `--labels`, each node numbers the labels of its own file, so a shard that lacks
a class trains another model: the handshake refuses it and names the label sets on
both sides. With the set declared on every node, the same shards form a swarm.
"""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASS_NAMES, make_synthetic, write_jsonl
from daemon_helpers import Cluster

pytestmark = [pytest.mark.integration]

START = 150.0  # seconds for a node to load, find its peer (or give up) and finish
RUN = ["--rounds", "2", "--eval-every", "0", "--consensus-rounds", "0"]


def shard_without_last_class(tmp_path: Path) -> Path:
    data = make_synthetic(200, seed=3)
    assert data.labels is not None
    keep = np.flatnonzero(data.labels != len(CLASS_NAMES) - 1)
    return write_jsonl(data.subset(keep), tmp_path / "shard.jsonl")


@pytest.mark.slow  # ~20 s of processes; make test-slow
def test_label_sets_must_agree_and_can_be_declared(tmp_path: Path, synthetic_jsonl: Path) -> None:
    shard = str(shard_without_last_class(tmp_path))
    cluster = Cluster(tmp_path / "undeclared", synthetic_jsonl)
    try:
        # b serves before a starts, and waits long: a's short wait (8 s from its own
        # load) always finds b up. Started together, each waiting 8 s, a load 8 s
        # apart (6.6 s measured beside two busy loops) left one without the other.
        a, b = cluster.static(2, [(0, 1)], RUN)
        b.start(["--data", shard])
        cluster.wait_until("b to serve", b.status, START, running=[b])
        a.start(["--startup-timeout", "8"])
        assert cluster.wait_exit([a], START) == [1], cluster.report()  # a never found b
        theirs = ",".join(CLASS_NAMES)
        ours = ",".join(CLASS_NAMES[:-1])
        named = f"--labels is '{theirs}' at '{a.node_id}', '{ours}' at '{b.node_id}'"
        assert named in b.log(), cluster.report()  # b refused a; a reads the same words
        assert named in a.log(), cluster.report()
        b.signal(signal.SIGTERM)
        assert cluster.wait_exit([b], START) == [0], cluster.report()
        for node in (a, b):
            assert "joined the live set" not in node.log(), cluster.report()
    finally:
        cluster.close()

    cluster = Cluster(tmp_path / "declared", synthetic_jsonl)
    try:
        labels = ["--labels", ",".join(CLASS_NAMES)]
        a, b = cluster.static(2, [(0, 1)], [*RUN, *labels])
        a.start()
        b.start(["--data", shard])
        assert cluster.wait_exit([a, b], START) == [0, 0], cluster.report()
        for node in (a, b):
            assert "joined the live set" in node.log(), cluster.report()
    finally:
        cluster.close()
