"""Build declora's wheel the way `pip install .` does, from a copy of the tree.

setuptools writes build/ and *.egg-info beside the sources, so the copy keeps them out
of the checkout; it holds only what the Docker image COPYs (deploy/Dockerfile).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("node", "cli", "proto")


def copy_sources(dest: Path) -> Path:
    """pyproject.toml, README.md and the three source folders (no bytecode) in `dest`."""
    dest.mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", dest)
    for name in ("README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy(ROOT / name, dest)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in PARTS:
        shutil.copytree(ROOT / part, dest / part, ignore=ignore)
    return dest


def build_wheel(src: Path, out: Path) -> Path:
    """The wheel of the sources in `src`, written into `out` (no network, no isolation)."""
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*build, "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr
    [wheel] = out.glob("declora-*.whl")
    return wheel
