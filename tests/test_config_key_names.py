"""A check of several options names each where the user gave it: a flag, an
environment variable or a config file's key (as single-option errors do)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from declora.cli.app import app

runner = CliRunner()


def test_a_combination_from_a_config_file_names_its_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "n5.toml"
    config.write_text('solo = true\nmethod = "deca"\ngradient-tracking = true\n')
    res = runner.invoke(app, ["config", "--config", str(config)])
    assert res.exit_code == 2, res.output
    error, hint = res.stderr.strip().splitlines()
    assert error == (
        "error: bad configuration: n5.toml key 'method' deca cannot be combined with "
        "n5.toml key 'gradient_tracking'"
    )
    assert hint.startswith("hint: ")
    monkeypatch.setenv("DECLORA_GRADIENT_TRACKING", "true")
    res = runner.invoke(app, ["config", "--solo", "--method", "deca"])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith(
        "error: bad configuration: --method deca cannot be combined with "
        "DECLORA_GRADIENT_TRACKING\n"
    )


def test_chebyshev_and_step_after_mixing_name_their_keys(tmp_path: Path) -> None:
    """The acceleration checks name options as given too (they said --flags)."""
    config = tmp_path / "n6.toml"
    config.write_text(
        'solo = true\nrobust-mixing = "clip"\ngossip-acceleration = "chebyshev:0.5"\n'
    )
    res = runner.invoke(app, ["config", "--config", str(config)])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith(
        "error: bad configuration: n6.toml key 'gossip_acceleration' chebyshev cannot be "
        "combined with n6.toml key 'robust_mixing'"
    ), res.stderr
    config.write_text("solo = true\nstep-after-mixing = true\ngradient-tracking = false\n")
    res = runner.invoke(app, ["config", "--config", str(config)])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith(
        "error: bad configuration: n6.toml key 'step_after_mixing' needs "
        "n6.toml key 'gradient_tracking'"
    ), res.stderr
