"""A checkpoint folder someone else could have written is data, never code: `state.pt`
is read with torch's weights-only unpickler (`checkpoint.read_state`), and the folder,
its checkpoints and LATEST are the user's alone whatever the umask."""

from __future__ import annotations

import os
import pickletools
import re
import stat
import subprocess
import zipfile
from collections.abc import Callable
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
    order = state.trainer["order"]
    assert isinstance(order, torch.Tensor) and order.dtype == torch.int64 and order.numel() == 64
    assert state.trainer["optimizer"]["state"]  # AdamW's moments came back


def _global_names(path: Path) -> set[str]:
    """The globals state.pt's pickle names ("module name")."""
    with zipfile.ZipFile(path / "state.pt") as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    return {str(arg) for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


def _with_pickle(path: Path, change: Callable[[bytes], bytes]) -> None:
    """Rewrite state.pt with its pickle passed through `change`."""
    src = path / "state.pt"
    with zipfile.ZipFile(src) as z:
        members = [(info, z.read(info)) for info in z.infolist()]
    with zipfile.ZipFile(path / "state.new", "w") as out:
        for info, blob in members:
            out.writestr(info, change(blob) if info.filename.endswith("data.pkl") else blob)
    os.replace(path / "state.new", src)


def test_new_checkpoints_pickle_no_numpy(
    tmp_path: Path, tiny_lm: LoraModel, synthetic: TextDataset
) -> None:
    """The sampler's order was an ndarray: every checkpoint needed numpy's globals."""
    path = _saved(tmp_path, tiny_lm, synthetic)
    assert not [g for g in _global_names(path) if g.startswith("numpy")]


def _old_state(root: Path, lm: LoraModel, order: np.ndarray) -> Path:
    """A checkpoint as written before the order became a tensor."""
    vec = np.concatenate([t.reshape(-1).numpy() for t in lm.initial_tensors()])
    trainer_state = {"optimizer": {}, "step": 0, "epoch": 0, "cursor": 0, "order": order}
    state = checkpoint.NodeState(1, 1, vec, vec.copy(), trainer_state, lm.fingerprint)
    return checkpoint.save(root, lm, state, {})


def test_a_numpy_1_checkpoint_reads_under_numpy_2(tmp_path: Path, tiny_lm: LoraModel) -> None:
    """numpy 1 pickles `numpy.core.multiarray._reconstruct`, numpy 2 `numpy._core...`:
    only one was allowed, so a numpy upgrade made every checkpoint "hold Python
    objects"."""
    path = _old_state(tmp_path, tiny_lm, np.arange(5, dtype=np.int64))
    _with_pickle(path, lambda b: b.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert "numpy.core.multiarray _reconstruct" in _global_names(path)
    state = checkpoint.load(tmp_path, tiny_lm)
    assert np.array_equal(state.trainer["order"], np.arange(5))


def test_an_empty_order_of_before_reads(tmp_path: Path, tiny_lm: LoraModel) -> None:
    """An empty ndarray's data pickles as `bytes()`, which weights_only refused: a
    checkpoint written before the first step could not be resumed."""
    _old_state(tmp_path, tiny_lm, np.zeros(0))
    assert checkpoint.load(tmp_path, tiny_lm).trainer["order"].size == 0


def test_bytes_with_arguments_is_refused(tmp_path: Path, tiny_lm: LoraModel) -> None:
    """`bytes(n)` would allocate n bytes: only the empty `bytes()` is allowed."""
    path = _old_state(tmp_path, tiny_lm, np.zeros(0))
    call = re.compile(rb"(c__builtin__\nbytes\nq.)\)R", re.DOTALL)  # bytes() ...
    size = b"J" + (1 << 20).to_bytes(4, "little") + b"\x85"  # ... becomes bytes(1 MiB)
    _with_pickle(path, lambda b: call.sub(lambda m: m.group(1) + size + b"R", b, count=1))
    assert "__builtin__ bytes" in _global_names(path)
    with pytest.raises(checkpoint.CheckpointError, match="Python objects"):
        checkpoint.read_state(path)


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
