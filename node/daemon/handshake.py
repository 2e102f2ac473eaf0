"""Who may join: identity, Hellos, refusal reasons, dialling and reconnecting.

- `check_hello` is the rule (pure): same protocol version, swarm, fingerprint and
  gradient-tracking setting, a non-empty id that is not this node's; anything else is
  refused with a reason the operator can act on;
- with a swarm secret every Hello, Welcome, pull and leave notice must carry a valid
  mac (`Auth`); a refusal is counted (`bad_auth`, `replay`, `stale_nonce`) and a
  stranger learns nothing about this node;
- `dial` admits a peer only when its Welcome is authentic and passes `check_hello`;
- the reconnect loop re-dials every candidate and known peer that is not live every
  `RECONNECT_SECONDS`; an unexpected error is logged, never swallowed, and the loop
  goes on.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from declora.node import PROTOCOL_VERSION, __version__
from declora.node.daemon.peers import Peer, PeerTable
from declora.node.daemon.state import Progress
from declora.node.daemon.status import Counters
from declora.node.daemon.transport import Transport
from declora.node.discovery import Discovery, select_neighbors
from declora.node.security import AuthError, Signed, SignedT, SwarmAuth
from declora.node.settings import NodeSettings
from declora.node.wire import WireError
from declora.proto import pb, pb_grpc

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 2.0
DIAL_TIMEOUT = 5.0


class Auth:
    """The swarm secret's signatures; everything passes unchanged without a secret."""

    def __init__(self, secret: SwarmAuth | None, counters: Counters) -> None:
        self.secret = secret
        self.counters = counters

    def sign(self, msg: SignedT) -> SignedT:
        """`msg` with a nonce and mac when a swarm secret is set, else unchanged."""
        return msg if self.secret is None else self.secret.sign(msg)

    def sign_payload(self, header: pb.PayloadHeader, data: bytes) -> pb.PayloadHeader:
        return header if self.secret is None else self.secret.sign_payload(header, data)

    def refusal(self, msg: Signed, what: str) -> str:
        """'' when no secret is set or `msg` is authentic and fresh; else the reason,
        counted (`bad_auth`, `replay`, `stale_nonce`) and logged."""
        if self.secret is None:
            return ""
        try:
            self.secret.verify(msg)
        except AuthError as exc:
            code = grpc.StatusCode.UNAUTHENTICATED
            self.counters.refused(WireError(code, f"{what}: {exc.reason}", exc.counter))
            return exc.reason
        return ""


def check_hello(
    h: pb.Hello, *, node_id: str, swarm_id: str, fingerprint: str, gradient_tracking: bool
) -> str:
    """'' when `h` may join this node's swarm, else the reason it may not."""
    if h.protocol_version != PROTOCOL_VERSION:
        return (
            f"protocol version {h.protocol_version} != {PROTOCOL_VERSION} "
            f"(peer runs declora {h.package_version or '?'}, this node {__version__})"
        )
    if h.swarm_id != swarm_id:
        return f"swarm {h.swarm_id!r} != {swarm_id!r}"
    if h.fingerprint != fingerprint:
        return (
            f"fingerprint {h.fingerprint} != {fingerprint}: base model, LoRA config "
            "or tensor schema differ (same --model, --rank, --alpha, --targets, --seed?)"
        )
    if h.gradient_tracking != gradient_tracking:
        there, here = ("on", "off") if h.gradient_tracking else ("off", "on")
        return (
            f"gradient tracking is {there} there and {here} here: start every node of "
            "the swarm with the same --gradient-tracking"
        )
    if not h.node_id:
        return "empty node id"
    if h.node_id == node_id:
        return f"node id {h.node_id!r} is this node's own id"
    return ""


class Handshaker:
    """This node's Hello, the answer to a peer's, and dialling peers."""

    def __init__(
        self,
        settings: NodeSettings,
        fingerprint: str,
        progress: Progress,
        peers: PeerTable,
        transport: Transport,
        auth: Auth,
        counters: Counters,
        discovery: Discovery | None = None,
    ) -> None:
        self.settings = settings
        self.fingerprint = fingerprint
        self.progress = progress
        self.peers = peers
        self.transport = transport
        self.auth = auth
        self.counters = counters
        self.discovery = discovery

    def hello(self) -> pb.Hello:
        """This node's Hello; signed (with a fresh nonce) when a swarm secret is set."""
        s = self.settings
        return self.auth.sign(
            pb.Hello(
                protocol_version=PROTOCOL_VERSION,
                package_version=__version__,
                node_id=s.node_id,
                swarm_id=s.swarm_id,
                fingerprint=self.fingerprint,
                round=self.progress.round,
                live_degree=len(self.peers.live),
                listen_address=s.advertise,
                seq=self.progress.seq,
                gradient_tracking=s.gradient_tracking,
            )
        )

    def check(self, h: pb.Hello) -> str:
        """`check_hello` against this node."""
        s = self.settings
        return check_hello(
            h,
            node_id=s.node_id,
            swarm_id=s.swarm_id,
            fingerprint=self.fingerprint,
            gradient_tracking=s.gradient_tracking,
        )

    def answer(self, request: pb.Hello) -> pb.Welcome:
        """The Welcome for a peer's Hello; admits the peer when it may join."""
        refusal = self.auth.refusal(request, f"handshake from {request.node_id or '?'}")
        if refusal:  # nothing about this node for a stranger
            return pb.Welcome(accepted=False, reason=f"not authenticated: {refusal}")
        reason = self.check(request)
        if reason:
            self.counters.count("handshake")
            log.warning("refused handshake from %s: %s", request.node_id or "?", reason)
            return pb.Welcome(accepted=False, reason=reason, node=self.hello())
        if self.peers.admit(request) is None:
            return pb.Welcome(
                accepted=False, reason="node has its maximum of neighbours", node=self.hello()
            )
        return pb.Welcome(accepted=True, node=self.hello())

    async def dial(self, address: str) -> Peer | None:
        """Handshake with `address`; admit the peer on success (its Welcome authentic)."""
        channel = self.transport.channel(address)
        try:
            welcome = await pb_grpc.SwarmStub(channel).Handshake(self.hello(), timeout=DIAL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            log.debug("handshake with %s failed: %s %s", address, exc.code().name, exc.details())
            return None
        finally:
            await channel.close()
        if not welcome.accepted:
            log.warning("%s refused the handshake: %s", address, welcome.reason)
            return None
        if self.auth.refusal(welcome.node, f"the welcome of {address}"):
            return None
        reason = self.check(welcome.node)
        if reason:
            log.warning("not joining %s: %s", address, reason)
            return None
        return self.peers.admit(welcome.node)

    def candidates(self) -> list[str]:
        """Addresses discovery offers: unnamed ones, and the chosen named ones."""
        if self.discovery is None:
            return []
        found = self.discovery.peers()
        named = [p for p in found if p.node_id]
        s = self.settings
        chosen = select_neighbors(named, s.node_id, s.max_neighbors) if named else []
        addresses = [p.address for p in found if not p.node_id] + [p.address for p in chosen]
        return list(dict.fromkeys(addresses))

    async def connect_known(self) -> None:
        """Handshake with every candidate or known peer that is not live."""
        live_addresses = {p.address for p in self.peers.live}
        targets = [a for a in self.candidates() if a not in live_addresses]
        targets += [p.address for p in self.peers.all() if not p.live and p.address not in targets]
        if targets:
            await asyncio.gather(*(self.dial(a) for a in targets))

    async def reconnect_forever(self) -> None:
        """Re-dial peers that are not live until the node stops."""
        while not self.progress.stop_requested:
            try:
                await self.connect_known()
            except Exception:  # one bad round of dialling must not end reconnecting
                log.exception("reconnecting failed; trying again in %gs", RECONNECT_SECONDS)
            await asyncio.sleep(RECONNECT_SECONDS)
