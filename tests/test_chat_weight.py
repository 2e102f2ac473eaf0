"""Chat turns in OpenAI's fine-tuning format (node/lm_data.py): an assistant reply of
`weight` 0 is context, never trained; a bad weight is a `DataError` naming the row;
keys that are not read are named in one warning."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from declora.node.data import TextDataset, load_dataset
from declora.node.data_files import DataError
from declora.node.lm_data import IGNORE, LmFormat, encode_lm
from declora.node.models import ByteTokenizer

LM_LOG = "declora.node.lm_data"


class Plain(ByteTokenizer):
    has_chat_template = False


def _read(path: Path, rows: list[dict[str, Any]]) -> TextDataset:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    train, test = load_dataset(path, label_column=None, examples=LmFormat(), dedupe=False)
    assert train.chats is not None and test.chats is not None
    return TextDataset(train.texts + test.texts, None, (), train.chats + test.chats)


def _row(n: int, first: dict[str, Any], second: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": f"question {n}", "name": "bob"},
            {"role": "assistant", "content": f"SKIP{n}", **first},
            {"role": "user", "content": "and then?"},
            {"role": "assistant", "content": f"KEEP{n}", **(second or {})},
        ]
    }


@pytest.mark.parametrize("tok", [ByteTokenizer(), Plain()], ids=["template", "plain"])
def test_a_reply_of_weight_0_carries_no_label(
    tok: ByteTokenizer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [_row(n, {"weight": 0}, {"weight": 1} if n % 2 else {}) for n in range(10)]
    with caplog.at_level(logging.WARNING, logger=LM_LOG):
        data = _read(tmp_path / "openai.jsonl", rows)
    ids, _, labels = encode_lm(tok, data, 128, packing=False)
    for n, (row, lab) in enumerate(zip(ids.tolist(), labels.tolist(), strict=True)):
        shown = tok.decode(row)
        trained = tok.decode([i for i, v in zip(row, lab, strict=True) if v != IGNORE])
        assert "SKIP" in shown and "KEEP" in trained, (n, shown, trained)
        assert "SKIP" not in trained and "question" not in trained, (n, trained)
    unread = [r.getMessage() for r in caplog.records if "not read" in r.getMessage()]
    assert len(unread) == 1 and "keys ['name'] are not read" in unread[0], unread


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        ({"weight": 0.5}, {}, "row 3: turn 2 (assistant) has weight 0.5"),
        ({"weight": "0"}, {}, "row 3: turn 2 (assistant) has weight '0'"),
        ({"weight": True}, {}, "row 3: turn 2 (assistant) has weight True"),
        ({"weight": 0}, {"weight": 0}, "row 3: every assistant turn has weight 0"),
    ],
)
def test_a_bad_weight_is_an_error_naming_the_row(
    first: dict[str, Any], second: dict[str, Any], message: str, tmp_path: Path
) -> None:
    rows = [_row(n, {}) for n in range(6)]
    rows[2] = _row(2, first, second)
    with pytest.raises(DataError) as info:
        _read(tmp_path / "bad.jsonl", rows)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_a_weight_on_a_user_turn_is_an_error(tmp_path: Path) -> None:
    rows = [_row(n, {}) for n in range(6)]
    rows[4]["messages"][2]["weight"] = 1
    with pytest.raises(DataError, match=r"row 5: turn 3 \(user\) has a weight, but only"):
        _read(tmp_path / "user.jsonl", rows)
