"""`Tokenizer.offsets` (node/models.py): chat labels read character offsets through the
protocol, not through the transformers tokenizer an HFTokenizer wraps."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from test_lm_chat_boundary import CHAT, VICUNA, bpe

from declora.node.data import TextDataset
from declora.node.lm_data import IGNORE, encode_lm
from declora.node.models import ByteTokenizer, HFTokenizer

if TYPE_CHECKING:
    from declora.node.models import Offsets


class Wrapped:
    """A Tokenizer that is not an HFTokenizer (no `hf`): the protocol's methods only."""

    def __init__(self, tok: HFTokenizer) -> None:
        self.pad_id, self.eos_id, self.eos_token = tok.pad_id, tok.eos_id, tok.eos_token
        self.has_chat_template = tok.has_chat_template
        self.encode, self.apply_chat_template = tok.encode, tok.apply_chat_template
        self.decode, self.calls = tok.decode, 0
        self._offsets = tok.offsets

    def __call__(self, texts: list[str], max_length: int) -> object:
        raise AssertionError("encode_lm pads itself")

    def offsets(self, texts: list[str], add_special_tokens: bool = True) -> Offsets | None:
        self.calls += 1
        return self._offsets(texts, add_special_tokens)


def test_hf_offsets_are_each_tokens_characters() -> None:
    tok = bpe(VICUNA)
    text = "ASSISTANT: Paris"
    [(ids, spans)] = tok.offsets([text], add_special_tokens=False) or []
    assert ids == tok.encode([text], False)[0]
    assert "".join(text[s:e] for s, e in spans) == text
    assert tok.offsets([]) == []


def test_the_byte_tokenizer_and_a_slow_one_give_none(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ByteTokenizer().offsets(["abc"]) is None
    slow = bpe(VICUNA)
    monkeypatch.setattr(type(slow.hf), "is_fast", False)  # as a slow (Python) one says
    assert slow.offsets(["abc"]) is None


def test_chat_labels_use_the_protocols_offsets() -> None:
    """The reply's " Paris" shares a token with the template's "ASSISTANT: ": offsets
    train it; without them (the token counts) the chat is refused. A Tokenizer with no
    `hf` gives its offsets through the protocol."""
    tok = Wrapped(bpe(VICUNA))
    data = TextDataset(("",), None, (), (CHAT,))
    _, _, labels = encode_lm(tok, data, 64, packing=False)  # type: ignore[arg-type]
    assert tok.calls == 1
    trained = [tok.decode([int(i)]) for i in labels[0] if i != IGNORE]
    assert "".join(trained) == " Paris is it."
