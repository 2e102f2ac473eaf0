"""The methods beside Dec-LoRA with real daemon processes: three `declora-node start`
processes on a ring (real gRPC on 127.0.0.1) end bit-identical to the simulator's
virtual nodes for the same recipe: adapter, public copy, the method's state and the
saved folder (tests/test_daemon.py does the same for Dec-LoRA). About 25-40 s a case
on a busy 2-core machine: marked slow (`make test-slow`)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from daemon_helpers import Cluster, sim_config, simulate
from test_daemon import RUN, START, ring

from declora.node import checkpoint
from declora.node.trainer import LoraModel

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(360)]

NODES, ROUNDS, SCHEME = 3, 4, "dirichlet:1.0"

# q8 (per-node rounding rngs) wherever the method takes it, tracking where it is
# allowed (ConLoRA, Kill-and-Revive: with and without); DECA switches blocks every 2
# rounds, so both of its blocks train. Case name: (method, recipe fields).
METHODS: dict[str, tuple[str, dict[str, object]]] = {
    "conlora": ("conlora", {"codec": "q8", "gradient_tracking": True}),
    "decaf": ("decaf", {"codec": "fp32"}),
    "kill-revive": ("kill-revive", {"codec": "q8", "gradient_tracking": False}),
    "kill-revive+tracking": ("kill-revive", {"codec": "q8", "gradient_tracking": True}),
    "deca": ("deca", {"codec": "q8", "deca_blocks": 2, "deca_block_rounds": 2}),
    # Dec-LoRA's options beside the method: 2 exchanges a round, each extrapolated (a
    # triangle's lambda is 0: a given one makes omega_2 > 1), the step held back until
    # the round's second exchange
    "chebyshev+step-after-mixing": (
        "dec-lora",
        {
            "codec": "q8",
            "gradient_tracking": True,
            "gossip_steps": 2,
            "gossip_acceleration": "chebyshev:0.6",
            "step_after_mixing": True,
            "local_steps": 1,
        },
    ),
}


def flags(method: str, fields: dict[str, object]) -> list[str]:
    """The daemon flags of `fields` (a bool is a --X / --no-X switch)."""
    out = ["--method", method]
    for key, value in fields.items():
        name = key.replace("_", "-")
        if isinstance(value, bool):
            out.append(f"--{name}" if value else f"--no-{name}")
        else:
            out += [f"--{name}", str(value)]
    return out


def saved_vector(path: Path, lm: LoraModel) -> np.ndarray:
    """The vector a node's final folder holds: a PEFT adapter, or DECA's full model."""
    from safetensors.torch import load_file

    if (path / "adapter_model.safetensors").is_file():
        tensors = load_file(str(path / "adapter_model.safetensors"))
        return checkpoint.peft_tensors_to_vector(tensors, lm.schema)
    tensors = load_file(str(path / "model.safetensors"))
    return lm.schema.flatten({n: tensors[n] for n in lm.schema.names})


@pytest.mark.parametrize("case", list(METHODS))
def test_daemon_processes_match_simulator(cluster: Cluster, case: str) -> None:
    method, fields = METHODS[case]
    fields = {"gossip_steps": 1, **fields}
    extra = f"--rounds {ROUNDS} --consensus-rounds 0 --partition-scheme {SCHEME} --eval-every 0 "
    extra += f"--round-deadline 60 --swarm-size {NODES}"
    nodes = cluster.static(NODES, ring(NODES), extra.split() + flags(method, fields))
    for node in nodes:
        node.start()
    cfg = sim_config(
        cluster.data,
        NODES,
        method=method,
        partition_scheme=SCHEME,
        rounds=ROUNDS,
        consensus_rounds=0,
        swarm_size=NODES,
        **fields,
    )
    sim = simulate(cfg)  # runs while the daemons start
    codes = cluster.wait_exit(nodes, START + RUN)
    if codes != [0] * NODES:
        cluster.fail(f"exit codes {codes}, expected all 0")
    for i, node in enumerate(nodes):
        log = node.log()
        last = ROUNDS * int(fields["gossip_steps"])
        done = rf"round {last} done in \S+: loss \S+, mixed with {NODES - 1} neighbours"
        assert re.search(done, log), cluster.report()
        # nobody was dropped: a neighbour may only have left politely after the last round
        lefts = re.findall(r"left the live set: (.*)", log.split(f"round {last} done")[0])
        assert all(why == f"it left after round {last}" for why in lefts), cluster.report()
        want, got = sim.nodes[i].snapshot(), checkpoint.load(node.ckpt, sim.lm)
        assert got.round == ROUNDS * int(fields["gossip_steps"])  # round numbers count exchanges
        np.testing.assert_array_equal(got.vector, want.vector, err_msg=node.node_id)
        np.testing.assert_array_equal(got.public, want.public, err_msg=node.node_id)
        assert sorted(got.method_state) == sorted(want.method_state)
        for key, value in want.method_state.items():
            np.testing.assert_array_equal(got.method_state[key], value, err_msg=key)
        saved = saved_vector(node.ckpt / "adapter", sim.lm)
        np.testing.assert_array_equal(saved, sim.nodes[i].model_vector(), err_msg=node.node_id)
        assert np.abs(want.vector - sim.nodes[i].initial).max() > 1e-2, "never trained"
        if fields.get("gradient_tracking"):
            assert got.correction is not None and want.correction is not None
            np.testing.assert_array_equal(got.correction, want.correction, err_msg=node.node_id)
            assert np.abs(want.correction).max() > 0, "never corrected"
    if fields.get("gradient_tracking"):  # symmetric per entry: the corrections sum to 0
        total = np.sum([n.snapshot().correction for n in sim.nodes], axis=0)
        np.testing.assert_allclose(total, 0.0, atol=1e-5)
    if method == "kill-revive":  # the last rounds trained and sent some modules only
        assert all(not node.active.all() for node in sim.nodes)  # type: ignore[attr-defined]
