"""`inspect` of an adapter whose PEFT config has no task type (`task_type: null`, as
PEFT writes for a custom model) or whose declora.json records its evaluation as one
number says so, never a bare None nor 'not recorded' for a value it holds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from declora.cli.app import app
from declora.node.trainer import LoraModel


def test_a_null_task_type_and_a_bare_eval_number(tiny_lm: LoraModel, tmp_path: Path) -> None:
    vec = np.concatenate([t.reshape(-1).numpy() for t in tiny_lm.initial_tensors()])
    folder = tmp_path / "final"
    tiny_lm.save_adapter(vec, folder, {"node_id": "n0", "round": 3, "eval": 0.75})
    config = json.loads((folder / "adapter_config.json").read_text())
    config["task_type"] = None
    (folder / "adapter_config.json").write_text(json.dumps(config))
    res = CliRunner().invoke(app, ["inspect", str(folder)], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "None" not in res.stdout, res.stdout
    assert "task=(not recorded)" in res.stdout
    assert "eval: 0.75" in res.stdout, res.stdout
