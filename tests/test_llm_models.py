"""Model folders and names that cannot load are refused at once, one line and a hint.

A folder without a tokenizer or without config.json, a GGUF file or a folder of them,
a mistyped local path, a hub id neither cached nor reachable, a name that is neither a
local path nor a hub model: each is a `ModelError`
(the CLI's `error:` + `hint:`, exit 2), not a transformers traceback or half a minute
of hub retries. A --max-length past the model's context length is refused when the
model loads, not mid-run. An adapter trained on a relative --model path loads from
any directory (the absolute path declora.json records), or names both paths. A hub
id whose owner is a folder here (`Qwen/...` beside `Qwen/`) is still tried as a hub id.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_model_checks import hf_folder, llama_config

from declora.node import model_source
from declora.node.adapter_io import AdapterError, load_adapter
from declora.node.model_source import ModelError
from declora.node.models import context_length, load_base
from declora.node.trainer import LoraModel, LoraSpec

# the network calls a test's code tried: none may (the hub's retries took about 25 s)
DIALED: list[object] = []


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every name lookup or connection is refused at once and recorded in DIALED."""
    DIALED.clear()

    def lookup(host: object, *args: object, **kw: object) -> Any:
        DIALED.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "no network in this test")

    def connect(sock: socket.socket, address: object) -> None:
        DIALED.append(address)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(socket.socket, "connect", connect)


def tiny_folder(path: Path, kind: str = "llama", positions: int = 128) -> Path:
    """A local transformers folder: a tiny random causal LM and a word-level tokenizer."""
    from transformers import GPT2Config

    if kind == "gpt2":
        config = GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=positions)
        return hf_folder(path, config)
    return hf_folder(path, llama_config(max_position_embeddings=positions))


def refused(name: str, task: str = "lm", **kw: Any) -> ModelError:
    """The ModelError load_base raises for `name`, checked to be one line and hinted."""
    with pytest.raises(ModelError) as info:
        load_base(name, task, 2, seed=0, **kw)  # type: ignore[arg-type]
    assert DIALED == []  # no hub call, so none of its retries
    err = info.value
    assert err.hint and "\n" not in err.message and "\n" not in err.hint
    return err


# 1. a folder without a tokenizer or without config.json


def test_a_folder_without_tokenizer_says_so(tmp_path: Path) -> None:
    folder = tiny_folder(tmp_path / "notok")
    for f in folder.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            f.unlink()
    err = refused(str(folder))
    assert "has no tokenizer" in err.message and str(folder) in err.message
    assert "save_pretrained" in err.hint


@pytest.mark.parametrize("kind", ["empty", "weights-only"])
def test_a_folder_without_config_is_not_a_model_folder(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / kind
    folder.mkdir()
    if kind == "weights-only":
        (folder / "model.safetensors").write_bytes(b"\0" * 16)
    err = refused(str(folder))
    assert "is not a transformers model folder (no config.json)" in err.message
    assert "save_pretrained" in err.hint


# 2. GGUF


def test_a_gguf_file_is_not_loaded_directly(tmp_path: Path) -> None:
    gguf = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\0" * 64)
    err = refused(str(gguf))
    assert "GGUF file" in err.message
    assert "GGUF files are not loaded directly" in err.hint and "gguf_file=" in err.hint
    err = refused(str(tmp_path))  # the folder holding it
    assert "no config.json" in err.message and gguf.name in err.message
    assert "gguf_file=" in err.hint


# 3. a mistyped local path; a hub id neither cached nor reachable


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The hub unreachable (and offline mode unset); records each probe."""
    probes: list[bool] = []

    def unreachable(timeout: float = 3.0) -> bool:
        probes.append(True)
        return False

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(model_source, "hub_reachable", unreachable)
    return probes


@pytest.mark.parametrize(
    "name", ["models/a/b", "./x", "../nowhere/model", "ABSOLUTE", "~/declora-no-such-model"]
)
def test_a_mistyped_local_path_fails_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_hub: list[bool], name: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    name = str(tmp_path / "absent") if name == "ABSOLUTE" else name
    err = refused(name)
    assert err.message == f"model folder {name!r} does not exist"
    assert "check the path" in err.hint and str(tmp_path) in err.hint
    assert not no_hub, "a path was looked up on the hub"


def test_a_hub_id_neither_cached_nor_reachable_fails_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_hub: list[bool]
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    err = refused("declora-test/no-such-model")
    assert "cannot be reached" in err.message and "hf download" in err.hint
    assert no_hub == [True]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = refused("declora-test/no-such-model")
    assert "HF_HUB_OFFLINE is set" in err.message and no_hub == [True]


def cache_snapshot(cache: Path, hub_id: str) -> Path:
    """A complete snapshot of `hub_id` (a tiny Llama) in the hub cache at `cache`."""
    repo = cache / ("models--" + hub_id.replace("/", "--"))
    tiny_folder(repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    return repo


def test_a_hub_id_whose_owner_is_a_folder_here_is_still_a_hub_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_hub: list[bool]
) -> None:
    """`Qwen/Qwen2-0.5B` beside a `Qwen` folder names nothing here: it is tried as a
    hub id (here: found in the cache), where before it was refused as a mistyped local
    path."""
    from huggingface_hub import constants

    cache_snapshot(tmp_path / "hub", "Qwen/tiny-llama")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Qwen").mkdir()
    base = load_base("Qwen/tiny-llama", "lm", 2, seed=0)
    assert base.family == "llama" and not no_hub


def test_a_name_neither_here_nor_on_the_hub_says_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_hub: list[bool]
) -> None:
    """`models/nonexist` beside a `models` folder, neither cached nor on the hub: one
    line saying that neither the local path nor the hub id was found, whether the hub
    is unreachable, offline, or answers that it has no such model."""
    from huggingface_hub import constants
    from transformers import AutoConfig

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    neither = "'models/nonexist' was found neither as a local folder"

    def check(err: ModelError, why: str) -> None:
        assert neither in err.message and "nor as a hub id" in err.message
        assert why in err.message and str(tmp_path) in err.message
        assert "check the path" in err.hint and "hub id (owner/name" in err.hint

    check(refused("models/nonexist"), "the Hugging Face hub cannot be reached")
    assert no_hub == [True]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check(refused("models/nonexist"), "HF_HUB_OFFLINE is set")
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def missing(path: str, **kw: Any) -> None:
        raise OSError(f"{path} is not a local folder and is not a valid model identifier")

    monkeypatch.setattr(model_source, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(AutoConfig, "from_pretrained", missing)
    check(refused("models/nonexist"), "the hub says: models/nonexist is not a local folder")


def test_a_cached_hub_id_loads_without_the_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_hub: list[bool]
) -> None:
    """The local cache is tried first (local_files_only): no probe, no retries."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache_snapshot(cache, "declora-test/tiny-llama")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    base = load_base("declora-test/tiny-llama", "lm", 2, seed=0)
    assert DIALED == []  # transformers' adapter lookup on the hub retried for 25 s
    assert base.family == "llama" and not no_hub


def test_a_cached_snapshot_without_weights_or_tokenizer_goes_to_the_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_hub: list[bool]
) -> None:
    """A snapshot holding config.json alone (a download cut short, or one refused after
    its config) is no model: the hub is asked (here unreachable: one probe, an error
    naming the hub), where before the node refused it forever as a tokenizer-less
    folder, online or not (found by review)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    repo = cache / "models--declora-test--partial"
    snapshot = tiny_folder(repo / "snapshots" / ("0" * 40))
    for path in snapshot.iterdir():
        if path.name != "config.json":
            path.unlink()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match="cannot be reached"):
        load_base("declora-test/partial", "lm", 2, seed=0)
    assert no_hub == [True]


# 4. --max-length past the context length


def test_context_length_reads_the_config() -> None:
    from transformers import BertConfig, GPT2Config, LlamaConfig, RobertaConfig, T5Config

    assert context_length(GPT2Config(n_positions=64)) == 64
    assert context_length(LlamaConfig(max_position_embeddings=512)) == 512
    assert context_length(BertConfig(max_position_embeddings=256)) == 256
    assert context_length(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512
    assert context_length(T5Config()) is None  # relative positions: no table to pass


def test_max_length_past_the_context_is_refused_when_the_model_loads(tmp_path: Path) -> None:
    folder = str(tiny_folder(tmp_path / "gpt2", "gpt2", positions=64))
    err = refused(folder, max_length=128)
    assert "--max-length 128" in err.message and "64 tokens" in err.message
    assert "n_positions" in err.message and err.hint == "use --max-length 64 or less"
    assert load_base(folder, "lm", 2, seed=0, max_length=64).family == "gpt2"
    err = refused("tiny-bert", "cls", max_length=300)  # absolute positions, 256
    assert "256 tokens" in err.message
    assert load_base("tiny-llama", "lm", 2, seed=0, max_length=400).family == "llama"


def test_a_run_past_the_context_is_refused_before_training(tmp_path: Path) -> None:
    folder = str(tiny_folder(tmp_path / "gpt2", "gpt2", positions=64))
    with pytest.raises(ModelError, match="past the context length"):
        LoraModel(LoraSpec(model=folder, task="lm", rank=2, alpha=4, max_length=128))


# 5. an adapter trained on a relative --model path


def saved_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, torch.Tensor]:
    """An LM adapter trained (here: set) on --model models/tiny, run from `tmp_path`;
    returns its folder and its logits on one text."""
    monkeypatch.chdir(tmp_path)
    tiny_folder(tmp_path / "models" / "tiny")
    lm = LoraModel(LoraSpec(model="models/tiny", task="lm", rank=2, alpha=4, max_length=16))
    vec = torch.cat([t.reshape(-1) for t in lm.initial_tensors()]).numpy()
    vec = vec + np.random.default_rng(0).normal(0, 0.1, vec.shape).astype(np.float32)
    lm.save_adapter(vec, tmp_path / "adapter", {"round": 1})
    ids, mask = lm.tokenizer(["w1 w2 w3"], 16)
    with lm.using(vec), torch.no_grad():
        lm.model.eval()
        logits = lm.model(input_ids=ids, attention_mask=mask).logits.float()
    return tmp_path / "adapter", logits


def test_an_adapter_on_a_relative_base_loads_from_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_hub: list[bool]
) -> None:
    adapter, expected = saved_adapter(tmp_path, monkeypatch)
    info = json.loads((adapter / "declora.json").read_text())
    assert info["spec"]["model"] == "models/tiny"
    assert info["base"]["local_path"] == str((tmp_path / "models" / "tiny").resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cwd in (tmp_path, elsewhere):
        monkeypatch.chdir(cwd)
        loaded = load_adapter(adapter)
        assert torch.allclose(loaded.logits(["w1 w2 w3"]), expected, atol=1e-5)
    assert not no_hub


def test_an_adapter_whose_base_is_gone_names_both_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_hub: list[bool]
) -> None:
    adapter, expected = saved_adapter(tmp_path, monkeypatch)
    moved = tmp_path / "moved"
    (tmp_path / "models" / "tiny").rename(moved)
    with pytest.raises(AdapterError) as info:
        load_adapter(adapter)
    assert DIALED == []
    err = info.value
    assert str((tmp_path / "models" / "tiny").resolve()) in err.message
    assert "'models/tiny'" in err.message and str(tmp_path) in err.message
    assert "--base" in err.hint and not no_hub
    loaded = load_adapter(adapter, base=str(moved))  # the same weights elsewhere
    assert torch.allclose(loaded.logits(["w1 w2 w3"]), expected, atol=1e-5)
