"""The CLI refuses bad input before any work: one line `error: ...` (and a hint), exit 2,
nothing written: partition schemes, shares larger than the data, --format, output
folders, and options of the other --task."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from daemon_helpers import free_ports
from typer.testing import CliRunner, Result

from declora.cli.app import app
from declora.node.data_files import DataError
from declora.node.partition import PartitionError, check_scheme, partition

runner = CliRunner()
TINY = ["--model", "tiny-bert", "--rounds", "1"]


def assert_refused(res: Result, needle: str) -> None:
    """Exit 2, `error: ...` on one line naming `needle` and a `hint:` line, no
    traceback."""
    assert res.exit_code == 2, res.output
    log = re.compile(r"\d{4}-\d\d-\d\d \d\d:")  # a daemon's log lines come first
    lines = [line for line in res.stderr.strip().splitlines() if not log.match(line)]
    assert lines and lines[0].startswith("error: "), res.stderr
    assert len(lines) == 2 and lines[1].startswith("hint: "), res.stderr
    assert needle in lines[0] and "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def write_rows(path: Path, n: int) -> Path:
    rows = [
        {"text": f"row {i}: " + " ".join(f"w{i}x{k}" for k in range(6)), "label": "ab"[i % 2]}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# A: partition schemes are checked when the configuration is built
@pytest.mark.parametrize("scheme", ["banana", "dirichlet:-1", "dirichlet:nan", "shards:0", "iid:2"])
@pytest.mark.parametrize("command", ["config", "simulate", "lab"])
def test_bad_partition_scheme_is_a_configuration_error(command: str, scheme: str) -> None:
    res = runner.invoke(app, [command, "--partition-scheme", scheme])
    assert_refused(res, "--partition-scheme")
    assert "accepted forms" in res.stderr


def test_good_partition_schemes_pass_in_their_plain_form() -> None:
    assert check_scheme(" SKEW:0.5 ") == "skew:0.5"
    assert [check_scheme(s) for s in ("iid", "dirichlet:0.5", "skew", "shards:2")] == [
        "iid",
        "dirichlet:0.5",
        "skew",
        "shards:2",
    ]
    res = runner.invoke(
        app,
        ["config", "--format", "json", "--partition", "0/2", "--partition-scheme", "Dirichlet:0.3"],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["partition_scheme"]["value"] == "dirichlet:0.3"


def test_more_nodes_than_rows_is_a_data_error_with_a_hint() -> None:
    labels = np.arange(48) % 2
    with pytest.raises(PartitionError, match="48 training rows among 100 nodes") as info:
        partition("iid", labels, 100, 0)
    assert isinstance(info.value, DataError) and "fewer nodes" in info.value.hint
    with pytest.raises(PartitionError, match="shards:30"):
        partition("shards:30", labels, 2, 0)


def test_simulate_with_more_nodes_than_rows(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl", 20)
    out = tmp_path / "sim"
    args = ["simulate", *TINY, "--data", str(data), "--nodes", "40", "--output", str(out)]
    res = runner.invoke(app, [*args, "--partition-scheme", "iid"])
    assert_refused(res, "among 40 nodes")
    assert not out.exists()


def test_log_level_is_read_in_any_case() -> None:
    from declora.node.settings import NodeSettings

    assert NodeSettings(log_level="debug").log_level == "DEBUG"  # type: ignore[arg-type]


def test_start_with_a_partition_beyond_the_rows(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl", 20)
    args = [
        *TINY,
        "--eval-every",
        "0",
        "--solo",
        "--listen",
        f"127.0.0.1:{free_ports(1)[0]}",
        "--data",
        str(data),
    ]
    args += ["--checkpoint-dir", str(tmp_path / "state"), "--partition", "99/100"]
    res = runner.invoke(app, ["start", *args])
    assert_refused(res, "among 100 nodes")
    assert not (tmp_path / "state").exists()  # a failed start leaves no folder


# B: --format, one name everywhere: text or json
FORMAT_COMMANDS = [
    ["status", "--target", "127.0.0.1:1"],
    ["config"],
    ["inspect", "PATH"],
    ["lab"],
    ["predict", "PATH"],
    ["generate", "PATH", "-p", "x"],
]


@pytest.mark.parametrize("command", FORMAT_COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("fmt", ["xml", "jsonl", "JSON"])
def test_every_format_is_text_or_json(tmp_path: Path, command: list[str], fmt: str) -> None:
    args = [str(tmp_path) if a == "PATH" else a for a in command]
    res = runner.invoke(app, [*args, "--format", fmt])
    assert_refused(res, f"--format must be text or json, got {fmt!r}")
    if fmt == "jsonl":
        assert res.stderr.strip().splitlines()[1] == "hint: use --format json"


@pytest.mark.parametrize("command", [["status"], ["config"]])
def test_the_old_json_flag_is_gone(command: list[str]) -> None:
    res = runner.invoke(app, [*command, "--json"])
    assert res.exit_code == 2 and "No such option: --json" in res.output
    assert "Traceback" not in res.output


def test_config_format_json_is_the_settings(tmp_path: Path) -> None:
    res = runner.invoke(app, ["config", "--format", "json", "--rank", "5"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert rows["rank"] == {"value": 5, "source": "flag"}
    text = runner.invoke(app, ["config", "--rank", "5"], env={"COLUMNS": "200"})
    assert text.exit_code == 0 and not text.stdout.lstrip().startswith("{")


# C: output folders
@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["export", "ADAPTER", "-o", "afile/sub"], "--output"),
        (["export", "ADAPTER", "--merge", "-o", "afile/sub2"], "--output"),
        (["simulate", *TINY, "--output", "afile"], "--output"),
        (["lab", *TINY, "--output", "afile"], "--output"),
        (["lab", *TINY, "--output", "afile/sub"], "--output"),
        (["certs", "--output", "afile", "--nodes", "n0"], "--output"),
        (["certs", "--output", "afile/sub", "--nodes", "n0"], "--output"),
    ],
)
def test_unusable_output_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], option: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "ADAPTER").mkdir()
    res = runner.invoke(app, args)
    assert_refused(res, f"{option} afile")
    assert "is a file, not a folder" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ADAPTER", "afile"]
    assert (tmp_path / "afile").read_text() == "x"


# D: options of the other task
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["--task", "cls", "--data", "rows.jsonl", "--data-format", "instruction"],
            "--data-format instruction",
        ),
        (["--task", "lm", "--labels", "a,b", "--partition-scheme", "iid"], "--labels"),
    ],
)
@pytest.mark.parametrize("command", ["config", "simulate", "lab"])
def test_options_of_the_other_task_are_refused(command: str, args: list[str], needle: str) -> None:
    assert_refused(runner.invoke(app, [command, *args]), needle)


def test_defaults_and_meaningful_combinations_pass() -> None:
    for args in (
        [],
        ["--task", "lm"],
        ["--task", "lm", "--labels", "a,b", "--partition", "0/2", "--partition-scheme", "skew"],
    ):
        res = runner.invoke(app, ["config", "--format", "json", *args])
        assert res.exit_code == 0, res.output


# E: status: --timeout and --target are checked before any call; each failure to reach
# a node says why, with its own hint (real sockets on 127.0.0.1)
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "3601"])
def test_status_timeout_must_be_positive_and_bounded(value: str) -> None:
    [closed] = free_ports(1)
    res = runner.invoke(app, ["status", "--target", f"127.0.0.1:{closed}", "--timeout", value])
    assert_refused(res, "--timeout must be > 0 and at most 3600 seconds")


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "1e9"])
def test_lab_timeout_must_be_positive_and_bounded(value: str) -> None:
    assert_refused(runner.invoke(app, ["lab", "--timeout", value]), "--timeout")


@pytest.mark.parametrize("target", ["127.0.0.1", "http://h:1", "[zz]:1", "a b:1", ""])
@pytest.mark.parametrize("command", [["status"], ["inspect"]])
def test_a_target_that_is_not_host_port_is_refused(command: list[str], target: str) -> None:
    assert_refused(runner.invoke(app, [*command, "--target", target]), "--target must be host:port")


@pytest.mark.parametrize("target", ["127.0.0.1:0", "127.0.0.1:70000"])
@pytest.mark.parametrize("command", [["status"], ["inspect"]])
def test_a_target_port_out_of_range_is_refused(command: list[str], target: str) -> None:
    assert_refused(runner.invoke(app, [*command, "--target", target]), "is not in 1-65535")


def test_the_fast_status_path_leaves_mistakes_to_the_app() -> None:
    from declora.cli.fast import status_main

    [closed] = free_ports(1)
    target = ["--target", f"127.0.0.1:{closed}"]
    for bad in (["--json"], ["--format", "jsonl"], ["--timeout", "0"], ["--target", "x"]):
        assert status_main([*target, *bad]) is None, bad
    assert status_main([*target, "--format", "json", "--timeout", "1"]) == 1  # answered here


def refused_with(res: Result, error: str, hint: str) -> None:
    """Exit 1 (runtime): `error: ...` naming `error`, then `hint: ...` naming `hint`."""
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in res.output, res.stderr
    assert lines[0].startswith("error: cannot get status from ") and error in lines[0], lines
    assert lines[1].startswith("hint: ") and hint in lines[1], lines
    assert res.stdout == ""


def test_status_of_a_closed_port_asks_whether_the_node_runs() -> None:
    [closed] = free_ports(1)
    res = runner.invoke(app, ["status", "--target", f"127.0.0.1:{closed}", "--timeout", "2"])
    refused_with(res, "connection refused", "is the node running, and is --target its")


def test_status_of_a_silent_port_says_raise_the_timeout() -> None:
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts, never answers
        port = listener.getsockname()[1]
        res = runner.invoke(app, ["status", "--target", f"127.0.0.1:{port}", "--timeout", "0.5"])
    refused_with(res, "no answer within 0.5s", "raise --timeout")


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A fake node's Status over plain gRPC and over mTLS; CLI certificates of its swarm
    and of another one."""
    from concurrent import futures

    import grpc

    from declora.cli.certs import mint
    from declora.proto import pb, pb_grpc

    root = tmp_path_factory.mktemp("status-tls")
    mint(root / "ours", ["n0"], ["127.0.0.1"], 1, False)
    mint(root / "theirs", ["n0"], ["127.0.0.1"], 1, False)

    class Node(pb_grpc.SwarmServicer):
        def Status(self, request: object, context: object) -> pb.StatusReply:
            return pb.StatusReply(node_id="fake", round=3, state="training")

    server = grpc.server(futures.ThreadPoolExecutor(2))
    pb_grpc.add_SwarmServicer_to_server(Node(), server)
    plain = server.add_insecure_port("127.0.0.1:0")
    pki = root / "ours"
    creds = grpc.ssl_server_credentials(
        [((pki / "n0-key.pem").read_bytes(), (pki / "n0.pem").read_bytes())],
        root_certificates=(pki / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    mtls = server.add_secure_port("127.0.0.1:0", creds)
    server.start()

    def tls(name: str, ca: str = "") -> list[str]:
        pki = root / name
        return [
            *("--tls-cert", str(pki / "cli.pem"), "--tls-key", str(pki / "cli-key.pem")),
            *("--tls-ca", str(root / (ca or name) / "ca.pem")),
        ]

    yield f"127.0.0.1:{plain}", f"127.0.0.1:{mtls}", tls
    server.stop(None)


def test_status_prints_text_or_json(nodes: Any) -> None:
    plain, mtls, tls = nodes
    res = runner.invoke(app, ["status", "--target", plain, "--format", "json"])
    assert res.exit_code == 0, res.output
    reply = json.loads(res.stdout)
    assert reply["node_id"] == "fake" and reply["round"] == 3
    text = runner.invoke(app, ["status", "--target", mtls, *tls("ours")])
    assert text.exit_code == 0, text.output
    assert "fake" in text.stdout and "round 3" in text.stdout


def test_status_without_certificates_of_an_mtls_node_asks_for_them(nodes: Any) -> None:
    _, mtls, _ = nodes
    res = runner.invoke(app, ["status", "--target", mtls, "--timeout", "3"])
    refused_with(res, "the node closed the connection", "give --tls-cert, --tls-key and --tls-ca")


def test_status_with_another_swarms_ca_names_tls_ca(nodes: Any) -> None:
    _, mtls, tls = nodes
    res = runner.invoke(app, ["status", "--target", mtls, "--timeout", "3", *tls("theirs")])
    refused_with(res, "not signed by --tls-ca (CERTIFICATE_VERIFY_FAILED)", "as --tls-ca")


def test_status_with_a_certificate_the_node_refuses_says_so(nodes: Any) -> None:
    _, mtls, tls = nodes
    res = runner.invoke(app, ["status", "--target", mtls, "--timeout", "3", *tls("theirs", "ours")])
    refused_with(res, "it refused this certificate", "signed by the node's swarm CA")


def test_status_with_certificates_of_a_plain_node_says_it_serves_no_tls(nodes: Any) -> None:
    plain, _, tls = nodes
    res = runner.invoke(app, ["status", "--target", plain, "--timeout", "3", *tls("ours")])
    refused_with(res, "the node does not serve TLS", "leave out --tls-cert")


def test_inspect_of_a_node_gives_the_same_hint() -> None:
    [closed] = free_ports(1)
    res = runner.invoke(app, ["inspect", "--target", f"127.0.0.1:{closed}"])
    refused_with(res, "connection refused", "is the node running")
