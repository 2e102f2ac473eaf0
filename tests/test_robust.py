"""Robust mixing (node/robust.py), the attack models (node/attacks.py), their options in
the simulator, the daemon's settings and the CLI, and a simulated Byzantine ring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_sim_config
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pydantic import ValidationError
from typer.testing import CliRunner

from declora.cli.app import app
from declora.node.attacks import AttackSpecError, NoiseAttack, ScaleAttack, make_attack
from declora.node.gossip import GossipState
from declora.node.robust import (
    ClipMixer,
    PlainMixer,
    RobustSpecError,
    TrimMixer,
    make_robust,
)
from declora.node.settings import NodeSettings
from declora.node.simulator import SimConfig, SimResult, Simulation
from declora.node.trainer import LoraModel

FAST = settings(max_examples=60, deadline=None)
DIM = 16

values = st.floats(-100, 100, allow_nan=False, width=32)
vectors = arrays(np.float32, DIM, elements=values)
weights = st.floats(0.05, 0.5)


def neighbour_lists(min_size: int = 1, max_size: int = 6) -> st.SearchStrategy:
    return st.lists(st.tuples(weights, vectors), min_size=min_size, max_size=max_size)


# --------------------------------------------------------------------------- specs


@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        ("none", "none"),
        (" NONE ", "none"),
        ("clip", "clip:1.0"),
        ("clip:2", "clip:2.0"),
        ("clip:1", "clip:1.0"),
        ("Clip:0.5", "clip:0.5"),
        ("trim", "trim:1"),
        ("trim:2", "trim:2"),
    ],
)
def test_specs_are_canonical(spec: str, canonical: str) -> None:
    mixer = make_robust(spec)
    assert mixer.spec == canonical
    assert make_robust(mixer.spec) == mixer


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("median", "use none, clip"),
        ("", "use none, clip"),
        ("none:1", "none takes no value"),
        ("clip:0", "C must be a number > 0"),
        ("clip:-1", "C must be a number > 0"),
        ("clip:nan", "C must be a number > 0"),
        ("clip:inf", "C must be a number > 0"),
        ("clip:x", "C must be a number > 0"),
        ("trim:0", "F must be an integer >= 1"),
        ("trim:1.5", "F must be an integer >= 1"),
        ("trim:-1", "F must be an integer >= 1"),
    ],
)
def test_bad_specs_are_refused(spec: str, message: str) -> None:
    with pytest.raises(RobustSpecError, match=message) as info:
        make_robust(spec)
    assert repr(spec) in str(info.value)


def test_attack_specs() -> None:
    assert make_attack("scale:-20") == ScaleAttack(-20.0)
    assert make_attack(" NOISE:1e3 ") == NoiseAttack(1000.0)
    assert make_attack(make_attack("scale:-20").spec).spec == "scale:-20.0"
    x = np.arange(4, dtype=np.float32)
    rng = np.random.default_rng(0)
    assert np.array_equal(make_attack("scale:-20").forge(x, rng), -20 * x)
    noise = make_attack("noise:1e3").forge(np.zeros(10_000, np.float32), rng)
    assert noise.dtype == np.float32 and np.isfinite(noise).all()
    assert 900 < noise.std() < 1100
    for bad in ("scale", "scale:x", "scale:inf", "noise:0", "noise:-1", "noise:1e31", "flip:1"):
        with pytest.raises(AttackSpecError, match="bad attack spec"):
            make_attack(bad)


# --------------------------------------------------------------------------- clip


@FAST
@given(own=vectors, neighbours=neighbour_lists(), own_norm=st.floats(0, 1e3))
def test_clip_equals_plain_when_nothing_is_clipped(
    own: np.ndarray, neighbours: list[tuple[float, np.ndarray]], own_norm: float
) -> None:
    norms = [float(np.linalg.norm(x - own)) for _, x in neighbours]
    median = float(np.median([own_norm, *norms]))
    assume(median > 0)
    # the smallest C at which no difference exceeds tau: nothing is clipped
    c = max(max(norms) / median, 1e-3) * (1 + 1e-9)
    clip = ClipMixer(c)
    assert all(n <= clip.threshold(norms, own_norm) for n in norms)
    got = clip.step(own, neighbours, own_norm)
    assert np.array_equal(got, PlainMixer().step(own, neighbours, own_norm))


@FAST
@given(own=vectors, neighbours=neighbour_lists(min_size=2), own_norm=st.floats(0, 1e3))
def test_clip_bounds_every_neighbours_pull(
    own: np.ndarray, neighbours: list[tuple[float, np.ndarray]], own_norm: float
) -> None:
    clip = ClipMixer(1.0)
    norms = [float(np.linalg.norm(x - own)) for _, x in neighbours]
    tau = clip.threshold(norms, own_norm)
    bound = sum(w * min(n, tau) for (w, _), n in zip(neighbours, norms, strict=True))
    assert np.linalg.norm(clip.step(own, neighbours, own_norm)) <= bound * (1 + 1e-5) + 1e-5


def test_clip_caps_an_attacker_by_the_honest_norms_on_a_ring() -> None:
    """Degree 2, one honest and one Byzantine neighbour: the own update norm makes the
    median honest, so the attacker pulls no harder than the honest neighbour."""
    rng = np.random.default_rng(0)
    own = rng.standard_normal(100).astype(np.float32)
    honest = own + rng.standard_normal(100).astype(np.float32)
    attacker = (-20 * own).astype(np.float32)
    own_norm = 0.5
    h = float(np.linalg.norm(honest - own))
    step = ClipMixer(1.0).step(own, [(1 / 3, honest), (1 / 3, attacker)], own_norm)
    assert np.linalg.norm(step) <= (2 / 3) * h * (1 + 1e-5)
    plain = PlainMixer().step(own, [(1 / 3, honest), (1 / 3, attacker)], own_norm)
    assert np.linalg.norm(plain) > 5 * np.linalg.norm(step)


@FAST
@given(own=vectors, neighbours=neighbour_lists(), own_norm=st.floats(0, 1e3), seed=st.integers())
def test_clip_is_permutation_invariant(
    own: np.ndarray, neighbours: list[tuple[float, np.ndarray]], own_norm: float, seed: int
) -> None:
    order = np.random.default_rng(seed % 2**32).permutation(len(neighbours))
    shuffled = [neighbours[i] for i in order]
    clip = ClipMixer(1.0)
    np.testing.assert_allclose(
        clip.step(own, shuffled, own_norm),
        clip.step(own, neighbours, own_norm),
        rtol=1e-5,
        atol=1e-3,
    )


# --------------------------------------------------------------------------- trim


@FAST
@given(
    data=st.data(),
    f=st.integers(1, 3),
    attack_scale=st.sampled_from([-1e6, -20.0, 1e3, 1e6]),
)
def test_trim_stays_within_the_honest_range(
    data: st.DataObject, f: int, attack_scale: float
) -> None:
    attackers = data.draw(st.integers(0, f))
    honest_neighbours = data.draw(st.integers(max(0, 2 * f - attackers), 2 * f + 2))
    own = data.draw(vectors)
    honest = [data.draw(vectors) for _ in range(honest_neighbours)]
    bad = [(attack_scale * data.draw(vectors)).astype(np.float32) for _ in range(attackers)]
    neighbours = [(0.1, x) for x in [*honest, *bad]]
    assert len(neighbours) + 1 >= 2 * f + 1
    result = own + TrimMixer(f).step(own, neighbours, 0.0)
    stack = np.stack([own, *honest])
    slack = 1e-4 * (1 + np.abs(stack).max())
    assert (result >= stack.min(axis=0) - slack).all()
    assert (result <= stack.max(axis=0) + slack).all()


@FAST
@given(own=vectors, neighbours=neighbour_lists(), f=st.integers(1, 3), seed=st.integers())
def test_trim_is_permutation_invariant(
    own: np.ndarray, neighbours: list[tuple[float, np.ndarray]], f: int, seed: int
) -> None:
    order = np.random.default_rng(seed % 2**32).permutation(len(neighbours))
    shuffled = [neighbours[i] for i in order]
    trim = TrimMixer(f)
    assert np.array_equal(trim.step(own, shuffled, 0.0), trim.step(own, neighbours, 0.0))


def test_trim_degrades_to_the_median_with_few_values() -> None:
    own = np.array([0.0, 10.0], np.float32)
    a = np.array([1.0, 20.0], np.float32)
    b = np.array([100.0, -5.0], np.float32)
    # F = 2 needs 5 values; with 3 it trims one each side: the coordinate-wise median
    step = TrimMixer(2).step(own, [(0.3, a), (0.3, b)], 0.0)
    assert np.array_equal(own + step, np.array([1.0, 10.0], np.float32))
    # two values: their mean (nothing can out-vote one of two)
    assert np.array_equal(own + TrimMixer(1).step(own, [(0.5, a)], 0.0), (own + a) / 2)
    assert np.array_equal(TrimMixer(1).step(own, [], 0.0), np.zeros(2, np.float32))


# --------------------------------------------------------------------------- gossip state


def test_gossip_state_uses_its_rule_and_records_its_update_norm() -> None:
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal(50).astype(np.float32)
    states = {spec: GossipState[int](x0, "fp32", 1.0, spec) for spec in ("none", "clip:1e9")}
    x = x0 + rng.standard_normal(50).astype(np.float32)
    peer = x0 + 3 * rng.standard_normal(50).astype(np.float32)
    mixed = {}
    for spec, state in states.items():
        state.add_peer(7, peer)
        state.encode_update(x, np.random.default_rng(0))
        assert state.last_update_norm == pytest.approx(float(np.linalg.norm(x - x0)), rel=1e-5)
        mixed[spec] = state.mix(x, {7: 0.5})
    assert np.array_equal(mixed["none"], mixed["clip:1e9"])  # nothing clipped: same bits
    assert isinstance(states["clip:1e9"].robust, ClipMixer)
    assert GossipState[int](x0, "fp32", 1.0, "trim:2").robust == TrimMixer(2)
    with pytest.raises(RobustSpecError):
        GossipState[int](x0, "fp32", 1.0, "trim:0")


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"robust_mixing": "median"}, "bad robust mixing spec"),
        ({"attack": "flip:1", "byzantine": (0,)}, "bad attack spec"),
        ({"byzantine": (9,), "attack": "scale:-20"}, r"node indices \[9\] not in 0..7"),
        ({"byzantine": (1, 1), "attack": "scale:-20"}, "listed twice"),
        ({"byzantine": (0,)}, "give both or neither"),
        ({"attack": "scale:-20"}, "give both or neither"),
        ({"nodes": 2, "byzantine": (0, 1), "attack": "scale:-20"}, "at least one node"),
    ],
)
def test_sim_config_refuses_bad_robust_options(update: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SimConfig.model_validate(update)


def test_settings_validate_robust_mixing_and_limits() -> None:
    s = NodeSettings(robust_mixing=" CLIP ")
    assert s.robust_mixing == "clip:1.0"
    assert (s.max_concurrent_streams, s.max_pushes_per_round) == (64, 6)
    for field, value in [
        ("robust_mixing", "trim:0"),
        ("max_pushes_per_round", 2),
        ("max_concurrent_streams", 0),
        ("max_handshakes_per_minute", 0),
        ("max_pulls_per_minute", 0),
    ]:
        with pytest.raises(ValidationError) as info:
            NodeSettings.model_validate({field: value})
        assert info.value.errors()[0]["loc"] == (field,)


def test_cli_refuses_bad_robust_options() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["start", "--robust-mixing", "median"])
    assert res.exit_code == 2
    assert "--robust-mixing" in res.output and "bad robust mixing spec 'median'" in res.output
    res = runner.invoke(app, ["simulate", "--byzantine", "0,x", "--attack", "scale:-20"])
    assert res.exit_code == 2 and "expected node indices like 0,4" in res.output
    res = runner.invoke(app, ["simulate", "--attack", "scale:-20"])
    assert res.exit_code == 2 and "give both or neither" in res.output


# --------------------------------------------------------------------------- simulation

NODES, ROUNDS = 8, 10
CHANCE = 1 / 5  # five balanced classes
ATTACK = "scale:-20"


def ring_config(data: Path, robust: str, attacked: bool) -> SimConfig:
    """A ring of NODES tiny-bert nodes on iid shares; node 0 attacks when `attacked`."""
    return tiny_sim_config(
        data,
        nodes=NODES,
        rounds=ROUNDS,
        lr=0.05,
        node_eval_every=1000,
        consensus_rounds=0,
        threads=1,
        robust_mixing=robust,
        byzantine=(0,) if attacked else (),
        attack=ATTACK if attacked else None,
    )


@pytest.fixture(scope="module")
def ring_runs(tiny_lm: LoraModel, synthetic_jsonl: Path) -> dict[str, SimResult]:
    import torch

    threads = torch.get_num_threads()
    try:
        runs = {
            f"{robust}{'+attack' if attacked else ''}": Simulation(
                ring_config(synthetic_jsonl, robust, attacked), lm=tiny_lm
            ).run()
            for robust, attacked in [
                ("none", False),
                ("none", True),
                ("clip", True),
                ("trim", True),
            ]
        }
        for name, res in runs.items():  # the README's figures (pytest -s)
            print(f"ring of {NODES}, {name}: honest worst node {honest_worst(res):.2f}")
        return runs
    finally:
        torch.set_num_threads(threads)


def honest_worst(res: SimResult) -> float:
    return float(res.final["before_consensus"]["honest_worst_accuracy"])


@pytest.mark.slow  # three 8-node simulations; the clip and trim properties stay; make test-slow
def test_one_attacker_wrecks_plain_gossip(ring_runs: dict[str, SimResult]) -> None:
    clean, attacked = ring_runs["none"], ring_runs["none+attack"]
    assert honest_worst(clean) >= 0.6  # the setting learns without an attacker
    assert honest_worst(attacked) <= CHANCE + 0.1
    assert attacked.final["average"]["accuracy"] <= CHANCE + 0.1


@pytest.mark.slow  # the ring_runs simulations; the clip and trim properties stay; make test-slow
@pytest.mark.parametrize("robust", ["clip", "trim"])
def test_robust_mixing_keeps_honest_nodes_good(
    ring_runs: dict[str, SimResult], robust: str
) -> None:
    clean, res = ring_runs["none"], ring_runs[f"{robust}+attack"]
    assert honest_worst(res) >= honest_worst(clean) - 0.15
    assert res.final["average"]["accuracy"] >= 0.6


@pytest.mark.slow  # the ring_runs simulations; the clip and trim properties stay; make test-slow
def test_byzantine_nodes_are_left_out_of_honest_metrics(ring_runs: dict[str, SimResult]) -> None:
    res = ring_runs["none+attack"]
    before = res.final["before_consensus"]
    accs = [m["accuracy"] for m in res.final["nodes_before_consensus"]]
    assert before["honest_worst_accuracy"] == min(accs[1:])
    assert before["honest_mean_accuracy"] == pytest.approx(np.mean(accs[1:]))
    assert before["worst_accuracy"] == min(accs)
    clean = ring_runs["none"].final["before_consensus"]
    assert clean["honest_worst_accuracy"] == clean["worst_accuracy"]  # nobody attacks
    assert res.config["byzantine"] == (0,) and res.config["attack"] == "scale:-20.0"
