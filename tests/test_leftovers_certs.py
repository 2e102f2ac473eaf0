"""`declora-node certs revoke` run twice at once keeps both revocations (each one's
read-modify-write of the list holds a lock on its folder)."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from declora.cli import certs
from declora.cli.certs import CertsError, mint, revoke


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    mint(tmp_path / "pki", ["a", "b"], ["127.0.0.1"], 30, False)
    return tmp_path / "pki"


def serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def listed(crl: Path) -> set[int]:
    return {r.serial_number for r in x509.load_pem_x509_crl(crl.read_bytes())}


def test_two_revokes_at_once_keep_both_entries(pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the second revoke read the list while the first was between its read
    and its write; the first then wrote its list over the second's, losing b."""
    read = certs._old_list
    errors: list[BaseException] = []

    def revoke_b() -> None:
        try:
            revoke(pki, [pki / "b.pem"], [], None)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    second = threading.Thread(target=revoke_b)

    def read_then_let_b_run(path: Path, ca: x509.Certificate) -> Any:
        old = read(path, ca)
        if threading.current_thread() is not second and not second.is_alive():
            second.start()  # b's revoke runs while a's holds the list it read
            second.join(timeout=1.0)  # it ends here unless it waits for a's lock
        return old

    monkeypatch.setattr(certs, "_old_list", read_then_let_b_run)
    revoke(pki, [pki / "a.pem"], [], None)
    second.join()
    assert errors == []
    assert listed(pki / "crl.pem") == {serial(pki / "a.pem"), serial(pki / "b.pem")}
    assert not [p.name for p in pki.iterdir() if p.name.startswith(".")]  # nothing left


def test_a_folder_locked_too_long_is_a_clear_error(
    pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A guard: a folder another process keeps locked (a node's run folder) is refused
    after `LOCK_WAIT`, naming it, with nothing written."""
    monkeypatch.setattr(certs, "LOCK_WAIT", 0.1)
    fd = os.open(pki, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(CertsError, match=f"--crl: {pki} stayed locked by another process"):
            revoke(pki, [pki / "a.pem"], [], None)
    finally:
        os.close(fd)
    assert not (pki / "crl.pem").exists()
