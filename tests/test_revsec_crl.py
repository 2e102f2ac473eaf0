"""Lists a peer (or the file) may give that the swarm CA did sign but that must not
be taken as the list in use (review of the spread of revocation lists):

- a delta CRL (or one whose issuing distribution point limits its scope) with a higher
  number: taken, it took back every revocation it left out, and any non-member who
  had it (a CA publishes its deltas) could hand it over;
- a CRL number past 64 bits (RFC 5280 allows 20 octets): every Hello raised, so the
  node could join nobody; it is said as 2**64 - 1;
- a link planted at the learned list's temporary file is replaced, never written
  through;
- a --tls-crl file older than the list learned from a peer is warned about naming
  where the learned one is kept.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography import x509
from test_auth_mismatch import served_parts
from test_revocation_files import ca_list
from test_revocation_grpc import load

from declora.cli.certs import mint, revoke
from declora.node.revocation import Revocations
from declora.node.security import TlsError


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    mint(tmp_path / "pki", ["a", "b"], ["127.0.0.1", "localhost"], 30, False)
    revoke(tmp_path / "pki", [tmp_path / "pki" / "b.pem"], [], None)  # number 1: b revoked
    return tmp_path / "pki"


def signed_list(
    pki: Path, number: int, serials: list[int], *extensions: x509.ExtensionType
) -> bytes:
    """A CRL the swarm CA of `pki` signs, CRL number `number`, revoking `serials`."""
    return ca_list(pki, serials, *extensions, number=number)


def revocations(pki: Path) -> Revocations:
    ca = x509.load_pem_x509_certificates((pki / "ca.pem").read_bytes())
    return Revocations(pki / "crl.pem", pki / "ca.pem", ca)


def b_serial(pki: Path) -> int:
    return x509.load_pem_x509_certificate((pki / "b.pem").read_bytes()).serial_number


@pytest.mark.parametrize(
    "ext",
    [
        x509.DeltaCRLIndicator(1),
        x509.IssuingDistributionPoint(None, None, False, True, None, False, False),
        x509.IssuingDistributionPoint(None, None, False, False, None, True, False),
    ],
    ids=["delta", "only-user-certs", "indirect"],
)
def test_a_delta_or_partial_list_is_refused_and_changes_nothing(
    pki: Path, ext: x509.ExtensionType
) -> None:
    crl = revocations(pki)
    assert b_serial(pki) in crl.serials
    with pytest.raises(TlsError, match="not the CA's full revocation list"):
        crl.learn(signed_list(pki, 9, [0x77], ext), "neighbour x")
    assert b_serial(pki) in crl.serials and crl.number == 1


def test_a_full_list_with_a_distribution_point_name_is_taken(pki: Path) -> None:
    idp = x509.IssuingDistributionPoint(
        [x509.UniformResourceIdentifier("http://ca.example/crl")],
        None, False, False, None, False, False,
    )  # fmt: skip
    crl = revocations(pki)
    assert crl.learn(signed_list(pki, 2, [b_serial(pki)], idp), "neighbour x")
    assert crl.number == 2


def test_a_crl_number_past_64_bits_is_said_as_the_largest(synthetic_jsonl: Path, pki: Path) -> None:
    (pki / "big.pem").write_bytes(signed_list(pki, 2**159 - 1, [b_serial(pki)]))
    [(_, a)] = served_parts(synthetic_jsonl, [("a", {}, load(pki, "a", pki / "big.pem"))])
    assert a.handshaker.hello(receiver="b").crl_number == 2**64 - 1  # revocation.WIRE_MAX


def test_a_link_at_the_temporary_file_is_not_written_through(pki: Path, tmp_path: Path) -> None:
    crl = revocations(pki)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    state = tmp_path / "state"
    state.mkdir()
    (state / "crl-learned.pem.tmp").symlink_to(victim)
    crl.keep_learned(state / "crl-learned.pem")
    assert crl.learn(signed_list(pki, 2, [b_serial(pki)]), "neighbour x")
    assert victim.read_text() == "keep me"
    assert b"BEGIN X509 CRL" in (state / "crl-learned.pem").read_bytes()


def test_an_older_file_warning_names_the_learned_list(
    pki: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    crl = revocations(pki)
    learned = tmp_path / "state" / "crl-learned.pem"
    crl.keep_learned(learned)
    assert crl.learn(signed_list(pki, 5, [b_serial(pki), 0x99]), "neighbour x")
    (pki / "crl.pem").write_bytes(signed_list(pki, 3, [b_serial(pki)]))  # the operator's stale copy
    with caplog.at_level(logging.WARNING, logger="declora.node.revocation"):
        crl.refresh(force=True)
    assert f"the newest is the one learned from a peer, kept in {learned}" in caplog.text
    assert crl.number == 5 and 0x99 in crl.serials
