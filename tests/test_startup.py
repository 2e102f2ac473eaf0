"""A user's mistakes and a node's start, as a user meets them: real `declora-node`
processes, each mistake one `error:` line and an exit code, each missing peer named.

Nodes wait by polling (Status or process exit) with a deadline, never by sleeping.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from daemon_helpers import (
    CLI,
    HOST,
    Cluster,
    free_ports,
    serve_fake_peer,
    train_args,
)
from typer.testing import CliRunner

from declora.cli.app import app
from declora.cli.client import StatusError, fetch_status
from declora.node import PROTOCOL_VERSION
from declora.node.logs import REFUSALS_LOGGED
from declora.proto import pb, pb_grpc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

START = 150.0  # seconds for a node to import torch and build tiny-bert (a loaded machine)
STOP = 60.0


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "COLUMNS": "80", **(env or {})}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=START, cwd=cwd, env=full_env
    )


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def solo(data: Path | str, port: int, *more: str) -> list[str]:
    return ["start", "--solo", *train_args(Path(data)), "--listen", f"{HOST}:{port}", *more]


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another process holds (bound and listening)."""
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen()
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


# ---------------------------------------------------------------- one line per mistake


def write_data(tmp_path: Path, case: str) -> tuple[Path, str]:
    """A data file with the mistake `case`; a word the error must name."""
    files = {
        "missing": ("nope.jsonl", None, "not found"),
        "no label column": ("rows.csv", "text,category\nsome text,a\nmore text,b\n", "label"),
        "empty": ("empty.jsonl", "", "empty"),
        "bad json line": ("bad.jsonl", '{"text": "a b", "label": "x"}\n{"text": oops\n', ":2"),
        "unsupported type": ("data.xlsx", "x", "unsupported"),
    }
    name, text, word = files[case]
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    return path, word


CASES = ["missing", "no label column", "empty", "bad json line", "unsupported type"]


@pytest.mark.parametrize(
    "case",
    ["missing", *(pytest.param(c, marks=pytest.mark.slow) for c in CASES[1:])],
)  # make test starts a real node on one mistake (about 10 s each), and
# test_a_bad_data_file_is_one_error_line_in_process below refuses all five
def test_a_bad_data_file_is_one_error_line(tmp_path: Path, case: str) -> None:
    data, word = write_data(tmp_path, case)
    [port] = free_ports(1)
    res = run(*solo(data, port))
    assert res.returncode == 2, res.stderr
    [line] = errors(res.stderr)
    assert data.name in line and word in line, line
    assert "Traceback" not in res.stderr, res.stderr
    assert "hint:" in res.stderr


@pytest.mark.parametrize("case", CASES)
def test_a_bad_data_file_is_one_error_line_in_process(tmp_path: Path, case: str) -> None:
    """`start` as above, in this process (torch is loaded once)."""
    data, word = write_data(tmp_path, case)
    [port] = free_ports(1)
    state = ["--checkpoint-dir", str(tmp_path / "state")]
    res = CliRunner().invoke(app, [*solo(data, port), *state])
    assert res.exit_code == 2, res.output
    [line] = errors(res.stderr)
    assert data.name in line and word in line, line
    assert "Traceback" not in res.output, res.output
    assert "hint:" in res.stderr
    assert not (tmp_path / "state").exists()


@pytest.mark.slow  # a real node (16 s); test_revsplit_debug, test_cliuser_endings: in-process
def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    [port] = free_ports(1)
    res = run("--debug", *solo(tmp_path / "nope.jsonl", port))
    assert res.returncode != 0
    assert "Traceback" in res.stderr and "DataError" in res.stderr


def test_resume_with_nothing_to_resume_uses_the_default_folder(
    tmp_path: Path, synthetic_jsonl: Path
) -> None:
    [port] = free_ports(1)
    res = run(*solo(synthetic_jsonl, port, "--node-id", "r1", "--resume"), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    [line] = errors(res.stderr)
    assert "--resume: nothing to resume in declora-state/r1" in line, line
    assert "Traceback" not in res.stderr


def test_a_fresh_start_never_replaces_an_earlier_run(tmp_path: Path, synthetic_jsonl: Path) -> None:
    """Without --resume a folder holding checkpoints is refused, as is a file given
    as the folder; both stay as they were."""
    [port] = free_ports(1)
    folder = tmp_path / "state"
    (folder / "adapter").mkdir(parents=True)
    (folder / "LATEST").write_text("ckpt-00000009\n")
    (folder / "adapter" / "mine.txt").write_text("kept")
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    res = run(*solo(synthetic_jsonl, port, "--checkpoint-dir", str(folder)))
    assert res.returncode == 2, res.stderr
    [line] = errors(res.stderr)
    assert f"{folder} (--checkpoint-dir) holds an earlier run's checkpoints" in line, line
    assert "--resume" in res.stderr and "Traceback" not in res.stderr
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert (folder / "adapter" / "mine.txt").read_text() == "kept"
    afile = tmp_path / "afile"
    afile.write_text("mine")
    res = run(*solo(synthetic_jsonl, port, "--checkpoint-dir", str(afile / "sub")))
    assert res.returncode == 2, res.stderr
    [line] = errors(res.stderr)
    assert f"cannot use {afile / 'sub'} (--checkpoint-dir) for checkpoints" in line, line
    assert afile.read_text() == "mine"


def test_a_failed_start_leaves_no_folder_behind(tmp_path: Path, synthetic_jsonl: Path) -> None:
    [port] = free_ports(1)
    folder = tmp_path / "new" / "state"
    more = ("--checkpoint-dir", str(folder), "--partition", "0/100000")
    res = run(*solo(synthetic_jsonl, port, *more))
    assert res.returncode == 2, res.stderr
    assert "cannot share" in errors(res.stderr)[0]
    assert not (tmp_path / "new").exists()


def test_port_in_use_fails_before_loading(held_port: int, tmp_path: Path) -> None:
    """The port is bound before the data and model load: a missing data file is never
    reached, and the error comes at once."""
    t0 = time.monotonic()
    res = run(*solo(tmp_path / "nope.jsonl", held_port))
    elapsed = time.monotonic() - t0
    print(f"port in use: exit {res.returncode} after {elapsed:.2f}s")
    assert res.returncode == 2, res.stderr
    [line] = errors(res.stderr)
    assert line == f"error: cannot listen on {HOST}:{held_port}: Address already in use", line
    assert "nope.jsonl" not in res.stderr and "Traceback" not in res.stderr


def test_metrics_port_in_use(held_port: int, synthetic_jsonl: Path) -> None:
    [port] = free_ports(1)
    res = run(*solo(synthetic_jsonl, port, "--metrics-port", str(held_port)))
    assert res.returncode == 2, res.stderr
    [line] = errors(res.stderr)
    assert f"cannot serve metrics on 127.0.0.1:{held_port}" in line, line
    assert "Traceback" not in res.stderr


def test_cuda_without_a_gpu_fails_before_loading(synthetic_jsonl: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    [port] = free_ports(1)
    args = solo(synthetic_jsonl, port)
    args[args.index("--device") + 1] = "cuda"
    res = run(*args)
    assert res.returncode == 2, res.stderr
    [line] = errors(res.stderr)
    assert "--device cuda" in line and "GPU" in line, line
    assert "Traceback" not in res.stderr


def test_configuration_mistakes_name_where_they_were_made(tmp_path: Path) -> None:
    node_toml = tmp_path / "node.toml"
    node_toml.write_text('rnak = 4\nswarm_id = "s"\n')
    res = run("start", "--config", str(node_toml))
    assert res.returncode == 2
    assert errors(res.stderr) == [
        "error: bad configuration: node.toml: key 'rnak' is not an option (did you mean 'rank'?)"
    ]
    res = run("start", "--solo", env={"DECLORA_RANK": "0"})
    assert res.returncode == 2
    [line] = errors(res.stderr)
    assert line.startswith("error: bad configuration: DECLORA_RANK: "), line
    nobody = run("start", "--listen", f"{HOST}:{free_ports(1)[0]}")
    assert nobody.returncode == 2
    assert errors(nobody.stderr) == ["error: no peers: this node would train alone"]
    assert "--solo" in nobody.stderr


def test_unknown_environment_variables_are_warned_about_once(tmp_path: Path) -> None:
    res = run("config", "--format", "json", env={"DECLORA_RNAK": "4", "DECLORA_LR": "0.01"})
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: environment variable DECLORA_RNAK is not an option (ignored) "
        "(did you mean 'DECLORA_RANK'?)"
    ]
    settings = json.loads(res.stdout)
    assert settings["lr"] == {"value": 0.01, "source": "env DECLORA_LR"}


# ---------------------------------------------------------------- starting


def test_a_solo_node_says_still_loading_then_trains_alone(
    cluster: Cluster, synthetic_jsonl: Path
) -> None:
    [port] = free_ports(1)
    args = [*train_args(synthetic_jsonl), "--solo", "--rounds", "2", "--eval-every", "0"]
    node = cluster.add("solo", port, args).start()
    seen: list[str] = []

    def answered() -> bool:
        try:
            fetch_status(node.address, timeout=2)
        except StatusError as exc:
            seen.append(str(exc))
            return not node.running()
        return True

    cluster.wait_until("the solo node to answer Status", answered, START)
    assert any("still loading its model" in m for m in seen), seen
    [code] = cluster.wait_exit([node], START)
    assert code == 0, cluster.report()
    assert "round 2 done" in node.log() and " WARNING " not in node.log(), cluster.report()


class RefusingPeer(pb_grpc.SwarmServicer):
    """A fake peer that refuses every handshake with a reason."""

    def Handshake(self, request: pb.Hello, context: grpc.ServicerContext) -> pb.Welcome:
        return pb.Welcome(accepted=False, reason="swarm 'elsewhere' != 'here'")


def test_startup_timeout_names_why_each_peer_is_missing(cluster: Cluster) -> None:
    refused, silent, fake, port = free_ports(4)
    quiet = socket.socket()  # accepts connections, never speaks HTTP/2
    quiet.bind((HOST, silent))
    quiet.listen()
    server = serve_fake_peer(RefusingPeer(), f"{HOST}:{fake}")
    addresses = {
        "dns": "no-such-host.invalid:7070",
        "refused": f"{HOST}:{refused}",
        "silent": f"{HOST}:{silent}",
        "handshake": f"{HOST}:{fake}",
    }
    try:
        args = [*train_args(cluster.data), "--peers", ",".join(addresses.values())]
        args += ["--min-peers", "-1", "--startup-timeout", "4", "--rounds", "1"]
        node = cluster.add("lonely", port, args).start()
        [code] = cluster.wait_exit([node], START)
    finally:
        server.stop(grace=None)
        quiet.close()
    log = node.log()
    assert code == 1, cluster.report()
    assert "error: 0 of 4 wanted neighbours after 4 s (--startup-timeout)" in log, log
    why = dict(re.findall(r"^  (\S+): (.+)$", log, re.M))
    assert why[addresses["dns"]] == "DNS lookup of no-such-host.invalid failed", why
    assert why[addresses["refused"]] == "connection refused: nothing listens on that port", why
    assert why[addresses["silent"]] == "timed out: no answer to the handshake", why
    assert why[addresses["handshake"]] == "refused the handshake: swarm 'elsewhere' != 'here'"
    assert "hint: " in log and "Traceback" not in log
    assert not (node.ckpt / "adapter").exists(), "a node that never started saved an adapter"


def intruder_hello(swarm: str) -> pb.Hello:
    return pb.Hello(
        protocol_version=PROTOCOL_VERSION,
        node_id="intruder",
        swarm_id=swarm,
        fingerprint="0" * 16,
        listen_address=f"{HOST}:1",
    )


def test_refused_handshakes_are_logged_once_then_counted(cluster: Cluster) -> None:
    """A peer that keeps dialling with the wrong swarm is refused each time, counted each
    time, and logged once; the repeats are summed up when the node stops (the first
    `REFUSALS_LOGGED` by the repeat filter, the rest by the refusal log)."""
    closed, port = free_ports(2)
    args = [*train_args(cluster.data), "--peers", f"{HOST}:{closed}"]
    node = cluster.add("host", port, [*args, "--startup-timeout", "600"]).start()
    cluster.wait_until("the node to serve", node.status, START, running=[node])
    tries = 40
    with grpc.insecure_channel(node.address) as channel:
        stub = pb_grpc.SwarmStub(channel)
        answers = [stub.Handshake(intruder_hello("elsewhere"), timeout=10) for _ in range(tries)]
    assert not any(a.accepted for a in answers)
    reply = node.status()
    assert reply is not None and reply.rejected["handshake"] == tries
    assert node.log().count("refused handshake from") == 1, node.log()
    node.signal(signal.SIGTERM)
    assert cluster.wait_exit([node], STOP) == [0], cluster.report()
    assert re.search(
        rf"refused handshake from .*swarm.* \(repeated {REFUSALS_LOGGED - 1} times in the "
        r"last \d+ s\)",
        node.log(),
    ), node.log()
    assert f"{tries - REFUSALS_LOGGED} more refused handshakes not logged" in node.log()
