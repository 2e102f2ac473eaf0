"""`lab`'s results.json stores each node's gap as its summary line shows it: a tie is
0.0 (the text's +0.0), never -0.0."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from declora.cli.lab import LabConfig, LabNode
from declora.cli.lab_summary import summarize
from declora.node.scores import score_for


class _Done:
    """A reference thread that has finished with `result`."""

    def __init__(self, result: dict[str, Any]) -> None:
        self.result, self.error = result, None

    def is_alive(self) -> bool:
        return False


def _lab(tmp_path: Path, accuracies: list[float], reference: float) -> dict[str, Any]:
    nodes = []
    for i, acc in enumerate(accuracies):
        folder = tmp_path / f"lab-{i}"
        (folder / "adapter").mkdir(parents=True)
        (folder / "adapter" / "declora.json").write_text(json.dumps({"eval": {"accuracy": acc}}))
        process = SimpleNamespace(returncode=0)
        nodes.append(LabNode(i, f"lab-{i}", "127.0.0.1:1", folder, process, None))  # type: ignore[arg-type]
    central = _Done({"eval": {"accuracy": reference}, "steps": 1})
    console = SimpleNamespace(print=lambda *a, **k: None)
    cfg = LabConfig(nodes=len(nodes))
    summarize(cfg, tmp_path, "s", nodes, central, 0.0, False, False, console)  # type: ignore[arg-type]
    return json.loads((tmp_path / "results.json").read_text())


def test_a_tie_is_stored_as_zero_not_minus_zero(tmp_path: Path) -> None:
    results = _lab(tmp_path, [1 / 3, 0.9996], 1 / 3 + 0.0)
    gaps = results["gap_points"]
    # 1/3 vs 1/3 is a tie; 0.9996 vs 1/3 is far above: both as the text shows them
    assert gaps["lab-0"] == 0.0 and math.copysign(1.0, gaps["lab-0"]) == 1.0
    assert '"lab-0": 0.0' in (tmp_path / "results.json").read_text()


@pytest.mark.parametrize(("acc", "ref"), [(0.97, 0.965), (0.90, 0.96), (0.9996, 1.0)])
def test_stored_gap_is_the_summary_lines_figure(tmp_path: Path, acc: float, ref: float) -> None:
    stored = _lab(tmp_path, [acc], ref)["gap_points"]["lab-0"]
    assert f"{stored:+.1f} points" == score_for("cls").gap_text(acc, ref)
