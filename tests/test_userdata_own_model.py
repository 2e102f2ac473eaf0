"""A user's own model folder whose tokenizer has more tokens than the model embeds
(a tokenizer from another checkpoint, or tokens added without resizing the
embeddings) is refused when it loads, one line naming both counts, instead of an
IndexError from the embedding mid-run after the node has started serving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_model_checks import hf_folder, llama_config

from declora.node.model_source import ModelError
from declora.node.models import load_base


@pytest.mark.parametrize("task", ["lm", "cls"])
def test_a_tokenizer_larger_than_the_embedding_is_refused(tmp_path: Path, task: str) -> None:
    folder = hf_folder(tmp_path / "m", llama_config(vocab_size=16))  # its tokenizer: 23 tokens
    with pytest.raises(ModelError) as info:
        load_base(str(folder), task, 2, seed=0)  # type: ignore[arg-type]
    err = info.value
    assert "23 tokens" in err.message and "embeds only 16" in err.message
    assert "resize_token_embeddings" in (err.hint or "")


def test_a_tokenizer_smaller_than_the_embedding_loads(tmp_path: Path) -> None:
    """Padded embeddings (vocab_size above the tokenizer's count, as most LLMs ship) load."""
    folder = hf_folder(tmp_path / "m", llama_config(vocab_size=64))
    base = load_base(str(folder), "lm", 2, seed=0)
    assert base.model.get_input_embeddings().num_embeddings == 64


def test_a_model_type_transformers_does_not_know_says_so(tmp_path: Path) -> None:
    """A folder of custom code (auto_map, an unknown model_type) is named as such, with
    why declora will not run it, not transformers' paragraph about upgrading."""
    folder = hf_folder(tmp_path / "m", llama_config())
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="mymodel", auto_map={"AutoModelForCausalLM": "my.MyLM"})
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError) as info:
        load_base(str(folder), "lm", 2, seed=0)
    assert "needs model_type 'mymodel', which transformers" in info.value.message
    assert "trust_remote_code" in (info.value.hint or "")
