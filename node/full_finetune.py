"""Full fine-tuning as a centralized reference: every parameter of the base trains.

`FullModel` is a `LoraModel` without LoRA whose "adapter" is the whole model: every
parameter (embeddings, every layer, norms, pooler and head) requires grad, so a
plain `LocalTrainer` over it is AdamW on all parameters (the methods study's
centralized full fine-tuning row, `cli/methods_study.py`). DECA's `BlockModel` with
one block is not the same: it keeps the embeddings, the final norm and a pooler
frozen.

It is a reference, not a swarm method: one trainer per model. That trainer trains
the base's own tensors (`initial_tensors` hands them over instead of copies), so the
process holds the weights once, plus their gradients and AdamW's two moments.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from declora.node.models import BaseModel
from declora.node.trainer import LoraModel, LoraSpec


class FullModel(LoraModel):
    """A base model whose every parameter is trainable (see the module docstring)."""

    def __init__(self, spec: LoraSpec, num_labels: int | None = None, **kwargs: Any) -> None:
        super().__init__(spec, num_labels, **kwargs)
        self._initial = [p.data for p in self.params]  # no second copy of the weights

    def _trainable_model(
        self, base: BaseModel, spec: LoraSpec, targets: tuple[str, ...]
    ) -> nn.Module:
        for p in base.model.parameters():
            p.requires_grad_(True)
        return base.model

    def initial_tensors(self) -> list[torch.Tensor]:
        """The base's own tensors (not copies): its one trainer trains them in place."""
        return list(self._initial)
