"""Certificate revocation under mTLS over real gRPC on 127.0.0.1 (daemon parts of the
tiny model in-process, each served by its own `Transport`, as test_auth_mismatch).

- a node whose certificate is on --tls-crl is refused as a caller (its Hello, counted
  `revoked`) and as a server (the dialler reads its certificate: "not joining"); a
  node of the same CA that is not revoked joins;
- a revoked CLI certificate cannot call Status (PERMISSION_DENIED naming the serial),
  while the same certificate could before the list changed (read while running);
- the CRL re-read while running drops a live neighbour whose certificate it now
  revokes, in both directions (the neighbour that called and the one dialled);
- a caller whose certificate has no common name is refused (it used to be taken as a
  caller without TLS: any node id passed), and so is a server without one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from test_auth_mismatch import files, live, serve, served_parts, stop

from declora.cli.certs import mint, revoke
from declora.node.daemon.auth import NAMELESS, drop_revoked
from declora.node.daemon.daemon import Daemon
from declora.node.daemon.parts import Parts
from declora.node.security import TlsError, TlsFiles
from declora.proto import pb, pb_grpc


class Clock:
    """A monotonic clock a test moves on (the CRL is looked at every few seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    mint(tmp_path / "pki", ["a", "b", "c"], ["127.0.0.1", "localhost"], 30, False)
    return tmp_path / "pki"


def load(pki: Path, name: str, crl: Path | None = None, clock: Clock | None = None) -> TlsFiles:
    tls = TlsFiles.load(*files(pki, name), crl=crl)
    assert tls is not None
    if clock is not None and tls.crl is not None:
        tls.crl.clock = clock
    return tls


async def reread(p: Parts) -> list[str]:
    """What the node's reconnect loop does every 2 s about its list (`drop_revoked`)."""
    return await drop_revoked(p.handshaker.transport.tls, p.peers, p.counters)


async def status(address: str, tls: TlsFiles) -> pb.StatusReply:
    async with grpc.aio.secure_channel(address, tls.channel_credentials()) as channel:
        return await pb_grpc.SwarmStub(channel).Status(pb.StatusRequest(), timeout=5)


def test_a_revoked_node_is_refused_as_caller_and_as_server(
    synthetic_jsonl: Path, pki: Path
) -> None:
    crl = revoke(pki, [pki / "c.pem"], [], None).crl
    serial = x509.load_pem_x509_certificate((pki / "c.pem").read_bytes()).serial_number
    nodes = served_parts(
        synthetic_jsonl,
        [
            ("a", {}, load(pki, "a", crl)),
            ("b", {}, load(pki, "b", crl)),
            ("c", {}, load(pki, "c")),  # c's own files hold no list
        ],
    )
    (da, a), (_db, b), (_dc, c) = nodes

    async def go() -> None:
        await serve(nodes)
        try:
            assert await c.handshaker.dial(a.settings.advertise) is None  # its Hello
            assert await a.handshaker.dial(c.settings.advertise) is None  # its server
            assert live(a) == live(c) == set()
            assert await a.handshaker.dial(b.settings.advertise) is not None  # the control
            assert live(a) == {"b"} and live(b) == {"a"}
        finally:
            await stop(nodes)

    asyncio.run(go())
    assert a.counters.rejected.get("revoked") == 1
    assert da.dial_log.outcomes[c.settings.advertise] == (
        f"not joining: {c.settings.advertise} serves a revoked certificate: certificate "
        f"serial {serial:#x} (c) is revoked by --tls-crl"
    )


def test_a_revoked_cli_certificate_cannot_read_status(synthetic_jsonl: Path, pki: Path) -> None:
    crl = revoke(pki, [], ["0x1234"], None).crl  # a list that revokes none of these
    clock = Clock()
    nodes = served_parts(synthetic_jsonl, [("a", {}, load(pki, "a", crl, clock))])
    [(_da, a)] = nodes
    cli = load(pki, "cli")

    async def go() -> None:
        await serve(nodes)
        try:
            assert (await status(a.settings.advertise, cli)).node_id == "a"
            revoke(pki, [pki / "cli.pem"], [], crl)
            clock.now += 10
            await reread(a)  # the reconnect loop's look at it
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await status(a.settings.advertise, cli)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "(cli) is revoked by --tls-crl" in (refused.value.details() or "")
        finally:
            await stop(nodes)

    asyncio.run(go())
    assert a.counters.rejected.get("revoked") == 1


def test_a_crl_reread_while_running_drops_the_revoked_neighbours(
    synthetic_jsonl: Path, pki: Path
) -> None:
    """a dials b and c dials a; then b and c are revoked: a's next look at the list
    drops both (one seen as a server, one as a caller), and neither joins again."""
    crl = revoke(pki, [], ["0x1234"], None).crl
    clock = Clock()
    nodes = served_parts(
        synthetic_jsonl,
        [
            ("a", {}, load(pki, "a", crl, clock)),
            ("b", {}, load(pki, "b")),
            ("c", {}, load(pki, "c")),
        ],
    )
    (_da, a), (_db, b), (_dc, c) = nodes

    async def go() -> None:
        await serve(nodes)
        try:
            assert await a.handshaker.dial(b.settings.advertise) is not None
            assert await c.handshaker.dial(a.settings.advertise) is not None
            assert live(a) == {"b", "c"}
            assert await reread(a) == []  # unchanged: nobody dropped
            revoke(pki, [pki / "b.pem", pki / "c.pem"], [], crl)
            assert await reread(a) == []  # not yet looked at again
            clock.now += 10
            assert sorted(await reread(a)) == ["b", "c"]
            assert live(a) == set()
            assert await c.handshaker.dial(a.settings.advertise) is None
            assert await a.handshaker.dial(b.settings.advertise) is None
            assert live(a) == set()
        finally:
            await stop(nodes)

    asyncio.run(go())
    assert a.counters.rejected.get("revoked", 0) >= 3  # 2 dropped, c's Hello refused


Signer = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def root(pki: Path) -> Signer:
    key = serialization.load_pem_private_key((pki / "ca-key.pem").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes()), key


def issue(name: str, signer: Signer | None, ca: bool = False) -> Signer:
    """A certificate `name` ('': none) signed by `signer` (None: by itself): a CA (one
    below the root at most), or a node's (127.0.0.1, serverAuth + clientAuth)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)] if name else [])
    issuer, signing = (subject, key) if signer is None else (signer[0].subject, signer[1])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.BasicConstraints(
                ca=ca, path_length=(None if signer is None else 0) if ca else None
            ),
            critical=True,
        )
    )
    if not ca:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        ip = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        builder = builder.add_extension(x509.SubjectAlternativeName([ip]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(signing, hashes.SHA256()), key


def write(
    pki: Path,
    stem: str,
    chain: list[x509.Certificate],
    key: ec.EllipticCurvePrivateKey,
    load: bool = True,
) -> TlsFiles | None:
    """`chain` (leaf first) and `key` as stem.pem (none: no chain) and stem-key.pem,
    loaded with pki's CA (`load`)."""
    cert_path, key_path = pki / f"{stem}.pem", pki / f"{stem}-key.pem"
    if chain:
        cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TlsFiles.load(cert_path, key_path, pki / "ca.pem") if load else None


def test_a_node_under_a_revoked_intermediate_is_refused_both_ways(
    synthetic_jsonl: Path, pki: Path
) -> None:
    """m's certificate is signed by an intermediate CA of the swarm CA, and the swarm
    CA's list revokes that intermediate: a refuses m's Hello and m's server."""
    pki, _top, inter, leaf, crl = deep_pki(pki)
    nodes = served_parts(
        synthetic_jsonl,
        [("a", {}, load(pki, "a", crl)), ("m", {}, write(pki, "m", [leaf[0], inter[0]], leaf[1]))],
    )
    refused_both_ways(nodes, inter[0].serial_number)


def test_a_certificate_without_a_common_name_is_refused_both_ways(
    synthetic_jsonl: Path, pki: Path
) -> None:
    """x serves and calls with a certificate of the CA that has no name: a refuses its
    Hello (once taken as a caller without TLS: it joined as 'x'), and refuses to join
    its server."""
    cert, key = issue("", root(pki))
    unnamed = write(pki, "nameless", [cert], key)
    nodes = served_parts(synthetic_jsonl, [("a", {}, load(pki, "a")), ("x", {}, unnamed)])
    (da, a), (dx, x) = nodes

    async def go() -> None:
        await serve(nodes)
        try:
            assert await x.handshaker.dial(a.settings.advertise) is None
            assert live(a) == set()
            assert await a.handshaker.dial(x.settings.advertise) is None
            host, port = x.settings.advertise.split(":")
            with pytest.raises(TlsError, match="without a common name"):
                await load(pki, "a").server_name(host, int(port), 5)
        finally:
            await stop(nodes)

    asyncio.run(go())
    told_x = dx.dial_log.outcomes[a.settings.advertise]
    assert NAMELESS in told_x, told_x
    assert (
        "serves a certificate without a common name" in da.dial_log.outcomes[x.settings.advertise]
    )


def refused_both_ways(nodes: list[tuple[Daemon, Parts]], revoked_serial: int) -> None:
    """Serve nodes a and m; neither may join the other (m's chain holds the revoked
    intermediate `revoked_serial`): a counts one `revoked` refusal and its dial log
    names the intermediate."""
    (da, a), (_dm, m) = nodes
    why = f"certificate serial {revoked_serial:#x} (intermediate) is revoked by --tls-crl"

    async def go() -> None:
        await serve(nodes)
        try:
            assert await m.handshaker.dial(a.settings.advertise) is None
            assert await a.handshaker.dial(m.settings.advertise) is None
            assert live(a) == live(m) == set()
        finally:
            await stop(nodes)

    asyncio.run(go())
    assert a.counters.rejected.get("revoked") == 1
    assert da.dial_log.outcomes[m.settings.advertise].endswith(why)


def deep_pki(pki: Path) -> tuple[Path, Signer, Signer, Signer, Path]:
    """A PKI beside `pki` whose CA allows intermediates (`certs`' allows none): node a
    under the CA, m under an intermediate, and the CA's list revoking the intermediate.
    The folder, the CA, the intermediate, m's pair and the list's path."""
    pki = pki.parent / "deep"
    pki.mkdir()
    top = issue("deep CA", None, ca=True)
    (pki / "ca.pem").write_bytes(top[0].public_bytes(serialization.Encoding.PEM))
    write(pki, "ca", [], top[1], load=False)
    mint(pki, ["a"], ["127.0.0.1"], 1, False)
    inter = issue("intermediate", top, ca=True)
    leaf = issue("m", inter)
    return pki, top, inter, leaf, revoke(pki, [], [str(inter[0].serial_number)], None).crl
