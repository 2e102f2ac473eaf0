"""What an earlier run left in a node's checkpoint folder (its state dir).

Pure pathlib, no torch or grpc: `settings` resolves `resume = "auto"` with it before
anything loads, `startup.check_config` decides what a start may do with it, and
`checkpoint.load` resumes from `resume_point`: one answer for all three.

- a checkpoint is a folder `ckpt-<round>`; it is complete when it holds `state.pt`
  (`checkpoint.save` moves it into place whole, then points LATEST at it);
- `resume_point`: the checkpoint a resume continues from: the one LATEST names, or,
  without LATEST (a crash between a checkpoint's rename and LATEST's, or LATEST
  deleted), the newest complete one;
- `earlier_run`: what an earlier run wrote (LATEST, the final adapter, rounds.jsonl,
  ckpt-* folders), none of which a fresh start may replace (a rounds.jsonl alone is
  appended to).
"""

from __future__ import annotations

import re
from pathlib import Path

LATEST = "LATEST"  # names the newest complete checkpoint
STATE = "state.pt"  # what makes a checkpoint folder complete (written before its rename)
RUN_FILES = (LATEST, "adapter", "rounds.jsonl")  # besides ckpt-* folders
_CHECKPOINT = re.compile(r"ckpt-(\d+)")


def is_complete(path: Path) -> bool:
    """Whether checkpoint folder `path` holds its `state.pt`."""
    return (path / STATE).is_file()


def complete_checkpoints(folder: Path) -> list[Path]:
    """The complete `ckpt-<round>` folders in `folder`, oldest round first."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob("ckpt-*"):
        match = _CHECKPOINT.fullmatch(path.name)
        if match and path.is_dir() and is_complete(path):
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def named(folder: Path) -> str | None:
    """What LATEST names ('' when it is empty or unreadable); None without LATEST."""
    pointer = folder / LATEST
    if not pointer.is_file():
        return None
    try:
        return pointer.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def resume_point(folder: Path) -> Path | None:
    """The checkpoint a resume continues from: the one LATEST names when it is complete
    (None when it is not: LATEST decides), else the newest complete one; None if none."""
    name = named(folder)
    if name is not None:
        path = folder / name
        return path if name and is_complete(path) else None
    complete = complete_checkpoints(folder)
    return complete[-1] if complete else None


def resumable(folder: Path) -> bool:
    """Whether `folder` holds a run to resume: LATEST, or a complete checkpoint
    (`resume = "auto"` resumes then, and begins afresh otherwise)."""
    return named(folder) is not None or bool(complete_checkpoints(folder))


def earlier_run(folder: Path) -> list[str]:
    """What in `folder` an earlier run wrote: those of LATEST, the final adapter and
    rounds.jsonl it holds, then its ckpt-* folders (sorted, complete or not); empty
    when nothing (or no such folder)."""
    if not folder.is_dir():
        return []
    found = [name for name in RUN_FILES if (folder / name).exists()]
    found += sorted(p.name for p in folder.glob("ckpt-*") if p.is_dir())
    return found
