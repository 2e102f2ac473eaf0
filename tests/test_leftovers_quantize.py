"""A quantized load (--quantize) warns about weights its files lack, as a normal load
does. bitsandbytes (and CUDA) are not needed: the model class is one that records the
quantization config it was given and loads in full precision on the CPU."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import peft
import pytest
from test_model_checks import hf_folder, llama_config
from test_revux_missing_weights import _without

from declora.node import models
from declora.node.models import load_base


def test_a_quantized_load_missing_weights_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the quantized path never asked transformers for its loading report."""
    from transformers import AutoModelForCausalLM

    asked: list[Any] = []

    class Quantized:
        @staticmethod
        def from_pretrained(path: str, quantization_config: Any, device_map: Any, **kw: Any) -> Any:
            asked.append(quantization_config)
            return AutoModelForCausalLM.from_pretrained(path, **kw)

    monkeypatch.setattr(models, "_model_class", lambda _task: Quantized)
    monkeypatch.setattr(peft, "prepare_model_for_kbit_training", lambda m, **_: m)
    folder = _without(hf_folder(tmp_path / "lm", llama_config()), "layers.0.mlp")
    with caplog.at_level(logging.WARNING, logger="declora.node.models"):
        load_base(str(folder), "lm", 2, seed=0, quantize="nf4", device="cuda:0")
    assert [c.bnb_4bit_quant_type for c in asked] == ["nf4"]
    [line] = [r.getMessage() for r in caplog.records if "start random" in r.getMessage()]
    assert "3 weights" in line and "model.layers.0.mlp.down_proj.weight" in line, line
