"""Guard for newuser's GPT-2 `loss_type` default: the loss a causal LM's forward returns
is the shifted token cross-entropy for every family the README names (GPT-2, Llama), and
a classifier's model keeps transformers' own setting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_model_checks import configs, hf_folder

from declora.node.models import load_base


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_the_causal_loss_is_the_shifted_cross_entropy(tmp_path: Path, family: str) -> None:
    base = load_base(str(hf_folder(tmp_path / family, configs()[family])), "lm", 0, seed=0)
    ids = torch.tensor([[3, 4, 5, 2, 7, 9]])
    out = base.model(input_ids=ids, labels=ids)
    logits = out.logits[0, :-1].float()
    expected = torch.nn.functional.cross_entropy(logits, ids[0, 1:])
    assert torch.allclose(out.loss, expected, atol=1e-6)


def test_a_classifier_keeps_its_loss_type(tmp_path: Path) -> None:
    base = load_base(str(hf_folder(tmp_path / "bert", configs()["bert"])), "cls", 2, seed=0)
    assert getattr(base.model, "loss_type", None) != "ForCausalLM"
