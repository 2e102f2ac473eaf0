"""Shared fixtures: one tiny-bert LoRA model per session and a small learnable dataset.

Tests marked ``@pytest.mark.slow`` (pyproject.toml's markers say which) are left out of
`make test`, which runs ``-m "not slow and not faults"``; `make test-slow` runs them, and
so does a plain ``pytest``.
"""

from __future__ import annotations

import json
import logging
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from daemon_helpers import Cluster

from declora.node.acceleration import UNACCELERATED
from declora.node.data import TextDataset
from declora.node.simulator import SimConfig
from declora.node.trainer import LoraModel, LoraSpec


def _hangup_ignored_in_this_process_only(signum: int, frame: object) -> None:
    """SIGHUP for a test session started under `nohup` (nothing happens)."""


# Under `nohup` the session inherits SIGHUP ignored (SIG_IGN), and so would every node
# and lab the tests start, which then keep ignoring it as a user's `nohup` asks: the
# tests that stop them with SIGHUP would wait in vain. A Python handler keeps the
# session itself immune to a hangup, and the exec'd children start with SIGHUP's
# default, as they do from a terminal. Tests that want it ignored set SIG_IGN themselves.
@pytest.fixture(autouse=True)
def _signals_not_inherited_as_ignored() -> None:
    """Before each test: SIGHUP ignored in the session (nohup, or left so by an earlier
    test) becomes the no-op handler above, SIGINT ignored Python's default handler."""
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _hangup_ignored_in_this_process_only)
    # A session a shell started in the background without job control (`make test &`
    # from a script) inherits SIGINT ignored, and so would every child it starts, which
    # then never see a Ctrl-C: Python's own handler, as from a terminal.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def tmp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary folder tempfile gives, empty, in the test's own tmp_path: what a
    data read leaves there is seen, and its free space can be faked."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _ours(handler: logging.Handler) -> bool:
    """Whether `handler` is not one of pytest's (which it adds and removes itself)."""
    return not type(handler).__module__.startswith("_pytest.")


# `logs.configure` (an in-process `start` under CliRunner) binds handlers to the
# runner's stderr, closed once the command returns: a later test's log line then went
# to a closed file, "--- Logging error ---" on that test's stderr.
@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """After each test, the root and `declora` loggers' own handlers (not pytest's),
    level and propagation as they were before it."""
    loggers = [logging.getLogger(), logging.getLogger("declora")]
    saved = [(lg, [h for h in lg.handlers if _ours(h)], lg.level, lg.propagate) for lg in loggers]
    yield
    for logger, handlers, level, propagate in saved:
        for handler in [h for h in logger.handlers if _ours(h) and h not in handlers]:
            logger.removeHandler(handler)
        for handler in handlers:
            logger.addHandler(handler)  # a no-op for one it still has
        logger.setLevel(level)
        logger.propagate = propagate


TINY_SPEC = LoraSpec(model="tiny-bert", rank=4, alpha=8, max_length=32, seed=0)
NUM_CLASSES = 5

# Each class has its own words, spelled with letters the other classes rarely use, so
# even a byte-level tokenizer and a frozen random encoder can tell the classes apart.
CLASS_WORDS: tuple[tuple[str, ...], ...] = (
    ("aaa", "abba", "baba", "aab"),
    ("ccc", "cdc", "dcd", "ddc"),
    ("eee", "efe", "fef", "ffe"),
    ("ggg", "ghg", "hgh", "hhg"),
    ("iii", "iji", "jij", "jji"),
)
SHARED_WORDS: tuple[str, ...] = ("the", "of", "news", "and")
CLASS_NAMES: tuple[str, ...] = ("alpha", "bravo", "charlie", "delta", "echo")


# The shape of the small simulations in the tests: a 4-node ring, iid, 3 rounds of 5
# steps of 16, no centralized baseline.
SMALL_RING: dict[str, object] = {
    "nodes": 4,
    "topology": "ring",
    "partition_scheme": "iid",
    "rounds": 3,
    "local_steps": 5,
    "batch_size": 16,
    "seed": 0,
    "centralized": False,
}


def tiny_sim_config(data: Path, **changes: object) -> SimConfig:
    """A 4-node tiny-bert ring on `data` for 3 rounds of 5 steps; `changes` override."""
    base: dict[str, object] = {
        **SMALL_RING,
        "lr": 3e-2,
        "model": TINY_SPEC.model,
        "data": str(data),
        "rank": TINY_SPEC.rank,
        "alpha": TINY_SPEC.alpha,
        "max_length": TINY_SPEC.max_length,
        "node_eval_every": 2,
        # Dec-LoRA as published (the tests count its bytes and rounds); the adaptive
        # defaults have their own tests (tests/test_swarm_recipe.py)
        "gradient_tracking": False,
        "gossip_steps": 1,
        "swarm_size": 1,
        "lr_schedule": "constant",
        "validation_fraction": 0.0,
        **UNACCELERATED,
    }
    if changes.get("method") == "deca":  # DECA refuses LoRA's options (methods.options_problem)
        del base["rank"], base["alpha"]
    return SimConfig.model_validate({**base, **changes})


def save_word_tokenizer(path: Path) -> None:
    """Save a three-word fast tokenizer (`[UNK]`, `[PAD]`, `a`) into the model folder
    `path`, as a tiny classifier saved for a test needs one."""
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[PAD]": 1, "a": 2}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    fast.save_pretrained(path)


def make_synthetic(n: int = 200, seed: int = 0) -> TextDataset:
    """`n` short texts, classes balanced and shuffled; 4 class words and one shared word."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % NUM_CLASSES).astype(np.int64)
    texts = []
    for c in labels:
        words = [str(w) for w in rng.choice(CLASS_WORDS[c], size=4)]
        words.insert(int(rng.integers(0, 5)), str(rng.choice(SHARED_WORDS)))
        texts.append(" ".join(words))
    return TextDataset(tuple(texts), labels, CLASS_NAMES)


def write_jsonl(data: TextDataset, path: Path) -> Path:
    """Write `data` as JSONL rows {"text", "label"} with string labels."""
    assert data.labels is not None
    with path.open("w", encoding="utf-8") as fh:
        for text, label in zip(data.texts, data.labels, strict=True):
            fh.write(json.dumps({"text": text, "label": data.label_names[int(label)]}) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_lm() -> LoraModel:
    """The shared frozen tiny-bert with LoRA r=4 on query/value and a 5-way head."""
    return LoraModel(TINY_SPEC, num_labels=NUM_CLASSES, label_names=CLASS_NAMES)


@pytest.fixture(scope="session")
def synthetic() -> TextDataset:
    return make_synthetic(200, seed=0)


@pytest.fixture(scope="session")
def synthetic_test() -> TextDataset:
    """Held-out texts from the same distribution (a different seed)."""
    return make_synthetic(100, seed=1)


@pytest.fixture(scope="session")
def synthetic_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic data as a JSONL file (for `Simulation(data=...)`)."""
    path = tmp_path_factory.mktemp("data") / "synthetic.jsonl"
    return write_jsonl(make_synthetic(250, seed=2), path)


@pytest.fixture
def cluster(tmp_path: Path, synthetic_jsonl: Path) -> Iterator[Cluster]:
    """Real daemon processes of one test (tests/daemon_helpers.py); killed at its end."""
    c = Cluster(tmp_path, synthetic_jsonl)
    try:
        yield c
    finally:
        c.close()
