"""An exported merged causal LM stops where `declora-node generate` stops: its
generation_config names EOS and the end-of-turn token training closed replies with
(ChatML's <|im_end|> under a base model whose EOS is <|endoftext|>, as Qwen2.5's)."""

from __future__ import annotations

import json
from pathlib import Path

from test_lm_chat_boundary import CHATML
from test_model_checks import hf_folder, llama_config

from declora.node.adapter_io import export_merged
from declora.node.trainer import LoraModel, LoraSpec


def chatml_base(path: Path) -> Path:
    """A tiny Llama whose tokenizer's EOS is <|endoftext|> and whose ChatML template
    closes each turn with <|im_end|> (generation_config: EOS only)."""
    from transformers import AutoTokenizer

    hf_folder(path, llama_config(eos_token_id=None, bos_token_id=None, pad_token_id=None))
    tok = AutoTokenizer.from_pretrained(path)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.add_special_tokens({"eos_token": "<|endoftext|>"})
    tok.chat_template = CHATML
    tok.save_pretrained(path)
    return path


def test_the_merged_export_stops_at_the_trained_end_of_turn(tmp_path: Path) -> None:
    base = chatml_base(tmp_path / "base")
    spec = LoraSpec(model=str(base), task="lm", rank=2, alpha=4, max_length=16, targets=("q_proj",))
    lm = LoraModel(spec)
    tok = lm.tokenizer.hf  # type: ignore[attr-defined]
    vec = lm.schema.flatten(dict(zip(lm.schema.names, lm.initial_tensors(), strict=True)))
    lm.save_adapter(vec, tmp_path / "adapter", {})
    out, _ = export_merged(tmp_path / "adapter", tmp_path / "merged")
    config = json.loads((out / "generation_config.json").read_text())
    ends = [tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")]
    assert config["eos_token_id"] == ends
