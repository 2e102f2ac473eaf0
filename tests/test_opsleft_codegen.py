"""`python -m declora.proto.codegen` without OUT_DIR writes only into a source checkout
(opsleft): an installed copy is refused with one error line and exit 2, nothing
written; before, it wrote the generated modules into site-packages."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from declora.proto import codegen


def installed_copy(root: Path) -> Path:
    """codegen.py and declora.proto as an installed package lays them out."""
    folder = root / "site-packages" / "declora" / "proto"
    folder.mkdir(parents=True)
    for name in ("codegen.py", "declora.proto"):
        shutil.copyfile(codegen.HERE / name, folder / name)
    return folder


def test_an_installed_copy_without_out_dir_is_refused(tmp_path: Path) -> None:
    folder = installed_copy(tmp_path)
    run = subprocess.run(
        [sys.executable, str(folder / "codegen.py")], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.splitlines()
    assert lines[0].startswith("error: no OUT_DIR") and lines[1].startswith("hint: "), lines
    assert "OUT_DIR" in lines[1]
    assert sorted(p.name for p in folder.iterdir()) == ["codegen.py", "declora.proto"]


def test_an_installed_copy_writes_where_it_is_told(tmp_path: Path) -> None:
    folder = installed_copy(tmp_path)
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, str(folder / "codegen.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(codegen.GENERATED)


def test_the_checkout_is_the_default_of_make_proto() -> None:
    assert codegen.in_checkout()  # this test runs from a source checkout (editable)
    assert not codegen.in_checkout(codegen.HERE.parent / "node")
