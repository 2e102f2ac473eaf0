"""A DECA result (a full model folder) through `load_adapter`, `inspect`, `predict`
and `generate`: tiny-bert for classification, tiny-llama for causal LM."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from adapter_helpers import in_process_logits
from conftest import CLASS_NAMES, TINY_SPEC, make_synthetic
from test_generate_cli import as_text, direct
from test_predict_cli import assert_user_error, expected, parse_text_lines
from transformers import AutoModelForSequenceClassification
from typer.testing import CliRunner

from declora.cli.app import app
from declora.cli.inspect import inspect_path
from declora.node.adapter_io import AdapterError, load_adapter
from declora.node.deca_model import MODEL_WEIGHTS, BlockModel, BlockTrainer
from declora.node.trainer import LoraSpec

runner = CliRunner()
TEXTS = list(make_synthetic(6, seed=5).texts)
AGREED = {"lr_schedule": "cosine", "warmup_steps": 1, "rounds": 3}
Saved = tuple[BlockModel, np.ndarray, Path]


def deca_spec(model: str, task: str) -> LoraSpec:
    changes = {"model": model, "task": task, "targets": (), "method": "deca", "deca_blocks": 2}
    return LoraSpec(**{**TINY_SPEC.as_dict(), **changes})  # type: ignore[arg-type]


def base_vector(lm: BlockModel) -> np.ndarray:
    """Every block and the head as the base has them (what no training changed)."""
    names = lm.schema.names
    return lm.schema.flatten(dict(zip(names, lm.base_values(names), strict=True)))


@pytest.fixture(scope="module")
def cls_folder(tmp_path_factory: pytest.TempPathFactory) -> Saved:
    """tiny-bert trained a few DECA steps under agreed recipe facts, saved."""
    lm = BlockModel(deca_spec("tiny-bert", "cls"), label_names=CLASS_NAMES, agreed=AGREED)
    trainer = BlockTrainer(lm, lm.encode(make_synthetic(64)), 3e-2, 8, seed=0)
    trainer.train_steps(4)
    vec = trainer.full_vector()
    path = tmp_path_factory.mktemp("deca") / "model"
    lm.save_adapter(vec, path, {"round": 4, "node_id": "node-a"})
    return lm, vec, path


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory: pytest.TempPathFactory) -> Saved:
    """tiny-llama with every block moved off the base (seeded noise), saved."""
    lm = BlockModel(deca_spec("tiny-llama", "lm"), num_labels=2)
    vec = base_vector(lm)
    vec += np.random.default_rng(0).normal(0, 0.05, vec.shape).astype(np.float32)
    path = tmp_path_factory.mktemp("deca") / "model"
    lm.save_adapter(vec, path, {})
    return lm, vec, path


def test_load_adapter_gives_the_in_process_classifier(cls_folder: Saved, tmp_path: Path) -> None:
    lm, vec, path = cls_folder
    adapter = load_adapter(path)
    assert adapter.full_model and adapter.task == "cls" and adapter.labels == CLASS_NAMES
    assert adapter.lora.fingerprint == lm.fingerprint and adapter.info["agreed"] == AGREED
    ours = in_process_logits(lm, vec, TEXTS)
    assert not torch.allclose(ours, in_process_logits(lm, base_vector(lm), TEXTS))  # trained
    torch.testing.assert_close(adapter.logits(TEXTS), ours, atol=1e-6, rtol=0)
    want = [label for label, _ in expected(lm, vec, TEXTS)]
    assert [p.label for p in adapter.predict(TEXTS)] == want
    assert adapter.merge() is adapter.model  # nothing to merge
    ckpt = tmp_path / "ckpt-00000004"  # a checkpoint root resolves to its model folder
    shutil.copytree(path, ckpt / "adapter")
    (ckpt / "state.pt").write_bytes(b"")  # complete: LATEST names no half checkpoint
    (tmp_path / "LATEST").write_text(ckpt.name + "\n")
    torch.testing.assert_close(load_adapter(tmp_path).logits(TEXTS), ours, atol=1e-6, rtol=0)


def test_load_adapter_gives_the_in_process_lm(lm_folder: Saved) -> None:
    lm, vec, path = lm_folder
    adapter = load_adapter(path)
    assert adapter.full_model and adapter.task == "lm" and adapter.labels == ()
    ids, mask = lm.tokenizer(TEXTS, lm.spec.max_length)
    with lm.using(vec), torch.no_grad():
        lm.model.eval()
        ours = lm.model(input_ids=ids, attention_mask=mask).logits.float()
    torch.testing.assert_close(adapter.logits(TEXTS), ours, atol=1e-6, rtol=0)


def test_inspect_shows_method_task_labels_and_size(cls_folder: Saved) -> None:
    lm, _, path = cls_folder
    info = inspect_path(path)
    assert (info["method"], info["task"], info["labels"]) == ("deca", "cls", list(CLASS_NAMES))
    assert info["lora"] is None and info["fingerprint"] == lm.fingerprint
    assert info["weights_sha256"] == info["recorded_weights_sha256"]
    assert info["parameters"] == sum(p.numel() for p in lm.model.state_dict().values())
    assert info["bytes"] == (path / MODEL_WEIGHTS).stat().st_size
    res = runner.invoke(app, ["inspect", str(path)])
    assert res.exit_code == 0, res.output
    assert "full model (method deca, no LoRA) task=cls" in res.stdout


def test_a_broken_folder_is_one_line(cls_folder: Saved, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    lm, _, path = cls_folder

    def broken(name: str) -> Path:
        shutil.copytree(path, tmp_path / name)
        return tmp_path / name

    weights = broken("truncated") / MODEL_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:1000])
    (broken("foreign") / "declora.json").unlink()
    weights = broken("lacking") / MODEL_WEIGHTS
    tensors = load_file(str(weights))
    del tensors[lm.schema.names[0]]
    save_file(tensors, str(weights))
    info_file = broken("relabelled") / "declora.json"
    info = json.loads(info_file.read_text())
    info_file.write_text(json.dumps({**info, "labels": ["a", "b"], "num_labels": 2}))
    cases = {
        "truncated": "not a readable safetensors file",
        "foreign": "transformers' from_pretrained",
        "lacking": "tensor names differ",
        "relabelled": "fingerprint",
    }
    for name, needle in cases.items():
        with pytest.raises(AdapterError, match=needle) as exc:
            load_adapter(tmp_path / name)
        assert "\n" not in str(exc.value)
    res = runner.invoke(app, ["predict", str(tmp_path / "truncated")], input="a\n")
    assert_user_error(res, "not a readable safetensors file")


def test_predict_cli_on_a_deca_folder(cls_folder: Saved) -> None:
    lm, vec, path = cls_folder
    res = runner.invoke(app, ["predict", str(path)], input="\n".join(TEXTS) + "\n")
    assert res.exit_code == 0, res.output
    got, want = parse_text_lines(res.stdout), expected(lm, vec, TEXTS)
    assert [g[0] for g in got] == [w[0] for w in want]
    assert [g[1] for g in got] == pytest.approx([w[1] for w in want], abs=1e-4)


def test_generate_cli_on_a_deca_folder(lm_folder: Saved) -> None:
    lm, vec, path = lm_folder
    prompt = "the cat sat on"
    args = ["generate", str(path), "-p", prompt, "--no-chat-template", "--format", "json"]
    res = runner.invoke(app, [*args, "--max-new-tokens", "8"])
    assert res.exit_code == 0, res.output
    want = direct(lm, vec, lm.tokenizer.encode([prompt])[0], steps=8)
    assert json.loads(res.stdout)["completion"] == as_text(want)


def test_export_copies_or_resaves_a_deca_folder(cls_folder: Saved, tmp_path: Path) -> None:
    lm, vec, path = cls_folder
    ours = in_process_logits(lm, vec, TEXTS)
    copy = runner.invoke(app, ["export", str(path), "-o", str(tmp_path / "copy")])
    assert copy.exit_code == 0, copy.output
    torch.testing.assert_close(
        load_adapter(tmp_path / "copy").logits(TEXTS), ours, atol=1e-6, rtol=0
    )
    merged = runner.invoke(app, ["export", str(path), "--merge", "-o", str(tmp_path / "merged")])
    assert merged.exit_code == 0, merged.output
    model = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "merged")).eval()
    ids, mask = lm.tokenizer(TEXTS, lm.spec.max_length)
    with torch.no_grad():
        theirs = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(theirs, ours, atol=1e-6, rtol=0)
    assert model.config.id2label[4] == "echo"
