"""In-process Dec-LoRA: N virtual nodes sharing one frozen base model.

Each virtual node is a `DecLoraNode` with its own adapter tensors, optimizer and data
partition; they share one `LoraModel`, so memory holds the base model once. Rounds
are synchronous: every node trains K steps, encodes its update, every neighbour
applies it, and every node mixes with its Metropolis-Hastings (or Laplacian, or
uniform) weights. After the last training round an optional consensus finish runs
gossip-only rounds until every node is within `consensus_tol` of the swarm mean, so
every user ends with the swarm's model, not just the average. A centralized LoRA
baseline trains one adapter on the union of the nodes' data for the same number of
samples (same batch size, N x rounds x K steps).

For robustness experiments, `robust` picks the mixing rule (`robust.make_robust`) and
the nodes in `byzantine` train but send `attack`'s forgery (`attacks.make_attack`)
instead of their adapter, and never mix. Consensus distance, the averaged model, the
consensus finish and the `honest_*` accuracies cover the honest nodes only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from declora.node.attacks import Attack, make_attack
from declora.node.codecs import make_codec
from declora.node.data import load_dataset
from declora.node.dec_lora import DecLoraNode
from declora.node.gossip import consensus_distance
from declora.node.mixing import local_mh_weights, mixing_matrix
from declora.node.partition import format_label_counts, label_counts, partition
from declora.node.robust import make_robust
from declora.node.topology import Topology, from_spec
from declora.node.trainer import Encoded, LocalTrainer, LoraModel, LoraSpec


class SimConfig(BaseModel):
    """One simulated run. Every field has a default that runs on a laptop CPU."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    nodes: int = Field(8, ge=1)
    topology: str = "ring"
    mixing: str = "mh"
    partition: str = "dirichlet:0.1"
    rounds: int = Field(15, ge=0)
    local_steps: int = Field(5, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-3, gt=0)
    codec: str = "fp32"
    consensus_step: float | None = Field(None, gt=0, le=1, description="None: by codec")
    consensus_tol: float = Field(1e-3, gt=0)
    max_consensus_rounds: int = Field(300, ge=0)
    model: str = "minilm"
    data: str = "bbcnews"
    rank: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    targets: tuple[str, ...] = ()
    max_length: int = Field(64, ge=8)
    seed: int = 0
    eval_every: int = Field(1, ge=1)
    node_eval_every: int = Field(5, ge=1)
    max_test: int | None = Field(None, ge=1)
    max_train: int | None = Field(None, ge=1)
    centralized: bool = True
    threads: int | None = Field(None, ge=1)
    robust: str = Field("none", description="none, clip[:C] or trim[:F]")
    byzantine: tuple[int, ...] = Field((), description="indices of the attacking nodes")
    attack: str | None = Field(None, description="what they send: scale:S or noise:SIGMA")
    tracking: bool = Field(False, description="gradient tracking (tracking.py)")

    @field_validator("robust")
    @classmethod
    def _robust_ok(cls, v: str) -> str:
        return make_robust(v).spec

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
        if self.tracking and self.robust != "none":
            raise ValueError("tracking cannot be combined with robust mixing (it trusts every z)")
        return self

    @field_validator("codec")
    @classmethod
    def _codec_ok(cls, v: str) -> str:
        return make_codec(v).spec

    @field_validator("mixing")
    @classmethod
    def _mixing_ok(cls, v: str) -> str:
        if v not in ("mh", "laplacian", "uniform"):
            raise ValueError("mixing must be one of mh, laplacian, uniform")
        return v

    def lora_spec(self) -> LoraSpec:
        return LoraSpec(
            model=self.model,
            task="cls",
            rank=self.rank,
            alpha=self.alpha,
            targets=self.targets,
            max_length=self.max_length,
            seed=self.seed,
        )

    @property
    def label(self) -> str:
        label = (
            f"n={self.nodes} {self.topology} {self.partition} r={self.rank} "
            f"K={self.local_steps} {self.codec}"
        )
        if self.lr != SimConfig.model_fields["lr"].default:
            label += f" lr={self.lr:g}"
        if self.tracking:
            label += " +tracking"
        if self.seed:
            label += f" seed={self.seed}"
        if self.robust != "none":
            label += f" robust={self.robust}"
        if self.byzantine:
            label += f" byzantine={list(self.byzantine)} {self.attack}"
        return label


@dataclass
class RoundRecord:
    round: int
    phase: str  # "train" | "consensus"
    mean_loss: float | None
    consensus_mean: float
    consensus_max: float
    bytes_sent_per_node: float
    seconds: float
    mix_seconds: float
    average: dict[str, float] | None = None
    nodes: list[dict[str, float]] | None = None


@dataclass
class SimResult:
    config: dict[str, Any]
    fingerprint: str
    label_counts: list[list[int]]
    label_names: list[str]
    spectral_gap: float
    rounds: list[RoundRecord] = field(default_factory=list)
    centralized: dict[str, Any] | None = None
    final: dict[str, Any] = field(default_factory=dict)


ProgressFn = Callable[[str, int, int], None]
CENTRAL_EVALS = 5  # evaluation points along the centralized baseline


def _weights_for(topo: Topology, mixing: str) -> list[dict[int, float]]:
    """Each node's neighbour weights; MH uses the local form the daemon computes."""
    if mixing == "mh":
        return [
            local_mh_weights(topo.degree(i), {j: topo.degree(j) for j in topo.neighbors(i)})[1]
            for i in range(topo.n)
        ]
    w = mixing_matrix(mixing, topo)
    return [{j: float(w[i, j]) for j in topo.neighbors(i)} for i in range(topo.n)]


class Simulation:
    """Build once, then `run()`; exposes nodes and model for tests and the experiment."""

    def __init__(self, cfg: SimConfig, lm: LoraModel | None = None) -> None:
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        train, test = load_dataset(cfg.data)
        if cfg.max_train is not None and cfg.max_train < len(train):
            train = train.subset(
                np.random.default_rng(cfg.seed).permutation(len(train))[: cfg.max_train]
            )
        if cfg.max_test is not None and cfg.max_test < len(test):
            keep = np.random.default_rng(cfg.seed).permutation(len(test))[: cfg.max_test]
            test = test.subset(np.sort(keep))
        assert train.labels is not None
        self.train_data, self.test_data = train, test
        self.lm = lm or LoraModel(cfg.lora_spec(), num_labels=train.num_labels)
        self.topology = from_spec(cfg.topology, cfg.nodes, seed=cfg.seed)
        self.parts = partition(cfg.partition, train.labels, cfg.nodes, seed=cfg.seed)
        self.train_enc: Encoded = self.lm.encode(train)
        self.test_enc: Encoded = self.lm.encode(test)
        self.weights = _weights_for(self.topology, cfg.mixing)
        self.honest = [i for i in range(cfg.nodes) if i not in cfg.byzantine]
        self.attacks: dict[int, tuple[Attack, np.random.Generator]] = {
            i: (make_attack(cfg.attack), np.random.default_rng([cfg.seed, i, 0xBAD]))
            for i in cfg.byzantine
            if cfg.attack is not None
        }
        self.nodes: list[DecLoraNode[int]] = []
        for i, idx in enumerate(self.parts):
            trainer = LocalTrainer(
                self.lm, self.train_enc.take(idx), cfg.lr, cfg.batch_size, seed=cfg.seed * 1000 + i
            )
            self.nodes.append(
                DecLoraNode(
                    trainer,
                    cfg.codec,
                    cfg.consensus_step,
                    cfg.seed * 1000 + i,
                    cfg.robust,
                    cfg.tracking,
                )
            )
        for i, node in enumerate(self.nodes):
            for j in self.topology.neighbors(i):
                node.add_peer(j)

    def honest_vectors(self) -> list[np.ndarray]:
        return [self.nodes[i].vector() for i in self.honest]

    def average(self) -> np.ndarray:
        """The Dec-LoRA averaged model of the honest nodes: A, B and head averaged
        separately."""
        return np.mean(np.stack(self.honest_vectors()), axis=0).astype(np.float32)

    def _gossip_round(self) -> float:
        """Exchange and mix once; returns the bytes each node sent, averaged."""
        topo = self.topology
        payloads = [self._outgoing(i, node) for i, node in enumerate(self.nodes)]
        trackers = [node.tracker_outgoing() for node in self.nodes]  # after outgoing: rng order
        sent = 0
        for i, node in enumerate(self.nodes):
            for j in topo.neighbors(i):
                node.receive(j, payloads[j])
                if trackers[j] is not None:
                    node.receive_tracker(j, trackers[j])  # type: ignore[arg-type]
            size = len(payloads[i]) + len(trackers[i] or b"")
            sent += size * topo.degree(i)
            node.bytes_sent += size * topo.degree(i)
        for i in self.honest:
            self.nodes[i].mix(self.weights[i])
        return sent / len(self.nodes)

    def _outgoing(self, i: int, node: DecLoraNode[int]) -> bytes:
        if i not in self.attacks:
            return node.outgoing()
        attack, rng = self.attacks[i]
        return node.outgoing(attack.forge(node.vector(), rng))

    def _eval_nodes(self) -> list[dict[str, float]]:
        return [self.lm.evaluate(n.vector(), self.test_enc) for n in self.nodes]

    def run(self, progress: ProgressFn | None = None) -> SimResult:
        cfg = self.cfg
        counts = label_counts(self.train_data.labels, self.parts, self.train_data.num_labels)  # type: ignore[arg-type]
        w = mixing_matrix(cfg.mixing, self.topology)
        eig = np.sort(np.abs(np.linalg.eigvalsh(w)))
        result = SimResult(
            config=cfg.model_dump(),
            fingerprint=self.lm.fingerprint,
            label_counts=counts.tolist(),
            label_names=list(self.train_data.label_names),
            spectral_gap=float(1 - eig[-2]) if len(eig) > 1 else 1.0,
        )
        if cfg.centralized:
            result.centralized = self.run_centralized(progress)
        for r in range(1, cfg.rounds + 1):
            t0 = time.perf_counter()
            losses = [node.train(cfg.local_steps) for node in self.nodes]
            t1 = time.perf_counter()
            sent = self._gossip_round()
            t2 = time.perf_counter()
            rec = self._record(r, "train", float(np.mean(losses)), sent, t2 - t0, t2 - t1)
            if r % cfg.eval_every == 0 or r == cfg.rounds:
                rec.average = self.lm.evaluate(self.average(), self.test_enc)
            if r % cfg.node_eval_every == 0 and r != cfg.rounds:
                rec.nodes = self._eval_nodes()
            result.rounds.append(rec)
            if progress:
                progress("train", r, cfg.rounds)
        before = self._eval_nodes()
        result.final["before_consensus"] = _summary(before, self.honest)
        result.final["nodes_before_consensus"] = before
        self._consensus_finish(result, progress)
        after = self._eval_nodes()
        result.final.update(
            {
                "nodes": after,
                "after_consensus": _summary(after, self.honest),
                "average": self.lm.evaluate(self.average(), self.test_enc),
                "best_average_accuracy": max(
                    (r.average["accuracy"] for r in result.rounds if r.average),
                    default=float("nan"),
                ),
                "bytes_sent_per_node": float(np.mean([n.bytes_sent for n in self.nodes])),
                "consensus_rounds": sum(r.phase == "consensus" for r in result.rounds),
                "consensus_max": result.rounds[-1].consensus_max if result.rounds else 0.0,
                "samples_per_node": cfg.rounds * cfg.local_steps * cfg.batch_size,
                "mix_fraction": _mix_fraction(result.rounds),
            }
        )
        return result

    def _consensus_finish(self, result: SimResult, progress: ProgressFn | None) -> None:
        cfg = self.cfg
        _, worst = consensus_distance(self.honest_vectors())
        r = cfg.rounds
        done = 0
        while worst > cfg.consensus_tol and done < cfg.max_consensus_rounds and self.topology.n > 1:
            t0 = time.perf_counter()
            sent = self._gossip_round()
            r += 1
            done += 1
            elapsed = time.perf_counter() - t0
            rec = self._record(r, "consensus", None, sent, elapsed, elapsed)
            worst = rec.consensus_max
            result.rounds.append(rec)
            if progress:
                progress("consensus", done, cfg.max_consensus_rounds)

    def _record(
        self,
        r: int,
        phase: str,
        loss: float | None,
        sent: float,
        seconds: float,
        mix_seconds: float,
    ) -> RoundRecord:
        mean_d, max_d = consensus_distance(self.honest_vectors())
        return RoundRecord(r, phase, loss, mean_d, max_d, sent, seconds, mix_seconds)

    def run_centralized(self, progress: ProgressFn | None = None) -> dict[str, Any]:
        """One adapter, the union of the nodes' data, the swarm's number of samples."""
        cfg = self.cfg
        union = np.unique(np.concatenate(self.parts))
        trainer = LocalTrainer(
            self.lm, self.train_enc.take(union), cfg.lr, cfg.batch_size, seed=cfg.seed
        )
        steps = cfg.nodes * cfg.rounds * cfg.local_steps
        curve = []
        chunk = max(1, -(-steps // CENTRAL_EVALS))
        done = 0
        t0 = time.perf_counter()
        while done < steps:
            k = min(chunk, steps - done)
            trainer.train_steps(k)
            done += k
            curve.append({"step": done, **self.lm.evaluate(trainer.vector(), self.test_enc)})
            if progress:
                progress("centralized", done, steps)
        return {
            "steps": steps,
            "batch_size": cfg.batch_size,
            "seconds": time.perf_counter() - t0,
            "curve": curve,
            "final": curve[-1] if curve else self.lm.evaluate(trainer.vector(), self.test_enc),
            "best_accuracy": max((c["accuracy"] for c in curve), default=float("nan")),
        }


def _summary(per_node: list[dict[str, float]], honest: list[int]) -> dict[str, float]:
    """Mean and worst accuracy over all nodes and over the honest ones."""
    acc = [m["accuracy"] for m in per_node]
    good = [acc[i] for i in honest]
    return {
        "mean_accuracy": float(np.mean(acc)),
        "worst_accuracy": float(np.min(acc)),
        "honest_mean_accuracy": float(np.mean(good)),
        "honest_worst_accuracy": float(np.min(good)),
    }


def _mix_fraction(rounds: list[RoundRecord]) -> float:
    train = [r for r in rounds if r.phase == "train"]
    total = sum(r.seconds for r in train)
    return sum(r.mix_seconds for r in train) / total if total else 0.0


def describe_partition(sim: Simulation) -> str:
    counts = label_counts(sim.train_data.labels, sim.parts, sim.train_data.num_labels)  # type: ignore[arg-type]
    return format_label_counts(counts, sim.train_data.label_names)
