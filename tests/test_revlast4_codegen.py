"""`python -m declora.proto.codegen ""` (an unset "$OUT_DIR") is refused with exit 2,
nothing written; it wrote the generated modules into the current folder (fails without
/tmp/revlast4-codegen.patch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from declora.proto import codegen


def test_an_empty_out_dir_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert codegen.main([""]) == 2
    error, hint = capsys.readouterr().err.splitlines()
    assert error == "error: an empty OUT_DIR (not the current folder)" and "OUT_DIR" in hint
    assert list(tmp_path.iterdir()) == []
