"""The special-token warnings say what a special token's text in a turn or a prompt
does (the tokenizer reads it as that token: a text that only names <|im_start|> trains
the control token), and generate's names the prompt by its number among all prompts,
conversations included."""

from __future__ import annotations

import logging

import pytest
from test_lm_chat_boundary import CHATML, bpe

from declora.cli.generate import _warn_rendered
from declora.node.data import TextDataset
from declora.node.lm_data import encode_lm

NAMED = "What does <|im_start|> mean in ChatML?"


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "special token" in r.getMessage()]


def test_a_turn_that_names_a_special_token_is_told_it_trains_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tok = bpe(CHATML)
    im_start = tok.hf.convert_tokens_to_ids("<|im_start|>")
    assert im_start in tok.encode([NAMED], add_special_tokens=False)[0]  # read as the token
    chat = (("user", NAMED), ("assistant", "It opens a turn."))
    with caplog.at_level(logging.WARNING, logger="declora"):
        encode_lm(tok, TextDataset(("",), None, (), (chat,)), 64, packing=False)
    (said,) = warnings(caplog)
    assert "read as that token, not as its characters" in said
    assert "a text that only names the token trains the token itself" in said


def test_generate_numbers_the_prompt_among_all_prompts(caplog: pytest.LogCaptureFixture) -> None:
    tok = bpe(CHATML)
    with caplog.at_level(logging.WARNING, logger="declora"):
        _warn_rendered(tok, [[{"role": "user", "content": "Hi"}], "Hello", NAMED])
    (said,) = warnings(caplog)
    assert "(first: prompt 3)" in said and "read as that token" in said
