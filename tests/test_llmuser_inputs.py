"""A user's own files as `generate` and the readers take them: ShareGPT turns
({from, value}, in a `messages` or `conversations` field or column) are prompts as
training reads them, and UTF-8 text holding a stray NUL byte is read, not called UTF-16
(UTF-16 text, half NULs, still is)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from declora.cli.generate import read_prompts
from declora.node.data_files import DataError, read_splits, utf8_text

SHAREGPT = [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Capital?"}]
AS_TRAINED = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital?"}]


@pytest.mark.parametrize("key", ["messages", "conversations"])
def test_generate_reads_sharegpt_turns_from_json_lines(tmp_path: Path, key: str) -> None:
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps({key: SHAREGPT}) + "\n" + json.dumps({"prompt": "Hi"}) + "\n")
    assert read_prompts(None, str(path), io.StringIO()) == [AS_TRAINED, "Hi"]


def test_generate_reads_a_saved_sharegpt_conversations_column(tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "saved"
    datasets.Dataset.from_list([{"conversations": SHAREGPT}]).save_to_disk(str(folder))
    assert read_prompts(None, str(folder), io.StringIO()) == [AS_TRAINED]


def test_a_sharegpt_reply_last_is_refused_as_an_assistant_turn(tmp_path: Path) -> None:
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps({"conversations": [*SHAREGPT, {"from": "gpt", "value": "P"}]}))
    with pytest.raises(DataError, match="ends with an assistant turn"):
        read_prompts(None, str(path), io.StringIO())


def test_utf8_text_with_a_nul_byte_is_read(tmp_path: Path) -> None:
    assert utf8_text("t", "héllo\x00 world\n".encode()) == "héllo\x00 world\n"
    path = tmp_path / "news.csv"
    path.write_bytes(b"text,label\nhello\x00 world,a\nbye,b\n")
    ((_, ds),) = read_splits(path)
    assert ds["text"] == ["hello\x00 world", "bye"]


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_text_without_a_bom_is_still_named(codec: str) -> None:
    with pytest.raises(DataError, match=r"looks like UTF-16"):
        utf8_text("t", "text,label\nhello world,a\n".encode(codec))


def test_training_reads_sharegpt_rows_beside_role_rows(tmp_path: Path) -> None:
    """A file mixing {role, content} and {from, value} conversations: Arrow gives every
    turn both keys, so a ShareGPT turn's role is None, not absent."""
    from declora.node.data import load_dataset
    from declora.node.lm_data import LmFormat

    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(4)
    ] + [{"messages": [{"from": "human", "value": "q9"}, {"from": "gpt", "value": "b"}]}]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train, test = load_dataset(path, label_column=None, examples=LmFormat(), dedupe=False)
    chats = [*(train.chats or ()), *(test.chats or ())]
    assert (("user", "q9"), ("assistant", "b")) in chats


def test_turns_stored_as_json_text_say_to_decode_them(tmp_path: Path) -> None:
    """A parquet or JSON export whose messages column holds json.dumps(turns)."""
    from declora.node.data import load_dataset
    from declora.node.lm_data import LmFormat

    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps({"messages": json.dumps(turns)}) + "\n")
    with pytest.raises(DataError) as info:
        load_dataset(path, label_column=None, examples=LmFormat(), dedupe=False)
    assert "row 1: 'messages' is a str" in info.value.message
    assert "written as JSON text" in (info.value.hint or "")
