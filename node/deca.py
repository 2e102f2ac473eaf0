"""DECA (arXiv 2606.03209: "Decentralizing Block-Wise Adam for Efficient LLM
Full-Parameter Fine-Tuning on Non-IID Data"), as a `DecLoraNode`.

Decentralized full-parameter fine-tuning, one block of consecutive transformer layers
at a time (`deca_model.py`: the blocks, the schedule, the trainer). What a node does:

- round r trains block `block_at(r)` (and the head): K local AdamW steps whose
  moments m (alpha1 = 0.9) and v (alpha2 = 0.999) are the block's only optimizer
  state, new at each block switch;
- it gossips only that block and the head: the payload is the codec's message of
  x_i - x̂_i over the block's vector (CHOCO, `gossip.py`), about 1/B of the model
  (measured in tests/test_deca.py); mixing is Dec-LoRA's step on that vector, so
  with fp32 and gamma 1 the swarm's average of the block is preserved;
- block-wise moment approximation: after the mix, h = θ_mixed - θ_start, the
  round's change of the block (local steps and mixing; θ_start is the block before
  the round's first local step), is folded into the moments:
  m <- beta1 m + (1 - beta1) h, v <- beta2 v + (1 - beta2) h*h (beta1 = 0.9,
  beta2 = 0.999). This is the paper's update as its published summary
  (junaidaliop/zij docs/math/deca.md, which quotes arXiv 2606.03209) writes it,
  sign included: h_r = θ_{r+1} - θ_r, with θ_{r+1} the aggregate of the neighbours'
  half-steps. The paper's body was not available here; that text's prose calls h
  "the difference between the local and aggregated model", the opposite sign, so
  the sign is `CONSENSUS_SIGN`, +1 as the equation reads. The paper mixes after every
  local step; here one round is K local steps then one mix (K = 1 is the paper's
  inner step), and a gossip-only round (the consensus finish) injects nothing;
- block switch: every node switches at the same round (a function of the round
  number and the swarm's seed). At a switch the public copies (x̂_i and every
  neighbour's) restart from the block's base values and the head's seeded init,
  which every node knows: the first message of a block carries the node's whole
  change of the block since the base (its trained values relative to the base)
  encoded by the round's codec, so a switch costs no extra bytes (a codec's message
  size does not depend on the values) and needs no keyframe message.

When the switch happens: right after a finite mix (so the payloads, checks and
snapshots of the next round already see its block), and at the start of `train` and
`outgoing` whenever the round says otherwise (after a resume, a skipped round, or for
a node that never mixes). Payload checks accept a vector of any block's size (a
neighbour may send the next round's payload before this node has mixed); applying it
at its round's mix checks the size exactly. A node far behind cannot take a
neighbour's state (it is one block, not the whole model): `takes_state` is false, so
the daemon never pulls one (`take_state` refuses too) and it goes on from its own.
The consensus finish mixes the block of each gossip-only round (blocks go on
cycling by round number) until the whole model agrees: the simulator measures the
change from the base (`agreement_vector`; the raw weights' norm would hide any
disagreement), and the daemon's stopping test (`disagreement`) takes every block this
node has trained, each as measured at its last mix against the neighbours heard then
(a block trains no more after its last training round's mix, so in the finish that
figure is current for the block; the head, sent with every block, is current in the
newest one). With a lossy codec and short block turns the neighbours' copies restart
coarse at every switch and the nodes level off apart (q8 with one-round turns: about
1e-2), so q2 and top-k are refused, and q8 and q4 with turns shorter than measured to
agree (`methods.LOSSY_BLOCK_ROUNDS`); a finish that still ends at `consensus_rounds`
above `consensus_tol` is warned about. Robust mixing and gradient tracking are refused
(`methods.combination_problem`), and so is `gossip_steps` > 1
(`methods.gossip_steps_problem`: blocks switch by message count).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from declora.node.codecs import CodecError, decode
from declora.node.dec_lora import VALUE_RATIO, DecLoraNode, NodeSnapshot, _check_bound
from declora.node.deca_model import BlockTrainer
from declora.node.gossip import GossipError
from declora.node.trainer import LocalTrainer

K = TypeVar("K", bound=Hashable)

CONSENSUS_BETAS = (0.9, 0.999)  # beta1, beta2: the consensus signal's decay rates
CONSENSUS_SIGN = 1.0  # h = CONSENSUS_SIGN x (θ_mixed - θ_start), as the equation reads


@dataclass
class BlockSnapshot(NodeSnapshot):
    """A node snapshot that also names the block its vectors belong to."""

    block: int = -1


class DecaNode(DecLoraNode[K]):
    """A node that trains, gossips and mixes one block of its full model at a time."""

    full_model = True
    takes_state = False  # a neighbour's state is one block: no catch-up

    def __init__(self, trainer: LocalTrainer, *args: Any, **kwargs: Any) -> None:
        if not isinstance(trainer, BlockTrainer):
            raise TypeError("--method deca needs a BlockTrainer")
        super().__init__(trainer, *args, **kwargs)
        self.deca: BlockTrainer = trainer
        self.block = trainer.block  # the block the gossip state belongs to
        self.next_round = 1  # the round of this node's next message
        self._start: np.ndarray | None = None  # the block before this round's steps
        self._gaps: dict[int, dict[K, float]] = {}  # block -> peer -> gap after its last mix
        lm = trainer.lm
        self._sizes = {lm.block_schema(b).numel for b in range(len(lm.blocks))}

    # -------------------------------------------------------------- blocks
    def _enter(self, round_number: int) -> None:
        """Be on `round_number`'s block; restart the gossip state if it changed."""
        block = self.deca.lm.block_at(round_number)
        if block != self.deca.block:
            self.deca.activate(block)
        if self.deca.block != self.block:
            self._restart_gossip()

    def _restart_gossip(self) -> None:
        """Every public copy restarts from the block's base values (all nodes know them)."""
        x0 = self.deca.base_vector()
        self.block = self.deca.block
        self.initial = x0
        self._initial_max = float(np.abs(x0).max(initial=0.0))
        g = self.gossip
        g.public = x0.copy()
        g.last_update_norm = 0.0
        for peer in g.peers:
            g.peers[peer] = x0.copy()
        self._start = None

    # -------------------------------------------------------------- a round
    def train(
        self,
        steps: int,
        should_stop: Callable[[], bool] | None = None,
        round_number: int | None = None,
    ) -> float:
        """K local steps on round `round_number`'s block (by default the round after
        the last message's)."""
        if round_number is not None:
            self.next_round = round_number
        self._enter(self.next_round)
        self._gaps.pop(self.block, None)  # training makes the block's last figure stale
        self._start = self.vector()
        return super().train(steps, should_stop, round_number)

    def outgoing(self, forged: np.ndarray | None = None) -> bytes:
        self._enter(self.next_round)
        payload = super().outgoing(forged)
        self.next_round += 1
        return payload

    def mix(self, weights: Mapping[K, float]) -> None:
        """Dec-LoRA's mix of the block, then the consensus signal into the moments and
        the switch to the next round's block (neither when the mix went non-finite:
        the caller restores)."""
        super().mix(weights)
        x = self.vector()
        if not np.isfinite(x).all():
            return
        self._gaps[self.block] = self._block_gaps(weights)
        if self._start is not None:
            self.deca.inject(np.float32(CONSENSUS_SIGN) * (x - self._start), CONSENSUS_BETAS)
            self._start = None
        self._enter(self.next_round)

    def _block_gaps(self, peers: Iterable[K]) -> dict[K, float]:
        """||x̂_j - x_i|| / ||x_i - base|| of the active block, per neighbour."""
        x = self.vector()
        scale = max(float(np.linalg.norm(x - self.initial)), 1e-12)
        g = self.gossip
        return {p: float(np.linalg.norm(g.peers[p] - x)) / scale for p in peers if p in g.peers}

    def disagreement(self, peers: Iterable[K]) -> float:
        """The largest gap to `peers` over every block this node has trained, each
        relative to the block's change from the base and as measured at the block's
        last mix. inf (not agreed) for a trained block not mixed since it last
        trained or since this process started (a resume), and for a peer that block's
        last mix did not hear from (or that was dropped since)."""
        wanted = list(peers)
        worst = 0.0
        for block in range(len(self.deca.lm.blocks)):
            gaps = self._gaps.get(block)
            if gaps is None:
                if self.deca.trained(block):
                    return float("inf")
                continue
            worst = max([worst, *(gaps.get(p, float("inf")) for p in wanted)])
        return worst

    def forget_peer(self, peer: K) -> None:
        super().forget_peer(peer)
        for gaps in self._gaps.values():
            gaps.pop(peer, None)

    def agreement_vector(self) -> np.ndarray:
        """The whole model's change from the shared base (the base's norm would hide
        any disagreement)."""
        return self.deca.full_vector() - self.deca.lm.full_base_vector()

    # -------------------------------------------------------------- checks
    def check_payload(
        self, peer: K, payload: bytes, spec: str | None = None, cap: float = float("inf")
    ) -> np.ndarray:
        """Decode and validate a block message: the size of one of the blocks (its
        round's mix checks it is this round's), finite, within `value_limit(cap)`."""
        try:
            vec = decode(payload, max_n=max(self._sizes), spec=spec)
        except CodecError as exc:
            raise GossipError(f"payload from {peer!r}: {exc}") from exc
        if vec.shape[0] not in self._sizes or not np.isfinite(vec).all():
            raise GossipError(
                f"payload from {peer!r} holds {vec.shape[0]} values, not a block's "
                f"{sorted(self._sizes)}, or non-finite ones"
            )
        _check_bound(peer, vec, self.value_limit(cap))
        return vec

    def value_limit(self, cap: float = float("inf")) -> float:
        """As Dec-LoRA's, with this node's own block values counted too."""
        own = float(np.abs(self.vector()).max(initial=0.0))
        return min(cap, max(super().value_limit(), VALUE_RATIO * own))

    def take_state(self, vector: np.ndarray) -> None:
        raise GossipError(
            "--method deca: a neighbour's state is one block, not the whole model; "
            "going on from this node's own"
        )

    # -------------------------------------------------------------- state
    def snapshot(self) -> NodeSnapshot:
        snap = super().snapshot()
        return BlockSnapshot(snap.vector, snap.public, snap.correction, self.deca.block)

    def restore(self, snap: NodeSnapshot) -> None:
        """Undo to `snap` (a `BlockSnapshot` names its block; a plain one belongs to
        the trainer's current block, as after `checkpoint.restore_trainer`)."""
        block = snap.block if isinstance(snap, BlockSnapshot) else self.deca.block
        if block != self.deca.block:
            self.deca.activate(block)
        if self.deca.block != self.block:
            self._restart_gossip()
        super().restore(snap)

    def model_vector(self) -> np.ndarray:
        return self.deca.full_vector()
