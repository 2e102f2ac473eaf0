"""Crash injection for the fault tests: a real `kill -9` at a named point of a round.

`DECLORA_CRASH_AT=<point>[@<n>]` makes the daemon SIGKILL its own process the n-th
time (default: the first) it reaches `point`. Points, in the order a round meets them:

- `before_send`: local steps done, nothing pushed;
- `mid_stream`: a push has sent its header and first data chunk, the rest never follows;
- `after_send`: every push to the neighbours live at the round start is answered
  (a neighbour that joined mid-round gets its push after this point), nothing mixed yet;
- `checkpoint`: a checkpoint's files are written but not yet renamed into place;
- `checkpoint_pointer`: the new `LATEST` is in its temporary file, not yet renamed.

With `DECLORA_CRASH_ARM_FILE=<path>` as well, visits count only while that file
exists, so a test can arm the crash when it is ready for it (not after a guessed
number of rounds). Unset (the default), `crash_point` is a no-op. A malformed value is
refused at import.
"""

from __future__ import annotations

import os
import signal

ENV = "DECLORA_CRASH_AT"
ARM_ENV = "DECLORA_CRASH_ARM_FILE"
POINTS = ("before_send", "mid_stream", "after_send", "checkpoint", "checkpoint_pointer")


def parse(value: str) -> tuple[str, int] | None:
    """`'point@n'` or `'point'` -> (point, n); '' -> None; raises ValueError otherwise."""
    if not value:
        return None
    point, sep, count = value.partition("@")
    if point not in POINTS or (sep and (not count.isdigit() or int(count) < 1)):
        raise ValueError(f"{ENV}={value!r}: expected <point>[@<n>], point one of {POINTS}")
    return point, int(count) if sep else 1


_plan = parse(os.environ.get(ENV, ""))
_arm_file = os.environ.get(ARM_ENV, "")
_seen: dict[str, int] = {}


def armed(point: str) -> bool:
    """Whether this process is set to crash at `point` (and its arm file, if any, exists)."""
    if _plan is None or _plan[0] != point:
        return False
    return not _arm_file or os.path.exists(_arm_file)


def crash_point(point: str) -> None:
    """Count a visit to `point`; SIGKILL this process on the configured visit."""
    if not armed(point):
        return
    _seen[point] = _seen.get(point, 0) + 1
    if _plan is not None and _seen[point] == _plan[1]:
        os.kill(os.getpid(), signal.SIGKILL)
