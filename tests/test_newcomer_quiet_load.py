"""Loading a model folder writes nothing to stderr but the node's log lines: transformers'
"Loading weights" progress bar broke a `--log-format json` log (every start with
MiniLM, SmolLM2 or a local folder wrote it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import save_word_tokenizer

from declora.node.models import load_base


def _folder(path: Path) -> Path:
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(
        vocab_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, num_labels=2,
    )  # fmt: skip
    BertForSequenceClassification(cfg).save_pretrained(path)
    save_word_tokenizer(path)
    return path


def test_loading_a_model_folder_prints_no_progress_bar(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from transformers.utils import logging as hf_logging

    folder = _folder(tmp_path / "base")
    capfd.readouterr()
    load_base(str(folder), "cls", 2, seed=0)
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "it/s" not in err, err
    assert hf_logging.is_progress_bar_enabled()  # the caller's setting is left as it was
