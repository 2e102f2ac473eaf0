"""`declora-node predict` and `declora-node export` on a trained tiny-bert adapter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from adapter_helpers import in_process_logits, save_trained_tiny
from conftest import CLASS_NAMES, make_synthetic
from typer.testing import CliRunner, Result

from declora.cli.app import app
from declora.node.trainer import LoraModel, LoraSpec

runner = CliRunner()
TEXTS = list(make_synthetic(3, seed=4).texts)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoraModel, np.ndarray, Path]:
    path = tmp_path_factory.mktemp("cli") / "adapter"
    lm, vec = save_trained_tiny(path)
    return lm, vec, path


def expected(lm: LoraModel, vec: np.ndarray, texts: list[str]) -> list[tuple[str, float]]:
    probs = torch.softmax(in_process_logits(lm, vec, texts), -1)
    return [(CLASS_NAMES[int(p.argmax())], float(p.max())) for p in probs]


def parse_text_lines(out: str) -> list[tuple[str, float]]:
    rows = [line.split("\t") for line in out.strip().splitlines()]
    return [(label, float(prob)) for label, prob in rows]


def assert_user_error(res: Result, needle: str) -> None:
    """Exit 2 and one line `error: ...` on stderr naming `needle`, perhaps a `hint: ...`
    line after it (never inline); no traceback."""
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    lines = err.splitlines()
    assert err.startswith("error: ") and len(lines) in (1, 2), err
    assert len(lines) == 1 or lines[1].startswith("hint: "), err
    assert needle in lines[0] and "(hint:" not in lines[0], err
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_predict_a_jsonl_file(saved: tuple[LoraModel, np.ndarray, Path], tmp_path: Path) -> None:
    lm, vec, path = saved
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(TEXTS)))
    res = runner.invoke(app, ["predict", str(path), "--input", str(data)])
    assert res.exit_code == 0, res.output
    got = parse_text_lines(res.stdout)
    want = expected(lm, vec, TEXTS)
    assert [g[0] for g in got] == [w[0] for w in want]
    assert [g[1] for g in got] == pytest.approx([w[1] for w in want], abs=1e-4)

    as_json = runner.invoke(app, ["predict", str(path), "-i", str(data), "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    rows = [json.loads(line) for line in as_json.stdout.strip().splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    assert [r["label"] for r in rows] == [w[0] for w in want]
    assert all(set(r["scores"]) == set(CLASS_NAMES) for r in rows)


def test_predict_from_stdin_plain_and_jsonl(saved: tuple[LoraModel, np.ndarray, Path]) -> None:
    lm, vec, path = saved
    want = expected(lm, vec, TEXTS)
    plain = runner.invoke(app, ["predict", str(path)], input="\n".join(TEXTS) + "\n\n")
    assert plain.exit_code == 0, plain.output
    assert [g[0] for g in parse_text_lines(plain.stdout)] == [w[0] for w in want]
    jsonl = "".join(json.dumps({"body": t}) + "\n" for t in TEXTS)
    res = runner.invoke(
        app, ["predict", str(path), "--input", "-", "--text-column", "body"], input=jsonl
    )
    assert res.exit_code == 0, res.output
    assert [g[0] for g in parse_text_lines(res.stdout)] == [w[0] for w in want]


def test_predict_user_errors_are_one_line(
    saved: tuple[LoraModel, np.ndarray, Path], tmp_path: Path
) -> None:
    _, _, path = saved
    cases = [
        (["predict", str(tmp_path / "none")], "", "does not exist"),
        (["predict", str(tmp_path)], "", "not a PEFT adapter folder"),
        (["predict", str(path), "-i", str(tmp_path / "x.jsonl")], "", "input file not found"),
        (["predict", str(path)], "", "no texts"),
        (["predict", str(path)], '{"body": "x"}\n', "no text column 'text'"),
        (["predict", str(path)], '{"text": "x"\n', "<stdin>:1: not valid JSON"),
        (["predict", str(path), "--format", "xml"], "a\n", "--format"),
    ]
    for args, stdin, needle in cases:
        assert_user_error(runner.invoke(app, args, input=stdin), needle)
    bad = tmp_path / "d.csv"
    bad.write_text("body,label\nx,y\n")
    assert_user_error(
        runner.invoke(app, ["predict", str(path), "-i", str(bad)]), "columns are ['body', 'label']"
    )


def test_predict_prints_loss_for_an_lm_adapter(tmp_path: Path) -> None:
    spec = LoraSpec(model="tiny-llama", task="lm", rank=4, alpha=8, max_length=32, seed=0)
    lm = LoraModel(spec, num_labels=2)
    vec = lm.schema.flatten(dict(zip(lm.schema.names, lm.initial_tensors(), strict=True)))
    lm.save_adapter(vec, tmp_path / "lm", {})
    res = runner.invoke(
        app, ["predict", str(tmp_path / "lm"), "--format", "json"], input="ab\ncd\n"
    )
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert [r["text"] for r in rows] == ["ab", "cd"]
    for r in rows:
        assert np.isfinite(r["loss"]) and r["perplexity"] == pytest.approx(np.exp(r["loss"]))


def test_export_merge_loads_in_plain_transformers(
    saved: tuple[LoraModel, np.ndarray, Path], tmp_path: Path
) -> None:
    from transformers import AutoModelForSequenceClassification

    lm, vec, path = saved
    out = tmp_path / "merged"
    res = runner.invoke(app, ["export", str(path), "--merge", "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert "5 labels" in res.stdout
    model = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    assert model.config.id2label == dict(enumerate(CLASS_NAMES))
    assert not any("lora" in n for n, _ in model.named_parameters())
    ids, mask = lm.tokenizer(TEXTS, lm.spec.max_length)
    with torch.no_grad():
        merged = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(merged, in_process_logits(lm, vec, TEXTS), atol=1e-5, rtol=0)
    # the same predictions as `predict` on the adapter
    pred = runner.invoke(app, ["predict", str(path)], input="\n".join(TEXTS))
    labels = [model.config.id2label[int(i)] for i in merged.argmax(-1)]
    assert [g[0] for g in parse_text_lines(pred.stdout)] == labels
    info = json.loads((out / "declora_export.json").read_text())
    assert info["labels"] == list(CLASS_NAMES) and info["tokenizer"].startswith("byte")
    shown = runner.invoke(app, ["inspect", str(out)])  # a plain model: no declora method
    assert shown.exit_code == 0, shown.output
    assert "full model (no LoRA)" in shown.stdout and "method" not in shown.stdout

    again = runner.invoke(app, ["export", str(path), "--merge", "--output", str(out)])
    assert again.exit_code == 2 and "already holds files" in again.stderr, again.output
    assert_user_error(runner.invoke(app, ["export", str(path), "--merge"]), "--output")


def test_export_without_merge_copies_the_adapter(
    saved: tuple[LoraModel, np.ndarray, Path], tmp_path: Path
) -> None:
    _, _, path = saved
    res = runner.invoke(app, ["export", str(path), "-o", str(tmp_path / "copy")])
    assert res.exit_code == 0, res.output
    for name in ("adapter_config.json", "adapter_model.safetensors", "declora.json"):
        assert (tmp_path / "copy" / name).read_bytes() == (path / name).read_bytes()
    # the copy's card loads the copy, not the folder it came from
    assert (
        f"load_adapter({str(tmp_path / 'copy')!r})" in (tmp_path / "copy" / "README.md").read_text()
    )


def test_export_refuses_a_truncated_adapter_and_copies_nothing(
    saved: tuple[LoraModel, np.ndarray, Path], tmp_path: Path
) -> None:
    _, _, path = saved
    damaged = tmp_path / "damaged"
    shutil.copytree(path, damaged)
    weights = damaged / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    res = runner.invoke(app, ["export", str(damaged), "-o", str(tmp_path / "copy")])
    assert_user_error(res, "is not a readable safetensors file")
    assert not (tmp_path / "copy").exists()
