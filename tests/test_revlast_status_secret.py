"""`declora-node status` takes the swarm secret from its environment with `start`'s
rules: both DECLORA_SWARM_SECRET and DECLORA_SWARM_SECRET_FILE, an inline secret under
16 characters, an empty DECLORA_SWARM_SECRET_FILE, or a file that cannot be used is
refused as configuration (exit code 2, one `error:` line and a hint) before any call;
nothing is asked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from declora.cli.client import show_status

SECRET = "0123456789abcdef0123456789abcdef"
EXE = Path(sys.executable).with_name("declora-node")


@pytest.mark.parametrize("case", ["both", "empty", "missing", "short", "short inline"])
def test_a_secret_environment_start_refuses_is_refused_by_status(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good, short = tmp_path / "secret", tmp_path / "short"
    good.write_text(SECRET + "\n")
    short.write_text("tooshort\n")
    good.chmod(0o600), short.chmod(0o600)
    env = {
        "both": {"DECLORA_SWARM_SECRET": SECRET, "DECLORA_SWARM_SECRET_FILE": str(good)},
        "empty": {"DECLORA_SWARM_SECRET_FILE": ""},
        "missing": {"DECLORA_SWARM_SECRET_FILE": str(tmp_path / "absent")},
        "short": {"DECLORA_SWARM_SECRET_FILE": str(short)},
        "short inline": {"DECLORA_SWARM_SECRET": " tooshort\n"},
    }[case]
    for key in ("DECLORA_SWARM_SECRET", "DECLORA_SWARM_SECRET_FILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert show_status("127.0.0.1:9", False, 1.0, None) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("error: DECLORA_SWARM_SECRET"), err
    assert err[1].startswith("hint: "), err
    assert SECRET not in "\n".join(err)


def test_the_status_command_exits_2_for_a_bad_secret_file(tmp_path: Path) -> None:
    """Through the installed command (its fast path, `cli/fast.py`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECLORA_")}
    res = subprocess.run(
        [str(EXE), "status", "--target", "127.0.0.1:9"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={**env, "DECLORA_SWARM_SECRET_FILE": str(tmp_path / "absent")},
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: DECLORA_SWARM_SECRET_FILE: "), res.stderr


def test_inspect_target_exits_2_for_a_bad_secret_file(tmp_path: Path) -> None:
    """`inspect --target` asks a node as `status` does: the same configuration error."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECLORA_")}
    res = subprocess.run(
        [str(EXE), "inspect", "--target", "127.0.0.1:9"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={**env, "DECLORA_SWARM_SECRET_FILE": str(tmp_path / "absent")},
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: "), res.stderr
    assert "DECLORA_SWARM_SECRET_FILE" in res.stderr, res.stderr
