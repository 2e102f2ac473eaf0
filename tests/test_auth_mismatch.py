"""Nodes that disagree about their credentials refuse each other at the handshake, on
both sides, and TLS files are checked against each other before a node starts.

- TLS files (unit): an expired or not-yet-valid certificate (and CA), one another CA
  signed, the CA's own certificate, the CLI's `cli.pem` as a node's, and a --node-id
  other than the certificate's name are each refused with the option and the fact;
  `declora-node start` says so in one line, exit 2, before anything loads.
- Real gRPC over 127.0.0.1 (daemon parts of the tiny model in-process, each served by
  its own `Transport`): a node with a swarm secret and one without refuse each other
  both ways, and each one's startup failure names the reason the peer gave; under mTLS
  a node whose --node-id is not its certificate's name is refused as a caller (its
  Hello) and as a server (its Welcome, checked against the certificate it serves
  with), the dialler's refusal also undoes the peer's admission (a Leave), while a
  correct pair under the same CA joins.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from daemon_helpers import HOST, Cluster, free_ports, train_args
from test_daemon_parts import settings
from typer.testing import CliRunner

from declora.cli.app import app
from declora.cli.certs import mint
from declora.node.daemon.daemon import Daemon
from declora.node.daemon.parts import Parts
from declora.node.daemon.service import SwarmService
from declora.node.daemon.startup import startup_failure
from declora.node.daemon.transport import Transport
from declora.node.security import TlsError, TlsFiles, certificate_problem

SECRET = "correct horse battery staple"
NODE = {"role": "node"}
runner = CliRunner()


def files(d: Path, name: str, ca: Path | None = None) -> tuple[Path, Path, Path]:
    return d / f"{name}.pem", d / f"{name}-key.pem", ca or d / "ca.pem"


def tls_args(cert: Path, key: Path, ca: Path) -> list[str]:
    return ["--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca)]


def sign_node_cert(
    pki: Path, name: str, start: dt.datetime, end: dt.datetime, eku: bool = True
) -> tuple[Path, Path]:
    """A node certificate `name`, valid from `start` to `end`, signed by pki's CA key."""
    ca_key = serialization.load_pem_private_key((pki / "ca-key.pem").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if eku:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    cert_path, key_path = pki / f"{name}.pem", pki / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    mint(tmp_path / "pki", ["a", "b", "c"], ["127.0.0.1", "localhost"], 30, False)
    mint(tmp_path / "other", ["a"], ["127.0.0.1"], 30, False)
    return tmp_path / "pki"


# ---------------------------------------------------------------- TLS files (unit)


def test_tls_files_are_checked_against_each_other(pki: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    ok = TlsFiles.load(*files(pki, "a"), role="node", node_id="a")
    assert ok is not None and ok.name == "a"
    assert TlsFiles.load(*files(pki, "cli")) is not None  # either role: the CLI's own
    old = sign_node_cert(pki, "old", now - dt.timedelta(days=60), now - dt.timedelta(days=30))
    soon = sign_node_cert(pki, "soon", now + dt.timedelta(days=2), now + dt.timedelta(days=30))
    other_ca = pki.parent / "other" / "ca.pem"
    expired_on = (now - dt.timedelta(days=30)).strftime("%Y-%m-%d")
    # without a role (the CLI's calls): the CLI's own diagnosis when it connects
    assert TlsFiles.load(*files(pki.parent / "other", "cli", pki / "ca.pem")) is not None
    cases: list[tuple[tuple[Path, Path, Path], dict[str, str], str]] = [
        ((*old, pki / "ca.pem"), {}, rf"--tls-cert: .*old\.pem expired on {expired_on}"),
        ((*soon, pki / "ca.pem"), {}, r"--tls-cert: .*soon\.pem is not valid before"),
        (files(pki, "a", other_ca), NODE, r"--tls-cert: .*a\.pem is not signed by the CA of"),
        (files(pki.parent / "other", "a", pki / "ca.pem"), NODE, r"is not signed by the CA"),
        ((pki / "ca.pem", pki / "ca-key.pem", pki / "ca.pem"), {}, r"is a CA certificate"),
        (files(pki, "cli"), {"role": "node"}, r"not a node certificate \(the CLI's cli\.pem\?\)"),
        (
            files(pki, "a"),
            {"role": "node", "node_id": "x"},
            r"--node-id 'x' is not the name of --tls-cert .*a\.pem \('a'\)",
        ),
    ]
    for paths, how, pattern in cases:
        with pytest.raises(TlsError, match=pattern):
            TlsFiles.load(*paths, **how)  # type: ignore[arg-type]
    # a node certificate without extended key usage may serve any use (X.509)
    bare = sign_node_cert(
        pki, "bare", now - dt.timedelta(days=1), now + dt.timedelta(days=1), False
    )
    assert TlsFiles.load(*bare, pki / "ca.pem", role="node", node_id="bare") is not None
    # the CA that signed it expired (40 days on; the CA lives 30, this certificate 60)
    long = sign_node_cert(pki, "long", now - dt.timedelta(days=1), now + dt.timedelta(days=60))
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    leaf = x509.load_pem_x509_certificate(long[0].read_bytes())
    later = now + dt.timedelta(days=40)
    where = {"cert": long[0], "ca": pki / "ca.pem", "role": "node", "node_id": "long"}
    assert certificate_problem([leaf], [ca], **where, now=now) == ""  # type: ignore[arg-type]
    problem = certificate_problem([leaf], [ca], **where, now=later)  # type: ignore[arg-type]
    assert problem.startswith(f"--tls-ca: {pki / 'ca.pem'} expired on"), problem
    # another CA beside the swarm's in a --tls-ca bundle: the chain finds its own
    other = x509.load_pem_x509_certificate((pki.parent / "other" / "ca.pem").read_bytes())
    assert certificate_problem([leaf], [other, ca], **where, now=now) == ""  # type: ignore[arg-type]


def test_start_refuses_certificates_that_do_not_fit_in_one_line(pki: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    old = sign_node_cert(pki, "old", now - dt.timedelta(days=60), now - dt.timedelta(days=30))
    cases = [
        (tls_args(*old, pki / "ca.pem"), "expired on"),
        (tls_args(pki / "ca.pem", pki / "ca-key.pem", pki / "ca.pem"), "is a CA certificate"),
    ]
    for args, needle in cases:
        res = runner.invoke(app, ["start", "--node-id", "a", *args])
        assert res.exit_code == 2, (args, res.output)
        assert "bad configuration" in res.stderr and needle in res.stderr, res.stderr
        assert "Traceback" not in res.output


def test_start_refuses_a_node_id_or_cert_that_is_not_the_nodes(pki: Path) -> None:
    other_ca = pki.parent / "other" / "ca.pem"
    for args, needle in (
        (["--node-id", "x", *tls_args(*files(pki, "a"))], "--node-id 'x' is not the name of"),
        (["--node-id", "a", *tls_args(*files(pki, "a", other_ca))], "is not signed by the CA"),
        (["--node-id", "cli", *tls_args(*files(pki, "cli"))], "is not a node certificate"),
    ):
        res = runner.invoke(app, ["start", *args])
        assert res.exit_code == 2, (args, res.output)
        assert needle in res.stderr, res.stderr


# ---------------------------------------------------------------- real gRPC


def served_parts(
    data: Path, specs: list[tuple[str, dict[str, object], TlsFiles | None]]
) -> list[tuple[Daemon, Parts]]:
    """Daemons' parts for `specs` (node id, settings, TLS files), each on a free port
    of 127.0.0.1, not yet served (`serve`) nor introduced."""
    ports = free_ports(len(specs))
    out = []
    for i, (name, extra, tls) in enumerate(specs):
        s = settings(name, data, i % 2, [], **extra)
        s.listen = s.advertise = f"127.0.0.1:{ports[i]}"
        d = Daemon(s, Transport(s, tls))
        out.append((d, d.build()))
    return out


async def serve(nodes: list[tuple[Daemon, Parts]]) -> None:
    for d, p in nodes:
        await d.transport.start(SwarmService(p), 64)
        d.transport.set_serving(True)


async def stop(nodes: list[tuple[Daemon, Parts]]) -> None:
    for d, _ in nodes:
        await d.transport.stop(grace=0)


def live(p: Parts) -> set[str]:
    return {peer.node_id for peer in p.peers.live}


def test_a_secret_on_one_node_only_is_refused_on_both_sides(synthetic_jsonl: Path) -> None:
    (da, a), (db, b) = served_parts(
        synthetic_jsonl, [("a", {"swarm_secret": SECRET}, None), ("b", {}, None)]
    )

    async def go() -> None:
        await serve([(da, a), (db, b)])
        try:
            assert await a.handshaker.dial(b.settings.advertise) is None
            assert await b.handshaker.dial(a.settings.advertise) is None
        finally:
            await stop([(da, a), (db, b)])

    asyncio.run(go())
    assert live(a) == live(b) == set()  # neither counts the other towards --min-peers
    assert b.counters.rejected.get("handshake") == 1
    assert a.counters.rejected.get("bad_auth") == 1
    # what each one's startup failure says about the other (read by its operator)
    for d, other, needle in (
        (da, b, "'a' uses --swarm-secret, this node has none: give every node the same secret"),
        (db, a, "no mac: the sender has no --swarm-secret ('b' has none, this node has one"),
    ):
        message = startup_failure(
            d.settings, 1, [other.settings.advertise], set(), d.dial_log.outcomes
        ).message
        assert f"{other.settings.advertise}: refused the handshake: " in message, message
        assert needle in message, message


def test_mtls_node_id_must_be_the_certificate_name_both_ways(
    synthetic_jsonl: Path, pki: Path
) -> None:
    """x runs with a's certificate: b refuses x's Hello (its caller's certificate) and
    x's Welcome (the certificate x serves with), and leaves x again; b and c join."""
    tls = {n: TlsFiles.load(*files(pki, n)) for n in ("a", "b", "c")}
    nodes = served_parts(
        synthetic_jsonl, [("x", {}, tls["a"]), ("b", {}, tls["b"]), ("c", {}, tls["c"])]
    )
    (dx, x), (db, b), (_dc, c) = nodes

    async def go() -> None:
        await serve(nodes)
        try:
            assert await x.handshaker.dial(b.settings.advertise) is None
            assert live(x) == live(b) == set()
            assert await b.handshaker.dial(x.settings.advertise) is None
            await asyncio.sleep(0.2)  # b's Leave has been answered: x dropped b again
            assert live(x) == live(b) == set()
            assert await b.handshaker.dial(c.settings.advertise) is not None  # the control
            assert live(b) == {"c"} and live(c) == {"b"}
        finally:
            await stop(nodes)

    asyncio.run(go())
    assert x.peers.get("b") is not None  # x admitted b's Hello, then b left
    assert (
        "node id 'x' is not the certificate's name 'a'"
        in dx.dial_log.outcomes[b.settings.advertise]
    )
    assert db.dial_log.outcomes[x.settings.advertise] == (
        "not joining: node id 'x' is not its certificate's name 'a'"
    )
    assert b.counters.rejected.get("handshake") == 1


def test_the_server_certificate_is_read_and_verified_against_the_ca(
    synthetic_jsonl: Path, pki: Path
) -> None:
    """`TlsFiles.server_name` names a server's certificate, and refuses a server whose
    certificate another CA signed (also from files given as bytes only)."""
    [(db, b)] = served_parts(synthetic_jsonl, [("b", {}, TlsFiles.load(*files(pki, "b")))])
    mine = TlsFiles.load(*files(pki, "a"))
    stranger = TlsFiles.load(*files(pki.parent / "other", "a"))
    assert mine is not None and stranger is not None
    from_bytes = TlsFiles(mine.cert, mine.key, mine.ca)
    host, port = b.settings.advertise.split(":")

    async def go() -> None:
        await serve([(db, b)])
        try:
            assert await mine.server_name(host, int(port), 5) == "b"
            assert await from_bytes.server_name(host, int(port), 5) == "b"
            with pytest.raises(TlsError, match="cannot read the certificate"):
                await stranger.server_name(host, int(port), 5)
        finally:
            await stop([(db, b)])

    asyncio.run(go())


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.slow  # ~20 s of processes; make test-slow
def test_secret_on_one_node_only_fails_both_starts(cluster: Cluster) -> None:
    """Real daemons: a has --swarm-secret, b has none. Neither joins the other, so each
    one's --min-peers fails at --startup-timeout (exit 1); a, first to give up, names
    b's refusal (b, later, finds a gone: its log has a's refusal)."""
    ports = free_ports(2)
    a, b = (
        cluster.add(
            name,
            ports[i],
            [
                *train_args(cluster.data),
                *("--swarm-id", cluster.swarm_id, "--partition", f"{i}/2"),
                *("--peers", f"{HOST}:{ports[1 - i]}", "--min-peers", "1", "--rounds", "1"),
                *("--startup-timeout", str(15 * (i + 1))),
            ],
        )
        for i, name in enumerate(("a", "b"))
    )
    # b serves before a starts: a's 15 s (from its own load) always finds b up, and b's
    # 30 s span a's load and a's first dials. Started together, loads 8.1 s apart (two
    # busy loops beside them) took half of a's margin.
    b.start()
    cluster.wait_until("b to serve", b.status, 120, running=[b])
    a.start(env={"DECLORA_SWARM_SECRET": SECRET})
    assert cluster.wait_exit([a, b], 240) == [1, 1], cluster.report()
    told_a = "refused the handshake: 'a' uses --swarm-secret, this node has none: give every "
    told_b = (
        "refused the handshake: not authenticated: no mac: the sender has no --swarm-secret "
        "('b' has none, this node has one: give every node the same secret)"
    )
    assert "0 of 1 wanted neighbours after 15 s" in a.log(), a.log()
    assert "error: 0 of 1 wanted neighbours after 30 s" in b.log(), b.log()
    assert f"  {b.address}: {told_a}node the same secret" in a.log(), a.log()
    assert f"WARNING [b r0] {a.address} {told_b}" in b.log(), b.log()
    for node in (a, b):
        assert "joined the live set" not in node.log(), node.log()


def test_a_node_under_mtls_without_node_id_takes_its_certificates_name(pki: Path) -> None:
    """Peers check a node's id against its certificate: the address-derived default
    could never join, so the certificate's name is the default under mTLS."""
    from declora.node.settings import load_settings

    cert, key, ca = files(pki, "b")
    s = load_settings({"tls_cert": str(cert), "tls_key": str(key), "tls_ca": str(ca)})
    assert s.node_id == "b"
    assert load_settings({}).node_id == "node-127.0.0.1-7070"
