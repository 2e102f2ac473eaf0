"""`experiment`/`simulate` on causal LM: perplexity tables and a chat run's samples."""

from __future__ import annotations

import json
from pathlib import Path

from declora.cli.experiment import GRIDS, SAMPLES, run_one
from declora.node.simulator import SimConfig


def test_a_chat_run_records_masked_loss_and_samples_before_and_after(tmp_path: Path) -> None:
    cfg = SimConfig(
        model="tiny-llama", task="lm", data="bbc-headlines", nodes=2, rounds=1,
        local_steps=1, batch_size=2, max_length=400, max_eval=SAMPLES, centralized=False,
        consensus_rounds=2, partition_scheme="skew:1", lr=0.05,
    )  # fmt: skip
    res = run_one(cfg, tmp_path, "chat")
    # a headline is a few dozen of ~300 bytes: only it (and its EOS) carries loss
    assert 0.02 < res["loss_token_fraction"] < 0.3
    assert len(res["samples"]) == SAMPLES
    for row in res["samples"]:
        assert row["prompt"].startswith("Write a headline") and row["reference"]
        assert isinstance(row["base"], str) and isinstance(row["swarm"], str)
    saved = json.loads((tmp_path / "chat.json").read_text())
    assert saved["samples"] == res["samples"]
    table = (tmp_path / "chat.md").read_text()
    assert "final avg | mean node" in table  # perplexity: no best-round column
    final = saved["final"]
    assert (
        final["after_consensus"]["worst_perplexity"] >= final["after_consensus"]["mean_perplexity"]
    )


def test_the_lm_grid_is_causal_lm_on_the_embedded_llama() -> None:
    grid = GRIDS["lm"]
    assert grid.output == Path("results/llm")
    assert all(c.task == "lm" and c.model == "smollm2" for c in grid.runs.values())
    assert {c.codec for c in grid.runs.values()} == {"fp32", "q4"}
    assert any(c.gradient_tracking for c in grid.runs.values())


def test_lm_perplexity_is_per_token_whatever_the_batches() -> None:
    """Examples of different lengths: one batch or one example a batch, the same loss
    (the mean over every labelled next token)."""
    import numpy as np

    from declora.node.data import TextDataset
    from declora.node.trainer import LoraModel, LoraSpec

    lm = LoraModel(LoraSpec(model="tiny-llama", task="lm", max_length=64, rank=2, alpha=4))
    texts = ("a", "a much longer text than the first one, by far", "mid-sized text")
    enc = lm.encode(TextDataset(texts, None, ()), packing=False)
    vec = np.concatenate([t.reshape(-1).numpy() for t in lm.initial_tensors()])
    whole = lm.evaluate(vec, enc, batch_size=64)["loss"]
    one_by_one = lm.evaluate(vec, enc, batch_size=1)["loss"]
    assert abs(whole - one_by_one) < 1e-5
    per_example = np.mean([lm.evaluate(vec, enc.take(np.array([i])))["loss"] for i in range(3)])
    assert abs(per_example - whole) > 1e-3  # the lengths differ: the two means differ
