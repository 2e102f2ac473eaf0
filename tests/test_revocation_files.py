"""Certificate revocation's files: `declora-node certs revoke` and --tls-crl.

- `certs revoke` adds certificates (by file or serial) to the CA's signed CRL and keeps
  what it listed; a certificate another CA issued, a list another CA signed, or no
  certificate at all is one `error:` line with a hint, exit 2, nothing written;
- `start`/`config` (and the CLI's `status`) refuse a --tls-crl that does not parse,
  another CA signed, or that revokes the end's own certificate: one `error:` line
  naming --tls-crl, exit 2, before anything loads (also given as DECLORA_TLS_CRL);
- a running node's list (`Revocations.refresh`) follows the file; a file that turns
  bad keeps the last good list with one warning; a list past its nextUpdate is warned
  about at start and still enforced.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from typer.testing import CliRunner

from declora.cli.app import app
from declora.cli.certs import mint
from declora.node.revocation import Revocations
from declora.node.security import TlsError, TlsFiles

runner = CliRunner()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith("DECLORA_"):
            monkeypatch.delenv(key)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    mint(tmp_path / "pki", ["a", "b"], ["127.0.0.1", "localhost"], 30, False)
    mint(tmp_path / "other", ["a"], ["127.0.0.1"], 30, False)
    return tmp_path / "pki"


def serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def listed(crl: Path) -> set[int]:
    return {r.serial_number for r in x509.load_pem_x509_crl(crl.read_bytes())}


def revoke(pki: Path, *args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, ["certs", "revoke", "--output", str(pki), *args])
    return res.exit_code, res.stdout, res.stderr


def one_error(stderr: str, needle: str) -> None:
    lines = stderr.splitlines()
    assert lines and lines[0].startswith("error: ") and needle in lines[0], stderr
    assert all(x.startswith("hint: ") for x in lines[1:]), stderr
    assert "Traceback" not in stderr


def test_certs_revoke_adds_to_the_list_and_keeps_what_it_held(pki: Path) -> None:
    code, out, _ = revoke(pki, "--cert", str(pki / "a.pem"))
    assert code == 0, out
    crl = pki / "crl.pem"
    assert listed(crl) == {serial(pki / "a.pem")}
    first = x509.load_pem_x509_crl(crl.read_bytes())
    code, out, err = revoke(pki, "--cert", str(pki / "b.pem"), "--serial", "0x1f", "--serial", "31")
    assert code == 0, err
    assert listed(crl) == {serial(pki / "a.pem"), serial(pki / "b.pem"), 0x1F}
    again = x509.load_pem_x509_crl(crl.read_bytes())
    kept = again.get_revoked_certificate_by_serial_number(serial(pki / "a.pem"))
    assert kept is not None  # a's entry kept its first date
    assert kept.revocation_date_utc == first[0].revocation_date_utc
    number = again.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number == 2
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    assert again.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    code, _, err = revoke(pki, "--cert", str(pki / "a.pem"))
    assert code == 0 and f"serial {serial(pki / 'a.pem'):#x} was already revoked" in err
    assert sorted(p.name for p in pki.iterdir() if p.name.startswith(".")) == []  # no temps


def test_certs_revoke_refuses_what_is_not_its_cas(pki: Path) -> None:
    crl = pki / "crl.pem"
    assert revoke(pki, "--serial", "7")[0] == 0
    before = crl.read_bytes()
    other = pki.parent / "other"
    cases = [
        (["--cert", str(other / "a.pem")], "was not issued by the CA"),
        (["--cert", str(pki / "ca.pem")], "is the CA itself"),
        (["--cert", str(pki / "nothing.pem")], "--cert: cannot read"),
        (["--serial", "zz"], "--serial: 'zz' is not a certificate serial"),
        ([], "give the certificates to revoke"),
        (["--serial", "8", "--crl", str(other / "ca.pem")], "--crl: cannot read"),
    ]
    for args, needle in cases:
        code, _, err = revoke(pki, *args)
        assert code == 2, (args, err)
        one_error(err, needle)
        assert crl.read_bytes() == before, args
    # a list another CA signed is not added to
    assert revoke(other, "--serial", "9")[0] == 0
    code, _, err = revoke(pki, "--serial", "8", "--crl", str(other / "crl.pem"))
    assert code == 2
    one_error(err, "was not signed by the CA in its folder")
    assert listed(other / "crl.pem") == {9}


def tls_args(pki: Path, name: str = "a") -> list[str]:
    return [
        *("--tls-cert", str(pki / f"{name}.pem"), "--tls-key", str(pki / f"{name}-key.pem")),
        *("--tls-ca", str(pki / "ca.pem")),
    ]


def test_start_and_config_refuse_a_bad_crl_in_one_line(pki: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a list\n")
    assert revoke(pki.parent / "other", "--serial", "5")[0] == 0
    assert revoke(pki, "--cert", str(pki / "a.pem"))[0] == 0
    cases = [
        (garbage, "is not a PEM certificate revocation list"),
        (tmp_path / "missing.pem", "--tls-crl: file not found"),
        (pki.parent / "other" / "crl.pem", "is not signed by the CA of --tls-ca"),
        (pki / "crl.pem", "revokes this end's own --tls-cert"),
    ]
    for command in ("start", "config"):
        for crl, needle in cases:
            res = runner.invoke(
                app, [command, "--node-id", "a", *tls_args(pki), "--tls-crl", str(crl)]
            )
            assert res.exit_code == 2, (command, crl, res.output)
            one_error(res.stderr, needle)
            assert "--tls-crl" in res.stderr.splitlines()[0]
    res = runner.invoke(app, ["start", "--node-id", "a", "--tls-crl", str(pki / "crl.pem")])
    assert res.exit_code == 2
    one_error(res.stderr, "--tls-crl needs mTLS")
    res = runner.invoke(
        app, ["config", "--node-id", "a", *tls_args(pki)], env={"DECLORA_TLS_CRL": str(garbage)}
    )
    assert res.exit_code == 2
    one_error(res.stderr, "is not a PEM certificate revocation list")
    # b's certificate is not revoked: b's configuration takes the list
    res = runner.invoke(
        app, ["config", "--node-id", "b", *tls_args(pki, "b"), "--tls-crl", str(pki / "crl.pem")]
    )
    assert res.exit_code == 0, res.output


def test_the_cli_refuses_a_list_that_revokes_its_own_certificate(pki: Path) -> None:
    assert revoke(pki, "--cert", str(pki / "cli.pem"))[0] == 0
    res = runner.invoke(
        app,
        [
            "status",
            "--target",
            "127.0.0.1:9",
            *tls_args(pki, "cli"),
            "--tls-crl",
            str(pki / "crl.pem"),
        ],
    )
    assert res.exit_code == 2, res.output
    one_error(res.stderr, "revokes this end's own --tls-cert")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_list_that_turns_bad_keeps_the_last_good_one_with_one_warning(
    pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert revoke(pki, "--serial", "7")[0] == 0
    crl = pki / "crl.pem"
    clock = Clock()
    cas = [x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())]
    held = Revocations(crl, pki / "ca.pem", cas, clock=clock)
    good = crl.read_bytes()
    assert held.refresh() is False  # unchanged
    caplog.set_level(logging.WARNING, logger="declora.node.revocation")
    for broken in (b"", b"garbage\n", good[: len(good) // 2]):  # three bad versions in turn
        crl.write_bytes(broken)
        clock.now += 10
        assert held.refresh() is False
        assert held.serials == {7}
    bad = [r for r in caplog.records if "keeping the 1 revocations read before" in r.message]
    assert len(bad) == 1, caplog.text
    assert "--tls-crl" in bad[0].message
    crl.unlink()  # gone: still the last good list, no more warnings
    clock.now += 10
    assert held.refresh() is False and held.serials == {7}
    crl.write_bytes(good)
    assert revoke(pki, "--serial", "8")[0] == 0
    assert held.refresh() is False  # not looked at again yet
    clock.now += 10
    assert held.refresh() is True and held.serials == {7, 8}


def ca_list(
    pki: Path,
    serials: list[int],
    *extensions: x509.ExtensionType,
    number: int | None = None,
    now: dt.datetime | None = None,
    next_update: dt.datetime | None = None,
) -> bytes:
    """A CRL (PEM) the swarm CA of `pki` signs, revoking `serials` as of `now` (default:
    the present), valid until `next_update` (default: a week on), with CRL number
    `number` when given and `extensions` marked critical."""
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((pki / "ca-key.pem").read_bytes(), None)
    now = now or dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now)
        .next_update(next_update or now + dt.timedelta(days=7))
    )
    if number is not None:
        builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    for ext in extensions:
        builder = builder.add_extension(ext, critical=True)
    for n in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(n).revocation_date(now).build()
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)  # type: ignore[arg-type]


def sign_crl(pki: Path, serials: list[int], next_update: dt.datetime) -> Path:
    """`ca_list` without a CRL number, issued 30 days before `next_update`, written
    to `pki/stale.pem`."""
    path = pki / "stale.pem"
    path.write_bytes(
        ca_list(pki, serials, now=next_update - dt.timedelta(days=30), next_update=next_update)
    )
    return path


def test_a_list_past_its_next_update_is_warned_about_and_still_enforced(pki: Path) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    stale = sign_crl(pki, [serial(pki / "b.pem")], past)
    tls = TlsFiles.load(pki / "a.pem", pki / "a-key.pem", pki / "ca.pem", crl=stale)
    assert tls is not None and tls.crl is not None
    [line] = [w for w in tls.warnings() if "--tls-crl" in w]
    assert f"was due for renewal on {past:%Y-%m-%d}" in line and "still enforced" in line
    b = x509.load_pem_x509_certificate((pki / "b.pem").read_bytes())
    assert (
        tls.crl.revoked([b])
        == f"certificate serial {b.serial_number:#x} (b) is revoked by --tls-crl"
    )
    with pytest.raises(TlsError, match="revokes this end's own"):
        TlsFiles.load(pki / "b.pem", pki / "b-key.pem", pki / "ca.pem", crl=stale)
    res = runner.invoke(app, ["config", "--node-id", "a", *tls_args(pki), "--tls-crl", str(stale)])
    assert res.exit_code == 0, res.output
    assert "warning: --tls-crl:" in res.stderr and "still enforced" in res.stderr
