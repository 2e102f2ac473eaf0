"""The `declora-node` command as a user runs it (real subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from declora.node import __version__

CLI = [sys.executable, "-m", "declora.cli"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_version_and_help() -> None:
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"declora {__version__}"
    for cmd in ("start", "status", "inspect", "lab", "simulate", "experiment"):
        res = run(cmd, "--help")
        assert res.returncode == 0, res.stderr
        assert "Usage" in res.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--listen", "127.0.0.1:70000"], "--listen"),
        (["--codec", "q9"], "--codec"),
        (["--partition", "3/2"], "--partition"),
        (["--resume"], "--checkpoint-dir"),
        (["--rank", "0"], "--rank"),
    ],
)
def test_start_refuses_bad_config(args: list[str], needle: str) -> None:
    res = run("start", *args)
    assert res.returncode == 2
    assert "bad configuration" in res.stderr and needle in res.stderr


def test_start_refuses_missing_config_file(tmp_path: Path) -> None:
    res = run("start", "--config", str(tmp_path / "nope.toml"))
    assert res.returncode == 2 and "config file not found" in res.stderr


def test_inspect_rejects_non_adapter(tmp_path: Path) -> None:
    res = run("inspect", str(tmp_path))
    assert res.returncode == 1 and "neither a PEFT adapter" in res.stderr
    assert run("inspect").returncode == 2


@pytest.mark.integration
def test_lab_runs_real_daemons_and_inspect_reads_their_adapters(tmp_path: Path) -> None:
    out = tmp_path / "lab"
    res = run(
        "lab", "--nodes", "3", "--model", "tiny-bert", "--rounds", "3", "--local-steps", "2",
        "--max-eval", "40", "--consensus-rounds", "20", "--base-port", "0", "--output", str(out),
        "--format", "json",
        timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)
    assert summary["ok"] and set(summary["exit_codes"].values()) == {0}
    assert set(summary["final_accuracy"]) == {"lab-0", "lab-1", "lab-2"}
    assert summary["centralized"]["steps"] == 3 * 3 * 2
    for node in ("lab-0", "lab-1", "lab-2"):
        rounds = summary["histories"][node]
        assert [r["round"] for r in rounds if r["phase"] == "train"] == [1, 2, 3]
        assert (out / node / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "results.png").stat().st_size > 1000
    info = run("inspect", str(out / "lab-0" / "adapter"), "--format", "json")
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["kind"] == "adapter" and data["fingerprint"] and data["lora"]["r"] == 8
    assert all(t["finite"] for t in data["tensors"])
    ckpt = run("inspect", str(out / "lab-1"), "--format", "json")
    assert ckpt.returncode == 0 and json.loads(ckpt.stdout)["kind"] == "checkpoint"


def test_experiment_lists_runs_and_tables_what_is_finished(tmp_path: Path) -> None:
    listed = run("experiment", "--list")
    assert listed.returncode == 0 and "base" in listed.stdout and "q4" in listed.stdout
    res = run("experiment", "--output", str(tmp_path), "--table")
    assert res.returncode == 0, res.stderr
    assert "Not run yet: base, q4" in res.stdout and (tmp_path / "table.md").is_file()
    assert run("experiment", "--only", "nope").returncode == 2
