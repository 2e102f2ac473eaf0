"""A chat file's role is any string the file holds: the unknown-roles warning shows
each role cut to `lm_data.ROLE_CHARS` characters (a role of 10,000 characters made a
warning of 10,000)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from declora.node.data import load_dataset
from declora.node.lm_data import LmFormat


def test_a_huge_role_is_shown_cut(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    role = "x" * 10_000
    rows = [
        {"messages": [{"role": role, "content": f"hi {i}"}, {"role": "assistant", "content": "ok"}]}
        for i in range(10)
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.WARNING):
        load_dataset(path, label_column=None, examples=LmFormat(), dedupe=False)
    (warned,) = [r.getMessage() for r in caplog.records if "are not system" in r.getMessage()]
    assert f"['{'x' * 40}...'] (first in rows [1])" in warned
    assert len(warned) < 500
