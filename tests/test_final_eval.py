"""A node's end of run (`rounds.RoundLoop.run`): the final evaluation of an adapter that
its last round already evaluated logs no second `eval` line; with no earlier evaluation
the final one is logged once."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from daemon_helpers import CLI, HOST, free_ports, train_args

START = 150.0  # seconds for a node to import torch and build tiny-bert (a loaded machine)


# A real node each (~10-17 s): make test-slow; make test checks both cases on an
# in-process daemon (test_testspeed_final_eval.py)
@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize(("every", "lines"), [("1", 2), ("0", 1)])
def test_the_final_eval_line_is_logged_once(
    synthetic_jsonl: Path, tmp_path: Path, every: str, lines: int
) -> None:
    [port] = free_ports(1)
    args = [*CLI, "start", "--solo", *train_args(synthetic_jsonl), "--listen", f"{HOST}:{port}"]
    args += ["--checkpoint-dir", str(tmp_path / "state"), "--rounds", "2", "--eval-every", every]
    res = subprocess.run(
        args, capture_output=True, text=True, timeout=START, env={**os.environ, "COLUMNS": "80"}
    )
    assert res.returncode == 0, res.stderr
    evals = [line for line in res.stderr.splitlines() if "] eval {" in line]
    assert len(evals) == lines, evals  # was one more: the last round's line twice
    assert " r2] eval {" in evals[-1], evals
