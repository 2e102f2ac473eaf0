"""User errors that cliuser's patches made specific: a NaN learning rate, a folder
given as the labels or config file, and a --target port out of range."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from declora.cli.client import target_problem
from declora.node.config_file import ConfigFileError, read_config_file
from declora.node.data_error import DataError
from declora.node.data_labels import read_label_file
from declora.node.recipe import TrainingRecipe


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_learning_rate_that_is_not_finite_is_named_so(value: float) -> None:
    with pytest.raises(ValidationError, match="finite number"):
        TrainingRecipe(lr=value)


def test_a_folder_given_as_the_labels_file_is_named_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a folder"):
        read_label_file(tmp_path)


def test_a_folder_given_as_the_config_file_is_named_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "node.toml"
    folder.mkdir()
    with pytest.raises(ConfigFileError, match="is a folder, not a file"):
        read_config_file(folder)


@pytest.mark.parametrize("target", ["127.0.0.1:99999", "[::1]:0", "host:65536"])
def test_a_target_port_out_of_range_is_named(target: str) -> None:
    problem = target_problem(target)
    assert problem is not None and "is not in 1-65535" in problem, problem


def test_a_target_that_is_not_host_port_keeps_the_general_message() -> None:
    problem = target_problem("bad host")
    assert problem is not None and "must be host:port" in problem, problem
