"""`inspect` on a plain transformers model folder (no declora.json): shown as a model,
with the line saying predict and export take an adapter, not as an adapter."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from declora.cli.app import app

runner = CliRunner()


def test_inspect_shows_a_plain_model_folder_as_a_model(tmp_path: Path) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(
        vocab_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64,
    )  # fmt: skip
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "base")
    shown = runner.invoke(app, ["inspect", str(tmp_path / "base")], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    first, second = shown.stdout.splitlines()[:2]
    assert first.startswith("model ") and "adapter" not in first, shown.stdout
    assert "not an adapter: predict and export take" in second, shown.stdout
    assert "--model" in second, shown.stdout
    res = runner.invoke(app, ["inspect", str(tmp_path / "base"), "--format", "json"])
    assert json.loads(res.stdout)["kind"] == "model"
    refused = runner.invoke(app, ["predict", str(tmp_path / "base")], input="hi\n")
    assert refused.exit_code != 0  # what inspect's line says
