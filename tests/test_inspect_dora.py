"""`inspect` names a DoRA or rsLoRA adapter as such (on the LoRA line and in
`--format json`): their `adapter_config.json` says so, and a plain LoRA's names neither."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from declora.cli.app import app
from declora.node.trainer import LoraModel


def _inspect(path: Path, *extra: str) -> str:
    res = CliRunner().invoke(app, ["inspect", str(path), *extra], terminal_width=200)
    assert res.exit_code == 0, res.output
    return res.stdout


def test_dora_and_rslora_are_named(tiny_lm: LoraModel, tmp_path: Path) -> None:
    vec = np.concatenate([t.reshape(-1).numpy() for t in tiny_lm.initial_tensors()])
    for name in ("plain", "variants"):
        tiny_lm.save_adapter(vec, tmp_path / name, {"round": 1})
    config_file = tmp_path / "variants" / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps(config | {"use_dora": True, "use_rslora": True}))
    lora_line = next(ln for ln in _inspect(tmp_path / "variants").splitlines() if "LoRA r=" in ln)
    assert " dora" in lora_line and " rslora" in lora_line, lora_line
    plain = next(ln for ln in _inspect(tmp_path / "plain").splitlines() if "LoRA r=" in ln)
    assert "dora" not in plain and "rslora" not in plain, plain
    shown = json.loads(_inspect(tmp_path / "variants", "--format", "json"))
    assert shown["lora"]["use_dora"] is True and shown["lora"]["use_rslora"] is True
