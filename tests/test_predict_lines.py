"""`predict` keeps one output line per input line, and non-UTF-8 stdin is one error line
(for `generate` too), as a file's is."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from adapter_helpers import save_trained_tiny
from conftest import make_synthetic
from test_predict_cli import assert_user_error
from typer.testing import CliRunner

from declora.cli.app import app
from declora.cli.generate import Sampling, run_generate
from declora.cli.predict import run_predict
from declora.node.data_files import DataError
from declora.node.trainer import LoraModel, LoraSpec

runner = CliRunner()
TEXTS = list(make_synthetic(3, seed=4).texts)
LATIN = "café\n".encode("latin-1")


@pytest.fixture(scope="module")
def cls_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lines") / "cls"
    save_trained_tiny(path, steps=2)
    return path


@pytest.fixture(scope="module")
def lm_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = LoraSpec(model="tiny-llama", task="lm", rank=4, alpha=8, max_length=32, seed=0)
    lm = LoraModel(spec, num_labels=2)
    path = tmp_path_factory.mktemp("lines") / "lm"
    lm.save_adapter(np.zeros(lm.schema.numel, np.float32), path, {})
    return path


def predict(adapter: Path, stdin: str, *args: str) -> list[str]:
    res = runner.invoke(app, ["predict", str(adapter), *args], input=stdin)
    assert res.exit_code == 0, res.output
    return res.stdout.split("\n")[:-1]  # every line, blank ones too


def test_blank_lines_keep_their_place_in_text_and_json(cls_adapter: Path, tmp_path: Path) -> None:
    """4 lines in, 4 out (the audit's 4 -> 3): a blank or whitespace line gives an empty
    line (json: its keys, null), the others the predictions of the texts alone."""
    alone = predict(cls_adapter, "\n".join(TEXTS) + "\n")
    lines = [TEXTS[0], "", TEXTS[1], "   ", TEXTS[2]]
    assert predict(cls_adapter, "\n".join(lines) + "\n") == [alone[0], "", alone[1], "", alone[2]]
    txt = tmp_path / "in.txt"  # a file as stdin; \f and U+2028 do not end a line
    txt.write_text(f"{TEXTS[0]}\f x\n\n{TEXTS[1]}\u2028y\n")
    got = predict(cls_adapter, "", "-i", str(txt))
    assert len(got) == 3 and got[1] == "" and all(got[0::2]), got

    rows = [json.loads(line) for line in predict(cls_adapter, "\n".join(lines), "--format", "json")]
    assert [r["text"] for r in rows] == [TEXTS[0], "", TEXTS[1], "", TEXTS[2]]
    assert rows[1] == {"text": "", "label": None, "probability": None, "scores": None}
    assert [r["label"] for r in rows[0::2]] == [line.split("\t")[0] for line in alone]
    jsonl = "\n".join([json.dumps({"text": TEXTS[0]}), "", json.dumps({"text": TEXTS[1]})])
    assert predict(cls_adapter, jsonl) == [alone[0], "", alone[1]]


def test_an_lm_adapter_keeps_blank_lines_too(lm_adapter: Path) -> None:
    rows = [json.loads(line) for line in predict(lm_adapter, "ab\n\ncd\n", "--format", "json")]
    assert rows[1] == {"text": "", "loss": None, "perplexity": None}
    assert [r["text"] for r in rows] == ["ab", "", "cd"] and rows[2]["loss"] > 0
    text = predict(lm_adapter, "ab\n\ncd\n")
    assert len(text) == 3 and text[1] == "" and text[2].count("\t") == 1


def surrogate_stdin() -> io.TextIOWrapper:
    """stdin as Python opens it in the C/POSIX locale or UTF-8 mode: undecodable bytes
    come through as surrogates."""
    return io.TextIOWrapper(io.BytesIO(LATIN), encoding="utf-8", errors="surrogateescape")


def test_surrogate_stdin_is_a_data_error(cls_adapter: Path, lm_adapter: Path) -> None:
    with pytest.raises(DataError, match="<stdin>: not UTF-8 text") as raised:
        run_predict(cls_adapter, "-", "text", "text", io.StringIO(), surrogate_stdin())
    assert "iconv" in raised.value.hint
    with pytest.raises(DataError, match="<stdin>: not UTF-8 text"):
        run_generate(lm_adapter, None, None, io.StringIO(), surrogate_stdin(), sampling=Sampling())
    stream = io.StringIO(LATIN.decode("utf-8", "surrogateescape"))  # a text stream, no buffer
    with pytest.raises(DataError, match="<stdin>: not UTF-8 text"):
        run_predict(cls_adapter, "-", "text", "text", io.StringIO(), stream)


@pytest.mark.parametrize("command", ["predict", "generate"])
def test_latin1_on_real_stdin_is_one_error_line(
    command: str, cls_adapter: Path, lm_adapter: Path
) -> None:
    adapter = cls_adapter if command == "predict" else lm_adapter
    env = {**os.environ, "PYTHONUTF8": "1"}  # what a C locale gives: surrogateescape
    res = subprocess.run(
        [sys.executable, "-m", "declora.cli", command, str(adapter)],
        input=LATIN,
        capture_output=True,
        env=env,
        timeout=120,
    )
    err = res.stderr.decode()
    assert res.returncode == 2 and "Traceback" not in err, err
    assert err.splitlines()[0].startswith("error: <stdin>: not UTF-8 text"), err
    assert err.splitlines()[1].startswith("hint: "), err


def test_latin1_through_the_runner_is_one_error_line(cls_adapter: Path) -> None:
    res = runner.invoke(app, ["predict", str(cls_adapter)], input=LATIN)
    assert_user_error(res, "<stdin>: not UTF-8 text")
