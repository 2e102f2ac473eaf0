"""`SimConfig`: what `declora-node simulate` and the experiments run, without torch,
so the command's options (and its --help) load on a machine where torch cannot (no
writable temporary folder). `simulator` runs it."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from declora.node.attacks import make_attack
from declora.node.recipe import Recipe
from declora.node.topology import SPEC_FORMS


class SimConfig(Recipe):
    """One simulated run: the swarm's `Recipe` plus the simulated swarm's shape.
    Every field has a default that runs on a laptop CPU."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    nodes: int = Field(8, ge=1, le=1024, description="virtual nodes")
    topology: str = Field(
        "ring",
        description="the graph: "
        + "; ".join(SPEC_FORMS)
        + " (an edge list file: a line 'i j' per edge, # comments)",
    )
    mixing: str = Field("mh", description="mixing weights: mh, laplacian or uniform")
    partition_scheme: str = Field(
        "dirichlet:0.1",
        description="how a dataset is shared out: iid, dirichlet:A, skew[:P], shards:K",
    )
    rounds: int = Field(60, ge=0, le=10_000_000, description="training rounds")
    consensus_rounds: int = Field(
        300, ge=0, le=1_000_000, description="most gossip-only rounds at the end"
    )
    eval_every: int = Field(
        1, ge=1, le=1_000_000, description="evaluate the averaged model every N rounds"
    )
    node_eval_every: int = Field(
        5, ge=1, le=1_000_000, description="evaluate every node every N rounds"
    )
    max_train: int = Field(0, ge=0, le=10_000_000, description="cap on training examples (0 = all)")
    centralized: bool = Field(True, description="also train centralized LoRA on the same samples")
    eval_before_consensus: bool = Field(
        True, description="also evaluate every node before the consensus finish"
    )
    threads: int | None = Field(None, ge=1, le=1024, description="torch threads (default: torch's)")
    byzantine: Annotated[tuple[int, ...], NoDecode] = Field(
        (), description="indices of the attacking nodes, e.g. 0,4"
    )
    attack: str | None = Field(None, description="what they send: scale:S or noise:SIGMA")

    @field_validator("byzantine", mode="before")
    @classmethod
    def _indices(cls, v: object) -> object:
        if not isinstance(v, str):
            return v
        parts = [p.strip() for p in v.split(",") if p.strip()]
        if not all(p.isdigit() for p in parts):
            raise ValueError(f"expected node indices like 0,4, got {v!r}")
        return tuple(int(p) for p in parts)

    @field_validator("attack")
    @classmethod
    def _attack_ok(cls, v: str | None) -> str | None:
        return None if v is None else make_attack(v).spec

    @model_validator(mode="after")
    def _byzantine_ok(self) -> SimConfig:
        bad = [i for i in self.byzantine if not 0 <= i < self.nodes]
        if bad:
            raise ValueError(f"byzantine: node indices {bad} not in 0..{self.nodes - 1}")
        if len(set(self.byzantine)) != len(self.byzantine):
            raise ValueError("byzantine: a node index is listed twice")
        if len(self.byzantine) >= self.nodes:
            raise ValueError("byzantine: at least one node must be honest")
        if bool(self.byzantine) != (self.attack is not None):
            raise ValueError("byzantine and attack go together: give both or neither")
        return self

    @model_validator(mode="after")
    def _test_set_ok(self) -> SimConfig:
        self.require_test_set("a simulated run")
        return self

    @model_validator(mode="after")
    def _swarm_defaults(self) -> SimConfig:
        """`swarm_size` 0 is the simulated swarm's; `gossip_steps` unset comes from the
        topology's spectral gap, and the acceleration left to its defaults from the
        topology and the options (`Recipe.fill_swarm_defaults`)."""
        self.fill_swarm_defaults(self.nodes, self.topology, self.mixing)
        return self

    @field_validator("mixing")
    @classmethod
    def _mixing_ok(cls, v: str) -> str:
        if v not in ("mh", "laplacian", "uniform"):
            raise ValueError("mixing must be one of mh, laplacian, uniform")
        return v

    @property
    def label(self) -> str:
        label = (
            f"n={self.nodes} {self.topology} {self.partition_scheme} r={self.rank} "
            f"K={self.local_steps} {self.codec}"
        )
        if self.task != "cls":
            label = f"{self.model} {self.task} {label}"
        if self.lr != SimConfig.model_fields["lr"].default:
            label += f" lr={self.lr:g}"
        if self.method != "dec-lora":
            label += f" {self.method}"
        if self.gradient_tracking:
            label += " +tracking"
        if self.gossip_acceleration != "none":
            label += " +chebyshev"
        if self.step_after_mixing:
            label += " +step-after-mixing"
        if self.seed:
            label += f" seed={self.seed}"
        if self.robust_mixing != "none":
            label += f" robust={self.robust_mixing}"
        if self.byzantine:
            label += f" byzantine={list(self.byzantine)} {self.attack}"
        return label
