"""What a new user's own data meets: a folder of class folders of .txt files gets a
command that writes it as JSON Lines (the hint named only data files before), and the
unknown-roles warning names every role that is known (it named four of seven)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from declora.node.data import load_dataset
from declora.node.data_error import DataError
from declora.node.data_files import read_splits
from declora.node.lm_data import LmFormat
from declora.node.lm_data.rows import KNOWN_ROLES


def test_class_folders_get_a_command_that_makes_them_data(tmp_path: Path) -> None:
    """`--data news/` holding news/sport/1.txt ...: the hint's command, run in a shell,
    writes one row a file labelled by its folder, and that file reads."""
    root = tmp_path / "my news"  # a space: the command quotes the folder
    files = {"sport": ["goal in the match", "the coach left"], "tech": ["new chip"]}
    for label, texts in files.items():
        (root / label).mkdir(parents=True)
        for i, text in enumerate(texts):
            (root / label / f"{i}.txt").write_text(text)
    with pytest.raises(DataError) as err:
        read_splits(root)
    hint = err.value.hint or ""
    assert "class folders of .txt files" in hint
    command = hint.split("pass that file: ", 1)[1].replace("python3 ", f"{sys.executable} ", 1)
    subprocess.run(command, shell=True, cwd=tmp_path, check=True, timeout=60)
    rows = [json.loads(line) for line in (tmp_path / "data.jsonl").read_text().splitlines()]
    assert rows == [
        {"text": "goal in the match", "label": "sport"},
        {"text": "the coach left", "label": "sport"},
        {"text": "new chip", "label": "tech"},
    ]
    [(_, table)] = read_splits(tmp_path / "data.jsonl")
    assert table.num_rows == 3


def test_a_folder_without_class_folders_keeps_the_data_file_hint(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as err:
        read_splits(tmp_path)
    assert "class folders" not in (err.value.hint or "")


def test_the_roles_warning_names_every_known_role(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A chat with a system turn and a `narrator` turn: the warning names `narrator`
    and lists each role that is read without a warning (developer, function, ipython
    were left out, as if they were unknown too)."""
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of Peru?"},
        {"role": "narrator", "content": "(thinking)"},
        {"role": "assistant", "content": "Lima."},
    ]
    path = tmp_path / "chat.jsonl"
    rows = [{"messages": turns, "id": i} for i in range(5)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with caplog.at_level(logging.WARNING):
        load_dataset(path, label_column=None, examples=LmFormat(), dedupe=False)
    [warning] = [r.getMessage() for r in caplog.records if "'narrator'" in r.getMessage()]
    said = warning.split(" are not ", 1)[1].split(":", 1)[0]
    assert all(role in said for role in KNOWN_ROLES), said


def test_a_gpt2_folder_trains_without_transformers_loss_type_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GPT-2's class name names no loss: transformers warned "`loss_type=None` was set
    in the config but it is unrecognized" into the node's log at its first step, though
    the user set nothing; the loss is the causal LM's either way."""
    import torch
    from test_model_checks import configs, hf_folder
    from transformers import modeling_utils

    from declora.node.models import load_base

    said: list[str] = []
    monkeypatch.setattr(modeling_utils.logger, "warning_once", lambda msg, *a: said.append(msg))
    base = load_base(str(hf_folder(tmp_path / "gpt2", configs()["gpt2"])), "lm", 0, seed=0)
    ids = torch.tensor([[3, 4, 5, 2]])
    loss = base.model(input_ids=ids, labels=ids).loss
    assert torch.isfinite(loss)
    assert not [m for m in said if "loss_type" in m], said


def test_a_cut_too_small_to_show_is_not_called_none(
    tiny_lm: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """One text a token over --max-length among a thousand short ones: the warning said
    "1 of 1001 texts ... are truncated ... (0.0% of the tokens are dropped)"."""
    import numpy as np

    from declora.node.data import TextDataset

    texts = ("ab",) * 1000 + ("a" * tiny_lm.spec.max_length,)  # with its two marks: over
    data = TextDataset(texts, np.zeros(len(texts), dtype=np.int64), ("x", "y"), name="train")
    with caplog.at_level(logging.WARNING):
        tiny_lm.encode(data, warn_cut=True)
    [said] = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert "1 of 1001 texts" in said and "(under 0.1% of the tokens are dropped" in said


def test_a_european_excel_csv_is_read_as_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Excel where `;` is the list separator writes `;` even for 'CSV UTF-8': a BOM,
    CRLF, a `;` after every line's last value, a quoted text over two lines. It was
    refused ("the file looks semicolon-separated") with a hint that such an Excel
    cannot follow; now it reads, and one line says how."""
    lines = ["headline;category;"]
    lines += [f"shares fell {i};business;" for i in range(5)]
    lines += [f"a goal in match {i};sport;" for i in range(4)]
    lines.append('"Dear reader;\r\nthe final;";sport;')
    path = tmp_path / "sheet.csv"
    path.write_bytes("\ufeff".encode() + "\r\n".join(lines).encode() + b"\r\n")
    with caplog.at_level(logging.INFO):
        train, _ = load_dataset(path, 0.0, "category", text_column="headline", dedupe=False)
    assert train.label_names == ("business", "sport") and len(train) == 10
    assert "Dear reader;\r\nthe final;" in train.texts
    assert any("read semicolon-separated" in r.getMessage() for r in caplog.records)


def test_a_comma_in_the_header_keeps_the_comma(tmp_path: Path) -> None:
    """Guard: a comma-separated file whose texts hold `;` stays comma-separated."""
    path = tmp_path / "c.csv"
    path.write_text("text,label\na;b,x\nc;d,y\ne;f,x\ng;h,y\n")
    train, _ = load_dataset(path, 0.0, dedupe=False)
    assert sorted(train.texts) == ["a;b", "c;d", "e;f", "g;h"]


def test_predict_on_a_saved_train_test_pair_names_its_splits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`predict --input` a DatasetDict folder writes a line for each row of every split,
    train then test: it did so without a word, so 70 lines came back for a 10-row test
    split; now one warning names the splits, their order and their rows."""
    import datasets
    from adapter_helpers import save_trained_tiny
    from typer.testing import CliRunner

    from declora.cli.app import app

    adapter = tmp_path / "adapter"
    save_trained_tiny(adapter, steps=1)  # the lines, not the answers, are checked
    rows = {"text": ["aaa abba", "ccc cdc", "eee efe"], "label": ["alpha", "bravo", "charlie"]}
    train, test = datasets.Dataset.from_dict(rows), datasets.Dataset.from_dict(rows).select([0])
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "pair"))
    with caplog.at_level(logging.WARNING, logger="declora.cli.predict"):
        res = CliRunner().invoke(app, ["predict", str(adapter), "-i", str(tmp_path / "pair")])
    assert res.exit_code == 0, res.output
    assert len(res.stdout.splitlines()) == 4
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "in this order: [train] (3 rows), [test] (1 row)" in said, said
