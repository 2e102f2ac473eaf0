"""`generate --input` with a user's chat file: a conversation that ends with the
assistant's turn (a training file's reference reply) is refused naming its line,
instead of a reply generated silently as a second assistant turn; roles are read as
training reads them (`User`, Gemma's `model`); a malformed turn says what to write."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from declora.cli.generate import read_prompts
from declora.node.data_files import DataError


def jsonl(path: Path, *rows: object) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_a_conversation_ending_with_the_reply_is_refused(tmp_path: Path) -> None:
    ask = {"messages": [{"role": "user", "content": "Capital of France?"}]}
    answered = {"messages": [*ask["messages"], {"role": "assistant", "content": "Paris."}]}
    source = jsonl(tmp_path / "chats.jsonl", ask, answered)
    with pytest.raises(DataError) as info:
        read_prompts(None, source, io.StringIO())
    assert info.value.message.startswith(f"{source}:2: the conversation ends with an assistant")
    assert "drop a final assistant turn" in (info.value.hint or "")


def test_roles_are_read_as_training_reads_them(tmp_path: Path) -> None:
    turns = [
        {"role": "User", "content": "hi"},
        {"role": "model", "content": "hello"},
        {"role": " USER ", "content": "again"},
    ]
    source = jsonl(tmp_path / "c.jsonl", {"messages": turns})
    (prompt,) = read_prompts(None, source, io.StringIO())
    assert [t["role"] for t in prompt] == ["user", "assistant", "user"]  # type: ignore[index]


def test_a_tool_call_turn_says_what_to_write(tmp_path: Path) -> None:
    turns = [{"role": "user", "content": "w?"}, {"role": "assistant", "content": None}]
    source = jsonl(tmp_path / "c.jsonl", {"messages": turns})
    with pytest.raises(DataError) as info:
        read_prompts(None, source, io.StringIO())
    assert "turn 2 is not a {role, content} object of strings" in info.value.message
    assert "tool-call turn" in (info.value.hint or "")
