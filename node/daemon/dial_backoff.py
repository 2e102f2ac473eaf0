"""When a candidate address whose live node refused this node's handshake may be
dialled again (`DialBackoff`, used by `handshake.Handshaker.connect_known`)."""

from __future__ import annotations

from collections.abc import Iterable

from declora.node.daemon.peers import BACKOFF_FIRST, BACKOFF_MAX_CONFIGURED


class DialBackoff:
    """When a candidate address whose live node refused this node's handshake may be
    dialled again: `BACKOFF_FIRST` s after the first refusal, doubling with each
    refusal in a row, at most `BACKOFF_MAX_CONFIGURED` s (as the peer table's backoff
    for configured peers), counted from the refusal (a node slow to refuse does not
    shorten the wait). An address without an entry is always due; only `refused`
    adds or lengthens one, `succeeded` forgets it, and `keep` forgets those of
    addresses no longer offered (`connect_known`: candidates not in the peer table),
    so there is at most one entry per candidate."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, float]] = {}  # address: (refusals, next dial)

    def due(self, address: str, now: float) -> bool:
        """Whether `address` may be dialled at `now` (monotonic seconds)."""
        entry = self.entries.get(address)
        return entry is None or now >= entry[1]

    def next_dial(self, address: str) -> float | None:
        """When `address` is due next; None: it has no entry (always due)."""
        entry = self.entries.get(address)
        return None if entry is None else entry[1]

    def refused(self, address: str, now: float) -> float:
        """Count a refusal of a dial of `address` that came at `now` (monotonic
        seconds: when the refusal arrived, not when the dial began); the seconds to
        wait from then."""
        count = self.entries.get(address, (0, 0.0))[0] + 1
        wait = min(BACKOFF_FIRST * 2 ** min(count - 1, 16), BACKOFF_MAX_CONFIGURED)
        self.entries[address] = (count, now + wait)
        return wait

    def succeeded(self, address: str) -> None:
        """A dial of `address` joined: its entry is forgotten."""
        self.entries.pop(address, None)

    def keep(self, addresses: Iterable[str]) -> None:
        """Forget the entries of addresses not among `addresses`."""
        offered = set(addresses)
        for address in [a for a in self.entries if a not in offered]:
            del self.entries[address]
