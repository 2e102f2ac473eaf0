"""Saving a DECA full model writes no transformers progress bar: its '\\r' line landed
in the node's log (not JSON under --log-format json), as the base load's once did."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CLASS_NAMES
from test_deca_io import AGREED, base_vector, deca_spec

from declora.node.deca_model import BlockModel


def test_a_deca_save_writes_no_progress_bar(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    lm = BlockModel(deca_spec("tiny-bert", "cls"), label_names=CLASS_NAMES, agreed=AGREED)
    capfd.readouterr()
    lm.save_adapter(base_vector(lm), tmp_path / "model", {})
    out, err = capfd.readouterr()
    assert (tmp_path / "model" / "declora.json").is_file()
    assert "Writing model shards" not in out + err and "\r" not in out + err
