"""Checked payloads queued by round, and what each neighbour has proven by them.

`Inbox` (which admits pushes) is a `RoundQueue`; the exchange reads the queue.
Invariants callers may rely on:
- a payload is queued only onto the copy it followed, and leaves the queue when its
  sender's copy is forgotten or restarts at the init (`PeerTable.copy_forgotten`,
  `drop_queued`): every payload queued can be applied at its mix; each one dropped
  still counts as delivered (`arrived`);
- the queue holds payloads of ids the peer table knows only (`forget_unknown`, before
  each is queued), at most one per known id and round;
- a neighbour's verified round (`verified_round`) holds for the copy its validated
  payloads followed: once it is live again on another copy it is at most what its new
  Hello claims, on every copy after until a payload proves more; while it is not
  live nothing is reset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from declora.node.daemon.peers import Peer, PeerTable


@dataclass
class Inbound:
    """A neighbour's checked payload, queued for the mix of its round."""

    kind: int
    vector: np.ndarray
    degree: int
    seq: int
    scale: float = 1.0  # update_scale of the sender's codec (deltas only)
    tracker: np.ndarray | None = None  # the sender's z (gradient tracking), checked
    entries: np.ndarray | None = None  # keyframes: those the sender mixes (None: all)


class RoundQueue:
    """Payloads queued by round (`queued`), the deliveries dropped since (`dropped`),
    and the copy each neighbour's verified round was proven on (`verified`)."""

    def __init__(self, peers: PeerTable) -> None:
        self.peers = peers
        self.queued: dict[int, dict[str, Inbound]] = {}
        self.verified: dict[str, int] = {}  # node id -> `Peer.copy` its round holds for
        # senders whose queued round-r payload `drop_queued` removed: they delivered
        # round r, and send no other, so a round does not wait for them again
        self.dropped: dict[int, set[str]] = {}
        peers.copy_forgotten = self.drop_queued

    def queue(self, r: int, peer: Peer, inbound: Inbound) -> None:
        """Queue `peer`'s validated round-`r` payload (after `forget_unknown`): the
        peer has completed round r - 1, as of its current copy (`verified_round`)."""
        self.forget_unknown()
        self.queued.setdefault(r, {})[peer.node_id] = inbound
        peer.round = r - 1
        self.verified[peer.node_id] = peer.copy

    def arrived(self, r: int) -> set[str]:
        """The senders that delivered a round-r payload: queued, or a delta dropped
        since (`drop_queued`), which the mix does not use (`take`)."""
        return set(self.queued.get(r, {})) | self.dropped.get(r, set())

    def take(self, r: int) -> dict[str, Inbound]:
        """Round r's queued payloads, removed with every older round's."""
        arrived = self.queued.pop(r, {})
        for old in [k for k in self.queued if k <= r]:
            del self.queued[old]
        self.dropped = {k: v for k, v in self.dropped.items() if k > r}
        return arrived

    def drop_queued(self, node_id: str) -> None:
        """Remove `node_id`'s queued payloads (its copy was forgotten, or restarts at
        the init: a keyframe of before would move it off what its seq says); each
        still counts as delivered (`arrived`)."""
        for r, queued in self.queued.items():
            if queued.pop(node_id, None) is not None:
                self.dropped.setdefault(r, set()).add(node_id)

    def verified_round(self, peer: Peer) -> int:
        """`peer.round`, the round its validated payloads proved, while its public copy
        is the one they followed; once it was re-admitted on another copy (`Peer.copy`
        moved on and it is live again), at most the round its Hello claimed then (a
        process of the same id restarted from an older checkpoint claims less than its
        old one proved; a re-join of the same process claims at least that), set as its
        round, and so again on each copy after (a second restart from an older
        checkpoint). While it is not live its claim is its old Hello's: nothing is reset."""
        copy = self.verified.get(peer.node_id)
        if copy is not None and copy != peer.copy and peer.live:
            peer.round = min(peer.round, peer.claimed_round)
            self.verified[peer.node_id] = peer.copy  # a later copy is cut again
        return peer.round

    def forget_unknown(self) -> None:
        """Drop the queued payloads (and `dropped` marks) of senders the peer table no
        longer knows: the mix skips them anyway (it uses live senders' only), and
        without this each id that came and went would hold its payloads until its
        round is mixed."""
        known = self.peers.peers.keys()
        for r, queued in list(self.queued.items()):
            for pid in [pid for pid in queued if pid not in known]:
                del queued[pid]
            if not queued:
                del self.queued[r]
        self.dropped = {r: kept for r, ids in self.dropped.items() if (kept := ids & known)}
        self.verified = {pid: c for pid, c in self.verified.items() if pid in known}
