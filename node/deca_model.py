"""DECA's model and trainer: full fine-tuning of one block of layers at a time.

`BlockModel` is a `LoraModel` without LoRA: the base itself trains. Its transformer
layers (the longest numbered run of `...layer.N.` / `...layers.N.` / `...h.N.`
modules) are split into `deca_blocks` blocks of consecutive layers (0 = one block
per 2 layers; `np.array_split`, so sizes differ by at most one layer). Embeddings,
the final norm and a pooler stay frozen; a classification head (`classifier.*`,
`score.*`) is always trainable and always sent.

- The block a round trains is `block_at(round)`: a function of the round number, the
  swarm-wide seed, the block count and `deca_block_rounds` only, so every node is on
  the same block in the same round; each cycle visits every block once, in a seeded
  order, each for `deca_block_rounds` consecutive rounds.
- `lm.schema` is the *union* schema (every block's parameters and the head, in model
  order): the fingerprint covers it, payload headers carry it, `evaluate`,
  `using` and `save_adapter` take a union vector (`BlockTrainer.full_vector`). The
  trainer's own `schema` is the active block's (plus the head): that is its
  `vector()`, what the node gossips.
- Several trainers share one `BlockModel` (the simulator): each keeps its own copies
  of the parameters it has trained (the head, and every block it has visited) and
  `bind` points the model's parameters at them, the base's tensors elsewhere; nothing
  is copied and the base exists once.
- Block-wise Adam: a trainer's AdamW covers the active block and the head only and is
  new at each block switch (moments exist for the active block alone, as BAdam keeps
  them); `inject` adds DECA's consensus signal to its moments (`deca.py`).

The saved result is a full model folder (`save_pretrained` of the base with the
node's values, its tokenizer when it has a transformers one, `declora.json` and a
`README.md` model card, `adapter_card.model_card`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from declora.node.adapter import (
    AdapterSchema,
    built_atomically,
    fingerprint,
)
from declora.node.adapter_card import (
    DECLORA_INFO,
    FULL_MODEL,
    MODEL_CARD,
    model_card,
    weights_sha256,
)
from declora.node.model_source import ModelError
from declora.node.models import BaseModel, HFTokenizer, quiet_transformers
from declora.node.schedule import Schedule
from declora.node.trainer import Encoded, LocalTrainer, LoraModel, LoraSpec, training_rows

LAYER = re.compile(r"^(.*?\.(?:layer|layers|h|block|blocks))\.(\d+)\.")
HEADS = ("classifier.", "score.")  # what PEFT's SEQ_CLS also trains: the task head
MODEL_WEIGHTS = "model.safetensors"


def layer_groups(names: Iterable[str]) -> list[list[str]]:
    """The parameter names of each transformer layer, in layer order (ModelError if
    the model has no numbered layers)."""
    runs: dict[str, dict[int, list[str]]] = {}
    for name in names:
        m = LAYER.match(name)
        if m:
            runs.setdefault(m[1], {}).setdefault(int(m[2]), []).append(name)
    if not runs:
        raise ModelError(
            "--method deca: the model has no numbered transformer layers",
            "use a transformer model (layers named layer.N, layers.N or h.N), or a LoRA "
            "method such as --method dec-lora",
        )
    layers = runs[max(runs, key=lambda k: len(runs[k]))]
    return [layers[i] for i in sorted(layers)]


def split_blocks(groups: Sequence[Sequence[str]], count: int) -> tuple[tuple[str, ...], ...]:
    """`count` blocks of consecutive layers (0 = one per 2 layers)."""
    count = count or max(1, len(groups) // 2)
    if count > len(groups):
        raise ModelError(
            f"--deca-blocks {count}: the model has only {len(groups)} layers",
            f"give --deca-blocks at most {len(groups)}, or 0 for one block per 2 layers",
        )
    idx = np.array_split(np.arange(len(groups)), count)
    return tuple(tuple(n for i in part for n in groups[int(i)]) for part in idx)


def block_at(round_number: int, blocks: int, block_rounds: int, seed: int) -> int:
    """The block round `round_number` (1-based) trains: every cycle of `blocks` x
    `block_rounds` rounds visits each block once, in an order seeded by (seed, cycle)."""
    turn = (max(round_number, 1) - 1) // block_rounds
    cycle, position = divmod(turn, blocks)
    order = np.random.default_rng([seed, cycle, 0xDECA]).permutation(blocks)
    return int(order[position])


class BlockModel(LoraModel):
    """A base model trained block by block (DECA); see the module docstring."""

    def __init__(self, spec: LoraSpec, num_labels: int | None = None, **kwargs: Any) -> None:
        if spec.quantize != "none":
            raise ModelError(
                "--method deca trains the base itself: it needs --quantize none",
                "drop --quantize, or quantize the base with a LoRA method (--method dec-lora)",
            )
        super().__init__(spec, num_labels, **kwargs)
        named = dict(self.model.named_parameters())
        self.blocks = split_blocks(layer_groups(named), spec.deca_blocks)
        self.head = tuple(n for n in named if n.startswith(HEADS)) if self.task == "cls" else ()
        members = {*self.head, *(n for block in self.blocks for n in block)}
        self._named = {n: p for n, p in named.items() if n in members}
        self._base = {n: p.data for n, p in self._named.items()}
        self.schema = AdapterSchema.of(self._named.items())
        self._full_base: np.ndarray | None = None
        self.spec = LoraSpec(**{**self.spec.as_dict(), "deca_blocks": len(self.blocks)})  # type: ignore[arg-type]
        self.identity = {**self.identity, "deca_blocks": len(self.blocks)}
        self.fingerprint = fingerprint(spec.model, self.base_digest, self.identity, self.schema)

    def _trainable_model(
        self, base: BaseModel, spec: LoraSpec, targets: tuple[str, ...]
    ) -> nn.Module:
        return base.model  # every parameter frozen until a trainer binds its block

    def block_at(self, round_number: int) -> int:
        return block_at(round_number, len(self.blocks), self.spec.deca_block_rounds, self.spec.seed)

    def block_schema(self, block: int) -> AdapterSchema:
        """The active block's parameters and then the head: a trainer's vector."""
        return AdapterSchema.of((n, self._named[n]) for n in (*self.blocks[block], *self.head))

    def full_base_vector(self) -> np.ndarray:
        """Every block's base values and the head's seeded init, in union order
        (computed once; never to be written)."""
        if self._full_base is None:
            self._full_base = _flat([self._base[n] for n in self.schema.names])
            self._full_base.flags.writeable = False
        return self._full_base

    def base_values(self, names: Iterable[str]) -> list[torch.Tensor]:
        """The base's (shared, seeded) tensors of `names`; never to be written."""
        return [self._base[n] for n in names]

    def bind(self, tensors: Sequence[torch.Tensor], owner: object) -> None:
        """Point every block and head parameter at `owner`'s values (a `BlockTrainer`:
        its trained copies, the base elsewhere; only its active block and the head
        need gradients), or at `tensors` in union order (`using`)."""
        if self._owner is owner:
            return
        if isinstance(owner, BlockTrainer):
            values: Mapping[str, torch.Tensor] = owner.values
            active: Sequence[str] = owner.names
        else:
            values, active = dict(zip(self.schema.names, tensors, strict=True)), ()
        wanted = set(active)
        for name, p in self._named.items():
            p.data = values.get(name, self._base[name])
            p.requires_grad_(name in wanted)
        self.params = [self._named[n] for n in active]
        self._owner = owner

    def unbind(self) -> None:
        """The next `bind` rebinds even for the same owner (its block changed)."""
        self._owner = None

    def save_adapter(self, vec: np.ndarray, path: Path, meta: dict[str, object]) -> None:
        """Write the full model with the union vector `vec` atomically: transformers'
        `save_pretrained` files (`from_pretrained` loads them), the tokenizer when it
        is a transformers one, `declora.json` (fingerprint, spec, agreed recipe
        facts, labels, base, the weights' sha256, `meta`): what `load_adapter` reads,
        and a `README.md` model card."""
        size = sum(p.numel() * p.element_size() for p in self.model.parameters())
        with built_atomically(path, size) as build, quiet_transformers():
            with self.using(vec):  # no "Writing model shards" bar in a node's log
                self.model.save_pretrained(str(build))  # type: ignore[operator]
            if isinstance(self.tokenizer, HFTokenizer):
                self.tokenizer.hf.save_pretrained(str(build))
            info = {
                "format": FULL_MODEL,
                "weights_sha256": weights_sha256(build / MODEL_WEIGHTS),
                **self.recorded(meta),
            }
            (build / DECLORA_INFO).write_text(json.dumps(info, indent=2, default=str) + "\n")
            (build / MODEL_CARD).write_text(model_card(info, str(path)))


class BlockTrainer(LocalTrainer):
    """One DECA node's trained parameters, block-wise AdamW and batch sampler over a
    shared `BlockModel`. `vector()` is the active block and the head (`schema`).

    `round_steps` > 0 makes the trainer switch blocks by itself, by the schedule
    position of each step (round = position // round_steps + 1): the centralized
    reference, which no node drives."""

    lm: BlockModel

    def __init__(
        self,
        lm: BlockModel,
        data: Encoded,
        lr: float,
        batch_size: int,
        seed: int,
        weight_decay: float = 0.0,
        *,
        grad_accumulation: int = 1,
        max_grad_norm: float = 0.0,
        schedule: Schedule | None = None,
        round_steps: int = 0,
    ) -> None:
        # not LocalTrainer.__init__: it binds and builds an optimizer over LoRA tensors
        data = training_rows(data, lm.task)
        self.lm = lm
        self.data = data
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.grad_accumulation = grad_accumulation
        self.max_grad_norm = max_grad_norm
        self.schedule = schedule or Schedule()
        self.seed = seed
        self.round_steps = round_steps
        self.step = 0
        self.order = np.zeros(0, dtype=np.int64)
        self.cursor = 0
        self.epoch = 0
        self.values: dict[str, torch.Tensor] = {n: lm._base[n].clone() for n in lm.head}
        self.block = -1
        self.names: tuple[str, ...] = ()
        fp16 = lm.precision == "fp16"
        self.scaler = torch.amp.GradScaler(lm.device.type) if fp16 else None
        self.activate(lm.block_at(1))

    def activate(self, block: int) -> None:
        """Train `block` from now on: its parameters (copied from the base on the
        first visit, else as this trainer left them) and the head, with a new AdamW."""
        lm = self.lm
        for name in lm.blocks[block]:
            if name not in self.values:
                self.values[name] = lm._base[name].clone()
        self.block = block
        self.names = (*lm.blocks[block], *lm.head)
        self.schema = lm.block_schema(block)
        self.tensors = [self.values[n] for n in self.names]
        lm.unbind()
        lm.bind(self.tensors, owner=self)
        self.optimizer = torch.optim.AdamW(lm.params, lr=self.lr, weight_decay=self.weight_decay)

    def train_steps(
        self,
        k: int,
        should_stop: Callable[[], bool] | None = None,
        grad_hook: Callable[[list[torch.Tensor | None]], None] | None = None,
        first_step: int | None = None,
    ) -> float:
        """As `LocalTrainer.train_steps`, on the active block; with `round_steps`, each
        step first switches to the block of its round."""
        if not self.round_steps:
            return super().train_steps(k, should_stop, grad_hook, first_step)
        position = self.step if first_step is None else first_step
        total, done = 0.0, 0
        for i in range(k):
            if should_stop is not None and should_stop():
                break
            block = self.lm.block_at((position + i) // self.round_steps + 1)
            if block != self.block:
                self.activate(block)
            total += super().train_steps(1, None, grad_hook, position + i)
            done += 1
        return total / max(done, 1)

    def set_vector(self, vec: np.ndarray) -> None:
        """Overwrite the active block and head in place (the AdamW state is kept)."""
        for t, new in zip(self.tensors, self.schema.unflatten(vec).values(), strict=True):
            t.copy_(new.to(t.device))

    def base_vector(self) -> np.ndarray:
        """The active block's base values and the head's seeded init: what every node
        starts the block's gossip from."""
        return _flat(self.lm.base_values(self.names))

    def trained(self, block: int) -> bool:
        """Whether this trainer's copy of `block` differs from the base."""
        base = self.lm._base
        return any(
            n in self.values and not torch.equal(self.values[n], base[n])
            for n in self.lm.blocks[block]
        )

    def full_vector(self) -> np.ndarray:
        """Every block and the head (the base where this trainer never trained), in
        the union order `BlockModel.evaluate`/`save_adapter` take."""
        lm = self.lm
        return _flat([self.values.get(n, lm._base[n]) for n in lm.schema.names])

    def inject(self, h: np.ndarray, betas: tuple[float, float]) -> None:
        """m <- b1 m + (1 - b1) h, v <- b2 v + (1 - b2) h*h for the active block and
        head (h in `vector()` order); entries without Adam state yet are left alone."""
        b1, b2 = betas
        params = self.optimizer.param_groups[0]["params"]
        for p, t in zip(params, self.schema.unflatten(h).values(), strict=True):
            state = self.optimizer.state.get(p)
            if not state or "exp_avg" not in state:
                continue
            t = t.to(state["exp_avg"].device, state["exp_avg"].dtype)
            state["exp_avg"].mul_(b1).add_(t, alpha=1 - b1)
            state["exp_avg_sq"].mul_(b2).addcmul_(t, t, value=1 - b2)

    def block_state(self) -> dict[str, Any]:
        """The active block and every trained copy, for a checkpoint."""
        values = {n: t.detach().to("cpu").clone() for n, t in self.values.items()}
        return {"block": self.block, "values": values}

    def restore_blocks(self, state: Mapping[str, Any]) -> None:
        """Back to a checkpoint's `block_state` (the optimizer is new: load it after)."""
        device = self.lm.device
        self.values = {n: t.to(device).clone() for n, t in state["values"].items()}
        self.activate(int(state["block"]))


def _flat(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    if not tensors:
        return np.zeros(0, np.float32)
    return torch.cat([t.detach().reshape(-1).to("cpu", torch.float32) for t in tensors]).numpy()


def model_vector(trainer: LocalTrainer) -> np.ndarray:
    """What `lm.evaluate`/`lm.save_adapter` take for `trainer`: its adapter, or a
    `BlockTrainer`'s whole trainable model."""
    return trainer.full_vector() if isinstance(trainer, BlockTrainer) else trainer.vector()
