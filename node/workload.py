"""One builder of a run's workload, used by the daemon, the simulator, the lab's
centralized reference and the benchmarks.

For a recipe and a number of nodes, `Workload` holds the train/test split, each
node's share of the training data (`partition_scheme`, seeded by the recipe's seed),
the test set capped at `eval_cap` examples (a seeded choice, the same everywhere),
the validation rows (`validation_fraction` of every share, held out from training:
model selection never looks at the test set; scored up to `eval_cap` of them too),
and the model. Node `i` trains with
the seed `node_seed(seed, i)` on its share; the centralized reference trains one
adapter on the union of the shares with the seed itself (its lr schedule spans the
swarm's total steps). Two callers with the same recipe therefore build the same nodes.

Causal-LM rows are read in `data_format` (node/lm_data/). Packed text (`packing`)
becomes blocks that are not rows, so each node's share, and the reference's union,
is packed on its own (packing never crosses a share); everything else is tokenized
once and a share takes its rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from declora.node.data import EMBEDDED_DATA, TextDataset, load_dataset
from declora.node.data_files import DataError
from declora.node.dec_lora import DecLoraNode
from declora.node.deca import DecaNode
from declora.node.deca_model import BlockModel, BlockTrainer
from declora.node.kill_revive import node_type
from declora.node.lm_data import LmFormat
from declora.node.partition import partition
from declora.node.recipe import Recipe
from declora.node.trainer import CHATS, TEXT, Encoded, LocalTrainer, LoraModel, count_targets

_log = logging.getLogger(__name__)
PARTITION_SCHEME = "partition_scheme"


def node_seed(seed: int, index: int) -> int:
    """The seed of node `index`'s sampler, dropout and codec randomness."""
    return seed * 1000 + index


def cap(data: TextDataset, limit: int, seed: int) -> TextDataset:
    """At most `limit` examples (0 = all), a seeded choice kept in file order."""
    if not limit or limit >= len(data):
        return data
    keep = np.random.default_rng(seed).permutation(len(data))[:limit]
    return data.subset(np.sort(keep))


@dataclass
class Workload:
    """The data and the model of one run of `nodes` nodes."""

    recipe: Recipe
    nodes: int
    train: TextDataset
    test: TextDataset
    parts: list[np.ndarray]
    lm: LoraModel
    validation_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _encoded: dict[str, Encoded] = field(default_factory=dict)

    def encoded_train(self) -> Encoded:
        """The whole training set, tokenized once (the simulator's nodes share it)."""
        if "train" not in self._encoded:
            self._encoded["train"] = self._encode(self.train)
        return self._encoded["train"]

    def encoded_test(self) -> Encoded | None:
        if not len(self.test):
            return None
        if "test" not in self._encoded:
            self._encoded["test"] = self._encode(self.test)
        return self._encoded["test"]

    def encoded_validation(self) -> Encoded | None:
        """The validation rows (carved from every node's share) that are evaluated, at
        most the recipe's `eval_cap` of them (a seeded choice), tokenized once."""
        if not len(self.validation_rows):
            return None
        if "validation" not in self._encoded:
            rows, limit = self.validation_rows, self.recipe.eval_cap
            if limit and limit < len(rows):
                pick = np.random.default_rng([self.recipe.seed, 0x7A2]).permutation(len(rows))
                rows = np.sort(rows[pick[:limit]])
            self._encoded["validation"] = self._encoded_rows(rows)
        return self._encoded["validation"]

    def _encode(self, data: TextDataset) -> Encoded:
        """`data` tokenized; texts of the user's classification data cut at --max-length
        are counted in one warning (the embedded BBC set is read by its first tokens)."""
        warn = self.recipe.task == "cls" and self.recipe.data != EMBEDDED_DATA
        return self.lm.encode(data, packing=self.recipe.packing, warn_cut=warn)

    def _encoded_rows(self, rows: np.ndarray) -> Encoded:
        packed = self.recipe.task == "lm" and self.recipe.packing and self.train.chats is None
        if "train" in self._encoded and not packed:
            return self._encoded["train"].take(rows)
        return self._encode(self.train.subset(rows))

    def trainer(self, index: int) -> LocalTrainer:
        """Node `index`'s trainer on its share, from the shared seeded adapter; its
        gradient weighs `share_weight` of the share."""
        return self._trainer(self.parts[index], node_seed(self.recipe.seed, index), node=True)

    def _trainer(
        self, rows: np.ndarray, seed: int, nodes: int = 1, *, node: bool = False
    ) -> LocalTrainer:
        """A trainer on `rows` with the recipe's training options; its lr schedule
        spans `nodes` x rounds x local steps (`Recipe.schedule`). A node trains at
        `Recipe.node_lr`, the centralized reference (`nodes` > 1) at `lr`. Only a
        `node`'s gradient is weighted (the reference's union needs no weight)."""
        r = self.recipe
        lr = r.lr if nodes > 1 else r.node_lr
        if isinstance(self.lm, BlockModel):  # DECA: full fine-tuning, block by block
            return BlockTrainer(
                self.lm, self._encoded_rows(rows), lr, r.batch_size, seed, r.weight_decay,
                grad_accumulation=r.grad_accumulation, max_grad_norm=r.max_grad_norm,
                schedule=r.schedule(nodes),
            )  # fmt: skip
        data = self._encoded_rows(rows)
        weight = share_weight(data, r) if node else 1.0
        return LocalTrainer(
            self.lm, data, lr, r.batch_size, seed, r.weight_decay,
            grad_accumulation=r.grad_accumulation, max_grad_norm=r.max_grad_norm,
            schedule=r.schedule(nodes), grad_weight=weight,
        )  # fmt: skip

    def node(self, index: int) -> DecLoraNode[Any]:
        """Node `index`: its trainer plus gossip state (codec, mixing rule, tracking)."""
        r = self.recipe
        if r.gossip_acceleration == "chebyshev":
            raise ValueError(
                "--gossip-acceleration chebyshev needs a lambda: give chebyshev:LAMBDA, or "
                "let the swarm's topology set it (simulate, lab)"
            )
        cls = DecaNode if r.method == "deca" else node_type(r.method)
        return cls(
            self.trainer(index),
            r.codec,
            r.consensus_step,
            node_seed(r.seed, index),
            r.robust_mixing,
            r.gradient_tracking,
            r.exchanges_per_round,
            acceleration=r.chebyshev_lambda,
            step_after_mixing=bool(r.step_after_mixing),
        )

    def centralized_trainer(self) -> LocalTrainer:
        """One adapter on the union of every node's share (the reference)."""
        union = np.unique(np.concatenate(self.parts))
        trainer = self._trainer(union, self.recipe.seed, self.nodes)
        if isinstance(trainer, BlockTrainer):  # DECA's: blocks switch by its own steps
            trainer.round_steps = self.recipe.local_steps
        return trainer

    def centralized_steps(self) -> int:
        """The swarm's total number of local steps: the reference's budget."""
        return self.nodes * self.recipe.rounds * self.recipe.local_steps


def share_weight(data: Encoded, recipe: Recipe) -> float:
    """A node's gradient weight: under `--weighting examples` what its share's loss
    averages over (training examples for cls, target tokens for lm: `count_targets`),
    so with tracking the swarm follows the gradient of the union's mean loss, as the
    centralized reference does (AdamW ignores the scale all nodes share, up to its
    eps); else 1 (every node the same). A share with no targets weighs 1: its
    gradient is zero whatever the weight."""
    if recipe.weighting != "examples":
        return 1.0
    if not recipe.gradient_tracking:  # a config copied without validation
        raise ValueError("--weighting examples needs --gradient-tracking")
    return float(max(count_targets(data, recipe.task), 1))


def _read(recipe: Recipe, label_column: str | None) -> tuple[TextDataset, TextDataset]:
    """The recipe's (train, test), labelled by `label_column` (None: texts only)."""
    cls = recipe.task == "cls"
    return load_dataset(
        recipe.data,
        recipe.test_fraction,
        label_column=label_column,
        text_column=recipe.text_column,
        labels=recipe.labels or None,
        examples=None if cls else LmFormat(
            recipe.data_format, recipe.text_column, recipe.messages_column,
            recipe.prompt_column, recipe.response_column,
        ),
        dedupe=recipe.dedupe,
    )  # fmt: skip


def load_workload(
    recipe: Recipe,
    nodes: int = 1,
    *,
    device: str = "cpu",
    lm: LoraModel | None = None,
    max_train: int = 0,
    model_type: type[LoraModel] | None = None,
) -> Workload:
    """Read the data, share it out among `nodes`, cap the test set, build the model.

    `max_train` keeps a seeded subset of the training set first (0 = all); `lm`
    reuses an already built model (same recipe); `model_type` builds another kind
    than the method's (`full_finetune.FullModel`: the full fine-tuning reference).
    A causal LM's `lm_rows` is set to what it trains on (`trainer.CHATS` or `TEXT`).
    A `validation_fraction` that holds out no row is refused when the recipe's user
    chose it, else a warning (`no_validation`).
    """
    shared = _share_out(recipe, nodes, max_train)
    recipe, train, test, parts = shared.recipe, shared.train, shared.test, shared.parts
    cls = recipe.task == "cls"
    problem = no_validation(shared)
    if problem is not None:
        if "validation_fraction" in recipe.model_fields_set:  # the user's choice: refused
            raise problem
        _log.warning("%s; going on without validation (%s)", problem.message, problem.hint)
    _log.info("%s", data_line(recipe, shared.read, shared.held, parts, shared.validation))
    if lm is None:
        names = train.label_names if cls else ()
        kind = model_type or (BlockModel if recipe.method == "deca" else LoraModel)
        lm = kind(
            recipe.lora_spec(), num_labels=max(train.num_labels, 2), device=device,
            label_names=names if len(names) >= 2 else (), precision=recipe.precision,
            gradient_checkpointing=recipe.gradient_checkpointing, agreed=recipe.agreed_facts(),
        )  # fmt: skip
    if recipe.task == "lm":  # what its saved adapters record it trained on
        lm.lm_rows = TEXT if train.chats is None else CHATS
    return Workload(recipe, nodes, train, test, parts, lm, shared.validation)


@dataclass
class Shares:
    """A recipe's data read and shared out among nodes (`_share_out`)."""

    recipe: Recipe  # with the partition scheme the data was shared out by
    train: TextDataset
    test: TextDataset  # capped at `eval_cap`
    parts: list[np.ndarray]  # each node's share of `train`, less its validation rows
    validation: np.ndarray  # the rows held out of the shares
    read: int  # rows read (after dedupe)
    held: int  # of them in the test set, before the cap


def no_validation(shared: Shares) -> DataError | None:
    """The error for a nonzero `validation_fraction` that held out no row of any of
    `shared`'s shares (`_no_validation`), else None."""
    if shared.recipe.validation_fraction and not len(shared.validation):
        return _no_validation(shared.recipe, shared.parts)
    return None


def validation_problem(recipe: Recipe, nodes: int) -> DataError | None:
    """`no_validation` of `recipe`'s data shared out among `nodes` as `load_workload`
    shares it (the data read, no model built): what a caller checks before handing a
    default fraction to daemons, which take every option they are given as chosen."""
    return no_validation(_share_out(recipe, nodes, 0))


def _share_out(recipe: Recipe, nodes: int, max_train: int) -> Shares:
    """`load_workload`'s data: read, the test set capped, shared out, validation held."""
    cls = recipe.task == "cls"
    # causal LM: labels (e.g. a topic) only to share the data out by them
    labelled = cls or recipe.partition_scheme != "iid"
    try:
        train, test = _read(recipe, recipe.label_column if labelled else None)
    except DataError as exc:
        if cls or not labelled or f"no label column {recipe.label_column!r}" not in exc.message:
            raise
        if PARTITION_SCHEME in recipe.model_fields_set:  # the user's choice: refused
            raise DataError(
                f"{exc.message}; --partition-scheme {recipe.partition_scheme} shares "
                "causal-LM data out by a label column",
                "use --partition-scheme iid for unlabelled data (or name its label column "
                "with --label-column)",
            ) from exc
        # a caller's label-based default (simulate's dirichlet) on unlabelled LM data
        _log.info(
            "%s has no label column %r: sharing it out iid, not %s",
            recipe.data, recipe.label_column, recipe.partition_scheme,
        )  # fmt: skip
        recipe = recipe.model_copy(update={PARTITION_SCHEME: "iid"})
        train, test = _read(recipe, None)
    if cls and train.num_labels < 2:
        found = list(train.label_names)
        raise DataError(
            f"{recipe.data}: {len(found)} class(es) {found} in column {recipe.label_column!r}; "
            "classification needs at least 2",
            "declare the swarm's classes with --labels a,b,... (or --labels @FILE) when this "
            "node's shard lacks some, or check --label-column",
        )
    if cls:
        _check_classes(recipe, train, test)
    read, held = len(train) + len(test), len(test)
    if max_train and max_train < len(train):  # a seeded subset, in the permuted order
        train = train.subset(np.random.default_rng(recipe.seed).permutation(len(train))[:max_train])
    test = cap(test, recipe.eval_cap, recipe.seed)
    if nodes > 1:
        labels = train.labels
        if labels is None:  # text only (causal LM): only label-free schemes apply
            if recipe.partition_scheme != "iid":
                raise ValueError("unlabelled data can only be partitioned 'iid'")
            labels = np.zeros(len(train), dtype=np.int64)
        parts = partition(recipe.partition_scheme, labels, nodes, seed=recipe.seed)
    else:
        parts = [np.arange(len(train))]
    parts, validation = carve_validation(parts, recipe.validation_fraction, recipe.seed)
    return Shares(recipe, train, test, parts, validation, read, held)


def carve_validation(
    parts: list[np.ndarray], fraction: float, seed: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Hold out `fraction` of every share (a seeded choice; each keeps >= 1 row to
    train on): the shares that remain and the sorted union of the held-out rows."""
    kept, held = [], []
    for i, rows in enumerate(parts):
        n = min(round(len(rows) * fraction), max(len(rows) - 1, 0))
        order = np.random.default_rng([seed, i, 0x7A1]).permutation(len(rows))
        held.append(rows[order[:n]])
        kept.append(np.sort(rows[order[n:]]))
    return kept, np.sort(np.concatenate(held)).astype(np.int64) if held else np.zeros(0, np.int64)


# a label column with more classes than this, more than half of them on one row, is
# refused: a score or an id column, not classes (`_check_classes`)
MAX_SINGLETON_CLASSES = 10


def _check_classes(recipe: Recipe, train: TextDataset, test: TextDataset) -> None:
    """DataError when the label column is mostly singletons: more than
    `MAX_SINGLETON_CLASSES` classes in the file and more than half of them on a single
    row (a continuous score or an id, which would train an N-class classifier with one
    row a class). A small real dataset (a few classes, several rows each) passes. Not
    checked with `--labels`: a node's own small share of a many-class swarm may hold
    most classes once, and a wrong column is refused there by its labels outside the set."""
    rows = [d.labels for d in (train, test) if d.labels is not None and len(d.labels)]
    if not rows or recipe.labels:
        return
    counts = np.bincount(np.concatenate(rows))
    present = int(np.count_nonzero(counts))
    single = int(np.count_nonzero(counts == 1))
    if present > MAX_SINGLETON_CLASSES and 2 * single > present:
        raise DataError(
            f"{recipe.data}: column {recipe.label_column!r} has {present} distinct labels "
            f"in {int(counts.sum())} rows, {single} of them on a single row: that is no "
            "class label (a score or an id?)",
            "is --label-column the right column? a classifier needs several rows per label",
        )


def _no_validation(recipe: Recipe, parts: list[np.ndarray]) -> DataError:
    """The error for a `validation_fraction` that holds out no row of any share, naming
    the largest share and the smallest fraction (in hundredths) that holds one out."""
    largest = max((len(p) for p in parts), default=0)
    fraction = recipe.validation_fraction
    smallest = next(
        (k / 100 for k in range(1, 51) if min(round(largest * k / 100), largest - 1) >= 1), None
    )
    fix = (
        f"use --validation-fraction {smallest:g} or more (one row of {largest}), or 0 for none"
        if smallest is not None
        else "use --validation-fraction 0: a share of one row keeps it to train on"
    )
    return DataError(
        f"{recipe.data}: --validation-fraction {fraction:g} holds out no row: the largest "
        f"share has {largest} row(s) to train on, and {fraction:g} x {largest} rounds to 0",
        fix,
    )


def data_line(
    recipe: Recipe, rows: int, held: int, parts: list[np.ndarray], validation: np.ndarray
) -> str:
    """What a run trains and evaluates on, for the log: the `rows` read (after dedupe),
    those trained on (and how they are shared out), the `held` test rows the eval lines
    score (held out of the file, or its own test split; `eval_cap` of them at most) and
    the validation rows."""
    trained = sum(len(p) for p in parts)
    shares = ""
    if len(parts) > 1:
        sizes = [len(p) for p in parts]
        shares = f" in {len(parts)} shares of {min(sizes)}-{max(sizes)}"
    scored = min(held, recipe.eval_cap or held)
    if not held:
        test = "none held out as a test set (evaluation is off)"
    else:
        of = f", {scored} of them scored" if scored < held else ""
        test = f"{held} held out as the test set of the eval lines{of}"
    return (
        f"DATA {recipe.data}: {rows} rows: {trained} to train on{shares}, {test}, "
        f"{len(validation)} for validation"
    )
