"""One rule for what `status`, `status --check` and `inspect --target` present to a node
(`health_check.call_tls`): the --tls-* flags, else the node's own TLS files
(DECLORA_TLS_*, else --config's tls_*). `inspect --target` beside an mTLS node failed
with "the node closed the connection" where `status` answered; and a node without TLS
asked with the node's own files from the environment got the hint "leave out
--tls-cert ...", flags that were never given. Real gRPC on 127.0.0.1: a Swarm servicer
answering Status, under mTLS or plain."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from test_security import mint
from typer.testing import CliRunner

from declora.cli.app import app
from declora.cli.client import show_status
from declora.cli.health_check import check_main
from declora.cli.inspect import InspectError, inspect_target
from declora.node.option_values import OptionValues
from declora.proto import pb, pb_grpc

FILES = {"CERT": "n0.pem", "KEY": "n0-key.pem", "CA": "ca.pem"}


class _Node(pb_grpc.SwarmServicer):  # type: ignore[misc]
    def Status(self, request: pb.StatusRequest, context: object) -> pb.StatusReply:
        return pb.StatusReply(node_id="n0")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pki")
    mint(out, "n0")
    return out


def _serve(pki: Path | None) -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_SwarmServicer_to_server(_Node(), server)
    if pki is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        creds = grpc.ssl_server_credentials(
            [((pki / "n0-key.pem").read_bytes(), (pki / "n0.pem").read_bytes())],
            root_certificates=(pki / "ca.pem").read_bytes(),
            require_client_auth=True,
        )
        port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)


@pytest.fixture
def mtls_node(pki: Path) -> Iterator[str]:
    yield from _serve(pki)


@pytest.fixture
def plain_node() -> Iterator[str]:
    yield from _serve(None)


def _own_env(pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, file in FILES.items():
        monkeypatch.setenv(f"DECLORA_TLS_{name}", str(pki / file))


def test_inspect_target_presents_the_nodes_own_tls_files(
    pki: Path, mtls_node: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _own_env(pki, monkeypatch)
    assert inspect_target(mtls_node)["node_id"] == "n0"  # old: "closed the connection"
    for name in FILES:  # from --config's keys as well
        monkeypatch.delenv(f"DECLORA_TLS_{name}")
    config = {f"tls_{name.lower()}": str(pki / file) for name, file in FILES.items()}
    assert inspect_target(mtls_node, values=OptionValues(config=config))["node_id"] == "n0"
    with pytest.raises(InspectError):  # guard: without them, refused as before
        inspect_target(mtls_node)


def test_inspect_config_reaches_the_node_and_a_bad_one_is_a_config_error(
    pki: Path, mtls_node: str, tmp_path: Path
) -> None:
    config = tmp_path / "node.toml"
    config.write_text("".join(f'tls_{n.lower()} = "{pki / f}"\n' for n, f in FILES.items()))
    runner = CliRunner()
    res = runner.invoke(app, ["inspect", "--target", mtls_node, "--config", str(config)])
    assert res.exit_code == 0, res.output
    assert "n0" in res.output
    config.write_text(f'tls_cert = "{tmp_path / "missing.pem"}"\n')
    res = runner.invoke(app, ["inspect", "--target", mtls_node, "--config", str(config)])
    assert res.exit_code == 2, res.output
    assert "node.toml key 'tls_cert'" in res.output
    res = runner.invoke(app, ["inspect", str(tmp_path), "--config", str(config)])
    assert res.exit_code == 2 and "--config is the node's, for --target" in res.output


def test_a_node_without_tls_asked_with_its_own_files_names_where_they_came_from(
    pki: Path,
    plain_node: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _own_env(pki, monkeypatch)
    assert show_status(plain_node, True, 5.0, None) == 1
    err = capsys.readouterr().err
    assert "does not serve TLS" in err and "DECLORA_TLS_CERT" in err, err
    assert "unset DECLORA_TLS_CERT, DECLORA_TLS_KEY, DECLORA_TLS_CA" in err, err
    assert "leave out --tls-cert" not in err  # never given
    assert check_main(plain_node, 5.0, None) == 1  # status --check: the same words
    assert "unset DECLORA_TLS_CERT" in capsys.readouterr().err
    with pytest.raises(InspectError) as exc:  # inspect --target: the same words
        inspect_target(plain_node)
    assert "unset DECLORA_TLS_CERT" in (exc.value.hint or "")
    for name in FILES:
        monkeypatch.delenv(f"DECLORA_TLS_{name}")
    config = {f"tls_{name.lower()}": str(pki / file) for name, file in FILES.items()}
    assert show_status(plain_node, True, 5.0, None, OptionValues(config=config)) == 1
    assert "leave out --config (its tls_* keys)" in capsys.readouterr().err
