"""A tokenizer saved with add_eos_token and no chat template: a conversation, rendered
as plain text whose replies close with EOS, ends with that one EOS, not a second the
tokenizer appends (with or without character offsets; without them the appended EOS
broke the prefix count and the conversation was refused)."""

from __future__ import annotations

import pytest
from test_llmuser_chat import eos_appending

from declora.node.data import TextDataset
from declora.node.lm_data import IGNORE, encode_lm
from declora.node.models import HFTokenizer, Offsets

CHAT = (("user", "Capital of France?"), ("assistant", "Paris."))


class NoOffsets(HFTokenizer):
    """A tokenizer that gives no character offsets (as a slow one)."""

    def offsets(self, texts: list[str], add_special_tokens: bool = True) -> Offsets | None:
        return None


@pytest.mark.parametrize("offsets", [True, False])
def test_a_plain_rendered_conversation_ends_with_one_eos(offsets: bool) -> None:
    tok = eos_appending()
    if not offsets:
        tok = NoOffsets(tok.hf)
    assert not tok.has_chat_template
    data = TextDataset(("x",), None, (), chats=(CHAT,))
    ids, mask, labels = encode_lm(tok, data, 32, packing=False)
    row = ids[0][: int(mask[0].sum())].tolist()
    assert row.count(tok.eos_id) == 1 and row[-1] == tok.eos_id
    trained = [int(i) for i in labels[0] if i != IGNORE]
    assert trained[-1] == tok.eos_id and tok.decode(trained) == "Paris."
