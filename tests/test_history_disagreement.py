"""A history line records no disagreement (null) when the node has no live neighbour:
0.0 there read as perfect agreement (the network bench saw it when links failed)."""

from types import SimpleNamespace

import numpy as np

from declora.node.daemon.status import round_entry


class _Node:
    trainer = SimpleNamespace(step=3)
    bytes_sent = 1
    bytes_received = 2

    def disagreement(self, live: list[str]) -> float:
        return max((0.25 for _ in live), default=0.0)


def _line(live: list[str]) -> dict:
    peers = SimpleNamespace(live=[SimpleNamespace(node_id=p) for p in live])
    report = SimpleNamespace(loss=np.nan, last_eval=None, self_weight=1.0, last_round_seconds=0.1)
    return round_entry(SimpleNamespace(round=4), report, _Node(), peers, "train", False)  # type: ignore[arg-type]


def test_no_live_neighbour_records_no_disagreement() -> None:
    assert _line([])["disagreement"] is None


def test_live_neighbours_record_the_gap() -> None:
    assert _line(["b"])["disagreement"] == 0.25
