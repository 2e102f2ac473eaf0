"""Label values and label counts that used to be read silently wrong, or blamed on the
wrong thing, are normalised (with a warning) or refused naming what differs.

- 2 and 2.0 (JSON, parquet floats, a CSV with "2.0") are one class "2", in the data
  and in --labels; NaN, null and empty labels are refused with their row;
- causal-LM prompt/response/instruction values that are lists, mappings or booleans
  are refused with their row (chat turns get a hint to the `messages` format);
- a base folder whose classification head has another number of labels, and an
  adapter whose recorded labels disagree with its head, name both counts.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import save_word_tokenizer

from declora.node.data import declared_labels, label_name, load_dataset, load_file
from declora.node.data_files import DataError
from declora.node.lm_data import LmFormat

WARNING = "whole-number label(s) written as decimals are read as integers"


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def texts(n: int) -> list[str]:
    return [f"text number {i} about {'abcdefgh'[i % 8] * 3}" for i in range(n)]


# --------------------------------------------------------------------------- numeric labels


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (2, "2"),
        (2.0, "2"),
        ("2.0", "2"),
        (" 2. ", "2"),
        ("-3.00", "-3"),
        (np.float32(4.0), "4"),
        (2.5, "2.5"),
        ("2.50", "2.50"),  # only whole numbers are normalised
        ("02", "02"),
        ("1e3", "1e3"),
        (True, "True"),
        ("Tech", "Tech"),
    ],
)
def test_label_name_makes_whole_floats_integers_only(value: object, name: str) -> None:
    assert label_name(value) == name


def test_json_2_and_2_0_are_one_class_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    labels: list[object] = [1, 2, 2.0, 1.0, 2]
    rows = [{"text": t, "label": v} for t, v in zip(texts(5), labels, strict=True)]
    with caplog.at_level(logging.WARNING, logger="declora.node.data"):
        data = load_file(write_rows(tmp_path / "d.jsonl", rows))
    assert data.label_names == ("1", "2")
    assert data.labels is not None and data.labels.tolist() == [0, 1, 1, 0, 1]
    assert WARNING in caplog.text and "'2.0' -> '2'" in caplog.text


def test_csv_2_and_2_0_are_one_class(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\na a,2\nb b,2.0\nc c,1\nd d,1.0\n")
    with caplog.at_level(logging.WARNING, logger="declora.node.data"):
        data = load_file(path)
    assert data.label_names == ("1", "2")
    assert data.labels is not None and data.labels.tolist() == [1, 1, 0, 0]
    assert "'2.0' -> '2'" in caplog.text and "'1.0' -> '1'" in caplog.text


def test_integer_labels_are_not_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [{"text": t, "label": i % 2} for i, t in enumerate(texts(4))]
    with caplog.at_level(logging.WARNING, logger="declora.node.data"):
        data = load_file(write_rows(tmp_path / "d.jsonl", rows))
    assert data.label_names == ("0", "1")
    assert WARNING not in caplog.text


def test_parquet_float_labels_match_declared_integer_labels(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "d.parquet"
    n = 20
    frame = {"text": texts(n), "label": [float(i % 3) for i in range(n)]}
    pd.DataFrame(frame).to_parquet(path)
    train, _ = load_dataset(path, labels=["0", "1", "2"], dedupe=False)
    assert train.label_names == ("0", "1", "2")
    # the same file declared with decimals: --labels 0.0,1.0,2.0 is the same set
    train2, _ = load_dataset(path, labels=["0.0", "1.0", "2.0"], dedupe=False)
    assert train2.label_names == ("0", "1", "2")
    assert np.array_equal(train.labels, train2.labels)  # type: ignore[arg-type]


def test_declared_labels_normalise_and_refuse_2_and_2_0_twice() -> None:
    assert declared_labels(["1.0", "2"]) == ("1", "2")
    with pytest.raises(DataError, match=r"names \['2'\] more than once"):
        declared_labels(["1", "2", "2.0"])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"text": "a", "label": 1}\n{"text": "b", "label": NaN}\n',
         "row 2 has the label 'nan' in column 'label': a missing value"),
        ('{"text": "a", "label": 1}\n{"text": "b", "label": null}\n',
         "row 2 has no value in column 'label' (missing, null or NaN)"),
        ('{"text": "a", "label": "x"}\n{"text": "b", "label": "  "}\n',
         "row 2 has an empty label in column 'label'"),
    ],
)  # fmt: skip
def test_missing_labels_in_json_are_refused_with_their_row(
    tmp_path: Path, body: str, message: str
) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(body)
    with pytest.raises(DataError) as info:
        load_file(path)
    assert message in str(info.value) and "hint:" in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("", "row 3 has an empty label in column 'label'"),
        ("NaN", "row 3 has the label 'NaN' in column 'label': a missing value"),
        ("nan", "row 3 has the label 'nan' in column 'label': a missing value"),
    ],
)
def test_missing_labels_in_csv_are_refused_with_their_row(
    tmp_path: Path, cell: str, message: str
) -> None:
    path = tmp_path / "d.csv"
    path.write_text(f"text,label\na a,1\nb b,2\nc c,{cell}\n")
    with pytest.raises(DataError) as info:
        load_file(path)
    assert message in str(info.value), str(info.value)


def test_nan_in_a_parquet_label_column_is_refused_with_its_row(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "d.parquet"
    pd.DataFrame({"text": texts(4), "label": [1.0, 2.0, float("nan"), 2.0]}).to_parquet(path)
    with pytest.raises(DataError, match=r"row 3 has no value in column 'label' \(missing, null"):
        load_file(path)


# --------------------------------------------------------------------------- LM values


CONV_TURNS = [{"role": "user", "content": "q"}]


@pytest.mark.parametrize(
    ("row", "message", "hint"),
    [
        ({"prompt": ["a", "b"], "response": "r"}, "row 2: the prompt in 'prompt' is a list",
         "write the prompt as one string"),
        ({"prompt": "p", "response": {"a": 1}}, "row 2: the response in 'response' is a dict",
         "write the response as one string"),
        ({"prompt": CONV_TURNS, "response": "r"}, "row 2: the prompt in 'prompt' is a list",
         "'messages' column"),
        ({"prompt": "p", "response": True}, "row 2: the response in 'response' is the boolean",
         "write the response as a string"),
    ],
)  # fmt: skip
def test_lm_values_that_are_no_text_are_refused_with_their_row(
    tmp_path: Path, row: dict[str, Any], message: str, hint: str
) -> None:
    good = {"prompt": "p", "response": "r"}
    path = write_rows(tmp_path / "d.jsonl", [good, row, good])
    with pytest.raises(DataError) as info:
        load_dataset(path, label_column=None, examples=LmFormat(), dedupe=False)
    text = str(info.value)
    assert message in text and hint in text, text


def test_a_conversational_prompt_mixed_with_texts_is_refused(tmp_path: Path) -> None:
    """TRL's conversational prompt-completion is read (tests/test_lm_data.py); a file
    mixing it with plain-text prompts is refused with the row."""
    turns = {"prompt": CONV_TURNS, "completion": [{"role": "assistant", "content": "a"}]}
    path = write_rows(tmp_path / "d.jsonl", [turns, {"prompt": "p", "completion": "c"}])
    with pytest.raises(DataError, match=r"row 2: the prompt in 'prompt' is not a list of turns"):
        load_dataset(path, label_column=None, examples=LmFormat(), dedupe=False)


def test_a_boolean_text_is_refused(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "d.jsonl", [{"text": "a doc"}, {"text": True}])
    with pytest.raises(DataError, match=r"row 2: the text in column 'text' is the boolean true"):
        load_dataset(path, label_column=None, examples=LmFormat(), dedupe=False)


def test_content_parts_in_messages_are_named(tmp_path: Path) -> None:
    turns = [{"role": "user", "content": [{"type": "text", "text": "q"}]},
             {"role": "assistant", "content": "a"}]  # fmt: skip
    path = write_rows(tmp_path / "d.jsonl", [{"messages": turns}] * 3)
    with pytest.raises(
        DataError, match=r"row 1: turn 1 \(user\) has no text 'content' \(it is a list"
    ):
        load_dataset(path, label_column=None, examples=LmFormat(), dedupe=False)


def test_supported_lm_formats_still_read(tmp_path: Path) -> None:
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    for name, rows in {
        "messages": [{"messages": chat}] * 4,
        "pair": [{"prompt": f"p{i}", "completion": 7} for i in range(4)],  # numbers: text
        "instruction": [{"instruction": "i", "input": None, "output": "o"}] * 4,
        "text": [{"text": t} for t in texts(4)],
    }.items():
        train, test = load_dataset(
            write_rows(tmp_path / f"{name}.jsonl", rows),
            label_column=None, examples=LmFormat(), dedupe=False,
        )  # fmt: skip
        assert len(train) + len(test) == 4, name


# --------------------------------------------------------------------------- label counts


def _classifier_folder(path: Path, num_labels: int) -> Path:
    """A tiny BERT sequence classifier saved with a head for `num_labels` labels."""
    from transformers import AutoModelForSequenceClassification, BertConfig

    cfg = BertConfig(
        vocab_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, num_labels=num_labels,
        id2label={i: f"class-{i}" for i in range(num_labels)},
    )  # fmt: skip
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(path)
    save_word_tokenizer(path)
    return path


def test_a_base_with_another_head_size_names_both_counts(tmp_path: Path) -> None:
    from declora.node.model_source import ModelError
    from declora.node.models import HeadSizeError, load_base

    folder = _classifier_folder(tmp_path / "base", 3)
    with pytest.raises(HeadSizeError) as info:
        load_base(str(folder), "cls", 5, seed=0)
    text = str(info.value)
    assert isinstance(info.value, ModelError)  # the CLI's user error for start
    assert "head for 3 labels ['class-0', 'class-1', 'class-2']" in text, text
    assert "but 5 classes are to be trained" in text and "--labels" in text, text
    assert "\n" not in text
    base = load_base(str(folder), "cls", 3, seed=0)  # the same count loads
    assert base.model.config.num_labels == 3


@pytest.fixture(scope="module")
def saved_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from adapter_helpers import save_trained_tiny

    path = tmp_path_factory.mktemp("adapter") / "adapter"
    save_trained_tiny(path, steps=1)
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": ["alpha", "bravo", "charlie"]},
         "lists 3 labels ['alpha', 'bravo', 'charlie'] but num_labels 5"),
        ({"num_labels": 3}, "lists 5 labels"),
        ({"num_labels": 3, "labels": ["alpha", "bravo", "charlie"]},
         "the saved classification head has 5 outputs but declora.json records 3 labels"),
    ],
)  # fmt: skip
def test_an_adapter_whose_labels_disagree_does_not_blame_the_base(
    tmp_path: Path, saved_adapter: Path, change: dict[str, Any], message: str
) -> None:
    from declora.node.adapter_io import AdapterError, load_adapter

    folder = tmp_path / "adapter"
    shutil.copytree(saved_adapter, folder)
    info = json.loads((folder / "declora.json").read_text())
    (folder / "declora.json").write_text(json.dumps({**info, **change}))
    with pytest.raises(AdapterError) as raised:
        load_adapter(folder)
    text = str(raised.value)
    assert message in text and "base" not in text.split("(hint")[0], text


def test_recorded_differences_name_the_label_sets(saved_adapter: Path) -> None:
    from conftest import CLASS_NAMES, TINY_SPEC

    from declora.node.adapter_io import recorded_differences
    from declora.node.trainer import LoraModel

    same = LoraModel(TINY_SPEC, label_names=CLASS_NAMES)
    assert recorded_differences(saved_adapter, same) == []
    fewer = LoraModel(TINY_SPEC, label_names=CLASS_NAMES[:3])
    assert recorded_differences(saved_adapter, fewer) == [
        f"labels: 5 {list(CLASS_NAMES)} there, 3 {list(CLASS_NAMES[:3])} here"
    ]


def test_a_classlabel_id_outside_its_names_is_refused(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    rows = {"text": texts(4), "label": [0, 1, -1, 1]}  # -1: an unlabelled row
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(DataError, match=r"row 3 has the label id -1 .* 0\.\.1 \(-1 marks"):
        load_file(tmp_path / "saved")
    ok = {"text": texts(4), "label": [0, 1, 0, 1]}
    datasets.Dataset.from_dict(ok, features=features).save_to_disk(str(tmp_path / "ok"))
    assert load_file(tmp_path / "ok").label_names == ("neg", "pos")


def test_a_nan_text_is_refused_not_read_as_nan(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a doc", "label": "x"}\n{"text": NaN, "label": "y"}\n')
    with pytest.raises(DataError, match=r"row 2 has no value in column 'text' \(missing, null"):
        load_file(path)  # a NaN among strings: read as null
    path.write_text('{"text": 1.5, "label": "x"}\n{"text": NaN, "label": "y"}\n')
    with pytest.raises(DataError, match=r"row 2 has no value in column 'text' \(NaN\)"):
        load_file(path)  # among numbers: read as a float NaN, once the text "nan"
    lm = tmp_path / "p.jsonl"
    lm.write_text('{"prompt": "p", "response": 1.5}\n{"prompt": "p", "response": NaN}\n')
    with pytest.raises(DataError, match=r"row 2 has no response in column 'response' \(NaN\)"):
        load_dataset(lm, label_column=None, examples=LmFormat(), dedupe=False)
