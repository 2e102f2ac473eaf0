"""A checkpoint root whose LATEST is damaged: inspect, predict, generate and export
resolve it by the rule a resume uses (`run_folder.resume_point`)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from declora.cli.app import app
from declora.node import checkpoint
from declora.node.adapter_io import AdapterError, adapter_folder
from declora.node.trainer import LoraModel

runner = CliRunner()


def _root(lm: LoraModel, root: Path, latest: bytes | None, complete: tuple[int, ...]) -> Path:
    """A checkpoint root holding complete checkpoints `complete`, an incomplete ckpt-9
    (no state.pt) and LATEST holding `latest` (none when None)."""
    vec = np.concatenate([t.reshape(-1).numpy() for t in lm.initial_tensors()])
    trainer = {"optimizer": {}, "step": 0, "epoch": 1, "cursor": 0, "order": np.arange(10)}
    for n in complete:
        state = checkpoint.NodeState(n, n, vec, vec.copy(), trainer, lm.fingerprint)
        checkpoint.save(root, lm, state, {"node_id": "n0"})
    shutil.copytree(root / f"ckpt-{complete[-1]:08d}", root / "ckpt-00000009")
    (root / "ckpt-00000009" / "state.pt").unlink()
    (root / "LATEST").unlink()
    if latest is not None:
        (root / "LATEST").write_bytes(latest)
    return root


@pytest.mark.parametrize(
    "latest", [b"", b"\0" * 13, b"\x9c\xff garbage", b"not-a-checkpoint\n", None]
)
def test_a_damaged_or_absent_latest_gives_the_newest_complete_checkpoint(
    tiny_lm: LoraModel, tmp_path: Path, latest: bytes | None, caplog: pytest.LogCaptureFixture
) -> None:
    root = _root(tiny_lm, tmp_path / "node", latest, (1, 2))
    with caplog.at_level(logging.WARNING):
        assert adapter_folder(root) == root / "ckpt-00000002" / "adapter"
        assert adapter_folder(root) == root / "ckpt-00000002" / "adapter"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "ckpt-00000002" in warned[0], warned  # once a root
    res = runner.invoke(app, ["inspect", str(root), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert Path(json.loads(res.stdout)["path"]) == root / "ckpt-00000002" / "adapter"


@pytest.mark.parametrize("named", ["ckpt-00000009", "ckpt-00000007"])  # incomplete, missing
def test_latest_naming_a_missing_or_incomplete_checkpoint_is_refused(
    tiny_lm: LoraModel, tmp_path: Path, named: str
) -> None:
    root = _root(tiny_lm, tmp_path / "node", named.encode() + b"\n", (1, 2))
    with pytest.raises(AdapterError) as err:
        adapter_folder(root)
    assert f"LATEST names {named!r}" in err.value.message
    assert "ckpt-00000001, ckpt-00000002" in (err.value.hint or "")
    for command in (["inspect", str(root)], ["export", str(root), "-o", str(tmp_path / "out")]):
        res = runner.invoke(app, command)
        assert res.exit_code != 0 and "LATEST names" in res.output, res.output
        assert "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_a_final_adapter_without_latest_is_still_the_root_s_adapter(
    tiny_lm: LoraModel, tmp_path: Path
) -> None:
    root = _root(tiny_lm, tmp_path / "node", None, (1,))
    shutil.copytree(root / "ckpt-00000001" / "adapter", root / "adapter")
    assert adapter_folder(root) == root / "adapter"
    (root / "LATEST").write_text("ckpt-00000001\n")
    assert adapter_folder(root) == root / "ckpt-00000001" / "adapter"
