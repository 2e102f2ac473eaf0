"""The compose lab and the image as an operator locks them down: what each setting is
for is in docker-compose.yml's and deploy/Dockerfile's comments.

- only the `results` volume and a /tmp tmpfs are writable (read-only root filesystem);
- `docker compose stop` leaves the node time for its polite stop (`STOP_GRACE` for the
  round in progress, then the goodbye, checkpoint and adapter): Compose's default 10 s
  SIGKILLed it mid-round;
- a configuration mistake (exit 2) is not restarted for ever: Docker cannot tell it
  from a failure (1), so the restarts are counted;
- memory and log size are bounded; tini, not Python, is PID 1.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from test_deploy import DOCKERFILE, run_compose, seconds

from declora.node.daemon.daemon import STOP_GRACE

GiB = 1 << 30
SAVE_SECONDS = 15  # goodbye, checkpoint and adapter after the round: MiniLM takes ~1 s


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    proc = run_compose("config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    result: dict[str, dict[str, Any]] = json.loads(proc.stdout)["services"]
    assert result
    return result


def test_root_filesystem_is_read_only_with_a_tmpfs(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        assert svc.get("read_only") is True, name
        tmpfs = [t.split(":")[0] for t in svc.get("tmpfs", [])]
        assert tmpfs == ["/tmp"], (name, tmpfs)  # torch's import needs a temp folder
        writable = [v["target"] for v in svc.get("volumes", []) if not v.get("read_only")]
        assert writable == ["/results"], (name, writable)
        state = svc["environment"]["DECLORA_CHECKPOINT_DIR"]
        assert state.startswith("/results/"), (name, state)


def test_stop_grace_covers_the_polite_stop(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        grace = seconds(svc.get("stop_grace_period", "10s"))
        assert grace >= STOP_GRACE + SAVE_SECONDS, (name, grace)


def test_restarts_are_bounded(services: dict[str, dict[str, Any]]) -> None:
    """`restart: on-failure` restarted a node exiting 2 (a bad option) for ever."""
    for name, svc in services.items():
        match = re.fullmatch(r"on-failure:(\d+)", svc.get("restart", ""))
        assert match and 1 <= int(match.group(1)) <= 20, (name, svc.get("restart"))


def test_memory_and_logs_are_bounded(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        limit = int(svc.get("mem_limit", 0))
        assert GiB <= limit <= 4 * GiB, (name, limit)  # a MiniLM node peaks near 1 GiB
        logging = svc.get("logging") or {}
        assert logging.get("driver") == "json-file", name
        assert logging.get("options", {}).get("max-size"), name


def test_tini_is_pid_1_and_compose_adds_no_second_init(
    services: dict[str, dict[str, Any]],
) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"apt-get install -y --no-install-recommends tini\b", text)
    assert re.search(r'^ENTRYPOINT \["tini", "--", "declora-node"\]\s*$', text, re.M)
    for name, svc in services.items():
        assert not svc.get("init"), name  # docker-init would be PID 1, tini its child


def test_image_writes_only_results_and_tmp() -> None:
    """The working folder is the volume (a relative or default --checkpoint-dir lands
    on it, not in the container's layer), and SmolLM2's conversion, which writes to
    $XDG_CACHE_HOME, is done at build time by the user the node runs as."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines()]
    user = max(i for i, line in enumerate(lines) if line.startswith("USER "))
    convert = next(i for i, line in enumerate(lines) if "smollm2_folder()" in line)
    assert lines[user] == "USER declora" and convert > user
    assert re.search(r"XDG_CACHE_HOME=/home/declora/\.cache\b", text)
    assert 'chmod -R a+rX "${XDG_CACHE_HOME}/declora"' in text  # 0700 as converted
    workdirs = re.findall(r"^WORKDIR\s+(\S+)", text, re.M)
    assert workdirs[-1] == "/results"
    assert re.search(r"chown declora:declora /results\b", text)
