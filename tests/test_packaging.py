"""The wheel `pip install .` builds (the Docker image's install) holds every module.

An editable install finds subpackages on disk whatever pyproject lists; a wheel holds
only the packages listed, so a subpackage missing from the list is missing for users.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("node", "cli", "proto")


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_the_wheel_holds_every_module_of_the_tree(tmp_path: Path) -> None:
    src = tmp_path / "src"  # setuptools writes build/ beside the sources: not in the tree
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    for name in ("README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy(ROOT / name, src)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in PARTS:
        shutil.copytree(ROOT / part, src / part, ignore=ignore)
    out = tmp_path / "wheel"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*build, "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr
    [wheel] = out.glob("declora-*.whl")
    held = set(zipfile.ZipFile(wheel).namelist())
    modules = {
        f"declora/{path.relative_to(src).as_posix()}"
        for part in PARTS
        for path in (src / part).rglob("*.py")
    }
    assert modules, "no module found in the tree"
    assert sorted(modules - held) == []
    assert "declora/node/daemon/daemon.py" in held  # the daemon itself
