"""A trained, saved tiny-bert adapter with named labels (for the adapter and CLI tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from conftest import CLASS_NAMES, TINY_SPEC, make_synthetic

from declora.node.trainer import LocalTrainer, LoraModel

META: dict[str, object] = {
    "round": 12,
    "node_id": "node-a",
    "swarm_id": "swarm-x",
    "eval": {"accuracy": 0.9, "macro_f1": 0.875},
}


def save_trained_tiny(path: Path, steps: int = 20) -> tuple[LoraModel, np.ndarray]:
    """Train tiny-bert with labels CLASS_NAMES for `steps` steps and save it to `path`."""
    lm = LoraModel(TINY_SPEC, label_names=CLASS_NAMES)
    trainer = LocalTrainer(lm, lm.encode(make_synthetic(200)), lr=3e-2, batch_size=16, seed=0)
    trainer.train_steps(steps)
    vec = trainer.vector()
    lm.save_adapter(vec, path, META)
    return lm, vec


def in_process_logits(lm: LoraModel, vec: np.ndarray, texts: list[str]) -> torch.Tensor:
    """Logits of adapter `vec` on `texts` straight from the training model."""
    ids, mask = lm.tokenizer(texts, lm.spec.max_length)
    with lm.using(vec), torch.no_grad():
        lm.model.eval()
        return lm.model(input_ids=ids, attention_mask=mask).logits.float()
