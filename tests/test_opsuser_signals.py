"""SIGTERM (docker stop, systemctl stop) and SIGHUP (a closed ssh session) that reach
`declora-node start` while it is still loading, before it takes stop signals over,
are a Ctrl-C: one line, exit 130, nothing written. Their default action killed it with
no word (exit 143, 129), as the README promised otherwise.

The signal is sent by the process itself when a given module is first imported (an
import hook), so it lands in the phase named, with no timing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import os, signal, sys
class Hook:
    def find_spec(self, name, path, target=None):
        if name == {module!r}:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), {sig})
        return None
sys.meta_path.insert(0, Hook())
sys.argv = ["declora-node", *{args!r}]
from declora.cli.app import main
main()
"""


def _start(
    tmp_path: Path, module: str, sig: int, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    state = tmp_path / "state"
    args = ["start", "--solo", "--model", "tiny-bert", "--listen", "127.0.0.1:1"]  # never bound
    args += ["--checkpoint-dir", str(state), *extra]
    script = SCRIPT.format(module=module, sig=int(sig), args=args)
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_a_stop_signal_while_the_cli_loads_is_one_line(tmp_path: Path, sig: int) -> None:
    res = _start(tmp_path, "typer", sig)  # typer: imported while declora.cli.app loads
    assert res.returncode == 130, (res.returncode, res.stderr)
    assert res.stderr == "interrupted before the command began; nothing was written\n"
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_sigterm_while_start_checks_its_configuration(tmp_path: Path, fmt: str) -> None:
    """torch: first imported by launch's configuration check, before the daemon takes
    stop signals over; the state folder that check made is gone again."""
    res = _start(tmp_path, "torch", signal.SIGTERM, "--log-format", fmt)
    assert res.returncode == 130, (res.returncode, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    line = "interrupted before the node started; nothing was written"
    if fmt == "json":
        record = json.loads(lines[0])
        assert (record["level"], record["message"], record["exit_code"]) == ("WARNING", line, 130)
    else:
        assert lines == [line]
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("env", "flags"),
    [({"DECLORA_LOG_FORMAT": "json"}, ()), ({}, ("--log-format", "json"))],
    ids=["env", "flag"],
)
def test_json_logs_asked_make_the_loading_line_a_json_record(
    tmp_path: Path, env: dict[str, str], flags: tuple[str, ...]
) -> None:
    """The systemd unit sets DECLORA_LOG_FORMAT=json: its journal gets a record."""
    res = _start(tmp_path, "typer", signal.SIGTERM, *flags, env=env)
    assert res.returncode == 130, (res.returncode, res.stderr)
    (line,) = res.stderr.splitlines()
    record = json.loads(line)
    assert record["message"] == "interrupted before the command began; nothing was written"
    assert (record["level"], record["logger"], record["exit_code"]) == ("WARNING", "declora", 130)
    assert list(record) == ["time", "level", "logger", "node", "round", "message", "exit_code"]
