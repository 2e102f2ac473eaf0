"""Who may talk to a node: mutual TLS and a shared swarm secret.

- mTLS (`TlsFiles`): every connection, in both directions, needs a certificate
  signed by the swarm's CA; it encrypts and authenticates the transport. The files
  are checked against each other when loaded (`certificate_problem`: dates, the CA's
  signature, a CA's or the CLI's certificate as a node's, the node id);
  `TlsFiles.server_name` reads the name of the certificate a server presents (a
  dialler checks a Welcome's node id against it), refusing one without a name or
  revoked by --tls-crl (`TlsFiles.crl`, `revocation.Revocations`).
- Swarm secret (`SwarmAuth`): HMAC-SHA256 over each Hello, PullRequest and
  LeaveNotice (with a fresh nonce: an 8-byte big-endian unix-ms timestamp and 16
  random bytes) and over each payload header together with its data. It
  authenticates membership and messages but encrypts nothing.

Callers may rely on: `SwarmAuth.verify*` raise `AuthError` (never anything else for
a bad message) and remember a nonce only once its mac and timestamp passed; a MAC
covers the message type, so a signed message of one kind is never valid as another.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import heapq
import hmac
import ipaddress
import os
import ssl
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import grpc
from google.protobuf.message import Message

from declora.node.address import split_address
from declora.proto import pb

if TYPE_CHECKING:  # cryptography is imported where it is used: `status` starts fast
    from cryptography import x509

    from declora.node.revocation import Revocations

NONCE_BYTES = 24  # 8-byte timestamp (unix ms, big-endian) + 16 random bytes
WINDOW_SECONDS = 120.0
MAX_NONCES = 100_000
TLS_OPTIONS = ("--tls-cert", "--tls-key", "--tls-ca")
EXPIRY_WARNING = dt.timedelta(days=7)  # a certificate ending sooner is warned about at start
SECRET_SPACE = " \t\n\r\x0b\x0c"  # what str.strip and bytes.strip agree is whitespace


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


def _when(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC")


def common_name(cert: x509.Certificate) -> str:
    """The certificate's subject common name ('' when it has none)."""
    from cryptography import x509

    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _anchor(chain: list[x509.Certificate], cas: list[x509.Certificate]) -> x509.Certificate | None:
    """The CA of `cas` that `chain` (leaf first, then intermediates) leads to, if any."""
    current, rest = chain[0], list(chain[1:])
    for _ in range(len(chain)):
        anchor = next((ca for ca in cas if _issued_by(current, ca)), None)
        if anchor is not None:
            return anchor
        parent = next((c for c in rest if _issued_by(current, c)), None)
        if parent is None:
            return None
        rest.remove(parent)
        current = parent
    return None


def _is_ca(cert: x509.Certificate) -> bool:
    from cryptography import x509

    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _usages(cert: x509.Certificate) -> set[str] | None:
    """The extended key usages by name ('serverAuth', 'clientAuth', ...); None when the
    certificate has no such extension (any use allowed)."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID as EKU

    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    names = {EKU.SERVER_AUTH: "serverAuth", EKU.CLIENT_AUTH: "clientAuth"}
    return {names.get(oid, oid.dotted_string) for oid in eku}


def _dates_problem(option: str, path: Path, c: x509.Certificate, now: dt.datetime) -> str:
    if now < c.not_valid_before_utc:
        return (
            f"{option}: {path} is not valid before {_when(c.not_valid_before_utc)} "
            f"(now {_when(now)}): is this machine's clock right?"
        )
    if now > c.not_valid_after_utc:
        return (
            f"{option}: {path} expired on {_when(c.not_valid_after_utc)} (now "
            f"{_when(now)}): mint new certificates (`declora-node certs`)"
        )
    return ""


def exposed_file_warning(what: str, path: Path) -> str:
    """'' unless `path` (`what`: a private key, or a config file holding the swarm
    secret) is open to others than its owner (any of mode 0o077, the bits ssh refuses a
    key for; POSIX only): then a warning naming it, its mode and `chmod 600`. A warning,
    not a refusal: container runtimes mount secrets 0644 by default."""
    if os.name != "posix":
        return ""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return ""
    if not mode & 0o077:
        return ""
    who = "anyone on this machine" if mode & 0o007 else "its group"
    return (
        f"{what} {path}: permissions {mode:04o} are too open ({who} may read what "
        f"should be private): run `chmod 600 {path}`"
    )


def expiry_warning(option: str, path: Path, cert: x509.Certificate, now: dt.datetime) -> str:
    """'' unless `cert` (of `option` `path`), valid now, expires within EXPIRY_WARNING;
    then a warning naming the date (an expired one is `certificate_problem`'s refusal)."""
    end = cert.not_valid_after_utc
    if not now <= end < now + EXPIRY_WARNING:
        return ""
    left = int((end - now).total_seconds())
    when = next(
        f"{left // unit} {name.removesuffix('s') if left // unit == 1 else name}"
        for unit, name in ((86_400, "days"), (3600, "hours"), (60, "minutes"), (1, "seconds"))
        if left >= unit or unit == 1
    )
    return (
        f"{option}: {path} expires on {_when(end)} (in {when}): peers refuse it from then "
        "on; mint a new one with `declora-node certs` before that"
    )


def _dns_name_matches(entry: str, host: str) -> bool:
    """Whether DNS name `entry` of a certificate names `host`, as gRPC checks it: case
    and one final dot aside, equal, or `*.parent` for a host one label under a parent of
    at least two labels (no other wildcard, never one for an IP)."""
    entry, host = entry.lower().removesuffix("."), host.lower().removesuffix(".")
    if not entry or not host:
        return False
    if entry == host:
        return True
    label, _, parent = host.partition(".")
    return entry.startswith("*.") and bool(label) and "." in parent and entry[2:] == parent


def certificate_names(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    """The DNS names and the IP addresses (as text) of `cert`'s subject alternative
    names; both empty when it has none."""
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return san.get_values_for_type(x509.DNSName), [
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    ]


def names_host(cert: x509.Certificate, host: str) -> bool:
    """Whether a TLS client dialling `host` accepts `cert` (gRPC's Hostname
    Verification): an IP host needs that IP among the IP names; a DNS host a DNS name
    matching it (`_dns_name_matches`), or, for a certificate with no alternative names
    at all, a matching common name."""
    dns, ips = certificate_names(cert)
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 zone is no part of it
    except ValueError:
        ip = None
    if ip is not None:
        return any(ipaddress.ip_address(x) == ip for x in ips)
    if not dns and not ips:
        return _dns_name_matches(common_name(cert), host)
    return any(_dns_name_matches(d, host) for d in dns)


def certificate_problem(
    chain: list[x509.Certificate],
    cas: list[x509.Certificate],
    *,
    cert: Path,
    ca: Path,
    role: Literal["node"] | None = None,
    node_id: str | None = None,
    now: dt.datetime | None = None,
) -> str:
    """'' when `chain` (from --tls-cert `cert`) may serve as `role` under the CA(s) of
    --tls-ca `ca`, else what is wrong, naming the option. Any role: a certificate (or
    the CA that signed it) not yet valid or expired, a CA certificate as this end's
    (other CAs in a --tls-ca bundle, a retired one, are not checked). "node" (a node's
    own files; the CLI's are diagnosed when it connects) also: a certificate the CA did
    not sign (directly or through the intermediates after it in --tls-cert), one
    without serverAuth and clientAuth, a common name other than `node_id`."""
    now = now or dt.datetime.now(dt.UTC)
    leaf = chain[0]
    problem = _dates_problem("--tls-cert", cert, leaf, now)
    if problem:
        return problem
    if _is_ca(leaf):
        return (
            f"--tls-cert: {cert} is a CA certificate (CA:TRUE), not a node's or the CLI's: "
            f"give this end's own certificate (NAME.pem of `declora-node certs`)"
        )
    anchor = _anchor(chain, cas)
    if anchor is None and role is not None:  # role None: the CLI's own diagnosis at
        # connect time ("it refused this certificate") stays as it is
        return (
            f"--tls-cert: {cert} is not signed by the CA of --tls-ca {ca}: give the "
            "certificate and the CA of the same `declora-node certs` run"
        )
    problem = "" if anchor is None else _dates_problem("--tls-ca", ca, anchor, now)
    if problem:
        return problem
    name = common_name(leaf)
    usages = _usages(leaf)
    if role == "node":
        missing = (
            [] if usages is None else [u for u in ("serverAuth", "clientAuth") if u not in usages]
        )
        if missing:
            cli = " (the CLI's cli.pem?)" if usages == {"clientAuth"} else ""
            return (
                f"--tls-cert: {cert} ({name or 'no name'}) is not a node certificate{cli}: "
                f"it lacks the extended key usage {' and '.join(missing)} a node needs to "
                "serve and to dial; give the node's NAME.pem of `declora-node certs`"
            )
        if not name:
            return f"--tls-cert: {cert} has no common name: a node's id is its certificate's name"
        if node_id and node_id != name:
            return (
                f"--node-id {node_id!r} is not the name of --tls-cert {cert} ({name!r}): under "
                f"mTLS peers admit a node only as its certificate's name: give --node-id "
                f"{name}, or the certificate of {node_id!r}"
            )
    return ""


@dataclass(frozen=True)
class TlsFiles:
    """PEM bytes of this end's certificate chain, its private key and the swarm CA
    (and the paths they were read from, where known)."""

    cert: bytes
    key: bytes
    ca: bytes
    cert_path: Path | None = field(default=None, compare=False)
    key_path: Path | None = field(default=None, compare=False)
    ca_path: Path | None = field(default=None, compare=False)
    crl: Revocations | None = field(default=None, compare=False)  # --tls-crl, when given

    @classmethod
    def load(
        cls,
        cert: Path | None,
        key: Path | None,
        ca: Path | None,
        *,
        role: Literal["node"] | None = None,
        node_id: str | None = None,
        crl: Path | None = None,
    ) -> TlsFiles | None:
        """None when no file is given; TlsError (naming the option) when only some are,
        when one cannot be read or parsed, when the key does not match the cert, or
        when the certificate may not serve as `role` (`certificate_problem`: dates,
        the CA's signature, a CA or client-only certificate for a node, a name other
        than `node_id`); `crl` (--tls-crl) also when it is not a CRL the CA signed, or
        it revokes this end's own certificate."""
        given = [p is not None for p in (cert, key, ca)]
        if not any(given):
            if crl is not None:
                raise TlsError(f"--tls-crl needs mTLS: also give {', '.join(TLS_OPTIONS)}")
            return None
        if not all(given):
            missing = [o for o, g in zip(TLS_OPTIONS, given, strict=True) if not g]
            raise TlsError(f"{', '.join(TLS_OPTIONS)} go together: also give {', '.join(missing)}")
        assert cert is not None and key is not None and ca is not None
        files = cls(
            _read_pem("--tls-cert", cert, "cert"),
            _read_pem("--tls-key", key, "key"),
            _read_pem("--tls-ca", ca, "cert"),
            cert,
            key,
            ca,
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

        chain = x509.load_pem_x509_certificates(files.cert)
        private = load_pem_private_key(files.key, password=None)
        if spki(chain[0].public_key()) != spki(private.public_key()):
            raise TlsError(f"--tls-key: {key} is not the private key of --tls-cert {cert}")
        problem = certificate_problem(
            chain,
            x509.load_pem_x509_certificates(files.ca),
            cert=cert,
            ca=ca,
            role=role,
            node_id=node_id,
        )
        if problem:
            raise TlsError(problem)
        if crl is None:
            return files
        from dataclasses import replace

        from declora.node.revocation import Revocations

        revocations = Revocations(crl, ca, x509.load_pem_x509_certificates(files.ca))
        own = revocations.revoked(chain)
        if own:
            dns, ips = certificate_names(chain[0])
            hosts = f" --hosts {','.join(dns + ips)}" if dns or ips else ""  # else localhost
            raise TlsError(
                f"--tls-crl: {crl} revokes this end's own --tls-cert {cert} ({own}): peers "
                f"refuse it; mint a new one with `declora-node certs --output {ca.parent} "
                f"--nodes {common_name(chain[0]) or 'NAME'}{hosts} --force`"
            )
        return replace(files, crl=revocations)

    def warnings(self, now: dt.datetime | None = None) -> list[str]:
        """A line for each thing to fix soon that does not stop a start: a private key
        file open to others (`exposed_file_warning`), this end's certificate or its CA
        expiring within EXPIRY_WARNING (`expiry_warning`)."""
        from cryptography import x509

        now = now or dt.datetime.now(dt.UTC)
        chain = x509.load_pem_x509_certificates(self.cert)
        anchor = _anchor(chain, x509.load_pem_x509_certificates(self.ca))
        found = [exposed_file_warning("--tls-key", self.key_path) if self.key_path else ""]
        if self.cert_path is not None:
            found.append(expiry_warning("--tls-cert", self.cert_path, chain[0], now))
        if self.ca_path is not None and anchor is not None:
            found.append(expiry_warning("--tls-ca", self.ca_path, anchor, now))
        if self.crl is not None:
            found.append(self.crl.stale_warning(now))
        return [line for line in found if line]

    def address_problem(self, option: str, address: str) -> str:
        """'' when this end's certificate names the host of `address` (host:port, the
        value of `option`) as peers dialling it check (`names_host`), or when that host
        is unspecified (0.0.0.0, ::: no one dials it); else why not, with the
        `declora-node certs` command that re-issues it."""
        from cryptography import x509

        host = split_address(address)[0]
        try:
            if ipaddress.ip_address(host.split("%", 1)[0]).is_unspecified:
                return ""
        except ValueError:
            pass
        leaf = x509.load_pem_x509_certificate(self.cert)
        if names_host(leaf, host):
            return ""
        dns, ips = certificate_names(leaf)
        named = ", ".join(dns + ips) or f"no alternative name; common name {common_name(leaf)!r}"
        folder = self.ca_path.parent if self.ca_path is not None else Path("PKI-FOLDER")
        hosts = ",".join(dict.fromkeys([host, *dns, *ips]))
        return (
            f"--tls-cert: {self.cert_path or 'the certificate'} does not name {host}, the "
            f"host of {option} {address} that peers dial ({named}): they would refuse it "
            f"(Hostname Verification), and the node would join and drop again and again; "
            f"re-issue it with `declora-node certs --output {folder} --nodes {self.name} "
            f"--hosts {hosts} --force` (or give the {option} it names)"
        )

    @property
    def name(self) -> str:
        """The common name of this end's certificate (a node's id under mTLS)."""
        from cryptography import x509

        return common_name(x509.load_pem_x509_certificate(self.cert))

    def _probe_context(self) -> ssl.SSLContext:
        """A client TLS context with this end's cert that verifies the peer's chain
        against the CA (not its host name: gRPC checks that on its own channel)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=self.ca.decode("ascii", "replace"))
        ctx.set_alpn_protocols(["h2"])
        if self.cert_path is not None and self.key_path is not None:
            ctx.load_cert_chain(self.cert_path, self.key_path)
        else:  # built from bytes: ssl reads a chain and key only from files
            with tempfile.TemporaryDirectory() as tmp:
                pem = Path(tmp) / "end.pem"
                fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(self.cert + b"\n" + self.key)
                ctx.load_cert_chain(pem)
        return ctx

    async def server_name(self, host: str, port: int, timeout: float) -> str:
        """The common name of the certificate the server at host:port presents, once
        its chain verifies against the CA; TlsError when it cannot be read (a TLS
        connection of its own, closed at once: gRPC's channels do not expose it), when
        it has no common name (a node's id is its certificate's name), and
        `revocation.RevokedError` when --tls-crl revokes a certificate of its chain
        (the leaf, or an intermediate, as the server sent them)."""
        from cryptography import x509

        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host, port, ssl=self._probe_context(), server_hostname=host or None
                ),
                timeout,
            )
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            raise TlsError(f"cannot read the certificate of {host}:{port}: {exc}") from exc
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True)
            chain = _sent_chain(ssl_object) if der and self.crl is not None else []
        finally:  # at once: a graceful close waits for the server (gRPC's: seconds)
            writer.transport.abort()
        if not der:
            raise TlsError(f"{host}:{port} presented no certificate")
        leaf = x509.load_der_x509_certificate(der)
        name = common_name(leaf)
        if not name:
            raise TlsError(
                f"{host}:{port} serves a certificate without a common name (serial "
                f"{leaf.serial_number:#x}): under mTLS a node's id is its certificate's name"
            )
        if self.crl is not None:
            from declora.node.revocation import RevokedError

            chain = chain or [leaf]
            revoked = self.crl.revoked(chain)
            if revoked:
                raise RevokedError(f"{host}:{port} serves a revoked certificate: {revoked}")
            self.crl.note(name, chain)
        return name

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


def _sent_chain(ssl_object: ssl.SSLObject) -> list[x509.Certificate]:
    """The chain a TLS server sent (leaf first), where this Python can read it
    (3.13's `get_unverified_chain`, a private method before); [] where not."""
    from cryptography import x509

    getter = getattr(ssl_object, "get_unverified_chain", None)
    getter = getter or getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if getter is None:
        return []
    try:
        pems = [c.public_bytes() for c in getter()]  # PEM text by default
        return [
            x509.load_pem_x509_certificate(p.encode() if isinstance(p, str) else p) for p in pems
        ]
    except (ValueError, TypeError, AttributeError, ssl.SSLError):
        return []


# ---------------------------------------------------------------- swarm secret
def secret_text(secret: str) -> str:
    """The swarm secret as it signs: `secret` (from a flag, DECLORA_SWARM_SECRET or a
    config file) less surrounding ASCII whitespace, as a file's final newline; inner
    characters count. `SwarmAuth` strips its key the same way."""
    return secret.strip(SECRET_SPACE)


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


def floor_network(source: str) -> str:
    """The network a replay floor of `source` (`auth.source_key`: an IPv4 address, an
    IPv6 /64) folds into (`SwarmAuth`): its IPv4 /16 or IPv6 /48 ('10.1.2.3' ->
    '10.1.0.0/16'); '' for a source that is no IP."""
    try:
        net = ipaddress.ip_network(source.split("%")[0], strict=False)
    except ValueError:
        return ""
    wide = 16 if net.version == 4 else 48
    return str(net if net.prefixlen <= wide else net.supernet(new_prefix=wide))


class SwarmAuth:
    """Signs and verifies messages with the swarm secret; remembers recent nonces.

    The key is `secret` less surrounding whitespace (`secret_text`), whoever passes it.
    A nonce is accepted once: while its timestamp is within `window` seconds of this
    clock it stays in the replay cache; when the cache holds `max_nonces`, the oldest
    leave it and no message from their source (`verify`'s: the caller's IPv4 address
    or IPv6 /64, `auth.source_key`) at or before their timestamp is accepted any
    more. So a holder of the secret that floods signed calls dated ahead fills the
    cache and moves only its own source's floor: honest senders, at other addresses,
    are still accepted (before, one floor for all: 101,000 signed Leaves dated 110 s
    ahead, in 54 s, had every honest Hello and Status refused as replayed). At most
    `max_nonces` sources keep a floor; beyond, the oldest kept one folds into the
    floor of its network (`floor_network`: an IPv4 /16, an IPv6 /48), and only past
    `max_nonces` such networks into the floor of every source (before, straight into
    that: a holder of the secret signing from more than `max_nonces` addresses, such
    as 127.0.0.0/8 on a node's own host, had every honest sender refused as
    replayed). The price: while such a flood overflows the cache, a
    message whose nonce left it early may be replayed once from another source
    within its `window` (a capture of it, replayed by someone on the path).
    """

    def __init__(
        self,
        secret: bytes,
        window: float = WINDOW_SECONDS,
        max_nonces: int = MAX_NONCES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = secret.strip(SECRET_SPACE.encode())
        self.window_ms = int(window * 1000)
        self.max_nonces = max_nonces
        self.clock = clock
        self._seen: set[bytes] = set()
        self._by_time: list[tuple[int, bytes, str]] = []  # heap of (ms, nonce, source)
        # source -> nonces from it at or before this time were forgotten early
        self._floors: dict[str, int] = {}
        self._networks: dict[str, int] = {}  # ...from any source of a network (folded)
        self._floor_ms = -1  # ...and from any source (networks folded when too many)

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

    def verify(self, msg: Signed, source: str = "") -> None:
        """Refuse (AuthError) a missing or bad mac, a malformed or stale nonce, a replay.
        `source`: where `msg` came from (the caller's IP; '' unknown), whose floor
        alone a forgotten nonce of it moves."""
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
        floor = max(self._floor_ms, self._floors.get(source, -1))
        if self._networks:
            floor = max(floor, self._networks.get(floor_network(source), -1))
        if msg.nonce in self._seen or sent_ms <= floor:
            raise AuthError("replayed nonce: this message was already received", "replay")
        self._remember(sent_ms, bytes(msg.nonce), source)

    @property
    def remembered(self) -> int:
        """Nonces held in the replay cache now (at most `max_nonces`)."""
        return len(self._seen)

    def _expire(self, now_ms: int) -> None:
        while self._by_time and self._by_time[0][0] < now_ms - self.window_ms:
            self._seen.discard(heapq.heappop(self._by_time)[1])

    def _remember(self, sent_ms: int, nonce: bytes, source: str) -> None:
        heapq.heappush(self._by_time, (sent_ms, nonce, source))
        self._seen.add(nonce)
        while len(self._by_time) > self.max_nonces:
            oldest_ms, oldest, where = heapq.heappop(self._by_time)
            self._seen.discard(oldest)
            floors = self._floors
            floors[where] = max(floors.pop(where, -1), oldest_ms)  # now the newest kept
            if len(floors) > self.max_nonces:  # many sources: the oldest kept folds in
                first = next(iter(floors))
                networks, network = self._networks, floor_network(first)
                networks[network] = max(networks.pop(network, -1), floors.pop(first))
                if len(networks) > self.max_nonces:  # many networks: one floor for all
                    kept_longest = next(iter(networks))
                    self._floor_ms = max(self._floor_ms, networks.pop(kept_longest))

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
    try:
        host = split_address(listen)[0]
    except ValueError:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
