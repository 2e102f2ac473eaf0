"""The line a stop signal prints while `start` loads is a JSON record exactly when the
settings would log JSON: a --log-format or DECLORA_LOG_FORMAT they refuse ("JSON") is
not json (its refusal is the plain `error:` line), and the variable's name is read in
any case, as the settings read it. A real process, a real SIGTERM sent as typer is
imported (an import hook), so it lands while the CLI loads, with no timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def _stopped_while_loading(tmp_path: Path, *flags: str, env: dict[str, str]) -> str:
    state = tmp_path / "state"
    environ = {k: v for k, v in os.environ.items() if k.upper() != "DECLORA_LOG_FORMAT"}
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, "start", "--checkpoint-dir", str(state), *flags],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, stdin=subprocess.DEVNULL,
        env={**environ, **env},
    )  # fmt: skip
    assert res.returncode == 130, (res.returncode, res.stderr)
    return res.stderr


def test_a_log_format_the_settings_refuse_is_not_json(tmp_path: Path) -> None:
    """The old code: a JSON record for `--log-format JSON` and DECLORA_LOG_FORMAT=Json."""
    assert _stopped_while_loading(tmp_path, "--log-format", "JSON", env={}) == NOT_BEGUN + "\n"
    env = {"DECLORA_LOG_FORMAT": "Json"}
    assert _stopped_while_loading(tmp_path, env=env) == NOT_BEGUN + "\n"


def test_the_variables_name_in_any_case(tmp_path: Path) -> None:
    """The old code: the plain line for declora_log_format=json."""
    (line,) = _stopped_while_loading(tmp_path, env={"declora_log_format": "json"}).splitlines()
    assert json.loads(line)["message"] == NOT_BEGUN
