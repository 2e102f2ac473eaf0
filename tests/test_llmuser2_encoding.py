"""A large causal-LM file is tokenized a chunk of rows at a time (a 10 MB chat JSONL,
tokenized all at once, took 580 MB of Python lists beside its tensors), and the
tensors are those of one pass over all rows."""

from __future__ import annotations

import pytest
import torch

from declora.node.data import TextDataset
from declora.node.lm_data import encoding
from declora.node.models import ByteTokenizer

ROWS = 2 * encoding.CHUNK + 3  # three chunks, the last one short


class Counting(ByteTokenizer):
    """The byte tokenizer, noting how many texts each call tokenizes."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def encode(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        self.calls.append(len(texts))
        return super().encode(texts, add_special_tokens)


def texts() -> TextDataset:
    return TextDataset(tuple(f"row {i} " * (1 + i % 5) for i in range(ROWS)), None, ())


def chats() -> TextDataset:
    convs = tuple((("user", f"question {i}"), ("assistant", f"answer {i}")) for i in range(ROWS))
    return TextDataset(tuple("" for _ in convs), None, (), convs, name="train")


CASES = [(texts, True), (texts, False), (chats, False)]


@pytest.mark.parametrize(
    ("data", "packing", "per_row"), [(*c, n) for c, n in zip(CASES, (1, 1, 3), strict=True)]
)
def test_rows_are_tokenized_a_chunk_at_a_time(data: type, packing: bool, per_row: int) -> None:
    """The old code tokenized every row in one call: ROWS texts, or each conversation's
    prefixes (`per_row` of them: before the reply, through it, the whole) of all rows."""
    tok = Counting()
    ids, _, _ = encoding.encode_lm(tok, data(), 64, packing=packing)
    assert ids.numel() > 0
    assert max(tok.calls) <= per_row * encoding.CHUNK


@pytest.mark.parametrize(("data", "packing"), CASES)
def test_chunks_give_the_tensors_of_one_pass(
    data: type, packing: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunked = encoding.encode_lm(ByteTokenizer(), data(), 64, packing=packing)
    monkeypatch.setattr(encoding, "CHUNK", 10 * ROWS)
    whole = encoding.encode_lm(ByteTokenizer(), data(), 64, packing=packing)
    for a, b in zip(chunked, whole, strict=True):
        assert a.dtype == b.dtype
        assert torch.equal(a, b)
