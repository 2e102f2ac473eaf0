"""A checkpoint root passed to predict, generate, inspect or export (`adapter_folder`)
gives LATEST's checkpoint, not the root's final adapter/. Guards, on real finished runs
of a tiny random-init model, that nothing is lost by it: when the run wrote its final
adapter, LATEST names the checkpoint of that same round, holding the same weights (a
solo run whose last checkpoint is written at exit, a SIGTERM mid-training, a pair
through the consensus finish, DECA's full model). When a resume of a finished run
dies before its end, LATEST is the newer one: the final adapter/ is the earlier run's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from daemon_helpers import CLI, HOST, Cluster, free_ports, train_args
from safetensors.numpy import load_file

from declora.node.adapter_card import DECLORA_INFO
from declora.node.adapter_io import adapter_folder, load_adapter
from declora.node.deca_model import MODEL_WEIGHTS

START = 300.0  # seconds for a node to import torch, train and exit (a loaded machine)
TEXTS = ["shares rose today", "the match ended in a draw", "a new phone was released"]


def tensors(folder: Path) -> dict[str, np.ndarray]:
    """The weights file of an adapter or DECA model folder, by tensor name."""
    path = folder / MODEL_WEIGHTS
    if not path.is_file():
        path = folder / "adapter_model.safetensors"
    return load_file(str(path))


def recorded_round(folder: Path) -> int:
    return int(json.loads((folder / DECLORA_INFO).read_text())["round"])


def assert_root_gives_final(root: Path) -> None:
    """`root`'s LATEST checkpoint is what `adapter_folder` picks, and it holds the final
    adapter's round and weights: predictions from the root are the final adapter's."""
    latest = root / (root / "LATEST").read_text().strip() / "adapter"
    assert adapter_folder(root) == latest
    final = root / "adapter"
    assert recorded_round(latest) == recorded_round(final)
    ours, theirs = tensors(latest), tensors(final)
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        np.testing.assert_array_equal(ours[name], value, err_msg=name)
    from_root, from_final = load_adapter(root), load_adapter(final)
    assert from_root.path == latest
    assert torch.equal(from_root.logits(TEXTS), from_final.logits(TEXTS))


def solo(data: Path, state: Path, *extra: str, env: dict[str, str] | None = None) -> int:
    [port] = free_ports(1)
    args = [*CLI, "start", "--solo", *train_args(data), "--listen", f"{HOST}:{port}"]
    args += ["--checkpoint-dir", str(state), *extra]
    res = subprocess.run(
        args, capture_output=True, text=True, timeout=START, env={**os.environ, **(env or {})}
    )
    return res.returncode


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_a_finished_solo_run_root_gives_its_final_weights(
    synthetic_jsonl: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"  # checkpoint every 2: ckpt-2 in the loop, ckpt-3 at exit
    assert solo(synthetic_jsonl, state, "--rounds", "3", "--checkpoint-every", "2") == 0
    assert (state / "LATEST").read_text().strip() == "ckpt-00000003"
    assert_root_gives_final(state)


@pytest.mark.slow  # guards of real runs, make test-slow; the solo run stays
@pytest.mark.integration
@pytest.mark.timeout(400)
def test_a_run_stopped_by_sigterm_mid_training_root_gives_its_final_weights(
    cluster: Cluster,
) -> None:
    [port] = free_ports(1)
    args = [*train_args(cluster.data), "--solo", "--rounds", "0", "--checkpoint-every", "2"]
    node = cluster.add("term", port, [*args, "--local-steps", "20"]).start()
    cluster.wait_until("round 3 done", lambda: "round 3 done" in node.log(), START, running=[node])
    node.signal(signal.SIGTERM)  # mid-round 4 (or between rounds): it finishes the round
    assert cluster.wait_exit([node], START) == [0], node.tail()
    assert recorded_round(node.ckpt / "adapter") >= 4
    assert_root_gives_final(node.ckpt)


@pytest.mark.slow  # guards of real runs, make test-slow; the solo run stays
@pytest.mark.integration
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "method", ["dec-lora", pytest.param("deca", marks=pytest.mark.slow)]
)  # [deca]: ~20 s more, make test-slow
def test_a_pair_through_the_consensus_finish_roots_give_their_final_weights(
    cluster: Cluster, method: str
) -> None:
    # a tolerance no pair reaches: every one of the finish's rounds runs, none checkpointed
    finish = ["--rounds", "1", "--consensus-rounds", "2", "--consensus-tol", "1e-12"]
    nodes = cluster.static(2, [(0, 1)], extra=[*finish, "--method", method])
    for node in nodes:
        node.start()
    assert cluster.wait_exit(nodes, START) == [0, 0], cluster.report()
    for node in nodes:
        assert recorded_round(node.ckpt / "adapter") == 3, node.tail()
        assert_root_gives_final(node.ckpt)


@pytest.mark.slow  # guards of real runs, make test-slow; the solo run stays
@pytest.mark.integration
@pytest.mark.timeout(400)
def test_a_resume_that_dies_leaves_latest_newer_than_the_final_adapter(
    synthetic_jsonl: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    assert solo(synthetic_jsonl, state, "--rounds", "2") == 0
    earlier = tensors(state / "adapter")
    crash = {"DECLORA_CRASH_AT": "checkpoint@2"}  # ckpt-3 written, killed writing ckpt-4
    more = ("--rounds", "4", "--checkpoint-every", "1", "--resume")
    assert solo(synthetic_jsonl, state, *more, env=crash) == -signal.SIGKILL
    assert recorded_round(state / "adapter") == 2  # the first run's, left as it was
    picked = adapter_folder(state)
    assert picked == state / "ckpt-00000003" / "adapter"  # the newest weights
    newer = tensors(picked)
    assert any(not np.array_equal(newer[k], v) for k, v in earlier.items())
