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

For robustness experiments, `robust_mixing` picks the mixing rule (`robust.make_robust`) and
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

from declora.node.attacks import Attack, make_attack
from declora.node.data import no_test_rows
from declora.node.dec_lora import DecLoraNode
from declora.node.deca_model import model_vector
from declora.node.gossip import consensus_distance
from declora.node.mixing import local_mh_weights, mixing_matrix
from declora.node.partition import format_label_counts, label_counts
from declora.node.product_mixing import lora_pairs, product_average
from declora.node.recipe import Recipe
from declora.node.scores import Score, score_for
from declora.node.sim_config import SimConfig
from declora.node.topology import Topology, from_spec
from declora.node.trainer import Encoded, LoraModel
from declora.node.workload import Workload, load_workload


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


def unfinished_warning(cfg: Recipe, worst: float) -> str:
    """The line for a consensus finish that ended at `--consensus-rounds` with the nodes
    `worst` apart (above `--consensus-tol`): they did not come to agree."""
    longer = ", longer --deca-block-rounds" if cfg.method == "deca" else ""
    return (
        f"the consensus finish stopped at --consensus-rounds {cfg.consensus_rounds} with "
        f"the nodes {worst:.2e} apart, above --consensus-tol {cfg.consensus_tol:g}: they "
        f"do not agree (give more --consensus-rounds{longer}, or a finer --codec)"
    )


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
        self.workload = load_workload(cfg, cfg.nodes, lm=lm, max_train=cfg.max_train)
        work = self.workload
        self.train_data, self.test_data = work.train, work.test
        self.score = score_for(cfg.task)
        self.lm = work.lm
        self.topology = from_spec(cfg.topology, cfg.nodes, seed=cfg.seed)
        self.parts = work.parts
        self.train_enc: Encoded = work.encoded_train()
        self.test_enc: Encoded = _test_rows(work)
        self.validation_enc = work.encoded_validation()
        self.weights = _weights_for(self.topology, cfg.mixing)
        self.honest = [i for i in range(cfg.nodes) if i not in cfg.byzantine]
        self.attacks: dict[int, tuple[Attack, np.random.Generator]] = {
            i: (make_attack(cfg.attack), np.random.default_rng([cfg.seed, i, 0xBAD]))
            for i in cfg.byzantine
            if cfg.attack is not None
        }
        self.nodes: list[DecLoraNode[int]] = [work.node(i) for i in range(cfg.nodes)]
        for i, node in enumerate(self.nodes):
            for j in self.topology.neighbors(i):
                node.add_peer(j)

    def honest_vectors(self) -> list[np.ndarray]:
        """Each honest node's model vector (its adapter; DECA: every block)."""
        return [self.nodes[i].model_vector() for i in self.honest]

    def agreement_vectors(self) -> list[np.ndarray]:
        """What the consensus distance compares (`DecLoraNode.agreement_vector`)."""
        return [self.nodes[i].agreement_vector() for i in self.honest]

    def average(self) -> np.ndarray:
        """The averaged model of the honest nodes: A, B and head averaged separately
        (Dec-LoRA, ConLoRA), or in product space for DeCAF (`product_average`)."""
        vectors = self.honest_vectors()
        if self.cfg.method == "decaf":
            return product_average(lora_pairs(self.lm.schema), vectors)
        return np.mean(np.stack(vectors), axis=0).astype(np.float32)

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
        return [self.lm.evaluate(n.model_vector(), self.test_enc) for n in self.nodes]

    def _final_evaluation(self, result: SimResult, validate: bool) -> list[dict[str, float]]:
        """Every node and the average on the test set (cls: which examples each got
        right, as 0/1 text, in `result.final["correct"]`) and, with `validate`, on the
        validation rows."""
        per_node, correct = [], []
        for vec in [n.model_vector() for n in self.nodes] + [self.average()]:
            metrics, right = self.lm.evaluate_examples(vec, self.test_enc)
            per_node.append(metrics)
            if right is not None:
                correct.append("".join("1" if x else "0" for x in right))
        result.final["average"] = per_node.pop()
        if correct:
            result.final["correct"] = {"nodes": correct[:-1], "average": correct[-1]}
        if validate and self.validation_enc is not None:
            val = [self.lm.evaluate(n.model_vector(), self.validation_enc) for n in self.nodes]
            result.final["validation"] = _summary(val, self.honest, self.score)
            result.final["validation_examples"] = len(self.validation_enc)
        return per_node

    def run(self, progress: ProgressFn | None = None, validate: bool = True) -> SimResult:
        """Train, finish to consensus, evaluate (on the validation rows too unless
        `validate` is False: a study's runs after its selection skip that cost)."""
        cfg = self.cfg
        counts = _counts(self)
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
            losses = [node.train(cfg.local_steps, round_number=r) for node in self.nodes]
            t1 = time.perf_counter()
            sent = sum(self._gossip_round() for _ in range(cfg.exchanges_per_round))
            t2 = time.perf_counter()
            rec = self._record(r, "train", float(np.mean(losses)), sent, t2 - t0, t2 - t1)
            if r % cfg.eval_every == 0 or r == cfg.rounds:
                rec.average = self.lm.evaluate(self.average(), self.test_enc)
            if r % cfg.node_eval_every == 0 and r != cfg.rounds:
                rec.nodes = self._eval_nodes()
            result.rounds.append(rec)
            if progress:
                progress("train", r, cfg.rounds)
        if cfg.eval_before_consensus:
            before = self._eval_nodes()
            result.final["before_consensus"] = _summary(before, self.honest, self.score)
            result.final["nodes_before_consensus"] = before
        self._consensus_finish(result, progress)
        after = self._final_evaluation(result, validate)
        result.final.update(
            {
                "nodes": after,
                "after_consensus": _summary(after, self.honest, self.score),
                f"best_average_{self.score.key}": self.score.best(
                    r.average[self.score.key] for r in result.rounds if r.average
                )
                if any(r.average for r in result.rounds)
                else float("nan"),
                "bytes_sent_per_node": float(np.mean([n.bytes_sent for n in self.nodes])),
                "consensus_rounds": sum(r.phase == "consensus" for r in result.rounds),
                "consensus_max": result.rounds[-1].consensus_max if result.rounds else 0.0,
                "samples_per_node": cfg.rounds * cfg.local_steps * cfg.batch_size,
                "mix_fraction": _mix_fraction(result.rounds),
            }
        )
        return result

    def _consensus_finish(self, result: SimResult, progress: ProgressFn | None) -> None:
        """Gossip-only rounds until the nodes agree within `consensus_tol`, at most
        `consensus_rounds`; a finish that ran out of rounds with the nodes still apart
        adds a line to `result.final["warnings"]` (run.md shows it: `report`)."""
        cfg = self.cfg
        _, worst = consensus_distance(self.agreement_vectors())
        r = cfg.rounds
        done = 0
        for node in self.nodes:
            node.begin_finish()
        while worst > cfg.consensus_tol and done < cfg.consensus_rounds and self.topology.n > 1:
            t0 = time.perf_counter()
            sent = self._gossip_round()
            r += 1
            done += 1
            elapsed = time.perf_counter() - t0
            rec = self._record(r, "consensus", None, sent, elapsed, elapsed)
            worst = rec.consensus_max
            result.rounds.append(rec)
            if progress:
                progress("consensus", done, cfg.consensus_rounds)
        if done and worst > cfg.consensus_tol:
            line = unfinished_warning(cfg, worst)
            result.final.setdefault("warnings", []).append(line)

    def _record(
        self,
        r: int,
        phase: str,
        loss: float | None,
        sent: float,
        seconds: float,
        mix_seconds: float,
    ) -> RoundRecord:
        mean_d, max_d = consensus_distance(self.agreement_vectors())
        return RoundRecord(r, phase, loss, mean_d, max_d, sent, seconds, mix_seconds)

    def run_centralized(
        self, progress: ProgressFn | None = None, evals: int = CENTRAL_EVALS
    ) -> dict[str, Any]:
        """The centralized reference on this run's data (`train_centralized`)."""
        return train_centralized(self.workload, progress, evals)


def _test_rows(work: Workload) -> Encoded:
    """`work`'s encoded test set; a `DataError` (`data.no_test_rows`) when its data left
    none (e.g. a small file whose classes are too small to hold one out)."""
    test = work.encoded_test()
    if test is None:
        raise no_test_rows(str(work.recipe.data), work.train, work.recipe.test_fraction)
    return test


def train_centralized(
    work: Workload, progress: ProgressFn | None = None, evals: int = CENTRAL_EVALS
) -> dict[str, Any]:
    """One adapter (or `work.lm`'s whole trainable model), the union of the nodes'
    data, the swarm's number of samples. Its curve (`evals` points, 0 = none) is on
    the validation rows (the test set when there are none), and its last point is
    its "validation" figure; its final figures are on the test set (cls: which
    examples it got right, as 0/1 text, in "correct"). "seconds" is the whole loop,
    "train_seconds" its training steps alone (the curve's evaluations left out)."""
    cfg, lm = work.recipe, work.lm
    test = _test_rows(work)
    validation = work.encoded_validation()
    trainer = work.centralized_trainer()
    steps = work.centralized_steps()
    watch = validation if validation is not None else test
    curve = []
    chunk = max(1, -(-steps // evals)) if evals else steps
    done = 0
    train_seconds = 0.0
    t0 = time.perf_counter()
    while done < steps:
        k = min(chunk, steps - done)
        t1 = time.perf_counter()
        trainer.train_steps(k)
        train_seconds += time.perf_counter() - t1
        done += k
        if evals:
            curve.append({"step": done, **lm.evaluate(model_vector(trainer), watch)})
        if progress:
            progress("centralized", done, steps)
    seconds = time.perf_counter() - t0
    final, right = lm.evaluate_examples(model_vector(trainer), test)
    out: dict[str, Any] = {
        "steps": steps,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "seconds": seconds,
        "train_seconds": train_seconds,
        "curve_on": "validation" if validation is not None else "test",
        "curve": curve,
        "final": final,
    }
    if right is not None:
        out["correct"] = "".join("1" if x else "0" for x in right)
    if validation is not None and curve:
        out["validation"] = curve[-1]
    return out


def _summary(per_node: list[dict[str, float]], honest: list[int], score: Score) -> dict[str, float]:
    """Mean and worst of the task's figure (`score`) over all nodes and the honest ones."""
    values = [m[score.key] for m in per_node]
    good = [values[i] for i in honest]
    return {
        f"mean_{score.key}": float(np.mean(values)),
        f"worst_{score.key}": float(score.worst(values)),
        f"honest_mean_{score.key}": float(np.mean(good)),
        f"honest_worst_{score.key}": float(score.worst(good)),
    }


def _counts(sim: Simulation) -> np.ndarray:
    """Examples per node and label (one column of all rows for unlabelled text)."""
    data = sim.train_data
    if data.labels is None:
        return np.array([[len(p)] for p in sim.parts])
    return label_counts(data.labels, sim.parts, data.num_labels)


def _mix_fraction(rounds: list[RoundRecord]) -> float:
    train = [r for r in rounds if r.phase == "train"]
    total = sum(r.seconds for r in train)
    return sum(r.mix_seconds for r in train) / total if total else 0.0


def describe_partition(sim: Simulation) -> str:
    names = sim.train_data.label_names if sim.train_data.labels is not None else ("texts",)
    return format_label_counts(_counts(sim), names)
