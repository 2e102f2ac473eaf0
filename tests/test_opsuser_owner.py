"""A state folder another user owns (made by root before the unit ran as its own
user, a volume from another container) is refused naming both users and the `chown`
that helps; it said "Permission denied" and "a read-only mount?". Root is made an
ordinary user for the check by dropping the capabilities that bypass file modes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from daemon_helpers import CLI, HOST, free_ports, train_args

NOBODY = 65534


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
def test_a_folder_of_another_user_is_refused_naming_both(
    tmp_path: Path, synthetic_jsonl: Path
) -> None:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o755)
    os.chown(folder, NOBODY, NOBODY)
    (port,) = free_ports(1)
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"]
    args = ["start", "--solo", "--listen", f"{HOST}:{port}", "--checkpoint-dir", str(folder)]
    res = subprocess.run(
        [*drop, *CLI, *args, *train_args(synthetic_jsonl)],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if "setpriv:" in res.stderr:
        pytest.skip(f"cannot drop capabilities here: {res.stderr.strip()[:200]}")
    assert res.returncode == 2, res.stderr
    error, hint = res.stderr.splitlines()
    assert error == (
        f"error: cannot use {folder} (--checkpoint-dir) for checkpoints: Permission denied "
        f"(owned by uid {NOBODY} (nobody); this node runs as uid 0 (root))"
    )
    assert (
        hint == f"hint: make it the node's (chown -R 0 {folder}), or pass another --checkpoint-dir"
    )
    assert list(folder.iterdir()) == []  # nothing written
