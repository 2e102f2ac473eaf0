"""The line `declora-node start` prints when a stop signal reaches it while it is
still loading is a JSON log record whenever JSON logs are asked for: by the flag, by
DECLORA_LOG_FORMAT, and by the --config file's log_format too (the file was ignored:
a plain line). The precedence is the settings': flag, then environment, then file.

A real process, a real SIGTERM: an import hook sends it as typer is imported (while
`declora.cli.app` loads), so it lands in that phase with no timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from declora.cli.loading import NOT_BEGUN

SCRIPT = """
import os, signal, sys
class Hook:
    def find_spec(self, name, path, target=None):
        if name == "typer":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGTERM)
        return None
sys.meta_path.insert(0, Hook())
sys.argv = ["declora-node", *sys.argv[1:]]
from declora.cli.app import main
main()
"""

CONFIGS = {
    "node.toml": 'solo = true\nlog_format = "{fmt}"\n',
    "node.json": '{{"solo": true, "log-format": "{fmt}"}}\n',
    "node.yaml": "solo: true\nlog_format: {fmt}\n",
}


def _stopped_while_loading(
    tmp_path: Path, config: str, fmt: str, *flags: str, env: dict[str, str] | None = None
) -> str:
    """stderr of `start --config CONFIG` (log_format = fmt) stopped while it loads."""
    path = tmp_path / config
    path.write_text(CONFIGS[config].format(fmt=fmt))
    state = tmp_path / "state"
    args = ["start", "--config", str(path), "--checkpoint-dir", str(state), *flags]
    environ = {k: v for k, v in os.environ.items() if k != "DECLORA_LOG_FORMAT"}
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, stdin=subprocess.DEVNULL,
        env={**environ, **(env or {})},
    )  # fmt: skip
    assert res.returncode == 130, (res.returncode, res.stderr)
    assert not state.exists()
    return res.stderr


def _record(stderr: str) -> dict[str, object]:
    (line,) = stderr.splitlines()
    record = json.loads(line)
    assert (record["level"], record["message"], record["exit_code"]) == (
        "WARNING",
        NOT_BEGUN,
        130,
    )
    return record


@pytest.mark.parametrize("config", list(CONFIGS))
def test_the_config_files_log_format_makes_the_loading_line_json(
    tmp_path: Path, config: str
) -> None:
    """The old code: the plain `NOT_BEGUN` line, for every kind of config file."""
    _record(_stopped_while_loading(tmp_path, config, "json"))


def test_the_flag_and_the_environment_win_over_the_file(tmp_path: Path) -> None:
    """As in the settings: a flag over DECLORA_LOG_FORMAT over the file."""
    text = _stopped_while_loading(tmp_path, "node.toml", "json", "--log-format", "text")
    assert text == NOT_BEGUN + "\n"
    env = {"DECLORA_LOG_FORMAT": "text"}
    assert _stopped_while_loading(tmp_path, "node.toml", "json", env=env) == NOT_BEGUN + "\n"
    env = {"DECLORA_LOG_FORMAT": "json"}
    _record(_stopped_while_loading(tmp_path, "node.toml", "text", env=env))
    assert _stopped_while_loading(tmp_path, "node.toml", "text") == NOT_BEGUN + "\n"


def test_a_config_file_that_cannot_be_read_leaves_the_line_plain(tmp_path: Path) -> None:
    """Its problem is the settings' to report; the loading line is the plain one."""
    (tmp_path / "node.toml").mkdir()  # a folder: no file to read
    state = tmp_path / "state"
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, "start", "--config", str(tmp_path / "node.toml"),
         "--checkpoint-dir", str(state)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "DECLORA_LOG_FORMAT"},
    )  # fmt: skip
    assert (res.returncode, res.stderr) == (130, NOT_BEGUN + "\n")
