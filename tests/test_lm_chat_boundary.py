"""Chat labels where the template and the reply meet, the end-of-turn token when it is
not EOS, generate's prompt rendering without a chat template, predict's truncation
warning and the no-EOS hint (node/lm_data.py, cli/generate.py)."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from declora.cli.generate import prompt_ids, stop_ids
from declora.node.data import TextDataset
from declora.node.data_files import DataError
from declora.node.lm_data import IGNORE, encode_lm, encode_prompt, end_of_turn_id
from declora.node.model_source import ModelError
from declora.node.models import ByteTokenizer, HFTokenizer

CHATML = (
    "{% for m in messages %}<|im_start|>{{m['role']}}\n{{m['content']}}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
VICUNA = (  # the generation prompt ends in a space the reply's first word takes
    "{% for m in messages %}{% if m['role']=='user' %}USER: {{m['content']}} {% else %}"
    "ASSISTANT: {{m['content']}}<|im_end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT: {% endif %}"
)
BLANK_LINE = (  # two newlines between the template's header and the reply
    "{% for m in messages %}<|im_start|>{{m['role']}}\n\n{{m['content']}}<|im_end|>"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT = (("user", "Capital of France?"), ("assistant", "Paris is it."))


def bpe(template: str | None, eos: str = "<|im_end|>") -> HFTokenizer:
    """A byte-level BPE tokenizer trained on a few lines (GPT-2's pre-tokenizer: " Paris"
    and "\\n\\n" are tokens), with `template` as its chat template."""
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    lines = ["USER: Capital of France? ASSISTANT: Paris is it.\n\n", "assistant\n\nParis\n"] * 50
    tok.train_from_iterator(lines, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=eos)
    fast.chat_template = template
    return HFTokenizer(fast)


def trained(tok: HFTokenizer, chat: Any = CHAT) -> list[str]:
    """The trained tokens of `chat`, each decoded on its own (special tokens kept)."""
    _, _, labels = encode_lm(tok, TextDataset(("",), None, (), (chat,)), 64, packing=False)
    return [tok.hf.decode([int(i)]) for i in labels[0] if i != IGNORE]


class NoOffsets:
    """`tok` with no character offsets (as a slow tokenizer): labels by token counts."""

    def __init__(self, tok: HFTokenizer) -> None:
        self._tok = tok
        self.pad_id, self.eos_id, self.eos_token = tok.pad_id, tok.eos_id, tok.eos_token
        self.has_chat_template = tok.has_chat_template
        self.encode, self.apply_chat_template = tok.encode, tok.apply_chat_template

    def offsets(self, texts: list[str], add_special_tokens: bool = True) -> None:
        return None  # as a slow tokenizer: no character offsets


def test_a_reply_that_takes_the_generation_prompts_space_is_trained_from_its_first_word() -> None:
    tok = bpe(VICUNA)
    assert tok.encode(["ASSISTANT: Paris"], False)[0][-1] == tok.encode([" Paris"], False)[0][0]
    assert trained(tok) == [" Paris", " is", " it", ".", "<|im_end|>"]


def test_the_templates_newlines_before_a_reply_are_not_trained() -> None:
    tok = bpe(BLANK_LINE)
    assert tok.encode(["assistant\n\n"], False)[0][-1] == tok.encode(["\n\n"], False)[0][0]
    assert trained(tok) == ["Paris", " is", " it", ".", "<|im_end|>"]


def test_without_offsets_a_merged_boundary_is_refused_and_a_clean_one_is_labelled() -> None:
    with pytest.raises(DataError, match="merges the text before and after") as err:
        trained(NoOffsets(bpe(VICUNA)))  # type: ignore[arg-type]
    assert "fast tokenizer" in err.value.hint
    tok = bpe(CHATML)
    clean = NoOffsets(tok)
    _, _, labels = encode_lm(clean, TextDataset(("",), None, (), (CHAT,)), 64, packing=False)  # type: ignore[arg-type]
    got = [tok.hf.decode([int(i)]) for i in labels[0] if i != IGNORE]
    assert got == trained(tok) == ["Paris", " is", " it", ".", "<|im_end|>"]


def test_an_end_of_turn_token_other_than_eos_closes_the_trained_reply() -> None:
    tok = bpe(CHATML, eos="<|endoftext|>")  # Qwen2.5 base: EOS is not ChatML's end of turn
    chat = (*CHAT, ("user", "And Italy?"), ("assistant", "Rome."))
    got = trained(tok, chat)
    assert "".join(got) == "Paris is it.<|im_end|>Rome.<|im_end|>"  # no template "\n"


def test_generate_stops_at_the_trained_end_of_turn_token() -> None:
    tok = bpe(CHATML, eos="<|endoftext|>")
    im_end = tok.hf.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn_id(tok) == im_end
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=None))
    adapter = SimpleNamespace(model=model, tokenizer=tok)
    assert stop_ids(adapter) == [tok.eos_id, im_end]  # type: ignore[arg-type]


def test_eos_as_end_of_turn_is_unchanged() -> None:
    tok = bpe(CHATML)
    assert end_of_turn_id(tok) == tok.eos_id
    assert trained(tok)[-1] == "<|im_end|>"


def test_every_prompt_route_renders_the_plain_user_turn_without_a_template() -> None:
    class Plain(ByteTokenizer):
        has_chat_template = False

    tok = Plain()
    question = "What is the capital city of Germany?"
    plain = encode_prompt(tok, question)
    assert plain == tok.encode([question + "\n"])[0]  # as training renders a user turn
    assert prompt_ids(tok, question, True) == plain  # --prompt, .txt lines, stdin
    assert prompt_ids(tok, [{"role": "user", "content": question}], True) == plain
    assert prompt_ids(tok, question, False) == tok.encode([question])[0]  # --no-chat-template


def test_predict_truncation_warning_names_what_predict_can_do(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = TextDataset(("word " * 40,), None, ())
    with caplog.at_level(logging.WARNING):
        encode_lm(ByteTokenizer(), data, 16, packing=False, scoring=True)
    text = caplog.text
    assert "only their first 16 tokens are scored" in text
    assert "retrain the adapter with a larger --max-length" in text
    assert "packing" not in text and "raise --max-length" not in text


def test_no_eos_error_has_a_hint() -> None:
    class NoEos(ByteTokenizer):
        eos_token = None  # type: ignore[assignment]

    with pytest.raises(ModelError) as err:
        encode_lm(NoEos(), TextDataset(("a",), None, ()), 8, packing=False)
    assert "eos_token" in err.value.hint and "tokenizer_config.json" in err.value.hint
