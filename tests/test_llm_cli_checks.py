"""Causal-LM commands against what a real chat model brings (tiny models built here).

- `generate` stops at any end-of-turn id of the model's generation_config, not only
  the tokenizer's EOS;
- `generate` refuses prompt + --max-new-tokens past the model's context length;
- `generate --input` reads .csv/.tsv/.parquet as `predict` reads its --input (a
  `prompt` or `messages` column), not as plain lines;
- `predict` on chat turns hints at what predict accepts (and `generate`);
- an adapter of an embedding layer (and a DoRA one) saves, loads and exports;
- simulate's label-based default partition falls back to iid on unlabelled LM data,
  a chosen one is refused with a hint to --partition-scheme iid.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_model_checks import hf_folder, llama_config
from test_predict_cli import assert_user_error
from typer.testing import CliRunner

from declora.cli.app import app
from declora.node.data_files import DataError
from declora.node.trainer import LoraModel, LoraSpec

runner = CliRunner()
PROMPT = "w1 w2 w3"


def adapter_of(base: Path, out: Path, **spec: Any) -> tuple[LoraModel, np.ndarray, Path]:
    """A saved LM adapter of the local model `base` with random non-zero factors."""
    options: dict[str, Any] = {"rank": 2, "alpha": 4, "max_length": 32, "seed": 0, **spec}
    lm = LoraModel(LoraSpec(model=str(base), task="lm", **options))
    vec = np.random.default_rng(0).normal(0, 0.5, lm.schema.numel).astype(np.float32)
    lm.save_adapter(vec, out, {})
    return lm, vec, out


def rows(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.strip().splitlines()]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoraModel, np.ndarray, Path]:
    root = tmp_path_factory.mktemp("llama")
    base = hf_folder(root / "base", llama_config())
    return adapter_of(base, root / "adapter")


# --------------------------------------------------------------- 1. end-of-turn ids
def test_generate_stops_at_the_generation_configs_end_of_turn_ids(tmp_path: Path) -> None:
    base = hf_folder(tmp_path / "base", llama_config())
    lm, vec, path = adapter_of(base, tmp_path / "adapter")
    args = ["generate", str(path), "-p", PROMPT, "--no-chat-template", "--format", "json"]
    free = runner.invoke(app, [*args, "--max-new-tokens", "6"])
    assert free.exit_code == 0, free.output
    first = rows(free.stdout)[0]
    assert first["stop"] == "length" and first["tokens"] == 6
    # the model's generation_config names the token it generates third as an end of
    # turn (a list beside the tokenizer's EOS, as Gemma-2-it's [1, 107])
    ids = lm.tokenizer.encode([PROMPT])[0]
    with lm.using(vec), torch.no_grad():
        lm.model.eval()
        out = lm.model.generate(  # type: ignore[operator]
            input_ids=torch.tensor([ids]), max_new_tokens=6, do_sample=False, eos_token_id=None
        )
    new = [int(i) for i in out[0, len(ids) :]]
    eos = lm.tokenizer.eos_id
    assert eos not in new[:3], new
    (base / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos, new[2]]}))
    res = runner.invoke(app, [*args, "--max-new-tokens", "6"])
    assert res.exit_code == 0, res.output
    row = rows(res.stdout)[0]
    assert (row["stop"], row["tokens"]) == ("eos", new.index(new[2]) + 1)


# --------------------------------------------------------------- 2. context length
def test_generate_refuses_prompt_and_new_tokens_past_the_context(tmp_path: Path) -> None:
    from transformers import GPT2Config

    config = GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=16)
    base = hf_folder(tmp_path / "gpt2", config)
    _, _, path = adapter_of(base, tmp_path / "adapter", max_length=16)
    gen = ["generate", str(path), "-p", PROMPT, "--no-chat-template"]
    res = runner.invoke(app, [*gen, "--max-new-tokens", "40"])
    assert_user_error(res, "past the model's context length of 16 tokens")
    assert "hint: lower --max-new-tokens to at most 13" in res.stderr
    ok = runner.invoke(app, [*gen, "--max-new-tokens", "13"])
    assert ok.exit_code == 0, ok.output


# --------------------------------------------------------------- 3. data-file prompts
def test_generate_reads_csv_tsv_and_parquet_prompts_by_column(
    llama: tuple[LoraModel, np.ndarray, Path], tmp_path: Path
) -> None:
    _, _, path = llama
    gen = ["generate", str(path), "--max-new-tokens", "2", "--format", "json", "-i"]
    csv = tmp_path / "prompts.csv"
    csv.write_text('id,prompt\n1,w1 w2\n2,"w3, w4"\n')
    tsv = tmp_path / "prompts.tsv"
    tsv.write_text("prompt\tother\nw1 w2\tx\nw3, w4\ty\n")
    for source in (csv, tsv):
        res = runner.invoke(app, [*gen, str(source)])
        assert res.exit_code == 0, res.output
        assert [r["prompt"] for r in rows(res.stdout)] == ["w1 w2", "w3, w4"]
    pd = pytest.importorskip("pandas")
    turns = [{"role": "user", "content": "w5"}]
    parquet = tmp_path / "prompts.parquet"
    pd.DataFrame({"messages": [turns, None], "prompt": [None, "w6"]}).to_parquet(parquet)
    res = runner.invoke(app, [*gen, str(parquet)])
    assert res.exit_code == 0, res.output
    assert [r["prompt"] for r in rows(res.stdout)] == [turns, "w6"]


def test_generate_refuses_a_data_file_without_a_prompt_column(
    llama: tuple[LoraModel, np.ndarray, Path], tmp_path: Path
) -> None:
    _, _, path = llama
    csv = tmp_path / "alpaca.csv"
    csv.write_text("instruction,output\nw1,w2\n")
    res = runner.invoke(app, ["generate", str(path), "-i", str(csv)])
    assert_user_error(res, "no 'prompt' or 'messages' column; columns are ['instruction'")
    assert "hint: give the prompts a 'prompt' column" in res.stderr
    empty = tmp_path / "empty.csv"  # an empty prompt keeps its place, as a blank line does
    empty.write_text('prompt\nw1\n""\n')
    res = runner.invoke(app, ["generate", str(path), "-i", str(empty), "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    assert len(res.stdout.split("\n")) == 3 and res.stdout.endswith("\n\n"), res.stdout


# --------------------------------------------------------------- 4. predict on chats
def test_predict_on_chat_turns_hints_at_its_own_options_and_generate(
    llama: tuple[LoraModel, np.ndarray, Path], tmp_path: Path
) -> None:
    _, _, path = llama
    chat = {"messages": [{"role": "user", "content": "w1"}, {"role": "assistant", "content": "w2"}]}
    data = tmp_path / "messages.jsonl"
    data.write_text(json.dumps(chat) + "\n")
    predict = ["predict", str(path), "--text-column", "messages"]
    for args, stdin in (([*predict, "-i", str(data)], None), (predict, json.dumps(chat) + "\n")):
        res = runner.invoke(app, args, input=stdin)
        assert_user_error(res, "column 'messages' holds chat turns, not a text")
        hint = res.stderr.splitlines()[1]
        assert "--text-column" in hint and "declora-node generate" in hint
        assert "--messages-column" not in hint and "--task" not in hint


# --------------------------------------------------------------- 5. embeddings, DoRA
@pytest.mark.parametrize(
    "spec",
    [{"targets": ("embed_tokens",)}, {"targets": ("embed_tokens", "q_proj")}, {"dora": True}],
    ids=["embed_tokens", "embed_tokens+q_proj", "dora"],
)
def test_an_embedding_or_dora_adapter_saves_loads_and_exports(
    spec: dict[str, Any], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    from declora.node.adapter_io import export_merged, load_adapter

    base = hf_folder(tmp_path / "base", llama_config())
    lm, vec, path = adapter_of(base, tmp_path / "adapter", **spec)
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    with torch.no_grad():
        plain = AutoModelForCausalLM.from_pretrained(base)(input_ids=ids).logits
        with lm.using(vec):
            lm.model.eval()
            trained = lm.model(input_ids=ids).logits
        loaded = load_adapter(path)
        assert torch.allclose(loaded.model(input_ids=ids).logits, trained, atol=1e-5)
        out, _ = export_merged(path, tmp_path / "merged")
        merged = AutoModelForCausalLM.from_pretrained(out)(input_ids=ids).logits
    assert torch.allclose(merged, trained, atol=1e-4)
    assert float((trained - plain).abs().max()) > 1e-3  # the adapter changes the model
    from safetensors import safe_open

    with safe_open(str(path / "adapter_model.safetensors"), "pt") as saved:
        names = list(saved.keys())
    assert not any("base_layer" in n or n.endswith("embed_tokens.weight") for n in names), names


def test_peft_names_follow_what_peft_saves() -> None:
    from declora.node.lora_names import saved_name as peft_name

    pre = "base_model.model.model."
    assert peft_name(pre + "embed_tokens.lora_embedding_A.default") == (
        pre + "embed_tokens.lora_embedding_A"
    )
    assert peft_name(pre + "q_proj.lora_A.default.weight") == pre + "q_proj.lora_A.weight"
    assert peft_name(pre + "q_proj.lora_magnitude_vector.default.weight") == (
        pre + "q_proj.lora_magnitude_vector"
    )
    assert peft_name("base_model.model.score.modules_to_save.default.weight") == (
        "base_model.model.score.weight"
    )


# --------------------------------------------------------------- 6. tied embeddings
@pytest.mark.parametrize("target", ["lm_head", "embed_tokens"])
def test_a_tied_embedding_target_is_refused(target: str, tmp_path: Path) -> None:
    from declora.node.model_source import ModelError

    base = hf_folder(tmp_path / "tied", llama_config(tie_word_embeddings=True))
    with pytest.raises(ModelError, match="tie"):
        LoraModel(LoraSpec(model=str(base), task="lm", targets=(target,), rank=2))


# --------------------------------------------------------------- 7. lm partition
def test_unlabelled_lm_data_falls_back_to_iid_unless_a_scheme_was_chosen(
    tmp_path: Path,
) -> None:
    from declora.node.simulator import SimConfig
    from declora.node.workload import load_workload

    turns = [{"role": "user", "content": "w1"}, {"role": "assistant", "content": "w2"}]
    data = tmp_path / "messages.jsonl"
    data.write_text("".join(json.dumps({"messages": turns, "n": i}) + "\n" for i in range(12)))
    options: dict[str, Any] = {"model": "tiny-llama", "task": "lm", "data": str(data)}
    lm = LoraModel(LoraSpec(model="tiny-llama", task="lm", rank=2, alpha=4))
    default = SimConfig(**options, nodes=2, dedupe=False)
    assert default.partition_scheme.startswith("dirichlet")  # simulate's default
    work = load_workload(default, 2, lm=lm)
    assert work.recipe.partition_scheme == "iid"
    assert sum(len(p) for p in work.parts) + len(work.validation_rows) == len(work.train.texts)
    chosen = SimConfig(**options, nodes=2, dedupe=False, partition_scheme="dirichlet:0.5")
    with pytest.raises(DataError, match="no label column 'label'") as err:
        load_workload(chosen, 2, lm=lm)
    assert "--partition-scheme iid" in err.value.hint


@pytest.mark.parametrize("method", ["conlora", "decaf", "kill-revive"])
def test_a_method_pairing_linear_factors_refuses_an_embedding_target(
    method: str, tmp_path: Path
) -> None:
    """ConLoRA, DeCAF and Kill-and-Revive pair each linear layer's A and B: an
    embedding's LoRA factors would be left out of what they freeze, multiply or select,
    so `--targets embed_tokens` is refused with them (Dec-LoRA takes it, above)."""
    from declora.node.model_source import ModelError

    base = hf_folder(tmp_path / "base", llama_config())
    spec = LoraSpec(
        model=str(base), task="lm", rank=2, alpha=4, max_length=32, seed=0,
        targets=("embed_tokens", "q_proj"), method=method,
    )  # fmt: skip
    with pytest.raises(ModelError, match=f"--method {method} pairs .* embedding"):
        LoraModel(spec)
