"""A chat file whose turns use a role other than system, user, assistant or tool
(`bot`, a misspelt `asistant`) says so in one warning naming the roles and their
first rows: those turns are context, never trained (this was silent), while the
OpenAI roles, tool turns included, give no such warning."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from declora.node.data import load_dataset
from declora.node.data_files import DataError
from declora.node.lm_data import LmFormat

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
