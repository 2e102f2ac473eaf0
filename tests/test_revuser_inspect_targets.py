"""`inspect` lists an adapter's LoRA target modules sorted (PEFT saves them from a set,
in any order: `['v_proj', 'q_proj']`), in text and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from adapter_helpers import save_trained_tiny

from declora.cli.inspect import inspect_path, render


def test_targets_are_listed_sorted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    adapter = tmp_path / "cls"
    save_trained_tiny(adapter, steps=1)
    config_file = adapter / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["target_modules"] = ["v_proj", "q_proj", "dense"]
    config["modules_to_save"] = ["score", "classifier"]
    config_file.write_text(json.dumps(config))
    info = inspect_path(adapter)
    assert info["lora"]["target_modules"] == ["dense", "q_proj", "v_proj"]
    assert info["lora"]["modules_to_save"] == ["classifier", "score"]
    render(info)
    assert "targets=['dense', 'q_proj', 'v_proj']" in capsys.readouterr().out


def test_a_regex_target_is_shown_as_saved(tmp_path: Path) -> None:
    """Guard: a target_modules regex string is no list to sort."""
    adapter = tmp_path / "cls"
    save_trained_tiny(adapter, steps=1)
    config_file = adapter / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["target_modules"] = r".*\.(v_proj|q_proj)"
    config_file.write_text(json.dumps(config))
    assert inspect_path(adapter)["lora"]["target_modules"] == r".*\.(v_proj|q_proj)"
