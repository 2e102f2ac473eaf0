"""Tests for the in-process simulator and the report writers, on tiny-bert."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_SPEC, tiny_sim_config
from pydantic import ValidationError

from declora.node.codecs import encoded_size
from declora.node.gossip import consensus_distance
from declora.node.report import markdown_table, plot, to_jsonable, write_json
from declora.node.simulator import SimConfig, SimResult, Simulation
from declora.node.trainer import LoraModel

ROUNDS = 3


def tiny_config(data: Path, codec: str) -> SimConfig:
    return tiny_sim_config(data, rounds=ROUNDS, codec=codec)


@pytest.fixture(scope="module")
def runs(tiny_lm: LoraModel, synthetic_jsonl: Path) -> dict[str, tuple[Simulation, SimResult]]:
    out = {}
    for codec in ("fp32", "q4"):
        sim = Simulation(tiny_config(synthetic_jsonl, codec), lm=tiny_lm)
        out[codec] = (sim, sim.run())
    return out


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("codec", "q9", "bad codec spec 'q9'"),
        ("codec", "topk:2", "0 < F <= 1"),
        ("mixing", "metropolis", "mixing must be one of"),
        ("nodes", 0, "greater than or equal to 1"),
        ("consensus_step", 1.5, "less than or equal to 1"),
        ("lr", 0, "greater than 0"),
        ("no_such_option", 1, "Extra inputs are not permitted"),
    ],
)
def test_config_validation(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        SimConfig.model_validate({field: value})
    assert info.value.errors()[0]["loc"] == (field,)


def test_config_canonicalizes_codec_and_is_frozen() -> None:
    cfg = SimConfig.model_validate({"codec": " Q4:block=256 "})
    assert cfg.codec == "q4"
    with pytest.raises(ValidationError):
        cfg.nodes = 3
    small = {"model": "tiny-bert", "rank": 4, "alpha": 8, "max_length": 32}
    spec = SimConfig.model_validate(small).lora_spec()
    assert spec == TINY_SPEC


# --------------------------------------------------------------------------- runs


def test_rounds_are_recorded(runs: dict[str, tuple[Simulation, SimResult]]) -> None:
    sim, res = runs["fp32"]
    train = [r for r in res.rounds if r.phase == "train"]
    finish = [r for r in res.rounds if r.phase == "consensus"]
    assert [r.round for r in res.rounds] == list(range(1, len(res.rounds) + 1))
    assert [r.round for r in train] == [1, 2, 3]
    assert res.rounds[: len(train)] == train  # training first, then the finish
    assert all(r.mean_loss is not None and math.isfinite(r.mean_loss) for r in train)
    assert all(r.mean_loss is None and r.average is None for r in finish)
    assert all(r.average is not None for r in train)  # eval_every=1
    assert [r.nodes is not None for r in train] == [False, True, False]  # node_eval_every=2
    assert all(0 <= r.mix_seconds <= r.seconds for r in res.rounds)
    assert res.final["consensus_rounds"] == len(finish) >= 1
    assert res.fingerprint == sim.lm.fingerprint
    assert np.asarray(res.label_counts).sum() == len(sim.train_data) == 200
    assert res.label_names == ["alpha", "bravo", "charlie", "delta", "echo"]
    assert 0 < res.spectral_gap < 1
    assert res.final["samples_per_node"] == ROUNDS * 5 * 16


def test_bytes_counted(runs: dict[str, tuple[Simulation, SimResult]]) -> None:
    sim, res = runs["fp32"]
    numel = sim.lm.schema.numel
    per_round = 2 * (4 * numel + 32)  # ring: two neighbours, one fp32 payload each
    assert all(r.bytes_sent_per_node == per_round for r in res.rounds)
    assert res.final["bytes_sent_per_node"] == per_round * len(res.rounds)
    assert all(n.bytes_sent == n.bytes_received == per_round * len(res.rounds) for n in sim.nodes)


def test_q4_sends_at_least_7x_fewer_bytes(runs: dict[str, tuple[Simulation, SimResult]]) -> None:
    sim, fp32 = runs["fp32"]
    _, q4 = runs["q4"]
    numel = sim.lm.schema.numel
    assert {r.bytes_sent_per_node for r in q4.rounds} == {2 * encoded_size("q4", numel)}
    per_round = [res.final["bytes_sent_per_node"] / len(res.rounds) for res in (fp32, q4)]
    assert per_round[0] / per_round[1] >= 7.0
    # over the training rounds alone the two runs do the same work
    train_bytes = [
        sum(r.bytes_sent_per_node for r in res.rounds if r.phase == "train") for res in (fp32, q4)
    ]
    assert train_bytes[0] / train_bytes[1] >= 7.0


@pytest.mark.parametrize("codec", ["fp32", "q4"])
def test_consensus_finish(runs: dict[str, tuple[Simulation, SimResult]], codec: str) -> None:
    sim, res = runs[codec]
    tol = sim.cfg.consensus_tol
    train = [r for r in res.rounds if r.phase == "train"]
    assert train[-1].consensus_max > tol  # there was something to finish
    assert res.final["consensus_max"] < tol
    assert res.rounds[-1].consensus_max == res.final["consensus_max"]
    vecs = [n.vector() for n in sim.nodes]
    _, worst = consensus_distance(vecs)
    assert worst < tol
    scale = np.linalg.norm(np.mean(vecs, axis=0))
    for i in range(len(vecs)):
        for j in range(i):
            assert np.linalg.norm(vecs[i] - vecs[j]) / scale < 2 * tol
    after = res.final["after_consensus"]
    assert after["worst_accuracy"] == pytest.approx(after["mean_accuracy"], abs=0.05)


def test_training_makes_progress(runs: dict[str, tuple[Simulation, SimResult]]) -> None:
    for codec in ("fp32", "q4"):
        _, res = runs[codec]
        losses = [r.mean_loss for r in res.rounds if r.mean_loss is not None]
        assert len(losses) == ROUNDS
        assert losses[-1] < losses[0], codec
        # measured: average-model accuracy 0.2 -> 0.54 on 50 test texts after 3 short rounds
        assert res.final["average"]["accuracy"] >= 0.4, codec


def test_same_config_same_adapters(
    runs: dict[str, tuple[Simulation, SimResult]], tiny_lm: LoraModel, synthetic_jsonl: Path
) -> None:
    sim, _ = runs["q4"]
    cfg = sim.cfg.model_copy(update={"rounds": 1, "consensus_rounds": 0})
    one = Simulation(cfg, lm=tiny_lm)
    two = Simulation(cfg, lm=tiny_lm)
    one.run()
    two.run()
    for a, b in zip(one.nodes, two.nodes, strict=True):
        assert np.array_equal(a.vector(), b.vector())


# --------------------------------------------------------------------------- report


def test_report_writers(runs: dict[str, tuple[Simulation, SimResult]], tmp_path: Path) -> None:
    _, res = runs["fp32"]
    data = to_jsonable(res)
    text = json.dumps(data, allow_nan=False)  # plain, strict JSON
    assert json.loads(text)["final"]["consensus_rounds"] == res.final["consensus_rounds"]

    path = tmp_path / "out" / "result.json"
    write_json(path, data)
    loaded = json.loads(path.read_text())
    assert loaded["config"]["codec"] == "fp32"
    assert len(loaded["rounds"]) == len(res.rounds)
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # no temp file left

    table = markdown_table([("fp32", loaded), ("q4", to_jsonable(runs["q4"][1]))])
    lines = table.strip().splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("| fp32 | ") and lines[3].startswith("| q4 | ")
    assert all(line.count("|") == lines[0].count("|") == 10 for line in lines)
    avg = 100 * res.final["average"]["accuracy"]
    assert f"| {avg:.1f} |" in lines[2]
    assert "—" in lines[2]  # no centralized baseline in this run

    png = tmp_path / "plots" / "run.png"
    plot(loaded, png, title="tiny")
    raw = png.read_bytes()
    assert raw.startswith(b"\x89PNG\r\n\x1a\n") and len(raw) > 10_000


def test_report_plot_with_centralized_baseline(
    tiny_lm: LoraModel, synthetic_jsonl: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(synthetic_jsonl, "fp32").model_copy(
        update={"rounds": 1, "local_steps": 2, "centralized": True, "consensus_rounds": 3}
    )
    res = Simulation(cfg, lm=tiny_lm).run()
    assert res.centralized is not None
    assert res.centralized["steps"] == 4 * 1 * 2
    assert res.centralized["curve"][-1]["step"] == 8
    data = to_jsonable(res)
    row = markdown_table([("c", data)]).splitlines()[2]
    assert f"{100 * res.centralized['final']['accuracy']:.1f}" in row
    png = tmp_path / "c.png"
    plot(data, png)
    assert png.read_bytes().startswith(b"\x89PNG")
