"""`declora-node certs`: a private CA and mTLS certificates for a swarm.

A folder without a CA gets a new one: `ca.pem` and `ca-key.pem`, then `NAME.pem` and
`NAME-key.pem` for every node and for the `cli` client. A folder that holds `ca.pem`
and `ca-key.pem` keeps its CA: only the named nodes' certificates are minted, signed
by it (and `cli`'s, when that folder has none), so a node joins, or one node's
certificate is renewed, without re-issuing the others; `new_ca` replaces the CA
instead. A file that exists is replaced only with `force` (the CA's two, only with
`new_ca`). Keys are EC P-256; private keys are mode 0600, and a folder made here 0700,
whatever the umask. Node certificates carry every host as a subject alternative name
(IP addresses as IPAddress entries, other names as IDNA A-labels) and serve both ends
of a connection (serverAuth + clientAuth); the `cli` certificate is a client
certificate only. Every name and host is checked, and everything is built, before
anything is written; the files are written under temporary names and renamed into
place at the end, so an error leaves the folder as it was.

`revoke` (`declora-node certs revoke`) adds certificates the folder's CA issued (by
file, or by serial) to that CA's certificate revocation list (`crl.pem` beside it by
default; a node's --tls-crl): the entries it held are kept with their dates, its CRL
number goes up by one, its nextUpdate is `days` on; it is signed by the CA and
renamed into place. A certificate another CA issued, the CA itself (by file or by
serial), or a list another CA signed is refused, and nothing is written. Two revokes
into one folder at once run one after the other (a lock on the folder): neither loses
the other's entries.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from declora.node.errors import HintedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]

CLIENT = "cli"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_NAME = 64  # a certificate's common name is at most 64 characters (RFC 5280)
LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")  # a DNS name's label (_: compose)
CLOCK_SKEW = dt.timedelta(minutes=5)  # certs are valid from a little before now
MAX_DAYS = 36_500  # validity of a minted certificate at most
HELP_HINT = "see `declora-node certs --help` for what each option accepts"
CaKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey  # keys a CA here may have
NEW_CA_HINT = (
    "pass --new-ca to mint a new CA (then re-issue every node's certificate with it), "
    "or give another --output"
)


class CertsError(HintedError):
    """A bad name, host or day count, a file in the way, a CA that cannot sign, or a
    folder that cannot be written: nothing was written."""


@dataclass(frozen=True)
class Minted:
    """What one run wrote: `certs` maps each name to its (cert, key); `new_ca` is
    whether `ca`/`ca_key` were written now (else the folder's CA signed); `stale` the
    certificates left in the folder that a replaced CA had signed; `expires` the end
    of the new certificates' validity, `capped` when the existing CA's end cut it
    by over a day;
    `replaced` when a CA that was there was replaced."""

    ca: Path
    ca_key: Path
    certs: dict[str, tuple[Path, Path]]
    new_ca: bool
    expires: dt.datetime
    capped: bool = False
    replaced: bool = False
    stale: list[Path] = field(default_factory=list)


def _host(host: str) -> str:
    """`host` as it goes into a certificate: an IP address, or an ASCII DNS name (a
    non-ASCII one as IDNA A-labels; a leading `*.` wildcard allowed; an IPv6 address
    in brackets, as in a URL, taken without them)."""
    if host.startswith("[") and host.endswith("]") and ":" in host and _is_ip(host[1:-1]):
        host = host[1:-1]
    if _is_ip(host):
        if "%" in host:
            raise CertsError(
                f"--hosts: {host!r} has a zone (%...), which a certificate cannot hold",
                hint="give the address without its zone, e.g. fe80::1",
            )
        return str(ipaddress.ip_address(host))
    wildcard, name = ("*.", host[2:]) if host.startswith("*.") else ("", host)
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_name = ""
    labels = ascii_name.split(".")
    if not ascii_name or len(ascii_name) > 253 or not all(LABEL.match(x) for x in labels):
        raise CertsError(
            f"--hosts: {host!r} is neither an IP address nor a DNS name",
            hint="give host names of letters, digits, '-' and '_' between dots (each part "
            "1 to 63 characters; non-ASCII names are converted to IDNA) or IP addresses",
        )
    return wildcard + ascii_name


def _check(nodes: list[str], hosts: list[str], days: int) -> list[str]:
    """Raise CertsError for a bad node name, host or day count; the hosts as they go
    into a certificate, each once."""
    if not nodes:
        raise CertsError("--nodes: give at least one node name", hint="e.g. --nodes node-0,node-1")
    bad = [n for n in nodes if not NAME.match(n)]
    if bad:
        raise CertsError(
            f"--nodes: {bad} are not file-name-safe",
            hint="use letters, digits, '_', '.' and '-', starting with a letter or digit",
        )
    long = [n for n in nodes if len(n) > MAX_NAME]
    if long:
        raise CertsError(
            f"--nodes: {[n[:16] + '...' for n in long]} are over {MAX_NAME} characters",
            hint=f"a certificate's name holds at most {MAX_NAME} characters: use shorter names",
        )
    if len(set(nodes)) != len(nodes):
        raise CertsError("--nodes: names must be unique", hint="give each node name once")
    reserved = {CLIENT, "ca"} & set(nodes)
    if reserved:
        raise CertsError(
            f"--nodes: {sorted(reserved)} are reserved for the client and the CA",
            hint="choose other node names (cli.pem, the client's certificate, is minted "
            "with every new CA)",
        )
    if not hosts:
        raise CertsError(
            "--hosts: give at least one host name or IP address",
            hint="give every name or IP the nodes are dialled at, e.g. 127.0.0.1,localhost",
        )
    if not 1 <= days <= MAX_DAYS:
        raise CertsError(
            f"--days: must be from 1 to {MAX_DAYS} (100 years)", hint="e.g. --days 365"
        )
    return list(dict.fromkeys(_host(h) for h in hosts))


def _load_ca(cert_path: Path, key_path: Path, now: dt.datetime) -> tuple[x509.Certificate, CaKey]:
    """The folder's CA, if it can sign now: a CA certificate, not expired, with its
    key. CertsError otherwise."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise CertsError(
            f"cannot read the CA in {cert_path.parent}: {exc}", hint=NEW_CA_HINT
        ) from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if not isinstance(key, CaKey) or key.public_key().public_bytes(
        *spki
    ) != cert.public_key().public_bytes(*spki):
        raise CertsError(
            f"{key_path} is not the key of {cert_path}",
            hint="put the CA's own key beside ca.pem, or " + NEW_CA_HINT,
        )
    with contextlib.suppress(x509.ExtensionNotFound):
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            if cert.not_valid_after_utc <= now:
                raise CertsError(
                    f"the CA {cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}",
                    hint=NEW_CA_HINT,
                )
            return cert, key
    raise CertsError(f"{cert_path} is not a CA certificate", hint=NEW_CA_HINT)


def _new_ca(start: dt.datetime, end: dt.datetime) -> tuple[x509.Certificate, CaKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "declora swarm CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(key_cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _usage(key_cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not key_cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf(
    name: str,
    hosts: list[str],
    ca: tuple[x509.Certificate, CaKey],
    start: dt.datetime,
    end: dt.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """`name`'s certificate and key, signed by `ca`: a node's (its hosts as SANs,
    server and client) or, for CLIENT, the client's."""
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(key_cert_sign=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(aki, critical=False)
    )
    if name != CLIENT:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
        san = [
            x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h) for h in hosts
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return cert.sign(ca_key, hashes.SHA256()), key


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _key_pem(key: CaKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_all(out: Path, files: dict[Path, tuple[bytes, bool]]) -> None:
    """Write every (data, private) under a temporary name in `out` (private ones mode
    0600, others 0644, whatever the umask), then rename each into place. Until the
    renames all is undone on any error (a Ctrl-C too); the renames, in one folder,
    do not fail short of the disk failing."""
    temps: dict[Path, Path] = {}
    try:
        for path, (data, private) in files.items():
            temp = out / f".{path.name}.{secrets.token_hex(4)}.tmp"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            temps[path] = temp
            try:
                os.fchmod(fd, 0o600 if private else 0o644)
            except BaseException:
                os.close(fd)
                raise
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        for path, temp in temps.items():
            os.replace(temp, path)
        fd = os.open(out, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        for temp in temps.values():
            with contextlib.suppress(OSError):
                temp.unlink()


def _folder(out: Path) -> None:
    """`out` exists: made here mode 0700 (an existing folder keeps its mode)."""
    if out.is_dir():
        return
    try:
        out.mkdir(parents=True, mode=0o700)
        os.chmod(out, 0o700)  # mkdir's mode is less the umask
    except OSError as exc:
        raise CertsError(
            f"--output: cannot create {out}: {exc.strerror or exc}",
            hint="give a folder that exists or can be created, where you can write",
        ) from None


def mint(
    out: Path, nodes: list[str], hosts: list[str], days: int, force: bool, new_ca: bool = False
) -> Minted:
    """Certificates for `nodes` under `out`, signed by the CA there, or by a new one
    (with one for the CLI) when there is none or `new_ca`. CertsError, with nothing
    written, for bad input, a file in the way (unless `force`; the CA's, unless
    `new_ca`), a CA that cannot sign, or a folder that cannot be written."""
    checked = _check(nodes, hosts, days)
    ca_paths = out / "ca.pem", out / "ca-key.pem"
    ca_there = [p for p in ca_paths if p.exists()]
    now = dt.datetime.now(dt.UTC)
    start, end = now - CLOCK_SKEW, now + dt.timedelta(days=days)
    if ca_there and not new_ca:
        if len(ca_there) == 1:
            raise CertsError(
                f"{out} holds {ca_there[0].name} but not "
                f"{next(p.name for p in ca_paths if p not in ca_there)}: no CA to sign with",
                hint="put the CA's two files there, or " + NEW_CA_HINT,
            )
        ca = _load_ca(*ca_paths, now)
    else:
        ca = _new_ca(start, end)
    fresh = not ca_there or new_ca
    capped = not fresh and end - ca[0].not_valid_after_utc > dt.timedelta(days=1)
    end = min(end, ca[0].not_valid_after_utc)

    cli = [out / f"{CLIENT}.pem", out / f"{CLIENT}-key.pem"]
    names = [*nodes, CLIENT] if fresh or not any(p.exists() for p in cli) else nodes
    pairs = {n: (out / f"{n}.pem", out / f"{n}-key.pem") for n in names}
    existing = [str(p) for pair in pairs.values() for p in pair if p.exists()]
    if existing and not force:
        raise CertsError(
            f"not overwriting {', '.join(existing)}",
            hint="pass --force to replace them, or choose other --nodes or another --output",
        )
    files: dict[Path, tuple[bytes, bool]] = {}
    for name, (cert_path, key_path) in pairs.items():
        cert, key = _leaf(name, checked, ca, start, end)
        files[cert_path] = (_cert_pem(cert), False)
        files[key_path] = (_key_pem(key), True)
    stale: list[Path] = []
    if fresh:
        files[ca_paths[0]] = (_cert_pem(ca[0]), False)
        files[ca_paths[1]] = (_key_pem(ca[1]), True)
        if ca_there:
            stale = sorted(
                p
                for p in out.glob("*.pem")
                if p not in files and p not in ca_paths and not p.name.endswith("-key.pem")
            )
    _folder(out)
    try:
        _write_all(out, files)
    except OSError as exc:
        raise CertsError(
            f"--output: cannot write into {out}: {exc.strerror or exc}",
            hint="give a folder you can write to, with space left",
        ) from None
    return Minted(*ca_paths, pairs, fresh, end, capped, bool(ca_there) and new_ca, stale)


def usage(minted: Minted) -> str:
    """What was written and the flags that use it, for the operator."""
    ca = minted.ca
    if minted.new_ca:
        lines = [f"wrote {ca} and {minted.ca_key} (keep the CA key off the nodes)"]
    else:
        lines = [f"signed with the existing CA {ca}"]
    lines += [f"wrote {cert} and {key}" for cert, key in minted.certs.values()]
    lines.append(f"the certificates are valid until {minted.expires:%Y-%m-%d %H:%M} UTC")
    lines.append("start each node NAME with:")
    lines.append(
        f"  declora-node start --tls-ca {ca} --tls-cert {ca.parent}/NAME.pem "
        f"--tls-key {ca.parent}/NAME-key.pem ..."
    )
    cert, key = ca.parent / f"{CLIENT}.pem", ca.parent / f"{CLIENT}-key.pem"
    lines.append("ask a node for its status with:")
    lines.append(
        f"  declora-node status --target HOST:PORT --tls-ca {ca} --tls-cert {cert} --tls-key {key}"
    )
    return "\n".join(lines)


def warnings(minted: Minted) -> list[str]:
    """What the operator must act on: certificates a replaced CA had signed, and
    validity cut short by the existing CA's end."""
    lines = []
    if minted.replaced:
        left = f" (here: {', '.join(p.stem for p in minted.stale)})" if minted.stale else ""
        lines.append(
            f"replaced the swarm CA {minted.ca}: every other node's certificate of the old "
            f"CA{left} no longer verifies; re-issue each one with `declora-node certs "
            f"--output {minted.ca.parent} --nodes NAMES --force` and give every node the new "
            "ca.pem"
        )
    if minted.capped:
        lines.append(
            f"the CA {minted.ca} expires on {minted.expires:%Y-%m-%d}: the new certificates "
            "end with it (mint a new CA with --new-ca before then)"
        )
    return lines


# ---------------------------------------------------------------- revocation
CRL_NAME = "crl.pem"  # the revocation list `revoke` writes beside ca.pem by default
CRL_DAYS = 30  # default span until the list's nextUpdate
MAX_SERIAL = 2**159  # a certificate serial is at most 20 octets, positive (RFC 5280)
LOCK_WAIT = 30.0  # seconds a revoke waits for another one writing into the same folder
REVOKE_HINT = "give the --output folder of the `declora-node certs` run that made the CA"


@dataclass(frozen=True)
class Revoked:
    """What one `revoke` wrote: the CRL, the serials it added now, those it already
    listed, and how many it lists in all; its nextUpdate."""

    crl: Path
    added: list[int]
    already: list[int]
    total: int
    next_update: dt.datetime


def _serial(text: str) -> int:
    """A serial given as decimal, 0x-hex, or hex octets with colons (as openssl shows it)."""
    try:
        value = int(text.replace(":", ""), 16) if ":" in text else int(text, 0)
    except ValueError:
        value = 0
    if not 0 < value < MAX_SERIAL:
        raise CertsError(
            f"--serial: {text!r} is not a certificate serial",
            hint="give it in decimal, as 0x... hex, or as hex octets like 3a:0f:...",
        )
    return value


def _issued(path: Path, ca: x509.Certificate, ca_path: Path) -> int:
    """The serial of the certificate in `path`, once `ca` issued it; CertsError if not."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or "not a PEM certificate"
        raise CertsError(f"--cert: cannot read {path}: {why}", hint=REVOKE_HINT) from None
    if cert == ca:
        raise CertsError(
            f"--cert: {path} is the CA itself, which a list it signs cannot revoke",
            hint=NEW_CA_HINT,
        )
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CertsError(
            f"--cert: {path} was not issued by the CA {ca_path}: its list revokes only "
            "that CA's certificates",
            hint=REVOKE_HINT + " and signed this certificate",
        ) from None
    return cert.serial_number


def _old_list(path: Path, ca: x509.Certificate) -> x509.CertificateRevocationList | None:
    """The list already in `path` (None when there is none); CertsError when it is not
    a PEM CRL `ca` signed (nothing is replaced then)."""
    if not path.exists():
        return None
    try:
        old = x509.load_pem_x509_crl(path.read_bytes())
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or "not a PEM revocation list"
        raise CertsError(
            f"--crl: cannot read {path}: {why}",
            hint="move it away (a new list is started) or give another --crl",
        ) from None
    if old.issuer != ca.subject or not old.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
        raise CertsError(
            f"--crl: {path} was not signed by the CA in its folder: not adding to it",
            hint="give the --crl of this CA, or another --crl for a new list",
        )
    return old


def revoke(
    out: Path, certs: list[Path], serials: list[str], crl: Path | None, days: int = CRL_DAYS
) -> Revoked:
    """Add the certificates `certs` (each one the CA in `out` issued) and `serials` to
    that CA's revocation list `crl` (default `out`/crl.pem), keeping what it listed
    (their dates too), signed by the CA, valid `days` (its nextUpdate), its CRL number
    one above the old one's. Written under a temporary name and renamed into place.
    CertsError, with nothing written, for bad input, a foreign certificate or list, no
    CA in `out`, or a folder that cannot be written."""
    if not certs and not serials:
        raise CertsError(
            "give the certificates to revoke: --cert FILE or --serial N",
            hint="e.g. `declora-node certs revoke --output pki --cert pki/node-3.pem`",
        )
    if not 1 <= days <= MAX_DAYS:
        raise CertsError(f"--days: must be from 1 to {MAX_DAYS}", hint="e.g. --days 30")
    ca_paths = out / "ca.pem", out / "ca-key.pem"
    missing = [p.name for p in ca_paths if not p.exists()]
    if missing:
        raise CertsError(
            f"{out} holds no {' and no '.join(missing)}: no CA to sign with", hint=REVOKE_HINT
        )
    now = dt.datetime.now(dt.UTC)
    ca, key = _load_ca(*ca_paths, now)
    wanted = [_issued(p, ca, ca_paths[0]) for p in certs] + [_serial(s) for s in serials]
    if ca.serial_number in wanted:  # as --cert of ca.pem: a list cannot revoke its signer
        raise CertsError(
            f"--serial: {ca.serial_number:#x} is the CA's own serial, which a list it signs "
            "cannot revoke",
            hint=NEW_CA_HINT,
        )
    path = crl or out / CRL_NAME
    with _list_lock(path):  # another revoke's read-modify-write waits: none is lost
        return _add_to_list(path, ca, key, wanted, days)


@contextlib.contextmanager
def _list_lock(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of the folder of the list `path` for a block (a flock on
    the folder: nothing is left in it): a second `revoke` into that folder waits for
    the first to have written, up to `LOCK_WAIT` seconds (then a CertsError naming the
    holder: a node holds its run folder while it runs). Where the file system has no
    locks the block runs unlocked."""
    folder = path.parent
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        raise CertsError(
            f"--crl: cannot write {path}: {exc.strerror or exc}",
            hint="give a --crl in a folder you can write to",
        ) from None
    try:
        _lock(fd, folder)
        yield
    finally:
        os.close(fd)  # drops the lock


def _lock(fd: int, folder: Path) -> None:
    """flock `fd` (of `folder`) exclusively, waiting up to `LOCK_WAIT` seconds."""
    if fcntl is None:  # pragma: no cover - Windows
        return
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                from declora.node.run_folder import holder

                pid = holder(folder)
                raise CertsError(
                    f"--crl: {folder} stayed locked by another process"
                    f"{f' (pid {pid})' if pid else ''} for {LOCK_WAIT:g}s: not revoking",
                    hint="run it again once that process is done (a node holds its run "
                    "folder while it runs: keep the list in the certificates' folder)",
                ) from None
            time.sleep(0.05)
        except OSError:  # ENOLCK (some network file systems): nothing is checked
            return


def _add_to_list(
    path: Path, ca: x509.Certificate, key: CaKey, wanted: list[int], days: int
) -> Revoked:
    """`revoke`'s read-modify-write of the list `path` (under `_list_lock`)."""
    now = dt.datetime.now(dt.UTC)
    old = _old_list(path, ca)
    listed = [] if old is None else list(old)
    known = {r.serial_number for r in listed}
    added = [n for n in dict.fromkeys(wanted) if n not in known]
    number = 0
    if old is not None:
        with contextlib.suppress(x509.ExtensionNotFound):
            number = old.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    end = now + dt.timedelta(days=days)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - CLOCK_SKEW)
        .next_update(end)
        .add_extension(x509.CRLNumber(number + 1), critical=False)
    )
    for entry in listed:
        builder = builder.add_revoked_certificate(entry)
    for serial in added:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        builder = builder.add_revoked_certificate(entry)
    signed = builder.sign(key, hashes.SHA256())
    try:
        _write_all(path.parent, {path: (signed.public_bytes(serialization.Encoding.PEM), False)})
    except OSError as exc:
        raise CertsError(
            f"--crl: cannot write {path}: {exc.strerror or exc}",
            hint="give a --crl in a folder you can write to",
        ) from None
    already = [n for n in dict.fromkeys(wanted) if n in known]
    return Revoked(path, added, already, len(listed) + len(added), end)
