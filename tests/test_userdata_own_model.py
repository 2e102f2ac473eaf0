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


def test_a_shard_set_missing_a_shard_names_the_shards(tmp_path: Path) -> None:
    """A sharded folder copied without one shard: the hint asks for every shard, not
    for a single model.safetensors the folder never had."""
    from safetensors.torch import load_file, save_file

    folder = hf_folder(tmp_path / "m", llama_config())
    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[:2]}
    shards["model-00002-of-00002.safetensors"] = names[2:]
    save_file({k: weights[k] for k in names[:2]}, folder / "model-00001-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {k: f for f, ks in shards.items() for k in ks}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelError) as info:
        load_base(str(folder), "lm", 2, seed=0)
    assert "model-00002-of-00002.safetensors" in info.value.message
    assert "every weights file its index names" in (info.value.hint or "")
