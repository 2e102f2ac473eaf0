"""`generate` on line input (.txt, .jsonl, stdin) writes one output line per input line,
as `predict` does, so `paste prompts.txt out.txt` lines them up: a blank line is no
prompt and gives an empty line (json: its keys with null values), and the context
refusal's "prompt N" is line N. It skipped blank lines, shifting every later output."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from declora.cli.generate import Sampling, read_prompts, run_generate
from declora.node.data_files import DataError
from declora.node.trainer import LoraModel, LoraSpec

SAMPLING = Sampling(max_new_tokens=4)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = LoraSpec(model="tiny-llama", task="lm", rank=4, alpha=8, max_length=32, seed=0)
    lm = LoraModel(spec)
    vec = np.random.default_rng(0).normal(0, 0.5, lm.schema.numel).astype(np.float32)
    path = tmp_path_factory.mktemp("gen") / "adapter"
    lm.save_adapter(vec, path, {})
    return path


def generate(adapter: Path, source: str, fmt: str = "text", stdin: str = "") -> list[str]:
    out = io.StringIO()
    run_generate(adapter, None, source, out, io.StringIO(stdin), sampling=SAMPLING, fmt=fmt)
    return out.getvalue().split("\n")[:-1]


def test_a_blank_line_keeps_its_place(adapter: Path, tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("one\n\n  \ntwo\n")
    alone = [generate(adapter, "-", stdin=p)[0] for p in ("one", "two")]
    for source, stdin in ((str(tmp_path / "p.txt"), ""), ("-", "one\n\n  \ntwo\n")):
        lines = generate(adapter, source, stdin=stdin)
        assert len(lines) == 4
        assert lines[1:3] == ["", ""]
        assert [lines[0], lines[3]] == alone
    rows = [json.loads(line) for line in generate(adapter, str(tmp_path / "p.txt"), "json")]
    assert [r["prompt"] for r in rows] == ["one", "", "", "two"]
    assert rows[1] == {"prompt": "", "completion": None, "tokens": None, "stop": None}
    assert rows[3]["tokens"] and rows[3]["stop"] in ("eos", "length")


def test_jsonl_blank_lines_keep_their_place_too(adapter: Path, tmp_path: Path) -> None:
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "one"}) + "\n\n" + json.dumps(chat))
    rows = [json.loads(line) for line in generate(adapter, str(tmp_path / "p.jsonl"), "json")]
    assert [r["completion"] is None for r in rows] == [False, True, False]
    assert rows[2]["prompt"] == chat["messages"]


def test_the_context_refusal_names_the_line(adapter: Path, tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("short\n\n" + "x" * 8300 + "\n")
    with pytest.raises(DataError, match=r"^prompt 3 is \d+ tokens"):
        generate(adapter, str(tmp_path / "p.txt"))


def test_input_of_only_blank_lines_is_still_refused(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("\n  \n")
    with pytest.raises(DataError, match="no prompts"):
        read_prompts(None, str(tmp_path / "p.txt"), io.StringIO())
