"""The output folder of a lab is the lab's alone while it runs: `output_lock` holds it
(a second lab into it is refused), `check_unheld` refuses a node folder a running
process still holds, each a `LabBusyError` before anything in the folder changes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from declora.node import run_folder
from declora.node.errors import HintedError


class LabBusyError(HintedError):
    """Another lab is writing into this output folder (it holds the folder: `output_lock`)."""


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold `out` for the block as a node holds its --checkpoint-dir (`run_folder.hold`:
    an flock on the folder, which the kernel drops with its process, so a lab that
    crashed or was killed leaves none behind); `LabBusyError` at once, with nothing in
    `out` changed, while another process, or another lab of this one, holds it."""
    try:
        if run_folder.held(out):  # by another lab of this process
            raise run_folder.FolderBusy(out, os.getpid())
        held = run_folder.hold(out)
    except run_folder.FolderBusy as busy:
        raise LabBusyError(
            f"--output {out} is in use by another lab" + (f" (pid {busy.pid})" if busy.pid else ""),
            "wait for it to finish (or stop it), or choose another --output",
        ) from None
    try:
        yield
    finally:
        if held:
            run_folder.release(out)


def check_unheld(out: Path, nodes: int) -> None:
    """`LabBusyError` when a process holds one of the node folders a lab replaces
    (`run_folder.hold`: a node still running there, left by a lab killed with SIGKILL),
    before any of them is deleted."""
    for i in range(nodes):
        folder = out / f"lab-{i}"
        if not folder.is_dir():
            continue
        try:
            held = run_folder.hold(folder)
        except run_folder.FolderBusy as busy:
            who = f"pid {busy.pid}" if busy.pid else "another process"
            raise LabBusyError(
                f"--output {out}: {folder.name} is in use by a running node ({who})",
                "stop that node first (it was left by a lab that was killed), or choose "
                "another --output",
            ) from None
        except OSError:
            continue  # an unreadable folder: rmtree says what is wrong
        if held:
            run_folder.release(folder)
