"""Every command that imports torch refuses a machine without a writable temporary
folder (a read-only root filesystem without a tmpfs) with one `error:` line and a hint,
before any work; `start` did already (`launch.check_temp_folder`), the others traced
back from inside torch's import. `status` and `config` need none and still run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from declora.cli.app import app

runner = CliRunner()
ERROR = (
    "error: no writable temporary folder (TMPDIR, TEMP, TMP, /tmp, /var/tmp, /usr/tmp, "
    "the working folder): torch needs one"
)


def _no_temp_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    def nowhere() -> str:
        raise FileNotFoundError(2, "No usable temporary directory found in ['/tmp']")

    monkeypatch.setattr(tempfile, "tempdir", None)  # not the cached answer
    monkeypatch.setattr(tempfile, "_get_default_tempdir", nowhere)


@pytest.mark.parametrize(
    "args",
    [
        ["lab", "--nodes", "2", "--data", "absent.jsonl"],
        ["simulate", "--data", "absent.jsonl"],
        ["experiment", "--task", "cls", "--only", "no-such-run", "--output", "{out}"],
        ["predict", "{out}"],
        ["generate", "{out}"],
        ["export", "{out}", "--output", "{out}/x"],
        ["inspect", "{out}"],
        ["certs", "--output", "{out}/pki", "--nodes", "a"],
    ],
    ids=lambda args: args[0],
)
def test_a_command_that_loads_torch_is_one_error_without_a_temp_folder(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _no_temp_folder(monkeypatch)
    before = sorted(tmp_path.iterdir())
    res = runner.invoke(app, [a.format(out=tmp_path / "out") for a in args])
    assert res.exit_code == 2, res.output
    lines = res.stderr.splitlines()
    assert lines[0].startswith(ERROR), res.stderr
    assert lines[1].startswith("hint: mount a tmpfs at /tmp") and "TMPDIR" in lines[1]
    assert len(lines) == 2 and res.stdout == ""
    assert sorted(tmp_path.iterdir()) == before  # nothing written


def test_config_needs_no_temp_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_temp_folder(monkeypatch)
    res = runner.invoke(app, ["config", "--format", "json"])
    assert res.exit_code == 0, res.output


def test_a_read_only_root_for_real(tmp_path: Path) -> None:
    """/tmp, /var/tmp and the working folder mounted read-only (a mount namespace: root
    only): `--help` lists the commands, `simulate` (whose options' module imports
    torch) and `lab` are one error each, not a traceback."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a read-only mount namespace needs root and unshare")
    exe = Path(sys.executable).with_name("declora-node")
    script = (
        "mount --bind /tmp /tmp && mount -o remount,bind,ro /tmp && "
        "mount --bind /var/tmp /var/tmp && mount -o remount,bind,ro /var/tmp && "
        f"mount --bind {tmp_path} {tmp_path} && mount -o remount,bind,ro {tmp_path} && "
        f'cd {tmp_path} && for a in --help simulate "lab --nodes 2"; do '
        f'echo "== $a"; {exe} $a; echo "rc $?"; done'
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TMPDIR", "TEMP", "TMP")}
    res = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if "mount:" in res.stderr:
        pytest.skip(f"cannot mount here: {res.stderr.splitlines()[0]}")
    out = res.stdout + res.stderr
    assert "Traceback" not in out, out
    helped, simulate, lab = res.stdout.split("== ")[1:]
    assert " lab " in helped and "status" in helped and helped.endswith("rc 0\n"), helped
    assert simulate.endswith("rc 2\n") and lab.endswith("rc 2\n"), res.stdout
    assert res.stderr.count(ERROR) == 2, res.stderr
