"""`--weighting`: whose average the swarm minimises (node/recipe.py, node/workload.py).

Under `examples` a node's gradient counts in proportion to its training examples, so
with gradient tracking the swarm follows the union's mean gradient (as centralized
training does) instead of the mean of the nodes' own means.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_sim_config
from pydantic import ValidationError
from test_training_recipe import LLAMA, encoded, grads_seen, on_step

from declora.node.codecs import decode
from declora.node.daemon.admission import recipe_differences, recipe_facts
from declora.node.recipe import Recipe
from declora.node.simulator import Simulation
from declora.node.trainer import Encoded, LocalTrainer, LoraModel
from declora.node.workload import load_workload, share_weight


def test_auto_weighs_examples_where_tracking_is_on() -> None:
    assert Recipe().gradient_tracking and Recipe().weighting == "examples"
    assert Recipe(gradient_tracking=False).weighting == "nodes"
    assert Recipe(method="decaf").weighting == "nodes"  # refuses tracking
    assert Recipe(weighting="nodes").gradient_tracking  # tracking on, nodes weigh the same
    with pytest.raises(ValidationError, match="--weighting examples needs --gradient-tracking"):
        Recipe(gradient_tracking=False, weighting="examples")
    with pytest.raises(ValidationError, match="weighting"):
        Recipe(weighting="samples")  # type: ignore[arg-type]
    # fp16 cannot hold z's scale: auto leaves it at nodes, examples is refused
    assert Recipe(codec="fp16").weighting == "nodes"
    with pytest.raises(ValidationError, match="cannot carry tracking's z"):
        Recipe(codec="fp16", weighting="examples")
    assert Recipe(codec="bf16").weighting == "examples"


def test_a_node_weighs_its_training_examples(synthetic_jsonl: Path) -> None:
    cfg = tiny_sim_config(
        synthetic_jsonl, nodes=3, partition_scheme="dirichlet:0.3", gradient_tracking=True
    )
    assert cfg.weighting == "examples"
    work = load_workload(cfg, 3)
    trainers = [work.trainer(i) for i in range(3)]
    sizes = [len(t.data) for t in trainers]
    assert len(set(sizes)) > 1  # unequal shares, or the test shows nothing
    assert [t.grad_weight for t in trainers] == [float(n) for n in sizes]
    assert work.centralized_trainer().grad_weight == 1.0  # the union needs no weight
    same = load_workload(cfg.model_copy(update={"weighting": "nodes"}), 3)
    assert same.trainer(0).grad_weight == 1.0
    # a one-node workload's reference is still the union's, unweighted
    one = tiny_sim_config(synthetic_jsonl, nodes=1, topology="complete", gradient_tracking=True)
    assert load_workload(one, 1).centralized_trainer().grad_weight == 1.0
    assert load_workload(one, 1).trainer(0).grad_weight > 1.0
    # a copy that skipped validation cannot weigh without tracking
    stale = cfg.model_copy(update={"gradient_tracking": False})
    with pytest.raises(ValueError, match="needs --gradient-tracking"):
        load_workload(stale, 3).trainer(0)


def test_an_lm_node_weighs_its_target_tokens() -> None:
    data = encoded(n=12)
    recipe = Recipe(model="tiny-llama", task="lm")
    assert recipe.weighting == "examples"
    tokens = int((data.labels[:, 1:] != -100).sum())
    assert share_weight(data, recipe) == tokens != len(data)
    assert share_weight(data, Recipe(model="tiny-llama", task="lm", weighting="nodes")) == 1.0
    # a share whose every target is masked (a user's file of over-long prompts) weighs
    # 1, not 0, which the trainer would refuse
    masked = Encoded(data.input_ids, data.attention_mask, torch.full_like(data.labels, -100))
    assert share_weight(masked, recipe) == 1.0


def test_max_grad_norm_stays_in_units_of_a_batchs_mean_gradient() -> None:
    lm, data = LoraModel(LLAMA), encoded()
    norms = {}
    for w in (1.0, 50.0):
        t = LocalTrainer(lm, data, lr=1e-2, batch_size=4, seed=0, max_grad_norm=1e-3, grad_weight=w)
        norms[w] = on_step(t, lambda: float(torch.stack([p.grad.norm() for p in lm.params]).norm()))
        t.train_steps(1)
    assert norms[1.0][0] == pytest.approx(1e-3, rel=1e-3)
    assert norms[50.0][0] == pytest.approx(50 * 1e-3, rel=1e-3)


def test_the_weight_scales_what_the_hook_sees_and_adamw_ignores_a_common_scale() -> None:
    lm, data = LoraModel(LLAMA), encoded()
    vectors, seen = {}, {}
    for w in (700.0, 5000.0):
        t = LocalTrainer(lm, data, lr=1e-2, batch_size=4, seed=0, grad_weight=w)
        seen[w] = grads_seen(t, 3)
        vectors[w] = t.vector()
    np.testing.assert_allclose(seen[5000.0][0], seen[700.0][0] * 5000 / 700, rtol=1e-5, atol=1e-9)
    # the same three AdamW steps: a weight every node shares changes nothing (its eps,
    # 1e-8, moves the steps by less than 1e-5 at these weights: a share's examples)
    np.testing.assert_allclose(vectors[5000.0], vectors[700.0], rtol=0, atol=1e-5)
    assert not np.allclose(vectors[700.0], LocalTrainer(lm, data, 1e-2, 4, 0).vector())
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="grad_weight"):
            LocalTrainer(lm, data, lr=1e-2, batch_size=4, seed=0, grad_weight=bad)


def test_tracking_carries_the_weighted_gradient(synthetic_jsonl: Path) -> None:
    """A node's first z is its weight times the z it sends under `nodes` (the same
    batch from the same start), so the corrections follow sum_i n_i g_i."""
    cfg = tiny_sim_config(
        synthetic_jsonl, nodes=3, partition_scheme="dirichlet:0.3", gradient_tracking=True,
        local_steps=1,
    )  # fmt: skip
    zs, weights = {}, {}
    for weighting in ("examples", "nodes"):
        work = load_workload(cfg.model_copy(update={"weighting": weighting}), 3)
        node = work.node(1)
        node.train(1, round_number=1)
        payload = node.tracker_outgoing()
        assert payload is not None
        zs[weighting] = decode(payload)
        weights[weighting] = node.trainer.grad_weight
    assert weights == {"examples": len(node.trainer.data), "nodes": 1.0}
    np.testing.assert_allclose(
        zs["examples"], weights["examples"] * zs["nodes"], rtol=1e-4, atol=1e-9
    )


def test_weighting_joins_the_fingerprint_and_names_the_option(synthetic_jsonl: Path) -> None:
    base = tiny_sim_config(synthetic_jsonl, gradient_tracking=True)
    ex = load_workload(base, 2).lm
    nodes = load_workload(base.model_copy(update={"weighting": "nodes"}), 2).lm
    assert ex.fingerprint != nodes.fingerprint
    assert ex.identity["weighting"] == "examples" and "weighting" not in nodes.identity
    differ = recipe_differences(recipe_facts(ex.identity, ()), recipe_facts(nodes.identity, ()))
    assert "--weighting" in differ


def test_the_simulator_records_and_uses_the_weighting(synthetic_jsonl: Path) -> None:
    cfg = tiny_sim_config(
        synthetic_jsonl, nodes=3, rounds=1, local_steps=1, partition_scheme="dirichlet:0.3",
        gradient_tracking=True, consensus_rounds=0, max_eval=8,
    )  # fmt: skip
    sims = {w: Simulation(cfg.model_copy(update={"weighting": w})) for w in ("examples", "nodes")}
    result = sims["examples"].run()
    sims["nodes"].run()
    assert result.config["weighting"] == "examples"
    nodes = sims["examples"].nodes
    assert [n.trainer.grad_weight for n in nodes] == [float(len(n.trainer.data)) for n in nodes]
    corrections = {w: [n.tracker.correction() for n in s.nodes] for w, s in sims.items()}  # type: ignore[union-attr]
    # the corrections still sum to zero, and they follow the weighted gradients
    scale = np.abs(corrections["examples"]).max()
    np.testing.assert_allclose(np.sum(corrections["examples"], axis=0), 0.0, atol=1e-5 * scale)
    assert not np.allclose(corrections["examples"][0], corrections["nodes"][0], atol=1e-3)


def test_start_and_simulate_refuse_examples_without_tracking_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from declora.cli.app import app

    for key in [k for k in os.environ if k.startswith("DECLORA_")]:
        monkeypatch.delenv(key)
    for command in ("start", "simulate"):
        res = CliRunner().invoke(
            app, [command, "--weighting", "examples", "--no-gradient-tracking"]
        )
        assert res.exit_code == 2, res.output
        assert "--weighting examples needs --gradient-tracking" in res.output
        assert "Traceback" not in res.output
    res = CliRunner().invoke(app, ["start", "--weighting", "everyone"])
    assert res.exit_code == 2 and "weighting" in res.output
