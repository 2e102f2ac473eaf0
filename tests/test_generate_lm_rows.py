"""What a causal-LM adapter trained on (`declora.json`'s `lm_rows`, written from the
workload) picks how `generate` sends a text prompt to a model without a chat template:
rendered as a user turn for conversations, as it is for plain text or no record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_generate_cli import as_text, direct, rows
from typer.testing import CliRunner

from declora.cli.app import app
from declora.node.lm_data import encode_prompt
from declora.node.models import ByteTokenizer
from declora.node.recipe import Recipe
from declora.node.trainer import LoraModel, LoraSpec
from declora.node.workload import load_workload

runner = CliRunner()
LM_ROWS = "lm_rows"  # trainer.LM_ROWS, spelled out: the record's key is the format
PROMPT = "the cat sat on"
STEPS = 10


@pytest.fixture(scope="module")
def lm() -> LoraModel:
    return LoraModel(LoraSpec(model="tiny-llama", task="lm", rank=4, alpha=8, max_length=32))


@pytest.fixture(scope="module")
def vec(lm: LoraModel) -> np.ndarray:
    """Random (non-zero) LoRA factors, so the adapter changes the continuation."""
    return np.random.default_rng(0).normal(0, 0.5, lm.schema.numel).astype(np.float32)


def trained_on(lm: LoraModel, folder: Path, chats: bool) -> None:
    """Read a tiny plain-text or prompt-response file through `load_workload` (which
    sets what `lm` trains on)."""
    if chats:
        data = [{"prompt": f"question {i}?", "response": f"answer {i}"} for i in range(12)]
    else:
        data = [{"text": f"document {i} says the cat sat on mat {i}"} for i in range(12)]
    path = folder / ("chats.jsonl" if chats else "text.jsonl")
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    fmt = "prompt-response" if chats else "text"
    recipe = Recipe(model="tiny-llama", task="lm", data=str(path), data_format=fmt, max_length=32)
    load_workload(recipe, lm=lm)


def generated(adapter: Path, *extra: str) -> str:
    args = ["generate", str(adapter), "-p", PROMPT, "--format", "json", *extra]
    res = runner.invoke(app, [*args, "--max-new-tokens", str(STEPS)])
    assert res.exit_code == 0, res.output
    return str(rows(res.stdout)[0]["completion"])


@pytest.mark.parametrize("chats", [False, True])
def test_the_saved_adapter_records_what_the_lm_trained_on(
    tmp_path: Path, lm: LoraModel, vec: np.ndarray, chats: bool
) -> None:
    trained_on(lm, tmp_path, chats)
    lm.save_adapter(vec, tmp_path / "adapter", {"round": 1})
    info = json.loads((tmp_path / "adapter" / "declora.json").read_text())
    assert info[LM_ROWS] == ("chats" if chats else "text")
    shown = runner.invoke(app, ["inspect", str(tmp_path / "adapter"), "--format", "json"])
    assert json.loads(shown.stdout)[LM_ROWS] == info[LM_ROWS], shown.output


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, lm: LoraModel, vec: np.ndarray) -> Path:
    """Adapters trained on "text", on "chats", and one saved "older" (no record)."""
    folder = tmp_path_factory.mktemp("rows")
    for name, chats in (("text", False), ("chats", True)):
        trained_on(lm, folder, chats)
        lm.save_adapter(vec, folder / name, {})
    lm.lm_rows = None
    lm.save_adapter(vec, folder / "older", {})
    assert LM_ROWS not in json.loads((folder / "older" / "declora.json").read_text())
    return folder


@pytest.fixture
def template_less(
    lm: LoraModel, vec: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """tiny-llama without a chat template: the continuation of the prompt as it is
    ("raw") and of its plain user-turn rendering "text\\n" ("rendered")."""
    monkeypatch.setattr(ByteTokenizer, "has_chat_template", False)
    tok = lm.tokenizer
    raw = as_text(direct(lm, vec, tok.encode([PROMPT])[0], STEPS))
    rendered = as_text(direct(lm, vec, encode_prompt(tok, PROMPT), STEPS))
    assert raw != rendered  # the route does change the continuation
    return {"raw": raw, "rendered": rendered}


@pytest.mark.parametrize("adapter", ["text", "older"])
def test_a_plain_text_or_unrecorded_adapter_gets_the_prompt_as_it_is(
    saved: Path, template_less: dict[str, str], adapter: str
) -> None:
    assert generated(saved / adapter) == template_less["raw"]  # as before 41b1b01


def test_a_chat_trained_adapter_gets_the_plain_user_turn(
    saved: Path, template_less: dict[str, str]
) -> None:
    assert generated(saved / "chats") == template_less["rendered"]
    assert generated(saved / "chats", "--no-chat-template") == template_less["raw"]
