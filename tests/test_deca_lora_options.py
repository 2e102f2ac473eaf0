"""DECA refuses the LoRA options it ignores (they are in its fingerprint, so they
parted its nodes), and the other methods refuse DECA's; a default DECA run keeps the
spec, so the fingerprint, it always had."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from test_methods_audit import refusal
from typer.testing import CliRunner

from declora.cli.app import app
from declora.node.recipe import Recipe, named_as

runner = CliRunner()


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("rank", 4, "--rank"),
        ("alpha", 8, "--alpha"),
        ("targets", ("query",), "--targets"),
        ("dora", True, "--dora"),
        ("rslora", True, "--rslora"),
        ("lora_dropout", 0.1, "--lora-dropout"),
    ],
)
def test_deca_refuses_the_lora_options_it_ignores(field: str, value: object, flag: str) -> None:
    assert refusal(method="deca", **{field: value}) == (
        f"{flag} has no effect with --method deca (it trains the base model's blocks, not LoRA)"
    )


@pytest.mark.parametrize(("field", "value"), [("deca_blocks", 2), ("deca_block_rounds", 3)])
@pytest.mark.parametrize("method", ["dec-lora", "conlora", "decaf", "kill-revive"])
def test_the_other_methods_refuse_decas_options(method: str, field: str, value: int) -> None:
    flag = "--" + field.replace("_", "-")
    assert refusal(method=method, **{field: value}).startswith(
        f"{flag} has no effect with --method {method} (it is for --method deca)"
    )


def test_a_default_deca_spec_is_what_it_always_was() -> None:
    """The defaults given outright still pass, and a default DECA run records the spec
    (so the fingerprint) it always did: its checkpoints still resume."""
    given = Recipe(method="deca", rank=8, alpha=16, deca_blocks=0, deca_block_rounds=5)
    assert given.lora_spec() == Recipe(method="deca").lora_spec()
    assert Recipe(method="deca").lora_spec().as_dict() == {
        "model": "minilm",
        "task": "cls",
        "rank": 8,
        "alpha": 16,
        "targets": [],
        "max_length": 64,
        "seed": 0,
        "method": "deca",
        "deca_blocks": 0,
        "deca_block_rounds": 5,
    }


def test_simulate_refuses_a_rank_with_deca_in_two_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the run should have been refused before any work")

    monkeypatch.setattr("declora.cli.experiment.run_one", refuse)
    res = runner.invoke(
        app, ["simulate", "--method", "deca", "--rank", "4", "-o", str(tmp_path / "o")]
    )
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert lines == [
        "error: bad configuration: --rank has no effect with --method deca (it trains the "
        "base model's blocks, not LoRA)",
        lines[1],
    ]
    assert lines[1].startswith("hint: ")
    assert not (tmp_path / "o").exists()


def test_the_refusal_names_the_options_as_given() -> None:
    with named_as(lambda field: f"n5.toml key {field!r}"), pytest.raises(ValidationError) as info:
        Recipe(method="deca", rank=4)
    assert "n5.toml key 'rank' has no effect with n5.toml key 'method' deca" in str(info.value)


def test_the_lora_defaults_deca_checks_against_are_the_recipes() -> None:
    """`methods.LORA_DEFAULTS` and `DECA_DEFAULTS` are the recipe's own field defaults
    (a changed default there must not make every DECA run refused)."""
    from declora.node.methods import DECA_DEFAULTS, LORA_DEFAULTS
    from declora.node.recipe import Recipe

    for field, default in {**LORA_DEFAULTS, **DECA_DEFAULTS}.items():
        assert Recipe.model_fields[field].get_default(call_default_factory=True) == default, field
