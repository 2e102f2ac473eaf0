"""Chat templates as users' models ship them: one that requires a system turn first
still gives `generate` the end-of-turn token training closed replies with."""

from __future__ import annotations

from types import SimpleNamespace

from test_lm_chat_boundary import CHATML, bpe, trained

from declora.cli.generate import stop_ids
from declora.node.lm_data import end_of_turn_id

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
