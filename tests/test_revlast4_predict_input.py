"""`predict --input NAME.txt` where NAME.txt is a folder is one `DataError` naming it
(exit 2 through `USER_ERRORS`), not an IsADirectoryError traceback (it fails on the old
code); `generate` already named it (a guard)."""

from __future__ import annotations

from pathlib import Path

import pytest

from declora.cli.generate import read_prompts
from declora.cli.predict import read_rows
from declora.node.data_files import DataError


def test_a_folder_named_txt_is_a_data_error(tmp_path: Path) -> None:
    folder = tmp_path / "texts.txt"
    folder.mkdir()
    with pytest.raises(DataError, match=r"texts\.txt cannot be read: Is a directory"):
        read_rows(str(folder), "text", None)[0]
    with pytest.raises(DataError, match="is a folder"):
        read_prompts(None, str(folder), None)
