"""The training recipe: the options every node of a swarm shares, under one name each.

`Recipe` is one pydantic model, its fields in three parts (`DataRecipe` and
`TrainingRecipe`, in `node/recipe_fields.py`, then mixing and evaluation); the daemon's
settings (`NodeSettings`), the simulator's config (`SimConfig`) and the lab's
(`LabConfig`) extend it, so an option has the same name as a flag (`--robust-mixing`),
an environment variable (`DECLORA_ROBUST_MIXING`), a config-file key (`robust_mixing`)
and in JSON output.
Subclasses may change a default (a lab runs a fixed number of rounds), never a
meaning. Bad values raise a ValidationError naming the option.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from declora.node.acceleration import (
    AUTO,
    LAMBDA_DECIMALS,
    accelerated_by_default,
    acceleration_problem,
    step_after_mixing_problem,
)
from declora.node.data import BBC_TEST_FRACTION
from declora.node.methods import (
    DECA_DEFAULTS,
    LORA_DEFAULTS,
    Namer,
    combination_problem,
    flag,
    gossip_steps_problem,
    ignored_options_problem,
)
from declora.node.recipe_fields import LM_EVAL_CAP, WARMUP_SHARE, TrainingRecipe
from declora.node.schedule import DECAYING

MAX_GOSSIP_STEPS = 16  # exchanges a training round (--gossip-steps)

# the value an agreed fact has when `Recipe.agreed_facts` leaves it out (the plain way;
# lr_schedule and warmup_steps: a flat schedule, whose facts are all left out): a record
# without the fact means this value (`adapter_io.recorded_differences` shows it so)
UNRECORDED_FACTS: dict[str, object] = {
    "lr_schedule": "constant",
    "warmup_steps": 0,
    "weighting": "nodes",
    "gossip_steps": 1,
    "gossip_acceleration": "none",
    "step_after_mixing": False,
    "validation_fraction": 0.0,
    "test_fraction": BBC_TEST_FRACTION,
    "dedupe": True,
}

# how the checks of several options name each (a field -> "--flag" by default): the
# daemon's settings name an option as the user gave it (`named_as`)
_NAMER: ContextVar[Namer] = ContextVar("option_namer", default=flag)


def given_as(field: str) -> str:
    """Option `field` as the user gave it (`named_as`), else as its flag: for a check of
    several options outside the recipe (the daemon's settings)."""
    return _NAMER.get()(field)


@contextmanager
def named_as(namer: Namer) -> Iterator[None]:
    """While inside, the recipe's checks of several options name each by `namer` (a
    field name -> how the user gave it, e.g. "n5.toml key 'method'"), not as a flag."""
    token = _NAMER.set(namer)
    try:
        yield
    finally:
        _NAMER.reset(token)


class Recipe(TrainingRecipe):
    """Model, data, LoRA shape, local training and mixing: what a swarm agrees on."""

    # mixing
    codec: str = Field("fp32", description="message codec: fp32, fp16, bf16, q8, q4, q2, topk:F")
    consensus_step: float | None = Field(
        None,
        gt=0,
        le=1,
        description="gamma of the mixing step",
        json_schema_extra={"default_text": "by codec"},
    )
    robust_mixing: str = Field("none", description="none, clip[:C] or trim[:F] (node/robust.py)")
    gradient_tracking: bool | None = Field(
        None,
        description="correct local steps toward the swarm's gradient (node/tracking.py); "
        "default: on where the method and mixing allow it",
    )
    weighting: Literal["auto", "examples", "nodes"] = Field(
        "auto",
        description="whose loss the swarm minimises: examples (each node's gradient weighs "
        "its examples, lm: tokens; needs tracking) or nodes (each the same); auto: examples "
        "with tracking, unless the codec is fp16",
    )
    gossip_steps: int | None = Field(
        None,
        ge=1,
        le=MAX_GOSSIP_STEPS,
        description="exchanges per training round (the extra ones only mix); default: "
        "from the topology's spectral gap where it is known (simulate, lab), else 1",
    )
    gossip_acceleration: str = Field(
        AUTO,
        description="chebyshev[:LAMBDA] or none: Chebyshev-accelerated mixing of a round's "
        "exchanges and the finish (node/acceleration.py); lambda from the topology in "
        "simulate and lab, else give chebyshev:LAMBDA",
        json_schema_extra={"default_text": "auto: chebyshev in simulate/lab where allowed"},
    )
    step_after_mixing: bool | None = Field(
        None,
        description="hold each round's optimizer step back until its exchanges have mixed "
        "tracking's z: one step along the neighbours' mixed gradient (needs tracking, K=1)",
        json_schema_extra={"default_text": "on in simulate/lab where allowed"},
    )
    consensus_rounds: int = Field(
        0, ge=0, le=1_000_000, description="gossip-only rounds after the last one"
    )
    consensus_tol: float = Field(
        1e-3, gt=0, le=1e6, description="consensus finish stops below this"
    )
    # evaluation
    eval_every: int = Field(
        1, ge=0, le=1_000_000, description="evaluate every N rounds (0 = only at the end)"
    )
    max_eval: int | None = Field(
        None,
        ge=0,
        le=10_000_000,
        description="cap on test and validation examples each (0 = all)",
        json_schema_extra={"default_text": f"all for cls, {LM_EVAL_CAP} for lm"},
    )

    @field_validator("codec")
    @classmethod
    def _codec_ok(cls, v: str) -> str:
        from declora.node.codecs import make_codec  # only when a value is checked

        return make_codec(v).spec

    @field_validator("robust_mixing")
    @classmethod
    def _robust_ok(cls, v: str) -> str:
        from declora.node.robust import make_robust

        return make_robust(v).spec

    @field_validator("gossip_acceleration")
    @classmethod
    def _acceleration_ok(cls, v: str) -> str:
        from declora.node.acceleration import NO_ACCELERATION, parse_acceleration

        if v.strip().lower() == AUTO:
            return AUTO
        lam = parse_acceleration(v)
        if lam is None:
            return NO_ACCELERATION
        return "chebyshev" if lam < 0 else f"chebyshev:{lam!r}"

    @property
    def chebyshev_lambda(self) -> float | None:
        """The given lambda of Chebyshev gossip (None: off, or still to come from the
        topology, or `auto` still to be resolved)."""
        from declora.node.acceleration import parse_acceleration

        if self.gossip_acceleration == AUTO:
            return None
        lam = parse_acceleration(self.gossip_acceleration)
        return None if lam is None or lam < 0 else lam

    @model_validator(mode="after")
    def _resolve_defaults(self) -> Recipe:
        """Fill in the adaptive defaults (`None`/"auto") from the other options, so a
        dump of the recipe states every value a run used."""
        if self.lr_schedule == "auto":
            _fill(self, "lr_schedule", "cosine" if self.rounds > 0 else "constant")
        if self.warmup_steps is None:
            total = self.rounds * self.local_steps
            decaying = self.lr_schedule in DECAYING and total > 1
            warmup = min(math.ceil(WARMUP_SHARE * total), total - 1) if decaying else 0
            _fill(self, "warmup_steps", warmup)
        if self.gradient_tracking is None:
            allowed = self.robust_mixing == "none" and not combination_problem(
                self.method, self.codec, self.consensus_step, self.robust_mixing, True
            )
            _fill(self, "gradient_tracking", allowed)
        if self.weighting == "auto":
            weigh = self.gradient_tracking and "fp16" not in self.codec  # z's range: below
            _fill(self, "weighting", "examples" if weigh else "nodes")
        return self

    @model_validator(mode="after")
    def _recipe_ok(self) -> Recipe:
        n = _NAMER.get()
        tracking, weighting = n("gradient_tracking"), n("weighting")
        if self.gradient_tracking and self.robust_mixing != "none":
            raise ValueError(
                f"{tracking} cannot be combined with {n('robust_mixing')}: tracking "
                "trusts every neighbour's gradient message"
            )
        if self.weighting == "examples" and not self.gradient_tracking:
            raise ValueError(
                f"{weighting} examples needs {tracking}: without it AdamW's "
                f"per-node step normalises a node's weight away (use {weighting} nodes)"
            )
        if self.weighting == "examples" and "fp16" in self.codec:
            raise ValueError(
                f"{n('codec')} {self.codec} cannot carry tracking's z under {weighting} "
                "examples: z scales with the share's examples and fp16 refuses |x| >= 65520 "
                f"(use bf16, q8 or fp32, or {weighting} nodes)"
            )
        if self.lr_schedule in DECAYING:
            schedule = f"{n('lr_schedule')} {self.lr_schedule}"
            if self.rounds == 0:
                raise ValueError(
                    f"{schedule} needs {n('rounds')} > 0: it decays over "
                    "rounds x local steps (use constant to train until stopped)"
                )
            if (self.warmup_steps or 0) >= self.rounds * self.local_steps:
                raise ValueError(
                    f"{n('warmup_steps')} {self.warmup_steps} leaves no step to decay over: "
                    f"rounds x local steps is {self.rounds * self.local_steps}"
                )
        return self

    @property
    def eval_cap(self) -> int:
        """Test (and validation) examples to evaluate on (0 = all): `max_eval`, or the
        task's default."""
        if self.max_eval is not None:
            return self.max_eval
        return 0 if self.task == "cls" else LM_EVAL_CAP

    @model_validator(mode="after")
    def _method_ok(self) -> Recipe:
        name = _NAMER.get()
        ignored = LORA_DEFAULTS if self.method == "deca" else DECA_DEFAULTS
        values = {f: getattr(self, f) for f in ignored}
        if values.get("alpha") == 2 * self.rank:  # the default's value, given
            values["alpha"] = None
        problem = (
            ignored_options_problem(self.method, values, name)
            or combination_problem(
                self.method,
                self.codec,
                self.consensus_step,
                self.robust_mixing,
                bool(self.gradient_tracking),
                block_rounds=self.deca_block_rounds,
                name=name,
            )
            or gossip_steps_problem(self.method, self.exchanges_per_round, name)
        )
        if not problem and self.gossip_acceleration not in (AUTO, "none"):
            problem = acceleration_problem(self.method, self.robust_mixing, name)
        if not problem and self.step_after_mixing:
            problem = step_after_mixing_problem(
                self.method, bool(self.gradient_tracking), self.local_steps, self.precision, name
            )
        if problem:
            raise ValueError(problem)
        return self

    def require_test_set(self, run: str) -> None:
        """ValueError when `test_fraction` is 0: `run` (a simulated or lab run) is scored
        on the test set, so only `start` may hold none out."""
        if not self.test_fraction:
            raise ValueError(
                f"--test-fraction 0 holds out no test set, and {run} is scored on it: give "
                "a share above 0 (0 is for `start`)"
            )

    def fill_swarm_defaults(self, nodes: int, topology: str, mixing: str = "mh") -> None:
        """For a caller that knows the swarm (simulate, lab): `swarm_size` 0 becomes
        `nodes`, `gossip_steps` unset comes from the topology's spectral gap
        (`mixing.gossip_steps_for`), the step after mixing and Chebyshev gossip left to
        their defaults are on where `accelerated_by_default` allows them, and a bare
        `chebyshev` gets the topology's lambda (`mixing.second_eigenvalue`). Call it
        from a validator."""
        from declora.node.mixing import gossip_steps_for, mixing_matrix, second_eigenvalue
        from declora.node.topology import from_spec

        if self.swarm_size == 0:
            _fill(self, "swarm_size", nodes)
        w = None
        if self.gossip_steps is None:
            w = mixing_matrix(mixing, from_spec(topology, nodes, seed=self.seed))
            steps = gossip_steps_for(w)
            _fill(self, "gossip_steps", 1 if gossip_steps_problem(self.method, steps) else steps)
        accelerate = accelerated_by_default(self)
        if self.step_after_mixing is None:
            _fill(self, "step_after_mixing", accelerate)
        auto = self.gossip_acceleration == AUTO
        if auto:
            _fill(self, "gossip_acceleration", "chebyshev" if accelerate else "none")
        if self.gossip_acceleration == "chebyshev":
            if w is None:
                w = mixing_matrix(mixing, from_spec(topology, nodes, seed=self.seed))
            # 12 decimals: the same value on every machine (an eigensolver's last digits
            # are not), which every node must agree on
            lam = round(second_eigenvalue(w), LAMBDA_DECIMALS)
            mixes = lam < 1.0
            if not mixes and not auto:
                raise ValueError(
                    f"--gossip-acceleration chebyshev: the {topology} graph of {nodes} "
                    "nodes does not mix (second eigenvalue 1)"
                )
            # auto: nothing to accelerate where one exchange mixes exactly (lambda 0)
            useful = mixes and (lam > 0.0 or not auto)
            _fill(self, "gossip_acceleration", f"chebyshev:{lam!r}" if useful else "none")

    def fill_daemon_defaults(self) -> None:
        """For a daemon (`start`), which does not know the swarm's graph: Chebyshev
        gossip and the step after mixing left to their defaults are off."""
        if self.gossip_acceleration == AUTO:
            _fill(self, "gossip_acceleration", "none")
        if self.step_after_mixing is None:
            _fill(self, "step_after_mixing", False)

    @property
    def exchanges_per_round(self) -> int:
        """Exchanges a training round takes: 1, plus `gossip_steps` - 1 that only mix."""
        return self.gossip_steps or 1

    def agreed_facts(self) -> dict[str, object]:
        """What nodes must agree on beyond the model: the schedule's span, the exchanges
        per round when more than one (round numbers count exchanges; with tracking, z is
        mixed in each of them, which nodes before that change did not do), weighting by
        examples, and how the data is shared out when not the plain way (a held-out
        share, another test share, no dedupe: every node must carve the same rows).
        A fact is left out when it has its `UNRECORDED_FACTS` value (the schedule's
        facts all together, when it is flat)."""
        facts = self.schedule_facts()
        accelerated = self.gossip_acceleration
        made: dict[str, object] = {
            "gossip_steps": self.exchanges_per_round,
            "weighting": "examples" if self.weighting == "examples" else "nodes",
            "gossip_acceleration": "none" if accelerated == AUTO else accelerated,
            "step_after_mixing": bool(self.step_after_mixing),
            "validation_fraction": self.validation_fraction,
            "test_fraction": self.test_fraction,
            "dedupe": self.dedupe,
        }
        facts |= {key: v for key, v in made.items() if v != UNRECORDED_FACTS[key]}
        if "gossip_steps" in facts and self.gradient_tracking:
            facts["tracking_exchanges"] = facts["gossip_steps"]
        return facts

    def recipe(self) -> Recipe:
        """Just the recipe's fields (of a subclass's instance)."""
        return Recipe(**{k: getattr(self, k) for k in Recipe.model_fields})


def _fill(model: BaseModel, name: str, value: object) -> None:
    """Set a resolved default on a (possibly frozen) model during its validation."""
    object.__setattr__(model, name, value)
