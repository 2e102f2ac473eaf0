"""A base whose files lack weights of the model (they start random) is warned about:
`quiet_transformers` hides transformers' own "newly initialized" report, which said so
only for a new classification head (expected) and for this (news)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_model_checks import hf_folder, llama_config

from declora.node.models import load_base


def _without(folder: Path, part: str) -> Path:
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    kept = {k: v for k, v in weights.items() if part not in k}
    assert len(kept) < len(weights)
    save_file(kept, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_a_causal_lm_missing_weights_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _without(hf_folder(tmp_path / "lm", llama_config()), "layers.0.mlp")
    with caplog.at_level(logging.WARNING, logger="declora.node.models"):
        load_base(str(folder), "lm", 2, seed=0)
    [line] = [r.getMessage() for r in caplog.records if "start random" in r.getMessage()]
    assert "3 weights" in line and "model.layers.0.mlp.down_proj.weight" in line, line


def test_a_complete_base_and_a_new_head_say_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from test_newcomer_quiet_load import _folder

    with caplog.at_level(logging.WARNING, logger="declora.node.models"):
        load_base(str(hf_folder(tmp_path / "lm", llama_config())), "lm", 2, seed=0)
        # a classification folder saved without its head: the head is new, not news
        folder = _without(_folder(tmp_path / "cls"), "classifier")
        load_base(str(folder), "cls", 2, seed=0)
    assert not [r for r in caplog.records if "start random" in r.getMessage()]


def test_a_classifier_missing_base_weights_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from test_newcomer_quiet_load import _folder

    folder = _without(_folder(tmp_path / "cls"), "encoder.layer.0.output")
    with caplog.at_level(logging.WARNING, logger="declora.node.models"):
        load_base(str(folder), "cls", 2, seed=0)
    [line] = [r.getMessage() for r in caplog.records if "start random" in r.getMessage()]
    assert "4 weights" in line and "bert.encoder.layer.0.output.dense.weight" in line, line
