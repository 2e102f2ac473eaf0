"""Causal-LM data checks (node/lm_data.py, node/dedupe.py, node/data.py, the trainers):
nothing is truncated silently, chats sharing a system prompt are not duplicates, too
little data is a `DataError` with counts, a tokenizer without a chat template is
named, and the error messages name what they found.

Encoding runs on the pure-Python `ByteTokenizer` (one id per byte, EOS "</s>" = 2);
only the trainer tests build the tiny-llama model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from declora.node.data import Chat, TextDataset, load_dataset
from declora.node.data_files import DataError
from declora.node.deca_model import BlockModel, BlockTrainer
from declora.node.dedupe import dedupe, dedupe_split
from declora.node.lm_data import IGNORE, LmFormat, encode_lm
from declora.node.models import ByteTokenizer
from declora.node.trainer import Encoded, LocalTrainer, LoraModel, LoraSpec, training_rows

LM_LOG = "declora.node.lm_data"


class Plain(ByteTokenizer):
    has_chat_template = False


def chats(*pairs: tuple[str, str], system: str = "") -> TextDataset:
    rows: list[Chat] = []
    for user, reply in pairs:
        turns = (("user", user), ("assistant", reply))
        rows.append((("system", system), *turns) if system else turns)
    texts = tuple("\n".join(f"{r}: {c}" for r, c in chat) for chat in rows)
    return TextDataset(texts, None, (), tuple(rows))


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read(path: Path, **fmt: Any) -> tuple[TextDataset, TextDataset]:
    return load_dataset(path, label_column=None, examples=LmFormat(**fmt), dedupe=False)


# --------------------------------------------------------------------------- 1. truncation


def test_truncated_chats_are_counted_in_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    data = chats(("hi", "short"), ("q", "x" * 100), ("q2", "y" * 100))
    with caplog.at_level(logging.WARNING, logger=LM_LOG):
        _, _, labels = encode_lm(ByteTokenizer(), data, 48, packing=False)
    (message,) = warnings_of(caplog)
    assert "2 of 3 conversations are longer than --max-length 48" in message
    assert "2 lose the end of a reply" in message and "raise --max-length" in message
    # row 0 fits: its reply's EOS is trained; rows 1, 2 are cut before their EOS
    assert ByteTokenizer.eos_id in labels[0].tolist()
    assert ByteTokenizer.eos_id not in labels[1].tolist()
    assert "%" in message and "of the trained (assistant) tokens are dropped" in message


def test_a_chat_whose_reply_is_cut_away_is_skipped_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = chats(("q", "a"), ("p" * 80, "reply"))
    with caplog.at_level(logging.WARNING, logger=LM_LOG):
        ids, mask, labels = encode_lm(ByteTokenizer(), data, 32, packing=False)
    (message,) = warnings_of(caplog)
    assert "no trained token is left in 1 of them, which training skips" in message
    assert len(ids) == 2 and set(labels[1].tolist()) == {IGNORE}  # rows stay aligned
    kept = training_rows(Encoded(ids, mask, labels), "lm")  # the trainer skips it
    assert len(kept) == 1 and torch.equal(kept.input_ids[0], ids[0])


def test_no_reply_within_max_length_is_a_data_error() -> None:
    with pytest.raises(DataError, match="no conversation has a trained") as info:
        encode_lm(ByteTokenizer(), chats(("p" * 80, "r"), ("s" * 90, "t")), 32, packing=False)
    assert info.value.hint == "raise --max-length or shorten the conversations"


def test_unpacked_text_truncation_warns_with_the_share_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = TextDataset(("a" * 300, "short"), None, ())
    with caplog.at_level(logging.WARNING, logger=LM_LOG):
        encode_lm(ByteTokenizer(), data, 64, packing=False)
    (message,) = warnings_of(caplog)
    total = (1 + 300 + 1) + (1 + 5 + 1)
    assert "1 of 2 texts are longer than --max-length 64" in message
    assert f"{100 * (302 - 64) / total:.1f}% of the tokens are dropped" in message


def test_packing_warns_when_the_dropped_final_block_is_large(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger=LM_LOG):
        ids, _, _ = encode_lm(ByteTokenizer(), TextDataset(("a" * 98,), None, ()), 64, packing=True)
    assert ids.shape == (1, 64)
    (message,) = warnings_of(caplog)  # 100 tokens, 36 of them not used
    assert "drops the final partial block: 36 of 100 tokens (36.0%)" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LM_LOG):  # 1 token of 1025: no warning
        encode_lm(ByteTokenizer(), TextDataset(("a" * 1023,), None, ()), 64, packing=True)
    assert warnings_of(caplog) == []


def test_a_packed_test_split_too_small_is_named_as_the_test_split(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "t.jsonl", [{"text": f"document number {i}"} for i in range(10)])
    train, test = read(path)
    assert (train.name, test.name) == ("train", "test")
    with pytest.raises(DataError, match="the held-out test split: 2 text") as info:
        encode_lm(ByteTokenizer(), test, 64, packing=True)
    assert "test split" in info.value.hint
    with pytest.raises(DataError, match="training data:") as info:
        encode_lm(ByteTokenizer(), train.subset(torch.arange(1).numpy()), 64, packing=True)
    assert "give this node more text" in info.value.hint


# --------------------------------------------------------------------------- 2. dedupe

SYSTEM = " ".join(f"rule{i} applies to every answer you give" for i in range(18))  # ~127 words


def test_chats_sharing_a_long_system_prompt_are_not_duplicates(tmp_path: Path) -> None:
    pairs = [(f"What is the capital of country {i}?", f"It is city {i}.") for i in range(12)]
    data = chats(*pairs, system=SYSTEM)
    kept, dropped = dedupe(data)
    assert (len(kept), dropped) == (12, 0)
    # exact copies are still dropped, also across a train/test pair
    twice = chats(*pairs, *pairs[:3], system=SYSTEM)
    assert dedupe(twice)[1] == 3
    assert dedupe_split(data, chats(pairs[0], system="other"))[2] == 1
    # end to end from a file: 12 rows in, none dropped
    rows = [
        {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": u},
                      {"role": "assistant", "content": a}]}
        for u, a in pairs
    ]  # fmt: skip
    path = write_rows(tmp_path / "sys.jsonl", rows)
    train, test = load_dataset(path, label_column=None, examples=LmFormat())
    assert len(train) + len(test) == 12


# --------------------------------------------------------------------------- 3. too little data


def test_no_training_row_left_is_a_data_error_with_counts(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "one.jsonl", [CHAT_ROW])
    with pytest.raises(DataError) as info:
        load_dataset(path, label_column=None, examples=LmFormat())
    assert "1 row(s) read, 0 dropped as exact or near duplicates, 1 held out as the test" in str(
        info.value
    )
    path = write_rows(tmp_path / "copies.jsonl", [CHAT_ROW] * 3)
    with pytest.raises(DataError, match="3 row\\(s\\) read, 2 dropped") as info:
        load_dataset(path, label_column=None, examples=LmFormat())
    assert "--no-dedupe" in info.value.hint


@pytest.fixture(scope="module")
def llama() -> LoraModel:
    return LoraModel(LoraSpec(model="tiny-llama", task="lm", rank=2, alpha=4, max_length=32))


def test_a_trainer_without_examples_is_a_data_error(llama: LoraModel) -> None:
    empty = Encoded(*(torch.zeros((0, 32), dtype=torch.long) for _ in range(3)))
    with pytest.raises(DataError, match="this node has no training example") as info:
        LocalTrainer(llama, empty, 1e-3, 2, 0)
    assert "deduplication" in info.value.hint and "--validation-fraction" in info.value.hint
    no_targets = Encoded(
        torch.ones((2, 32), dtype=torch.long),
        torch.ones((2, 32), dtype=torch.long),
        torch.full((2, 32), IGNORE, dtype=torch.long),
    )
    with pytest.raises(DataError, match="none of its 2 example"):
        LocalTrainer(llama, no_targets, 1e-3, 2, 0)


def test_a_deca_trainer_without_examples_is_a_data_error() -> None:
    spec = LoraSpec(model="tiny-llama", task="lm", max_length=32, method="deca")
    empty = Encoded(*(torch.zeros((0, 32), dtype=torch.long) for _ in range(3)))
    with pytest.raises(DataError, match="this node has no training example"):
        BlockTrainer(BlockModel(spec), empty, 1e-3, 2, 0)


# --------------------------------------------------------------------------- 4. no template


def test_a_tokenizer_without_a_chat_template_is_named_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = chats(("Capital of Italy?", "Rome."), ("Capital of Peru?", "Lima."), system="Be brief.")
    with caplog.at_level(logging.WARNING, logger=LM_LOG):
        encode_lm(Plain(), data, 128, packing=False)
    (message,) = warnings_of(caplog)
    assert "no chat template" in message and "no role marks" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LM_LOG):
        encode_lm(ByteTokenizer(), data, 128, packing=False)
    assert warnings_of(caplog) == []


# --------------------------------------------------------------------------- 5. messages

CHAT_ROW = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


def test_model_and_capitalised_roles_are_read(tmp_path: Path) -> None:
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "model", "content": "a"}]}
        for i in range(5)
    ] + [
        {"messages": [{"role": "User", "content": f"r{i}"}, {"role": "Assistant", "content": "b"}]}
        for i in range(5)
    ]
    train, test = read(write_rows(tmp_path / "roles.jsonl", rows))
    everything = (train.chats or ()) + (test.chats or ())
    assert len(everything) == 10
    assert {tuple(role for role, _ in chat) for chat in everything} == {("user", "assistant")}


def test_no_assistant_turn_names_the_roles_found(tmp_path: Path) -> None:
    bad = {"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}
    with pytest.raises(DataError) as info:
        read(write_rows(tmp_path / "bot.jsonl", [CHAT_ROW, bad]))
    assert "row 2 has no assistant turn (nothing to train on); its roles are ['user', 'bot']" in (
        info.value.message
    )
    assert "'model'" in info.value.hint


@pytest.mark.parametrize(
    ("encoding", "name"),
    [("utf-16", "UTF-16"), ("utf-16-le", "UTF-16"), ("utf-32", "UTF-32")],
)
def test_a_utf16_or_utf32_file_is_named(tmp_path: Path, encoding: str, name: str) -> None:
    path = tmp_path / "wide.jsonl"
    path.write_bytes((json.dumps(CHAT_ROW) + "\n").encode(encoding))
    with pytest.raises(DataError) as info:
        read(path)
    assert info.value.message == f"{path}: not UTF-8 (looks like {name})"
    assert info.value.hint.startswith("save it as UTF-8")


def test_an_explicit_text_column_wins_over_auto_detection(tmp_path: Path) -> None:
    rows = [{"prompt": f"document {i}", "completion": f"end {i}"} for i in range(10)]
    path = write_rows(tmp_path / "pc.jsonl", rows)
    train, _ = read(path, text_column="prompt")
    assert train.chats is None and all(t.startswith("document") for t in train.texts)
    with pytest.raises(DataError, match="no text column 'body'"):
        read(path, text_column="body")
    train, _ = read(path)  # the default still detects prompt-completion
    assert train.chats is not None


def test_hints_use_the_right_article(tmp_path: Path) -> None:
    rows = [{"instruction": "i", "output": "o"}, {"output": "o"}]
    with pytest.raises(DataError) as info:
        read(write_rows(tmp_path / "alpaca.jsonl", rows))
    assert info.value.hint == "every row needs an instruction in 'instruction'"
