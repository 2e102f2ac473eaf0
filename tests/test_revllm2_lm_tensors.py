"""Causal-LM training tensors are held compact: int32 ids and labels, an int8 mask, and
packed text's labels are its ids tensor itself, its mask one row of ones expanded (the
old code held three int64 tensors: 24 bytes a position, 9 now for conversations and 4
for packed text). A batch as the model gets it (`Encoded.inputs`), the training run
and the training share's digest (a checkpoint resumes on it: needs
/tmp/revllm2-checkpoint-share.patch) are those of the old tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from declora.node.checkpoint import training_share
from declora.node.data import TextDataset
from declora.node.lm_data import encode_lm
from declora.node.tokenizers import ByteTokenizer
from declora.node.trainer import Encoded, LocalTrainer, LoraModel, LoraSpec

LENGTH = 40
CPU = torch.device("cpu")


def packed() -> Encoded:
    texts = tuple(f"text {i} " * (1 + i % 4) for i in range(40))
    data = TextDataset(texts, None, (), name="train")
    return Encoded(*encode_lm(ByteTokenizer(), data, LENGTH, packing=True))


def chats() -> Encoded:
    convs = tuple((("user", f"q{i}"), ("assistant", "a" * (i % 9))) for i in range(30))
    data = TextDataset(tuple("" for _ in convs), None, (), convs, name="train")
    return Encoded(*encode_lm(ByteTokenizer(), data, LENGTH, packing=False))


def as_old(enc: Encoded) -> Encoded:
    """The tensors as the old code held them: three int64 tensors of their own."""
    return Encoded(*(t.to(torch.long).clone() for t in enc.__dict__.values()))


def test_packed_labels_and_mask_take_no_memory_of_their_own() -> None:
    enc = packed()
    assert len(enc) > 4 and enc.input_ids.dtype == torch.int32
    assert enc.labels.untyped_storage().data_ptr() == enc.input_ids.untyped_storage().data_ptr()
    assert enc.attention_mask.untyped_storage().nbytes() == LENGTH  # one int8 row


def test_conversations_are_held_as_int32_ids_and_labels_and_an_int8_mask() -> None:
    enc = chats()
    assert [t.dtype for t in enc.__dict__.values()] == [torch.int32, torch.int8, torch.int32]
    assert enc.take(np.array([1, 2])).input_ids.dtype == torch.int32  # a share stays compact


@pytest.mark.parametrize("make", [packed, chats])
def test_batches_are_those_of_the_old_tensors(make: type) -> None:
    enc = make()
    rows = np.array([3, 0, 3, len(enc) - 1])
    new, old = enc.take(rows).inputs(CPU), as_old(enc).take(rows).__dict__
    assert list(new) == ["input_ids", "attention_mask", "labels"]
    for key, value in new.items():
        expected = old[key]
        assert value.dtype == expected.dtype == torch.long and torch.equal(value, expected)


@pytest.mark.parametrize("make", [packed, chats])
def test_the_share_digest_is_that_of_the_old_tensors(make: type) -> None:
    enc = make()
    assert training_share(enc, data="x") == training_share(as_old(enc), data="x")


@pytest.mark.parametrize("make", [packed, chats])
def test_training_matches_the_old_tensors_and_leaves_them_unchanged(make: type) -> None:
    spec = LoraSpec(model="tiny-llama", task="lm", rank=2, alpha=4, max_length=LENGTH)
    enc = make()
    before = as_old(enc)
    runs = []
    for data in (enc, as_old(enc)):
        trainer = LocalTrainer(LoraModel(spec), data, 1e-2, batch_size=4, seed=3)
        loss = trainer.train_steps(3)
        runs.append((loss, trainer.vector(), trainer.lm.evaluate(trainer.vector(), data)))
    assert runs[0][0] == runs[1][0] and runs[0][2] == runs[1][2]
    assert np.array_equal(runs[0][1], runs[1][1])
    assert all(
        torch.equal(a.long(), b)
        for a, b in zip(enc.__dict__.values(), before.__dict__.values(), strict=True)
    )
