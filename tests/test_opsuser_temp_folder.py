"""The refusal of a machine without a writable temporary folder names every place
Python's `tempfile` looks, in its order: it named TMPDIR, /tmp and /var/tmp, but a
writable TEMP, TMP, /usr/tmp or working folder is taken too, so an operator who had
set TEMP was told of places that did not matter."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from declora.node import temp_folder


def test_the_message_names_every_place_tempfile_tries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.setenv(name, f"/{name}-folder")
    monkeypatch.chdir(tmp_path)
    tried = [
        {f"/{n}-folder": n for n in ("TMPDIR", "TEMP", "TMP")}.get(place, place)
        for place in tempfile._candidate_tempdir_list()  # Python's own list
    ]
    tried = ["the working folder" if p == os.getcwd() else p for p in tried]
    assert tuple(tried) == temp_folder.PLACES
    assert f"({', '.join(tried)})" in temp_folder.PROBLEM
