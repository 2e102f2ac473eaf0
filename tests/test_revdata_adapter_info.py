"""A damaged or hand-edited declora.json is one `error:` line with a hint from predict
(exit 2), never a traceback: not UTF-8, not an object, a label count or a spec value
of the wrong type or out of its option's bounds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from adapter_helpers import save_trained_tiny
from typer.testing import CliRunner

from declora.cli.app import app
from declora.node.adapter_card import DECLORA_INFO


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("info") / "adapter"
    save_trained_tiny(path, steps=1)
    return path


def _spec(info: dict[str, Any], **values: Any) -> bytes:
    return json.dumps({**info, "spec": {**info["spec"], **values}}).encode()


@pytest.mark.parametrize(
    ("name", "edit", "needle"),
    [
        ("binary", lambda info: b"\xff\xfe\x00 garbage", "is not valid JSON: not UTF-8"),
        ("list", lambda info: b"[]", "is a JSON list, not an object"),
        ("deep", lambda info: b"[" * 100_000 + b"]" * 100_000, "is not valid JSON: nested too"),
        (
            "labels",
            lambda info: json.dumps({**info, "num_labels": "many"}).encode(),
            "num_labels 'many' is no label count",
        ),
        ("rank", lambda info: _spec(info, rank="x"), "bad spec: rank 'x'"),
        ("huge", lambda info: _spec(info, rank=10**9), "bad spec: rank 1000000000"),
        ("dropout", lambda info: _spec(info, lora_dropout=[0.1]), "bad spec: lora_dropout"),
    ],
)
def test_a_damaged_declora_json_is_one_error_line(
    saved: Path, tmp_path: Path, name: str, edit: Any, needle: str
) -> None:
    folder = tmp_path / name
    shutil.copytree(saved, folder)
    info = json.loads((saved / DECLORA_INFO).read_text())
    (folder / DECLORA_INFO).write_bytes(edit(info))
    res = CliRunner().invoke(app, ["predict", str(folder)], input="some text\n")
    assert res.exit_code == 2, (res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and needle in lines[0], lines
    assert lines[1].startswith("hint: ") and "save the adapter again" in lines[1], lines
    assert "Traceback" not in res.output


def test_an_intact_declora_json_still_predicts(saved: Path) -> None:
    res = CliRunner().invoke(app, ["predict", str(saved)], input="some text\n")
    assert res.exit_code == 0 and len(res.stdout.splitlines()) == 1, res.output


@pytest.mark.parametrize(
    "raw", [b"[]", b'[["spec", 1]]', b"\xff\xfe\x00 garbage", b"[" * 100_000 + b"]" * 100_000]
)
def test_inspect_refuses_a_declora_json_that_is_no_object(
    saved: Path, tmp_path: Path, raw: bytes
) -> None:
    """A list was read as no record at all ('not written by declora'), a list of pairs
    as a dict; text that is not UTF-8 had no hint."""
    folder = tmp_path / "adapter"
    shutil.copytree(saved, folder)
    (folder / DECLORA_INFO).write_bytes(raw)
    res = CliRunner().invoke(app, ["inspect", str(folder)])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith(f"error: {folder / DECLORA_INFO}"), lines
    assert lines[1].startswith("hint: ") and "save the adapter again" in lines[1], lines
