"""Revocation holes found in review (rev-tls), each over real gRPC or the real files:

- a caller with a revoked certificate of a name (its key stolen, the name re-issued)
  is refused, and no longer gets the live holder of the re-issued certificate dropped
  (the refused chain was remembered as that name's, and every re-read dropped it);
- a node under an intermediate CA that the swarm CA's list revokes is refused even
  when it sends only its leaf and the intermediate sits in the --tls-ca bundle (only
  what the peer sent was looked up);
- a --tls-crl file over `revocation.MAX_BYTES` is refused at start in one line naming
  the size, and a running node keeps its last good list when the file grows past it
  (it was read whole, whatever its size).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from test_auth_mismatch import live, serve, served_parts, stop
from test_revocation_files import sign_crl
from test_revocation_grpc import (
    Clock,
    deep_pki,
    load,
    refused_both_ways,
    reread,
    status,
    write,
)
from typer.testing import CliRunner

from declora.cli.app import app
from declora.cli.certs import mint, revoke
from declora.node.daemon.daemon import goodbye_to
from declora.node.revocation import MAX_BYTES, Revocations
from declora.node.security import TlsError, TlsFiles


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    mint(tmp_path / "pki", ["a", "b"], ["127.0.0.1", "localhost"], 30, False)
    return tmp_path / "pki"


def test_a_revoked_caller_cannot_get_the_reissued_holder_of_its_name_dropped(
    synthetic_jsonl: Path, pki: Path
) -> None:
    """b's key was stolen: its certificate is revoked and b re-issued. The thief's calls
    are refused, and a's re-reads of the list leave the honest b live."""
    for suffix in ("", "-key"):
        (pki / f"old-b{suffix}.pem").write_bytes((pki / f"b{suffix}.pem").read_bytes())
    crl = revoke(pki, [pki / "old-b.pem"], [], None).crl
    mint(pki, ["b"], ["127.0.0.1", "localhost"], 30, True)
    clock = Clock()
    nodes = served_parts(
        synthetic_jsonl, [("a", {}, load(pki, "a", crl, clock)), ("b", {}, load(pki, "b"))]
    )
    (_da, a), (_db, b) = nodes
    thief = TlsFiles.load(pki / "old-b.pem", pki / "old-b-key.pem", pki / "ca.pem")
    assert thief is not None

    async def go() -> None:
        await serve(nodes)
        try:
            assert await b.handshaker.dial(a.settings.advertise) is not None
            assert live(a) == {"b"}
            for _ in range(2):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await status(a.settings.advertise, thief)
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
                clock.now += 10
                assert await reread(a) == []
            assert live(a) == {"b"}
        finally:
            await stop(nodes)

    asyncio.run(go())
    assert a.counters.rejected.get("revoked") == 2  # the thief's two calls, nobody dropped


def test_a_revoked_intermediate_in_the_ca_bundle_refuses_a_leaf_sent_alone(
    synthetic_jsonl: Path, pki: Path
) -> None:
    """--tls-ca holds the root and the intermediate (as operators bundle them); m sends
    only its leaf, so TLS takes the intermediate from the bundle: m is still refused,
    as a caller and as a server."""
    pki, top, inter, leaf, crl = deep_pki(pki)
    bundle = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (top[0], inter[0]))
    (pki / "ca.pem").write_bytes(bundle)
    nodes = served_parts(
        synthetic_jsonl,
        [("a", {}, load(pki, "a", crl)), ("m", {}, write(pki, "m", [leaf[0]], leaf[1]))],
    )
    refused_both_ways(nodes, inter[0].serial_number)
    with pytest.raises(TlsError, match="revokes this end's own --tls-cert"):  # m's own start
        TlsFiles.load(pki / "m.pem", pki / "m-key.pem", pki / "ca.pem", crl=crl)


def test_a_crl_file_too_big_is_refused_and_never_replaces_a_good_list(
    pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    crl = revoke(pki, [], ["7"], None).crl
    good = crl.read_bytes()
    huge = pki / "huge.pem"
    huge.write_bytes(good + b"\n" * (MAX_BYTES + 1 - len(good)))  # a list, padded past it
    with pytest.raises(TlsError) as exc:
        TlsFiles.load(pki / "a.pem", pki / "a-key.pem", pki / "ca.pem", crl=huge)
    assert str(exc.value).startswith(f"--tls-crl: {huge} is over 16 MiB")
    assert "\n" not in str(exc.value)
    clock = Clock()
    cas = [x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())]
    held = Revocations(crl, pki / "ca.pem", cas, clock=clock)
    caplog.set_level(logging.WARNING, logger="declora.node.revocation")
    revoke(pki, [], ["8"], None)
    crl.write_bytes(crl.read_bytes() + b"\n" * (MAX_BYTES + 1))
    clock.now += 10
    assert held.refresh() is False and held.serials == {7}
    assert "is over 16 MiB" in caplog.text


def test_the_cas_own_serial_is_refused_by_revoke_and_ignored_in_a_list(pki: Path) -> None:
    """`certs revoke --serial` of the CA's own serial is refused as `--cert ca.pem` is
    (it wrote a list that refused only the peers that happen to send the CA in their
    chain); a list that holds it anyway (made elsewhere) revokes no chain by it."""
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    res = CliRunner().invoke(
        app, ["certs", "revoke", "--output", str(pki), "--serial", hex(ca.serial_number)]
    )
    assert res.exit_code == 2, res.output
    lines = res.stderr.splitlines()
    assert lines[0].startswith("error: --serial:") and "CA's own serial" in lines[0]
    assert lines[1].startswith("hint:") and len(lines) == 2
    assert not (pki / "crl.pem").exists()
    stale = sign_crl(pki, [ca.serial_number], dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    held = Revocations(stale, pki / "ca.pem", [ca])
    b = x509.load_pem_x509_certificate((pki / "b.pem").read_bytes())
    assert held.revoked([b, ca]) == held.revoked([b]) == ""


def test_a_stopping_node_says_no_goodbye_to_a_revoked_neighbour(
    synthetic_jsonl: Path, pki: Path
) -> None:
    """b delivered, then its certificate was revoked and a dropped it: a's goodbye at
    its stop (`goodbye_to`, to proven neighbours not live) no longer dials b's server."""
    crl = revoke(pki, [], ["0x1234"], None).crl
    clock = Clock()
    nodes = served_parts(
        synthetic_jsonl, [("a", {}, load(pki, "a", crl, clock)), ("b", {}, load(pki, "b"))]
    )
    (da, a), (_db, b) = nodes

    async def go() -> None:
        await serve(nodes)
        try:
            peer = await a.handshaker.dial(b.settings.advertise)
            assert peer is not None
            peer.proven = True  # it delivered
            revoke(pki, [pki / "b.pem"], [], crl)
            clock.now += 10
            assert await reread(a) == ["b"]
        finally:
            await stop(nodes)

    asyncio.run(go())
    peer = a.peers.get("b")
    assert peer is not None and not peer.live and peer.token_out
    assert goodbye_to(a.peers, da.transport.tls) == []
    assert goodbye_to(a.peers) == [peer]  # the control: without a list it would be told


def test_an_older_copy_of_the_list_does_not_take_revocations_back(
    pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The list in use (CRL number 2) revokes a and b; an older copy (number 1, only a)
    put back in its place keeps both revoked, with a warning; a list made from that
    copy (number 2 again, a and 7) adds 7 and keeps b; a newer one (3) is taken whole."""
    crl = revoke(pki, [pki / "a.pem"], [], None).crl
    first = crl.read_bytes()
    revoke(pki, [pki / "b.pem"], [], None)
    clock = Clock()
    cas = [x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())]
    held = Revocations(crl, pki / "ca.pem", cas, clock=clock)
    both = held.serials
    assert len(both) == 2
    caplog.set_level(logging.WARNING, logger="declora.node.revocation")
    crl.write_bytes(first)
    clock.now += 10
    assert held.refresh() is False and held.serials == both
    older = [r.message for r in caplog.records if "is not newer than the list" in r.message]
    assert len(older) == 1 and "(CRL number 1, in use 2)" in older[0], caplog.text
    revoke(pki, [], ["7"], None)  # on the older copy: number 2, without b
    clock.now += 10
    assert held.refresh() is True and held.serials == both | {7}
    revoke(pki, [], ["8"], None)  # number 3: newer, taken whole (b's revocation lost)
    clock.now += 10
    assert held.refresh() is True and held.serials == (both - {serial_of(pki, "b")}) | {7, 8}


def serial_of(pki: Path, name: str) -> int:
    return x509.load_pem_x509_certificate((pki / f"{name}.pem").read_bytes()).serial_number
