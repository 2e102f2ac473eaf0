"""The swarm secret's signatures on this node's messages, and the check of a peer's
(`Auth`): everything passes unchanged without a secret."""

from __future__ import annotations

import logging

from declora.node import logs
from declora.node.daemon.status import Counters
from declora.node.security import AuthError, Signed, SignedT, SwarmAuth
from declora.proto import pb

log = logging.getLogger(__name__)


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

    def refusal(self, msg: Signed, what: str) -> str:
        """'' when no secret is set or `msg` is authentic and fresh; else the reason,
        counted (`bad_auth`, `replay`, `stale_nonce`) and logged."""
        if self.secret is None:
            return ""
        try:
            self.secret.verify(msg)
        except AuthError as exc:
            self.counters.count(exc.counter)  # logged here, bounded: each `what` differs
            self.refusals.warning("refused a message: %s: %s", what, exc.reason)
            return exc.reason
        return ""
