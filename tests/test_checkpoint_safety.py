"""A checkpoint folder someone else could have written is data, never code: `state.pt`
is read with torch's weights-only unpickler (`checkpoint.read_state`), and the folder,
its checkpoints and LATEST are the user's alone whatever the umask."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from daemon_helpers import CLI
from test_resume_checks import _trained_state

from declora.node import checkpoint, run_folder
from declora.node.daemon.startup import check_config
from declora.node.data import TextDataset
from declora.node.settings import NodeSettings
from declora.node.trainer import LoraModel


class RunsCode:
    """Pickles to a call of os.system: what a hostile state.pt would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _saved(root: Path, lm: LoraModel, data: TextDataset) -> Path:
    """A real checkpoint of 3 trained steps (AdamW moments, the sampler's numpy order)."""
    trainer_state, vec = _trained_state(lm, data)
    state = checkpoint.NodeState(3, 3, vec, vec.copy(), trainer_state, lm.fingerprint)
    return checkpoint.save(root, lm, state, {})


def test_a_real_checkpoint_reads_back_with_its_arrays(
    tmp_path: Path, tiny_lm: LoraModel, synthetic: TextDataset
) -> None:
    _saved(tmp_path, tiny_lm, synthetic)
    state = checkpoint.load(tmp_path, tiny_lm)
    assert state.round == 3
    assert isinstance(state.trainer["order"], np.ndarray) and state.trainer["order"].size == 64
    assert state.trainer["optimizer"]["state"]  # AdamW's moments came back


def test_a_state_that_would_run_code_is_refused_unrun(
    tmp_path: Path, tiny_lm: LoraModel, synthetic: TextDataset
) -> None:
    """Before, `inspect` on such a folder (and `--resume` from it) ran the code and
    showed a normal table."""
    path = _saved(tmp_path / "state", tiny_lm, synthetic)
    marker = tmp_path / "ran"
    raw = torch.load(path / "state.pt", weights_only=False)  # our own file: trusted here
    torch.save({**raw, "trainer": RunsCode(marker)}, path / "state.pt")
    with pytest.raises(checkpoint.CheckpointError, match="Python objects a declora checkpoint"):
        checkpoint.load(tmp_path / "state", tiny_lm)
    assert not marker.exists()
    out = subprocess.run([*CLI, "inspect", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "Python objects" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not marker.exists()


def test_a_damaged_state_is_named_corrupt(
    tmp_path: Path, tiny_lm: LoraModel, synthetic: TextDataset
) -> None:
    path = _saved(tmp_path, tiny_lm, synthetic)
    blob = (path / "state.pt").read_bytes()
    (path / "state.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="cannot be read"):
        checkpoint.read_state(path)


def test_checkpoints_are_private_whatever_the_umask(
    tmp_path: Path, tiny_lm: LoraModel, synthetic: TextDataset
) -> None:
    """Under umask 000 the folder was 0777 and LATEST 0666: anyone could point a resume
    at a checkpoint of their own."""
    old = os.umask(0)
    try:
        path = _saved(tmp_path / "state", tiny_lm, synthetic)
    finally:
        os.umask(old)
    mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "state", path)}
    assert mode == {"state": 0o700, path.name: 0o700}
    assert stat.S_IMODE((tmp_path / "state" / checkpoint.LATEST).stat().st_mode) == 0o600


def test_a_state_folder_the_start_creates_is_private_whatever_the_umask(
    tmp_path: Path, synthetic_jsonl: Path
) -> None:
    """`start` creates the --checkpoint-dir before any checkpoint: it was 0777 under
    umask 000, so anyone could place a LATEST or a ckpt-* of their own in it."""
    settings = NodeSettings(solo=True, checkpoint_dir=tmp_path / "state", data=str(synthetic_jsonl))
    old = os.umask(0)
    try:
        check_config(settings)
    finally:
        os.umask(old)
        run_folder.release(settings.state_dir)
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
