"""A chat file whose turns use a role other than system, user, assistant or tool
(`bot`, a misspelt `asistant`) says so in one warning naming the roles and their
first rows: those turns are context, never trained (this was silent), while the
OpenAI roles, tool turns included, give no such warning."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from declora.node.data import TextDataset, load_dataset
from declora.node.data_files import DataError
from declora.node.lm_data import LmFormat, encode_lm
from declora.node.models import load_base

ROLES = "are not system, user, assistant or tool"


def chats_file(path: Path, odd: dict[int, str]) -> Path:
    rows = []
    for i in range(10):
        turns = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"question {i}?"},
            {"role": odd.get(i, "assistant"), "content": f"draft {i}"},
            {"role": "tool", "content": "42"},
            {"role": "assistant", "content": f"answer {i}"},
        ]
        rows.append(json.dumps({"messages": turns}))
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("odd", [{3: "bot", 5: "asistant", 7: "bot"}, {}])
def test_unknown_roles_are_named_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, odd: dict[int, str]
) -> None:
    path = chats_file(tmp_path / "chats.jsonl", odd)
    with caplog.at_level(logging.WARNING):
        load_dataset(path, label_column=None, examples=LmFormat(), dedupe=False)
    found = [r.getMessage() for r in caplog.records if ROLES in r.getMessage()]
    if not odd:
        assert found == []
        return
    assert len(found) == 1
    assert "['asistant', 'bot'] (first in rows [6, 4])" in found[0]


def test_sharegpt_names_under_role_are_not_promised(tmp_path: Path) -> None:
    """{"role": "gpt"} has no assistant turn: the hint does not claim 'gpt' is read."""
    row = {"messages": [{"role": "human", "content": "q"}, {"role": "gpt", "content": "a"}]}
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError) as info:
        load_dataset(path, label_column=None, examples=LmFormat(), dedupe=False)
    assert "roles are ['human', 'gpt']" in info.value.message
    assert "'gpt' in ShareGPT's {from, value} turns" in (info.value.hint or "")


def test_a_template_that_refuses_a_system_turn_names_the_conversation(tmp_path: Path) -> None:
    """A Gemma-like template raises on a system turn: the error names the split, the
    conversation's roles and its first user turn, and the hint says what to fold."""
    from test_model_checks import hf_folder, llama_config

    folder = hf_folder(tmp_path / "m", llama_config())
    refuse = (
        "{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
    )
    each = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(
        json.dumps({**config, "chat_template": refuse + each})
    )
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    tok = load_base(str(folder), "lm", 2, seed=0).tokenizer
    chats = (
        (("user", "w1"), ("assistant", "w2")),
        (("system", "Be brief."), ("user", "w3 w4"), ("assistant", "w5")),
    )
    data = TextDataset(("a", "b"), None, (), chats, "train")
    with pytest.raises(DataError) as info:
        encode_lm(tok, data, 32, packing=False)
    message = info.value.message
    assert message.startswith("training data: the chat template refuses the conversation")
    assert "roles ['system', 'user', 'assistant']" in message and "starts 'w3 w4'" in message
    assert "System role not supported" in message
    assert "fold the system text into the first user turn" in (info.value.hint or "")


def test_an_openai_tool_call_turn_is_named_as_one(tmp_path: Path) -> None:
    """OpenAI's assistant tool-call turn ("content": null, "tool_calls": [...]) is
    refused as a tool call, with what to remove; not as a missing content string."""
    call = [{"id": "1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]
    turns = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": call},
        {"role": "tool", "tool_call_id": "1", "content": "sunny"},
        {"role": "assistant", "content": "Sunny."},
    ]
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"messages": turns}) + "\n")
    with pytest.raises(DataError) as info:
        load_dataset(path, label_column=None, examples=LmFormat(), dedupe=False)
    assert "row 1: turn 2 (assistant) is a tool call" in info.value.message
    assert "remove the tool-call turn" in (info.value.hint or "")
