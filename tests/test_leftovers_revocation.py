"""--tls-crl while a node runs: a re-read list that revokes the node's own certificate
is warned about once; a list renamed into place with the same size and mtime is seen
(its inode differs)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from test_revocation_files import ca_list
from test_revocation_grpc import Clock

from declora.cli.certs import mint, revoke
from declora.node.daemon.auth import drop_revoked
from declora.node.revocation import POLL_SECONDS, Revocations
from declora.node.security import TlsFiles


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    mint(tmp_path / "pki", ["a", "b", "c"], ["127.0.0.1"], 30, False)
    return tmp_path / "pki"


def own_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "own --tls-cert" in r.getMessage()]


def test_a_list_that_revokes_the_nodes_own_certificate_is_warned_about_once(
    pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the node logged only "re-read: N certificates revoked" and went on
    unaware that every peer now refuses it."""
    crl = revoke(pki, [pki / "c.pem"], [], None).crl
    tls = TlsFiles.load(pki / "a.pem", pki / "a-key.pem", pki / "ca.pem", crl=crl)
    assert tls is not None and tls.crl is not None
    clock = Clock()
    tls.crl.clock = clock
    peers: Any = SimpleNamespace(live=[])
    counters: Any = SimpleNamespace(count=lambda _: None)
    serial = x509.load_pem_x509_certificate((pki / "a.pem").read_bytes()).serial_number
    caplog.set_level(logging.WARNING)
    for revoked in ("a", "b"):  # a's own, then another: the warning is not repeated
        revoke(pki, [pki / f"{revoked}.pem"], [], None)
        clock.now += POLL_SECONDS + 1
        asyncio.run(drop_revoked(tls, peers, counters))
    said = own_warnings(caplog)
    assert len(said) == 1, said
    assert f"serial {serial:#x} (a)" in said[0]
    assert "its peers will refuse it" in said[0]
    assert f"`declora-node certs --output {pki} --nodes a --hosts 127.0.0.1 --force`" in said[0]


def test_the_own_warning_is_said_again_after_a_list_that_no_longer_revoked_it(
    pki: Path,
) -> None:
    """A guard: `own_revoked` says it once per stretch of lists revoking the chain."""
    crl = revoke(pki, [pki / "c.pem"], [], None).crl
    cas = x509.load_pem_x509_certificates((pki / "ca.pem").read_bytes())
    crls = Revocations(crl, pki / "ca.pem", cas)
    own = x509.load_pem_x509_certificates((pki / "a.pem").read_bytes())
    assert crls.own_revoked(own) == ""
    revoke(pki, [pki / "a.pem"], [], None)
    assert crls.refresh(force=True)
    assert "revoked" in crls.own_revoked(own)
    assert crls.own_revoked(own) == ""


def _signed(pki: Path, number: int, serial: int) -> bytes:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return ca_list(pki, [serial], number=number, now=now, next_update=now + dt.timedelta(days=3650))


def test_a_list_renamed_into_place_with_the_same_size_and_mtime_is_read(pki: Path) -> None:
    """Before: only (mtime, size) was compared, so a new list of the same size renamed
    into place within a coarse clock's tick (here: the same mtime) was never read."""
    first = _signed(pki, 1, 0x1000)
    second = b""
    while len(second) != len(first):  # ECDSA signatures vary by a byte or two
        second = _signed(pki, 2, 0x1001)
    path, new = pki / "crl.pem", pki / "crl.pem.new"
    path.write_bytes(first)
    cas = x509.load_pem_x509_certificates((pki / "ca.pem").read_bytes())
    crls = Revocations(path, pki / "ca.pem", cas)
    assert crls.serials == {0x1000}
    new.write_bytes(second)
    st = path.stat()
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, path)
    assert (path.stat().st_mtime_ns, path.stat().st_size) == (st.st_mtime_ns, st.st_size)
    assert crls.refresh(force=True)
    assert crls.serials == {0x1001}
