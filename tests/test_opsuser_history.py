"""A node killed (or a machine powered off) while it appended to rounds.jsonl leaves a
last line cut short; its resume appended the next record onto it, so both records
were one unreadable line. The resume now cuts the torn line off first, with a warning."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from daemon_helpers import CLI, HOST, free_ports, train_args

from declora.node.daemon.persistence import mend_history

TORN = b'{"time": 1.0, "round": 5, "lo'


def _start(folder: Path, data: Path, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["start", "--solo", "--node-id", "solo", "--listen", f"{HOST}:{port}"]
    args += ["--checkpoint-dir", str(folder), "--rounds", "2", "--checkpoint-every", "1"]
    return subprocess.run(
        [*CLI, *args, *train_args(data), "--max-eval", "8", *extra],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.slow  # ~15 s of processes, make test-slow; test_mend_history_... stays
def test_a_resume_cuts_off_a_torn_last_line(tmp_path: Path, synthetic_jsonl: Path) -> None:
    folder = tmp_path / "state"
    (port,) = free_ports(1)
    first = _start(folder, synthetic_jsonl, port)
    assert first.returncode == 0, first.stderr
    history = folder / "rounds.jsonl"
    whole = history.read_bytes()
    assert whole.endswith(b"\n")
    with history.open("ab") as fh:
        fh.write(TORN)  # what a crash mid-append leaves
    again = _start(folder, synthetic_jsonl, port, "--resume")
    assert again.returncode == 0, again.stderr
    text = history.read_bytes()
    for line in text.decode().splitlines():
        json.loads(line)  # every line a whole record (the old code: JSONDecodeError)
    assert text.startswith(whole) and len(text) > len(whole)  # the resume's own record
    assert f"{history} ended in a line cut short" in again.stderr


def test_mend_history_keeps_whole_lines_only(tmp_path: Path) -> None:
    history = tmp_path / "rounds.jsonl"
    history.write_bytes(b'{"round": 1}\n{"round": 2}\n')
    mend_history(tmp_path)
    assert history.read_bytes() == b'{"round": 1}\n{"round": 2}\n'  # nothing torn
    history.write_bytes(b'{"round": 1}\n' + b"x" * 200_000)  # torn over several blocks
    mend_history(tmp_path)
    assert history.read_bytes() == b'{"round": 1}\n'
    history.write_bytes(b"x" * 10)  # the only line, torn
    mend_history(tmp_path)
    assert history.read_bytes() == b""
    history.unlink()
    mend_history(tmp_path)  # none: nothing to do
    assert not history.exists()
