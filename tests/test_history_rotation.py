"""A node's round history (`rounds.jsonl`) is bounded: past `status.HISTORY_CAP` it is
rotated to `rounds.jsonl.1`, and everything that reads a node's folder knows both
files; a history line that cannot be written is a warning naming its error, and the
node trains on."""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from declora.cli.lab_summary import _ended_row, read_rounds
from declora.node import run_folder
from declora.node.daemon import persistence, status
from declora.node.daemon.startup import UserError, check_config, earlier_run
from declora.node.settings import NodeSettings

CAP = 400  # bytes: a few lines of `_entry`


@pytest.fixture(autouse=True)
def _no_folder_left_held() -> Iterator[None]:
    yield
    for folder in list(run_folder._HELD):
        run_folder.release(folder)


def _entry(r: int, accuracy: float | None = None) -> dict[str, Any]:
    evals = None if accuracy is None else {"accuracy": accuracy}
    return {"round": r, "phase": "train", "loss": 1.0 / r, "eval": evals, "pad": "x" * 60}


def _rounds(path: Path) -> list[int]:
    return [json.loads(line)["round"] for line in path.read_text().splitlines()]


def test_the_history_rotates_past_its_cap_keeping_every_line_since_the_last_rotation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: rounds.jsonl grew without bound (about 110 MB an hour on a tiny model).
    Now a line that would take it past the cap first moves it whole to rounds.jsonl.1
    and begins a fresh one: no line is lost up to one rotation, the file never passes
    the cap, and the node's folder lock holds throughout."""
    monkeypatch.setattr(status, "HISTORY_CAP", CAP)
    folder = tmp_path / "state"
    folder.mkdir()
    assert run_folder.hold(folder)
    new, old = folder / run_folder.HISTORY, folder / run_folder.OLDER_HISTORY
    rotations, r = 0, 0
    while rotations < 2:
        r += 1
        had_old = _rounds(old) if old.exists() else None
        status.append_round(folder, _entry(r))
        assert new.stat().st_size <= CAP
        if old.exists() and _rounds(old) != had_old:
            rotations += 1
            assert _rounds(new) == [r]  # the line being written begins the fresh file
        kept = (_rounds(old) if old.exists() else []) + _rounds(new)
        if rotations <= 1:
            assert kept == list(range(1, r + 1))  # every line, across both files
        else:  # the oldest part went with the second rotation; the rest is whole
            assert kept == list(range(kept[0], r + 1)) and kept[0] > 1
    assert run_folder.held(folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        run_folder.HISTORY,
        run_folder.OLDER_HISTORY,
    ]


def test_a_rotation_that_fails_leaves_the_history_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotation refused (a read-only disk) raises, and the file past the cap does
    not grow; the next line after the disk recovers rotates it."""
    monkeypatch.setattr(status, "HISTORY_CAP", CAP)
    folder = tmp_path / "state"
    history = folder / run_folder.HISTORY
    r = 1
    while not history.exists() or history.stat().st_size + len(json.dumps(_entry(r))) < CAP:
        status.append_round(folder, _entry(r))  # up to the cap: the next line rotates
        r += 1
    before = history.read_bytes()
    real = os.replace

    def read_only(src: Any, dst: Any) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(src), None, str(dst))

    monkeypatch.setattr(os, "replace", read_only)
    for _ in range(3):
        with pytest.raises(OSError) as info:
            status.append_round(folder, _entry(r))
        assert info.value.errno == errno.EROFS and info.value.filename2
        assert history.read_bytes() == before
    monkeypatch.setattr(os, "replace", real)
    status.append_round(folder, _entry(r))
    assert _rounds(folder / run_folder.OLDER_HISTORY) == list(range(1, r))
    assert _rounds(history) == [r]


@pytest.mark.parametrize("fresh", ["one line", "empty", "none"])
def test_the_lab_finds_a_nodes_last_round_right_after_a_rotation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh: str
) -> None:
    """Before: the lab read rounds.jsonl only, so right after a rotation (a fresh file
    of one line, or none yet: a failed write cut it to nothing, a stop between the
    rotation and the line) a node's last evaluation, or its whole end, was lost. Now
    it reads rounds.jsonl.1 before rounds.jsonl."""
    monkeypatch.setattr(status, "HISTORY_CAP", CAP)
    folder = tmp_path / "lab-0"
    r = 0
    while not (folder / run_folder.OLDER_HISTORY).exists():
        r += 1
        status.append_round(folder, _entry(r, accuracy=r / 100))
    history = folder / run_folder.HISTORY  # holds round r, the line that rotated it
    if fresh == "one line":  # which holds no evaluation
        history.write_text(json.dumps(_entry(r)) + "\n")
        last = r
    else:
        (history.write_text("") if fresh == "empty" else history.unlink())
        last = r - 1  # the rotated file's last line is the last round
    rows = read_rounds(folder)
    assert [row["round"] for row in rows] == list(range(1, last + 1))
    node = SimpleNamespace(node_id="lab-0", process=SimpleNamespace(pid=4242))
    row = _ended_row(node, 0, rows, None, "accuracy")  # type: ignore[arg-type]
    assert row[:5] == [
        "lab-0",
        "exited (0)",
        f"{last} (train)",
        f"{1 / last:.4f}",
        f"{(r - 1) / 100:.3f}",  # the last evaluation: rounds.jsonl.1's last line
    ]


def _settings(folder: Path, **more: object) -> NodeSettings:
    return NodeSettings(solo=True, checkpoint_dir=folder, data="syn.jsonl", **more)


@pytest.mark.parametrize(
    "held", [["rounds.jsonl.1"], ["rounds.jsonl", "rounds.jsonl.1"], ["adapter", "rounds.jsonl.1"]]
)
def test_a_rotated_history_is_an_earlier_runs_file(tmp_path: Path, held: list[str]) -> None:
    """rounds.jsonl.1 is listed with what an earlier run wrote: a history alone (with
    or without its fresh part) is appended to by a fresh start and kept, and refuses
    --resume; beside an adapter it refuses a fresh start too."""
    folder = tmp_path / "state"
    folder.mkdir()
    for name in held:
        if name == "adapter":
            (folder / name).mkdir()
        else:
            (folder / name).write_text('{"round": 1}\n')
    assert earlier_run(folder) == held
    history_only = "adapter" not in held
    assert run_folder.history_only(held) is history_only
    if history_only:
        check_config(_settings(folder))
        run_folder.release(folder)
        assert sorted(p.name for p in folder.iterdir()) == sorted(held)
    else:
        with pytest.raises(UserError, match="holds an earlier run's files"):
            check_config(_settings(folder))
    with pytest.raises(UserError, match="holds an earlier run's files"):
        check_config(_settings(folder, resume=True))
    assert sorted(p.name for p in folder.iterdir()) == sorted(held)


def test_a_history_line_not_written_is_a_warning_naming_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: any OSError was one warning until a line was written again, worded
    alike whatever the cause. Now a disk's state (full, read-only, failing) gets the
    disk's remedy, another error (EACCES) its errno name and no word of the disk, a
    changed error is told again, and the node trains on throughout."""
    progress = SimpleNamespace(round=0)
    keeper = persistence.Persistence(tmp_path)
    keeper.attach(SimpleNamespace(progress=progress, report=None, node=None, peers=None))  # type: ignore[arg-type]
    monkeypatch.setattr(persistence, "round_entry", lambda p, *rest: {"round": p.round})
    failures: list[int | None] = [errno.EACCES, errno.EACCES, errno.ENOSPC, None, errno.EMFILE]

    def append(folder: Path, entry: dict[str, Any]) -> None:
        code = failures[entry["round"] - 1]
        if code is not None:
            raise OSError(code, os.strerror(code), str(folder / "rounds.jsonl"))

    monkeypatch.setattr(persistence, "append_round", append)
    with caplog.at_level(logging.INFO, logger=persistence.log.name):
        for r in range(1, len(failures) + 1):
            progress.round = r
            keeper.record("train", evaluated=False)
    said = [(rec.levelname, rec.getMessage()) for rec in caplog.records]
    where = tmp_path / "rounds.jsonl"
    assert said == [
        (
            "WARNING",
            f"cannot append round 1 to {where}: Permission denied (EACCES); "
            "the history misses rounds until it can be written",
        ),
        (
            "WARNING",
            f"cannot append round 3 to {where}: No space left on device; the history "
            "misses rounds until it can (free space on that disk or make it writable)",
        ),
        ("INFO", "round history written again from round 4"),
        (
            "WARNING",
            f"cannot append round 5 to {where}: Too many open files (EMFILE); "
            "the history misses rounds until it can be written",
        ),
    ]
