"""When the peer table dials a known peer that is not live again (`Redial`).

What callers may rely on:
- a peer is due once its `next_dial` (monotonic seconds) has passed; each dial
  returned by `due` counts (`Peer.dials`, since it was last live) and doubles the
  next wait, from `first` up to `cap` (`cap_configured` for a static or discovered
  address), and `ended` restarts the wait from the dial's end, so a dial slow to
  fail takes nothing off it;
- a peer that introduced itself (an inbound Hello) and never delivered a validated
  payload is dialled at most once; one without an address, or one the caller skips
  (a peer that finished), never.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from declora.node.daemon.peers import Peer


@dataclass(frozen=True)
class Redial:
    """The re-dial schedule of peers that are not live (seconds)."""

    first: float  # the wait after a drop, and after the first dial
    cap: float  # the longest wait, for peers that introduced themselves
    cap_configured: float  # ...and for static or discovered addresses

    def due(self, peers: Iterable[Peer], now: float, skip: Callable[[Peer], bool]) -> list[Peer]:
        """The `peers` not live whose wait has passed at `now`, but those `skip` names;
        each one returned is counted as dialled and is due again its next wait after
        `now` (until `ended`)."""
        due = []
        for p in peers:
            if p.live or now < p.next_dial or not p.address or skip(p):
                continue
            if not p.configured and not p.proven and p.dials >= 1:
                continue  # introduced itself, never proved anything: dialled once
            p.dials += 1
            p.next_dial = now + self.wait(p)
            due.append(p)
        return due

    def ended(self, peer: Peer, now: float) -> None:
        """A dial of `peer` ended at `now`: unless it joined, its wait counts from then."""
        if not peer.live:
            peer.next_dial = now + self.wait(peer)

    def dropped(self, peer: Peer, now: float) -> None:
        """`peer` left the live set at `now`: due `first` seconds later."""
        peer.next_dial = now + self.first

    def wait(self, peer: Peer) -> float:
        """Seconds between `peer`'s dials: doubling with each dial since it was live."""
        cap = self.cap_configured if peer.configured else self.cap
        return min(self.first * 2 ** min(max(peer.dials, 1) - 1, 16), cap)
