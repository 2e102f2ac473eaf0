"""A saved adapter loads from any directory, and the mistakes around using one say what
to do: an adapter trained on a relative --model names its base's absolute folder in
adapter_config.json (PEFT alone loads it from elsewhere), an export's card loads the
export; a tokenizer without the EOS (or pad) token a task needs, a merged export given
where an adapter goes, --targets all-linear with other names, and a JSON line that is
not an object are each one line with a hint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
from test_llm_models import saved_adapter, tiny_folder
from typer.testing import CliRunner

from declora.cli.app import app
from declora.cli.inspect import inspect_path
from declora.cli.predict import _jsonl_texts, run_export
from declora.node.adapter_io import AdapterError, export_merged, load_adapter
from declora.node.data_files import DataError
from declora.node.lora_targets import check_targets
from declora.node.model_source import ModelError
from declora.node.models import load_base

runner = CliRunner()


def test_adapter_config_names_the_absolute_base_and_export_cards_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from peft import AutoPeftModelForCausalLM

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a relative path would be tried on the hub
    adapter, _ = saved_adapter(tmp_path, monkeypatch)  # --model models/tiny, cwd tmp_path
    base = str((tmp_path / "models" / "tiny").resolve())
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == base
    info = json.loads((adapter / "declora.json").read_text())
    assert info["spec"]["model"] == "models/tiny"  # the fingerprint's input is unchanged
    assert load_adapter(adapter).info["fingerprint"] == info["fingerprint"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    AutoPeftModelForCausalLM.from_pretrained(str(adapter))  # raised OSError: repo id
    monkeypatch.chdir(tmp_path)
    # an adapter an older declora saved: the relative path in its config
    (adapter / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": "models/tiny"})
    )
    run_export(adapter, Path("exp"), merge=False)
    run_export(adapter, Path("exp"), merge=False)  # replaced: written beside, then moved
    card = (tmp_path / "exp" / "README.md").read_text()
    assert "load_adapter('exp')" in card and "from_pretrained('exp')" in card
    assert str(adapter) not in card
    copied = json.loads((tmp_path / "exp" / "adapter_config.json").read_text())
    assert copied["base_model_name_or_path"] == base
    monkeypatch.chdir(elsewhere)
    AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "exp"))


def _without_tokens(folder: Path, *names: str) -> Path:
    """`folder`'s tokenizer with the special tokens `names` taken out."""
    cfg_file = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    for name in names:
        cfg.pop(name, None)
    cfg_file.write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize(
    ("removed", "task", "said"),
    [
        (("eos_token", "pad_token"), "lm", "has no EOS token"),
        (("eos_token",), "lm", "has no EOS token"),
        (("eos_token", "pad_token"), "cls", "neither a pad nor an EOS token"),
    ],
)
def test_a_tokenizer_without_the_tokens_a_task_needs_is_refused_with_a_hint(
    tmp_path: Path, removed: tuple[str, ...], task: str, said: str
) -> None:
    folder = _without_tokens(tiny_folder(tmp_path / "m", kind="gpt2"), *removed)
    with pytest.raises(ModelError) as info:  # was TypeError: int() ... 'NoneType'
        load_base(str(folder), task, 2, seed=0)  # type: ignore[arg-type]
    assert said in info.value.message and str(folder) in info.value.message
    assert "eos_token" in info.value.hint and "tokenizer_config.json" in info.value.hint


def test_the_cli_refuses_a_tokenizer_without_eos_nor_pad_exit_2(tmp_path: Path) -> None:
    folder = _without_tokens(tiny_folder(tmp_path / "m", kind="gpt2"), "eos_token", "pad_token")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"w{i} w2 w3"}) + "\n" for i in range(12)))
    args = ["simulate", "--model", str(folder), "--task", "lm", "--data", str(data)]
    res = runner.invoke(app, [*args, "--nodes", "2", "--rounds", "1", "-o", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert "error: " in res.output and "hint: set eos_token" in res.output


def test_a_merged_export_is_named_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    adapter, _ = saved_adapter(tmp_path, monkeypatch)
    merged, _ = export_merged(adapter, tmp_path / "merged")
    with pytest.raises(AdapterError) as info:
        load_adapter(merged)  # was: "has no declora.json: it was not written by declora"
    assert "is a merged export" in info.value.message
    assert "start --model" in info.value.hint and str(adapter) in info.value.hint
    shown = inspect_path(merged)
    assert shown["kind"] == "model" and shown["merged_from"] == str(adapter)


def test_all_linear_with_other_targets_has_a_hint() -> None:
    with pytest.raises(ModelError) as info:
        check_targets(cast(Any, None), ("all-linear", "q_proj"))
    assert "--targets all-linear alone" in info.value.hint
    assert "--targets q_proj" in info.value.hint


def test_a_json_line_that_is_not_an_object_shows_the_line_expected() -> None:
    with pytest.raises(DataError) as info:
        _jsonl_texts(['{"body": "a"}', '["x"]'], "body", "in.jsonl", None)
    assert info.value.message == "in.jsonl:2: a list, not a JSON object"
    assert '{"body": "a text to score"}' in info.value.hint
