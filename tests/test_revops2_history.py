"""rounds.jsonl: a resume keeps a whole last record that lacks only its newline, and the
file is its owner's only (0600) like the rest of the state folder (revops2)."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from declora.node.daemon.persistence import mend_history
from declora.node.daemon.status import append_round


def test_a_whole_last_record_without_its_newline_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A power loss after a record's bytes but before its newline reached the disk: the
    record is whole; the old code cut it off (a round's history lost), now it is ended."""
    history = tmp_path / "rounds.jsonl"
    history.write_bytes(b'{"round": 1}\n{"round": 2, "loss": 0.5}')
    with caplog.at_level(logging.WARNING):
        mend_history(tmp_path)
    assert history.read_bytes() == b'{"round": 1}\n{"round": 2, "loss": 0.5}\n'
    assert "ended without its last newline: one was added" in caplog.text
    append_round(tmp_path, {"round": 3})
    rounds = [json.loads(line)["round"] for line in history.read_text().splitlines()]
    assert rounds == [1, 2, 3]


@pytest.mark.parametrize(
    "tail",
    [b'{"round": 2, "loss": 0.', b'{"round": 2}{"round": 3', b"\x00" * 12, b"[1, 2]", b"7"],
)
def test_a_torn_or_foreign_last_line_is_still_cut(tmp_path: Path, tail: bytes) -> None:
    history = tmp_path / "rounds.jsonl"
    history.write_bytes(b'{"round": 1}\n' + tail)
    mend_history(tmp_path)
    assert history.read_bytes() == b'{"round": 1}\n'


def test_the_history_is_the_owners_only(tmp_path: Path) -> None:
    """rounds.jsonl was created 0644 in a 0700 folder of 0600 files; now 0600, and a
    file an earlier version left 0644 is made 0600 at the next line."""
    old = os.umask(0o022)
    try:
        append_round(tmp_path / "a", {"round": 1})
        made = tmp_path / "a" / "rounds.jsonl"
        assert stat.S_IMODE(made.stat().st_mode) == 0o600
        earlier = tmp_path / "b" / "rounds.jsonl"
        earlier.parent.mkdir()
        earlier.write_text('{"round": 1}\n')
        earlier.chmod(0o644)
        append_round(earlier.parent, {"round": 2})
        assert stat.S_IMODE(earlier.stat().st_mode) == 0o600
        assert earlier.read_text() == '{"round": 1}\n{"round": 2}\n'
    finally:
        os.umask(old)
