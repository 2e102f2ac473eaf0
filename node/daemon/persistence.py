"""What a node keeps on disk: checkpoints, the final adapter, the round history.

- checkpoints are written atomically (see `checkpoint`); `saved_round` is the round
  of the newest one written or resumed from, so a stop never rewrites what LATEST
  names;
- a checkpoint records what identifies the node's training share (--data,
  --partition, the examples' digest); a resume on another share, or from a round
  past --rounds, is refused before anything changes;
- the final adapter is written in the PEFT format to `<checkpoint_dir>/adapter`
  (DECA: the full model folder, `deca_model.BlockModel.save_adapter`);
- `rounds.jsonl` gets one JSON line per completed round.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from declora.node import checkpoint
from declora.node.daemon.parts import Parts
from declora.node.daemon.status import append_round, round_entry
from declora.node.dec_lora import NodeSnapshot
from declora.node.schedule import training_round

log = logging.getLogger(__name__)


class Persistence:
    """A node's checkpoints, final adapter and history in `folder` (its state dir)."""

    def __init__(self, folder: Path) -> None:
        self.checkpoint_dir = folder
        self.saved_round = -1
        self._parts: Parts | None = None
        self._share: dict[str, Any] | None = None

    @property
    def parts(self) -> Parts:
        assert self._parts is not None, "attach() the built parts first"
        return self._parts

    def attach(self, parts: Parts) -> None:
        self._parts = parts

    def share(self) -> dict[str, Any]:
        """What identifies this node's training share (`checkpoint.training_share`),
        computed once: the share does not change while a node runs."""
        if self._share is None:
            s = self.parts.settings
            self._share = checkpoint.training_share(
                self.parts.node.trainer.data,
                data=str(s.data),
                partition=s.partition or "0/1",  # no --partition: the whole of --data
                partition_scheme=s.partition_scheme,
                validation_fraction=s.validation_fraction,
            )
        return self._share

    def resume(self, parts: Parts) -> None:
        """Continue from the newest complete checkpoint (CheckpointError without one;
        CheckpointMismatch, before anything changes, for a checkpoint written on
        another training share or at a round past --rounds)."""
        state = checkpoint.load(self.checkpoint_dir, parts.lm)
        path = checkpoint.latest(self.checkpoint_dir)
        assert path is not None  # load found it
        s = parts.settings
        last = s.rounds * s.exchanges_per_round
        if s.rounds and state.round > last:
            at = (
                f"round {state.round}"
                if s.exchanges_per_round == 1
                else f"exchange {state.round} (training round "
                f"{training_round(state.round, s.exchanges_per_round)})"
            )
            final = self.checkpoint_dir / "adapter"
            raise checkpoint.CheckpointMismatch(
                f"{path} is at {at}, past --rounds {s.rounds}: resuming would train nothing",
                f"resume with --rounds {training_round(state.round, s.exchanges_per_round) + 1} "
                "or more to train on (0: until stopped)"
                + (f"; that run's final adapter is in {final}" if final.is_dir() else ""),
            )
        self.attach(parts)
        order = np.asarray(state.trainer.get("order", ()))
        if not checkpoint.check_share(path, state.share, self.share(), order):
            log.warning(
                "%s was written before checkpoints recorded the training share: whether "
                "--data and --partition are the ones it was trained on is not checked",
                path,
            )
        checkpoint.restore_trainer(parts.node.trainer, state.trainer, state.vector)
        snap = NodeSnapshot(
            state.vector, state.public, state.correction, method_state=state.method_state
        )
        parts.node.restore(snap)
        parts.progress.round, parts.progress.seq = state.round, state.seq
        self.saved_round = state.round
        log.info("resumed from %s at round %d", checkpoint.latest(self.checkpoint_dir), state.round)

    def record(self, phase: str, evaluated: bool) -> None:
        """Append the round just completed to `rounds.jsonl`."""
        parts = self.parts
        entry = round_entry(parts.progress, parts.report, parts.node, parts.peers, phase, evaluated)
        append_round(self.checkpoint_dir, entry)

    def save_checkpoint(self) -> None:
        """Write a checkpoint of the current round (atomically, see `checkpoint`); a
        step held back for after mixing (a stop mid-round) is taken first."""
        parts = self.parts
        parts.node.apply_deferred_step()
        snap = parts.node.snapshot()
        state = checkpoint.NodeState(
            round=parts.progress.round,
            seq=parts.progress.seq,
            vector=snap.vector,
            public=snap.public,
            trainer=checkpoint.trainer_state(parts.node.trainer),
            fingerprint=parts.lm.fingerprint,
            correction=snap.correction,
            saved=parts.node.model_vector() if parts.node.full_model else None,
            method_state=snap.method_state,
            share=self.share(),
        )
        meta = {"node_id": parts.settings.node_id}
        path = checkpoint.save(self.checkpoint_dir, parts.lm, state, meta)
        self.saved_round = state.round
        log.info("checkpoint written: %s", path)

    def save_final(self) -> Path:
        """Write the final adapter (PEFT format) to `<checkpoint_dir>/adapter`."""
        parts = self.parts
        path = self.checkpoint_dir / "adapter"
        meta = {
            "node_id": parts.settings.node_id,
            "round": parts.progress.round,
            "eval": parts.report.last_eval,
        }
        parts.lm.save_adapter(parts.node.model_vector(), path, meta)
        log.info("final adapter written: %s", path)
        return path
