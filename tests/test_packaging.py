"""The wheel `pip install .` builds (the Docker image's install) holds every file.

An editable install finds subpackages and data files on disk whatever pyproject lists;
a wheel holds only the packages and package-data listed, so one missing from the lists
is missing for users.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from pkgcheck_wheel import PARTS, build_wheel, copy_sources


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_the_wheel_holds_every_file_of_the_tree(tmp_path: Path) -> None:
    """Modules, py.typed, declora.proto and the .pyi stubs alike."""
    src = copy_sources(tmp_path / "src")
    wheel = build_wheel(src, tmp_path / "wheel")
    held = set(zipfile.ZipFile(wheel).namelist())
    files = {
        f"declora/{path.relative_to(src).as_posix()}"
        for part in PARTS
        for path in (src / part).rglob("*")
        if path.is_file()
    }
    assert sorted(files - held) == []
    assert "declora/proto/declora.proto" in held  # a data file: package-data
    assert "declora/node/daemon/daemon.py" in held  # the daemon itself
