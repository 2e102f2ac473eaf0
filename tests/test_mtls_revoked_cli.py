"""A revoked node seen from the CLI and from its neighbours, over real gRPC on 127.0.0.1
(daemon parts of the tiny model in-process, as test_revocation_grpc):

- `status` and `inspect --target` with a --tls-crl that revokes the node's certificate
  refuse to ask it (as a node refuses to dial it); without that list they ask it;
- a revoked node re-dialling the node that revoked it, and that node's dials of the
  revoked one, leave one warning on each side per certificate: the revoking node never
  sends a Hello to the revoked server (which logged it joined, then left, each time),
  and the revoked node's log says it is revoked;
- Status lists each neighbour's release (its Hello's package_version), and the
  neighbour table shows it (escaped and bounded, "?" for a node that does not say)
  while the releases differ.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from test_auth_mismatch import live, serve, served_parts, stop
from test_revocation_grpc import load
from typer.testing import CliRunner

from declora.cli.app import app
from declora.cli.certs import mint, revoke
from declora.cli.client import StatusError, fetch_status, render_status, status_to_dict
from declora.node import __version__
from declora.proto import pb

runner = CliRunner()


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    mint(tmp_path / "pki", ["a", "b"], ["127.0.0.1", "localhost"], 30, False)
    return tmp_path / "pki"


def cli_args(pki: Path) -> list[str]:
    return [
        *("--tls-cert", str(pki / "cli.pem"), "--tls-key", str(pki / "cli-key.pem")),
        *("--tls-ca", str(pki / "ca.pem")),
    ]


def test_status_and_inspect_refuse_a_node_their_list_revokes(
    synthetic_jsonl: Path, pki: Path
) -> None:
    crl = revoke(pki, [pki / "a.pem"], [], None).crl
    nodes = served_parts(synthetic_jsonl, [("a", {}, load(pki, "a"))])  # a has no list
    [(_, a)] = nodes
    target = a.settings.advertise
    results: dict[str, object] = {}

    async def go() -> None:
        await serve(nodes)
        try:
            trusting = load(pki, "cli")
            results["plain"] = (
                await asyncio.to_thread(fetch_status, target, 5, tls=trusting)
            ).node_id
            with pytest.raises(StatusError) as refused:
                await asyncio.to_thread(fetch_status, target, 5, tls=load(pki, "cli", crl))
            results["refused"] = refused.value
            for command in ("status", "inspect"):
                flag = ["--target", target]
                args = [command, *flag, *cli_args(pki), "--tls-crl", str(crl)]
                results[command] = await asyncio.to_thread(runner.invoke, app, args)
        finally:
            await stop(nodes)

    asyncio.run(go())
    assert results["plain"] == "a"
    refused = results["refused"]
    assert isinstance(refused, StatusError)
    assert "serves a revoked certificate" in refused.message and "(a) is revoked" in refused.message
    assert "re-issue" in refused.hint
    for command in ("status", "inspect"):
        res = results[command]
        assert res.exit_code == 1, res.output  # type: ignore[attr-defined]
        first = res.stderr.splitlines()[0]  # type: ignore[attr-defined]
        assert first.startswith("error: cannot get status from") and "revoked" in first


def test_a_revocation_is_logged_once_on_each_side_however_often_they_dial(
    synthetic_jsonl: Path, pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    crl = revoke(pki, [pki / "b.pem"], [], None).crl
    nodes = served_parts(
        synthetic_jsonl, [("a", {}, load(pki, "a", crl)), ("b", {}, load(pki, "b"))]
    )
    (_, a), (_, b) = nodes

    async def go() -> None:
        await serve(nodes)
        try:
            for _ in range(3):  # a's reconnect loop and b's, over and over
                assert await a.handshaker.dial(b.settings.advertise) is None
                assert await b.handshaker.dial(a.settings.advertise) is None
        finally:
            await stop(nodes)

    with caplog.at_level(logging.INFO):
        asyncio.run(go())
    assert live(a) == live(b) == set()
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    joined = [r.getMessage() for r in caplog.records if "the live set" in r.getMessage()]
    assert joined == []  # b never counted a as joined (and then left)
    not_joining = [m for m in warned if m.startswith("not joining") and "(b) is revoked" in m]
    refused = [m for m in warned if m.startswith("refused a message") and "(b) is revoked" in m]
    told = [m for m in warned if "refuses this node" in m and "(b) is revoked" in m]
    assert (len(not_joining), len(refused), len(told)) == (1, 1, 1), warned
    assert a.counters.rejected.get("revoked") == 3  # each Hello of b still counted


def test_status_shows_each_neighbours_release(synthetic_jsonl: Path, pki: Path) -> None:
    nodes = served_parts(synthetic_jsonl, [("a", {}, load(pki, "a")), ("b", {}, load(pki, "b"))])
    (_, a), (_, b) = nodes

    async def go() -> pb.StatusReply:
        await serve(nodes)
        try:
            assert await a.handshaker.dial(b.settings.advertise) is not None
            return await a.status(False)
        finally:
            await stop(nodes)

    reply = asyncio.run(go())
    [n] = reply.neighbors
    assert n.node_id == "b" and n.package_version == __version__
    assert status_to_dict(reply)["neighbors"][0]["package_version"] == __version__


def test_the_neighbour_table_shows_releases_escaped_and_bounded(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reply = pb.StatusReply(node_id="a", state="training", package_version="0.2.0")
    reply.neighbors.add(node_id="new", address="h:1", package_version="0.2.0", live=True)
    reply.neighbors.add(node_id="old", address="h:2", live=True)  # an older node says nothing
    reply.neighbors.add(node_id="odd", address="h:3", package_version="\x1b[31m[bold]" + "9" * 200)
    render_status(reply, width=300)
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line}
    uniform = pb.StatusReply(node_id="a", state="training", package_version="0.2.0")
    uniform.neighbors.add(node_id="new", address="h:1", package_version="0.2.0", live=True)
    render_status(uniform, width=300)  # one release everywhere: no column for it
    header = [line for line in capsys.readouterr().out.splitlines() if "neighbour" in line]
    assert header and "release" not in header[0] and "weight" in header[0]
    assert "release" in rows["neighbour"]
    assert rows["new"][3] == "0.2.0" and rows["old"][3] == "?"
    odd = rows["odd"][3]
    assert "\x1b" not in odd and odd.startswith("\\x1b[31m[bold]999") and len(odd) < 60
