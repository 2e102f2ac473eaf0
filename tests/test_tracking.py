"""Gradient tracking (node/tracking.py): its invariants, its checks, and the simulator."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_sim_config
from pydantic import ValidationError

from declora.node.codecs import encoded_size, make_codec
from declora.node.gossip import GossipError
from declora.node.mixing import local_mh_weights
from declora.node.simulator import SimConfig, Simulation
from declora.node.topology import from_spec
from declora.node.tracking import GradientTracker, TrackingError
from declora.node.trainer import LoraModel

SHAPES = [torch.Size([3, 2]), torch.Size([4])]
SIZE = 10


def ring_weights(n: int) -> list[dict[int, float]]:
    topo = from_spec("ring", n)
    return [
        local_mh_weights(2, {j: topo.degree(j) for j in topo.neighbors(i)})[1] for i in range(n)
    ]


def split(vec: np.ndarray) -> list[torch.Tensor]:
    return [torch.tensor(vec[:6]).reshape(3, 2), torch.tensor(vec[6:])]


def tracking_round(
    trackers: list[GradientTracker[int]],
    grads: list[np.ndarray],
    weights: list[dict[int, float]],
    codec: str = "fp32",
    rng: np.random.Generator | None = None,
    exchanges: int = 1,
) -> list[np.ndarray]:
    """One round of 2 local steps with constant gradients, then `exchanges` exchanges
    of z; returns the corrected gradients."""
    rng = rng or np.random.default_rng(0)
    corrected = []
    for t, g in zip(trackers, grads, strict=True):
        t.begin_round()
        for _ in range(2):
            gs = split(g.copy())
            t.correct(gs)
        corrected.append(torch.cat([x.reshape(-1) for x in gs]).numpy())
    c = make_codec(codec)
    for _ in range(exchanges):
        payloads = [t.encode(c, rng) for t in trackers]
        for i, t in enumerate(trackers):
            received = {
                j: t.decode_checked(j, payloads[j])  # type: ignore[arg-type]
                for j in weights[i]
                if payloads[j] is not None
            }
            t.update(weights[i], received)
    return corrected


@pytest.mark.parametrize("codec", ["fp32", "q4"])
def test_corrections_sum_to_zero_and_reach_the_mean_gradient(codec: str) -> None:
    n = 6
    rng = np.random.default_rng(1)
    grads = [rng.normal(size=SIZE).astype(np.float32) for _ in range(n)]
    mean = np.mean(grads, axis=0)
    trackers = [GradientTracker[int](SHAPES) for _ in range(n)]
    weights = ring_weights(n)
    for _ in range(300):
        corrected = tracking_round(trackers, grads, weights, codec, rng)
        total = np.sum([t.correction() for t in trackers], axis=0)
        np.testing.assert_allclose(total, 0.0, atol=1e-4)  # the average model is not moved
    if codec == "fp32":  # exact messages: every node follows the swarm's mean gradient
        for c in corrected:
            np.testing.assert_allclose(c, mean, atol=1e-4)
        for t, g in zip(trackers, grads, strict=True):
            np.testing.assert_allclose(t.correction(), mean - g, atol=1e-4)
    else:  # unbiased quantization noise only
        err = max(float(np.abs(c - mean).max()) for c in corrected)
        assert err < 0.5 * float(np.abs(np.array(grads) - mean).max())


@pytest.mark.parametrize("codec", ["fp32", "q4"])
def test_z_mixed_in_every_exchange_of_a_round_keeps_the_sum(codec: str) -> None:
    n, g = 6, 4
    rng = np.random.default_rng(2)
    grads = [rng.normal(size=SIZE).astype(np.float32) for _ in range(n)]
    trackers = [GradientTracker[int](SHAPES, exchanges=g) for _ in range(n)]
    weights = ring_weights(n)
    c = make_codec(codec)
    for t, grad in zip(trackers, grads, strict=True):
        t.begin_round()
        t.correct(split(grad.copy()))
    for _ in range(g):
        payloads = [t.encode(c, rng) for t in trackers]
        assert all(p is not None for p in payloads)
        for i, t in enumerate(trackers):
            t.update(weights[i], {j: t.decode_checked(j, payloads[j]) for j in weights[i]})  # type: ignore[arg-type]
        total = np.sum([t.correction() for t in trackers], axis=0)
        np.testing.assert_allclose(total, 0.0, atol=1e-4)
    # the round's exchanges are spent: a gossip-only exchange after them carries no z
    assert all(t.encode(c, rng) is None for t in trackers)


def test_one_round_of_many_exchanges_corrects_to_the_mean_at_once() -> None:
    """(W^G z) - z with G large: the correction is the swarm's mean gradient minus the
    node's own after one round, where one exchange a round gets only part of the way."""
    n = 6
    rng = np.random.default_rng(3)
    grads = [rng.normal(size=SIZE).astype(np.float32) for _ in range(n)]
    mean = np.mean(grads, axis=0)
    weights = ring_weights(n)  # lambda_2 = 2/3: (2/3)^40 < 1e-7
    many = [GradientTracker[int](SHAPES, exchanges=40) for _ in range(n)]
    tracking_round(many, grads, weights, exchanges=40)
    for t, grad in zip(many, grads, strict=True):
        np.testing.assert_allclose(t.correction(), mean - grad, atol=1e-5)
    one = [GradientTracker[int](SHAPES) for _ in range(n)]
    tracking_round(one, grads, weights, exchanges=40)  # z sent in the first exchange only
    err = max(
        float(np.abs(t.correction() - (mean - g)).max()) for t, g in zip(one, grads, strict=True)
    )
    assert err > 0.1


def test_the_finish_and_a_rolled_back_state_end_the_rounds_z() -> None:
    t = GradientTracker[int](SHAPES, exchanges=3)
    c, rng = make_codec("fp32"), np.random.default_rng(0)
    t.correct(split(np.ones(SIZE, np.float32)))
    assert t.encode(c, rng) is not None
    t.update({1: 0.5}, {1: np.zeros(SIZE, np.float32)})
    t.end_round()  # what DecLoraNode.begin_finish and restore do
    assert t.encode(c, rng) is None
    np.testing.assert_allclose(t.correction(), -0.5)


def test_a_round_without_local_steps_sends_nothing_and_changes_nothing() -> None:
    t = GradientTracker[int](SHAPES)
    t.set_correction(np.arange(SIZE, dtype=np.float32))
    t.begin_round()
    assert t.encode(make_codec("fp32"), np.random.default_rng(0)) is None
    t.update({1: 0.5}, {1: np.ones(SIZE, np.float32)})
    np.testing.assert_array_equal(t.correction(), np.arange(SIZE))
    # with one exchange a round (G = 1) z is sent once: a second encode sends nothing
    t.correct(split(np.ones(SIZE, np.float32)))
    assert t.encode(make_codec("fp32"), np.random.default_rng(0)) is not None
    assert t.encode(make_codec("fp32"), np.random.default_rng(0)) is None


def test_an_edge_without_a_message_is_skipped() -> None:
    t = GradientTracker[int](SHAPES)
    t.correct(split(np.ones(SIZE, np.float32)))
    t.encode(make_codec("fp32"), np.random.default_rng(0))
    t.update({1: 0.25, 2: 0.25}, {1: np.full(SIZE, 3.0, np.float32)})
    np.testing.assert_allclose(t.correction(), 0.25 * (3.0 - 1.0))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (make_codec("fp32").encode(np.ones(SIZE + 1, np.float32), np.random.default_rng()), "11"),
        (make_codec("fp32").encode(np.ones(SIZE - 1, np.float32), np.random.default_rng()), "9"),
        (b"garbage", "tracking message from 7"),
    ],
)
def test_bad_messages_are_refused(payload: bytes, message: str) -> None:
    t = GradientTracker[int](SHAPES)
    with pytest.raises(TrackingError, match=message):
        t.decode_checked(7, payload)


def test_non_finite_messages_and_corrections_are_refused() -> None:
    t = GradientTracker[int](SHAPES)
    bad = np.ones(SIZE, np.float32)
    bad[3] = np.nan
    raw = bytearray(make_codec("fp32").encode(np.ones(SIZE, np.float32), np.random.default_rng()))
    with pytest.raises(TrackingError):
        t.set_correction(bad)
    with pytest.raises(TrackingError):
        t.set_correction(np.ones(SIZE + 1, np.float32))
    raw[30] ^= 0xFF  # a flipped byte fails the codec's CRC
    with pytest.raises(TrackingError):
        t.decode_checked(1, bytes(raw))
    np.testing.assert_array_equal(t.correction(), 0.0)


# --------------------------------------------------------------------------- simulator


def tracking_config(data: Path, tracking: bool, **extra: object) -> SimConfig:
    return tiny_sim_config(
        data,
        partition_scheme="skew:0.9",
        local_steps=3,
        node_eval_every=1000,
        consensus_rounds=4,
        gradient_tracking=tracking,
        **extra,
    )


def test_simulator_tracking_keeps_the_sum_and_sends_twice_the_bytes(
    tiny_lm: LoraModel, synthetic_jsonl: Path
) -> None:
    plain = Simulation(tracking_config(synthetic_jsonl, False), lm=tiny_lm)
    plain_res = plain.run()
    sim = Simulation(tracking_config(synthetic_jsonl, True), lm=tiny_lm)
    res = sim.run()
    corrections = [n.tracker.correction() for n in sim.nodes]  # type: ignore[union-attr]
    assert all(np.abs(c).max() > 0 for c in corrections)  # the skewed nodes were corrected
    np.testing.assert_allclose(np.sum(corrections, axis=0), 0.0, atol=1e-5)
    size = encoded_size("fp32", sim.lm.schema.numel)
    train_rounds, finish = 3, res.final["consensus_rounds"]
    # degree 2; a training round carries the adapter delta and z, a finish round the delta
    assert res.final["bytes_sent_per_node"] == 2 * size * (2 * train_rounds + finish)
    assert plain_res.final["bytes_sent_per_node"] == 2 * size * (
        train_rounds + plain_res.final["consensus_rounds"]
    )
    assert not np.array_equal(sim.average(), plain.average())
    assert "+tracking" in sim.cfg.label


def test_simulator_tracking_sends_z_in_each_of_a_rounds_exchanges(
    tiny_lm: LoraModel, synthetic_jsonl: Path
) -> None:
    sim = Simulation(tracking_config(synthetic_jsonl, True, gossip_steps=2), lm=tiny_lm)
    res = sim.run()
    corrections = [n.tracker.correction() for n in sim.nodes]  # type: ignore[union-attr]
    np.testing.assert_allclose(np.sum(corrections, axis=0), 0.0, atol=1e-5)
    size = encoded_size("fp32", sim.lm.schema.numel)
    train_rounds, finish = 3, res.final["consensus_rounds"]
    # 2 exchanges a training round, each with the delta and z; the finish's the delta
    assert res.final["bytes_sent_per_node"] == 2 * size * (2 * 2 * train_rounds + finish)


def test_tracking_with_robust_mixing_is_refused(synthetic_jsonl: Path) -> None:
    with pytest.raises(ValidationError, match="robust"):
        tracking_config(synthetic_jsonl, True, robust_mixing="clip")


def test_a_node_without_tracking_refuses_tracking_messages(
    tiny_lm: LoraModel, synthetic_jsonl: Path
) -> None:
    sim = Simulation(tracking_config(synthetic_jsonl, False), lm=tiny_lm)
    with pytest.raises(GossipError, match="does not track"):
        sim.nodes[0].receive_tracker(1, b"")


def test_checkpoints_keep_the_correction(tiny_lm: LoraModel, tmp_path: Path) -> None:
    from declora.node import checkpoint

    vec = np.concatenate([t.reshape(-1).numpy() for t in tiny_lm.initial_tensors()])
    correction = np.random.default_rng(0).normal(size=vec.shape).astype(np.float32)
    trainer_state = {"optimizer": {}, "step": 0, "epoch": 0, "cursor": 0, "order": np.zeros(0)}
    for name, corr in [("with", correction), ("without", None)]:
        state = checkpoint.NodeState(
            round=3,
            seq=3,
            vector=vec,
            public=vec.copy(),
            trainer=trainer_state,
            fingerprint=tiny_lm.fingerprint,
            correction=corr,
        )
        checkpoint.save(tmp_path / name, tiny_lm, state, {"node_id": name})
        loaded = checkpoint.load(tmp_path / name, tiny_lm)
        if corr is None:
            assert loaded.correction is None
        else:
            assert loaded.correction is not None
            np.testing.assert_array_equal(loaded.correction, corr)


def test_a_damaged_checkpoint_is_one_clear_error(tiny_lm: LoraModel, tmp_path: Path) -> None:
    """A truncated state.pt, a LATEST naming a missing checkpoint, and a truncated
    adapter file each raise CheckpointError naming what is wrong (no torch traceback)."""
    from declora.node import checkpoint

    vec = np.concatenate([t.reshape(-1).numpy() for t in tiny_lm.initial_tensors()])
    trainer_state = {"optimizer": {}, "step": 0, "epoch": 0, "cursor": 0, "order": np.zeros(0)}
    root = tmp_path / "ckpt"
    for r in (1, 2):
        state = checkpoint.NodeState(r, r, vec, vec.copy(), trainer_state, tiny_lm.fingerprint)
        checkpoint.save(root, tiny_lm, state, {})
    newest = root / "ckpt-00000002"
    for ckpt in (root / "ckpt-00000001", newest):  # else a resume falls back to the other
        weights = ckpt / "adapter" / "adapter_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(checkpoint.CheckpointError, match=r"ckpt-00000002.* holds no readable"):
        checkpoint.load(root, tiny_lm)
    data = (newest / "state.pt").read_bytes()
    (newest / "state.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(checkpoint.CheckpointError, match=r"cannot be read .*truncated or corrupt"):
        checkpoint.load(root, tiny_lm)
    (root / "LATEST").write_text("ckpt-00000077\n")
    with pytest.raises(
        checkpoint.CheckpointError,
        match="LATEST names 'ckpt-00000077', which is missing or incomplete "
        r"\(other checkpoints: ckpt-00000001, ckpt-00000002\)",
    ):
        checkpoint.load(root, tiny_lm)


def test_a_checkpoint_of_another_configuration_names_what_differs(
    tiny_lm: LoraModel, tmp_path: Path
) -> None:
    """--resume with other labels or rank: the refusal names each difference (the
    checkpoint's value 'there', this start's 'here'), not only two fingerprints."""
    from dataclasses import replace

    from conftest import CLASS_NAMES, NUM_CLASSES, TINY_SPEC

    from declora.node import checkpoint

    vec = np.concatenate([t.reshape(-1).numpy() for t in tiny_lm.initial_tensors()])
    trainer_state = {"optimizer": {}, "step": 0, "epoch": 0, "cursor": 0, "order": np.zeros(0)}
    state = checkpoint.NodeState(1, 1, vec, vec.copy(), trainer_state, tiny_lm.fingerprint)
    checkpoint.save(tmp_path, tiny_lm, state, {})
    other = LoraModel(
        replace(TINY_SPEC, rank=2), num_labels=NUM_CLASSES - 1, label_names=CLASS_NAMES[:-1]
    )
    with pytest.raises(checkpoint.CheckpointMismatch) as info:
        checkpoint.load(tmp_path, other)
    from declora.node.daemon.startup import CONFIG, as_user_error

    mistake = as_user_error(info.value)
    assert mistake is not None and mistake.code == CONFIG and "resume with" in mistake.hint
    message = str(info.value)
    assert f"labels: 5 {list(CLASS_NAMES)} there, 4 {list(CLASS_NAMES[:-1])} here" in message
    assert "rank: 4 there, 2 here" in message


def test_settings_and_cli_refuse_tracking_with_robust_mixing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from declora.cli.app import app
    from declora.node.settings import NodeSettings

    for key in [k for k in os.environ if k.startswith("DECLORA_")]:
        monkeypatch.delenv(key)
    assert NodeSettings(gradient_tracking=True).gradient_tracking
    with pytest.raises(ValidationError, match="cannot be combined with --robust-mixing"):
        NodeSettings(gradient_tracking=True, robust_mixing="trim")
    res = CliRunner().invoke(app, ["start", "--gradient-tracking", "--robust-mixing", "clip"])
    assert res.exit_code == 2 and "cannot be combined with --robust-mixing" in res.output
    res = CliRunner().invoke(app, ["simulate", "--gradient-tracking", "--robust-mixing", "clip"])
    assert res.exit_code == 2 and "robust" in res.output


def test_a_rolled_back_round_sends_no_z(tiny_lm: LoraModel, synthetic_jsonl: Path) -> None:
    """The daemon's roll-back (`RoundLoop._roll_back`: training went non-finite) restores
    the state before the round's steps; the exchange that follows must not send the z
    of those undone steps (non-finite, its neighbours refuse the whole payload and the
    node loses them all), in none of the round's G exchanges."""
    from declora.node.dec_lora import TrainerSnapshot

    sim = Simulation(tracking_config(synthetic_jsonl, True, gossip_steps=2), lm=tiny_lm)
    node = sim.nodes[0]
    assert node.tracker is not None
    good = TrainerSnapshot.of(node)
    node.train(2, round_number=1)
    assert node.tracker.steps == 2
    good.restore(node)  # what _roll_back does
    for _ in range(2):  # the round's G = 2 exchanges
        node.outgoing()
        assert node.tracker_outgoing() is None
        node.mix({})
    np.testing.assert_array_equal(node.tracker.correction(), 0.0)
    node.train(2, round_number=2)  # the next round's steps are sent again
    node.outgoing()
    assert node.tracker_outgoing() is not None


def test_a_skip_ahead_or_a_taken_state_ends_the_rounds_z(
    tiny_lm: LoraModel, synthetic_jsonl: Path
) -> None:
    """A daemon that skips ahead (`Exchange.align_round`) or takes a neighbour's state
    (catch-up) mid-round sends no more of the old round's z; the next local steps do."""
    sim = Simulation(tracking_config(synthetic_jsonl, True, gossip_steps=3), lm=tiny_lm)
    node = sim.nodes[0]
    for leave in (node.end_round, lambda: node.take_state(node.vector())):
        node.train(2, round_number=1)
        node.outgoing()
        assert node.tracker_outgoing() is not None
        node.mix({})
        leave()
        node.outgoing()
        assert node.tracker_outgoing() is None  # 2 of the 3 exchanges were left
