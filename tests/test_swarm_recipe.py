"""The adaptive recipe (issue 14): defaults resolved from the other options, lr scaled
by the swarm's size, gossip steps from the spectral gap, the validation split, and the
study that checks it (`cli/generalization.py`) on a tiny model."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_sim_config

from declora.node.mixing import gossip_steps_for, metropolis_hastings, second_eigenvalue
from declora.node.recipe import Recipe
from declora.node.simulator import SimConfig, Simulation
from declora.node.topology import from_spec
from declora.node.trainer import LoraModel, LoraSpec
from declora.node.workload import carve_validation

# ------------------------------------------------------------------ resolved defaults


def test_schedule_defaults_follow_the_planned_rounds() -> None:
    planned = Recipe(rounds=40, local_steps=1)
    assert planned.lr_schedule == "cosine"
    assert planned.warmup_steps == 4  # 10% of 40 steps
    assert Recipe(rounds=20, local_steps=2).warmup_steps == 4
    until_stopped = Recipe()  # rounds 0: nothing to decay over
    assert until_stopped.lr_schedule == "constant" and until_stopped.warmup_steps == 0
    # given values are kept
    assert Recipe(rounds=40, lr_schedule="linear", warmup_steps=0).warmup_steps == 0
    assert Recipe(rounds=40, lr_schedule="constant").warmup_steps == 0
    # one planned step: no room for warmup
    assert Recipe(rounds=1, local_steps=1).warmup_steps == 0


def test_tracking_is_on_where_the_method_and_mixing_allow_it() -> None:
    assert Recipe().gradient_tracking is True
    assert Recipe(robust_mixing="clip").gradient_tracking is False
    assert Recipe(method="kill-revive").gradient_tracking is True  # tracks entry by entry
    assert Recipe(method="decaf").gradient_tracking is False
    assert Recipe(gradient_tracking=False).gradient_tracking is False
    with pytest.raises(ValueError, match="cannot be combined"):
        Recipe(gradient_tracking=True, robust_mixing="clip")


def test_a_dump_states_every_resolved_value() -> None:
    dumped = SimConfig(nodes=6, topology="star", rounds=30, local_steps=1).model_dump()
    assert SimConfig.model_validate(dumped).model_dump() == dumped  # read back unchanged
    assert (dumped["lr_schedule"], dumped["warmup_steps"]) == ("cosine", 3)
    assert (dumped["gossip_steps"], dumped["swarm_size"]) == (4, 6)
    assert (dumped["gradient_tracking"], dumped["weighting"]) == (True, "examples")
    assert dumped["gossip_acceleration"] == "chebyshev:0.833333333333"  # 5/6, 12 decimals
    assert dumped["step_after_mixing"] is True


def test_lr_scales_with_the_swarm_size() -> None:
    assert Recipe(lr=2e-3).node_lr == 2e-3  # swarm size unknown: no scaling
    assert Recipe(lr=2e-3, swarm_size=16).node_lr == pytest.approx(8e-3)
    assert SimConfig(nodes=9, lr=1e-3).node_lr == pytest.approx(3e-3)
    assert SimConfig(nodes=9, lr=1e-3, swarm_size=1).node_lr == 1e-3


@pytest.mark.parametrize(
    ("topology", "nodes", "steps"),
    [("complete", 8, 1), ("ring", 4, 1), ("torus", 16, 2), ("ring", 8, 4), ("star", 6, 4)],
)
def test_gossip_steps_from_the_spectral_gap(topology: str, nodes: int, steps: int) -> None:
    w = metropolis_hastings(from_spec(topology, nodes))
    assert gossip_steps_for(w) == steps
    lam = second_eigenvalue(w)
    if 1 < steps < 4:  # the fewest exchanges that halve the disagreement
        assert lam**steps <= 0.5 < lam ** (steps - 1)
    assert SimConfig(nodes=nodes, topology=topology).gossip_steps == steps


def test_gossip_steps_never_mix_a_disconnected_graph_harder() -> None:
    w = np.eye(4)  # no edges: one exchange does nothing, neither would four
    assert gossip_steps_for(w) == 1


def test_agreed_facts_name_the_gossip_steps() -> None:
    assert "gossip_steps" not in Recipe().agreed_facts()
    assert Recipe(gossip_steps=3).agreed_facts()["gossip_steps"] == 3


# ------------------------------------------------------------------ validation split


def test_validation_is_carved_from_every_share() -> None:
    parts = [np.arange(0, 50), np.arange(50, 53), np.arange(53, 54), np.arange(54, 154)]
    kept, held = carve_validation(parts, 0.1, seed=3)
    assert [len(k) for k in kept] == [45, 3, 1, 90]  # round(0.3) = 0; >= 1 row kept
    assert len(held) == 15
    everything = np.sort(np.concatenate([*kept, held]))
    assert np.array_equal(everything, np.arange(154))  # disjoint, nothing lost
    _, again_held = carve_validation(parts, 0.1, seed=3)
    assert np.array_equal(held, again_held)
    _, other = carve_validation(parts, 0.1, seed=4)
    assert not np.array_equal(held, other)
    none_kept, none_held = carve_validation(parts, 0.0, seed=3)
    assert len(none_held) == 0
    assert all(np.array_equal(a, b) for a, b in zip(none_kept, parts, strict=True))


def test_a_simulation_holds_validation_out_and_scores_it(
    tiny_lm: LoraModel, synthetic_jsonl: Path
) -> None:
    cfg = tiny_sim_config(
        synthetic_jsonl, validation_fraction=0.2, rounds=2, centralized=True, consensus_rounds=5
    )
    sim = Simulation(cfg, lm=tiny_lm)
    held = set(sim.workload.validation_rows.tolist())
    assert 30 <= len(held) <= 50
    assert not held & set(np.concatenate(sim.parts).tolist())  # never trained on
    union = np.unique(np.concatenate(sim.parts))
    assert len(union) + len(held) == len(sim.train_data)
    res = sim.run()
    assert res.final["validation_examples"] == len(held)
    assert 0 <= res.final["validation"]["worst_accuracy"] <= 1
    correct = res.final["correct"]
    assert len(correct["nodes"]) == cfg.nodes
    right = np.array([c == "1" for c in correct["average"]])
    assert len(right) == len(sim.test_data)
    assert right.mean() == pytest.approx(res.final["average"]["accuracy"])
    central = res.centralized
    assert central is not None and central["curve_on"] == "validation"
    assert central["validation"] == central["curve"][-1]
    assert np.mean([c == "1" for c in central["correct"]]) == pytest.approx(
        central["final"]["accuracy"]
    )


def test_extra_exchanges_tighten_consensus(tiny_lm: LoraModel, synthetic_jsonl: Path) -> None:
    """The same training with 3 exchanges a round ends each round closer to consensus,
    and sends 3x the bytes."""
    results = {}
    for g in (1, 3):
        cfg = tiny_sim_config(synthetic_jsonl, gossip_steps=g, rounds=2, consensus_rounds=0)
        results[g] = Simulation(cfg, lm=tiny_lm).run()
    last = {g: [r for r in res.rounds if r.phase == "train"][-1] for g, res in results.items()}
    assert last[3].consensus_mean < 0.5 * last[1].consensus_mean
    assert last[3].bytes_sent_per_node == pytest.approx(3 * last[1].bytes_sent_per_node, rel=0.05)


# ------------------------------------------------------------------ the study


@pytest.fixture
def models_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each model `load_workload` builds is built once per test, then deep-copied, the
    torch RNG set as that build left it: every run is bit-identical to one with a fresh
    build (load_base and wrap_lora seed torch first), without rebuilding tiny-bert."""
    from declora.node import workload

    built: dict[str, tuple[LoraModel, torch.Tensor]] = {}

    def build(spec: LoraSpec, **kwargs: Any) -> LoraModel:
        key = repr((spec, sorted(kwargs.items())))
        if key not in built:
            lm = LoraModel(spec, **kwargs)
            built[key] = (copy.deepcopy(lm), torch.get_rng_state())
            return lm
        pristine, rng = built[key]
        torch.set_rng_state(rng)
        return copy.deepcopy(pristine)

    monkeypatch.setattr(workload, "LoraModel", build)


@pytest.mark.usefixtures("models_built_once")
def test_the_study_selects_on_validation_and_tables_every_setting(tmp_path: Path) -> None:
    from declora.cli.generalization import Study, run_study

    study = Study(
        settings={
            "ring-3": {"nodes": 3, "topology": "ring"},
            "star-3": {"nodes": 3, "topology": "star"},
        },
        common={
            "model": "tiny-bert",
            "partition_scheme": "iid",
            "max_length": 16,
            "batch_size": 4,
            "consensus_rounds": 10,
            "node_eval_every": 1000,
            "eval_before_consensus": False,
            "centralized": False,
            "threads": 1,
            "max_train": 90,
            "max_eval": 30,
        },
        steps=2,
        lrs=(1e-3, 3e-3),
        plain_extra_lrs=(),
        central_lrs=(1e-3, 3e-3),
        ks=(1, 2),
        seeds=(0, 1, 2),
        tune_on="ring-3",
        tuning_seeds=(0, 1),
    )
    table = run_study(study, tmp_path, workers=1, say=lambda _: None)
    chosen = json.loads((tmp_path / "selection.json").read_text())
    grid = [g for g in chosen["grid"] if g["row"] == "recipe"]
    assert len(grid) == 4
    # the two best of seed 0 are the finalists; the pick is the best mean over the seeds
    ranked = sorted(grid, key=lambda g: (-g["seed0"], g["lr"], g["k"]))
    finalists = [g for g in grid if "mean" in g]
    assert [(g["lr"], g["k"]) for g in finalists] == sorted((g["lr"], g["k"]) for g in ranked[:2])
    for g in finalists:
        assert g["per_seed"][0] == g["seed0"]
        assert g["mean"] == pytest.approx(sum(g["per_seed"]) / 2)
    best = max(finalists, key=lambda g: (g["mean"], -g["lr"], -g["k"]))
    pick = chosen["rows"]["recipe"]
    assert (pick["lr"], pick["k"], pick["mean_validation"]) == (best["lr"], best["k"], best["mean"])
    assert chosen["rows"]["recipe-q4"] == chosen["rows"]["recipe"]
    assert chosen["rows"]["accelerated-q4"] == chosen["rows"]["accelerated"]
    grid_md = (tmp_path / "selection.md").read_text()
    assert grid_md.count("**") == 2 * (3 + 2)  # one pick per swarm row and per setting
    accelerated = [g for g in chosen["grid"] if g["row"] == "accelerated"]
    assert [g["k"] for g in accelerated] == [1, 1]  # the step after mixing needs K = 1
    assert set(chosen["central"]) == {"ring-3", "star-3"}
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    # seed 1: phase 2's 6 rows on 2 settings, and the finalist each of the 5 selections
    # (plain, recipe, accelerated, 2 references) did not pick
    assert len([r for r in runs if r.endswith("seed1.json")]) == 2 * 6 + 5
    # seed 2 is reported, never tuned on: phase 2's rows only
    assert len([r for r in runs if r.endswith("seed2.json")]) == 2 * 6
    assert all(f"| {s} |" in table for s in study.settings)
    assert table.count("\n") == 2 + 2 * 6
    assert table.count("; vs recipe ") == 2  # the accelerated row, paired with the recipe
    assert table.count("; vs recipe-q4 ") == 2  # ...and its q4 row with the recipe's
    assert table.count("; vs fp32 ") == 2 * 2  # each q4 row, paired with its fp32 row
    fast_q4 = json.loads(
        next((tmp_path / "runs").glob("accelerated-q4-star-3-*-seed1.json")).read_text()
    )
    assert fast_q4["config"]["codec"] == "q4" and fast_q4["config"]["step_after_mixing"] is True
    recipe = json.loads(next((tmp_path / "runs").glob("recipe-star-3-*-seed1.json")).read_text())
    star3 = gossip_steps_for(metropolis_hastings(from_spec("star", 3)))
    assert recipe["config"]["gossip_steps"] == star3
    assert recipe["config"]["gradient_tracking"] is True
    assert recipe["config"]["weighting"] == "examples"
    plain = json.loads(next((tmp_path / "runs").glob("plain-star-3-*-seed1.json")).read_text())
    assert plain["config"]["weighting"] == "nodes"  # Dec-LoRA as published
    assert recipe["config"]["lr"] == chosen["rows"]["recipe"]["lr"]
    assert math.isclose(recipe["config"]["swarm_size"], 3)
    fast = json.loads(next((tmp_path / "runs").glob("accelerated-star-3-*-seed1.json")).read_text())
    lam = round(second_eigenvalue(metropolis_hastings(from_spec("star", 3))), 12)
    assert fast["config"]["gossip_acceleration"] == f"chebyshev:{lam!r}"
    assert fast["config"]["step_after_mixing"] is True
    # a setting with an unfinished seed shows the finished ones and says so
    from declora.cli.generalization import table as make_table

    next((tmp_path / "runs").glob("plain-star-3-*-seed1.json")).unlink()
    partial = make_table(study, tmp_path, chosen)
    assert "| star-3 (2 seeds) |" in partial and "| ring-3 |" in partial
