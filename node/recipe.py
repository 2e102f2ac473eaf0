"""The training recipe: the options every node of a swarm shares, under one name each.

`Recipe` is one pydantic model, its fields in three parts (`DataRecipe`,
`TrainingRecipe`, then mixing and evaluation); the daemon's settings (`NodeSettings`),
the simulator's config (`SimConfig`) and the lab's (`LabConfig`) extend it, so an option
has the same name as a flag (`--robust-mixing`), an environment variable
(`DECLORA_ROBUST_MIXING`), a config-file key (`robust_mixing`) and in JSON output.
Subclasses may change a default (a lab runs a fixed number of rounds), never a
meaning. Bad values raise a ValidationError naming the option.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from declora.node.acceleration import (
    AUTO,
    LAMBDA_DECIMALS,
    accelerated_by_default,
    acceleration_problem,
    step_after_mixing_problem,
)
from declora.node.data import (
    BBC_TEST_FRACTION,
    EMBEDDED_CHAT,
    EMBEDDED_DATA,
    DataFormat,
    declared_labels,
    read_label_file,
)
from declora.node.methods import (
    DECA_DEFAULTS,
    DEFAULT_METHOD,
    LORA_DEFAULTS,
    Method,
    Namer,
    combination_problem,
    flag,
    gossip_steps_problem,
    ignored_options_problem,
)
from declora.node.schedule import DECAYING, LrSchedule, Schedule

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


if TYPE_CHECKING:  # the trainer imports torch: not needed to read a configuration
    from declora.node.trainer import LoraSpec

Task = Literal["cls", "lm"]
Quantize = Literal["none", "nf4", "fp4", "int8"]
Precision = Literal["fp32", "bf16", "fp16"]
LM_EVAL_CAP = 128  # held-out texts a causal LM evaluates on unless told (a forward pass each)
WARMUP_SHARE = 0.1  # of a decaying schedule's steps warm up, unless --warmup-steps says
MAX_GOSSIP_STEPS = 16
MAX_BATCH_SIZE = 65_536  # examples a step (`start`) or texts a forward pass (`predict`)


class DataRecipe(BaseModel):
    """The model, the data and the LoRA shape: what every node of a swarm trains."""

    # NaN: "a finite number"; no input in an error's text (a --debug traceback quotes it:
    # a swarm secret too short)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, hide_input_in_errors=True)

    # model and data
    model: str = Field(
        "minilm",
        description="minilm, smollm2 (a chat LM, --task lm), tiny-bert, tiny-llama, or a "
        "local path or hub id",
    )
    task: Task = Field("cls", description="cls (classification) or lm (causal LM)")
    data: str = Field(
        "bbcnews",
        description="bbcnews, bbc-headlines (lm chats), a .jsonl/.csv/.parquet file or a "
        "saved dataset folder",
    )
    text_column: str = Field("text", min_length=1, description="the data's text column")
    label_column: str = Field("label", min_length=1, description="the data's label column (cls)")
    labels: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="the swarm's label set, in order: a,b,c or @FILE (default: from the data)",
    )
    # causal-LM data (node/lm_data/)
    data_format: DataFormat = Field(
        "auto",
        description="lm data: auto, text, messages, prompt-response or instruction "
        "(instruction, input, output columns); auto picks one by the columns",
    )
    messages_column: str = Field(
        "messages", min_length=1, description="the data's chat column (lm): {role, content} turns"
    )
    prompt_column: str = Field("prompt", min_length=1, description="the data's prompt column (lm)")
    response_column: str = Field(
        "response",
        min_length=1,
        description="the data's response column (lm; by default 'completion' also does)",
    )
    packing: bool = Field(
        True,
        description="lm text: pack documents into max_length blocks, EOS after each "
        "(--no-packing: one example per row); conversations are one per row",
    )
    dedupe: bool = Field(
        True,
        description="drop exact and near-duplicate texts (Jaccard >= 0.8 of word 5-grams) "
        "before the train/test split",
    )
    validation_fraction: float = Field(
        0.1,
        ge=0,
        le=0.5,
        description="share of each node's training data held out for validation (model "
        "selection; the test set is only for the final figure); 0 = none",
    )
    test_fraction: float = Field(
        BBC_TEST_FRACTION,
        ge=0,
        le=0.5,
        description="share of a data file held out (per class, seed 0) as the test set "
        "that eval lines score; 0 (start only) = train on every row, no evaluation",
    )
    partition_scheme: str = Field(
        "iid", description="how a dataset is shared out: iid, dirichlet:A, skew[:P], shards:K"
    )
    rank: int = Field(8, ge=1, le=1024, description="LoRA rank r")
    alpha: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="LoRA alpha",
        json_schema_extra={"default_text": "2 x rank"},
    )
    targets: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="LoRA target modules, comma-separated",
        json_schema_extra={"default_text": "by model family"},
    )
    max_length: int = Field(64, ge=8, le=8192, description="tokens per example")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA path's input")
    rslora: bool = Field(False, description="rank-stabilised LoRA: scale by alpha / sqrt(rank)")
    dora: bool = Field(False, description="DoRA: weight-decomposed LoRA (a magnitude vector too)")
    quantize: Quantize = Field(
        "none", description="load the base in none, nf4, fp4 or int8 (QLoRA; CUDA + bitsandbytes)"
    )
    precision: Precision = Field(
        "fp32", description="fp32, bf16 or fp16 autocast (fp16: CUDA only, with a grad scaler)"
    )

    @field_validator("targets", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            return tuple(p.strip() for p in v.split(",") if p.strip())
        return v

    @field_validator("data")
    @classmethod
    def _data_given(cls, v: str) -> str:
        """An empty --data (`--data "$UNSET"`) is refused: it was read as the working folder."""
        if not v.strip():
            raise ValueError(
                f"is empty: give a data file or folder, or {EMBEDDED_DATA} or {EMBEDDED_CHAT}, "
                "or leave the option out"
            )
        return v

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, v: object) -> object:
        if isinstance(v, str):
            if v.startswith("@"):
                return read_label_file(v[1:])
            v = [p.strip() for p in v.split(",") if p.strip()]
        return declared_labels(v, "--labels") if v else ()  # type: ignore[arg-type]

    @field_validator("partition_scheme")
    @classmethod
    def _scheme_ok(cls, v: str) -> str:
        from declora.node.partition import check_scheme

        return check_scheme(v)

    @model_validator(mode="after")
    def _task_options_ok(self) -> DataRecipe:
        """Options of the other task are refused, not silently ignored."""
        if self.task == "cls" and self.data_format != "auto":
            raise ValueError(
                f"--data-format {self.data_format} is for --task lm: a classifier reads "
                "--text-column and --label-column (drop --data-format, or use --task lm)"
            )
        if self.task == "lm" and self.labels and self.partition_scheme == "iid":
            raise ValueError(
                "--labels is for --task cls, or --task lm with a label-based "
                "--partition-scheme (dirichlet, skew, shards): an iid share of lm data "
                "reads no labels (drop --labels)"
            )
        return self

    @model_validator(mode="after")
    def _data_format_ok(self) -> DataRecipe:
        if self.data == EMBEDDED_DATA and self.data_format not in ("auto", "text"):
            raise ValueError(
                f"--data-format {self.data_format} needs a data file: the embedded "
                f"{EMBEDDED_DATA} data is text"
            )
        if self.data == EMBEDDED_CHAT and self.data_format not in ("auto", "messages"):
            raise ValueError(
                f"--data-format {self.data_format} needs a data file: the embedded "
                f"{EMBEDDED_CHAT} data is messages"
            )
        return self

    @property
    def lora_alpha(self) -> int:
        return self.alpha if self.alpha is not None else 2 * self.rank


class TrainingRecipe(DataRecipe):
    """Local training, beside the model and data: steps, rounds, lr and its schedule,
    the method."""

    # local training
    local_steps: int = Field(1, ge=1, le=100_000, description="K local steps between exchanges")
    rounds: int = Field(0, ge=0, le=10_000_000, description="training rounds (0 = until stopped)")
    lr: float = Field(
        4e-3, gt=0, le=1, description="AdamW learning rate (each node's: x sqrt(--swarm-size))"
    )
    batch_size: int = Field(16, ge=1, le=MAX_BATCH_SIZE, description="examples per local step")
    seed: int = Field(
        0, ge=0, le=2**32 - 1, description="swarm-wide seed (adapter init, data split)"
    )
    grad_accumulation: int = Field(
        1,
        ge=1,
        le=4096,
        description="micro-batches of --batch-size per local step (optimizer step)",
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass (less memory, slower)"
    )
    swarm_size: int = Field(
        0,
        ge=0,
        le=100_000,
        description="the swarm's planned number of nodes: each node's lr is lr x "
        "sqrt(swarm size) (0: no scaling; simulate and lab use --nodes)",
    )
    lr_schedule: LrSchedule | Literal["auto"] = Field(
        "auto",
        description="constant, linear or cosine decay to 0 over rounds x local steps "
        "(decay needs --rounds > 0); auto: cosine when --rounds > 0, else constant",
    )
    warmup_steps: int | None = Field(
        None,
        ge=0,
        le=10_000_000,
        description="optimizer steps of linear warmup from the start of round 1",
        json_schema_extra={"default_text": f"{WARMUP_SHARE:.0%} of a decaying schedule"},
    )
    max_grad_norm: float = Field(
        0.0,
        ge=0,
        le=1e6,
        description="clip gradients to this norm, in units of a batch's mean gradient (0 = off)",
    )
    weight_decay: float = Field(0.0, ge=0, le=1.0, description="AdamW weight decay")
    method: Method = Field(
        DEFAULT_METHOD,
        description="dec-lora, conlora (A frozen, B gossiped), decaf (product mixing), "
        "kill-revive (only the most-changing LoRA modules train and are sent) or deca "
        "(full fine-tuning, one block of layers at a time)",
    )
    deca_blocks: int = Field(
        0,
        ge=0,
        le=1024,
        description="--method deca: blocks of consecutive transformer layers (0 = one per "
        "2 layers)",
    )
    deca_block_rounds: int = Field(
        5, ge=1, le=1_000_000, description="--method deca: rounds each block trains in turn"
    )

    @property
    def node_lr(self) -> float:
        """A node's learning rate: `lr` x sqrt(`swarm_size`); the averaged model steps
        on a swarm-size times larger batch (a centralized reference trains at `lr`)."""
        return self.lr * math.sqrt(max(self.swarm_size, 1))

    def lora_spec(self) -> LoraSpec:
        from declora.node.trainer import LoraSpec

        return LoraSpec(
            model=self.model,
            task=self.task,
            rank=self.rank,
            alpha=self.lora_alpha,
            targets=tuple(self.targets),
            max_length=self.max_length,
            seed=self.seed,
            method=self.method,
            lora_dropout=self.lora_dropout,
            rslora=self.rslora,
            dora=self.dora,
            quantize=self.quantize,
            deca_blocks=self.deca_blocks,
            deca_block_rounds=self.deca_block_rounds,
        )

    def schedule(self, nodes: int = 1) -> Schedule:
        """The lr schedule over rounds x local steps; with `nodes` > 1 the centralized
        reference's, which takes `nodes` times the steps (and the warmup)."""
        total = self.rounds * self.local_steps * nodes
        kind = "constant" if self.lr_schedule == "auto" else self.lr_schedule
        return Schedule(kind, (self.warmup_steps or 0) * nodes, total)

    def schedule_facts(self) -> dict[str, object]:
        """The schedule as nodes must agree on it: nothing for the default (constant, no
        warmup), so fingerprints without a schedule stay what they were."""
        if self.schedule().is_flat:
            return {}
        facts: dict[str, object] = {
            "lr_schedule": self.lr_schedule,
            "warmup_steps": self.warmup_steps,
            "local_steps": self.local_steps,
        }
        if self.lr_schedule in DECAYING:
            facts["rounds"] = self.rounds
        return facts


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
