"""Review of the ops settings work: a --swarm-secret-file that is a FIFO or a device is
refused at once (a FIFO with no writer hung `start` and `config` for ever), read once;
an empty DECLORA_SWARM_SECRET_FILE or DECLORA_TLS_CRL is refused as empty (it was the
working folder); the TLS options are named as given; the secret file's warning names
the option as given; `config` says advertise was copied from listen; an interrupted
start under --log-format json is a JSON record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import declora.node.settings as settings_module
from declora.cli.app import app
from declora.node.settings import SettingsError, resolve_settings

SECRET = "0123456789abcdef0123456789abcdef"
EXE = Path(sys.executable).with_name("declora-node")


def _refusal(options: dict[str, object]) -> str:
    with pytest.raises(SettingsError) as err:
        resolve_settings(options)
    return str(err.value)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "secret"
    os.mkfifo(fifo)
    res = subprocess.run(
        [str(EXE), "config", "--swarm-secret-file", str(fifo)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert f"--swarm-secret-file: {fifo}: not a regular file" in res.stderr.splitlines()[0]


def test_a_device_and_a_folder_are_not_regular_files(tmp_path: Path) -> None:
    for path in (Path("/dev/null"), tmp_path):
        said = _refusal({"swarm_secret_file": path})
        assert f"--swarm-secret-file: {path}: not a regular file" in said, said


def test_a_link_to_a_secret_is_followed(tmp_path: Path) -> None:
    """As a Kubernetes secret volume mounts its files (links into ..data/)."""
    real = tmp_path / "..data"
    real.mkdir()
    (real / "secret").write_text(SECRET + "\n")
    (real / "secret").chmod(0o600)
    (tmp_path / "secret").symlink_to(real / "secret")
    got = resolve_settings({"swarm_secret_file": tmp_path / "secret"}).settings
    assert got.swarm_secret is not None and got.swarm_secret.get_secret_value() == SECRET


def test_the_file_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What is checked is what signs: one read (two could see two texts)."""
    path = tmp_path / "secret"
    path.write_text(SECRET)
    path.chmod(0o600)
    reads = []
    real = settings_module.read_secret_file

    def counted(p: Path) -> str:
        reads.append(p)
        return real(p)

    monkeypatch.setattr(settings_module, "read_secret_file", counted)
    resolve_settings({"swarm_secret_file": path})
    assert reads == [path]


@pytest.mark.parametrize("field", ["swarm_secret_file", "tls_crl"])
def test_an_empty_variable_is_refused_as_empty(field: str, monkeypatch: pytest.MonkeyPatch) -> None:
    var = f"DECLORA_{field.upper()}"
    monkeypatch.setenv(var, "")
    said = _refusal({})
    assert f"{var}: is empty: give a file's path, or leave the option out" in said, said


def test_the_tls_options_are_named_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crl = tmp_path / "crl.pem"
    crl.write_text("x")
    monkeypatch.setenv("DECLORA_TLS_CRL", str(crl))
    said = _refusal({})
    assert "DECLORA_TLS_CRL needs mTLS: also give --tls-cert, --tls-key, --tls-ca" in said, said
    monkeypatch.delenv("DECLORA_TLS_CRL")
    monkeypatch.setenv("DECLORA_TLS_CERT", str(crl))
    said = _refusal({"tls_key": crl})
    assert "DECLORA_TLS_CERT, --tls-key, --tls-ca go together: also give --tls-ca" in said


def test_the_open_secret_file_warning_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET)
    path.chmod(0o644)
    monkeypatch.setenv("DECLORA_SWARM_SECRET_FILE", str(path))
    (line,) = resolve_settings({}).warnings
    assert line.startswith(f"DECLORA_SWARM_SECRET_FILE {path}: permissions 0644"), line


def test_config_says_advertise_came_from_listen() -> None:
    res = CliRunner().invoke(app, ["config", "--listen", "127.0.0.1:7075", "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert rows["advertise"] == {"value": "127.0.0.1:7075", "source": "listen"}
    res = CliRunner().invoke(app, ["config", "--advertise", "10.0.0.1:7075", "--format", "json"])
    assert json.loads(res.stdout)["advertise"]["source"] == "flag"  # the control


def test_an_interrupted_start_under_json_logs_is_a_json_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def interrupt(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(settings_module, "resolve_settings", interrupt)
    res = CliRunner().invoke(app, ["start", "--log-format", "json"])
    assert res.exit_code == 130, res.output
    (record,) = [json.loads(line) for line in res.stderr.splitlines()]
    assert record["message"] == "interrupted before the node started; nothing was written"
    assert record["level"] == "WARNING" and record["exit_code"] == 130
    res = CliRunner().invoke(app, ["start"])  # the plain format: the plain line
    assert res.stderr == "interrupted before the node started; nothing was written\n"


def test_status_refuses_a_fifo_secret_file_without_waiting(tmp_path: Path) -> None:
    """`status` reads DECLORA_SWARM_SECRET_FILE as `start` does (`read_secret_file`)."""
    fifo = tmp_path / "secret"
    os.mkfifo(fifo)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECLORA_")}
    res = subprocess.run(
        [str(EXE), "status", "--target", "127.0.0.1:9"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={**env, "DECLORA_SWARM_SECRET_FILE": str(fifo)},
    )  # fmt: skip
    assert res.returncode != 0, res.stderr
    assert f"DECLORA_SWARM_SECRET_FILE: {fifo}: not a regular file" in res.stderr, res.stderr
