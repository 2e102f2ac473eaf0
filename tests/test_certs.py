"""`declora-node certs`: input checked before anything is written, all-or-nothing
writes, an existing CA that signs new and renewed node certificates (`--new-ca`
replaces it, with a warning), a hint on every error, and file modes whatever the umask.

In-process (CliRunner) and on tmp_path only: no daemon, no model.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner, Result

from declora.cli.app import app
from declora.node.security import TlsFiles

runner = CliRunner()


def certs(out: Path, nodes: str, *more: str) -> Result:
    return runner.invoke(app, ["certs", "--output", str(out), "--nodes", nodes, *more])


def files(folder: Path) -> dict[str, bytes]:
    """Every entry of `folder` (temporary ones too) and its bytes; {} when none."""
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else {}


def hinted(res: Result, needle: str, hint: str = "") -> None:
    """Exit 2, stderr exactly `error: ...` (naming `needle`) then `hint: ...`."""
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2, res.stderr
    assert lines[0].startswith("error: ") and needle in lines[0], res.stderr
    assert lines[1].startswith("hint: ") and hint in lines[1], res.stderr
    assert "Traceback" not in res.output


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    out = tmp_path / "pki"
    res = certs(out, "a,b")
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.parametrize(
    ("nodes", "hosts", "needle", "hint"),
    [
        ("n" * 65, "127.0.0.1", "over 64 characters", "at most 64"),
        ("a", "a..example", "'a..example' is neither", "between dots"),
        ("a", "-a.example", "'-a.example' is neither", "between dots"),
        ("a", "exa mple", "'exa mple' is neither", "IDNA"),
        ("a", "fe80::1%eth0", "has a zone", "without its zone"),
    ],
)
def test_a_bad_host_or_name_is_refused_before_anything_is_written(
    tmp_path: Path, nodes: str, hosts: str, needle: str, hint: str
) -> None:
    """A node name over 64 characters or a host that is no DNS name nor IP was a
    traceback (or a bad certificate) after ca.pem and ca-key.pem were written."""
    out = tmp_path / "pki"
    hinted(certs(out, nodes, "--hosts", hosts), needle, hint)
    assert not out.exists()
    assert certs(out, "a").exit_code == 0  # the retry is not refused


def test_a_non_ascii_host_is_named_by_its_idna_form(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    res = certs(out, "a", "--hosts", "héllo.example,127.0.0.1,*.swarm.example")
    assert res.exit_code == 0, res.output
    san = cert(out / "a.pem").extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == [
        "xn--hllo-bpa.example",
        "*.swarm.example",
    ]


def test_an_output_folder_that_cannot_be_made_is_one_error_line(tmp_path: Path) -> None:
    """/proc/nope passes the up-front check as root (mkdir then fails): a traceback."""
    res = certs(Path("/proc/nope"), "a")
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: --output") and "/proc/nope" in lines[0]
    assert lines[1].startswith("hint: ")


def test_a_failed_write_leaves_the_folder_as_it_was(
    pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails midway (here b's key, as a full disk would) changes nothing
    and leaves no temporary file; the old code had replaced the CA and a already."""
    before = files(pki)
    real_open = os.open

    def failing(path: object, *args: object, **kw: object) -> int:
        if "b-key" in str(path):
            raise OSError(28, "No space left on device")
        return real_open(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", failing)
    res = certs(pki, "a,b", "--force", "--new-ca")
    monkeypatch.undo()
    hinted(res, "No space left on device", "space left")
    assert files(pki) == before


def test_the_folders_ca_signs_a_new_node_and_nothing_else_changes(pki: Path) -> None:
    """Adding a node was refused, and with --force replaced the CA without a word: a
    and b no longer verified."""
    before = files(pki)
    res = certs(pki, "d")
    assert res.exit_code == 0, res.output
    assert "signed with the existing CA" in res.stdout and not res.stderr
    after = files(pki)
    assert set(after) == {*before, "d.pem", "d-key.pem"}
    assert {k: v for k, v in after.items() if k in before} == before
    for name in ("a", "b", "d", "cli"):
        TlsFiles.load(pki / f"{name}.pem", pki / f"{name}-key.pem", pki / "ca.pem")
    assert cert(pki / "d.pem").issuer == cert(pki / "ca.pem").subject


def test_force_renews_one_node_under_the_same_ca(pki: Path) -> None:
    before = files(pki)
    hinted(certs(pki, "a"), "not overwriting", "--force")
    assert files(pki) == before
    res = certs(pki, "a", "--force")
    assert res.exit_code == 0, res.output
    after = files(pki)
    assert after["a.pem"] != before["a.pem"] and after["a-key.pem"] != before["a-key.pem"]
    assert {k: v for k, v in after.items() if not k.startswith("a")} == {
        k: v for k, v in before.items() if not k.startswith("a")
    }
    TlsFiles.load(pki / "a.pem", pki / "a-key.pem", pki / "ca.pem")
    TlsFiles.load(pki / "b.pem", pki / "b-key.pem", pki / "ca.pem")


def test_a_missing_client_certificate_is_minted_with_the_existing_ca(pki: Path) -> None:
    (pki / "cli.pem").unlink()
    (pki / "cli-key.pem").unlink()
    assert certs(pki, "d").exit_code == 0
    TlsFiles.load(pki / "cli.pem", pki / "cli-key.pem", pki / "ca.pem")


def test_new_ca_replaces_the_ca_and_says_what_to_reissue(pki: Path) -> None:
    before = files(pki)
    hinted(certs(pki, "a", "--new-ca"), "not overwriting", "--force")  # a and cli exist
    assert files(pki) == before
    res = certs(pki, "a", "--new-ca", "--force")
    assert res.exit_code == 0, res.output
    [warning] = res.stderr.strip().splitlines()
    assert warning.startswith("warning: replaced the swarm CA") and "(here: b)" in warning
    assert "re-issue" in warning and "--force" in warning
    after = files(pki)
    assert after["ca.pem"] != before["ca.pem"] and after["b.pem"] == before["b.pem"]
    for name in ("a", "cli"):
        TlsFiles.load(pki / f"{name}.pem", pki / f"{name}-key.pem", pki / "ca.pem")


def _ca(folder: Path, days: float) -> None:
    """A CA in `folder` that ends `days` from now (in the past when negative)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old CA")])
    now = dt.datetime.now(dt.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=400))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(exist_ok=True)
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "ca-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def test_the_existing_ca_ends_the_new_certificates_validity(tmp_path: Path) -> None:
    _ca(tmp_path, days=10)
    res = certs(tmp_path, "d", "--days", "365")
    assert res.exit_code == 0, res.output
    assert "warning: the CA" in res.stderr and "--new-ca" in res.stderr
    assert (
        cert(tmp_path / "d.pem").not_valid_after_utc
        == cert(tmp_path / "ca.pem").not_valid_after_utc
    )
    TlsFiles.load(tmp_path / "d.pem", tmp_path / "d-key.pem", tmp_path / "ca.pem")


@pytest.mark.parametrize("case", ["expired", "other key", "no key", "no ca.pem", "not a CA"])
def test_a_ca_that_cannot_sign_is_refused_and_nothing_is_written(
    pki: Path, tmp_path: Path, case: str
) -> None:
    if case == "expired":
        _ca(pki, days=-1)
    elif case == "other key":
        other = tmp_path / "other"
        assert certs(other, "x").exit_code == 0
        shutil.copy(other / "ca-key.pem", pki / "ca-key.pem")
    elif case == "no key":
        (pki / "ca-key.pem").unlink()
    elif case == "no ca.pem":
        (pki / "ca.pem").unlink()
    else:
        shutil.copy(pki / "a.pem", pki / "ca.pem")
        shutil.copy(pki / "a-key.pem", pki / "ca-key.pem")
    before = files(pki)
    hinted(certs(pki, "d"), "", "--new-ca")
    assert files(pki) == before


@pytest.mark.parametrize(
    ("args", "needle", "hint"),
    [
        (["--nodes", "a", "--days", "0"], "--days", "--days 365"),
        (["--nodes", "cli"], "reserved", "other node names"),
        (["--nodes", "ca,a"], "reserved", "other node names"),
        (["--nodes", "a,a"], "unique", "once"),
        (["--nodes", "a/b"], "file-name-safe", "letters"),
        (["--nodes", ","], "at least one node", "--nodes"),
        (["--nodes", "a", "--hosts", ","], "--hosts", "127.0.0.1"),
    ],
)
def test_every_certs_error_has_a_hint(
    tmp_path: Path, args: list[str], needle: str, hint: str
) -> None:
    out = tmp_path / "pki"
    hinted(runner.invoke(app, ["certs", "--output", str(out), *args]), needle, hint)
    assert not out.exists()


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("umask_000")
def test_keys_are_0600_and_a_new_folder_0700_under_umask_000(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "pki"
    assert certs(out, "a").exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for name in ("ca", "a", "cli"):
        assert stat.S_IMODE((out / f"{name}-key.pem").stat().st_mode) == 0o600, name
        assert stat.S_IMODE((out / f"{name}.pem").stat().st_mode) == 0o644, name
    (out / "a-key.pem").chmod(0o666)  # a key a user left readable: replaced 0600
    assert certs(out, "a", "--force").exit_code == 0
    assert stat.S_IMODE((out / "a-key.pem").stat().st_mode) == 0o600


def test_a_bracketed_ipv6_host_is_its_address(tmp_path: Path) -> None:
    """`--hosts '[::1]'` (the form of a URL) was refused as neither an IP nor a DNS name."""
    out = tmp_path / "pki"
    res = certs(out, "a", "--hosts", "[::1],localhost")
    assert res.exit_code == 0, res.output
    san = cert(out / "a.pem").extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert [str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)] == ["::1"]
    hinted(certs(tmp_path / "x", "a", "--hosts", "[a.example]"), "'[a.example]' is neither")


def test_a_failed_fchmod_closes_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The old code leaked the temporary file's descriptor when fchmod failed."""

    def refuse(fd: int, mode: int) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", refuse)
    before = len(os.listdir("/proc/self/fd"))
    out = tmp_path / "pki"
    res = certs(out, "a")
    assert res.exit_code == 2 and "cannot write into" in res.stderr, res.output
    assert len(os.listdir("/proc/self/fd")) == before
    assert not [p for p in files(out) if p.endswith(".tmp")]
