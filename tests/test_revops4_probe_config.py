"""`status --config FILE` reads the node's options as `start` does (revops4): its
listen, its TLS files and its swarm secret (file), flag > DECLORA_* > the file. Before,
only `listen` came from the file: a systemd node whose TLS files are in its config file
was probed without a certificate (unhealthy forever), and `status` of a node whose
secret is in its config file was unsigned."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from daemon_helpers import CLI, Cluster, free_ports, train_args
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from declora.cli import client, health_check
from declora.cli.app import app
from declora.cli.certs import mint
from declora.node.daemon.health import SERVICE_NAME
from declora.node.settings import SettingsError, resolve_settings
from declora.proto import pb

runner = CliRunner()
SECRET = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def no_declora_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.upper().startswith("DECLORA_")]:
        monkeypatch.delenv(name)


def pki(folder: Path, name: str = "node") -> dict[str, Path]:
    """A node certificate `name` naming 127.0.0.1, its key, its CA, and the CLI's."""
    mint(folder, [name], ["127.0.0.1"], 30, False)
    files = {"cert": f"{name}.pem", "key": f"{name}-key.pem", "ca": "ca.pem"}
    return {k: folder / v for k, v in files.items()} | {"cli": folder / "cli.pem"}


def write_config(path: Path, listen: str, files: dict[str, Path], secret_file: Path) -> Path:
    lines = [f'listen = "{listen}"', "solo = true", f'swarm_secret_file = "{secret_file}"']
    lines += [f'tls_{k} = "{files[k]}"' for k in ("cert", "key", "ca")]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def mtls_health(tmp_path: Path) -> Iterator[tuple[int, dict[str, Path]]]:
    """A grpc.health.v1 server on 127.0.0.1 that serves mTLS only (a client certificate
    of its CA required), its Swarm service SERVING; its port and its node's files."""
    files = pki(tmp_path / "pki")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [(files["key"].read_bytes(), files["cert"].read_bytes())],
        root_certificates=files["ca"].read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield port, files
    server.stop(None)


def test_check_with_config_presents_the_files_tls_certificate(
    mtls_health: tuple[int, dict[str, Path]], tmp_path: Path, secret_file: Path,
    no_declora_env: None,
) -> None:  # fmt: skip
    port, files = mtls_health
    config = write_config(tmp_path / "node.toml", f"0.0.0.0:{port}", files, secret_file)
    res = runner.invoke(app, ["status", "--check", "--config", str(config), "--timeout", "10"])
    assert res.exit_code == 0, res.output  # the old probe presented none: exit 1
    assert res.stdout.strip() == f"127.0.0.1:{port} SERVING"


def test_a_variable_wins_over_the_files_key_for_the_probe(
    mtls_health: tuple[int, dict[str, Path]], tmp_path: Path, secret_file: Path,
    monkeypatch: pytest.MonkeyPatch, no_declora_env: None,
) -> None:  # fmt: skip
    port, files = mtls_health
    config = write_config(tmp_path / "node.toml", f"0.0.0.0:{port}", files, secret_file)
    monkeypatch.setenv("DECLORA_TLS_CERT", str(tmp_path / "missing.pem"))
    res = runner.invoke(app, ["status", "--check", "--config", str(config)])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: the node's own TLS files (DECLORA_TLS_CERT, "), res.stderr
    assert "node.toml key 'tls_key'" in res.stderr.splitlines()[0]


def test_status_with_config_signs_with_the_files_secret(
    tmp_path: Path, secret_file: Path, monkeypatch: pytest.MonkeyPatch, no_declora_env: None
) -> None:
    asked: list[tuple[str, str | None]] = []

    def fetch(
        target: str, timeout: float, tls: object = None, secret: str | None = None, **_: object
    ):
        asked.append((target, secret))
        return pb.StatusReply(node_id="n0")

    monkeypatch.setattr(client, "fetch_status", fetch)
    config = tmp_path / "node.json"
    config.write_text(f'{{"listen": "127.0.0.1:7171", "swarm_secret_file": "{secret_file}"}}')
    res = runner.invoke(app, ["status", "--config", str(config), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert asked == [("127.0.0.1:7171", SECRET)]  # the old status signed with none


# ------------------------------------- the probe's reading is start's (in-process)
def probe_view(config: Path) -> tuple[str, str | None, bytes | None]:
    from declora.node.option_values import OptionValues
    from declora.node.settings import read_config_file

    values = OptionValues(config=read_config_file(config), config_name=config.name)
    tls = health_check.node_tls(values)
    return client.own_target(values), client.own_secret(values), tls and tls.cert


def start_view(config: Path) -> tuple[str, str | None, bytes | None]:
    settings = resolve_settings({}, config).settings
    secret = settings.swarm_secret.get_secret_value() if settings.swarm_secret else None
    tls = settings.tls()
    return settings.listen.replace("0.0.0.0", "127.0.0.1"), secret, tls and tls.cert


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"DECLORA_LISTEN": "0.0.0.0:7272"},
        {"declora_swarm_secret_file": "{other_secret}"},
        {"DECLORA_TLS_CERT": "{other}/node.pem", "DECLORA_TLS_KEY": "{other}/node-key.pem",
         "DECLORA_TLS_CA": "{other}/ca.pem"},
    ],
)  # fmt: skip
def test_the_probe_takes_each_option_from_where_start_takes_it(
    env: dict[str, str], tmp_path: Path, secret_file: Path,
    monkeypatch: pytest.MonkeyPatch, no_declora_env: None,
) -> None:  # fmt: skip
    config = write_config(tmp_path / "node.toml", "0.0.0.0:7171", pki(tmp_path / "a"), secret_file)
    monkeypatch.chdir(tmp_path)
    other = pki(tmp_path / "b")["cert"].parent
    (tmp_path / "other-secret").write_text("f" * 32)
    (tmp_path / "other-secret").chmod(0o600)
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(other=other, other_secret=tmp_path / "other-secret"))
    assert probe_view(config) == start_view(config)


@pytest.mark.parametrize(
    ("key", "env", "said"),
    [
        ("tls_crl = ' '", {}, "node.toml key 'tls_crl': is empty"),
        (f"swarm_secret_file = '{'{secret}'}'", {"DECLORA_SWARM_SECRET": SECRET},
         "DECLORA_SWARM_SECRET and node.toml key 'swarm_secret_file' both give the swarm secret"),
        ("swarm_secret = 'short'", {}, "node.toml key 'swarm_secret' must be text of at least 16"),
        ("swarm_secret = 12345678901234567890", {},
         "node.toml key 'swarm_secret' must be text of at least 16"),
        ("tls_cert = 5", {}, "node.toml key 'tls_cert': must be a file's path, got 5"),
        ("swarm_secret_file = 5", {}, "node.toml key 'swarm_secret_file': must be a file's path"),
    ],
)  # fmt: skip
def test_what_start_refuses_in_the_file_the_probe_refuses_naming_the_key(
    key: str, env: dict[str, str], said: str, tmp_path: Path, secret_file: Path,
    monkeypatch: pytest.MonkeyPatch, no_declora_env: None,
) -> None:  # fmt: skip
    config = tmp_path / "node.toml"
    config.write_text("solo = true\n" + key.format(secret=secret_file) + "\n")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError):
        resolve_settings({}, config)
    check = ["--check"] if "tls" in key else []  # `status` presents its own --tls-*
    argv = ["status", *check, "--config", str(config), "--target", "127.0.0.1:9"]
    res = runner.invoke(app, argv)
    assert res.exit_code == 2 and res.stderr.startswith(f"error: {said}"), res.output
    assert "12345678901234567890" not in res.stderr  # a secret is never shown


# ----------------------------------------------------------------- real node (slow)
@pytest.mark.integration
@pytest.mark.slow  # a real node (~20 s on a loaded machine): make test-slow
def test_a_systemd_style_node_is_probed_and_asked_from_its_config_file(
    cluster: Cluster, tmp_path: Path, secret_file: Path
) -> None:
    """An mTLS node with a swarm secret, everything in its config file (as a systemd
    unit's `start --config node.toml`): `status --check --config` and `status --config`
    (with the CLI's certificate) reach it with nothing else given."""
    import subprocess

    (port,) = free_ports(1)
    files = pki(tmp_path / "pki", "n0")
    config = write_config(tmp_path / "node.toml", f"127.0.0.1:{port}", files, secret_file)
    args = [
        *train_args(cluster.data),
        "--rounds",
        "0",
        "--eval-every",
        "0",
        "--config",
        str(config),
    ]
    node = cluster.add("n0", port, args).start()
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("DECLORA_")}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "status", "--config", str(config), *argv],
            capture_output=True, text=True, timeout=120, env=clean,
        )  # fmt: skip

    def healthy() -> str | None:
        done = run("--check")
        return done.stdout if done.returncode == 0 else None

    assert cluster.wait_until("n0 healthy", healthy, 150.0, [node]).strip().endswith("SERVING")
    cli = ["--tls-cert", str(files["cli"]), "--tls-key", str(files["cli"].with_name("cli-key.pem"))]
    asked = run(*cli, "--tls-ca", str(files["ca"]), "--format", "json")
    assert asked.returncode == 0, asked.stderr  # signed with the file's secret
    assert '"node_id": "n0"' in asked.stdout


# ----------------------------- one reader of a node's options: start's --log-format too
@pytest.mark.parametrize(
    ("flag", "env", "key", "json_logs"),
    [
        (None, {"declora_log_format": "json"}, "text", True),  # any case, over the file
        ("text", {"DECLORA_LOG_FORMAT": "json"}, "json", False),  # the flag over both
        (None, {}, "json", True),
        (None, {"DECLORA_LOG_FORMAT": "text"}, "json", False),
    ],
)
def test_starts_log_format_is_read_by_the_same_rule(
    flag: str | None, env: dict[str, str], key: str, json_logs: bool, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, no_declora_env: None,
) -> None:  # fmt: skip
    """Guard: `start_command.json_logs_asked` (known before the settings are built)
    takes --log-format as `OptionValues` does."""
    from declora.cli.start_command import json_logs_asked

    config = tmp_path / "node.toml"
    config.write_text(f'log_format = "{key}"\n')
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert json_logs_asked({"log_format": flag}, config) is json_logs
