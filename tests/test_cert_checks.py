"""A node's own TLS files checked at start (`node/security.py`, used by settings): its
certificate must name the host peers dial (--advertise, else --listen), a certificate
ending within a week and a private key open to others are warned about. Certificates
are made in-process (no `declora-node certs`: its hosts are fixed)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from declora.node.security import names_host
from declora.node.settings import SettingsError, resolve_settings

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith("DECLORA_"):
            monkeypatch.delenv(key)


def _write(path: Path, data: bytes, mode: int) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def make_pki(
    folder: Path,
    sans: list[str],
    *,
    name: str = "c",
    days: float = 30,
    key_mode: int = 0o600,
) -> dict[str, Path]:
    """A CA and node `name`'s certificate naming `sans` (IP or DNS), valid `days`."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for s in sans:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(s)))
        except ValueError:
            names.append(x509.DNSName(s))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    folder.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {
        "tls_ca": _write(folder / "ca.pem", ca.public_bytes(pem), 0o644),
        "tls_cert": _write(folder / f"{name}.pem", cert.public_bytes(pem), 0o644),
        "tls_key": _write(folder / f"{name}-key.pem", key_pem, key_mode),
    }


def resolve(files: dict[str, Path], **options: object) -> list[str]:
    """The warnings of a --solo node with `files` and `options`."""
    return resolve_settings({"model": "tiny-bert", "solo": True, **files, **options}).warnings


def test_a_certificate_must_name_the_host_peers_dial(tmp_path: Path) -> None:
    files = make_pki(tmp_path / "pki", ["10.9.9.9", "node-c.example.org"])
    with pytest.raises(SettingsError) as caught:
        resolve(files, listen="127.0.0.1:7070")
    message = str(caught.value)
    assert "does not name 127.0.0.1, the host of --listen 127.0.0.1:7070" in message
    assert "10.9.9.9" in message and "Hostname Verification" in message
    assert f"declora-node certs --output {tmp_path / 'pki'} --nodes c --hosts 127.0.0.1," in message
    with pytest.raises(SettingsError, match=r"the host of --advertise 10\.0\.0\.7:7070"):
        resolve(files, listen="10.9.9.9:7070", advertise="10.0.0.7:7070")
    # what it names is fine: the advertised one (listen is not dialled), or a DNS name
    assert resolve(files, listen="127.0.0.1:7070", advertise="10.9.9.9:7070") == []
    assert resolve(files, listen="0.0.0.0:7070", advertise="Node-C.example.org.:7070") == []
    assert resolve(files, listen="0.0.0.0:7070") == []  # no one dials 0.0.0.0: unchecked


@pytest.mark.parametrize(
    "sans, host, named",
    [
        (["127.0.0.1"], "127.0.0.1", True),
        (["127.0.0.1"], "localhost", False),  # a DNS host needs a DNS name
        (["localhost"], "127.0.0.1", False),  # an IP host needs an IP name
        (["::1"], "::1", True),
        (["fe80::1"], "fe80::1%eth0", True),  # the zone is no part of the address
        (["*.example.org"], "a.example.org", True),
        (["*.example.org"], "A.EXAMPLE.ORG", True),
        (["*.example.org"], "example.org", False),  # a wildcard is one label, not none
        (["*.example.org"], "a.b.example.org", False),  # ... nor two
        (["*.org"], "example.org", False),  # no wildcard for a top-level domain
        (["a*.example.org"], "ab.example.org", False),  # only a whole label
        (["*.example.org"], "10.0.0.1", False),  # never for an IP
        ([], "c", True),  # no alternative names at all: the common name
        ([], "d", False),
        (["10.0.0.1"], "c", False),  # with alternative names the common name is ignored
    ],
)
def test_names_host_follows_hostname_verification(
    tmp_path: Path, sans: list[str], host: str, named: bool
) -> None:
    cert = x509.load_pem_x509_certificate(make_pki(tmp_path, sans)["tls_cert"].read_bytes())
    assert names_host(cert, host) is named


def test_a_certificate_ending_within_a_week_is_warned_about(tmp_path: Path) -> None:
    soon = make_pki(tmp_path / "soon", ["127.0.0.1"], days=3)
    (line,) = resolve(soon)
    assert line.startswith(f"--tls-cert: {soon['tls_cert']} expires on ")
    assert "(in 2 days)" in line and "declora-node certs" in line
    assert resolve(make_pki(tmp_path / "later", ["127.0.0.1"], days=8)) == []
    expired = make_pki(tmp_path / "gone", ["127.0.0.1"], days=-0.5)
    with pytest.raises(SettingsError, match="expired on"):  # refused, not warned about
        resolve(expired)


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_a_private_key_open_to_others_is_warned_about(tmp_path: Path) -> None:
    files = make_pki(tmp_path, ["127.0.0.1"], key_mode=0o644)
    key = files["tls_key"]
    assert resolve(files) == [
        f"--tls-key {key}: permissions 0644 are too open (anyone on this machine may read "
        f"what should be private): run `chmod 600 {key}`"
    ]
    key.chmod(0o640)
    assert "its group may read" in resolve(files)[0]
    key.chmod(0o400)
    assert resolve(files) == []


# ---------------------------------------------------------------- where the user sees them
@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_start_and_config_print_the_warnings(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from declora.cli.app import app

    files = make_pki(tmp_path, ["127.0.0.1"], days=3, key_mode=0o644)
    args = [f"--{k.replace('_', '-')}={v}" for k, v in files.items()]
    res = CliRunner().invoke(app, ["config", "--model", "tiny-bert", "--solo", *args])
    assert res.exit_code == 0, res.output
    assert f"warning: --tls-key {files['tls_key']}: permissions 0644 are too open" in res.stderr
    assert f"warning: --tls-cert: {files['tls_cert']} expires on " in res.stderr


def test_a_tls_dial_failure_is_explained_with_its_hint() -> None:
    import grpc

    from declora.cli.client import status_failure
    from declora.node.daemon.startup import dial_failure, startup_failure
    from declora.node.rpc_failure import TLS_HINT
    from declora.node.settings import load_settings

    closed = "failed to connect to all addresses; last error: UNAVAILABLE: x: Socket closed"
    expired = (
        "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL "
        "routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: certificate has expired: OK"
    )
    down = grpc.StatusCode.UNAVAILABLE
    plain = dial_failure("127.0.0.1:1", down, closed)
    lapsed = dial_failure("127.0.0.1:2", down, expired, tls=True)
    assert lapsed == "TLS: the peer's certificate has expired"
    settings = load_settings({"model": "tiny-bert", "peers": "127.0.0.1:1,127.0.0.1:2"})
    addresses = ["127.0.0.1:1", "127.0.0.1:2"]
    failure = startup_failure(settings, 1, addresses, set(), {"127.0.0.1:2": lapsed})
    assert "127.0.0.1:2: TLS: the peer's certificate has expired" in failure.message
    assert failure.hint == TLS_HINT
    # a closed connection may be a TLS mismatch or a peer that went down: said so,
    # without TLS_HINT's "waiting longer changes nothing" (the old code blamed TLS)
    assert plain == (
        "the peer closed the connection (a TLS mismatch - it serves mTLS and this node "
        "does not - or it went down)"
    )
    closing = startup_failure(settings, 1, addresses, set(), {"127.0.0.1:1": plain})
    assert f"127.0.0.1:1: {plain}" in closing.message
    assert closing.hint != TLS_HINT and "--startup-timeout waits longer" in closing.hint
    refused = "connection refused: nothing listens on that port"
    other = startup_failure(settings, 1, addresses, set(), {"127.0.0.1:1": refused})
    assert other.hint != TLS_HINT
    why, hint = status_failure("UNAVAILABLE", expired, 5.0, True)
    assert why == "the TLS handshake failed: the node's certificate has expired"
    assert "declora-node certs" in hint
