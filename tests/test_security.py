"""Security: the swarm secret (HMAC), mutual TLS, `declora-node certs` and the open-port
warning.

Unit checks run in-process. The real-process checks start `declora-node start`
subprocesses (tests/daemon_helpers.py): an mTLS pair with two strangers that must not
join (one with another CA's certificate, one with no TLS at all, on 127.0.0.1: no
warning) and a node on 0.0.0.0 without TLS or secret (the warning; killed once it has
warned); and a secret-signed pair with a wrong-secret node and raw replayed and forged
messages. Each real-process test starts its daemons at once and kills them at the end:
a daemon costs several CPU seconds to import torch.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import ipaddress
import json
import os
import re
import stat
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography import x509
from daemon_helpers import (
    HOST,
    Cluster,
    Member,
    Node,
    free_ports,
    known_ids,
    live_ids,
    serve_fake_peer,
    train_args,
)
from typer.testing import CliRunner

from declora.cli.app import app
from declora.node import PROTOCOL_VERSION
from declora.node.adapter import AdapterSchema, TensorSpec
from declora.node.security import (
    NONCE_BYTES,
    AuthError,
    SwarmAuth,
    TlsError,
    TlsFiles,
    auth_mode,
    is_loopback,
)
from declora.node.settings import NodeSettings
from declora.node.trainer import LoraModel
from declora.node.wire import Payload, WireError, chunks, make_header, read_stream
from declora.proto import pb, pb_grpc

SECRET = "correct horse battery staple"
START = 150.0  # seconds for daemons to import torch, build tiny-bert and mix (loaded machine)
runner = CliRunner()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DECLORA_* variable of the calling shell leaks into a test or its daemons."""
    for key in list(os.environ):
        if key.upper().startswith("DECLORA_"):
            monkeypatch.delenv(key)


class Clock:
    """A settable clock for SwarmAuth."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def hello(**fields: object) -> pb.Hello:
    base: dict[str, object] = {
        "protocol_version": PROTOCOL_VERSION,
        "node_id": "a",
        "swarm_id": "s",
        "fingerprint": "f",
        "round": 3,
        "seq": 4,
        "listen_address": "127.0.0.1:1",
    }
    return pb.Hello(**{**base, **fields})


def refusal(auth: SwarmAuth, msg: pb.Hello | pb.PullRequest | pb.LeaveNotice) -> AuthError:
    with pytest.raises(AuthError) as info:
        auth.verify(msg)
    return info.value


# ---------------------------------------------------------------- swarm secret (unit)


def test_signed_messages_verify_once_and_every_forgery_has_its_own_reason() -> None:
    clock = Clock()
    sender, receiver = (
        SwarmAuth(SECRET.encode(), clock=clock),
        SwarmAuth(SECRET.encode(), clock=clock),
    )
    for msg in (
        hello(),
        pb.PullRequest(node_id="a", swarm_id="s", kind=pb.PAYLOAD_KIND_STATE),
        pb.LeaveNotice(node_id="a", swarm_id="s", round=7),
    ):
        signed = sender.sign(msg)
        assert len(signed.nonce) == NONCE_BYTES and len(signed.mac) == 32
        receiver.verify(type(signed).FromString(signed.SerializeToString()))

    reasons = {}
    tampered = sender.sign(hello())
    tampered.round += 1
    reasons["tampered"] = refusal(receiver, tampered)
    reasons["wrong secret"] = refusal(
        receiver, SwarmAuth(b"another secret of 16+", clock=clock).sign(hello())
    )
    reasons["no mac"] = refusal(receiver, hello())
    old = sender.sign(hello())
    clock.now += 121  # outside the 120 s window
    reasons["stale"] = refusal(receiver, old)
    fresh = sender.sign(hello())
    receiver.verify(fresh)
    reasons["replay"] = refusal(receiver, fresh)

    assert {k: e.counter for k, e in reasons.items()} == {
        "tampered": "bad_auth",
        "wrong secret": "bad_auth",
        "no mac": "bad_auth",
        "stale": "stale_nonce",
        "replay": "replay",
    }
    assert "bad mac" in reasons["tampered"].reason
    assert "no mac" in reasons["no mac"].reason
    assert "outside" in reasons["stale"].reason
    assert "replayed" in reasons["replay"].reason
    assert len({e.reason for e in reasons.values() if e is not reasons["wrong secret"]}) == 4


def test_a_signature_is_bound_to_its_message_type() -> None:
    auth = SwarmAuth(SECRET.encode())
    pull = auth.sign(pb.PullRequest(node_id="a", swarm_id="s", kind=pb.PAYLOAD_KIND_STATE))
    # kind=3 and round=3 serialize alike: the type name in the mac keeps them apart
    as_leave = pb.LeaveNotice.FromString(pull.SerializeToString())
    assert as_leave.round == pb.PAYLOAD_KIND_STATE and as_leave.mac == pull.mac
    assert refusal(auth, as_leave).counter == "bad_auth"


def test_replay_cache_is_bounded_in_size_and_time() -> None:
    clock = Clock()
    sender = SwarmAuth(SECRET.encode(), clock=clock)
    receiver = SwarmAuth(SECRET.encode(), max_nonces=3, clock=clock)
    sent = []
    for _ in range(5):
        clock.now += 0.01
        sent.append(sender.sign(hello()))
        receiver.verify(sent[-1])
    assert receiver.remembered == 3
    # the two forgotten early still cannot be replayed: their time is below the floor
    assert refusal(receiver, sent[0]).counter == "replay"
    assert refusal(receiver, sent[4]).counter == "replay"
    clock.now += 200
    receiver.verify(sender.sign(hello()))
    assert receiver.remembered == 1  # the old ones expired with the window


def test_payload_mac_covers_header_and_data() -> None:
    auth = SwarmAuth(SECRET.encode())
    data = bytes(range(64))
    header = auth.sign_payload(pb.PayloadHeader(sender_id="a", round=2, total_bytes=64), data)
    auth.verify_payload(header, data)
    flipped = bytearray(data)
    flipped[10] ^= 1
    for h, d in ((header, bytes(flipped)), (pb.PayloadHeader(sender_id="a", round=2), data)):
        with pytest.raises(AuthError) as info:
            auth.verify_payload(h, d)
        assert info.value.counter == "bad_auth"
    other = pb.PayloadHeader()
    other.CopyFrom(header)
    other.round = 3
    with pytest.raises(AuthError, match="bad mac"):
        auth.verify_payload(other, data)


def test_read_stream_refuses_a_payload_with_a_bad_mac() -> None:
    schema = AdapterSchema((TensorSpec("w", (4,)),))
    data = np.arange(4, dtype=np.float32).tobytes()
    auth = SwarmAuth(SECRET.encode())

    async def read(header: pb.PayloadHeader, payload: bytes) -> Payload:
        async def stream() -> AsyncIterator[pb.Chunk]:
            for c in chunks(header, payload, 8):
                yield c

        return await read_stream(
            stream(),
            swarm_id="s",
            fingerprint="f",
            schema=schema,
            max_bytes=1024,
            auth=auth,
        )

    def header() -> pb.PayloadHeader:
        return make_header(
            sender_id="a",
            swarm_id="s",
            fingerprint="f",
            round=1,
            sender_degree=1,
            kind=pb.PAYLOAD_KIND_DELTA,
            codec="fp32",
            seq=1,
            data=data,
            schema=schema,
        )

    good = asyncio.run(read(auth.sign_payload(header(), data), data))
    assert good.data == data
    forged = SwarmAuth(b"not the swarm secret").sign_payload(header(), data)
    for h in (forged, header()):
        with pytest.raises(WireError) as info:
            asyncio.run(read(h, data))
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert info.value.counter == "bad_auth"


def test_secret_setting_env_length_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DECLORA_SWARM_SECRET", SECRET)
    settings = NodeSettings()
    assert settings.swarm_secret is not None
    assert settings.swarm_secret.get_secret_value() == SECRET
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    monkeypatch.setenv("DECLORA_SWARM_SECRET", "short")
    res = runner.invoke(app, ["start"])
    assert res.exit_code == 2
    assert "DECLORA_SWARM_SECRET: must be at least 16 characters" in res.stderr  # as given
    assert "short" not in res.stderr


def test_auth_mode_and_loopback() -> None:
    assert [auth_mode(t, s) for t in (False, True) for s in (False, True)] == [
        "none",
        "secret",
        "mtls",
        "mtls+secret",
    ]
    for listen in ("127.0.0.1:1", "127.3.2.1:1", "[::1]:1", "localhost:1", "LOCALHOST:1"):
        assert is_loopback(listen), listen
    for listen in ("0.0.0.0:1", "[::]:1", "10.0.0.5:1", "example.org:1"):
        assert not is_loopback(listen), listen


# ---------------------------------------------------------------- certs and TLS files (unit)


def mint(out: Path, nodes: str, *more: str) -> None:
    res = runner.invoke(app, ["certs", "--output", str(out), "--nodes", nodes, *more])
    assert res.exit_code == 0, res.output


def node_tls(d: Path, name: str) -> list[str]:
    return [
        "--tls-cert",
        str(d / f"{name}.pem"),
        "--tls-key",
        str(d / f"{name}-key.pem"),
        "--tls-ca",
        str(d / "ca.pem"),
    ]


def test_certs_command_mints_a_ca_and_node_and_client_certs(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    res = runner.invoke(
        app,
        [
            "certs",
            "--output",
            str(out),
            "--nodes",
            "node-0,node-1",
            "--hosts",
            "127.0.0.1,::1,node.example,localhost",
            "--days",
            "30",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "--tls-cert" in res.stdout and str(out / "cli.pem") in res.stdout
    ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for name in ("node-0", "node-1", "cli"):
        cert = x509.load_pem_x509_certificate((out / f"{name}.pem").read_bytes())
        cert.verify_directly_issued_by(ca)  # raises unless the CA signed it
        assert cert.subject.rfc4514_string() == f"CN={name}"
        days = (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).days
        assert 29 <= days <= 30
        eku = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        key_mode = stat.S_IMODE((out / f"{name}-key.pem").stat().st_mode)
        assert key_mode == 0o600, oct(key_mode)
        TlsFiles.load(out / f"{name}.pem", out / f"{name}-key.pem", out / "ca.pem")
        if name == "cli":
            assert eku == {x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH}
            continue
        assert eku == {
            x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
            x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
        }
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(san.get_values_for_type(x509.IPAddress)) == {
            ipaddress.ip_address("127.0.0.1"),
            ipaddress.ip_address("::1"),
        }
        assert set(san.get_values_for_type(x509.DNSName)) == {"node.example", "localhost"}
    assert stat.S_IMODE((out / "ca-key.pem").stat().st_mode) == 0o600

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = runner.invoke(app, ["certs", "--output", str(out), "--nodes", "node-0"])
    assert again.exit_code == 2 and "not overwriting" in again.stderr and "--force" in again.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    forced = runner.invoke(app, ["certs", "--output", str(out), "--nodes", "node-0", "--force"])
    assert forced.exit_code == 0, forced.output  # node-0 renewed under the same CA
    assert (out / "ca.pem").read_bytes() == before["ca.pem"]
    assert (out / "node-0.pem").read_bytes() != before["node-0.pem"]
    TlsFiles.load(out / "node-0.pem", out / "node-0-key.pem", out / "ca.pem")
    bad = runner.invoke(app, ["certs", "--output", str(tmp_path / "x"), "--nodes", "cli"])
    assert bad.exit_code == 2 and "reserved" in bad.stderr and not (tmp_path / "x").exists()


def test_tls_options_refused_with_the_option_named(tmp_path: Path) -> None:
    mint(tmp_path, "a,b")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    cases = [
        (["--tls-cert", str(tmp_path / "a.pem")], "go together: also give --tls-key, --tls-ca"),
        (
            [*node_tls(tmp_path, "a")[:4], "--tls-ca", str(tmp_path / "nope.pem")],
            "--tls-ca: file not found",
        ),
        (
            [
                *node_tls(tmp_path, "a")[:2],
                "--tls-key",
                str(tmp_path / "junk.pem"),
                "--tls-ca",
                str(tmp_path / "ca.pem"),
            ],
            "--tls-key:",
        ),
        (
            [
                *node_tls(tmp_path, "a")[:2],
                "--tls-key",
                str(tmp_path / "b-key.pem"),
                "--tls-ca",
                str(tmp_path / "ca.pem"),
            ],
            "is not the private key of --tls-cert",
        ),
        (["--tls-cert", str(tmp_path / "junk.pem"), *node_tls(tmp_path, "a")[2:]], "--tls-cert: "),
    ]
    for args, needle in cases:
        res = runner.invoke(app, ["start", *args])
        assert res.exit_code == 2, (args, res.output)
        assert "bad configuration" in res.stderr and needle in res.stderr, res.stderr
    res = runner.invoke(app, ["status", "--tls-cert", str(tmp_path / "a.pem")])
    assert res.exit_code == 2 and "go together" in res.stderr
    with pytest.raises(TlsError, match=r"--tls-key: .* is not an unencrypted PEM private key"):
        TlsFiles.load(tmp_path / "a.pem", tmp_path / "junk.pem", tmp_path / "ca.pem")


# ---------------------------------------------------------------- real processes


def pair(cluster: Cluster, names: tuple[str, str], extra: list[str]) -> list[Node]:
    """Two nodes of the cluster's swarm peered with each other, each half the data."""
    ports = free_ports(2)
    return [
        cluster.add(
            name,
            ports[i],
            [
                *train_args(cluster.data),
                "--swarm-id",
                cluster.swarm_id,
                "--partition",
                f"{i}/2",
                "--peers",
                f"{HOST}:{ports[1 - i]}",
                *extra,
            ],
        )
        for i, name in enumerate(names)
    ]


def stranger(cluster: Cluster, name: str, peers: list[Node], extra: list[str]) -> Node:
    """A node of the same swarm that keeps dialling `peers` (it never trains)."""
    [port] = free_ports(1)
    args = [*train_args(cluster.data), "--swarm-id", cluster.swarm_id, "--startup-timeout", "600"]
    args += ["--peers", ",".join(p.address for p in peers), "--log-level", "DEBUG", *extra]
    return cluster.add(name, port, args)


def wait_mixing(cluster: Cluster, nodes: list[Node], rounds: int) -> None:
    ids = {n.node_id for n in nodes}

    def ok() -> bool:
        replies = [n.status() for n in nodes]
        return all(
            r is not None and live_ids(r) == ids - {r.node_id} and r.round >= rounds
            for r in replies
        )

    cluster.wait_until(f"{sorted(ids)} mixing {rounds} rounds", ok, START, running=nodes)


def log_has(node: Node, pattern: str) -> bool:
    return re.search(pattern, node.log()) is not None


RUN_PAIR = ["--rounds", "0", "--local-steps", "1", "--eval-every", "0", "--round-deadline", "30"]


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.slow  # ~15 s of processes; test_testspeed3_revocation.py: an in-process mTLS pair
def test_mtls_swarm_mixes_and_strangers_cannot_join(cluster: Cluster, tmp_path: Path) -> None:
    pki, other_pki = tmp_path / "pki", tmp_path / "other-pki"
    mint(pki, "n0,n1")
    mint(other_pki, "x")
    n0, n1 = pair(cluster, ("n0", "n1"), RUN_PAIR)
    for node in (n0, n1):
        node.start(node_tls(pki, node.node_id))
        node.tls = TlsFiles.load(pki / "cli.pem", pki / "cli-key.pem", pki / "ca.pem")
    other_ca = stranger(cluster, "x", [n0, n1], node_tls(other_pki, "x")).start()
    plain = stranger(cluster, "plain", [n0, n1], []).start()
    exposed = stranger(cluster, "exposed", [], [])
    exposed.start(["--listen", f"0.0.0.0:{exposed.port}", "--solo"])  # the last --listen wins

    # The open-port warning: only for a non-loopback listener with neither TLS nor secret,
    # logged before the model loads (the node is not needed after that).
    warning = "with neither mTLS nor a swarm secret"
    cluster.wait_until(
        "the open-port warning",
        functools.partial(
            log_has,
            exposed,
            rf"WARNING.*serving 0\.0\.0\.0:{exposed.port} {warning}.*DECLORA_SWARM_SECRET",
        ),
        START,
        running=[exposed],
    )
    exposed.kill()

    wait_mixing(cluster, [n0, n1], rounds=2)
    strangers = [other_ca, plain]
    # Each stranger has loaded its model and keeps failing its handshakes with both.
    for node in strangers:
        for target in (n0, n1):
            failed = (
                rf"handshake with {re.escape(target.address)} failed: UNAVAILABLE .*"
                r"(Tls handshake failed|Socket closed|Connection reset)"
            )
            cluster.wait_until(
                f"{node.node_id}'s failed handshake with {target.node_id}",
                functools.partial(log_has, node, failed),
                START,
                running=[node],
            )
    assert log_has(other_ca, "CERTIFICATE_VERIFY_FAILED"), cluster.report()
    for node in (n0, n1):
        reply = node.status()
        assert reply is not None and reply.auth == "mtls"
        assert known_ids(reply) == {"n0", "n1"} - {node.node_id}, cluster.report()
    for node in strangers:
        assert "joined the live set" not in node.log(), cluster.report()

    assert warning not in plain.log() and warning not in n0.log()  # loopback, or mTLS

    # The CLI reads status over mTLS with the cli cert, and says what is missing without.
    cli = node_tls(pki, "cli")
    ok = runner.invoke(app, ["status", "--target", n0.address, "--format", "json", *cli])
    assert ok.exit_code == 0, ok.output
    reply = json.loads(ok.stdout)
    assert reply["node_id"] == "n0" and reply["auth"] == "mtls"
    assert [n["node_id"] for n in reply["neighbors"]] == ["n1"]
    peers = runner.invoke(app, ["inspect", "--target", n1.address, "--format", "json", *cli])
    assert peers.exit_code == 0 and json.loads(peers.stdout)["node_id"] == "n1", peers.output
    bare = runner.invoke(app, ["status", "--target", n0.address, "--timeout", "3"])
    assert bare.exit_code == 1 and not bare.stdout
    assert f"cannot get status from {n0.address}: the node closed the connection" in bare.stderr
    assert "hint: if the node uses mTLS, give --tls-cert, --tls-key and --tls-ca" in bare.stderr
    foreign = runner.invoke(
        app, ["status", "--target", n0.address, "--timeout", "3", *node_tls(other_pki, "x")]
    )
    assert foreign.exit_code == 1 and "CERTIFICATE_VERIFY_FAILED" in foreign.stderr


class TakesPushes(pb_grpc.SwarmServicer):
    def Push(self, request_iterator: object, context: object) -> pb.PushAck:
        for _ in request_iterator:  # type: ignore[attr-defined]
            pass
        return pb.PushAck(accepted=True)


def secret_swarm_checks(
    s0: Member,
    s1: Member,
    intruder: Member,
    swarm_id: str,
    wait: Callable[[str, Callable[[], object]], object],
    tiny_lm: LoraModel,
) -> None:
    """s0 and s1 (swarm secret `SECRET`) mix; `intruder` (another secret) dials s0 and
    is refused; forged, replayed and misdirected raw messages to s1 are refused and
    counted exactly, and the pair goes on mixing. `wait(what, check)` polls `check`
    until it is true (and fails when a node stops)."""

    def mixing(rounds: int) -> Callable[[], bool]:
        def ok() -> bool:
            replies = [s0.status(), s1.status()]
            return all(
                r is not None and live_ids(r) == {"s0", "s1"} - {r.node_id} and r.round >= rounds
                for r in replies
            )

        return ok

    wait("s0 and s1 mixing 2 rounds", mixing(2))
    wait(
        "the wrong-secret node refused",
        lambda: re.search(r"refused the handshake: not authenticated: bad mac", intruder.log()),
    )
    reply = s0.status()
    assert reply is not None and reply.auth == "secret"
    assert reply.rejected["bad_auth"] >= 1 and known_ids(reply) == {"s1"}, s0.log()[-3000:]
    assert SECRET not in s0.log() and "not the swarm secret" not in intruder.log()

    # Raw messages to s1 (that nothing else disturbs): exact counters.
    auth, forger = SwarmAuth(SECRET.encode()), SwarmAuth(b"not the swarm secret")
    before = s1.status()
    assert before is not None
    [port] = free_ports(1)  # ghost's server takes s1's pushes, so s1 keeps it live
    server = serve_fake_peer(TakesPushes(), f"{HOST}:{port}")
    ghost = auth.sign(
        pb.Hello(
            protocol_version=PROTOCOL_VERSION,
            node_id="ghost",
            swarm_id=swarm_id,
            fingerprint=before.fingerprint,
            listen_address=f"{HOST}:{port}",
            receiver=s1.address,  # signed: this Hello is for s1 only
        )
    )
    raw = ghost.SerializeToString()
    with grpc.insecure_channel(s0.address) as channel:  # replayed to another node: refused
        to_s0 = channel.unary_unary(
            "/declora.v1.Swarm/Handshake", response_deserializer=pb.Welcome.FromString
        )(raw, timeout=10)
        assert not to_s0.accepted and "not this node" in to_s0.reason, to_s0
    data = np.zeros(tiny_lm.schema.numel, dtype=np.float32).tobytes()
    header = make_header(
        sender_id="ghost",
        swarm_id=swarm_id,
        fingerprint=before.fingerprint,
        round=before.round + 4,  # ahead of s1 (ghost is live and silent: s1 waits)
        sender_degree=1,
        kind=pb.PAYLOAD_KIND_DELTA,
        codec="fp32",
        seq=1,
        data=data,
        schema=tiny_lm.schema,
        crc32=zlib.crc32(data),
    )
    with grpc.insecure_channel(s1.address) as channel:
        handshake = channel.unary_unary(
            "/declora.v1.Swarm/Handshake", response_deserializer=pb.Welcome.FromString
        )
        first = handshake(raw, timeout=10)  # the same bytes, twice
        second = handshake(raw, timeout=10)
        assert first.accepted, first.reason
        auth.verify(first.node)  # the listener's Welcome is signed too
        assert first.node.node_id == "s1"
        assert not second.accepted and "replayed nonce" in second.reason
        assert not second.HasField("node")  # a refused stranger learns nothing
        session = first.node.session  # what ghost must present to s1 from now on
        header.session, header.receiver_id = session, "s1"

        stub = pb_grpc.SwarmStub(channel)
        forged_calls = {
            "leave": lambda: stub.Leave(
                forger.sign(
                    pb.LeaveNotice(
                        node_id="ghost",
                        swarm_id=swarm_id,
                        session=session,
                        receiver_id="s1",
                    )
                ),
                timeout=10,
            ),
            "pull": lambda: list(
                stub.Pull(
                    pb.PullRequest(
                        node_id="ghost",
                        swarm_id=swarm_id,
                        session=session,
                        receiver_id="s1",
                    ),
                    timeout=10,
                )
            ),
            "push": lambda: stub.Push(
                chunks(forger.sign_payload(header, data), data, 1 << 20), timeout=10
            ),
        }
        for what, call in forged_calls.items():
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, (what, info.value)
        stub.Leave(  # ghost's own, valid leave
            auth.sign(
                pb.LeaveNotice(
                    node_id="ghost", swarm_id=swarm_id, session=session, receiver_id="s1"
                )
            ),
            timeout=10,
        )
    server.stop(grace=None)

    after = s1.status()
    assert after is not None
    grew = Counter(after.rejected)
    grew.subtract(before.rejected)
    assert +grew == Counter(replay=1, bad_auth=3), s1.log()[-3000:]
    assert "ghost" in known_ids(after) and "ghost" not in live_ids(after)
    wait("the pair mixing on", mixing(after.round + 2))  # the pair goes on unharmed


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.slow  # ~18 s of processes; test_testspeed3_secret_swarm.py: the same in-process
def test_secret_swarm_mixes_and_refuses_forgeries_and_replays(
    cluster: Cluster, tiny_lm: LoraModel
) -> None:
    """`secret_swarm_checks` on three `declora-node start` processes; make test runs
    them on in-process daemons over real gRPC (test_testspeed3_secret_swarm.py)."""
    s0, s1 = pair(cluster, ("s0", "s1"), RUN_PAIR)
    for node in (s0, s1):
        node.start(env={"DECLORA_SWARM_SECRET": SECRET})
    intruder = stranger(cluster, "wrong", [s0], ["--swarm-secret", "not the swarm secret"])
    intruder.start()

    def wait(what: str, check: Callable[[], object]) -> object:
        return cluster.wait_until(what, check, START, running=[s0, s1, intruder])

    secret_swarm_checks(s0, s1, intruder, cluster.swarm_id, wait, tiny_lm)
