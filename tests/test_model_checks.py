"""Models that cannot do what a run asks are refused before training, one line each.

--task lm needs a causal LM: an encoder (tiny-bert, a BERT folder) sees later tokens,
so its "LM" would be trained to read its answer. Every model --task lm accepts must
fail the leak demonstration (its logits at a position move when a later token does);
every one it refuses is named with a hint. --targets names must each match a layer
LoRA can adapt: an unknown one was silently skipped (or, all unknown, PEFT's message
without a hint); each name it accepts adapts a layer of that name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from declora.node.lora_targets import lora_layers, wrap_lora
from declora.node.model_source import ModelError
from declora.node.models import BaseModel, ByteTokenizer, check_causal, load_base
from declora.node.trainer import LoraModel, LoraSpec

NOT_CAUSAL = "is not a causal (decoder) LM"
NOT_CAUSAL_RE = re.escape(NOT_CAUSAL)
SMALL: dict[str, Any] = {"vocab_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}


def leak(model: nn.Module, at: int = 2, changed: int = 4, length: int = 6) -> float:
    """The leak demonstration, written apart from the check it tests: how far the logits
    at positions <= `at` move when only the token at `changed` does (0.0 when causal)."""
    model.eval()
    vocab = model.get_input_embeddings().num_embeddings  # type: ignore[operator]
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (1, length), generator=gen)
    other = ids.clone()
    other[0, changed] = 3 + (int(ids[0, changed]) - 3 + 1 + vocab // 3) % (vocab - 3)
    assert int(other[0, changed]) != int(ids[0, changed])
    with torch.no_grad():
        a, b = (model(input_ids=x, attention_mask=torch.ones_like(x)).logits for x in (ids, other))
    return float((a[0, : at + 1] - b[0, : at + 1]).abs().max())


def hf_folder(path: Path, config: Any) -> Path:
    """A local transformers folder: random weights of `config`'s causal-LM (or, for an
    encoder-decoder, seq2seq) class and a word-level tokenizer."""
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    cls.from_config(config).save_pretrained(path)
    vocab = {"[UNK]": 0, "[PAD]": 1, "</s>": 2, **{f"w{i}": i + 3 for i in range(20)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>"
    )
    fast.save_pretrained(path)
    return path


def llama_config(**extra: Any) -> Any:
    """A tiny Llama config (one layer, 64 tokens, context 128 unless `extra` says)."""
    from transformers import LlamaConfig

    options: dict[str, Any] = {
        **SMALL,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
    }
    return LlamaConfig(**{**options, **extra})


def configs() -> dict[str, Any]:
    from transformers import BertConfig, GPT2Config, LlamaConfig, T5Config

    return {
        "llama": LlamaConfig(**SMALL, hidden_size=16, intermediate_size=32, num_key_value_heads=2),
        "gpt2": GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32),
        "bert": BertConfig(**SMALL, hidden_size=16, intermediate_size=32),
        "bert-decoder": BertConfig(**SMALL, hidden_size=16, intermediate_size=32, is_decoder=True),
        "t5": T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2),
    }


# the models --task lm must accept (causal) and refuse (they see later tokens)
CAUSAL = ("tiny-llama", "llama", "gpt2", "bert-decoder")
REFUSED = ("tiny-bert", "bert", "t5")


def source(name: str, tmp_path: Path) -> str:
    return name if name.startswith("tiny-") else str(hf_folder(tmp_path / name, configs()[name]))


@pytest.mark.parametrize("name", CAUSAL + REFUSED)
def test_lm_accepts_only_models_that_cannot_see_later_tokens(name: str, tmp_path: Path) -> None:
    model = source(name, tmp_path)
    try:
        base = load_base(model, "lm", 2, seed=0)
    except ModelError as exc:
        assert name in REFUSED, exc
        text = str(exc)
        assert NOT_CAUSAL in text and repr(model) in text and "\n" not in text
        assert "hint: --task lm needs a decoder-only causal LM" in text and "smollm2" in text
        return
    assert name in CAUSAL, f"{name} was accepted for --task lm"
    assert leak(base.model) == 0.0
    assert leak(base.model, at=0, changed=1) == 0.0


def test_the_refused_encoders_really_see_later_tokens() -> None:
    """The demonstration can fail: BERT's LM head, built as --task lm once built it,
    moves earlier logits when a later token changes, and the check says so."""
    from transformers import AutoModelForCausalLM, BertConfig

    torch.manual_seed(0)
    bert = AutoModelForCausalLM.from_config(
        BertConfig(**SMALL, hidden_size=16, intermediate_size=32)
    )
    assert leak(bert) > 1e-6
    with pytest.raises(ModelError, match="change when a later token changes") as info:
        check_causal("some-bert", "bert", bert)
    assert NOT_CAUSAL in str(info.value) and "'some-bert'" in str(info.value)


def test_tiny_bert_lm_is_refused_at_every_entry() -> None:
    spec = LoraSpec(model="tiny-bert", task="lm", rank=2, alpha=4, max_length=16)
    with pytest.raises(ModelError, match=NOT_CAUSAL_RE):
        LoraModel(spec)
    with pytest.raises(ModelError, match=NOT_CAUSAL_RE):
        load_base("tiny-bert", "lm", 2, seed=0)
    assert load_base("tiny-bert", "cls", 2, seed=0).task == "cls"  # still a classifier


def test_the_check_leaves_the_model_as_it_found_it() -> None:
    from declora.node.models import _tiny

    torch.manual_seed(0)
    model, _ = _tiny("tiny-llama", "lm", 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    check_causal("tiny-llama", "llama", model)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------ --targets


def lora_spec(model: str, targets: tuple[str, ...], task: str = "cls") -> LoraSpec:
    return LoraSpec(model=model, task=task, rank=2, alpha=4, max_length=16, targets=targets)


def adapted(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if hasattr(m, "lora_A")}


def test_a_known_and_an_unknown_target_is_refused_naming_the_unknown() -> None:
    with pytest.raises(ModelError) as info:
        LoraModel(lora_spec("tiny-bert", ("query", "bogus")), num_labels=2)
    text = str(info.value)
    assert text.startswith("--targets bogus: the model 'tiny-bert' has no layer")
    assert "hint: its layer names are dense, key, position_embeddings, query," in text
    assert "self.query" in text and "all-linear" in text and "\n" not in text


def test_only_unknown_targets_are_refused_with_the_models_names() -> None:
    with pytest.raises(ModelError) as info:
        LoraModel(lora_spec("tiny-llama", ("qproj", "vproj"), "lm"))
    text = str(info.value)
    assert (
        text.startswith("--targets qproj,vproj: the model 'tiny-llama'") and "those names" in text
    )
    for name in ("q_proj", "v_proj", "gate_proj", "lm_head"):
        assert name in text
    assert "PEFT" not in text and "Target modules" not in text


@pytest.mark.parametrize(
    ("model", "task", "target"),
    [
        ("tiny-bert", "cls", "attention"),  # a block, not a layer LoRA can adapt
        ("tiny-bert", "cls", "classifier"),  # the head PEFT trains whole
        ("tiny-llama", "cls", "score"),
        ("tiny-llama", "lm", "Q_PROJ"),  # names are exact
        ("tiny-llama", "lm", "proj"),  # a dotted suffix, not a substring
    ],
)
def test_names_that_are_no_adaptable_layer_are_refused(model: str, task: str, target: str) -> None:
    with pytest.raises(ModelError, match=f"^--targets {target}: "):
        LoraModel(lora_spec(model, (target,), task), num_labels=2)


def test_deca_and_full_finetuning_check_their_targets_too() -> None:
    from declora.node.deca_model import BlockModel

    spec = LoraSpec(**{**lora_spec("tiny-bert", ("bogus",)).as_dict(), "method": "deca"})  # type: ignore[arg-type]
    with pytest.raises(ModelError, match=r"^--targets bogus"):
        BlockModel(spec, num_labels=2)


@pytest.mark.parametrize(("model", "task"), [("tiny-bert", "cls"), ("tiny-llama", "lm")])
def test_every_name_offered_is_accepted_and_adapts_layers_of_that_name(
    model: str, task: str
) -> None:
    base = load_base(model, task, 2, seed=0)  # type: ignore[arg-type]
    leaves = sorted({p.rsplit(".", 1)[-1] for p in lora_layers(base.model, task)})  # type: ignore[arg-type]
    assert len(leaves) >= 5
    for leaf in leaves:
        fresh = load_base(model, task, 2, seed=0)  # type: ignore[arg-type]
        names = adapted(wrap_lora(fresh, 2, 4, (leaf,), seed=0))
        assert names and all(n == leaf or n.endswith("." + leaf) for n in names), leaf


def test_a_dotted_suffix_adapts_only_the_layers_under_it() -> None:
    lm = LoraModel(lora_spec("tiny-bert", ("self.query",)), num_labels=2)
    names = adapted(lm.model)
    assert len(names) == 2 and all(n.endswith("attention.self.query") for n in names)
    assert lm.spec.targets == ("self.query",)


def test_known_targets_train_exactly_those_layers() -> None:
    lm = LoraModel(lora_spec("tiny-bert", ("query", "value")), num_labels=2)
    assert {n.rsplit(".", 1)[-1] for n in adapted(lm.model)} == {"query", "value"}
    assert len(adapted(lm.model)) == 4


def test_all_linear_adapts_every_linear_layer_but_the_head() -> None:
    lm = LoraModel(lora_spec("tiny-bert", ("all-linear",)), num_labels=2)
    names = adapted(lm.model)
    plain = load_base("tiny-bert", "cls", 2, seed=0).model
    linear = {n for n, m in plain.named_modules() if isinstance(m, nn.Linear)}
    assert len(names) == 13 and not any("classifier" in n for n in names)
    assert {n.split(".", 2)[-1] for n in names} == linear - {"classifier"}
    with pytest.raises(ModelError, match="cannot be combined"):
        LoraModel(lora_spec("tiny-bert", ("all-linear", "query")), num_labels=2)


def test_targets_are_checked_before_peft_builds_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    import peft

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("PEFT was reached")

    monkeypatch.setattr(peft, "get_peft_model", never)
    base = BaseModel(load_base("tiny-bert", "cls", 2, 0).model, ByteTokenizer(), "cls", "b", "bert")
    with pytest.raises(ModelError, match=r"^--targets nope"):
        wrap_lora(base, 2, 4, ("query", "nope"), seed=0)
