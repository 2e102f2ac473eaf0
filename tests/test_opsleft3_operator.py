"""What an operator met (opsleft3): the resume refusals' hints, `status` without
--target (the container's healthcheck on any port), the probe's reading of the
DECLORA_* variables `start` reads, a path of only spaces, a usage error under
`--debug` and JSON logs, and error lines that a name holding a newline cannot forge."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from declora.cli import client, health_check
from declora.cli.app import app
from declora.cli.exits import STATE
from declora.cli.lines import error_lines
from declora.node.daemon.health import SERVICE_NAME
from declora.node.option_values import OptionValues
from declora.node.settings import SettingsError, load_settings, resolve_settings

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def fake_run(state: Path, node_id: str) -> None:
    """A run folder whose resume point records `node_id` (`run_folder.recorded_id`)."""
    point = state / "ckpt-00000003"
    (point / "adapter").mkdir(parents=True)
    (point / "state.pt").write_bytes(b"")
    (point / "adapter" / "declora.json").write_text(json.dumps({"node_id": node_id}))
    (state / "LATEST").write_text(point.name)


def node_files(tmp_path: Path, name: str) -> dict[str, str]:
    from declora.cli.certs import mint

    pki = tmp_path / "pki"
    mint(pki, [name], ["127.0.0.1"], 30, False)
    names = (("cert", f"{name}.pem"), ("key", f"{name}-key.pem"), ("ca", "ca.pem"))
    return {f"tls_{k}": str(pki / v) for k, v in names}


# ------------------------------------------------------------------ 1. resume refusals
def test_a_resume_under_another_id_hints_what_to_pass(tmp_path: Path) -> None:
    state = tmp_path / "state"
    fake_run(state, "lab-a")
    given = {"solo": True, "checkpoint_dir": str(state), "resume": True, "node_id": "lab-b"}
    with pytest.raises(SettingsError) as refused:
        resolve_settings(given)
    hint = refused.value.hint
    assert hint.startswith("leave out --node-id (a resume takes the id its run recorded)"), hint
    assert hint.endswith("or begin afresh in another --checkpoint-dir (this one is kept)")
    assert "afresh" not in refused.value.message  # the fix is the hint's
    assert (state / "LATEST").read_text() == "ckpt-00000003"


def test_a_resume_under_another_certificate_hints_the_certificate(tmp_path: Path) -> None:
    state = tmp_path / "state"
    fake_run(state, "lab-a")
    given = {"solo": True, "checkpoint_dir": str(state), "resume": True}
    with pytest.raises(SettingsError) as refused:
        resolve_settings({**given, **node_files(tmp_path, "lab-b")})
    hint = refused.value.hint
    assert hint.startswith("present the certificate of lab-a (--tls-cert, --tls-key)"), hint
    assert "--node-id" not in hint


def test_nothing_to_resume_lists_only_node_folders_and_no_node_id_under_mtls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sibling named with a newline forged a `hint:`-like line; under mTLS the id is
    the certificate's name, so the hint said a --node-id that would be refused."""
    from declora.node.daemon.startup import UserError, check_config

    monkeypatch.chdir(tmp_path)
    fake_run(tmp_path / "declora-state" / "lab-a", "lab-a")
    fake_run(tmp_path / "declora-state" / "x\nerror: forged", "lab-c")
    files = node_files(tmp_path, "lab-b")
    settings = load_settings({"solo": True, "resume": True, **files})
    with pytest.raises(UserError) as refused:
        check_config(settings)
    hint = refused.value.hint
    assert "forged" not in hint and "\n" not in hint, hint
    assert "present the certificate of lab-a" in hint and "--node-id" not in hint, hint
    plain = load_settings({"solo": True, "resume": True, "listen": "127.0.0.1:7072"})
    with pytest.raises(UserError) as refused:
        check_config(plain)
    assert "pass --node-id lab-a" in refused.value.hint and "forged" not in refused.value.hint


def test_an_error_line_escapes_control_characters() -> None:
    lines = error_lines("folder x\nerror: forged", "a\x1b[2Jb \udcff")
    assert lines == ["error: folder x\n  error: forged", "hint: a\\x1b[2Jb \\xff"]


# --------------------------------------------------- 2. status without --target, deploy/*
@pytest.fixture
def serving() -> Iterator[int]:
    """A grpc.health.v1 server on 127.0.0.1 whose Swarm service is SERVING."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(None)


@pytest.fixture
def no_declora_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [k for k in os.environ if k.upper().startswith("DECLORA_")]:
        monkeypatch.delenv(name)


@pytest.mark.parametrize("listen", ["0.0.0.0:{port}", "[::]:{port}", "127.0.0.1:{port}"])
def test_check_without_target_probes_the_nodes_own_listen_port(
    serving: int, listen: str, monkeypatch: pytest.MonkeyPatch, no_declora_env: None
) -> None:
    monkeypatch.setenv("DECLORA_LISTEN", listen.format(port=serving))
    res = runner.invoke(app, ["status", "--check", "--timeout", "10"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == f"127.0.0.1:{serving} SERVING"


def test_own_target_reads_listen_as_start_does() -> None:
    def own(environ: dict[str, str]) -> str:
        return client.own_target(OptionValues(environ))

    assert own({}) == "127.0.0.1:7070"
    assert own({"declora_listen": "[::]:8080"}) == "127.0.0.1:8080"
    assert own({"DECLORA_LISTEN": "[::1]:8080"}) == "[::1]:8080"
    assert own({"DECLORA_LISTEN": "127.0.0.2:81"}) == "127.0.0.2:81"
    with pytest.raises(ValueError, match="DECLORA_LISTEN must be host:port"):
        own({"DECLORA_LISTEN": "7070"})


def test_a_bad_listen_without_target_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, no_declora_env: None
) -> None:
    monkeypatch.setenv("DECLORA_LISTEN", "nowhere")
    res = runner.invoke(app, ["status", "--check"])
    lines = res.stderr.splitlines()
    assert res.exit_code == 2 and len(lines) == 2, res.output
    assert lines[0].startswith("error: DECLORA_LISTEN must be host:port") and "--target" in lines[1]


def test_an_explicit_target_still_wins(
    serving: int, monkeypatch: pytest.MonkeyPatch, no_declora_env: None
) -> None:
    monkeypatch.setenv("DECLORA_LISTEN", "127.0.0.1:9")
    res = runner.invoke(app, ["status", "--check", "--target", f"127.0.0.1:{serving}"])
    assert res.exit_code == 0, res.output


def test_the_image_and_compose_probe_without_a_port() -> None:
    """Both follow DECLORA_LISTEN: no port written into either (it was 7070, fixed)."""
    text = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    found = re.search(r"^HEALTHCHECK .*\\\n\s+CMD (\[.*\])$", text, re.MULTILINE)
    assert found and json.loads(found.group(1)) == ["declora-node", "status", "--check"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert compose["x-node"]["healthcheck"]["test"] == ["CMD", "declora-node", "status", "--check"]


# ---------------------------------------------------- 3. the probe's TLS variables
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_tls_variable_is_refused_by_the_probe_as_by_start(
    value: str, monkeypatch: pytest.MonkeyPatch, no_declora_env: None
) -> None:
    monkeypatch.setenv("DECLORA_TLS_CRL", value)
    with pytest.raises(SettingsError, match="DECLORA_TLS_CRL: is empty"):
        resolve_settings({"solo": True})
    res = runner.invoke(app, ["status", "--check", "--target", "127.0.0.1:9"])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: DECLORA_TLS_CRL: is empty"), res.stderr


def test_the_probe_finds_a_variable_in_any_case_as_start_does(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(health_check.CheckConfigError, match="the node's own TLS files"):
        health_check.node_tls(OptionValues({"declora_tls_cert": missing}))


# ------------------------------------------------------------ 4. paths of only spaces
@pytest.mark.parametrize("field", ["checkpoint_dir", "tls_crl", "swarm_secret_file"])
def test_a_path_flag_of_only_spaces_is_refused(field: str, no_declora_env: None) -> None:
    """A flag arrives as a Path (typer's): `Path(" ")` passed the settings' check."""
    with pytest.raises(SettingsError, match=f"--{field.replace('_', '-')}: is empty"):
        resolve_settings({"solo": True, field: Path(" ")})


def test_config_refuses_a_checkpoint_dir_of_spaces_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_declora_env: None
) -> None:
    """`config` builds the settings as `start` does (without running a node)."""
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["config", "--solo", "--checkpoint-dir", "  "])
    assert res.exit_code == 2, res.output
    first = res.stderr.splitlines()[0]  # settings' words, or the CLI's (`lazy_group`)
    assert first.startswith("error: ") and "--checkpoint-dir" in first and "empty" in first
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------- 5. a usage error is no crash, --debug or not
def test_a_usage_error_under_debug_and_json_logs_has_no_traceback(no_declora_env: None) -> None:
    try:
        res = runner.invoke(app, ["--debug", "start", "--log-format", "json", "--no-such"])
    finally:
        STATE["debug"] = False
    assert res.exit_code == 2, res.output
    record = json.loads(res.stderr.splitlines()[-1])
    assert record["message"].startswith("No such option: --no-such"), record
    assert "exc" not in record and record["exit_code"] == 2


def test_check_without_target_reads_the_config_file_as_start_does(
    serving: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_declora_env: None
) -> None:
    """A systemd node's --listen is in its config file: `status --config FILE` asks
    there; DECLORA_LISTEN wins over the file, as for `start`."""
    config = tmp_path / "node.toml"
    config.write_text(f'listen = "0.0.0.0:{serving}"\nsolo = true\n')
    res = runner.invoke(app, ["status", "--check", "--config", str(config)])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == f"127.0.0.1:{serving} SERVING"
    monkeypatch.setenv("DECLORA_LISTEN", "127.0.0.1:9")
    res = runner.invoke(app, ["status", "--check", "--config", str(config), "--timeout", "2"])
    assert res.exit_code == 1 and "127.0.0.1:9 is not healthy" in res.stderr, res.output
    config.write_text('listen = "nowhere"\n')
    monkeypatch.delenv("DECLORA_LISTEN")
    res = runner.invoke(app, ["status", "--check", "--config", str(config)])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: node.toml key 'listen' must be host:port")
