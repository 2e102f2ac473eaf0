"""`inspect`'s text says what a folder holds, never a bare None: a checkpoint records
no evaluation (said so), an adapter its evaluation as `metric value`, a folder without
a round, node, task or base says `(not recorded)`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from declora.cli.app import app
from declora.node import checkpoint
from declora.node.trainer import LoraModel


def _shown(path: Path) -> str:
    res = CliRunner().invoke(app, ["inspect", str(path)], terminal_width=200)
    assert res.exit_code == 0, res.output
    return res.stdout


def test_each_folder_kind_shows_what_it_holds(tiny_lm: LoraModel, tmp_path: Path) -> None:
    vec = np.concatenate([t.reshape(-1).numpy() for t in tiny_lm.initial_tensors()])
    trainer = {"optimizer": {}, "step": 0, "epoch": 1, "cursor": 0, "order": np.arange(10)}
    state = checkpoint.NodeState(3, 3, vec, vec.copy(), trainer, tiny_lm.fingerprint)
    ckpt = checkpoint.save(tmp_path / "run", tiny_lm, state, {"node_id": "n0"})
    tiny_lm.save_adapter(vec, tmp_path / "final", {"node_id": "n0", "round": 3, "eval": None})
    tiny_lm.save_adapter(
        vec, tmp_path / "evaluated", {"round": 3, "eval": {"accuracy": 0.5, "loss": 1.25}}
    )
    tiny_lm.save_adapter(vec, tmp_path / "bare", {})
    shown = {p.name: _shown(p) for p in (ckpt, tmp_path / "run", tmp_path / "final")}
    shown |= {p.name: _shown(p) for p in (tmp_path / "evaluated", tmp_path / "bare")}
    for text in shown.values():
        assert "None" not in text, text
    for name in (ckpt.name, "run"):  # the run folder: its latest checkpoint
        assert "eval: not measured at this checkpoint" in shown[name], shown[name]
        assert "round 3  node n0" in shown[name]
    assert "eval: not recorded" in shown["final"]
    assert "eval: accuracy 0.5, loss 1.25" in shown["evaluated"]
    assert "round 3  node (not recorded)" in shown["evaluated"]
    assert "round (not recorded)  node (not recorded)" in shown["bare"]


def test_a_plain_model_folder_names_nothing_it_does_not_hold(tmp_path: Path) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(
        vocab_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64,
    )  # fmt: skip
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "base")
    text = _shown(tmp_path / "base")
    assert "None" not in text, text
    assert "task=(not recorded)  base=(not recorded)" in text
    assert "eval: not recorded" in text
