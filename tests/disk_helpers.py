"""Disks for tests of what a full disk does: a real small one (root only), or a
faked free space."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str = "80k") -> Iterator[Path]:
    """A real tmpfs of `size` mounted on `folder` (root only: the test is skipped
    otherwise), unmounted after (lazily: a file still held open keeps it busy)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    folder.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)])
    if res.returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fake_free(monkeypatch: pytest.MonkeyPatch, folder: Path, mib: float) -> None:
    """`shutil.disk_usage` says `mib` MiB are free past what a data read keeps free."""
    from declora.node.data_bounds import KEEP_FREE

    usage = shutil.disk_usage(folder)._replace(free=KEEP_FREE + int(mib * (1 << 20)))
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage)
