"""A base model's saved classification head and the run's label order (`check_head`):
the same names in another order are reordered, never reused swapped."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from conftest import save_word_tokenizer

from declora.node.models import load_base


def _sentiment(path: Path, names: dict[int, str]) -> Path:
    """A tiny BERT classifier whose head always answers its row 0 (`names[0]`)."""
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(
        vocab_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, num_labels=len(names),
        id2label=names, label2id={n: i for i, n in names.items()},
    )  # fmt: skip
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([5.0] + [-5.0] * (len(names) - 1)))
    model.save_pretrained(path)
    save_word_tokenizer(path)
    return path


def _answer(folder: Path, labels: tuple[str, ...]) -> str:
    base = load_base(str(folder), "cls", len(labels), seed=0, labels=labels)
    ids, mask = base.tokenizer(["a a"], 8)
    with torch.no_grad():
        row = int(base.model(input_ids=ids, attention_mask=mask).logits.argmax(-1))
    return labels[row]


def test_a_head_in_another_label_order_is_reordered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _sentiment(tmp_path / "base", {0: "positive", 1: "negative"})
    with caplog.at_level(logging.INFO, logger="declora.node.models"):
        assert _answer(folder, ("negative", "positive")) == "positive"  # was "negative"
    base = load_base(str(folder), "cls", 2, seed=0, labels=("negative", "positive"))
    assert base.model.config.id2label == {0: "negative", 1: "positive"}
    assert "rows are reordered to the run's order ['negative', 'positive']" in caplog.text
    assert _answer(folder, ("positive", "negative")) == "positive"  # its own order
    three = _sentiment(tmp_path / "three", {0: "b", 1: "c", 2: "a"})
    assert _answer(three, ("a", "b", "c")) == "b"


def test_a_head_with_other_names_is_used_by_position_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _sentiment(tmp_path / "base", {0: "pos", 1: "neg"})
    with caplog.at_level(logging.INFO, logger="declora.node.models"):
        assert _answer(folder, ("negative", "positive")) == "negative"
    assert "head for the labels ['pos', 'neg'], the run's are ['negative', 'positive']" in (
        caplog.text
    )
    caplog.clear()
    generic = _sentiment(tmp_path / "generic", {0: "LABEL_0", 1: "LABEL_1"})
    with caplog.at_level(logging.INFO, logger="declora.node.models"):
        assert _answer(generic, ("negative", "positive")) == "negative"
    assert "declora.node.models" not in {r.name for r in caplog.records}


def test_a_run_trains_the_reordered_head(tmp_path: Path) -> None:
    from declora.node.trainer import LoraModel, LoraSpec

    folder = _sentiment(tmp_path / "base", {0: "positive", 1: "negative"})
    lm = LoraModel(LoraSpec(model=str(folder), task="cls", max_length=8), 2,
                   label_names=("negative", "positive"))  # fmt: skip
    ids, mask = lm.tokenizer(["a a"], 8)
    with torch.no_grad():
        row = int(lm.model(input_ids=ids, attention_mask=mask).logits.argmax(-1))
    assert lm.model.config.id2label[row] == "positive"  # was "negative"
