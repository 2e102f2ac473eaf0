"""--test-fraction: the share of a data file held out as the test set a node's eval lines
score (0.2 by default; 0 trains `start` on every row, with no evaluation), agreed by the
swarm when not the default; simulate, scored on the test set, refuses 0."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import make_synthetic, tiny_sim_config, write_jsonl
from pydantic import ValidationError

from declora.cli.lab import LabConfig
from declora.node.daemon.admission import recipe_differences
from declora.node.data import load_dataset
from declora.node.recipe import Recipe
from declora.node.settings import NodeSettings
from declora.node.simulator import SimConfig
from declora.node.trainer import LoraModel
from declora.node.workload import load_workload


def test_start_trains_on_every_row_with_test_fraction_0(
    tmp_path: Path, tiny_lm: LoraModel, caplog: pytest.LogCaptureFixture
) -> None:
    data = write_jsonl(make_synthetic(60, seed=3), tmp_path / "sixty.jsonl")
    settings = NodeSettings(data=str(data), solo=True, test_fraction=0, model="tiny-bert")
    with caplog.at_level(logging.INFO, logger="declora.node.workload"):
        work = load_workload(settings.recipe(), 1, lm=tiny_lm)
    assert len(work.parts[0]) == 60 and not len(work.test) and work.encoded_test() is None
    assert caplog.messages[-1].endswith(
        "60 rows: 60 to train on, none held out as a test set (evaluation is off), 0 for validation"
    )
    tenth = load_workload(
        settings.recipe().model_copy(update={"test_fraction": 0.1}), 1, lm=tiny_lm
    )
    assert (len(tenth.train), len(tenth.test)) == (55, 5)  # 10% of each class's 12 rounds to 1
    text = tmp_path / "lm.jsonl"
    lines = (f'{{"text": "line {i} of {"plain " * i}text"}}\n' for i in range(10))
    text.write_text("".join(lines), encoding="utf-8")
    assert len(load_dataset(text, 0, label_column=None)[1]) == 0  # unlabelled: none either


def test_another_test_fraction_is_agreed_and_named_at_the_handshake() -> None:
    assert "test_fraction" not in Recipe().agreed_facts()  # the default: fingerprints as before
    assert Recipe(test_fraction=0).agreed_facts()["test_fraction"] == 0
    assert recipe_differences({"test_fraction": "0"}, {}) == (
        "--test-fraction is '0' there, '0.2' here"
    )


def test_simulate_and_lab_refuse_test_fraction_0(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="--test-fraction 0 holds out no test set"):
        tiny_sim_config(tmp_path / "x.jsonl", test_fraction=0)
    with pytest.raises(ValidationError, match="--test-fraction 0 holds out no test set"):
        LabConfig(test_fraction=0)
    assert SimConfig(test_fraction=0.1).test_fraction == 0.1
