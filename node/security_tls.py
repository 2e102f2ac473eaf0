"""`TlsFiles`: this end's certificate chain, key and swarm CA, loaded and checked
together (`security_certs`), and the gRPC credentials and TLS probes made from them
(the name of the certificate a server presents, refusing one without a name or
revoked by --tls-crl: `TlsFiles.crl`, `revocation.Revocations`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import grpc

from declora.node.address import split_address
from declora.node.security_certs import (
    TLS_OPTIONS,
    TlsError,
    ca_anchor,
    certificate_names,
    certificate_problem,
    common_name,
    expiry_warning,
    exposed_file_warning,
    names_host,
    read_pem,
)

if TYPE_CHECKING:  # cryptography is imported where it is used: `status` starts fast
    from cryptography import x509

    from declora.node.revocation import Revocations


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
            read_pem("--tls-cert", cert, "cert"),
            read_pem("--tls-key", key, "key"),
            read_pem("--tls-ca", ca, "cert"),
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
        anchor = ca_anchor(chain, x509.load_pem_x509_certificates(self.ca))
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
