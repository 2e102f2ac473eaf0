"""A --data folder's hint names only its regular data files, never a FIFO or a
folder named like one (passing either would be refused)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from declora.node.data_files import DataError, read_splits


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_folder_hint_names_its_regular_data_files_only(tmp_path: Path) -> None:
    (tmp_path / "good.jsonl").write_text('{"text": "a", "label": "x"}\n')
    os.mkfifo(tmp_path / "pipe.jsonl")
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(DataError) as err:
        read_splits(tmp_path)
    assert "not one written by Dataset.save_to_disk" in err.value.message
    assert f"pass one of its data files ({tmp_path / 'good.jsonl'});" in (err.value.hint or "")
