"""A LATEST that names no checkpoint at all (empty, zeros or other bytes a damaged
disk or a power loss leaves) no longer stops a resume while complete checkpoints are
there: the node resumes from the newest, with a warning. It refused (exit 2: "no
checkpoint in ... (other checkpoints: ckpt-2, ckpt-4)"), which under systemd's
RestartPreventExitStatus=2 kept the node down. A LATEST naming a checkpoint that is
missing still decides (refused): someone chose it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from daemon_helpers import CLI, HOST, free_ports, train_args

from declora.node import run_folder


def _checkpoints(folder: Path, *rounds: int) -> None:
    for r in rounds:
        (folder / f"ckpt-{r:08d}").mkdir(parents=True)
        (folder / f"ckpt-{r:08d}" / "state.pt").write_bytes(b"x")


@pytest.mark.parametrize("pointer", [b"", b"\0" * 14, b"\xff\xfe", b"x" * 10_000, b"ckpt-\n"])
def test_a_damaged_latest_gives_way_to_the_newest_checkpoint(
    tmp_path: Path, pointer: bytes
) -> None:
    _checkpoints(tmp_path, 2, 4)
    (tmp_path / "LATEST").write_bytes(pointer)
    assert run_folder.resume_point(tmp_path) == tmp_path / "ckpt-00000004"
    assert run_folder.resumable(tmp_path)


def test_a_latest_naming_a_missing_checkpoint_still_decides(tmp_path: Path) -> None:
    _checkpoints(tmp_path, 2, 4)
    (tmp_path / "LATEST").write_text("ckpt-00000006\n")
    assert run_folder.resume_point(tmp_path) is None
    (tmp_path / "LATEST").write_text("ckpt-00000002\n")
    assert run_folder.resume_point(tmp_path) == tmp_path / "ckpt-00000002"


@pytest.mark.slow  # ~12 s, make test-slow; the in-process LATEST cases stay
def test_a_node_resumes_past_a_zeroed_latest(tmp_path: Path, synthetic_jsonl: Path) -> None:
    folder = tmp_path / "state"
    (port,) = free_ports(1)
    args = [*CLI, "start", "--solo", "--node-id", "solo", "--listen", f"{HOST}:{port}"]
    args += ["--checkpoint-dir", str(folder), "--rounds", "2", "--checkpoint-every", "1"]
    args += [*train_args(synthetic_jsonl), "--max-eval", "8"]

    def start(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*args, *extra],
            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    first = start()
    assert first.returncode == 0, first.stderr
    (folder / "LATEST").write_bytes(b"\0" * 14)  # a power loss's zeros
    again = start("--resume")
    assert again.returncode == 0, again.stderr
    assert "LATEST names no checkpoint" in again.stderr
    assert f"resumed from {folder / 'ckpt-00000002'} at round 2" in again.stderr
