"""Labels in the model's identity, self-describing adapters, and loading them back.

tiny-bert (seeded random base) for the loader and PEFT round trips; a tiny BERT saved
as a local transformers folder (with a real tokenizer) for the AutoPeft line of the
model card and base overrides; the embedded MiniLM (slow) for the portable hub id.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from adapter_helpers import META, in_process_logits, save_trained_tiny
from conftest import CLASS_NAMES, NUM_CLASSES, TINY_SPEC, make_synthetic

from declora.cli.inspect import inspect_path
from declora.node.adapter_card import file_sha256, weights_sha256
from declora.node.adapter_io import AdapterError, adapter_folder, load_adapter
from declora.node.data import TextDataset
from declora.node.model_source import ModelError
from declora.node.models import load_base
from declora.node.trainer import LocalTrainer, LoraModel, LoraSpec

TEXTS = list(make_synthetic(12, seed=3).texts)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoraModel, np.ndarray, Path]:
    path = tmp_path_factory.mktemp("tiny") / "adapter"
    lm, vec = save_trained_tiny(path)
    return lm, vec, path


def python_blocks(card: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card, flags=re.S)


# --------------------------------------------------------------------------- identity


def test_label_names_are_part_of_the_fingerprint() -> None:
    named = LoraModel(TINY_SPEC, label_names=CLASS_NAMES)
    unnamed = LoraModel(TINY_SPEC, NUM_CLASSES)
    assert named.label_names == CLASS_NAMES and named.num_labels == NUM_CLASSES
    assert named.model.config.id2label == dict(enumerate(CLASS_NAMES))
    assert LoraModel(TINY_SPEC, NUM_CLASSES, label_names=CLASS_NAMES).fingerprint == (
        named.fingerprint
    )
    others = {
        "order": LoraModel(TINY_SPEC, label_names=tuple(reversed(CLASS_NAMES))).fingerprint,
        "names": LoraModel(TINY_SPEC, label_names=("a", "b", "c", "d", "e")).fingerprint,
        "none": unnamed.fingerprint,  # num_labels only: the fingerprint it always had
    }
    for what, fp in others.items():
        assert fp != named.fingerprint, what
    assert unnamed.label_names == ()
    with pytest.raises(ModelError, match="3 label names"):
        LoraModel(TINY_SPEC, num_labels=5, label_names=("a", "b", "c"))
    with pytest.raises(ModelError, match="num_labels or label_names"):
        LoraModel(TINY_SPEC)


def test_label_names_do_not_touch_a_causal_lm() -> None:
    spec = LoraSpec(model="tiny-llama", task="lm", rank=4, alpha=8, max_length=32)
    plain = LoraModel(spec, num_labels=2)
    named = LoraModel(spec, num_labels=2, label_names=("x", "y"))
    assert named.label_names == () and named.fingerprint == plain.fingerprint


# --------------------------------------------------------------------------- saving


def test_saved_adapter_describes_itself(saved: tuple[LoraModel, np.ndarray, Path]) -> None:
    lm, _, path = saved
    names = {p.name for p in path.iterdir()}
    assert names == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "declora.json",
        "README.md",
    }
    info = json.loads((path / "declora.json").read_text())
    assert info["fingerprint"] == lm.fingerprint
    assert info["labels"] == list(CLASS_NAMES) and info["num_labels"] == NUM_CLASSES
    assert info["task"] == "cls" and info["round"] == META["round"]
    assert info["base"]["name"] == "tiny-bert" and info["base"]["digest"] == lm.base_digest
    assert info["weights_sha256"] == weights_sha256(path / "adapter_model.safetensors")
    card = (path / "README.md").read_text()
    for needle in ("tiny-bert", "swarm-x", "node-a", "| rounds | 12 |", "accuracy 0.9", "echo"):
        assert needle in card, needle
    assert "4 `echo`" in card and lm.fingerprint in card and info["weights_sha256"] in card
    (load_lines,) = python_blocks(card)  # tiny-bert has no hub name: only declora's line
    assert "load_adapter(" in load_lines


def test_an_adapter_trained_under_agreed_recipe_facts_loads(tmp_path: Path) -> None:
    """The defaults' schedule and gossip steps join the fingerprint; the saved adapter
    records them, so loading rebuilds the same fingerprint instead of refusing."""
    agreed = {"lr_schedule": "cosine", "warmup_steps": 1, "rounds": 3, "gossip_steps": 2}
    lm = LoraModel(TINY_SPEC, label_names=CLASS_NAMES, agreed=agreed)
    assert lm.fingerprint != LoraModel(TINY_SPEC, label_names=CLASS_NAMES).fingerprint
    trainer = LocalTrainer(lm, lm.encode(make_synthetic(50)), lr=3e-2, batch_size=16, seed=0)
    trainer.train_steps(2)
    vec = trainer.vector()
    lm.save_adapter(vec, tmp_path / "adapter", META)
    adapter = load_adapter(tmp_path / "adapter")
    assert adapter.info["agreed"] == agreed
    assert adapter.lora.fingerprint == lm.fingerprint
    torch.testing.assert_close(adapter.logits(TEXTS), in_process_logits(lm, vec, TEXTS))


def test_load_adapter_gives_the_in_process_logits(
    saved: tuple[LoraModel, np.ndarray, Path],
) -> None:
    lm, vec, path = saved
    adapter = load_adapter(path)
    assert adapter.labels == CLASS_NAMES and adapter.task == "cls"
    assert adapter.info["node_id"] == "node-a"
    ours = in_process_logits(lm, vec, TEXTS)
    theirs = adapter.logits(TEXTS)
    torch.testing.assert_close(theirs, ours, atol=1e-6, rtol=0)
    preds = adapter.predict(TEXTS)
    assert [p.label for p in preds] == [CLASS_NAMES[i] for i in ours.argmax(-1).tolist()]
    probs = torch.softmax(ours, -1).max(-1).values.tolist()
    assert [p.probability for p in preds] == pytest.approx(probs, abs=1e-6)
    assert all(sum(p.scores.values()) == pytest.approx(1.0) for p in preds)
    # the card's own line works as written
    (block,) = python_blocks((path / "README.md").read_text())
    scope: dict[str, Any] = {}
    exec(block, scope)
    torch.testing.assert_close(scope["adapter"].logits(TEXTS), ours, atol=1e-6, rtol=0)


def test_plain_peft_loads_it_with_the_recorded_labels(
    saved: tuple[LoraModel, np.ndarray, Path],
) -> None:
    from peft import PeftModel

    lm, vec, path = saved
    info = json.loads((path / "declora.json").read_text())
    labels = info["labels"]
    base = load_base(info["spec"]["model"], "cls", len(labels), info["spec"]["seed"]).model
    base.config.id2label = dict(enumerate(labels))
    base.config.label2id = {n: i for i, n in enumerate(labels)}
    model = PeftModel.from_pretrained(base, str(path)).eval()
    ids, mask = lm.tokenizer(TEXTS, lm.spec.max_length)
    with torch.no_grad():
        theirs = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(theirs, in_process_logits(lm, vec, TEXTS), atol=1e-6, rtol=0)
    assert model.config.id2label[4] == "echo"


def test_checkpoint_layouts_resolve_to_their_adapter(
    saved: tuple[LoraModel, np.ndarray, Path], tmp_path: Path
) -> None:
    _, _, path = saved
    ckpt = tmp_path / "ckpt-00000012"
    shutil.copytree(path, ckpt / "adapter")
    (ckpt / "state.pt").write_bytes(b"")  # complete: LATEST names no half checkpoint
    (tmp_path / "LATEST").write_text("ckpt-00000012\n")
    assert adapter_folder(tmp_path) == ckpt / "adapter"
    assert adapter_folder(ckpt) == ckpt / "adapter"
    assert load_adapter(tmp_path).labels == CLASS_NAMES


def test_load_adapter_refusals(saved: tuple[LoraModel, np.ndarray, Path], tmp_path: Path) -> None:
    _, _, path = saved
    with pytest.raises(AdapterError, match="does not exist"):
        load_adapter(tmp_path / "nope")
    with pytest.raises(AdapterError, match="not a PEFT adapter folder"):
        load_adapter(tmp_path)
    foreign = tmp_path / "foreign"
    shutil.copytree(path, foreign)
    (foreign / "declora.json").unlink()
    with pytest.raises(AdapterError, match="not written by declora"):
        load_adapter(foreign)
    tampered = tmp_path / "tampered"
    shutil.copytree(path, tampered)
    info = json.loads((tampered / "declora.json").read_text())
    info["fingerprint"] = "0" * 16
    (tampered / "declora.json").write_text(json.dumps(info))
    with pytest.raises(AdapterError, match="fingerprint 0000000000000000") as exc:
        load_adapter(tampered)
    assert "\n" not in str(exc.value) and "hint" in str(exc.value)


# --------------------------------------------------------------------------- weights hash


def test_weights_hash_tells_whether_two_adapters_agree(
    saved: tuple[LoraModel, np.ndarray, Path], tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    lm, vec, path = saved
    lm.save_adapter(vec, tmp_path / "same", {"round": 99})  # other meta, same weights
    changed = vec.copy()
    changed[0] += 1e-3
    lm.save_adapter(changed, tmp_path / "other", {})
    digest = weights_sha256(path / "adapter_model.safetensors")
    assert weights_sha256(tmp_path / "same" / "adapter_model.safetensors") == digest
    assert weights_sha256(tmp_path / "other" / "adapter_model.safetensors") != digest
    # the hash does not depend on how the file lays out its tensors or its metadata
    tensors = load_file(str(path / "adapter_model.safetensors"))
    reordered = tmp_path / "reordered.safetensors"
    save_file(dict(reversed(list(tensors.items()))), str(reordered), metadata={"by": "test"})
    assert file_sha256(reordered) != file_sha256(path / "adapter_model.safetensors")
    assert weights_sha256(reordered) == digest

    info = inspect_path(path)
    assert info["weights_sha256"] == info["recorded_weights_sha256"] == digest
    assert info["fingerprint"] == lm.fingerprint and info["labels"] == list(CLASS_NAMES)
    assert inspect_path(tmp_path / "other")["fingerprint"] == info["fingerprint"]


# --------------------------------------------------------------------------- local base


@pytest.fixture(scope="module")
def local_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT encoder saved as a transformers folder, with a character vocabulary."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("bert") / "tiny-local-bert"
    folder.mkdir()
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(str(folder))
    torch.manual_seed(1)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(str(folder))
    return folder


def local_adapter(base: Path, out: Path) -> tuple[LoraModel, np.ndarray]:
    spec = LoraSpec(model=str(base), rank=4, alpha=8, max_length=16, seed=0)
    lm = LoraModel(spec, label_names=("neg", "pos", "mixed"))
    rng = np.random.default_rng(0)
    vec = lm.schema.flatten(dict(zip(lm.schema.names, lm.initial_tensors(), strict=True)))
    vec = vec + rng.normal(0, 0.05, vec.shape).astype(np.float32)  # B != 0: LoRA acts
    lm.save_adapter(vec, out, {"round": 2})
    return lm, vec


def test_local_base_loads_with_the_cards_autopeft_line(local_bert: Path, tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    lm, vec = local_adapter(local_bert, out)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(local_bert)
    base = json.loads((out / "declora.json").read_text())["base"]
    assert base["local_path"] == str(local_bert.resolve()) and base["hub_id"] is None
    weights = local_bert / "model.safetensors"
    assert base["files"] == {
        "model.safetensors": {"bytes": weights.stat().st_size, "sha256": file_sha256(weights)}
    }
    ours = in_process_logits(lm, vec, ["good one", "bad day"])
    _, peft_block = python_blocks((out / "README.md").read_text())
    assert "AutoPeftModelForSequenceClassification.from_pretrained(" in peft_block
    scope: dict[str, Any] = {}
    exec(peft_block, scope)
    model = scope["model"].eval()
    assert model.config.id2label == {0: "neg", 1: "pos", 2: "mixed"}
    ids, mask = lm.tokenizer(["good one", "bad day"], lm.spec.max_length)
    with torch.no_grad():
        theirs = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    torch.testing.assert_close(load_adapter(out).logits(["good one", "bad day"]), ours)


def test_a_large_local_base_is_described_by_size_only(
    local_bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from declora.node import adapter_card

    monkeypatch.setattr(adapter_card, "MAX_HASH_BYTES", 1024)  # the tiny base "is large"
    record = adapter_card.describe_base(str(local_bert), "digest")
    size = (local_bert / "model.safetensors").stat().st_size
    assert record["files"] == {"model.safetensors": {"bytes": size, "sha256": None}}
    assert record["digest"] == "digest" and record["local_path"] == str(local_bert.resolve())


def test_base_override_must_hold_the_same_weights(local_bert: Path, tmp_path: Path) -> None:
    from transformers import BertModel

    out = tmp_path / "adapter"
    lm, vec = local_adapter(local_bert, out)
    moved = tmp_path / "moved-copy"
    shutil.copytree(local_bert, moved)
    adapter = load_adapter(out, base=str(moved))
    torch.testing.assert_close(
        adapter.logits(["good one"]), in_process_logits(lm, vec, ["good one"])
    )
    other = tmp_path / "other-weights"
    shutil.copytree(local_bert, other)
    model = BertModel.from_pretrained(str(other))
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.mul_(2.0)
    model.save_pretrained(str(other))
    with pytest.raises(AdapterError, match="other weights"):
        load_adapter(out, base=str(other))
    with pytest.raises(AdapterError, match="cannot load the base"):
        load_adapter(out, base=str(tmp_path / "no-such-model"))


# --------------------------------------------------------------------------- causal LM


def test_lm_adapter_reports_the_loss_evaluate_reports(tmp_path: Path) -> None:
    spec = LoraSpec(model="tiny-llama", task="lm", rank=4, alpha=8, max_length=32, seed=0)
    lm = LoraModel(spec, num_labels=2)
    rng = np.random.default_rng(1)
    vec = lm.schema.flatten(dict(zip(lm.schema.names, lm.initial_tensors(), strict=True)))
    vec = vec + rng.normal(0, 0.05, vec.shape).astype(np.float32)
    lm.save_adapter(vec, tmp_path / "lm", {"round": 1})
    adapter = load_adapter(tmp_path / "lm")
    assert adapter.task == "lm" and adapter.labels == ()
    texts = ["abc abd xyz", "the quick brown fox jumps"]
    losses = adapter.text_losses(texts)
    for text, loss in zip(texts, losses, strict=True):
        expected = lm.evaluate(vec, lm.encode(TextDataset((text,), None, ())))["loss"]
        assert loss == pytest.approx(expected, rel=1e-5)
    with pytest.raises(AdapterError, match="causal LM"):
        adapter.predict(texts)
    assert "causal language modelling" in (tmp_path / "lm" / "README.md").read_text()


def test_long_texts_scored_in_batches_are_told_in_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Texts past the adapter's --max-length, over several batches: one warning counts
    them all (was one a batch), and each is scored as alone."""
    spec = LoraSpec(model="tiny-llama", task="lm", rank=4, alpha=8, max_length=16, seed=0)
    lm = LoraModel(spec, num_labels=2)
    vec = lm.schema.flatten(dict(zip(lm.schema.names, lm.initial_tensors(), strict=True)))
    lm.save_adapter(vec, tmp_path / "lm", {"round": 1})
    adapter = load_adapter(tmp_path / "lm")
    texts = ["a long text " * 8] * 5 + ["short"]
    alone = [adapter.text_losses([t]) for t in texts]
    caplog.clear()
    with caplog.at_level("WARNING"):
        losses = adapter.text_losses(texts, batch_size=2)
    warned = [r.getMessage() for r in caplog.records if "are scored" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("5 of 6 texts"), warned
    assert losses == pytest.approx([a[0] for a in alone], rel=1e-5)
    assert adapter.text_losses([]) == []


# --------------------------------------------------------------------------- MiniLM


@pytest.mark.slow
def test_minilm_adapter_names_the_hub_base_and_loads_through_it(tmp_path: Path) -> None:
    """The embedded base is recorded by its hub id; PEFT resolves it from a hub cache.

    The cache is built here from the embedded files (offline: HF_HUB_OFFLINE=1), as a
    user's machine that has downloaded sentence-transformers/all-MiniLM-L6-v2 has it.
    """
    spec = LoraSpec(model="minilm", rank=4, alpha=8, max_length=32, seed=0)
    lm = LoraModel(spec, label_names=("business", "sport", "tech"))
    rng = np.random.default_rng(2)
    vec = lm.schema.flatten(dict(zip(lm.schema.names, lm.initial_tensors(), strict=True)))
    vec = vec + rng.normal(0, 0.02, vec.shape).astype(np.float32)
    out = tmp_path / "adapter"
    lm.save_adapter(vec, out, {"round": 1})
    hub_id = "sentence-transformers/all-MiniLM-L6-v2"
    assert (
        json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == hub_id
    )
    base = json.loads((out / "declora.json").read_text())["base"]
    local = Path(base["local_path"])
    assert base["hub_id"] == hub_id and (local / "config.json").is_file()
    assert base["files"]["model.safetensors"]["sha256"] == file_sha256(local / "model.safetensors")
    texts = ["shares fell on the stock market", "the striker scored twice"]
    ours = in_process_logits(lm, vec, texts)
    torch.testing.assert_close(load_adapter(out).logits(texts), ours, atol=1e-5, rtol=0)

    # a hub cache holding the base, as after a download, and the card's PEFT line
    commit = "0" * 40
    repo = tmp_path / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(local, repo / "snapshots" / commit)
    _, peft_block = python_blocks((out / "README.md").read_text())
    script = (
        "import json, torch\n"
        + peft_block
        + "from transformers import AutoTokenizer\n"
        + f"tok = AutoTokenizer.from_pretrained({hub_id!r})\n"
        + f"b = tok({texts!r}, padding='max_length', truncation=True, max_length=32,"
        + " return_tensors='pt')\n"
        + "with torch.no_grad():\n"
        + "    out = model.eval()(input_ids=b['input_ids'], attention_mask=b['attention_mask'])\n"
        + "print(json.dumps(out.logits.tolist()))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=240
    )
    assert res.returncode == 0, res.stderr[-2000:]
    theirs = torch.tensor(json.loads(res.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
