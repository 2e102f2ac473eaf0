"""`declora-node certs`: a private CA and mTLS certificates for a swarm.

Writes `ca.pem` and `ca-key.pem`, then `NAME.pem` and `NAME-key.pem` for every node
and for the `cli` client. Keys are EC P-256, private keys are written mode 0600.
Node certificates carry every host as a subject alternative name (IP addresses as
IPAddress entries) and serve both ends of a connection (serverAuth + clientAuth);
the `cli` certificate is a client certificate only. Nothing is written when any
target file exists, unless `force`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT = "cli"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
CLOCK_SKEW = dt.timedelta(minutes=5)  # certs are valid from a little before now


MAX_DAYS = 36_500  # validity of a minted certificate at most


class CertsError(ValueError):
    """Bad names, hosts or days, or files that exist already; nothing was written."""


@dataclass(frozen=True)
class Minted:
    ca: Path
    ca_key: Path
    certs: dict[str, tuple[Path, Path]]  # name -> (cert, key), nodes then the client


def _check(nodes: list[str], hosts: list[str], days: int) -> None:
    if not nodes:
        raise CertsError("--nodes: give at least one node name")
    bad = [n for n in nodes if not NAME.match(n)]
    if bad:
        raise CertsError(f"--nodes: {bad} are not file-name-safe (letters, digits, _ . -)")
    if len(set(nodes)) != len(nodes):
        raise CertsError("--nodes: names must be unique")
    reserved = {CLIENT, "ca"} & set(nodes)
    if reserved:
        raise CertsError(f"--nodes: {sorted(reserved)} are reserved for the client and the CA")
    if not hosts:
        raise CertsError("--hosts: give at least one host name or IP address")
    if not 1 <= days <= MAX_DAYS:
        raise CertsError(f"--days: must be from 1 to {MAX_DAYS} (100 years)")


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write(path: Path, data: bytes, private: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    if private:  # before the key is written: the file may exist with wider permissions
        os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def mint(out: Path, nodes: list[str], hosts: list[str], days: int, force: bool) -> Minted:
    """Create the CA, one certificate per node and one for the CLI under `out`."""
    _check(nodes, hosts, days)
    names = [*nodes, CLIENT]
    minted = Minted(
        out / "ca.pem",
        out / "ca-key.pem",
        {n: (out / f"{n}.pem", out / f"{n}-key.pem") for n in names},
    )
    targets = [minted.ca, minted.ca_key, *(p for pair in minted.certs.values() for p in pair)]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        raise CertsError(f"not overwriting {', '.join(existing)} (pass --force to replace)")
    out.mkdir(parents=True, exist_ok=True)

    now = dt.datetime.now(dt.timezone.utc)
    start, end = now - CLOCK_SKEW, now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "declora swarm CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(minted.ca, _cert_pem(ca_cert), private=False)
    _write(minted.ca_key, _key_pem(ca_key), private=True)

    for name, (cert_path, key_path) in minted.certs.items():
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
        )
        if name != CLIENT:
            usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False
            )
        cert = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False).sign(
            ca_key, hashes.SHA256()
        )
        _write(cert_path, _cert_pem(cert), private=False)
        _write(key_path, _key_pem(key), private=True)
    return minted


def usage(minted: Minted) -> str:
    """What was written and the flags that use it, for the operator."""
    lines = [f"wrote {minted.ca} and {minted.ca_key} (keep the CA key off the nodes)"]
    lines += [f"wrote {cert} and {key}" for cert, key in minted.certs.values()]
    ca = minted.ca
    lines.append("start each node NAME with:")
    lines.append(
        f"  declora-node start --tls-ca {ca} --tls-cert {ca.parent}/NAME.pem "
        f"--tls-key {ca.parent}/NAME-key.pem ..."
    )
    cert, key = minted.certs[CLIENT]
    lines.append("ask a node for its status with:")
    lines.append(
        f"  declora-node status --target HOST:PORT --tls-ca {ca} --tls-cert {cert} --tls-key {key}"
    )
    return "\n".join(lines)
