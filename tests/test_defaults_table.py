"""README's "Defaults by command" table is the code's: every row and cell is computed
here from the commands' config models (`NodeSettings` for `start` and `config`,
`SimConfig` for `simulate`, `LabConfig` for `lab`, `experiment`'s `BASE` for `--task
cls`), each built with no option given, so a changed default or a changed cell fails.

`python tests/test_defaults_table.py` prints the table to paste into README.md.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from declora.node.recipe import LM_EVAL_CAP

README = Path(__file__).resolve().parent.parent / "README.md"
HEADING = "### Defaults by command"
COMMANDS = ("start", "simulate", "lab", "experiment")
HEADER = ("option", "`start`", "`simulate`", "`lab`", "`experiment` (`--task cls`'s base run)")

FIRST = ("nodes", "rounds", "partition_scheme")  # rows first; then in the models' order
# how a value shows where it is not the field's own
VIEWS: dict[str, Callable[[Any], object]] = {
    "gossip_steps": lambda cfg: cfg.exchanges_per_round,  # unset: 1 exchange a round
    "alpha": lambda cfg: cfg.lora_alpha,  # experiment's 16 is 2 x rank, as elsewhere
    "threads": lambda cfg: cfg.threads or 0,  # 0 and unset: torch's default
    "max_eval": lambda cfg: "all" if cfg.eval_cap == 0 else cfg.max_eval,
}
# what a value means, beside it
NOTES = {
    ("rounds", "0"): "until stopped",
    ("swarm_size", "0"): "lr not scaled",
    ("max_eval", "all"): f"lm: {LM_EVAL_CAP}",
}

# how each default resolved from other options is worked out (`Recipe._resolve_defaults`,
# `Recipe.fill_swarm_defaults` for simulate and lab, `fill_daemon_defaults` for start):
# its cells show "(resolved)" beside the value it takes when no option is given
RULES = {
    "swarm_size": "`simulate` and `lab`: `--nodes` (each node's lr is `--lr` x sqrt of "
    "it); `start` cannot know the swarm's size",
    "lr_schedule": "`auto`: cosine when `--rounds` > 0, else constant",
    "warmup_steps": "10% of rounds x `--local-steps` when the lr decays, else 0",
    "gradient_tracking": "on with `--robust-mixing none` where `--method`, `--codec` and "
    "`--consensus-step` allow it",
    "weighting": "`auto`: examples with gradient tracking unless the codec is fp16, else nodes",
    "gossip_steps": "`simulate` and `lab`: from `--topology`'s spectral gap; `start` "
    "knows no graph: 1 unless given",
    "gossip_acceleration": "`auto`: in `simulate` and `lab` Chebyshev with `--topology`'s "
    "lambda where the method and options allow it (none where one exchange mixes "
    "exactly); in `start` none (give `chebyshev:LAMBDA`)",
    "step_after_mixing": "on in `simulate` and `lab` where allowed (as Chebyshev); off in `start`",
}


@contextmanager
def _no_environment() -> Iterator[None]:
    """No `DECLORA_*` variable (any case: the settings read them so) reaches `start`'s
    settings while inside."""
    saved = {k: v for k, v in os.environ.items() if k.upper().startswith("DECLORA_")}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


def configs() -> dict[str, BaseModel]:
    """Each command's configuration when no option is given."""
    from declora.cli.experiment import BASE
    from declora.cli.lab import LabConfig
    from declora.node.settings import resolve_settings
    from declora.node.simulator import SimConfig

    with _no_environment():
        start = resolve_settings({}, None).settings
    return {"start": start, "simulate": SimConfig(), "lab": LabConfig(), "experiment": BASE}


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _value(cfg: BaseModel, field: str) -> str:
    view = VIEWS.get(field)
    return _shown(view(cfg) if view else getattr(cfg, field))


def _resolved(cfg: BaseModel, field: str) -> bool:
    """Whether `field` of `cfg` was not given but worked out from the other options."""
    if field in cfg.model_fields_set:
        return False
    declared = type(cfg).model_fields[field].get_default()
    return declared in (None, "auto") or declared != getattr(cfg, field)


def cell(command: str, cfg: BaseModel, field: str) -> str:
    """What the README shows for `field` of `command` (`cfg`, no option given)."""
    if field not in type(cfg).model_fields:
        return "—"
    value = _value(cfg, field)
    why = NOTES.get((field, value))
    if why is None and _resolved(cfg, field):
        assert field in RULES, f"{command} resolves {field}: give RULES its rule"
        why = "resolved"
    return f"`{value}`" + (f" ({why})" if why else "")


def rows(cfgs: dict[str, BaseModel]) -> list[str]:
    """The fields whose default differs between the commands that have the option."""
    fields: list[str] = []
    for cfg in cfgs.values():
        fields += [f for f in type(cfg).model_fields if f not in fields]
    out = []
    for field in fields:
        having = [c for c in cfgs.values() if field in type(c).model_fields]
        if len({_value(c, field) for c in having}) > 1:
            out.append(field)
    return sorted(out, key=lambda f: FIRST.index(f) if f in FIRST else len(FIRST))


def table() -> str:
    """The table, then a line per resolved default saying how it is resolved."""
    cfgs = configs()
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    resolved = []
    for field in rows(cfgs):
        cells = [cell(c, cfgs[c], field) for c in COMMANDS]
        lines.append(f"| `{_flag(field)}` | " + " | ".join(cells) + " |")
        resolved += [field] if any("(resolved)" in c for c in cells) else []
    lines.append("")
    lines += [f"- `{_flag(field)}`: {RULES[field]}." for field in resolved]
    return "\n".join(lines)


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _readme_table() -> str:
    """The table and the resolved defaults' lines of README's section."""
    text = README.read_text(encoding="utf-8")  # its dashes and signs, whatever the locale
    assert HEADING in text, f"README.md has no {HEADING!r} section"
    section = text.split(HEADING, 1)[1].split("\n#", 1)[0].splitlines()
    table = [line for line in section if line.startswith("|")]
    rules = [line for line in section if line.startswith("- `--")]
    return "\n".join([*table, "", *rules])


def test_readme_table_is_the_codes_defaults() -> None:
    """Every row and cell as computed from the code (rerun this file as a script to
    print the table after a default changes)."""
    assert _readme_table() == table()


def test_every_command_differs_somewhere_and_the_known_ones_are_rows() -> None:
    """The rows the newcomer missed are there (a guard on `rows`)."""
    fields = rows(configs())
    for field in (
        "partition_scheme",
        "consensus_rounds",
        "eval_every",
        "max_eval",
        "round_deadline",
        "rounds",
        "nodes",
        "lr",
        "gossip_steps",
        "gossip_acceleration",
        "validation_fraction",
    ):
        assert field in fields


def test_start_column_is_what_config_prints() -> None:
    """`declora-node config` prints `start`'s settings: the same values as the column."""
    from typer.testing import CliRunner

    from declora.cli.app import app

    with _no_environment():
        res = CliRunner().invoke(app, ["config", "--format", "json"])
    assert res.exit_code == 0, res.output
    printed = json.loads(res.stdout)
    start = configs()["start"]
    for field in rows(configs()):
        if field in printed:
            assert printed[field]["value"] == start.model_dump(mode="json")[field], field
            assert printed[field]["source"] == "default", field


if __name__ == "__main__":
    sys.stdout.write(table() + "\n")
