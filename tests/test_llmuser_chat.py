"""Tokenizers and chat templates as users' models ship them: one that requires a system
turn first still gives `generate` the end-of-turn token training closed replies with;
one saved with add_eos_token (it ends every text with EOS) gets one EOS after each
document, not two, and no EOS after a prompt to continue; turns whose text is already
rendered with the template are named in a warning."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from test_lm_chat_boundary import CHATML, bpe, trained

from declora.cli.generate import prompt_ids, stop_ids
from declora.node.data import TextDataset
from declora.node.data_files import DataError
from declora.node.lm_data import IGNORE, encode_lm, encode_prompt, end_of_turn_id
from declora.node.models import HFTokenizer

CHAT_PLAIN = (("user", "Capital of Italy?"), ("assistant", "Rome."))
SYSTEM_FIRST = (
    "{% if messages[0]['role'] != 'system' %}{{ raise_exception('a system turn must come "
    "first') }}{% endif %}" + CHATML
)


def test_a_template_that_needs_a_system_turn_still_stops_at_its_end_of_turn() -> None:
    tok = bpe(SYSTEM_FIRST, eos="<|endoftext|>")  # EOS is not the end of a turn
    im_end = tok.hf.convert_tokens_to_ids("<|im_end|>")
    chat = (("system", "Be brief."), ("user", "Capital of France?"), ("assistant", "Paris."))
    assert trained(tok, chat)[-1] == "<|im_end|>"  # what training closes a reply with
    assert end_of_turn_id(tok) == im_end
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=None))
    adapter = SimpleNamespace(model=model, tokenizer=tok)
    assert stop_ids(adapter) == [tok.eos_id, im_end]  # type: ignore[arg-type]


def eos_appending(template: str | None = None) -> HFTokenizer:
    """`bpe`'s tokenizer saved with add_eos_token: it ends every text with EOS itself."""
    from tokenizers import processors

    tok = bpe(template, eos="<|endoftext|>")
    eos = ("<|endoftext|>", tok.hf.convert_tokens_to_ids("<|endoftext|>"))
    tok.hf.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="$A <|endoftext|>", special_tokens=[eos]
    )
    assert tok.encode(["Paris"])[0][-1] == tok.eos_id  # the tokenizer appends EOS
    return tok


def test_a_tokenizer_that_appends_eos_gets_one_eos_after_each_document() -> None:
    tok = eos_appending()
    docs = TextDataset(("Paris is it.", "Capital of France?"), None, ())
    ids, _, _ = encode_lm(tok, docs, 1, packing=True)  # blocks of 1: no token dropped
    stream = ids.flatten().tolist()
    assert stream.count(tok.eos_id) == 2 and [tok.eos_id] * 2 not in [
        stream[i : i + 2] for i in range(len(stream))
    ]
    _, _, one = encode_lm(tok, TextDataset(("Paris is it.",), None, ()), 16, packing=False)
    assert [int(i) for i in one[0] if i != IGNORE].count(tok.eos_id) == 1  # trained once


def test_a_prompt_never_ends_with_the_eos_a_tokenizer_appends() -> None:
    tok = eos_appending()
    assert prompt_ids(tok, "Capital of France?", chat_template=False)[-1] != tok.eos_id
    assert encode_prompt(tok, "Capital of France?")[-1] != tok.eos_id  # plain "text\n"


def test_turns_already_rendered_with_the_template_are_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tok = bpe(CHATML)
    rendered = "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n"
    chats = [(("user", rendered), ("assistant", "Paris.")), CHAT_PLAIN]
    with caplog.at_level(logging.WARNING, logger="declora"):
        encode_lm(tok, TextDataset(("", ""), None, (), tuple(chats)), 64, packing=False)
    said = [r.getMessage() for r in caplog.records if "special token" in r.getMessage()]
    assert len(said) == 1 and "1 of 2 conversations" in said[0] and "'<|im_start|>'" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="declora"):
        encode_lm(tok, TextDataset(("",), None, (), (CHAT_PLAIN,)), 64, packing=False)
    assert not [r for r in caplog.records if "special token" in r.getMessage()]


def test_a_prompt_a_template_refuses_without_a_system_turn_says_to_add_one() -> None:
    with pytest.raises(DataError) as info:
        encode_prompt(bpe(SYSTEM_FIRST), "Capital of France?")
    assert "a system turn must come first" in info.value.message
    assert "need a system turn first: add one" in (info.value.hint or "")


def test_a_prompt_already_rendered_is_named_by_generate(caplog: pytest.LogCaptureFixture) -> None:
    from declora.cli.generate import _warn_rendered

    tok = bpe(CHATML)
    rendered = "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n"
    with caplog.at_level(logging.WARNING, logger="declora"):
        _warn_rendered(tok, ["Capital of Italy?", rendered])
        _warn_rendered(tok, ["Capital of Italy?", [{"role": "user", "content": "Hi"}]])
    (said,) = [r.getMessage() for r in caplog.records]
    assert "'<|im_start|>' (first: prompt 2)" in said and "--no-chat-template" in said
