"""What `load_workload` says or refuses about a user's data: the rows a node trains and
evaluates on (one log line), a label column that is a score or an id, a
--validation-fraction that holds out no row; and a config file that spells one option
both ways (`read_config_file`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import make_synthetic, tiny_sim_config, write_jsonl

from declora.node.config_file import ConfigFileError, read_config_file
from declora.node.data_files import DataError
from declora.node.simulator import SimConfig
from declora.node.trainer import LoraModel
from declora.node.workload import load_workload

LOGGER = "declora.node.workload"


def rows_file(path: Path, labels: list[object], extra: dict[str, object] | None = None) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i, label in enumerate(labels):
            row = {"text": f"row {i} words {'abcdefgh'[i % 8] * (1 + i % 5)}", "label": label}
            fh.write(json.dumps({**row, **(extra or {}), "id": i}) + "\n")
    return path


def test_the_data_line_gives_train_test_and_validation_rows(
    tmp_path: Path, tiny_lm: LoraModel, caplog: pytest.LogCaptureFixture
) -> None:
    data = write_jsonl(make_synthetic(60, seed=3), tmp_path / "sixty.jsonl")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        load_workload(tiny_sim_config(data, validation_fraction=0.0).recipe(), 1, lm=tiny_lm)
    # 20% of the file (stratified: 2 of each class's 12) is the test set a node's eval lines score
    line = f"DATA {data}: 60 rows: 50 to train on, 10 held out as the test set of the eval "
    assert caplog.messages[-1] == line + "lines, 0 for validation"
    caplog.clear()
    cfg = tiny_sim_config(data, validation_fraction=0.25, max_eval=5)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        work = load_workload(cfg, 2, lm=tiny_lm)
    assert len(work.validation_rows) == 12 and sum(map(len, work.parts)) == 38
    assert caplog.messages[-1] == (
        f"DATA {data}: 60 rows: 38 to train on in 2 shares of 19-19, 10 held out as the test "
        "set of the eval lines, 5 of them scored, 12 for validation"
    )


def test_a_label_column_of_singletons_is_refused(tmp_path: Path, tiny_lm: LoraModel) -> None:
    scores = rows_file(tmp_path / "scores.jsonl", [round(0.37 * i, 3) for i in range(60)])
    with pytest.raises(DataError, match=r"60 distinct labels in 60 rows, 60 of them") as err:
        load_workload(tiny_sim_config(scores).recipe(), 1, lm=tiny_lm)
    assert err.value.hint == (
        "is --label-column the right column? a classifier needs several rows per label"
    )
    ids = rows_file(tmp_path / "ids.jsonl", ["a", "b", "c"] * 20)
    with pytest.raises(DataError, match=r"column 'id' has 60 distinct labels"):
        load_workload(tiny_sim_config(ids, label_column="id").recipe(), 1, lm=tiny_lm)
    load_workload(tiny_sim_config(ids).recipe(), 1, lm=tiny_lm)  # its label column: fine


def test_small_real_label_sets_pass(tmp_path: Path, tiny_lm: LoraModel) -> None:
    few = 10  # every class one row, but only a few classes (at most 10)
    ok = [
        list(range(few)),
        [i // 2 for i in range(40)],  # 20 classes of two rows
        # 21 classes, 10 of them singletons: not more than half
        list(range(10)) + [10 + i // 3 for i in range(33)],
    ]
    for n, labels in enumerate(ok):
        work = load_workload(
            tiny_sim_config(rows_file(tmp_path / f"{n}.jsonl", labels)), 1, lm=tiny_lm
        )
        assert work.train.num_labels == len(set(labels))
    over = list(range(11)) + [11 + i // 3 for i in range(30)]  # 21 classes, 11 single
    with pytest.raises(DataError, match="21 distinct labels in 41 rows, 11 of them"):
        load_workload(tiny_sim_config(rows_file(tmp_path / "over.jsonl", over)), 1, lm=tiny_lm)


def test_a_validation_fraction_that_holds_out_no_row(
    tmp_path: Path, tiny_lm: LoraModel, caplog: pytest.LogCaptureFixture
) -> None:
    data = write_jsonl(make_synthetic(60, seed=3), tmp_path / "sixty.jsonl")
    chosen = tiny_sim_config(data, validation_fraction=0.02)  # 0.02 x 25 rounds to 0
    with pytest.raises(DataError, match=r"0\.02 holds out no row: the largest share has 25") as err:
        load_workload(chosen, 2, lm=tiny_lm)
    assert err.value.hint == "use --validation-fraction 0.03 or more (one row of 25), or 0 for none"
    assert (
        len(
            load_workload(
                chosen.model_copy(update={"validation_fraction": 0.03}), 2, lm=tiny_lm
            ).validation_rows
        )
        == 2
    )
    # a caller's default (simulate's 0.1) on shares too small for it: said, not refused
    tiny = write_jsonl(make_synthetic(20, seed=3), tmp_path / "twenty.jsonl")
    default = SimConfig.model_validate(
        tiny_sim_config(tiny).model_dump(exclude={"validation_fraction"})
    )
    assert default.validation_fraction == 0.1
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        work = load_workload(default, 4, lm=tiny_lm)
    assert not len(work.validation_rows)
    assert "0.1 holds out no row: the largest share has 4" in caplog.text
    assert "going on without validation" in caplog.text


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("both.toml", 'text-column = "a"\ntext_column = "b"\n'),
        ("both.yaml", "text_column: a\ntext-column: b\n"),
        ("both.json", '{"text-column": "a", "text_column": "b"}'),
    ],
)
def test_a_config_file_spelling_an_option_both_ways_is_refused(
    tmp_path: Path, name: str, text: str
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigFileError, match=r"keys '(text-column|text_column)' and '") as err:
        read_config_file(path)
    assert "'text-column'" in err.value.message and "'text_column'" in err.value.message
    assert "--text-column" in err.value.message
    one = tmp_path / "one.toml"
    one.write_text('text-column = "a"\nlabel_column = "b"\n', encoding="utf-8")
    assert read_config_file(one) == {"text_column": "a", "label_column": "b"}


def test_a_small_share_of_a_many_class_swarm_passes_with_its_labels(
    tmp_path: Path, tiny_lm: LoraModel
) -> None:
    """With --labels (a swarm of per-node files) one node's own share may hold most of
    the classes once: not refused as a score column (labels outside the set are)."""
    share = [f"intent{i}" for i in range(30)] + [f"intent{30 + i // 3}" for i in range(45)]
    data = rows_file(tmp_path / "shard.jsonl", share)
    names = tuple(f"intent{i}" for i in range(150))
    with pytest.raises(DataError, match="45 distinct labels in 75 rows, 30 of them"):
        load_workload(tiny_sim_config(data).recipe(), 1, lm=tiny_lm)
    work = load_workload(tiny_sim_config(data, labels=names).recipe(), 1, lm=tiny_lm)
    assert work.train.num_labels == 150
