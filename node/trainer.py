"""Local training: one shared frozen model, many nodes' adapters and optimizers.

`LoraModel` wraps a PEFT model and its tokenizer. `LocalTrainer` is one node: its own
adapter tensors, its own AdamW state and its own data sampler. Several trainers may
share one `LoraModel` (the simulator); activating a trainer points the model's
trainable parameters at that trainer's tensors, so nothing is copied and the base
model exists once. Every step's randomness (batch order, dropout) derives from the
trainer's seed and step count, so the same seed gives the same adapter in the
simulator and in the daemon.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from declora.node.adapter import (
    AdapterSchema,
    base_digest,
    built_atomically,
    fingerprint,
    trainable,
)
from declora.node.adapter_card import describe_adapter, describe_base
from declora.node.data import TextDataset
from declora.node.data_files import DataError
from declora.node.lm_data import encode_lm
from declora.node.lm_data.encoding import percent
from declora.node.lora_targets import check_targets, default_targets, wrap_lora
from declora.node.methods import DEFAULT_METHOD, embedding_problem, freeze_lora_a
from declora.node.model_source import ModelError
from declora.node.models import BaseModel, load_base
from declora.node.quantize import check_runtime
from declora.node.schedule import Schedule
from declora.node.tokenizers import truncate_counted

_log = logging.getLogger(__name__)
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
LM_EVAL_LOGITS = 1 << 24  # logits an LM evaluation batch may hold (64 MiB in fp32)
# declora.json's record of what a causal-LM adapter trained on: "chats" (rendered
# conversations) or "text" (plain documents); absent from adapters saved before it
LM_ROWS = "lm_rows"
CHATS, TEXT = "chats", "text"


@dataclass(frozen=True)
class LoraSpec:
    """The swarm-wide model shape: every node must agree on all of it."""

    model: str = "minilm"
    task: str = "cls"
    rank: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ()
    max_length: int = 64
    seed: int = 0
    method: str = DEFAULT_METHOD  # methods.py; "conlora" freezes the A factors
    lora_dropout: float = 0.0
    rslora: bool = False
    dora: bool = False
    quantize: str = "none"  # none | nf4 | fp4 | int8 (QLoRA: a quantized base)
    deca_blocks: int = 0  # --method deca: blocks of layers (0 = one per 2 layers)
    deca_block_rounds: int = 5  # --method deca: rounds a block trains in turn

    def as_dict(self) -> dict[str, object]:
        """The spec as the fingerprint sees it (`method` only when not the default,
        so fingerprints made before methods existed are unchanged)."""
        out: dict[str, object] = {
            "model": self.model,
            "task": self.task,
            "rank": self.rank,
            "alpha": self.alpha,
            "targets": list(self.targets),
            "max_length": self.max_length,
            "seed": self.seed,
        }
        if self.method != DEFAULT_METHOD:
            out["method"] = self.method
        # the LoRA variants and a quantized base, likewise only when not the default
        variants = (
            ("lora_dropout", self.lora_dropout, 0.0),
            ("rslora", self.rslora, False),
            ("dora", self.dora, False),
            ("quantize", self.quantize, "none"),
        )
        out.update({key: value for key, value, default in variants if value != default})
        if self.method == "deca":  # DECA's block schedule, only where it applies
            out.update(deca_blocks=self.deca_blocks, deca_block_rounds=self.deca_block_rounds)
        return out


@dataclass(frozen=True)
class Encoded:
    """A tokenized dataset held as tensors (labels are -100-masked ids for LM).

    The tensors are read-only and may be compact (LM: int32 ids and labels, an int8
    mask, see `lm_data`); `take` keeps their dtypes and `inputs` gives a batch as the
    model takes it (int64, on a device)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def take(self, idx: np.ndarray | torch.Tensor) -> Encoded:
        i = torch.as_tensor(idx, dtype=torch.long)
        return Encoded(self.input_ids[i], self.attention_mask[i], self.labels[i])

    def inputs(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The model's keyword arguments for these rows: int64 tensors on `device`."""
        return {
            "input_ids": self.input_ids.to(device, torch.long),
            "attention_mask": self.attention_mask.to(device, torch.long),
            "labels": self.labels.to(device, torch.long),
        }


def _warn_cut(data: TextDataset, max_length: int, cut: int, dropped: int, kept: int) -> None:
    """One warning when `cut` texts of classification `data` passed `max_length`
    (`dropped` tokens lost, `kept` read)."""
    if not cut:
        return
    what = {"train": "training data", "test": "the held-out test split"}.get(
        data.name, "classification data"
    )
    _log.warning(
        "%s: %d of %d texts are longer than --max-length %d tokens and are truncated: "
        "the classifier sees only their first %d tokens (%s of the tokens are "
        "dropped; raise --max-length to read more)",
        what, cut, len(data), max_length, max_length, percent(dropped, kept + dropped),
    )  # fmt: skip


class LoraModel:
    """A frozen base with LoRA applied; the adapter is the trainable tensors in order."""

    def __init__(
        self,
        spec: LoraSpec,
        num_labels: int | None = None,
        device: str = "cpu",
        *,
        label_names: Sequence[str] = (),
        precision: str = "fp32",
        gradient_checkpointing: bool = False,
        agreed: Mapping[str, object] | None = None,
    ) -> None:
        """Build the base and its LoRA shape; nothing is trained.

        For task "cls", `label_names` (the swarm's label set, in id order) name the
        head's outputs, go into the base config's `id2label`/`label2id`, and are part
        of the fingerprint, so nodes with different label sets cannot mix. Without
        them the fingerprint is the same as before label names existed; `num_labels`
        alone still works and, when both are given, they must agree. Label names are
        ignored for causal LM.

        `precision` (fp32, bf16, fp16) is the autocast dtype of training and
        evaluation; fp32 is plain fp32 everywhere, GPUs included (bf16 is never turned
        on behind the user's back). `gradient_checkpointing` recomputes activations in
        the backward pass (HF's, non-reentrant). `agreed` are further recipe options
        the swarm must agree on (the lr schedule when not the default): they join the
        fingerprint and `identity`. What this machine cannot run (a quantized base
        without CUDA, fp16 off CUDA) is refused before anything loads (ModelError).
        """
        check_runtime(spec.quantize, precision, device)
        names = tuple(str(n) for n in label_names) if spec.task == "cls" else ()
        if num_labels is None:
            if spec.task == "cls" and not names:
                raise ModelError("a classifier needs num_labels or label_names")
            num_labels = len(names) if names else 2
        if names and len(names) != num_labels:
            raise ModelError(f"{len(names)} label names {list(names)} but num_labels={num_labels}")
        base: BaseModel = load_base(
            spec.model, spec.task, num_labels, spec.seed,  # type: ignore[arg-type]
            quantize=spec.quantize, device=device, max_length=spec.max_length,
            labels=names,
        )  # fmt: skip
        if names:
            config: Any = base.model.config
            config.id2label = dict(enumerate(names))
            config.label2id = {n: i for i, n in enumerate(names)}
        targets = spec.targets or default_targets(base.family, base.model)
        check_targets(base, tuple(targets))  # each name a layer (DECA/full FT record them too)
        self.spec = LoraSpec(**{**spec.as_dict(), "targets": tuple(targets)})  # type: ignore[arg-type]
        self.base = base
        self.tokenizer = base.tokenizer
        self.task = base.task
        self.label_names: tuple[str, ...] = names
        self.device = torch.device(device)
        self.model: nn.Module = self._trainable_model(base, spec, tuple(targets))
        if gradient_checkpointing:
            _enable_checkpointing(base)
        if problem := embedding_problem(spec.method, (n for n, _ in trainable(self.model))):
            raise ModelError(problem, "give --targets linear layers only, or --method dec-lora")
        if spec.method == "conlora" and not freeze_lora_a(self.model):
            raise ModelError(
                "--method conlora: the model has no LoRA A factor to freeze",
                "give --targets linear layers, or --method dec-lora",
            )
        if spec.quantize == "none":  # a quantized base is already on its GPU
            self.model.to(self.device)
        self.params = [p for _, p in trainable(self.model)]
        self.schema = AdapterSchema.of(trainable(self.model))
        self.base_digest = base_digest(self.model)
        self.agreed: dict[str, object] = dict(agreed or {})
        # what a causal LM trains on (CHATS or TEXT), recorded as LM_ROWS when set
        # (`workload.load_workload` sets it from the data it read)
        self.lm_rows: str | None = None
        identity: dict[str, object] = {**self.spec.as_dict(), **self.agreed}
        if names:
            identity = {**identity, "labels": list(names)}
        self.identity = identity  # what the fingerprint covers besides weights and schema
        self.fingerprint = fingerprint(spec.model, self.base_digest, identity, self.schema)
        self.num_labels = num_labels
        self.precision = precision
        self.autocast_dtype = AUTOCAST[precision]
        self._initial = [p.detach().clone() for p in self.params]
        self._owner: object | None = None
        self._base_record: dict[str, object] | None = None

    def _trainable_model(
        self, base: BaseModel, spec: LoraSpec, targets: tuple[str, ...]
    ) -> nn.Module:
        """The model to train: the base with LoRA (PEFT); DECA's subclass trains the
        base itself (`deca_model.BlockModel`)."""
        return wrap_lora(
            base, spec.rank, spec.alpha, targets, spec.seed,
            dropout=spec.lora_dropout, rslora=spec.rslora, dora=spec.dora,
        )  # fmt: skip

    def initial_tensors(self) -> list[torch.Tensor]:
        """Copies of the seeded initial adapter (identical on every node)."""
        return [t.clone() for t in self._initial]

    def bind(self, tensors: Sequence[torch.Tensor], owner: object) -> None:
        """Point the trainable parameters at `tensors` (no copy)."""
        if self._owner is owner:
            return
        for p, t in zip(self.params, tensors, strict=True):
            p.data = t
        self._owner = owner

    def encode(
        self, data: TextDataset, *, packing: bool = False, warn_cut: bool = False
    ) -> Encoded:
        """Tensors of `data`: for "lm" as `lm_data.encode_lm` makes them (texts packed
        into `max_length` blocks when `packing`, else one example per row). With
        `warn_cut`, classification texts longer than --max-length are counted in one
        warning (the classifier sees only their first tokens)."""
        if self.task != "cls":
            return Encoded(*encode_lm(self.tokenizer, data, self.spec.max_length, packing=packing))
        if data.labels is None:
            raise ValueError("classification data needs labels")
        n = self.spec.max_length
        if warn_cut:
            ids, mask, cut, dropped = truncate_counted(self.tokenizer, list(data.texts), n)
            _warn_cut(data, n, cut, dropped, int(mask.sum()))
        else:
            ids, mask = self.tokenizer(list(data.texts), n)
        return Encoded(ids, mask, torch.as_tensor(data.labels, dtype=torch.long))

    def vector_to_tensors(self, vec: np.ndarray) -> list[torch.Tensor]:
        return [t.to(self.device) for t in self.schema.unflatten(vec).values()]

    def autocast(self) -> AbstractContextManager[object]:
        """Autocast to the `precision` (bf16 or fp16); a no-op for fp32."""
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @contextmanager
    def using(self, vec: np.ndarray) -> Iterator[None]:
        """Evaluate or save with the adapter `vec` bound, then unbind."""
        self.bind(self.vector_to_tensors(vec), owner=object())
        try:
            yield
        finally:
            self._owner = None

    @torch.no_grad()
    def evaluate(self, vec: np.ndarray, data: Encoded, batch_size: int = 64) -> dict[str, float]:
        """Accuracy and macro-F1 (cls) or loss and perplexity (lm) of adapter `vec`.

        The loss is the mean over examples (cls) or over every target token (lm: each
        batch's mean weighted by its number of labelled next tokens), so an LM's
        perplexity does not depend on the batch size or on how long each example is."""
        return self.evaluate_examples(vec, data, batch_size)[0]

    @torch.no_grad()
    def evaluate_examples(
        self, vec: np.ndarray, data: Encoded, batch_size: int = 64
    ) -> tuple[dict[str, float], np.ndarray | None]:
        """`evaluate`'s figures and, for cls, whether each example was predicted
        right (a bool array in `data`'s order; None for lm). An LM's batches are cut
        so their logits stay near `LM_EVAL_LOGITS` values (memory, not figures)."""
        if self.task != "cls":
            row = max(int(data.input_ids.shape[1]), 1) * self.vocab_size
            batch_size = max(1, min(batch_size, LM_EVAL_LOGITS // row))
        with self.using(vec):
            self.model.eval()
            losses, preds = [], []
            weights: list[int] = []
            for start in range(0, len(data), batch_size):
                b = data.take(np.arange(start, min(start + batch_size, len(data))))
                with self.autocast():
                    out = self.model(**b.inputs(self.device))
                weight = len(b) if self.task == "cls" else int((b.labels[:, 1:] != -100).sum())
                losses.append(float(out.loss) * weight if weight else 0.0)
                weights.append(weight)
                if self.task == "cls":
                    preds.append(out.logits.float().argmax(-1).cpu())
        loss = sum(losses) / max(sum(weights), 1)
        if self.task != "cls":
            return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}, None
        pred = torch.cat(preds).numpy()
        truth = data.labels.numpy()
        metrics = {"loss": loss, **classification_metrics(pred, truth, self.num_labels)}
        return metrics, pred == truth

    @property
    def vocab_size(self) -> int:
        """The size of the output vocabulary (a classifier's: its labels)."""
        model: Any = self.base.model
        head = model.get_output_embeddings()
        return int(head.weight.shape[0]) if head is not None else self.num_labels

    def base_record(self) -> dict[str, object]:
        """Where the base came from: name, hub id, local path, file hash, weight digest.

        Computed once (hashing a local base's weight files reads them whole)."""
        if self._base_record is None:
            self._base_record = describe_base(self.spec.model, self.base_digest)
        return self._base_record

    def save_adapter(self, vec: np.ndarray, path: Path, meta: dict[str, object]) -> None:
        """Write a PEFT adapter directory atomically (`PeftModel.from_pretrained` loads it).

        Beside the PEFT files, `declora.json` records the fingerprint, the spec, the
        agreed recipe facts (so `load_adapter` rebuilds the same fingerprint), the
        labels, the base (`base_record`), the weights' sha256 and `meta`; `README.md`
        is a model card. `adapter_config.json` names the base so PEFT alone loads it
        from any directory: a hub id (the embedded models'), else the local base's
        absolute folder (`adapter_card.portable_base`).
        """
        with built_atomically(path, vec.nbytes) as build:
            with self.using(vec):
                # the base's embedding is never resized here: an embedding target saves its
                # LoRA factors only, not the whole vocab x dim base weight beside them
                self.model.save_pretrained(str(build), save_embedding_layers=False)  # type: ignore[operator]
            describe_adapter(build, self.recorded(meta), final_path=path)

    def recorded(self, meta: dict[str, object]) -> dict[str, object]:
        """What a saved adapter's `declora.json` records of this model beside `meta`:
        its fingerprint, spec, agreed recipe facts, task, labels, base and, for a
        causal LM whose `lm_rows` is set, what it trained on (LM_ROWS)."""
        rows = {LM_ROWS: self.lm_rows} if self.task == "lm" and self.lm_rows else {}
        return {
            "fingerprint": self.fingerprint,
            "spec": self.spec.as_dict(),
            "agreed": self.agreed,
            "task": self.task,
            "labels": list(self.label_names),
            "num_labels": self.num_labels if self.task == "cls" else 0,
            "base": self.base_record(),
            **rows,
            **meta,
        }


def count_targets(batch: Encoded, task: str) -> int:
    """What a batch's mean loss averages over: examples (cls) or target tokens (lm)."""
    if task == "cls":
        return len(batch)
    return int((batch.labels[:, 1:] != -100).sum())  # HF shifts the labels by one


def training_rows(data: Encoded, task: str) -> Encoded:
    """The examples of `data` a node trains on: for "lm" those with a target token (a
    conversation whose reply lies beyond `max_length` has none: `lm_data` counts them
    in a warning). A `DataError` when none is left."""
    given = len(data)
    if task != "cls" and given:
        rows = torch.flatten(torch.nonzero((data.labels[:, 1:] != -100).any(dim=1)))
        if len(rows) < given:
            data = data.take(rows)
    if len(data) == 0:
        raise DataError(
            "this node has no training example"
            + (
                f": none of its {given} example(s) has a trained token within --max-length"
                if given
                else " (its share of the training rows is empty)"
            ),
            "give it more data: its rows are what is left after deduplication, the "
            "held-out test split, the partition among the nodes and "
            "--validation-fraction (the log counts each; for causal LM a conversation "
            "whose reply lies beyond --max-length is skipped), or use fewer nodes",
        )
    return data


def _enable_checkpointing(base: BaseModel) -> None:
    model: Any = base.model
    kw = {"use_reentrant": False}
    try:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5's name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kw)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)
    except ValueError as exc:
        raise ModelError(f"--gradient-checkpointing: {base.name!r} cannot: {exc}") from exc
    model.enable_input_require_grads()  # PEFT: the frozen embeddings' output must need grad
    model.config.use_cache = False  # no KV cache in training (HF warns otherwise)


def classification_metrics(pred: np.ndarray, true: np.ndarray, num_labels: int) -> dict[str, float]:
    """Accuracy and macro-F1 (classes absent from both pred and true are skipped)."""
    acc = float((pred == true).mean()) if len(true) else 0.0
    f1s = []
    for c in range(num_labels):
        tp = int(((pred == c) & (true == c)).sum())
        fp = int(((pred == c) & (true != c)).sum())
        fn = int(((pred != c) & (true == c)).sum())
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return {"accuracy": acc, "macro_f1": float(np.mean(f1s)) if f1s else 0.0}


class LocalTrainer:
    """One node's adapter, AdamW state and batch sampler over a shared `LoraModel`.

    One step is one optimizer step over `batch_size` x `grad_accumulation` examples
    (micro-batches of `batch_size`); the step's lr is `lr` times `schedule`'s factor
    at the step's position; the gradient is multiplied by `grad_weight` (a node's
    weight under `--weighting examples`) before the step's hook (gradient tracking)
    sees it, then clipped to `max_grad_norm` x `grad_weight` (the threshold stays in
    the units of a batch's mean gradient; 0 = off) and, in fp16, scaled by a
    `GradScaler`. With the defaults a step is a plain AdamW step on one batch at `lr`.
    """

    grad_weight: float = 1.0
    # a step held back by `defer_step`: its gradients (before any hook) and lr
    deferred: tuple[list[torch.Tensor], float] | None = None

    def __init__(
        self,
        lm: LoraModel,
        data: Encoded,
        lr: float,
        batch_size: int,
        seed: int,
        weight_decay: float = 0.0,
        *,
        grad_accumulation: int = 1,
        max_grad_norm: float = 0.0,
        schedule: Schedule | None = None,
        grad_weight: float = 1.0,
    ) -> None:
        data = training_rows(data, lm.task)
        if not (math.isfinite(grad_weight) and grad_weight > 0):
            raise ValueError(f"grad_weight must be finite and > 0, got {grad_weight}")
        self.grad_weight = grad_weight
        self.lm = lm
        self.data = data
        self.lr = lr
        self.batch_size = batch_size
        self.grad_accumulation = grad_accumulation
        self.max_grad_norm = max_grad_norm
        self.schedule = schedule or Schedule()
        self.seed = seed
        self.tensors = lm.initial_tensors()
        self.step = 0
        self.order = np.zeros(0, dtype=np.int64)
        self.cursor = 0
        self.epoch = 0
        lm.bind(self.tensors, owner=self)
        self.optimizer = torch.optim.AdamW(lm.params, lr=lr, weight_decay=weight_decay)
        fp16 = lm.precision == "fp16"
        self.scaler = torch.amp.GradScaler(lm.device.type) if fp16 else None

    def _next_batch(self) -> Encoded:
        idx: list[np.ndarray] = []
        need = self.batch_size * self.grad_accumulation
        while need > 0:
            if self.cursor >= len(self.order):
                rng = np.random.default_rng([self.seed, self.epoch])
                self.order = rng.permutation(len(self.data))
                self.cursor, self.epoch = 0, self.epoch + 1
            take = self.order[self.cursor : self.cursor + need]
            self.cursor += len(take)
            need -= len(take)
            idx.append(take)
        return self.data.take(np.concatenate(idx))

    def lr_at(self, position: int) -> float:
        """The learning rate of the step at schedule position `position`."""
        return self.lr * self.schedule.factor(position)

    def train_steps(
        self,
        k: int,
        should_stop: Callable[[], bool] | None = None,
        grad_hook: Callable[[list[torch.Tensor | None]], None] | None = None,
        first_step: int | None = None,
    ) -> float:
        """Run `k` optimizer steps (fewer if `should_stop()` turns true); mean training loss.

        `grad_hook` sees every step's gradients (schema order; None for a frozen
        tensor) before the optimizer does and may change them in place (gradient
        tracking's correction).
        `first_step` is the schedule position of the first step (a round's:
        `schedule.at_round`); by default this trainer's own step count."""
        self.lm.bind(self.tensors, owner=self)
        self.lm.model.train()
        position = self.step if first_step is None else first_step
        total = 0.0
        done = 0
        for i in range(k):
            if should_stop is not None and should_stop():
                break
            torch.manual_seed(self.seed * 1_000_003 + self.step)
            if not self.schedule.is_flat:
                for group in self.optimizer.param_groups:
                    group["lr"] = self.lr_at(position + i)
            total += self._backward(self._next_batch())
            self._optimizer_step(grad_hook)
            self.step += 1
            done += 1
        return total / max(done, 1)

    def defer_step(
        self, grad_hook: Callable[[list[torch.Tensor | None]], None], first_step: int | None = None
    ) -> float:
        """One local step's gradients, its optimizer step held back until
        `apply_deferred` (the step after mixing); the loss (nan when a gradient is not
        finite). `grad_hook` sees the gradients as in `train_steps`; what is kept is
        the gradient before it, at the lr of schedule position `first_step` (by
        default this trainer's step count)."""
        self.lm.bind(self.tensors, owner=self)
        self.lm.model.train()
        position = self.step if first_step is None else first_step
        torch.manual_seed(self.seed * 1_000_003 + self.step)
        loss = self._backward(self._next_batch())
        self._weigh_gradients()
        for p in self.lm.params:
            if p.grad is None and p.requires_grad:
                p.grad = torch.zeros_like(p)
        kept = [p.grad.detach().clone() for p in self.lm.params]  # type: ignore[union-attr]
        grad_hook([p.grad for p in self.lm.params])
        self.optimizer.zero_grad(set_to_none=True)
        self.deferred = (kept, self.lr_at(position))
        self.step += 1
        if not all(bool(torch.isfinite(g).all()) for g in kept):
            return float("nan")  # as a step that went non-finite: the caller rolls back
        return loss

    def apply_deferred(self, correction: Sequence[torch.Tensor]) -> None:
        """Take the step `defer_step` held back, along its gradient plus `correction`
        (schema order: tracking's c_i as it stands now), clipped as `train_steps`
        clips; nothing when none is held back."""
        if self.deferred is None:
            return
        kept, lr = self.deferred
        self.deferred = None
        self.lm.bind(self.tensors, owner=self)
        for p, g, c in zip(self.lm.params, kept, correction, strict=True):
            p.grad = g + c
        if self.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.lm.params, self.max_grad_norm * self.grad_weight)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _backward(self, batch: Encoded) -> float:
        """Gradients of the step's loss, micro-batch by micro-batch; the loss.

        Each micro-batch's mean loss is weighted by its share of the step's targets
        (tokens for LM, examples for cls): the sum is the mean over the whole batch."""
        self.optimizer.zero_grad(set_to_none=True)
        g, size = self.grad_accumulation, self.batch_size
        micro = [batch]
        if g > 1:
            micro = [batch.take(np.arange(j * size, (j + 1) * size)) for j in range(g)]
        counts = [count_targets(m, self.lm.task) for m in micro]
        whole = sum(counts)
        dev, loss_sum = self.lm.device, 0.0
        for m, n in zip(micro, counts, strict=True):
            if g > 1 and n == 0:
                continue  # nothing to learn from (and a mean over nothing is nan)
            with self.lm.autocast():
                out = self.lm.model(**m.inputs(dev))
            loss = out.loss if g == 1 else out.loss * (n / whole)
            (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            loss_sum += loss.item()
        return loss_sum

    def _optimizer_step(
        self, grad_hook: Callable[[list[torch.Tensor | None]], None] | None
    ) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        self._weigh_gradients()
        if grad_hook is not None:
            for p in self.lm.params:
                if p.grad is None and p.requires_grad:
                    p.grad = torch.zeros_like(p)
            grad_hook([p.grad for p in self.lm.params])
        if self.max_grad_norm > 0:  # in the units of a batch's mean gradient
            torch.nn.utils.clip_grad_norm_(self.lm.params, self.max_grad_norm * self.grad_weight)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()

    def _weigh_gradients(self) -> None:
        if self.grad_weight != 1.0:
            for p in self.lm.params:
                if p.grad is not None:
                    p.grad.mul_(self.grad_weight)

    def vector(self) -> np.ndarray:
        """A float32 copy of this node's adapter in schema order."""
        return torch.cat(
            [t.detach().reshape(-1).to("cpu", torch.float32) for t in self.tensors]
        ).numpy()

    def set_vector(self, vec: np.ndarray) -> None:
        """Overwrite this node's adapter in place (optimizer state is kept)."""
        for t, new in zip(self.tensors, self.lm.vector_to_tensors(vec), strict=True):
            t.copy_(new)
