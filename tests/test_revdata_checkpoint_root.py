"""A checkpoint root whose checkpoints were deleted to free disk, its final adapter and
LATEST kept: the refusal points at the final adapter."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from declora.cli.app import app
from declora.node import checkpoint
from declora.node.adapter_io import AdapterError, adapter_folder
from declora.node.trainer import LoraModel


def test_a_root_whose_checkpoints_were_deleted_points_at_its_final_adapter(
    tiny_lm: LoraModel, tmp_path: Path
) -> None:
    import numpy as np

    root = tmp_path / "node"
    vec = np.concatenate([t.reshape(-1).numpy() for t in tiny_lm.initial_tensors()])
    trainer = {"optimizer": {}, "step": 0, "epoch": 1, "cursor": 0, "order": np.arange(10)}
    state = checkpoint.NodeState(3, 3, vec, vec.copy(), trainer, tiny_lm.fingerprint)
    ckpt = checkpoint.save(root, tiny_lm, state, {"node_id": "n0"})
    shutil.copytree(ckpt / "adapter", root / "adapter")  # as save_final writes it
    shutil.rmtree(ckpt)
    with pytest.raises(AdapterError) as err:
        adapter_folder(root)
    assert "LATEST names 'ckpt-00000003', which is missing" in err.value.message
    assert f"pass {root / 'adapter'} for the run's final adapter" in (err.value.hint or "")
    res = CliRunner().invoke(app, ["inspect", str(root)])
    assert res.exit_code == 2 and "final adapter" in res.output, res.output
    assert adapter_folder(root / "adapter") == root / "adapter"
