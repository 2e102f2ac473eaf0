"""`predict` on rows whose text is empty: every input kind keeps the row's place with an
empty output line, as a .txt file's blank line always did (a data file, a JSON lines
file, JSON lines on stdin were refused whole for one empty text)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from adapter_helpers import in_process_logits, save_trained_tiny
from conftest import CLASS_NAMES, make_synthetic
from typer.testing import CliRunner

from declora.cli.app import app
from declora.cli.predict import read_rows
from declora.node.data_files import DataError

runner = CliRunner()


def _write(tmp_path: Path, name: str, body: str) -> str:
    (tmp_path / name).write_text(body, encoding="utf-8")
    return str(tmp_path / name)


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("rows.csv", "text,label\nfirst,a\n,b\nthird,a\n"),
        ("rows.jsonl", '{"text": "first"}\n{"text": "  "}\n{"text": "third"}\n'),
        ("nulls.jsonl", '{"text": "first"}\n{"text": null}\n{"text": "third"}\n'),
    ],
)
def test_an_empty_text_of_a_data_file_keeps_its_place(tmp_path: Path, name: str, body: str) -> None:
    assert read_rows(_write(tmp_path, name, body), "text", io.StringIO())[0] == [
        "first",
        "",
        "third",
    ]


def test_an_empty_text_on_stdin_json_lines_keeps_its_place() -> None:
    lines = '{"text": "first"}\n{"text": ""}\n\n{"text": "third"}\n'
    assert read_rows("-", "text", io.StringIO(lines))[0] == ["first", "", "", "third"]


def test_only_empty_texts_are_still_refused(tmp_path: Path) -> None:
    for source, stdin in (
        (_write(tmp_path, "e.csv", "text,label\n,a\n  ,b\n"), ""),
        ("-", '{"text": ""}\n'),
    ):
        with pytest.raises(DataError, match="no texts") as err:
            read_rows(source, "text", io.StringIO(stdin))[0]
        assert err.value.hint


def test_predict_writes_an_empty_line_for_an_empty_row(tmp_path: Path) -> None:
    lm, vec = save_trained_tiny(tmp_path / "adapter")
    texts = list(make_synthetic(2, seed=4).texts)
    rows = [{"text": texts[0]}, {"text": ""}, {"text": texts[1]}]
    data = _write(tmp_path, "in.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    res = runner.invoke(app, ["predict", str(tmp_path / "adapter"), "-i", data])
    assert res.exit_code == 0, res.output
    lines = res.stdout.split("\n")
    assert lines[1] == "" and len(lines) == 4, res.stdout
    probs = torch.softmax(in_process_logits(lm, vec, texts), -1)
    assert [lines[0].split("\t")[0], lines[2].split("\t")[0]] == [
        CLASS_NAMES[int(p.argmax())] for p in probs
    ]
    empty = _write(tmp_path, "empty.jsonl", '{"text": ""}\n')
    res = runner.invoke(app, ["predict", str(tmp_path / "adapter"), "-i", empty])
    assert res.exit_code == 2 and res.stderr.startswith("error: "), res.output
    assert "no texts" in res.stderr and "hint: " in res.stderr, res.stderr


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("p.jsonl", '{"prompt": "first"}\n{"prompt": " "}\n{"prompt": "third"}\n'),
        ("n.jsonl", '{"prompt": "first"}\n{"prompt": null}\n{"prompt": "third"}\n'),
        ("p.csv", 'prompt\nfirst\n""\nthird\n'),
    ],
)
def test_generate_keeps_an_empty_prompt_s_place_as_predict_does(
    tmp_path: Path, name: str, body: str
) -> None:
    """generate refused the whole file for one empty prompt of a JSON line or a row."""
    from declora.cli.generate import read_prompts

    assert read_prompts(None, _write(tmp_path, name, body), io.StringIO()) == [
        "first",
        "",
        "third",
    ]


def test_generate_refuses_input_of_only_empty_prompts(tmp_path: Path) -> None:
    from declora.cli.generate import read_prompts

    for name, body in (("e.jsonl", '{"prompt": ""}\n'), ("e.csv", 'prompt\n""\n')):
        with pytest.raises(DataError, match="no prompts") as err:
            read_prompts(None, _write(tmp_path, name, body), io.StringIO())
        assert err.value.hint
