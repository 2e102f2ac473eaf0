"""The node's own checks of several options (not the recipe's) name each option where
the user gave it too: a flag, an environment variable or a config file's key."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from declora.cli.app import app

runner = CliRunner()


def _error(args: list[str]) -> str:
    res = runner.invoke(app, ["config", *args])
    assert res.exit_code == 2, res.output
    return res.stderr.strip().splitlines()[0]


def test_solo_with_peers_names_the_variable_and_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DECLORA_SOLO", "true")
    assert _error(["--peers", "127.0.0.1:7071"]) == (
        "error: bad configuration: DECLORA_SOLO trains alone: drop --peers, or drop DECLORA_SOLO"
    )


def test_a_scheme_without_a_share_names_the_file_key(tmp_path: Path) -> None:
    config = tmp_path / "n7.toml"
    config.write_text('partition_scheme = "dirichlet:0.5"\n')
    error = _error(["--config", str(config)])
    assert error.startswith(
        "error: bad configuration: n7.toml key 'partition_scheme' dirichlet:0.5 shares"
    ), error
    assert error.endswith("drop n7.toml key 'partition_scheme')"), error


def test_chebyshev_without_lambda_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DECLORA_GOSSIP_ACCELERATION", "chebyshev")
    assert _error([]).startswith(
        "error: bad configuration: DECLORA_GOSSIP_ACCELERATION chebyshev needs"
    )


def test_flags_still_read_as_flags() -> None:
    assert _error(["--solo", "--mdns"]) == (
        "error: bad configuration: --solo trains alone: drop --mdns, or drop --solo"
    )
