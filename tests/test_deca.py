"""DECA (`--method deca`, node/deca.py, node/deca_model.py): decentralized block-wise
full fine-tuning, in the core, the simulator and the daemon."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLASS_NAMES, NUM_CLASSES, TINY_SPEC, tiny_sim_config
from pydantic import ValidationError
from test_daemon_parts import pair
from transformers import AutoModelForSequenceClassification

from declora.node.codecs import OVERHEAD, make_codec
from declora.node.daemon.admission import recipe_differences, recipe_facts
from declora.node.data import TextDataset
from declora.node.deca import CONSENSUS_BETAS, DecaNode
from declora.node.deca_model import BlockModel, BlockTrainer, block_at
from declora.node.gossip import GossipError, consensus_distance
from declora.node.model_source import ModelError
from declora.node.recipe import Recipe
from declora.node.simulator import Simulation
from declora.node.trainer import LoraSpec
from declora.node.workload import load_workload

HOLD = 1000  # deca_block_rounds that keeps one block for a whole test


def deca_model(model: str = "tiny-bert", blocks: int = 2, rounds: int = HOLD) -> BlockModel:
    changes = {"model": model, "targets": (), "method": "deca"}
    spec = LoraSpec(
        **{**TINY_SPEC.as_dict(), **changes, "deca_blocks": blocks, "deca_block_rounds": rounds}  # type: ignore[arg-type]
    )
    return BlockModel(spec, num_labels=NUM_CLASSES, label_names=CLASS_NAMES)


@pytest.fixture(scope="module")
def bert() -> BlockModel:
    return deca_model()


def deca_nodes(lm: BlockModel, data: TextDataset, n: int) -> list[DecaNode[int]]:
    """`n` fp32 DECA nodes on `lm`, each knowing all the others."""
    enc = lm.encode(data)
    nodes = [
        DecaNode[int](BlockTrainer(lm, enc, 1e-2, 8, seed=i), "fp32", None, seed=i)
        for i in range(n)
    ]
    for i, node in enumerate(nodes):
        for j in range(n):
            if j != i:
                node.add_peer(j)
    return nodes


def exchange(nodes: list[DecaNode[int]]) -> int:
    payloads = [node.outgoing() for node in nodes]
    for i, node in enumerate(nodes):
        for j, payload in enumerate(payloads):
            if j != i:
                node.receive(j, payload)
    return len(payloads[0])


# --------------------------------------------------------------------- blocks
def test_blocks_split_the_layers_and_the_head_is_always_trained(bert: BlockModel) -> None:
    assert len(bert.blocks) == 2 and bert.spec.deca_blocks == 2
    assert all(n.startswith("bert.encoder.layer.0.") for n in bert.blocks[0])
    assert all(n.startswith("bert.encoder.layer.1.") for n in bert.blocks[1])
    assert bert.head == ("classifier.weight", "classifier.bias")
    head = sum(t.numel for t in bert.schema.tensors if t.name in bert.head)
    sizes = [bert.block_schema(b).numel - head for b in range(2)]
    assert sizes[0] == sizes[1] and bert.schema.numel == sum(sizes) + head
    llama = deca_model("tiny-llama", blocks=0)  # default: one block per 2 layers
    assert len(llama.blocks) == 1 and llama.head == ("score.weight",)
    assert all(n.startswith("model.layers.") for n in llama.blocks[0])
    with pytest.raises(ModelError, match="only 2 layers"):
        deca_model(blocks=3)


def test_the_schedule_cycles_through_every_block_the_same_everywhere() -> None:
    blocks, rounds = 3, 2
    seq = [block_at(r, blocks, rounds, seed=7) for r in range(1, 4 * blocks * rounds + 1)]
    for cycle in range(4):
        part = seq[cycle * blocks * rounds : (cycle + 1) * blocks * rounds]
        assert sorted(set(part)) == [0, 1, 2]  # each block once a cycle...
        assert all(part[k] == part[k + 1] for k in range(0, len(part), 2))  # ...2 rounds long
    assert seq == [block_at(r, blocks, rounds, seed=7) for r in range(1, len(seq) + 1)]
    assert len({tuple(seq[i : i + 6]) for i in range(0, 24, 6)}) > 1  # orders change by cycle


def test_simulated_nodes_switch_blocks_together(synthetic_jsonl: Path) -> None:
    cfg = tiny_sim_config(
        synthetic_jsonl,
        method="deca",
        deca_blocks=2,
        deca_block_rounds=1,
        nodes=3,
        rounds=4,
        local_steps=1,  # one step a round shows the blocks switching as well as 5 do
    )
    sim = Simulation(cfg)
    seen = set()
    for r in range(1, 5):
        losses = [node.train(cfg.local_steps, round_number=r) for node in sim.nodes]
        assert all(np.isfinite(loss) for loss in losses)
        blocks = {node.deca.block for node in sim.nodes}  # type: ignore[attr-defined]
        assert blocks == {sim.lm.block_at(r)}
        seen |= blocks
        sim._gossip_round()
        assert {n.deca.block for n in sim.nodes} == {sim.lm.block_at(r + 1)}  # type: ignore[attr-defined]
    assert seen == {0, 1}


def test_the_finish_agrees_on_every_block_not_only_the_active_one(synthetic_jsonl: Path) -> None:
    """The simulator's finish measures the whole model's change from the base: it runs
    until every block agrees (the raw weights' norm hid the disagreement before)."""
    cfg = tiny_sim_config(
        synthetic_jsonl,
        method="deca",
        deca_blocks=2,
        deca_block_rounds=1,
        nodes=4,
        rounds=4,
        local_steps=1,  # one step a round leaves the blocks as far apart (measured 0.44)
        consensus_rounds=300,
        consensus_tol=1e-3,
    )
    sim = Simulation(cfg)
    result = sim.run()
    before = sim.nodes[0].agreement_vector()
    assert np.abs(before).max() > 0  # it trained
    raw = consensus_distance(sim.honest_vectors())[1]
    base = sim.lm.full_base_vector()  # type: ignore[attr-defined]
    change = consensus_distance([v - base for v in sim.honest_vectors()])[1]
    assert change <= 1e-3 and raw <= change
    assert result.final["consensus_rounds"] > 2  # more than one pass over the blocks
    first = result.rounds[cfg.rounds - 1]  # the last training round
    assert first.phase == "train" and first.consensus_max > 1e-3


def test_daemon_disagreement_covers_every_trained_block(synthetic: TextDataset) -> None:
    """`disagreement` (the daemon's finish test) is the worst gap over every block the
    node trained, each as measured after its last mix, relative to its change from
    the base; a trained block not yet mixed counts as not agreed."""
    lm = deca_model(blocks=2, rounds=1)
    nodes = deca_nodes(lm, synthetic, 3)
    weights = {i: {j: 1 / 3 for j in range(3) if j != i} for i in range(3)}
    for node in nodes:
        node.train(2, round_number=1)
    first = nodes[0].deca.block
    assert nodes[0].disagreement([1, 2]) == float("inf")  # trained, not yet mixed
    exchange(nodes)
    for i, node in enumerate(nodes):
        node.mix(weights[i])
    assert nodes[0].deca.block != first  # switched: the new block's copies are the base
    gap = nodes[0].disagreement([1, 2])
    assert 0 < gap < float("inf")  # the mixed block's gap, not the new block's
    assert nodes[0].disagreement([]) == 0.0
    rounds = 0
    while max(n.disagreement([j for j in range(3) if j != i]) for i, n in enumerate(nodes)) > 1e-3:
        exchange(nodes)
        for i, node in enumerate(nodes):
            node.mix(weights[i])
        rounds += 1
        assert rounds < 100
    change = consensus_distance([n.agreement_vector() for n in nodes])[1]
    assert change < 1e-2
    # no current figure is no agreement: a mix that heard nobody, a dropped peer, training
    assert nodes[1].disagreement([0, 2]) <= 1e-3
    nodes[1].mix({})
    assert nodes[1].disagreement([0, 2]) == float("inf")
    assert nodes[2].disagreement([0, 1]) <= 1e-3
    nodes[2].forget_peer(0)
    assert nodes[2].disagreement([0, 1]) == float("inf")
    assert nodes[0].disagreement([1, 2]) <= 1e-3
    nodes[0].train(1, round_number=rounds + 2)
    assert nodes[0].disagreement([1, 2]) == float("inf")


# --------------------------------------------------------------------- a round
def test_only_the_active_block_trains_and_is_sent(bert: BlockModel, synthetic: TextDataset) -> None:
    node, other = deca_nodes(bert, synthetic, 2)
    trainer = node.deca
    before = trainer.full_vector()
    node.train(2)
    after = trainer.full_vector()
    active = np.zeros(bert.schema.numel, dtype=bool)
    offset = 0
    for t in bert.schema.tensors:
        active[offset : offset + t.numel] = t.name in trainer.names
        offset += t.numel
    np.testing.assert_array_equal(after[~active], before[~active])  # the other block
    assert not np.array_equal(after[active], before[active])
    for name, p in bert.model.named_parameters():
        assert (p.grad is not None) == (name in trainer.names), name  # no backward there
    payload, rng = node.outgoing(), np.random.default_rng(0)
    assert len(payload) == OVERHEAD + 4 * node.size == OVERHEAD + 4 * int(active.sum())
    head = sum(t.numel for t in bert.schema.tensors if t.name in bert.head)
    assert node.size - head == (bert.schema.numel - head) // 2  # 1/B of the layers
    other.receive(0, payload)
    np.testing.assert_allclose(other.gossip.peers[0], node.vector(), rtol=0, atol=1e-7)
    with pytest.raises(GossipError, match="not a block's"):
        other.check_payload(0, make_codec("fp32").encode(np.ones(100, np.float32), rng))


def test_mixing_preserves_the_block_average(bert: BlockModel, synthetic: TextDataset) -> None:
    nodes = deca_nodes(bert, synthetic, 3)
    rng = np.random.default_rng(0)
    vecs = [rng.normal(0, 0.1, nodes[0].size).astype(np.float32) for _ in nodes]
    for node, v in zip(nodes, vecs, strict=True):
        node.trainer.set_vector(v)
    exchange(nodes)
    w = {0: {1: 0.25, 2: 0.35}, 1: {0: 0.25, 2: 0.4}, 2: {0: 0.35, 1: 0.4}}
    for i, node in enumerate(nodes):
        node.mix(w[i])
    total = sum(n.vector().astype(np.float64) for n in nodes)
    np.testing.assert_allclose(total, sum(v.astype(np.float64) for v in vecs), atol=1e-5)
    want = 0.4 * vecs[0] + 0.25 * vecs[1] + 0.35 * vecs[2]
    np.testing.assert_allclose(nodes[0].vector(), want, atol=1e-6)


@pytest.mark.parametrize(
    ("codec", "per_value", "rel_error"), [("fp16", 2.0, 2e-3), ("q8", 1.0, 0.02), ("q4", 0.5, 0.25)]
)
def test_compressed_codecs_carry_the_block(
    bert: BlockModel, synthetic: TextDataset, codec: str, per_value: float, rel_error: float
) -> None:
    enc = bert.encode(synthetic)
    a, b = (
        DecaNode[int](BlockTrainer(bert, enc, 1e-2, 8, seed=i), codec, None, seed=i)
        for i in range(2)
    )
    a.add_peer(1)
    b.add_peer(0)
    a.train(2)
    payload = a.outgoing()
    assert len(payload) < per_value * a.size + 4096  # about `per_value` bytes a value
    b.receive(0, payload)
    error = np.abs(b.gossip.peers[0] - a.vector()).max()
    change = np.abs(a.vector() - a.initial).max()
    assert 0 < error < rel_error * change  # x̂ tracks x to the codec's precision


def test_the_consensus_signal_enters_the_moments(bert: BlockModel, synthetic: TextDataset) -> None:
    a, b = deca_nodes(bert, synthetic, 2)
    for node in (a, b):
        node.train(2)
    start = a._start
    assert start is not None
    p = a.deca.optimizer.param_groups[0]["params"][0]
    m0 = a.deca.optimizer.state[p]["exp_avg"].clone()
    v0 = a.deca.optimizer.state[p]["exp_avg_sq"].clone()
    exchange([a, b])
    a.mix({1: 0.5})
    first = a.deca.schema.tensors[0]
    h = torch.from_numpy((a.vector() - start)[: first.numel].reshape(first.shape))
    b1, b2 = CONSENSUS_BETAS
    state = a.deca.optimizer.state[p]
    torch.testing.assert_close(state["exp_avg"], b1 * m0 + (1 - b1) * h)
    torch.testing.assert_close(state["exp_avg_sq"], b2 * v0 + (1 - b2) * h * h)


# --------------------------------------------------------------------- saving
@pytest.mark.parametrize("model", ["tiny-bert", "tiny-llama"])
def test_the_saved_folder_is_a_transformers_model(
    model: str, synthetic: TextDataset, tmp_path: Path
) -> None:
    lm = deca_model(model)
    node = deca_nodes(lm, synthetic, 1)[0]
    node.train(2)
    vec = node.model_vector()
    lm.save_adapter(vec, tmp_path / "model", {"round": 1})
    info = json.loads((tmp_path / "model" / "declora.json").read_text())
    assert (info["format"], info["fingerprint"], info["round"]) == ("full-model", lm.fingerprint, 1)
    loaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "model"))
    loaded.eval()
    texts = list(synthetic.texts[:8])
    ids, mask = lm.tokenizer(texts, lm.spec.max_length)
    with lm.using(vec), torch.no_grad():
        lm.model.eval()
        want = lm.model(input_ids=ids, attention_mask=mask).logits
        got = loaded(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    enc = lm.encode(synthetic.subset(np.arange(32)))
    with torch.no_grad():
        out = loaded(input_ids=enc.input_ids, attention_mask=enc.attention_mask, labels=enc.labels)
    assert lm.evaluate(vec, enc)["loss"] == pytest.approx(float(out.loss), abs=1e-5)


# --------------------------------------------------------------------- the daemon
DAEMON = {"method": "deca", "deca_blocks": 2, "deca_block_rounds": 1}


def test_daemon_rounds_are_the_core_rounds(synthetic_jsonl: Path) -> None:
    """Two in-process daemons train, exchange and mix twice, switching blocks between
    the rounds: each ends every round with exactly the core's block and full model
    for the same workload, training and weights (1/2 each)."""
    (da, db), (a, b) = pair(synthetic_jsonl, **DAEMON)
    steps = a.settings.local_steps
    work = load_workload(a.settings.recipe(), 2)
    core = [work.node(0), work.node(1)]
    assert isinstance(a.node, DecaNode) and isinstance(core[0], DecaNode)
    core[0].add_peer(1)
    core[1].add_peer(0)
    sent, blocks = 0, []

    async def go() -> None:
        nonlocal sent
        assert await a.handshaker.dial(b.settings.advertise) is not None
        for r in (1, 2):
            for daemon_node, node in zip((a.node, b.node), core, strict=True):
                assert np.isfinite(daemon_node.train(steps, round_number=r))
                node.train(steps, round_number=r)
            blocks.append(a.node.deca.block)  # type: ignore[attr-defined]
            await asyncio.gather(da.run_round(a, train=False), db.run_round(b, train=False))
            payloads = [node.outgoing() for node in core]
            sent += len(payloads[0])
            core[0].receive(1, payloads[1])
            core[1].receive(0, payloads[0])
            core[0].mix({1: 0.5})
            core[1].mix({0: 0.5})
            np.testing.assert_array_equal(a.node.vector(), core[0].vector())
            np.testing.assert_array_equal(b.node.model_vector(), core[1].model_vector())
            np.testing.assert_array_equal(a.node.model_vector(), core[0].model_vector())

    asyncio.run(go())
    assert sorted(blocks) == [0, 1]  # the rounds trained different blocks
    assert a.node.bytes_sent == sent == 2 * (OVERHEAD + 4 * a.node.size)
    assert a.lm.fingerprint == b.lm.fingerprint == work.lm.fingerprint


def test_the_daemon_finish_runs_until_every_block_agrees(synthetic_jsonl: Path) -> None:
    """Two in-process daemons run their whole train loop: 2 training rounds (one per
    block), then the finish (each mix halves a block's gap: consensus step 0.5), which
    stops only once the whole model's change from the base agrees."""
    (da, db), (a, b) = pair(
        synthetic_jsonl,
        **DAEMON,
        rounds=2,
        consensus_step=0.5,
        consensus_rounds=60,
        consensus_tol=1e-3,
    )

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        assert da.rounds is not None and db.rounds is not None
        await asyncio.gather(da.rounds.train_loop(), db.rounds.train_loop())

    asyncio.run(go())
    finish = [a.progress.round - 2, b.progress.round - 2]
    assert all(2 <= f < 60 for f in finish), finish
    assert a.node.disagreement(["b"]) <= 1e-3 and b.node.disagreement(["a"]) <= 1e-3
    base = a.lm.full_base_vector()  # type: ignore[attr-defined]
    change = [a.node.model_vector() - base, b.node.model_vector() - base]
    assert consensus_distance(change)[1] <= 1e-3 and np.abs(change[0]).max() > 0


def test_a_checkpoint_round_trips(synthetic_jsonl: Path, tmp_path: Path) -> None:
    """A node checkpointed after a round and resumed elsewhere continues exactly as
    the node that went on (same block, copies, moments, gossip state)."""
    opts = {**DAEMON, "checkpoint_dir": tmp_path / "a"}
    (da, _), (a, _) = pair(synthetic_jsonl, **opts)
    steps = a.settings.local_steps
    a.node.train(steps, round_number=1)
    a.node.outgoing()
    a.node.mix({})  # alone: no neighbour, but the round ends and the block switches
    a.progress.round = 1
    da.store.save_checkpoint()
    assert (tmp_path / "a" / "ckpt-00000001" / "adapter" / "model.safetensors").is_file()
    (db, _), (b, _) = pair(synthetic_jsonl, first={"resume": True}, **opts)
    db.store.resume(b)
    assert b.progress.round == 1
    assert b.node.deca.block == a.node.deca.block  # type: ignore[attr-defined]
    np.testing.assert_array_equal(b.node.model_vector(), a.node.model_vector())
    np.testing.assert_array_equal(b.node.gossip.public, a.node.gossip.public)
    for node in (a.node, b.node):
        node.train(steps, round_number=2)
        node.outgoing()
        node.mix({})
    np.testing.assert_array_equal(b.node.model_vector(), a.node.model_vector())
    np.testing.assert_array_equal(b.node.vector(), a.node.vector())


def test_the_final_save_is_the_full_model(synthetic_jsonl: Path, tmp_path: Path) -> None:
    (da, _), (a, _) = pair(synthetic_jsonl, **{**DAEMON, "checkpoint_dir": tmp_path / "a"})
    a.node.train(a.settings.local_steps, round_number=1)
    path = da.store.save_final()
    loaded = AutoModelForSequenceClassification.from_pretrained(str(path))
    want = a.lm.schema.unflatten(a.node.model_vector())
    got = {n: p.detach() for n, p in loaded.named_parameters() if n in want}
    assert got.keys() == want.keys()
    for name, value in got.items():
        torch.testing.assert_close(value, want[name], rtol=0, atol=0)


# --------------------------------------------------------------------- the option
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"robust_mixing": "clip"}, "deca cannot be combined with --robust-mixing"),
        ({"gradient_tracking": True}, "deca cannot be combined with --gradient-tracking"),
        ({"deca_block_rounds": 0}, "deca_block_rounds"),
    ],
)
def test_deca_refuses_what_it_cannot_do(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Recipe(method="deca", **changes)  # type: ignore[arg-type]


def test_nodes_must_agree_on_the_blocks(bert: BlockModel) -> None:
    other = deca_model(blocks=1)
    assert other.fingerprint != bert.fingerprint
    assert other.base_digest == bert.base_digest
    differ = recipe_differences(
        recipe_facts(other.identity, other.label_names),
        recipe_facts(bert.identity, bert.label_names),
    )
    assert differ == "--deca-blocks is '1' there, '2' here"
    plain = Recipe().lora_spec().as_dict()
    assert "deca_blocks" not in plain and "deca_block_rounds" not in plain
    with pytest.raises(ModelError, match="needs --quantize none"):
        BlockModel(LoraSpec(model="tiny-bert", method="deca", quantize="nf4"), num_labels=2)


def test_the_core_refuses_a_coarse_codec_with_short_block_turns(synthetic: TextDataset) -> None:
    """The core's own check (`dec_lora.options_problem`) uses the model's block turns,
    as the recipe's does: q4 with one round a turn is refused, as with 5 it is not
    (it checked the default turns, so a node built in code accepted 1)."""
    short = deca_model(rounds=1)
    with pytest.raises(ValueError, match="deca-block-rounds"):
        DecaNode[int](
            BlockTrainer(short, short.encode(synthetic), 1e-2, 8, seed=0), "q4", None, seed=0
        )
    ok = deca_model(rounds=5)
    DecaNode[int](BlockTrainer(ok, ok.encode(synthetic), 1e-2, 8, seed=0), "q4", None, seed=0)
