"""Who may talk to a node: mutual TLS and a shared swarm secret.

- mTLS (`TlsFiles`): every connection, in both directions, needs a certificate
  signed by the swarm's CA; it encrypts and authenticates the transport.
- Swarm secret (`SwarmAuth`): HMAC-SHA256 over each Hello, PullRequest and
  LeaveNotice (with a fresh nonce: an 8-byte big-endian unix-ms timestamp and 16
  random bytes) and over each payload header together with its data. It
  authenticates membership and messages but encrypts nothing.

Callers may rely on: `SwarmAuth.verify*` raise `AuthError` (never anything else for
a bad message) and remember a nonce only once its mac and timestamp passed; a MAC
covers the message type, so a signed message of one kind is never valid as another.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import ipaddress
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from declora.proto import pb

NONCE_BYTES = 24  # 8-byte timestamp (unix ms, big-endian) + 16 random bytes
WINDOW_SECONDS = 120.0
MAX_NONCES = 100_000
TLS_OPTIONS = ("--tls-cert", "--tls-key", "--tls-ca")


class TlsError(ValueError):
    """A TLS option is missing, unreadable or does not hold what it should; names it."""


class AuthError(Exception):
    """A message refused by the swarm secret; `counter` is its refusal counter."""

    def __init__(self, reason: str, counter: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.counter = counter


SignedT = TypeVar("SignedT", pb.Hello, pb.PullRequest, pb.LeaveNotice, pb.StatusRequest)
Signed = pb.Hello | pb.PullRequest | pb.LeaveNotice | pb.StatusRequest  # nonce + mac


# ---------------------------------------------------------------- TLS
def _read_pem(option: str, path: Path, kind: str) -> bytes:
    """The bytes of `path` once they parse as `kind`; TlsError naming `option` if not."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TlsError(f"{option}: file not found: {path}") from None
    except OSError as exc:
        raise TlsError(f"{option}: cannot read {path}: {exc.strerror or exc}") from exc
    try:
        if kind == "key":
            load_pem_private_key(data, password=None)
        else:
            x509.load_pem_x509_certificates(data)
    except (ValueError, TypeError) as exc:
        what = "an unencrypted PEM private key" if kind == "key" else "a PEM certificate"
        raise TlsError(f"{option}: {path} is not {what}") from exc
    return data


@dataclass(frozen=True)
class TlsFiles:
    """PEM bytes of this end's certificate chain, its private key and the swarm CA."""

    cert: bytes
    key: bytes
    ca: bytes

    @classmethod
    def load(cls, cert: Path | None, key: Path | None, ca: Path | None) -> TlsFiles | None:
        """None when no file is given; TlsError (naming the option) when only some are,
        when one cannot be read or parsed, or when the key does not match the cert."""
        given = [p is not None for p in (cert, key, ca)]
        if not any(given):
            return None
        if not all(given):
            missing = [o for o, g in zip(TLS_OPTIONS, given, strict=True) if not g]
            raise TlsError(f"{', '.join(TLS_OPTIONS)} go together: also give {', '.join(missing)}")
        assert cert is not None and key is not None and ca is not None
        files = cls(
            _read_pem("--tls-cert", cert, "cert"),
            _read_pem("--tls-key", key, "key"),
            _read_pem("--tls-ca", ca, "cert"),
        )
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            PublicFormat,
            load_pem_private_key,
        )

        def spki(public_key: PublicKeyTypes) -> bytes:
            return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)

        leaf = x509.load_pem_x509_certificate(files.cert)
        private = load_pem_private_key(files.key, password=None)
        if spki(leaf.public_key()) != spki(private.public_key()):
            raise TlsError(f"--tls-key: {key} is not the private key of --tls-cert {cert}")
        return files

    def server_credentials(self) -> grpc.ServerCredentials:
        """Serve with this cert; every client must present a cert signed by the CA."""
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Dial with this cert; the server's cert must be signed by the CA."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


# ---------------------------------------------------------------- swarm secret
def new_nonce(now: float) -> bytes:
    """8-byte big-endian unix-ms timestamp of `now`, then 16 random bytes."""
    return struct.pack(">Q", int(now * 1000)) + os.urandom(NONCE_BYTES - 8)


def _mac_input(msg: Message) -> bytes:
    """The message type's name and its deterministic serialization with mac empty."""
    unsigned = type(msg)()
    unsigned.CopyFrom(msg)
    unsigned.ClearField("mac")
    return (
        msg.DESCRIPTOR.full_name.encode() + b"\0" + unsigned.SerializeToString(deterministic=True)
    )


class SwarmAuth:
    """Signs and verifies messages with the swarm secret; remembers recent nonces.

    A nonce is accepted once: while its timestamp is within `window` seconds of this
    clock it stays in the replay cache; when the cache holds `max_nonces`, the oldest
    leave it and no message at or before their timestamp is accepted any more.
    """

    def __init__(
        self,
        secret: bytes,
        window: float = WINDOW_SECONDS,
        max_nonces: int = MAX_NONCES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = secret
        self.window_ms = int(window * 1000)
        self.max_nonces = max_nonces
        self.clock = clock
        self._seen: set[bytes] = set()
        self._by_time: list[tuple[int, bytes]] = []  # heap of (timestamp ms, nonce)
        self._floor_ms = -1  # nonces at or before this time were forgotten early

    def _mac(self, *parts: bytes) -> bytes:
        h = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in parts:
            h.update(part)
        return h.digest()

    # ---------------------------------------------------- nonce + mac messages
    def sign(self, msg: SignedT) -> SignedT:
        """Give `msg` a fresh nonce and its mac (in place); returns it."""
        msg.nonce = new_nonce(self.clock())
        msg.mac = b""
        msg.mac = self._mac(_mac_input(msg))
        return msg

    def verify(self, msg: Signed) -> None:
        """Refuse (AuthError) a missing or bad mac, a malformed or stale nonce, a replay."""
        if not msg.mac:
            raise AuthError("no mac: the sender has no --swarm-secret", "bad_auth")
        if not hmac.compare_digest(msg.mac, self._mac(_mac_input(msg))):
            raise AuthError(
                "bad mac: the sender has another --swarm-secret, or the message was altered",
                "bad_auth",
            )
        if len(msg.nonce) != NONCE_BYTES:
            raise AuthError(f"nonce of {len(msg.nonce)} bytes, expected {NONCE_BYTES}", "bad_auth")
        sent_ms = struct.unpack(">Q", msg.nonce[:8])[0]
        now_ms = int(self.clock() * 1000)
        self._expire(now_ms)
        if abs(now_ms - sent_ms) > self.window_ms:
            raise AuthError(
                f"timestamp {(sent_ms - now_ms) / 1000:+.1f}s from this node's clock, outside "
                f"±{self.window_ms / 1000:g}s: clocks out of sync, or a replay",
                "stale_nonce",
            )
        if msg.nonce in self._seen or sent_ms <= self._floor_ms:
            raise AuthError("replayed nonce: this message was already received", "replay")
        self._remember(sent_ms, bytes(msg.nonce))

    @property
    def remembered(self) -> int:
        """Nonces held in the replay cache now (at most `max_nonces`)."""
        return len(self._seen)

    def _expire(self, now_ms: int) -> None:
        while self._by_time and self._by_time[0][0] < now_ms - self.window_ms:
            self._seen.discard(heapq.heappop(self._by_time)[1])

    def _remember(self, sent_ms: int, nonce: bytes) -> None:
        heapq.heappush(self._by_time, (sent_ms, nonce))
        self._seen.add(nonce)
        while len(self._by_time) > self.max_nonces:
            oldest_ms, oldest = heapq.heappop(self._by_time)
            self._seen.discard(oldest)
            self._floor_ms = max(self._floor_ms, oldest_ms)

    # ---------------------------------------------------- payloads
    def _payload_mac(self, header: pb.PayloadHeader, data: bytes) -> bytes:
        return self._mac(_mac_input(header), data)

    def sign_payload(self, header: pb.PayloadHeader, data: bytes) -> pb.PayloadHeader:
        """Set `header.mac` over the header (mac empty) and `data`; returns the header."""
        header.mac = b""
        header.mac = self._payload_mac(header, data)
        return header

    def verify_payload(self, header: pb.PayloadHeader, data: bytes) -> None:
        """Refuse (AuthError) a payload whose header mac is missing or does not cover
        this header and `data` (replays are refused by the round and seq checks)."""
        if not header.mac:
            raise AuthError("payload without mac: the sender has no --swarm-secret", "bad_auth")
        if not hmac.compare_digest(header.mac, self._payload_mac(header, data)):
            raise AuthError(
                "payload with a bad mac: the sender has another --swarm-secret, or the "
                "header or data were altered",
                "bad_auth",
            )


# ---------------------------------------------------------------- reporting
def auth_mode(tls: bool, secret: bool) -> str:
    """StatusReply.auth: "mtls", "secret", "mtls+secret" or "none"."""
    return "+".join(m for m, on in (("mtls", tls), ("secret", secret)) if on) or "none"


def is_loopback(listen: str) -> bool:
    """Whether the host of `listen` (host:port) is 127.0.0.0/8, ::1 or localhost."""
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
