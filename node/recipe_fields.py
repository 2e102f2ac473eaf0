"""The recipe's first two parts: model, data and LoRA shape (`DataRecipe`), then local
training (`TrainingRecipe`): steps, rounds, lr and its schedule, the method. `Recipe`
(`node/recipe.py`) adds mixing and evaluation and the checks across all three; the
rules of `Recipe` hold for these fields too."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from declora.node.data import (
    BBC_TEST_FRACTION,
    EMBEDDED_CHAT,
    EMBEDDED_DATA,
    DataFormat,
    declared_labels,
    read_label_file,
)
from declora.node.methods import DEFAULT_METHOD, Method
from declora.node.option_values import home_path
from declora.node.schedule import DECAYING, LrSchedule, Schedule

if TYPE_CHECKING:  # the trainer imports torch: not needed to read a configuration
    from declora.node.trainer import LoraSpec

Task = Literal["cls", "lm"]
Quantize = Literal["none", "nf4", "fp4", "int8"]
Precision = Literal["fp32", "bf16", "fp16"]
LM_EVAL_CAP = 128  # held-out texts a causal LM evaluates on unless told (a forward pass each)
WARMUP_SHARE = 0.1  # of a decaying schedule's steps warm up, unless --warmup-steps says
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
        """An empty --data (`--data "$UNSET"`) is refused: it was read as the working
        folder. A leading `~` is the home folder (`option_values.home_path`): a config
        file's or variable's `~/train.jsonl` was looked for in a folder named `~`."""
        if not v.strip():
            raise ValueError(
                f"is empty: give a data file or folder, or {EMBEDDED_DATA} or {EMBEDDED_CHAT}, "
                "or leave the option out"
            )
        return str(home_path(v)) if v.startswith("~") else v

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
