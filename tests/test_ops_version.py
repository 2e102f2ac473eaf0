"""The release version has one source, node/version.py, that pyproject.toml reads
statically (no import, no network, no VCS), and it is no longer the 0.1.0 that every
earlier release reported."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from declora.node.version import VERSION

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_takes_the_version_from_the_one_source() -> None:
    from setuptools.config.pyprojecttoml import read_configuration

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    built = read_configuration(ROOT / "pyproject.toml")["project"]["version"]
    assert built == VERSION


def test_the_version_is_a_release_number_above_every_earlier_one() -> None:
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", VERSION)
    assert match is not None, VERSION
    assert tuple(map(int, match.groups())) > (0, 1, 0)  # what releases so far reported
