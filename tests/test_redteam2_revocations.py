"""A `Revocations` answer holds no copy of the list (redteam2): its pieces are made
as gRPC takes them, so callers that stop reading hold one piece each. Before, each
answer was a list of every piece: 8 stalled readers of a 16 MiB list held 8 copies
(an aio server and 8 readers that stopped after one piece, real gRPC on 127.0.0.1:
RSS 267 -> 432 MiB; now 267 -> 303 MiB, the readers' own buffers included)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from declora.node.daemon.peers import Peer
from declora.node.daemon.revocation_spread import list_chunks

LIST_BYTES = 16 * 2**20  # revocation.MAX_BYTES: the largest list a node holds
READERS = 8  # service.POOLS["Revocations"]: answers in flight at once


@dataclass
class Crl:
    signed: bytes
    number: int = 2


@dataclass
class Tls:
    crl: Crl


@dataclass
class Peers:
    peers: dict[str, Peer] = field(default_factory=dict)

    def get(self, node_id: str) -> Peer | None:
        return self.peers.get(node_id)


def rss_mib() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_answers_in_flight_hold_no_copy_of_the_list() -> None:
    tls = Tls(Crl(os.urandom(LIST_BYTES)))
    peers = Peers({f"n{i}": Peer(f"n{i}", f"127.0.0.1:{i + 1}", live=True) for i in range(8)})
    before = rss_mib()
    answers = [
        iter(list_chunks(tls, peers, f"n{i}", 1, now=100.0))  # type: ignore[arg-type]
        for i in range(READERS)
    ]
    firsts = [next(a) for a in answers]  # each caller read one piece, then stopped
    grown = rss_mib() - before
    assert grown < LIST_BYTES / 2**20, f"{READERS} answers in flight took {grown:.0f} MiB"
    # and an answer read to its end is the whole signed list
    assert firsts[0].data + b"".join(c.data for c in answers[0]) == tls.crl.signed
