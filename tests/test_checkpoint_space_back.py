"""A checkpoint a full disk had no room for gives its space back at once.

`Persistence` keeps why the last checkpoint failed (for the exit's error). It kept the
OSError itself, chained to torch.save's RuntimeError, whose traceback held torch's
open zip writer: the removed build's file stayed allocated, and the final adapter
written next failed on a disk that had room for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from disk_helpers import small_tmpfs

from declora.node import checkpoint
from declora.node.adapter import disk_failures
from declora.node.daemon import persistence


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_a_failed_checkpoint_holds_no_space_on_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        empty = free_bytes(disk)

        def save(root: Path, *args: Any) -> Path:  # checkpoint.save's writes, too large
            build = root / ".ckpt-00000001.build"
            build.mkdir()
            try:
                with disk_failures(root, 1_600_000):
                    torch.save({"public": torch.zeros(400_000)}, build / "state.pt")
            finally:
                checkpoint.shutil.rmtree(build, ignore_errors=True)
            raise AssertionError("a 1.6 MB write fitted on a 1 MiB disk")

        monkeypatch.setattr(checkpoint, "save", save)
        monkeypatch.setattr(checkpoint, "NodeState", lambda **fields: SimpleNamespace(**fields))
        monkeypatch.setattr(checkpoint, "trainer_state", lambda trainer: None)
        node = SimpleNamespace(
            apply_deferred_step=lambda: None,
            snapshot=lambda: SimpleNamespace(
                vector=None, public=None, correction=None, method_state={}
            ),
            trainer=None,
            full_model=False,
            codec_spec="fp32",
        )
        keeper = persistence.Persistence(disk)
        settings = SimpleNamespace(rounds=1, exchanges_per_round=1, node_id="n0")
        keeper.attach(
            SimpleNamespace(  # type: ignore[arg-type]
                node=node,
                progress=SimpleNamespace(round=1, seq=1),
                lm=SimpleNamespace(fingerprint="f"),
                settings=settings,
            )
        )
        keeper._share = {}
        assert keeper.save_checkpoint() is False
        assert keeper.failed is not None and keeper.failed.strerror
        assert free_bytes(disk) == empty  # before: 0 bytes free until the node exited
