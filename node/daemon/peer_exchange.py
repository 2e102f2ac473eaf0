"""Peer exchange: a node given a few seeds learns other members' addresses from the
Status of the peers it reaches (`PeerExchange`), with no change to the wire protocol.

What callers may rely on:
- nothing is asked or dialled while this node has `max_neighbors` live neighbours,
  nor before a node refused one of its dials as full (its Welcome said `FULL`): a
  node whose given peers all have room keeps exactly the neighbours it was given (a
  ring built with `--peers` stays a ring; the daemon stays bit-identical to the
  simulator); once one has, this node stays in the exchange;
- the sources asked are the live neighbours, and the addresses (configured or learnt)
  whose node refused this node's last dial as full: nodes this node reaches; each at
  most once per `ASK_FIRST` s, the wait doubling (to `ASK_MOST`) after each ask that
  taught nothing new or failed; a Status call is signed (swarm secret) and presents this
  node's certificate (mTLS), as a dial does;
- an answer is read bounded: at most `READ` of its neighbour entries, of which only
  live ones whose address passes a Hello's advertised-address rules
  (`address_problem`, `dial_problem`), is not this node's own, not configured and
  not in the peer table; at most `TAKE` of those, drawn at random, are learnt;
- at most `LEARNT` learnt candidates are kept, the oldest forgotten past it; one is
  dialled only while this node has room, never as configured (it displaces no live
  peer: `peers.displaced`), with `DialBackoff`'s schedule, and is forgotten once it
  joins, appears in the peer table, or fails `FAILS` dials in a row; learning it
  again changes nothing of its record, and one given up (or pushed out of the `LEARNT`
  after a failed dial) is not learnt again while it is among the last `GIVEN_UP` given
  up (a peer cannot renew its dials, nor by flooding it out first);
- so a peer naming any number of third-party addresses makes this node dial at most
  `TAKE` new ones per ask of it, each at most `FAILS` times, at the backoff's rate.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from declora.node.address import address_problem, dial_problem
from declora.node.daemon.dial_backoff import DialBackoff
from declora.node.daemon.peers import same_address
from declora.proto import pb, pb_grpc

if TYPE_CHECKING:
    from declora.node.daemon.handshake import Handshaker

log = logging.getLogger(__name__)

FULL = "node has its maximum of neighbours"  # a Welcome's refusal: its node is reachable
ASK_FIRST = 30.0  # seconds between two Status calls to one source, at first...
ASK_MOST = 240.0  # ...doubling to this while its answers teach nothing new
ASK_TIMEOUT = 5.0  # seconds a Status call may take
READ = 1024  # neighbour entries of one answer looked at
TAKE = 8  # addresses learnt from one answer at most
LEARNT = 32  # learnt candidates kept at most
FAILS = 3  # failed dials in a row before a learnt candidate is forgotten
GIVEN_UP = 1024  # candidates given up after `FAILS` remembered (not learnt again)
STEP = 1.0  # seconds between two steps of `run`


@dataclass
class Asked:
    """When a source may be asked again, and the wait after that."""

    next_ask: float
    wait: float


class PeerExchange:
    """Learnt candidate addresses, the sources asked for them, and their dials."""

    def __init__(self, handshaker: Handshaker) -> None:
        self.handshaker = handshaker
        self.peers = handshaker.peers
        self.learnt: OrderedDict[str, int] = OrderedDict()  # address: failed dials in a row
        self.backoff = DialBackoff()  # learnt candidates whose dial failed
        self.asked: dict[str, Asked] = {}  # source address: when it may be asked again
        self.given_up: OrderedDict[str, None] = OrderedDict()  # the most recent last
        self.joined = False  # a node refused a dial as full: the swarm is larger

    def room(self) -> int:
        """Live slots free."""
        return self.peers.max_neighbors - len(self.peers.live)

    def _configured(self) -> set[str]:
        s = self.handshaker.settings
        return {same_address(a) for a in (*s.peers, *self.handshaker.candidates())}

    def _own(self) -> set[str]:
        s = self.handshaker.settings
        return {same_address(s.advertise), same_address(s.listen)}

    def sources(self) -> list[str]:
        """The addresses to ask: none before a node refused a dial as full (`FULL`);
        then live neighbours', and those whose node refused this node's last dial as
        full."""
        dial_log = self.handshaker.transport.dial_log
        outcomes = {} if dial_log is None else dial_log.outcomes
        s = self.handshaker.settings
        full = [
            a
            for a in dict.fromkeys([*s.peers, *self.handshaker.candidates(), *self.learnt])
            if outcomes.get(a, "").endswith(FULL)
        ]
        self.joined = self.joined or bool(full)
        if not self.joined:
            return []
        return list(dict.fromkeys([*(p.address for p in self.peers.live), *full]))

    def learn(self, reply: pb.StatusReply) -> list[str]:
        """Take at most `TAKE` addresses of `reply`'s live neighbours (see the module's
        rules); those newly learnt."""
        skip = (
            self._own() | self._configured() | {same_address(p.address) for p in self.peers.all()}
        )
        skip |= {same_address(a) for a in (*self.learnt, *self.given_up)}
        found = []
        for n in reply.neighbors[:READ]:
            a = n.address
            if not n.live or address_problem(a) or dial_problem(a) or same_address(a) in skip:
                continue
            skip.add(same_address(a))
            found.append(a)
        taken = random.sample(found, min(TAKE, len(found)))
        for a in taken:
            self.learnt[a] = 0
            while len(self.learnt) > LEARNT:
                oldest, fails = self.learnt.popitem(last=False)
                self.backoff.succeeded(oldest)  # its entry goes with it
                if fails:  # its failures are not wiped by learning it again
                    self._give_up(oldest)
        return taken

    def _give_up(self, address: str) -> None:
        """Remember `address` among the last `GIVEN_UP` given up (not learnt again)."""
        self.given_up[address] = None
        while len(self.given_up) > GIVEN_UP:
            self.given_up.popitem(last=False)

    async def ask(self, address: str) -> list[str]:
        """Ask `address` for its Status and learn from it; the addresses learnt (none
        when the call failed)."""
        h = self.handshaker
        channel = h.transport.channel(address)
        try:
            stub = pb_grpc.SwarmStub(channel)
            reply = await stub.Status(h.auth.sign(pb.StatusRequest()), timeout=ASK_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            log.debug("peer exchange: status of %s failed: %s", address, exc.code().name)
            return []
        finally:
            await channel.close()
        return self.learn(reply)

    async def step(self, now: float | None = None) -> None:
        """Where this node has room: ask the sources due, then dial the learnt
        candidates due, at most as many as there is room for. `now`: monotonic
        seconds (tests); by default the clock."""
        at = now  # None: the clock runs, and a dial's end is stamped when it comes
        now = time.monotonic() if now is None else now
        if self.room() <= 0:
            return
        sources = self.sources()
        self.asked = {a: t for a, t in self.asked.items() if a in sources}
        due = [a for a in sources if now >= self.asked.get(a, Asked(now, 0.0)).next_ask]
        taught = await asyncio.gather(*map(self.ask, due))
        for a, new in zip(due, taught, strict=True):
            before = self.asked.get(a)
            wait = ASK_FIRST if new or before is None else min(before.wait * 2, ASK_MOST)
            self.asked[a] = Asked(now + wait, wait)
            if new:
                log.info("peer exchange: learnt %d address(es) from %s", len(new), a)
        known = {same_address(p.address) for p in self.peers.all()}
        for a in [a for a in self.learnt if same_address(a) in known]:
            del self.learnt[a]  # in the peer table now: re-dialled there
            self.backoff.succeeded(a)
        dials = [a for a in self.learnt if self.backoff.due(a, now)][: max(self.room(), 0)]
        await asyncio.gather(*(self._dial(a, at) for a in dials))

    async def _dial(self, address: str, at: float | None) -> None:
        """Dial learnt `address` (never as configured); a join forgets it, a failure
        counts (`FAILS` in a row forget it) and sets its next dial (`DialBackoff`,
        from the dial's end: the clock then, `at` where the caller stands it still)."""
        peer = await self.handshaker.dial(address, configured=False)
        if address not in self.learnt:
            return  # pushed out meanwhile
        if peer is not None:
            del self.learnt[address]
            self.backoff.succeeded(address)
            return
        self.learnt[address] += 1
        if self.learnt[address] >= FAILS:
            del self.learnt[address]
            self.backoff.succeeded(address)
            self._give_up(address)
        else:
            self.backoff.refused(address, time.monotonic() if at is None else at)

    async def run(self) -> None:
        """`step` every `STEP` s until the node stops; an unexpected error is logged
        with its traceback unless the step before failed the same way (a fault that
        repeats is logged once, not every second), and the next step goes on."""
        last = ""  # the error of the last step ("": it went well)
        while not self.handshaker.progress.stop_requested:
            try:
                await self.step()
                last = ""
            except Exception as exc:  # one bad step must not end the exchange
                error = f"{type(exc).__name__}: {exc}"
                if error != last:
                    log.exception("peer exchange failed; trying again every %g s", STEP)
                last = error
            await asyncio.sleep(STEP)
