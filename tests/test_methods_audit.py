"""The methods seen from a user's side: DECA's codec and LoRA options, the errors'
wording and hints, the simulator's finish warning and table, the resume refusal
across methods, DECA's model card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASS_NAMES, NUM_CLASSES, TINY_SPEC, tiny_sim_config
from pydantic import ValidationError
from typer.testing import CliRunner

from declora.node.adapter_card import DECLORA_INFO, MODEL_CARD
from declora.node.adapter_io import recorded_differences
from declora.node.deca_model import BlockModel, layer_groups, split_blocks
from declora.node.model_source import ModelError
from declora.node.models import load_base
from declora.node.quantize import check_runtime
from declora.node.recipe import Recipe
from declora.node.report import markdown_table, to_jsonable
from declora.node.simulator import Simulation
from declora.node.trainer import LoraModel, LoraSpec

runner = CliRunner()


def refusal(**fields: object) -> str:
    """The one message a `Recipe` of `fields` is refused with."""
    with pytest.raises(ValidationError) as info:
        Recipe(**fields)  # type: ignore[arg-type]
    errors = info.value.errors()
    assert len(errors) == 1, errors
    return str(errors[0]["msg"]).removeprefix("Value error, ")


# ---------------------------------------------------- 1. DECA with a lossy codec
@pytest.mark.parametrize(("codec", "rounds", "least"), [("q4", 1, 5), ("q4", 4, 5), ("q8", 1, 2)])
def test_deca_refuses_block_turns_too_short_for_its_codec(
    codec: str, rounds: int, least: int
) -> None:
    msg = refusal(method="deca", codec=codec, deca_blocks=2, deca_block_rounds=rounds)
    assert msg.startswith(
        f"--method deca with --codec {codec} needs --deca-block-rounds {least} or more, "
        f"not {rounds}: "
    )
    assert "\n" not in msg


@pytest.mark.parametrize("codec", ["q2", "topk:0.5", "topk:0.1+q8"])
def test_deca_refuses_the_codecs_whose_nodes_never_agree(codec: str) -> None:
    msg = refusal(method="deca", codec=codec, deca_block_rounds=20)
    assert msg.startswith(f"--method deca cannot be combined with --codec {codec}: ")


@pytest.mark.parametrize(
    ("codec", "rounds"), [("q4", 5), ("q8", 2), ("fp16", 1), ("bf16", 1), ("fp32", 1)]
)
def test_deca_takes_the_turns_measured_to_agree(codec: str, rounds: int) -> None:
    assert Recipe(method="deca", codec=codec, deca_block_rounds=rounds).codec == codec


def test_a_finish_out_of_rounds_with_the_nodes_apart_warns(synthetic_jsonl: Path) -> None:
    """One finish round cannot reach a tolerance of 1e-12: run.json and the table say
    the nodes do not agree; with no finish asked for, nothing is said."""
    cfg = tiny_sim_config(
        synthetic_jsonl, nodes=4, rounds=1, local_steps=1, consensus_rounds=1, consensus_tol=1e-12
    )
    res = to_jsonable(Simulation(cfg).run(validate=False))
    (line,) = res["final"]["warnings"]
    assert line.startswith("the consensus finish stopped at --consensus-rounds 1 with the nodes ")
    assert "above --consensus-tol 1e-12: they do not agree" in line
    assert f"\nwarning: run: {line}\n" in markdown_table([("run", res)])
    quiet = tiny_sim_config(synthetic_jsonl, nodes=4, rounds=1, local_steps=1, consensus_rounds=0)
    assert "warnings" not in to_jsonable(Simulation(quiet).run(validate=False))["final"]


# ------------------------------------------------- 3. ConLoRA on an embedding
def lora_model(method: str, targets: tuple[str, ...]) -> LoraModel:
    spec = LoraSpec(**{**TINY_SPEC.as_dict(), "method": method, "targets": targets})  # type: ignore[arg-type]
    return LoraModel(spec, num_labels=NUM_CLASSES, label_names=CLASS_NAMES)


@pytest.mark.parametrize("method", ["conlora", "decaf"])
def test_an_embedding_target_is_named_with_a_hint(method: str) -> None:
    with pytest.raises(ModelError) as info:
        lora_model(method, ("word_embeddings",))
    assert info.value.message.startswith(
        f"--method {method} pairs the A and B factors of linear layers: it cannot adapt "
        "the embedding "
    )
    assert info.value.hint == "give --targets linear layers only, or --method dec-lora"


def test_conlora_without_an_a_factor_has_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("declora.node.trainer.freeze_lora_a", lambda model: 0)
    with pytest.raises(ModelError) as info:
        lora_model("conlora", ("query",))
    assert info.value.message == "--method conlora: the model has no LoRA A factor to freeze"
    assert info.value.hint == "give --targets linear layers, or --method dec-lora"


# ------------------------------------------------------- 4. hints of model errors
def test_too_many_deca_blocks_has_a_hint() -> None:
    groups = [["a.layer.0.w"], ["a.layer.1.w"]]
    with pytest.raises(ModelError) as info:
        split_blocks(groups, 5)
    assert info.value.message == "--deca-blocks 5: the model has only 2 layers"
    assert info.value.hint == "give --deca-blocks at most 2, or 0 for one block per 2 layers"


def test_a_model_without_layers_has_a_hint() -> None:
    with pytest.raises(ModelError) as info:
        layer_groups(["embeddings.weight", "classifier.weight"])
    assert info.value.message == "--method deca: the model has no numbered transformer layers"
    assert info.value.hint.startswith("use a transformer model (layers named layer.N")


def test_deca_on_a_quantized_base_has_a_hint() -> None:
    with pytest.raises(ModelError) as info:
        BlockModel(LoraSpec(model="tiny-bert", method="deca", quantize="nf4"), num_labels=2)
    assert info.value.hint.startswith("drop --quantize")


@pytest.mark.parametrize(
    ("quantize", "precision", "hint"),
    [("nf5", "fp32", "--quantize none"), ("none", "fp8", "--precision fp32")],
)
def test_unknown_quantize_and_precision_have_hints(
    quantize: str, precision: str, hint: str
) -> None:
    with pytest.raises(ModelError) as info:
        check_runtime(quantize, precision, "cpu")
    assert hint in info.value.hint


def test_a_rank_below_one_has_a_hint() -> None:
    from declora.node.lora_targets import wrap_lora

    base = load_base("tiny-bert", "cls", 2, seed=0)
    with pytest.raises(ModelError) as info:
        wrap_lora(base, 0, 1, ("query",), seed=0)
    assert info.value.hint == "give --rank 1 or more (8 by default)"


# ---------------------------------------- 5. options named as the user gave them
def in_file(field: str) -> str:
    return f"n5.toml key {field!r}"


def test_checks_of_several_options_name_each_as_given() -> None:
    from declora.node.recipe import named_as

    with named_as(in_file), pytest.raises(ValidationError) as info:
        Recipe(method="deca", gradient_tracking=True)
    assert "n5.toml key 'method' deca cannot be combined with n5.toml key 'gradient_tracking'" in (
        str(info.value)
    )
    with named_as(in_file), pytest.raises(ValidationError) as info:
        Recipe(weighting="examples", gradient_tracking=False)
    assert "n5.toml key 'weighting' examples needs n5.toml key 'gradient_tracking'" in str(
        info.value
    )
    # outside, flags again
    assert refusal(method="deca", gradient_tracking=True) == (
        "--method deca cannot be combined with --gradient-tracking"
    )


# ----------------------------------------------------- 6. the table's consensus
def test_the_table_shows_the_distance_before_and_after_the_finish() -> None:
    res = {
        "config": {"task": "cls"},
        "rounds": [{"phase": "train", "consensus_mean": 0.143}, {"phase": "consensus"}],
        "final": {
            "average": {"accuracy": 0.5},
            "best_average_accuracy": 0.5,
            "after_consensus": {"mean_accuracy": 0.5, "worst_accuracy": 0.5},
            "bytes_sent_per_node": 2048.0,
            "consensus_max": 9.7e-4,
        },
    }
    header, _, row = markdown_table([("run", res)]).splitlines()
    assert header.endswith("| consensus dist. before → max after finish |")
    assert row.endswith("| 1.43e-01 → 9.70e-04 |")


# ------------------------------------------ the resume refusal across methods
def test_a_resume_across_methods_names_the_method_first(tmp_path: Path) -> None:
    """A DECA checkpoint met by a Kill-and-Revive node: the method comes first; DECA's
    own options and the weighting's tracking explanation are not listed."""
    lm = lora_model("kill-revive", TINY_SPEC.targets)
    lm.agreed = {"weighting": "examples"}
    info = lm.recorded({})
    spec = dict(info["spec"])  # type: ignore[arg-type]
    spec.update(method="deca", deca_blocks=2, deca_block_rounds=5)
    info.update(spec=spec, agreed={})
    (tmp_path / DECLORA_INFO).write_text(json.dumps(info, default=str))
    diffs = recorded_differences(tmp_path, lm)
    assert diffs[0] == "method: 'deca' there, 'kill-revive' here"
    assert not any(d.startswith("deca_") for d in diffs), diffs
    assert "weighting: 'nodes' there, 'examples' here" in diffs


# ------------------------------------------------------------ DECA's model card
def test_a_deca_folder_has_a_model_card(tmp_path: Path) -> None:
    spec = LoraSpec(model="tiny-bert", max_length=32, method="deca", deca_blocks=2)
    lm = BlockModel(spec, label_names=CLASS_NAMES)
    path = tmp_path / "model"
    lm.save_adapter(np.array(lm.full_base_vector()), path, {"round": 3})
    card = (path / MODEL_CARD).read_text()
    assert card.startswith("---\nbase_model: ")
    assert "library_name: transformers" in card
    assert "# Full model (DECA): " in card
    assert "DECA block-wise full fine-tuning (no LoRA): 2 blocks of layers" in card
    assert f"AutoModelForSequenceClassification.from_pretrained({str(path)!r})" in card
    assert json.loads((path / DECLORA_INFO).read_text())["fingerprint"] in card
