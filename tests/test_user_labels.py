"""A swarm agrees on its label set (issue 11): real daemons, one shard lacking a class.

Without `--labels`, each node numbers the labels of its own file, so a shard that lacks
a class trains another model: the handshake refuses it and names the label sets on
both sides. With the set declared on every node, the same shards form a swarm.
"""

from __future__ import annotations

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


def test_label_sets_must_agree_and_can_be_declared(tmp_path: Path, synthetic_jsonl: Path) -> None:
    shard = str(shard_without_last_class(tmp_path))
    cluster = Cluster(tmp_path / "undeclared", synthetic_jsonl)
    try:
        a, b = cluster.static(2, [(0, 1)], [*RUN, "--startup-timeout", "8"])
        a.start()
        b.start(["--data", shard])
        codes = cluster.wait_exit([a, b], START)
        assert codes == [1, 1], cluster.report()  # neither found its neighbour
        theirs = ",".join(CLASS_NAMES)
        ours = ",".join(CLASS_NAMES[:-1])
        named = f"--labels is '{theirs}' at '{a.node_id}', '{ours}' at '{b.node_id}'"
        assert named in b.log(), cluster.report()  # b refused a; a reads the same words
        assert named in a.log(), cluster.report()
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
