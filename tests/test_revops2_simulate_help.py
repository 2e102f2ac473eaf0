"""`simulate --help` on a machine without a writable temporary folder (a read-only
root filesystem) shows the help: `SimConfig`, whose fields are its options, lives in
`sim_config`, which does not import torch. It printed the temporary-folder error,
exit 2, as `simulator` (torch at its top) held it (revops2)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# no temporary folder, and torch's import fails as it would there
SCRIPT = """
import sys, tempfile

def nowhere():
    raise FileNotFoundError(2, "No usable temporary directory found in ['/tmp']")

tempfile.tempdir = None
tempfile._get_default_tempdir = nowhere

class NoTorch:
    def find_spec(self, name, path, target=None):
        if name == "torch":
            raise FileNotFoundError(2, "No usable temporary directory found")
        return None

sys.meta_path.insert(0, NoTorch())
sys.argv = ["declora-node", *{args!r}]
from declora.cli.app import main
main()
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT.format(args=list(args))],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={"COLUMNS": "100", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def test_simulate_help_needs_no_temp_folder() -> None:
    res = _run("simulate", "--help")
    assert res.returncode == 0, res.stderr  # the old code: 2, the temp-folder error
    assert "--nodes" in res.stdout and "--byzantine" in res.stdout, res.stdout
    assert res.stderr == ""


def test_the_help_lists_simulate_and_simulate_still_refuses() -> None:
    listed = _run("--help")
    assert listed.returncode == 0 and " simulate " in listed.stdout, listed.stderr
    run = _run("simulate")
    assert run.returncode == 2, run.stderr
    [error, hint] = run.stderr.splitlines()
    assert error.startswith("error: no writable temporary folder") and "tmpfs" in hint


@pytest.mark.parametrize("module", ["declora.node.sim_config", "declora.cli.lab"])
def test_the_options_modules_import_no_torch(module: str) -> None:
    res = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; print('torch' in sys.modules)"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.stdout.strip() == "False", res.stderr
