"""Spreading the swarm CA's revocation list between neighbours (mTLS with --tls-crl).

A list the swarm CA signed proves itself, so a node takes one from any neighbour once
`Revocations.learn` verifies it: at most `MAX_BYTES`, signed by a CA of this node's
--tls-ca, of the issuer of the list in use, with a CRL number above the one in use.
Anything else is refused with a warning and changes nothing. A list taken is kept in
the node's state folder (never in the --tls-crl file) and enforced like a re-read.

- each Hello (and so each Welcome) says its sender's CRL number (`Hello.crl_number`,
  0 without a list or from an older node), kept as `Peer.crl_number`;
- `list_chunks` answers a `Revocations` call of a live neighbour (anyone else gets
  nothing): it notes the caller's CRL number when above this node's (fetched from in
  turn), and gives this node's signed list in `CHUNK` pieces only when its own number
  is above the caller's, at most once per `ASK_SECONDS / 2` a neighbour; the pieces
  are made as they are written, so a caller that stops reading holds one piece, not a
  copy of the list (8 such callers held 8 copies of a 16 MiB list: +165 MiB);
- `spread` (every `POLL_SECONDS`, `auth.watch_revocations`) calls each live
  neighbour not yet told this node's number (an announcement, once per number: it
  fetches back when its own is lower) and each that said a higher number (a fetch,
  at most once per `ASK_SECONDS` after any call to it, so never within the
  `ASK_SECONDS / 2` in which it gives this node nothing after its last list, and
  `REFUSED_SECONDS` after one whose list was refused); the number a neighbour said
  is forgotten at each fetch that ends (an announcement keeps it), so a peer that
  says a number it does not serve makes this node fetch once per claim, not once a
  look; a call that did not get through (`NOT_THROUGH`: unreachable, refused for
  rate) keeps the claim and tells nothing: both are tried again `ASK_SECONDS` later, as
  for a neighbour that (re-)joined (`PeerTable.admit`); a neighbour that does not know
  the call (an older node: UNIMPLEMENTED) is left alone until this node's number
  changes.
  A call runs on its own: `spread` waits `WAIT_SECONDS` for them, and one slower (a
  neighbour that serves at a trickle, up to `ASK_TIMEOUT`) goes on while the next
  looks call the others; a neighbour has one call at a time.
Nodes without --tls-crl neither ask nor answer: they enforce no list.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

import grpc

from declora.node.daemon.peers import Peer, PeerTable
from declora.node.logs import RefusalLog, safe_text
from declora.node.revocation import MAX_BYTES, WIRE_MAX
from declora.node.security import TlsError, TlsFiles
from declora.proto import pb

log = logging.getLogger(__name__)

CHUNK = 32 * 1024  # bytes of the list a `Revocations` message carries (under any gRPC limit)
ASK_SECONDS = 10.0  # a neighbour that said a higher CRL number is fetched from at most this often
ASK_TIMEOUT = 30.0  # seconds one call (a 16 MiB list at the least) may take
WAIT_SECONDS = 5.0  # a `spread` waits this long for its calls; slower ones go on alone
# a neighbour whose list was refused is fetched from again only this much later (a
# 16 MiB list signed by another key costs 0.2 s of CPU, 0.14 s of it holding the loop)
REFUSED_SECONDS = 300.0
# a call that failed so did not get through: the neighbour restarting or cut off, or
# refusing for rate; one that timed out (a trickle) or is unknown (an older node) did
NOT_THROUGH = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


def list_chunks(
    tls: TlsFiles | None,
    peers: PeerTable,
    caller: str | None,
    number: int,
    now: float | None = None,
) -> Iterable[pb.Chunk]:
    """The answer to a `Revocations` call from `caller` (its certificate's name; None
    without TLS) whose list has CRL `number`: this node's signed list in `CHUNK`
    pieces, each made when it is taken, when its own number is above and `caller` is a
    live neighbour not given it within `ASK_SECONDS / 2` (`now`: monotonic seconds),
    else none (an empty list); none without a list. A live neighbour with the higher
    number is noted to be fetched from (`Spreader.spread`)."""
    peer = peers.get(caller) if caller else None
    if tls is None or tls.crl is None or peer is None or not peer.live:
        return []
    mine = tls.crl.number
    if number > mine:
        peer.crl_number = number
    now = time.monotonic() if now is None else now
    if number >= mine or now - peer.crl_served < ASK_SECONDS / 2:
        return []
    peer.crl_served = now
    data = tls.crl.signed
    return (pb.Chunk(data=data[i : i + CHUNK]) for i in range(0, len(data), CHUNK))


class Spreader:
    """`spread` and the warnings about the lists peers gave (rate-limited)."""

    def __init__(self, tls: TlsFiles, peers: PeerTable) -> None:
        self.tls, self.peers = tls, peers
        self.refusals = RefusalLog("revocation lists refused", logger=log)
        self.asking: dict[str, asyncio.Task[bool]] = {}  # node id: its call in flight

    async def spread(self, now: float | None = None) -> bool:
        """Call the live neighbours due, each without a call in flight (`now`:
        monotonic seconds): each not yet told this node's CRL number (once per
        number), and each that said a higher one, at most once per `ASK_SECONDS`;
        then wait up to `WAIT_SECONDS` for the calls in flight. True when a list one
        of the calls that ended gave was taken (the caller enforces it)."""
        crl = self.tls.crl
        assert crl is not None
        now = time.monotonic() if now is None else now
        mine = crl.number
        for p in self.peers.live:
            if p.node_id in self.asking:
                continue
            due = now - p.crl_asked >= ASK_SECONDS
            fetch = p.crl_number > mine and due
            # told nothing yet (-1: new, re-joined, or its last call failed): at most
            # once per ASK_SECONDS; told an older number: at once
            if fetch or (p.crl_told != mine and (p.crl_told >= 0 or due)):
                claim = p.crl_number
                if fetch:  # the claim is said again only by a Hello or a call
                    p.crl_number = 0
                p.crl_asked, p.crl_told = max(p.crl_asked, now), mine
                self.asking[p.node_id] = asyncio.create_task(self._ask(p, mine, now, claim))
        if not self.asking:
            return False
        done, _ = await asyncio.wait(self.asking.values(), timeout=WAIT_SECONDS)
        self.asking = {k: t for k, t in self.asking.items() if t not in done}
        self.refusals.flush()
        taken = False
        for task in done:  # one call's unexpected error loses no other call's list
            if task.cancelled():
                continue
            if (exc := task.exception()) is not None:
                log.error("a revocation list call failed", exc_info=exc)
            elif task.result():
                taken = True
        return taken

    def close(self) -> None:
        """Cancel the calls in flight (the node stops)."""
        for task in self.asking.values():
            task.cancel()
        self.asking.clear()

    async def _ask(self, peer: Peer, mine: int, now: float, claim: int) -> bool:
        """Tell `peer` CRL number `mine` and take the list it gives back, if any (asked
        at `now`, when it claimed CRL number `claim`); a list refused puts off the next
        fetch from it `REFUSED_SECONDS`; a call that did not get through (`NOT_THROUGH`)
        told it nothing and keeps its claim, both asked again `ASK_SECONDS` later."""
        crl = self.tls.crl
        assert crl is not None
        try:
            data = await self._fetch(peer, mine)
        except grpc.aio.AioRpcError as exc:
            log.debug("revocation list call to %s failed: %s", peer.node_id, exc.code().name)
            if exc.code() in NOT_THROUGH:
                peer.crl_told = -1
                peer.crl_number = max(peer.crl_number, claim)
            return False
        except TlsError as exc:
            self.refusals.warning("%s: not taken", exc)
            peer.crl_asked = now + REFUSED_SECONDS - ASK_SECONDS
            return False
        if not data:
            return False
        try:
            return await asyncio.to_thread(crl.learn, data, f"neighbour {peer.node_id}")
        except TlsError as exc:
            self.refusals.warning("%s", safe_text(str(exc), 500))
            peer.crl_asked = now + REFUSED_SECONDS - ASK_SECONDS
            return False

    async def _fetch(self, peer: Peer, mine: int) -> bytes:
        """The bytes `peer` streams for a `Revocations` call with CRL number `mine`;
        TlsError once they pass `MAX_BYTES` (the call is cancelled)."""
        call = self.peers.stub(peer).Revocations(
            pb.RevocationsRequest(crl_number=min(mine, WIRE_MAX)), timeout=ASK_TIMEOUT
        )
        data = bytearray()
        async for chunk in call:
            data += chunk.data
            if len(data) > MAX_BYTES:
                call.cancel()
                raise TlsError(
                    f"the revocation list of neighbour {peer.node_id} is over "
                    f"{MAX_BYTES // 2**20} MiB"
                )
        return bytes(data)
