"""The swarm secret's signatures on this node's messages, and the check of a peer's
(`Auth`): everything passes unchanged without a secret. Under mTLS, `caller_refusal`
is the check of a caller's certificate before any call is served: one without a
common name, or revoked by --tls-crl, is refused."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from declora.node import logs
from declora.node.daemon.revocation_spread import Spreader
from declora.node.daemon.status import Counters
from declora.node.limits import address_key, host_key, ip_of
from declora.node.revocation import POLL_SECONDS
from declora.node.security import (
    AuthError,
    Signed,
    SignedT,
    SwarmAuth,
    TlsFiles,
    certificate_names,
    common_name,
)
from declora.node.wire import WireError
from declora.proto import pb

if TYPE_CHECKING:
    from declora.node.daemon.peers import PeerTable
    from declora.node.daemon.state import Progress

log = logging.getLogger(__name__)

NAMELESS = (  # why a caller whose certificate has no common name is refused under mTLS
    "its certificate has no common name: under mTLS a node's id (and the CLI's) is its "
    "certificate's name"
)


class Auth:
    """The swarm secret's signatures; everything passes unchanged without a secret."""

    def __init__(self, secret: SwarmAuth | None, counters: Counters) -> None:
        self.secret = secret
        self.counters = counters
        self.refusals = logs.RefusalLog("unauthenticated messages", logger=log)

    def sign(self, msg: SignedT) -> SignedT:
        """`msg` with a nonce and mac when a swarm secret is set, else unchanged."""
        return msg if self.secret is None else self.secret.sign(msg)

    def sign_payload(self, header: pb.PayloadHeader, data: bytes) -> pb.PayloadHeader:
        return header if self.secret is None else self.secret.sign_payload(header, data)

    def refusal(self, msg: Signed, what: str, host: str = "") -> str:
        """'' when no secret is set or `msg` is authentic and fresh; else the reason,
        counted (`bad_auth`, `replay`, `stale_nonce`) and logged. `host`: the sender's
        remote host ('' unknown), whose replay floor (`source_key`) it moves."""
        if self.secret is None:
            return ""
        try:
            self.secret.verify(msg, source_key(host) if host else "")
        except AuthError as exc:
            self.counters.count(exc.counter)  # logged here, bounded: each `what` differs
            self.refusals.warning("refused a message: %s: %s", what, exc.reason)
            return exc.reason
        return ""


def source_key(host: str) -> str:
    """The source whose replay floor a message from remote `host` moves
    (`SwarmAuth.verify`): an IPv4 address itself, an IPv6 address's /64
    (`limits.host_key`: one machine holds them all, and a floor per address would let
    it fold its floors into one for every source), a loopback address itself."""
    ip = ip_of(host)
    return host_key(host) if isinstance(ip, ipaddress.IPv6Address) else address_key(host)


def caller_refusal(context: Any, tls: TlsFiles | None) -> WireError | None:
    """Under mTLS (`tls`), why the caller of gRPC `context` may call nothing (the
    caller answers it PERMISSION_DENIED, counted and logged rate-limited, as
    `Counters.refused`): a certificate without a common name (`bad_identity`: a node's
    id, and the CLI's, is its certificate's name, so no identity check could hold), or
    one of its chain (the leaf, or an intermediate it sent) on --tls-crl's list as it
    stands now (`revoked`). None otherwise, and always without mTLS or a gRPC context
    (in-memory tests)."""
    if tls is None:
        return None
    try:
        auth = context.auth_context()
    except Exception:  # not every context (in-memory tests) has one
        return None
    if not auth or not auth.get("x509_pem_cert"):
        return None  # no TLS on this call: gRPC refused it before it came here
    names = auth.get("x509_common_name") or [b""]  # gRPC gives b"" for none (or nothing)
    if not bytes(names[0]).strip():
        return WireError(grpc.StatusCode.PERMISSION_DENIED, NAMELESS, "bad_identity")
    if tls.crl is None:
        return None
    pem = b"".join(bytes(p) for p in auth.get("x509_pem_cert", []))  # the leaf...
    pem += b"".join(bytes(p) for p in auth.get("x509_pem_cert_chain", []))  # ...and the rest
    reason = tls.crl.revoked_pem(pem)
    if not reason:
        return None
    return WireError(grpc.StatusCode.PERMISSION_DENIED, reason, "revoked")


def warn_own_revoked(tls: TlsFiles) -> None:
    """One warning when the list in use (re-read from --tls-crl, or learned from a
    peer) now revokes this node's own --tls-cert: its peers refuse it from then on
    (`Revocations.own_revoked`: said once)."""
    if tls.crl is None:
        return
    from cryptography import x509

    chain = x509.load_pem_x509_certificates(tls.cert)
    reason = tls.crl.own_revoked(chain)
    if not reason:
        return
    pki = tls.ca_path.parent if tls.ca_path is not None else "PKI"
    dns, ips = certificate_names(chain[0])
    hosts = f" --hosts {','.join(dns + ips)}" if dns or ips else ""  # else localhost
    log.warning(
        "--tls-crl: the revocation list in use (CRL number %d) now revokes this node's "
        "own --tls-cert %s (%s): its peers will refuse it; re-issue it with "
        "`declora-node certs --output %s --nodes %s%s --force` and restart the node "
        "with the new certificate",
        tls.crl.number, tls.cert_path or "", reason, pki, common_name(chain[0]) or "NAME", hosts,
    )  # fmt: skip


def drop_now_revoked(tls: TlsFiles, peers: PeerTable, counters: Counters) -> list[str]:
    """Drop each live neighbour whose certificate, as last seen on one of its calls or
    on a dial of its server, the list in use revokes (counted `revoked`, logged by
    `PeerTable.drop`); the ids dropped."""
    assert tls.crl is not None
    live = {p.node_id: p for p in peers.live}
    revoked = tls.crl.revoked_names(list(live))
    for node_id, why in revoked.items():
        counters.count("revoked")
        peers.drop(live[node_id], why)
    return list(revoked)


async def drop_revoked(tls: TlsFiles | None, peers: PeerTable, counters: Counters) -> list[str]:
    """Under mTLS with --tls-crl (`tls.crl`): re-read the list when its file changed
    (`Revocations.refresh`, in a thread: a bad file keeps the last good list), warn
    once when it now revokes this node's own certificate (`warn_own_revoked`), then
    `drop_now_revoked`; the ids dropped. Nothing without a list."""
    if tls is None or tls.crl is None:
        return []
    if await asyncio.to_thread(tls.crl.refresh):
        warn_own_revoked(tls)
    return drop_now_revoked(tls, peers, counters)


async def spread_revocations(spreader: Spreader, counters: Counters) -> list[str]:
    """One `Spreader.spread` (lists exchanged with the live neighbours due); when a
    newer list was taken, it is enforced as a re-read is (`warn_own_revoked`,
    `drop_now_revoked`); the ids dropped."""
    if not await spreader.spread():
        return []
    warn_own_revoked(spreader.tls)
    return drop_now_revoked(spreader.tls, spreader.peers, counters)


async def watch_revocations(
    tls: TlsFiles | None, peers: PeerTable, counters: Counters, progress: Progress
) -> None:
    """Two loops until the node stops, in a task of its own (started before the node
    waits for its neighbours: a dial round slow to end, or the startup wait, never
    delays a revocation): `drop_revoked` every `POLL_SECONDS`, and beside it
    `spread_revocations` every `POLL_SECONDS` (a slow neighbour's list delays no look
    at the file). An unexpected error is logged and the loop goes on. Returns at once
    without a list."""
    if tls is None or tls.crl is None:
        return
    spreader = Spreader(tls, peers)

    async def loop(step: Callable[[], Awaitable[object]], what: str) -> None:
        while not progress.stop_requested:
            try:
                await step()
            except Exception:  # one bad look must not end the checks
                log.exception("%s failed; trying again in %gs", what, POLL_SECONDS)
            await asyncio.sleep(POLL_SECONDS)

    try:
        await asyncio.gather(
            loop(lambda: drop_revoked(tls, peers, counters), "checking --tls-crl"),
            loop(lambda: spread_revocations(spreader, counters), "spreading revocation lists"),
        )
    finally:
        spreader.close()
