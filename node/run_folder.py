"""What an earlier run left in a node's checkpoint folder (its state dir).

Pure pathlib, no torch or grpc: `settings` resolves `resume = "auto"` with it before
anything loads, `startup.check_config` decides what a start may do with it, and
`checkpoint.load` resumes from `resume_point`: one answer for all three.

- a checkpoint is a folder `ckpt-<round>`; it is complete when it holds `state.pt`
  (`checkpoint.save` moves it into place whole, then points LATEST at it);
- `resume_point`: the checkpoint a resume continues from: the one LATEST names, or,
  without LATEST (a crash between a checkpoint's rename and LATEST's, or LATEST
  deleted) or with one naming no checkpoint (empty, zeros: a damaged disk), the
  newest complete one;
- `earlier_run`: what an earlier run wrote (LATEST, the final adapter, the round
  history `HISTORY` and its rotated older part `OLDER_HISTORY`, ckpt-* folders), none
  of which a fresh start may replace (a history alone is appended to: `history_only`);
- `hold`: one node per folder: an advisory lock (flock) on the folder itself, held by
  the process until it exits (a kill -9 releases it too) or `release`; `FolderBusy`
  names the process that holds it (and its command: a node's start, an export). Nothing
  is written for it, so a refused or failed start leaves the folder as it found it;
  `holding` holds a folder for a block (an export's output while it is written);
- `clear_builds`: the half-written `.ckpt-*` and `.adapter.*` folders a crash left
  (only for the process that holds the folder);
- `recorded_id`: the node id the run's resume point records (its adapter's
  declora.json), which a resume keeps.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, nothing is checked
    fcntl = None  # type: ignore[assignment]

LATEST = "LATEST"  # names the newest complete checkpoint
STATE = "state.pt"  # what makes a checkpoint folder complete (written before its rename)
HISTORY = "rounds.jsonl"  # a node's round history, one JSON line a round
OLDER_HISTORY = HISTORY + ".1"  # its older lines, rotated out at `status.HISTORY_CAP`
RUN_FILES = (LATEST, "adapter", HISTORY, OLDER_HISTORY)  # besides ckpt-* folders
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


MAX_POINTER = 64  # bytes of LATEST read: a checkpoint's name is 13


def named(folder: Path) -> str | None:
    """What LATEST names (its first `MAX_POINTER` bytes; '' when it is empty or
    unreadable); None without LATEST."""
    pointer = folder / LATEST
    if not pointer.is_file():
        return None
    try:
        with pointer.open("rb") as fh:
            return fh.read(MAX_POINTER).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def names_checkpoint(name: str | None) -> bool:
    """Whether `name` (`named`'s answer) is a checkpoint's name, `ckpt-<round>`; not
    when LATEST is absent, empty, unreadable or garbage (zeros from a damaged disk)."""
    return name is not None and _CHECKPOINT.fullmatch(name) is not None


def resume_point(folder: Path) -> Path | None:
    """The checkpoint a resume continues from: the one LATEST names when it is complete
    (None when it is not: LATEST decides), else, LATEST absent or naming no checkpoint
    at all (`names_checkpoint`), the newest complete one; None if none."""
    name = named(folder)
    if names_checkpoint(name):
        path = folder / str(name)
        return path if is_complete(path) else None
    complete = complete_checkpoints(folder)
    return complete[-1] if complete else None


def resumable(folder: Path) -> bool:
    """Whether `folder` holds a run to resume: LATEST, or a complete checkpoint
    (`resume = "auto"` resumes then, and begins afresh otherwise)."""
    return named(folder) is not None or bool(complete_checkpoints(folder))


INFO = "declora.json"  # a checkpoint's adapter/ card: its node_id among the rest
MAX_INFO = 1 << 20  # bytes of it read: a card is a few KiB


def recorded_id(folder: Path) -> str | None:
    """The node id `resume_point(folder)`'s card records (`adapter/declora.json`);
    None without a resume point, or when the card cannot be read or holds no valid id
    (`identity.node_id_problem`)."""
    from declora.node.identity import node_id_problem

    point = resume_point(folder)
    if point is None:
        return None
    try:
        with (point / "adapter" / INFO).open("rb") as fh:
            info = json.loads(fh.read(MAX_INFO))
    except (OSError, ValueError, RecursionError):  # a damaged card: deep nesting too
        return None
    found = info.get("node_id") if isinstance(info, dict) else None
    return found if isinstance(found, str) and not node_id_problem(found) else None


def earlier_run(folder: Path) -> list[str]:
    """What in `folder` an earlier run wrote: those of `RUN_FILES` (LATEST, the final
    adapter, rounds.jsonl, rounds.jsonl.1) it holds, in that order, then its ckpt-*
    folders (sorted, complete or not); empty when nothing (or no such folder)."""
    if not folder.is_dir():
        return []
    found = [name for name in RUN_FILES if (folder / name).exists()]
    found += sorted(p.name for p in folder.glob("ckpt-*") if p.is_dir())
    return found


def history_only(found: list[str]) -> bool:
    """Whether `earlier_run`'s `found` is a round history alone (rounds.jsonl, its
    rotated rounds.jsonl.1, or both: a crash before the first checkpoint), which a
    fresh start appends to."""
    return bool(found) and set(found) <= {HISTORY, OLDER_HISTORY}


# ---------------------------------------------------------------- one node a folder
class FolderBusy(Exception):
    """`folder` is held by another running process: `pid` (None when it cannot be told),
    running `command` (`command_of`: "declora-node export", ...; None when not told)."""

    def __init__(self, folder: Path, pid: int | None) -> None:
        self.folder, self.pid = folder, pid
        self.command = command_of(pid) if pid else None
        super().__init__(f"{folder} is held by {self.who}")

    @property
    def who(self) -> str:
        """The holder as a message names it: "pid 42 (declora-node export)", "pid 42"
        or "another process"."""
        if not self.pid:
            return "another process"
        return f"pid {self.pid}" + (f" ({self.command})" if self.command else "")


def command_of(pid: int) -> str | None:
    """What process `pid` runs when it is declora's CLI (its `declora-node` script, or
    python -m declora.cli): "declora-node SUBCOMMAND"; None for another program, or
    where Linux's /proc cannot tell."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    args = raw.decode(errors="replace").split("\0")
    for i, arg in enumerate(args):
        if Path(arg).name == "declora-node":
            rest = args[i + 1 :]
        elif arg == "-m" and args[i + 1 : i + 2] in (["declora.cli"], ["declora.cli.app"]):
            rest = args[i + 2 :]
        else:
            continue
        sub = next((a for a in rest if a and not a.startswith("-")), "")
        return f"declora-node {sub}".rstrip()
    return None


_HELD: dict[Path, int] = {}  # folder (resolved) -> the descriptor holding its lock


def hold(folder: Path) -> bool:
    """Lock existing folder `folder` for this process (again: a no-op) until `release`
    or the process exits, whatever way. True when held; False where its file system
    has no advisory locks (nothing is checked then); `FolderBusy` when another process
    holds it."""
    key = folder.resolve()
    if key in _HELD:
        held = os.fstat(_HELD[key])
        here = os.stat(key)
        if (held.st_dev, held.st_ino) == (here.st_dev, here.st_ino):
            return True
        release(key)  # deleted and made anew since: the lock is on the old folder
    if fcntl is None:  # pragma: no cover - Windows
        return False
    fd = os.open(key, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise FolderBusy(folder, holder(key)) from None
        return False  # ENOLCK, EBADF (NFS locks need a writable file): not checked
    _HELD[key] = fd
    return True


def held(folder: Path) -> bool:
    """Whether this process holds `folder`'s lock (`hold`): only then are half-written
    builds in it garbage (`clear_builds`)."""
    fd = _HELD.get(folder.resolve())
    if fd is None:
        return False
    try:
        here, locked = os.stat(folder), os.fstat(fd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (locked.st_dev, locked.st_ino)


def release(folder: Path) -> None:
    """Let go of `folder`'s lock if this process holds it."""
    fd = _HELD.pop(folder.resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the last descriptor drops the flock


@contextlib.contextmanager
def holding(folder: Path) -> Iterator[bool]:
    """`hold` `folder` for the block, made first (with its missing parents) when it does
    not exist: yields whether it is held (False where locks are not checked), and a node
    started on it meanwhile is refused (`FolderBusy` names this process's command).
    `FolderBusy` at once when another process holds it (what was made is left to it);
    a hold this process had before is kept after the block. When the block fails, the
    folders made for it that are still empty are removed (innermost first)."""
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    before = held(folder)
    locked = hold(folder)  # FolderBusy: the folder is the holder's now, made or not
    try:
        yield locked
    except BaseException:
        _remove_empty(made)  # while still held: no node takes a folder about to go
        raise
    finally:
        if locked and not before:
            release(folder)


def _remove_empty(folders: list[Path]) -> None:
    for made in folders:
        with contextlib.suppress(OSError):
            made.rmdir()  # only an empty folder: another's files are never removed


def holder(folder: Path) -> int | None:
    """The pid holding the flock on `folder`, from Linux's /proc/locks; None elsewhere,
    or when none does."""
    try:
        st = os.stat(folder)
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:  # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2933318 0 EOF"
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == ident:
            pid = int(fields[4]) if fields[4].isdigit() else 0
            return pid or None  # 0: a process of another pid namespace
    return None


BUILDS = (".ckpt-*", ".adapter.*")  # `adapter.new_build_dir`'s half-written folders


def clear_builds(folder: Path) -> list[str]:
    """Delete the half-written build folders (`BUILDS`) a crash left in `folder`; the
    names deleted. Only for the process that holds the folder (`hold`): another's are
    being written."""
    gone = []
    for pattern in BUILDS:
        for build in folder.glob(pattern):
            if build.is_dir():
                shutil.rmtree(build, ignore_errors=True)
                gone.append(build.name)
    return sorted(gone)
