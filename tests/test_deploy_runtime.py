"""How the node behaves in a locked-down container: a read-only root filesystem.

Without a writable temporary folder (no tmpfs at /tmp, no TMPDIR) torch's import crashed
`start` with a 60-line traceback; it is one `error:` line and exit 2 before anything
loads, and the state folder is left as it was. (Tests run as root, who can write
anywhere: the missing folder is simulated where `tempfile` looks for one.)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from declora.cli.app import app
from declora.node.daemon import launch

runner = CliRunner()


def _no_temp_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    def nowhere() -> str:
        raise FileNotFoundError(2, "No usable temporary directory found in ['/tmp']")

    monkeypatch.setattr(tempfile, "tempdir", None)  # not the cached answer
    monkeypatch.setattr(tempfile, "_get_default_tempdir", nowhere)


def test_start_without_a_writable_temp_folder_is_one_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_temp_folder(monkeypatch)
    checked: list[object] = []
    monkeypatch.setattr(launch, "check_config", checked.append)  # must not be reached
    folder = tmp_path / "state" / "n0"
    res = runner.invoke(app, ["start", "--solo", "--checkpoint-dir", str(folder)])
    assert res.exit_code == 2, res.output
    lines = res.stderr.splitlines()
    assert lines[0].startswith("error: no writable temporary folder"), res.stderr
    assert "tmpfs" in res.stderr and "TMPDIR" in res.stderr, res.stderr
    assert "Traceback" not in res.output
    assert checked == [] and not (tmp_path / "state").exists()


def test_a_writable_temp_folder_passes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """TMPDIR alone (the state volume, say) is enough."""
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    launch.check_temp_folder()
    assert tempfile.gettempdir() == str(tmp_path)
