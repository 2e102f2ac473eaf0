"""Certificate revocation under mTLS: the swarm CA's CRL (`--tls-crl`).

`read_crl` reads a PEM or DER CRL of at most `MAX_BYTES` and checks it was signed by a
CA of --tls-ca (TlsError naming --tls-crl otherwise; `parse_crl` the same for bytes a
peer gave). `Revocations` holds the serials it
revokes and answers, for a peer's certificate chain (leaf first, then any intermediates
it sent, then the CAs of --tls-ca that signed them: an intermediate kept in the --tls-ca
bundle is checked even when a peer sends only its leaf), whether one of them is revoked:
a certificate counts as revoked when its issuer is the CRL's issuer and its serial is
listed. `Revocations.refresh` re-reads the file when its size, mtime or inode changed (checked
at most every `POLL_SECONDS`; it does file I/O: callers on the event loop run it in a
thread); a file that became unreadable or invalid keeps the last good list and logs one
warning until it is good again (it never empties the list); a list of the same CA that
is not newer (its CRL number not above the one in use: a restored or stale copy, or a
list started anew) only adds its revocations, with a warning: none is taken back while
the node runs. A CRL whose nextUpdate has passed is still enforced: the revocations in
it stay true, only newer ones may be missing; it is warned about once per file version.
`Revocations.learn` takes a list a peer gave only when it verifies as the file must and
its CRL number is above the one in use; it is kept in the node's state folder
(`keep_learned`, read again at start: the newer of it and the file is used), never in
the --tls-crl file.

Callers may rely on: `revoked` never raises for any chain; the list in use only ever
changes to one that parsed and verified; `signed` is the signed list whose CRL number
is in use; the certificate remembered for a name (`note`,
`revoked_names`) is only one that was not revoked when it was seen, so a caller with a
revoked certificate of a name cannot get the live holder of a re-issued one dropped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from declora.node.security import TlsError, common_name

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger(__name__)

OPTION = "--tls-crl"
POLL_SECONDS = 2.0  # the CRL file is looked at (stat) at most this often
MAX_BYTES = 16 * 2**20  # a CRL file's size at most: some 300,000 revocations (PEM)
REVOKED = f"is revoked by {OPTION}"  # in every reason `Revocations.revoked` gives
SEEN_CHAINS = 1024  # certificates remembered by name (`note`) and parsed chains cached
WIRE_MAX = 2**64 - 1  # the largest CRL number a Hello says (a CRL may number up to 2**159)


class RevokedError(TlsError):
    """A certificate of the chain is on the CRL; the message is the reason."""


def read_crl(path: Path, cas: list[x509.Certificate], ca: Path) -> x509.CertificateRevocationList:
    """The CRL of PEM file `path`, once it parses and a CA of `cas` (read from --tls-ca
    `ca`) issued and signed it; TlsError naming --tls-crl otherwise."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)  # never more: a wrong file may be any size
    except FileNotFoundError:
        raise TlsError(f"{OPTION}: file not found: {path}") from None
    except OSError as exc:
        raise TlsError(f"{OPTION}: cannot read {path}: {exc.strerror or exc}") from None
    return parse_crl(data, cas, f"{OPTION}: {path}", ca)


def parse_crl(
    data: bytes, cas: list[x509.Certificate], what: str, ca: Path | None = None
) -> x509.CertificateRevocationList:
    """The CRL of `data` (PEM or DER, at most `MAX_BYTES`), once it parses and a CA of
    `cas` (read from --tls-ca `ca`) issued and signed it; TlsError starting with
    `what` (the file, or the peer it came from) otherwise."""
    from cryptography import x509

    if len(data) > MAX_BYTES:
        raise TlsError(
            f"{what} is over {MAX_BYTES // 2**20} MiB, too big for a revocation "
            "list: give the CRL file (`declora-node certs revoke` writes crl.pem)"
        )
    try:
        crl = (
            x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
        )
    except ValueError:
        raise TlsError(
            f"{what} is not a PEM certificate revocation list (X509 CRL): "
            f"make one with `declora-node certs revoke`"
        ) from None
    partial = _partial(crl)
    if partial:
        raise TlsError(
            f"{what} is {partial}, not the CA's full revocation list: enforced alone it "
            "would take back every revocation it leaves out; give the full list"
        )
    for issuer in cas:
        try:
            if issuer.subject == crl.issuer and crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                return crl
        except (ValueError, TypeError):  # a key this library cannot verify with: not it
            continue
    raise TlsError(
        f"{what} is not signed by the CA of --tls-ca{f' {ca}' if ca else ''}: give the CRL of "
        "that CA (`declora-node certs revoke --output` its folder)"
    )


def _partial(crl: x509.CertificateRevocationList) -> str:
    """'' for a full list; else what it is: a delta CRL (only the changes since a base
    list), or one whose issuing distribution point limits what it covers (some
    reasons, some kinds of certificates, another issuer's)."""
    from cryptography import x509

    exts = crl.extensions
    try:
        exts.get_extension_for_class(x509.DeltaCRLIndicator)
        return "a delta CRL"
    except x509.ExtensionNotFound:
        pass
    try:
        idp = exts.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return ""
    scoped = (
        idp.only_some_reasons
        or idp.indirect_crl
        or idp.only_contains_ca_certs
        or idp.only_contains_user_certs
        or idp.only_contains_attribute_certs
    )
    return "a partial CRL (its issuing distribution point limits its scope)" if scoped else ""


@dataclass(frozen=True)
class _List:
    """One verified CRL: its issuer, the serials it revokes, its nextUpdate, its CRL
    number (None without one)."""

    issuer: x509.Name
    serials: frozenset[int]
    next_update: dt.datetime | None
    number: int | None = None


def _with_issuers(
    chain: list[x509.Certificate], cas: list[x509.Certificate]
) -> list[x509.Certificate]:
    """`chain`, then each CA of `cas` (not self-signed: a list cannot revoke its own
    signer) that signed a certificate already in it, up the chain: the intermediates
    TLS found in the --tls-ca bundle rather than in what the peer sent."""
    from cryptography.exceptions import InvalidSignature

    out = list(chain)
    for cert in out:  # grows as issuers are found; each CA added once: bounded by cas
        for ca in cas:
            if ca in out or ca.subject != cert.issuer or ca.issuer == ca.subject:
                continue
            try:
                cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            out.append(ca)
    return out


def _keys(chain: list[x509.Certificate]) -> tuple[tuple[x509.Name, int, str], ...]:
    """(issuer, serial, common name) of each certificate of `chain` whose names parse,
    but a self-signed one (a CA a list cannot revoke: `certs revoke` refuses its serial)."""
    keys = []
    for c in chain:
        try:
            if c.issuer == c.subject:
                continue
            keys.append((c.issuer, c.serial_number, common_name(c)))
        except ValueError:  # a name this library cannot read: nothing to look up
            continue
    return tuple(keys)


def _listed(crl: x509.CertificateRevocationList) -> _List:
    from cryptography import x509

    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except (x509.ExtensionNotFound, ValueError):
        number = None
    serials = frozenset(r.serial_number for r in crl)
    return _List(crl.issuer, serials, crl.next_update_utc, number)


def _der(crl: x509.CertificateRevocationList) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return crl.public_bytes(Encoding.DER)


def _write(path: Path, crl: x509.CertificateRevocationList) -> None:
    """`crl` as PEM into `path`, whole or not at all (a temporary file renamed over it);
    an OSError is logged (the list is still used while the node runs)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)  # a link left there is replaced, never followed
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644
        )
        with os.fdopen(fd, "wb") as f:
            f.write(crl.public_bytes(Encoding.PEM))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("%s: cannot keep the learned list in %s: %s", OPTION, path, exc.strerror or exc)


def _older(fresh: _List, now: _List) -> bool:
    """Whether `fresh` is not newer than the list in use `now`, of the same issuer: its
    CRL number is not above (a copy restored, `certs revoke` run on a stale copy, or a
    list started anew): taken whole, it could take back revocations made since."""
    if fresh.issuer != now.issuer or fresh.number is None or now.number is None:
        return False
    return fresh.number < now.number or (
        fresh.number == now.number and fresh.serials != now.serials
    )


class Revocations:
    """The serials the CRL of `path` revokes, kept current by `refresh`."""

    def __init__(
        self,
        path: Path,
        ca: Path,
        cas: list[x509.Certificate],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """TlsError (naming --tls-crl) when `path` is not a CRL a CA of `cas` signed."""
        self.path, self.ca, self.cas, self.clock = path, ca, cas, clock
        stamp = self._stamp()
        crl = read_crl(path, cas, ca)
        self._list = _listed(crl)
        self._signed = _der(crl)  # the signed list whose CRL number is in use (`signed`)
        self.learned: Path | None = None  # where a list learned from a peer is kept (`learn`)
        self._from_peer = False  # the list in use was learned (`learn`), not read from the file
        self._stamp_seen = stamp
        self._checked: float | None = None  # when the file was last looked at (`refresh`)
        self._failing = False  # warned that the file went bad (until it is good again)
        self._own_said = False  # `own_revoked` said so (until a list no longer revokes it)
        # the file version whose passed nextUpdate was warned about (at start: `warnings`)
        self._stale_warned = stamp if self.stale_warning() else None
        self._lock = threading.Lock()  # one refresh at a time
        self._chains: OrderedDict[bytes, tuple[tuple[x509.Name, int, str], ...]] = OrderedDict()
        self._seen: OrderedDict[str, tuple[tuple[x509.Name, int, str], ...]] = OrderedDict()

    @property
    def serials(self) -> frozenset[int]:
        """The serials revoked now (by the CRL's issuer)."""
        return self._list.serials

    @property
    def number(self) -> int:
        """The CRL number of the list in use (0 for a list without one): what this node
        advertises (`Hello.crl_number`)."""
        return self._list.number or 0

    @property
    def said(self) -> int:
        """`number` as a Hello or `Revocations` call says it (uint64): at most
        `WIRE_MAX`."""
        return min(self.number, WIRE_MAX)

    @property
    def signed(self) -> bytes:
        """The DER bytes of the signed list whose CRL number is in use: what peers fetch."""
        return self._signed

    def keep_learned(self, path: Path) -> None:
        """Keep lists learned from peers (`learn`) in `path` (the node's state folder,
        never --tls-crl), and take the one kept there by an earlier run when it is
        newer than the file's; one that is not (or does not verify) is ignored with a
        warning. File I/O."""
        self.learned = path
        try:
            with path.open("rb") as f:
                data = f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("%s: cannot read the learned list %s: %s", OPTION, path, exc.strerror)
            return
        try:
            self.learn(data, f"the learned list {path}", keep=False)
        except TlsError as exc:
            log.warning("%s: ignoring it", exc)

    def learn(self, data: bytes, source: str, keep: bool = True) -> bool:
        """Take the CRL of `data` (given by `source`, a peer) when it parses, is at most
        `MAX_BYTES`, a CA of --tls-ca signed it, it has the issuer of the list in use
        and its CRL number is above the one in use; then keep it in `learned` (`keep`)
        and return True. False for a list not newer (nothing changes); TlsError naming
        `source` for one that is refused (nothing changes). File I/O: run it off the
        event loop. The --tls-crl file is never written."""
        crl = parse_crl(data, self.cas, f"the revocation list of {source}")
        fresh = _listed(crl)
        with self._lock:
            if fresh.issuer != self._list.issuer:
                raise TlsError(
                    f"the revocation list of {source} has another issuer than {OPTION} "
                    f"{self.path}: not taken"
                )
            if fresh.number is None or fresh.number <= self.number:
                return False
            if keep and self.learned is not None:
                _write(self.learned, crl)
            self._list, self._signed = fresh, _der(crl)
            self._from_peer = True
        log.warning(
            "%s: took the newer revocation list of %s (CRL number %d): %d certificates "
            "revoked",
            OPTION, source, fresh.number, len(fresh.serials),
        )  # fmt: skip
        return True

    def _stamp(self) -> tuple[int, ...]:
        """What tells the file changed: its mtime, size, inode and device (a list renamed
        into place of the same size, within a coarse clock's tick, is another inode)."""
        try:
            st = self.path.stat()
        except OSError:
            return (-1,)
        return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)

    def revoked(self, chain: list[x509.Certificate]) -> str:
        """'' when no certificate of `chain`, nor a CA of --tls-ca that signed one of
        them (`_with_issuers`), is on the CRL, else the reason naming the first revoked
        one's serial (and name)."""
        return self._reason(_keys(_with_issuers(chain, self.cas)))

    def _reason(self, keys: tuple[tuple[x509.Name, int, str], ...]) -> str:
        now = self._list
        for issuer, serial, name in keys:
            if serial in now.serials and issuer == now.issuer:
                return f"certificate serial {serial:#x} ({name or 'no name'}) {REVOKED}"
        return ""

    def own_revoked(self, chain: list[x509.Certificate]) -> str:
        """`revoked` for this end's own `chain`, said once: '' again while the lists
        that follow still revoke it (said anew once one did not)."""
        reason = self.revoked(chain)
        said, self._own_said = self._own_said, bool(reason)
        return "" if said else reason

    def revoked_pem(self, pem: bytes) -> str:
        """`revoked` for a chain given as PEM (as gRPC gives a caller's), parsed once
        per distinct chain (cached); '' for bytes that hold no certificate. A chain not
        revoked is remembered for its leaf's name (`note`); a revoked one is not."""
        digest = hashlib.sha256(pem).digest()  # the cache holds 32 bytes a chain, not the chain
        keys = self._chains.get(digest)
        if keys is None:
            from cryptography import x509

            try:
                chain = x509.load_pem_x509_certificates(pem)
            except ValueError:
                return ""
            keys = _keys(_with_issuers(chain, self.cas))
            self._chains[digest] = keys
            while len(self._chains) > SEEN_CHAINS:
                self._chains.popitem(last=False)
        reason = self._reason(keys)
        if keys and not reason:
            self._note(keys[0][2], keys)
        return reason

    def note(self, name: str, chain: list[x509.Certificate]) -> None:
        """Remember `chain` (one `revoked` passed) as the certificate last seen for node
        `name` (`revoked_names`)."""
        self._note(name, _keys(_with_issuers(chain, self.cas)))

    def _note(self, name: str, keys: tuple[tuple[x509.Name, int, str], ...]) -> None:
        self._seen[name] = keys
        self._seen.move_to_end(name)
        while len(self._seen) > SEEN_CHAINS:
            self._seen.popitem(last=False)

    def revoked_names(self, names: list[str]) -> dict[str, str]:
        """Of `names`, those whose last seen certificate (`note`) is revoked now, with
        the reason."""
        found = {n: self._reason(self._seen.get(n, ())) for n in names}
        return {n: why for n, why in found.items() if why}

    def refresh(self, force: bool = False) -> bool:
        """Re-read the CRL when its size, mtime or inode changed (looked at once `POLL_SECONDS`
        passed since the last look, or now with `force`); True when the list in use
        changed. A file that cannot be read or verified keeps the last good list and
        logs one warning (again only after it was good in between). File I/O: run it
        off the event loop."""
        with self._lock:
            now = self.clock()
            if not force and self._checked is not None and now - self._checked < POLL_SECONDS:
                return False
            self._checked = now
            stamp = self._stamp()
            if stamp == self._stamp_seen:
                self._warn_stale(stamp)  # its nextUpdate may pass while it stays
                return False
            try:
                crl = read_crl(self.path, self.cas, self.ca)
            except TlsError as exc:
                self._stamp_seen = stamp  # read again once the file changes again
                if not self._failing:  # once until the file is good again, not once a look
                    self._failing = True
                    log.warning(
                        "%s; keeping the %d revocations read before", exc, len(self.serials)
                    )
                return False
            fresh = _listed(crl)
            self._stamp_seen = stamp
            self._failing = False
            signed = _der(crl)
            if _older(fresh, self._list):  # it only adds: no revocation is taken back
                newest = (
                    f" (the newest is the one learned from a peer, kept in {self.learned})"
                    if self._from_peer and self.learned is not None
                    else ""
                )
                log.warning(
                    "%s: %s is not newer than the list in use (CRL number %s, in use %s): "
                    "its revocations are added to those in use, none is taken back; run "
                    "`declora-node certs revoke` on the newest copy%s",
                    OPTION,
                    self.path,
                    fresh.number,
                    self._list.number,
                    newest,
                )
                kept = fresh.serials | self._list.serials
                fresh = replace(fresh, serials=kept, number=self._list.number)
                signed = self._signed  # the signed list of the number still in use
            else:
                self._from_peer = False
            changed = fresh != self._list
            self._list, self._signed = fresh, signed
            if changed:
                log.warning(
                    "%s %s re-read: %d certificates revoked", OPTION, self.path, len(fresh.serials)
                )
            self._warn_stale(stamp)
            return changed

    def stale_warning(self, now: dt.datetime | None = None) -> str:
        """'' unless the CRL's nextUpdate has passed: then a line saying it is still
        enforced and how to issue a new one."""
        end = self._list.next_update
        now = now or dt.datetime.now(dt.UTC)
        if end is None or end >= now:
            return ""
        return (
            f"{OPTION}: {self.path} was due for renewal on {end:%Y-%m-%d %H:%M} UTC (its "
            "nextUpdate): still enforced, but revocations made since may be missing; "
            "issue a fresh one with `declora-node certs revoke`"
        )

    def _warn_stale(self, stamp: tuple[int, ...]) -> None:
        line = self.stale_warning()
        if line and self._stale_warned != stamp:
            self._stale_warned = stamp
            log.warning("%s", line)
