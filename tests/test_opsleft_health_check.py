"""`declora-node status --check`, the compose healthcheck (opsleft): it asks a real node's
grpc.health.v1 in plain and mTLS modes alike, the mTLS one with the node's own
DECLORA_TLS_* files (as the container has them). Before, the healthcheck opened an
insecure channel, so a node serving mTLS was reported unhealthy forever."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import yaml
from daemon_helpers import CLI, Cluster, Node, free_ports, train_args
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from declora.cli.certs import mint
from declora.node.daemon.health import SERVICE_NAME

START = 150.0  # seconds for a node to import torch, build its model and serve
COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"


def compose_probe() -> list[str]:
    """docker-compose.yml's healthcheck command, run here (it asks the port of the
    node's DECLORA_LISTEN)."""
    test = yaml.safe_load(COMPOSE.read_text())["x-node"]["healthcheck"]["test"]
    assert test[0] == "CMD", test
    command = test[1:]
    if command[0] == "declora-node":  # the image's console script
        return [*CLI, *command[1:]]
    assert command[0] == "python", command
    return [sys.executable, *command[1:]]


def probe(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DECLORA_")}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={**clean, **env}
    )


def serving(cluster: Cluster, node: Node, command: list[str], env: dict[str, str]) -> str:
    def answered() -> str | None:
        run = probe(command, env)
        return run.stdout if run.returncode == 0 else None

    return cluster.wait_until(f"{node.node_id} healthy", answered, START, [node])


def solo(cluster: Cluster, name: str, port: int, extra: Sequence[str] = ()) -> Node:
    args = [*train_args(cluster.data), "--solo", "--rounds", "0", "--eval-every", "0", *extra]
    return cluster.add(name, port, args)


@pytest.mark.integration
@pytest.mark.slow  # two real nodes (~40 s on a loaded machine): make test-slow
def test_the_compose_healthcheck_passes_in_plain_and_mtls_modes(
    cluster: Cluster, tmp_path: Path
) -> None:
    plain_port, tls_port = free_ports(2)
    plain = solo(cluster, "plain", plain_port).start()
    listen = {"DECLORA_LISTEN": f"0.0.0.0:{plain_port}"}  # as the image's, on another port
    out = serving(cluster, plain, compose_probe(), listen)
    assert out.strip() == f"127.0.0.1:{plain_port} SERVING", out

    # a node certificate naming only `localhost`, the host it advertises: the probe
    # dials 127.0.0.1 and still accepts the node's own certificate
    pki = tmp_path / "pki"
    mint(pki, ["secure"], ["localhost"], 30, False)
    env = {
        "DECLORA_TLS_CERT": str(pki / "secure.pem"),
        "DECLORA_TLS_KEY": str(pki / "secure-key.pem"),
        "DECLORA_TLS_CA": str(pki / "ca.pem"),
    }
    secure = solo(cluster, "secure", tls_port, ["--advertise", f"localhost:{tls_port}"])
    secure.start(env=env)
    listen = {"DECLORA_LISTEN": f"127.0.0.1:{tls_port}"}
    out = serving(cluster, secure, compose_probe(), {**env, **listen})
    assert out.strip() == f"127.0.0.1:{tls_port} SERVING", out
    plainly = probe(compose_probe(), listen)  # the old probe's insecure channel
    assert plainly.returncode == 1, plainly.stderr
    assert plainly.stderr.startswith("error: ") and "\nhint: " in plainly.stderr


@pytest.fixture
def not_serving() -> Iterator[int]:
    """A grpc.health.v1 server on 127.0.0.1 whose Swarm service is NOT_SERVING."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")  # the kernel's free port: no race
    server.start()
    yield port
    server.stop(None)


def test_a_node_not_serving_yet_is_unhealthy(not_serving: int) -> None:
    run = probe([*CLI, "status", "--check", "--target", f"127.0.0.1:{not_serving}"], {})
    assert run.returncode == 1, run
    lines = run.stderr.splitlines()
    why = "NOT_SERVING (loading its model, or stopping)"
    assert lines[0] == f"error: 127.0.0.1:{not_serving} is not healthy: {why}", lines
    assert lines[1].startswith("hint: "), lines


def test_unusable_tls_variables_are_a_configuration_error(tmp_path: Path) -> None:
    env = {"DECLORA_TLS_CERT": str(tmp_path / "missing.pem")}
    run = probe([*CLI, "status", "--check", "--target", "127.0.0.1:9"], env)
    assert run.returncode == 2, run
    assert run.stderr.startswith("error: the node's own TLS files"), run.stderr
    assert "\nhint: " in run.stderr and "Traceback" not in run.stderr


def test_check_refuses_json(not_serving: int) -> None:
    run = probe([*CLI, "status", "--check", "--format", "json"], {})
    assert run.returncode == 2 and run.stderr.startswith("error: --check"), run.stderr


def test_the_probe_names_what_start_reads() -> None:
    """The probe loads no pydantic (it runs every few seconds): its names are copies."""
    from declora.cli.health_check import SERVICE_NAME as probed
    from declora.cli.health_check import TLS_OPTIONS
    from declora.node.settings import NodeSettings

    assert set(TLS_OPTIONS) <= set(NodeSettings.model_fields)
    assert probed == SERVICE_NAME


def test_the_image_probes_as_compose_does() -> None:
    """deploy/Dockerfile's HEALTHCHECK (for `docker run`) is compose's probe command."""
    import json
    import re

    text = (COMPOSE.parent / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    found = re.search(r"^HEALTHCHECK .*\\\n\s+CMD (\[.*\])$", text, re.MULTILINE)
    assert found, "no HEALTHCHECK in deploy/Dockerfile"
    test = yaml.safe_load(COMPOSE.read_text())["x-node"]["healthcheck"]["test"]
    assert json.loads(found.group(1)) == test[1:]
