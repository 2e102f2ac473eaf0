"""The `declora-node` command as a user runs it (real subprocesses)."""

from __future__ import annotations

import json
import os
import re
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
        (["--solo", "--peers", "127.0.0.1:7001"], "--solo"),
        (["--rank", "0"], "--rank"),
        (["--gossip-acceleration", "chebyshev"], "chebyshev:LAMBDA"),
        (["--gossip-acceleration", "chebyshev:1.2"], "[0, 1)"),
        (["--step-after-mixing", "--local-steps", "3"], "--local-steps 1"),
    ],
)
def test_start_refuses_bad_config(args: list[str], needle: str) -> None:
    res = run("start", *args)
    assert res.returncode == 2
    assert "bad configuration" in res.stderr and needle in res.stderr


def test_start_help_shows_every_option_with_help_and_default() -> None:
    from declora.cli.options import help_text
    from declora.node.settings import NodeSettings, default_text, option_name

    env = {**os.environ, "COLUMNS": "400"}  # one row per option, nothing wrapped
    res = subprocess.run(
        [*CLI, "start", "--help"], capture_output=True, text=True, timeout=120, env=env
    )
    assert res.returncode == 0, res.stderr
    rows = {
        m.group(1): line
        for line in res.stdout.splitlines()
        if (m := re.search(r"(--[a-z-]+)(?:\s+--no-[a-z-]+)?\s+[<\[]", line))
    }
    for name in NodeSettings.model_fields:
        row = rows.get(option_name(name))
        assert row is not None, f"{option_name(name)} missing from start --help"
        assert help_text(name) in row, row
        assert f"[default: ({default_text(name)})]" in row, row


def test_config_prints_each_value_and_where_it_came_from(tmp_path: Path) -> None:
    node = tmp_path / "node.toml"
    node.write_text("rank = 4\nseed = 3\n")
    env = {**os.environ, "DECLORA_LR": "0.01"}
    res = subprocess.run(
        [*CLI, "config", "--config", str(node), "--seed", "5", "--format", "json"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["seed"] == {"value": 5, "source": "flag"}
    assert got["lr"] == {"value": 0.01, "source": "env DECLORA_LR"}
    assert got["rank"] == {"value": 4, "source": "file node.toml"}
    assert got["codec"] == {"value": "fp32", "source": "default"}
    table = subprocess.run(
        [*CLI, "config", "--config", str(node)], capture_output=True, text=True, timeout=120
    )
    assert table.returncode == 0, table.stderr
    [row] = [line.split() for line in table.stdout.splitlines() if line.startswith("rank ")]
    assert row == ["rank", "4", "file", "node.toml"]


def test_start_refuses_missing_config_file(tmp_path: Path) -> None:
    res = run("start", "--config", str(tmp_path / "nope.toml"))
    assert res.returncode == 2 and "config file not found" in res.stderr


def test_inspect_rejects_non_adapter(tmp_path: Path) -> None:
    res = run("inspect", str(tmp_path))
    assert res.returncode == 2 and "is not a PEFT adapter folder" in res.stderr
    assert res.stderr.splitlines()[1].startswith("hint: "), res.stderr
    assert run("inspect").returncode == 2


@pytest.mark.integration
@pytest.mark.slow  # 40 s of real daemon processes; in make test-slow
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


def test_lab_nodes_get_the_whole_recipe_and_wait_for_every_neighbour(tmp_path: Path) -> None:
    from declora.cli.lab import LabConfig, node_config
    from declora.cli.lab_summary import summary_line
    from declora.node.scores import score_for
    from declora.node.settings import NodeSettings

    cfg = LabConfig(nodes=3, model="tiny-bert")
    assert cfg.node_lr == pytest.approx(cfg.lr * 3**0.5) and cfg.swarm_size == 3
    assert cfg.gradient_tracking and cfg.local_steps == 1 and cfg.lr_schedule == "cosine"
    assert cfg.gossip_steps == 1  # a ring of 3 is complete: one exchange mixes
    ring = node_config(cfg, 0, "127.0.0.1:7001", ["127.0.0.1:7002"], tmp_path, "s")
    settings = NodeSettings(**ring)
    assert settings.wanted_peers == 1 and settings.min_peers == -1
    assert (settings.consensus_rounds, settings.node_lr) == (50, cfg.node_lr)
    assert (settings.swarm_size, settings.warmup_steps) == (3, cfg.warmup_steps)
    star = LabConfig(nodes=6, topology="star", model="tiny-bert")
    assert (
        NodeSettings(**node_config(star, 1, "127.0.0.1:7002", [], tmp_path, "s")).gossip_steps == 4
    )
    fast_node = NodeSettings(**node_config(star, 1, "127.0.0.1:7002", [], tmp_path, "s"))
    # the lab accelerates by default and hands its nodes the graph's lambda
    assert fast_node.chebyshev_lambda == pytest.approx(5 / 6) and fast_node.step_after_mixing
    assert fast_node.agreed_facts() == star.agreed_facts()
    # off with K = 2, also given in `extra` (whose recipe options count as the lab's own,
    # so no node refuses what the lab resolved)
    slow_labs = [LabConfig(nodes=6, topology="star", model="tiny-bert", local_steps=2)] + [
        LabConfig(nodes=6, topology="star", model="tiny-bert", extra=extra)
        for extra in ({"local_steps": 2}, {"gradient_tracking": False}, {"precision": "fp16"})
    ]
    for slow in slow_labs:
        slow_node = NodeSettings(**node_config(slow, 1, "127.0.0.1:7002", [], tmp_path, "s"))
        assert (slow_node.gossip_acceleration, slow_node.step_after_mixing) == ("none", False)
    ring3 = NodeSettings(**node_config(cfg, 0, "127.0.0.1:7001", [], tmp_path, "s"))
    assert ring3.gossip_acceleration == "none"  # 3 nodes average exactly: nothing to speed
    assert ring3.step_after_mixing
    alone = NodeSettings(**node_config(LabConfig(nodes=1), 0, "127.0.0.1:7001", [], tmp_path, "s"))
    assert alone.solo and alone.wanted_peers == 0
    assert summary_line("lab-0", 0.965, 0.97) == (
        "  lab-0: accuracy 0.9650 (-0.5 points vs centralized)"
    )
    lm = score_for("lm")
    assert summary_line("lab-0", 36.9, 36.0, lm) == (
        "  lab-0: perplexity 36.9000 (+2.5% perplexity vs centralized)"
    )
