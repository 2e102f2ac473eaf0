"""A receiver's race is not the sender's reason to drop it (audit: `neighbour b left
the live set: push failed: ABORTED state moved on while the payload arrived` — b's own
state moved on, its `raced`, and the sender dropped the live b, costing a re-handshake
and, on slow links, a cycle of drops). Real gRPC on 127.0.0.1, as in test_peer_stall."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
from test_peer_stall import Neighbour, rounds_with

from declora.proto import pb


class RacingNeighbour(Neighbour):
    """Answers its first `races` pushes as the inbox does when its state moved on while
    the payload arrived (ABORTED, counted `raced` there), then accepts them."""

    def __init__(self, races: int) -> None:
        super().__init__(0.0)
        self.races = races

    def Push(
        self, request_iterator: Iterator[pb.Chunk], context: grpc.ServicerContext
    ) -> pb.PushAck:
        if self.pushes < self.races:
            for _ in request_iterator:
                pass
            self.pushes += 1
            context.abort(grpc.StatusCode.ABORTED, "state moved on while the payload arrived")
        return super().Push(request_iterator, context)


def test_a_raced_push_skips_the_round_and_keeps_the_neighbour(synthetic_jsonl: Path) -> None:
    """Before: the first ABORTED dropped the neighbour, and round 2 sent it nothing."""
    neighbour = RacingNeighbour(races=1)
    a, _, live = rounds_with(synthetic_jsonl, neighbour, rounds=2)
    assert live == [True, True]
    assert neighbour.pushes == 2  # one a round: a raced push is not retried
    assert a.counters.rejected["push_raced"] == 1
    assert a.peers.peers["n"].bytes_sent > 0  # round 2 was delivered


def test_a_neighbour_racing_every_round_stays_live(synthetic_jsonl: Path) -> None:
    """Each raced round costs one push and one count, nothing more."""
    neighbour = RacingNeighbour(races=3)
    a, _, live = rounds_with(synthetic_jsonl, neighbour, rounds=3)
    assert live == [True, True, True]
    assert neighbour.pushes == 3
    assert a.counters.rejected["push_raced"] == 3
    assert a.peers.peers["n"].bytes_sent == 0
