"""The lab's table in the consensus finish (revops3): since c744f89 a node's
total_rounds is its planned rounds, the finish not counted in, so the table read
"262/240"; now "262 (finish)", as `status` shows the finish apart."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from declora.cli.lab_summary import round_cell


@pytest.mark.parametrize(
    ("state", "round_", "total", "shown"),
    [
        ("training", 30, 240, "30/240"),
        ("training", 7, 0, "7/∞"),
        ("consensus", 262, 240, "262 (finish)"),
    ],
)
def test_the_labs_round_cell(state: str, round_: int, total: int, shown: str) -> None:
    st = SimpleNamespace(state=state, round=round_, total_rounds=total)
    assert round_cell(st) == shown
