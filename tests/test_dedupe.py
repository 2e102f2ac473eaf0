"""Tests for declora.node.dedupe: exact and near-duplicate texts dropped before a split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from declora.node.data import TextDataset, load_bbcnews, load_dataset
from declora.node.dedupe import dedupe, dedupe_split, duplicate_rows, normalize

VOCAB = [f"w{i}" for i in range(400)]


def words(n: int, seed: int) -> list[str]:
    return [str(w) for w in np.random.default_rng(seed).choice(VOCAB, size=n)]


def jaccard(a: str, b: str, k: int = 5) -> float:
    """Exact Jaccard of word k-gram sets, computed independently of the module."""

    def grams(text: str) -> set[tuple[str, ...]]:
        w = normalize(text).split()
        return {tuple(w)} if len(w) < k else {tuple(w[i : i + k]) for i in range(len(w) - k + 1)}

    x, y = grams(a), grams(b)
    return len(x & y) / len(x | y)


def brute_force(texts: list[str], threshold: float) -> list[int]:
    """The module's contract by all pairs: drop a row like an earlier kept one."""
    kept: list[int] = []
    drop = []
    for i, text in enumerate(texts):
        if any(jaccard(texts[j], text) >= threshold for j in kept):
            drop.append(i)
        else:
            kept.append(i)
    return drop


def test_normalize_casefolds_drops_punctuation_collapses_whitespace() -> None:
    assert normalize("  Hello,\tWORLD!!  it's\n\n_fine_ ") == "hello world its fine"


def test_exact_duplicates_up_to_case_punctuation_and_space_keep_the_first() -> None:
    texts = ["Stocks rose sharply today.", "other", "stocks  ROSE sharply, today", "STOCKS rose!"]
    assert duplicate_rows(texts).tolist() == [2]
    assert duplicate_rows(["a b", "A. B!", "a  b"]).tolist() == [1, 2]
    assert duplicate_rows(texts).dtype == np.int64


def test_one_word_changed_in_a_long_text_is_a_near_duplicate() -> None:
    base = words(100, seed=1)
    edited = list(base)
    edited[50] = "changed"
    assert 0.8 <= jaccard(" ".join(base), " ".join(edited)) < 1.0
    texts = [" ".join(words(100, seed=2)), " ".join(base), " ".join(edited)]
    assert duplicate_rows(texts).tolist() == [2]
    # the first occurrence is the one kept, whichever it is
    assert duplicate_rows([texts[2], texts[1], texts[0]]).tolist() == [1]


def test_unrelated_texts_and_short_texts_are_kept() -> None:
    texts = [" ".join(words(100, seed=s)) for s in (3, 4)] + ["a b c", "a b d", "a"]
    assert duplicate_rows(texts).tolist() == []


def test_the_threshold_is_respected() -> None:
    base = words(100, seed=5)
    half = base[:64] + words(36, seed=6)  # about half the 5-grams shared
    similarity = jaccard(" ".join(base), " ".join(half))
    assert 0.45 <= similarity <= 0.55, similarity
    texts = [" ".join(base), " ".join(half)]
    assert duplicate_rows(texts).tolist() == []
    assert duplicate_rows(texts, threshold=similarity).tolist() == [1]
    assert duplicate_rows(texts, threshold=similarity + 1e-9).tolist() == []
    with pytest.raises(ValueError, match="threshold"):
        duplicate_rows(texts, threshold=0.0)


def edited_corpus(n: int = 80, seed: int = 7) -> list[str]:
    """Texts derived from a few bases by random word edits: similarities of all sizes."""
    rng = np.random.default_rng(seed)
    bases = [words(int(rng.integers(20, 60)), seed=100 + b) for b in range(6)]
    texts = []
    for _ in range(n):
        w = list(bases[int(rng.integers(len(bases)))])
        for _ in range(int(rng.integers(0, 6))):
            w[int(rng.integers(len(w)))] = str(rng.choice(VOCAB))
        texts.append(" ".join(w))
    return texts


@pytest.mark.parametrize("threshold", [0.8, 0.5])
def test_agrees_with_all_pairs_and_is_deterministic(threshold: float) -> None:
    texts = edited_corpus()
    got = duplicate_rows(texts, threshold=threshold)
    assert got.tolist() == brute_force(texts, threshold)
    assert 0 < len(got) < len(texts) - 6  # near-duplicates found, not everything dropped
    assert np.array_equal(got, duplicate_rows(texts, threshold=threshold))


def test_the_same_rows_in_another_process_with_another_hash_seed() -> None:
    texts = edited_corpus()
    code = (
        "import json, sys; from declora.node.dedupe import duplicate_rows; "
        "print(json.dumps(duplicate_rows(json.load(sys.stdin)).tolist()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(texts), capture_output=True, text=True,
        env=env, check=True, timeout=120,
    )  # fmt: skip
    assert json.loads(out.stdout) == duplicate_rows(texts).tolist()


def test_dedupe_keeps_order_labels_and_chats() -> None:
    chats = tuple(((("user", t),),) for t in ("x", "y", "z"))
    data = TextDataset(
        ("Same text here", "other", "same text here!"), np.array([0, 1, 2]), ("a", "b", "c"),
        tuple(c[0] for c in chats),
    )  # fmt: skip
    kept, dropped = dedupe(data)
    assert dropped == 1 and kept.texts == ("Same text here", "other")
    assert kept.labels is not None and kept.labels.tolist() == [0, 1]
    assert kept.chats == (chats[0][0], chats[1][0]) and kept.label_names == ("a", "b", "c")


def test_dedupe_split_drops_test_copies_of_train_rows() -> None:
    long = " ".join(words(100, seed=8))
    train = TextDataset(("alpha beta", long, "Alpha, beta."), None, ())
    test = TextDataset(("ALPHA BETA", long + " extra", "new one", "New one"), None, ())
    train2, test2, dropped = dedupe_split(train, test)
    assert train2.texts == ("alpha beta", long)
    assert test2.texts == ("new one",)
    assert dropped == 4


# --------------------------------------------------------------------------- BBC News


@pytest.fixture(scope="module")
def bbc() -> TextDataset:
    return load_bbcnews()


def test_bbc_news_duplicates(bbc: TextDataset) -> None:
    drop = duplicate_rows(bbc.texts)
    seen: set[str] = set()
    exact = 0
    for text in bbc.texts:
        exact += normalize(text) in seen
        seen.add(normalize(text))
    print(f"\nBBC News: {len(drop)} duplicates dropped ({exact} exact, {len(drop) - exact} near)")
    assert 90 <= exact <= len(drop) < 200


def test_bbcnews_split_has_no_test_copy_of_a_train_text() -> None:
    train, test = load_dataset("bbcnews")
    unique = len(load_bbcnews()) - len(duplicate_rows(load_bbcnews().texts))
    assert len(train) + len(test) == unique
    train_norm = {normalize(t) for t in train.texts}
    assert not any(normalize(t) in train_norm for t in test.texts)
    assert len(duplicate_rows(train.texts + test.texts)) == 0  # no near copies either
    raw_train, raw_test = load_dataset("bbcnews", dedupe=False)
    assert len(raw_train) + len(raw_test) == 2225


def test_saved_dataset_dict_test_row_copying_train_is_dropped(tmp_path: Path) -> None:
    import datasets

    train_rows = [{"text": f"train story number {i} about {w}", "label": "ab"[i % 2]}
                  for i, w in enumerate(["cats", "dogs", "birds", "fish"])]  # fmt: skip
    test_rows = [
        {"text": "Train story number 2, about BIRDS!", "label": "a"},
        {"text": "a held out story", "label": "b"},
    ]
    splits = {"train": train_rows, "test": test_rows}
    saved = datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})
    saved.save_to_disk(str(tmp_path / "dd"))
    train, test = load_dataset(str(tmp_path / "dd"))
    assert len(train) == 4 and test.texts == ("a held out story",)
    assert test.labels is not None and test.labels.tolist() == [1]
    _, raw_test = load_dataset(str(tmp_path / "dd"), dedupe=False)
    assert len(raw_test) == 2


def test_a_data_file_is_deduped_before_its_split(tmp_path: Path) -> None:
    rows = [{"text": f"text {i % 20}", "label": "ab"[i % 2]} for i in range(50)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    train, test = load_dataset(str(path))
    assert sorted(train.texts + test.texts) == sorted(f"text {i}" for i in range(20))
    assert (len(train), len(test)) == (16, 4)
    train, test = load_dataset(str(path), dedupe=False)
    assert len(train) + len(test) == 50


def test_a_huge_bucket_is_compared_in_linear_work() -> None:
    """Many rows with one MinHash signature meet the first and their predecessor only:
    candidates grow linearly, and copies are still found."""
    from declora.node.dedupe import MAX_BUCKET, NUM_PERM, _candidates

    n = 4 * MAX_BUCKET
    signatures = np.zeros((n, NUM_PERM), dtype=np.uint64)
    pairs = _candidates(signatures, 4)
    assert len(pairs) <= 2 * n
    assert set(map(tuple, pairs[:3].tolist())) <= {(0, 1), (0, 2), (1, 2)}
    texts = ["the same long report about the quarterly numbers of the firm"] * n
    assert len(duplicate_rows(texts)) == n - 1
