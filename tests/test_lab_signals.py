"""A lab stopped by a signal stops its nodes, and a lab never deletes the folder of a
node still running there (one left by a lab killed with SIGKILL)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from declora.cli.app import app
from declora.node import run_folder

HOLD = "import sys, time; from pathlib import Path; from declora.node import run_folder; "
HOLD += "run_folder.hold(Path(sys.argv[1])); print('held', flush=True); time.sleep(120)"


def lab_args(tmp_path: Path, out: Path, rounds: int = 1) -> list[str]:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps(
                {
                    "text": f"row {i} " + " ".join(f"w{i}x{k}" for k in range(6)),
                    "label": "ab"[i % 2],
                }
            )
            + "\n"
            for i in range(20)
        )
    )
    return [
        *("lab", "--model", "tiny-bert", "--rounds", str(rounds), "--data", str(rows)),
        *("--nodes", "1", "--no-centralized", "--eval-every", "0", "--base-port", "0"),
        *("--output", str(out)),
    ]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_node_folder_a_running_process_holds_is_refused_and_kept(tmp_path: Path) -> None:
    """Before: a rerun into the same --output deleted lab-0 under the live node."""
    out = tmp_path / "out"
    (out / "lab-0").mkdir(parents=True)
    (out / "lab-0" / "keep.bin").write_bytes(b"node's")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out / "lab-0")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        res = CliRunner().invoke(app, [*lab_args(tmp_path, out), "--force"])
        assert res.exit_code == 2, res.output
        pid = f"pid {holder.pid}" if run_folder.holder(out / "lab-0") else "another process"
        assert res.stderr.strip().splitlines() == [
            f"error: --output {out.resolve()}: lab-0 is in use by a running node ({pid})",
            "hint: stop that node first (it was left by a lab that was killed), or choose "
            "another --output",
        ]
        assert (out / "lab-0" / "keep.bin").read_bytes() == b"node's"
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize(
    "sig",
    [signal.SIGTERM, pytest.param(signal.SIGHUP, marks=pytest.mark.slow)],
    ids=["TERM", "HUP"],
)  # HUP: make test-slow
def test_a_lab_stopped_by_a_signal_stops_its_nodes(tmp_path: Path, sig: signal.Signals) -> None:
    """Before: `kill <lab>` or a closed terminal ended the lab alone; its nodes (in their
    own sessions) trained on, and no results.json was written."""
    out = tmp_path / "out"
    lab = subprocess.Popen(
        [sys.executable, "-m", "declora.cli", *lab_args(tmp_path, out, rounds=100000)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    node = None
    try:
        deadline = time.monotonic() + 120
        while node is None and time.monotonic() < deadline and lab.poll() is None:
            time.sleep(0.5)
            if (out / "lab-0").is_dir():
                node = run_folder.holder(out / "lab-0")
        assert node is not None, "the node never started"
        time.sleep(2)  # past the node's start-up
        lab.send_signal(sig)
        _, err = lab.communicate(timeout=120)
        assert lab.returncode == 1, err
        assert not alive(node)
        summary = json.loads((out / "results.json").read_text())
        assert summary["interrupted"] and not summary["ok"]
        assert summary["exit_codes"]["lab-0"] is not None
    finally:
        for pid in (lab.pid, node):
            if pid and alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        lab.wait()
