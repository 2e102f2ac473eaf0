"""An empty path from the environment or the config file is refused as the flag is
(revcli4): DECLORA_CHECKPOINT_DIR= was the working folder, DECLORA_TLS_CERT= said
'--tls-key, --tls-ca go together'."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from declora.cli.app import app

runner = CliRunner()


@pytest.mark.parametrize(
    "option", ["checkpoint-dir", "tls-cert", "tls-key", "tls-ca", "tls-crl", "swarm-secret-file"]
)
def test_an_empty_path_is_refused_from_every_source(
    option: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    variable = "DECLORA_" + option.upper().replace("-", "_")
    monkeypatch.setenv(variable, "")
    res = runner.invoke(app, ["config"])
    assert res.exit_code == 2, res.output
    assert f"{variable}: is empty: give a file's path" in res.stderr.splitlines()[0]
    monkeypatch.delenv(variable)
    config = tmp_path / "node.toml"
    config.write_text(f'{option.replace("-", "_")} = ""\n')
    res = runner.invoke(app, ["config", "--config", str(config)])
    assert res.exit_code == 2, res.output
    assert "is empty: give a file's path" in res.stderr.splitlines()[0]
    flag = runner.invoke(app, ["config", f"--{option}", ""])
    assert flag.exit_code == 2 and "an empty path" in flag.stderr  # the flag: click's check
