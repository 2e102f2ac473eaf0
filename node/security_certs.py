"""Checks of certificates and TLS files: who signed what, names, dates, usages.

`certificate_problem` checks a node's (or the CLI's) certificate against its CA and
its node id; `names_host` and `certificate_names` match a certificate to the host it
is dialled at; `exposed_file_warning` and `expiry_warning` give the warnings `start`
prints. Each problem is one sentence naming the option; nothing here raises but
`TlsError` for a file that cannot be read or parsed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # cryptography is imported where it is used: `status` starts fast
    from cryptography import x509


TLS_OPTIONS = ("--tls-cert", "--tls-key", "--tls-ca")
EXPIRY_WARNING = dt.timedelta(days=7)  # a certificate ending sooner is warned about at start


class TlsError(ValueError):
    """A TLS option is missing, unreadable or does not hold what it should; names it."""


# ---------------------------------------------------------------- TLS
def read_pem(option: str, path: Path, kind: str) -> bytes:
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


def ca_anchor(
    chain: list[x509.Certificate], cas: list[x509.Certificate]
) -> x509.Certificate | None:
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
    anchor = ca_anchor(chain, cas)
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
