"""The deploy files as an operator follows them: the example config the systemd unit
installs resumes after a restart; the unit counts an operator's stop as a success and
keeps its sandbox; the image's build context is only what the Dockerfile copies."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_deploy_service import directives

from declora.node.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "node.example.toml"
UNIT = ROOT / "deploy" / "declora-node.service"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
IGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in [k for k in os.environ if k.startswith("DECLORA_")]:
        monkeypatch.delenv(key)


def test_the_example_config_resumes_after_a_restart(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unit restarts a failed node (exit 1) with this file as /etc/declora/node.toml:
    with `resume = false` the restart found the run's checkpoints and exited 2, which
    RestartPreventExitStatus=2 made final. Its checkpoint_dir is relative (to the
    unit's WorkingDirectory)."""
    monkeypatch.chdir(tmp_path)
    assert load_settings({}, EXAMPLE).resume is False  # a first start: none yet
    state = load_settings({}, EXAMPLE).state_dir
    (tmp_path / state / "ckpt-00000005").mkdir(parents=True)
    (tmp_path / state / "LATEST").write_text("ckpt-00000005\n")
    assert load_settings({}, EXAMPLE).resume is True  # the restart continues


def test_an_operators_stop_is_not_a_failure() -> None:
    """130: a stop signal before the node began (`start` while loading) or a second
    one; systemd counted it as a failed unit."""
    d = directives()
    assert "130" in d["SuccessExitStatus"][0].split()
    assert d["CapabilityBoundingSet"] == [""]  # none at all
    assert d["SystemCallArchitectures"] == ["native"]
    assert "ProtectClock" not in d  # its DeviceAllow= would close a GPU's devices


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_the_units_exposure_is_ok(tmp_path: Path) -> None:
    """`systemd-analyze security --offline` scores the unit (7.0 MEDIUM before)."""
    node = Path(sys.executable).with_name("declora-node")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/declora/bin/declora-node", str(node)))
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", proc.stdout + proc.stderr)
    if found is None:
        pytest.skip(f"this systemd-analyze cannot score offline: {proc.stderr.strip()[:200]}")
    assert float(found.group(1)) < 4.0, proc.stdout[-500:]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker's .dockerignore rules exclude `path` (the last match decides;
    a pattern also covers what lies under a folder it matches)."""
    out = False
    parts = path.split("/")
    for pattern in patterns:
        keep = pattern.startswith("!")
        pat = pattern.lstrip("!")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(p, pat[3:]) for p in parts)
        else:
            hit = any(fnmatch.fnmatchcase(p, pat) and "/" not in p for p in prefixes[:1])
            hit = hit or any(p == pat for p in prefixes)
        if hit:
            out = not keep
    return out


def test_the_build_context_is_what_the_dockerfile_copies() -> None:
    """Without an ignore file `docker build .` sent the 2 GB .venv, build/ and .git to
    the builder, and `COPY node` shipped __pycache__ into the image."""
    assert IGNORE.is_file(), "no deploy/Dockerfile.dockerignore"
    patterns = [
        line.strip()
        for line in IGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = set()
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not words[1].startswith("--from"):
            copied.update(w.rstrip("*") for w in words[1:-1])
    assert copied >= {"node", "cli", "proto", "pyproject.toml"}, copied
    for source in copied:
        assert not _ignored(source, patterns), f"{source} is copied but ignored"
        if (ROOT / source).is_dir():
            assert not _ignored(f"{source}/__init__.py", patterns)
            assert _ignored(f"{source}/__pycache__/x.pyc", patterns)
    for bulk in (".venv/bin/python", ".git/HEAD", "build/x", "results/x", "tests/conftest.py"):
        assert _ignored(bulk, patterns), bulk
