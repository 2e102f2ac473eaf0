"""The fine-tuning methods beside Dec-LoRA (`--method`, node/methods.py): ConLoRA (A
frozen, only B gossiped) and DeCAF (product-space mixing, node/product_mixing.py), in
the core, the simulator and the daemon."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import CLASS_NAMES, NUM_CLASSES, TINY_SPEC, tiny_sim_config
from pydantic import ValidationError
from safetensors.numpy import load_file
from test_daemon_parts import pair

from declora.node.adapter_io import load_adapter
from declora.node.codecs import OVERHEAD
from declora.node.daemon.admission import recipe_differences, recipe_facts
from declora.node.daemon.inbox import MAX_ROUNDS_AHEAD
from declora.node.data import TextDataset
from declora.node.dec_lora import DecLoraNode, TrainerSnapshot
from declora.node.gossip import GossipError, consensus_distance
from declora.node.kill_revive import (
    KEYFRAME,
    KillReviveNode,
    pack_mask,
    revives,
    update_change,
)
from declora.node.lora_names import A_MARK, B_MARK, LORA_MARK, lora_module
from declora.node.product_mixing import lora_pairs, product_average, refactorise
from declora.node.recipe import Recipe
from declora.node.simulator import Simulation
from declora.node.trainer import LocalTrainer, LoraModel, LoraSpec
from declora.node.workload import load_workload

OLD_SPEC_KEYS = {"model", "task", "rank", "alpha", "targets", "max_length", "seed"}


def model_for(method: str, **extra: object) -> LoraModel:
    fields = {**TINY_SPEC.as_dict(), "targets": (), "method": method, **extra}
    spec = LoraSpec(**fields)  # type: ignore[arg-type]
    return LoraModel(spec, num_labels=NUM_CLASSES, label_names=CLASS_NAMES)


@pytest.fixture(scope="module")
def conlora_lm() -> LoraModel:
    return model_for("conlora")


@pytest.fixture(scope="module")
def decaf_lm() -> LoraModel:
    return model_for("decaf")


def nodes_on(lm: LoraModel, data: TextDataset, n: int) -> list[DecLoraNode[int]]:
    """`n` fp32 nodes on `lm`, each knowing all the others (a complete graph)."""
    enc = lm.encode(data)
    nodes: list[DecLoraNode[int]] = [
        DecLoraNode(LocalTrainer(lm, enc, 1e-2, 8, seed=i), "fp32", None, seed=i) for i in range(n)
    ]
    for i, node in enumerate(nodes):
        for j in range(n):
            if j != i:
                node.add_peer(j)
    return nodes


def exchange(nodes: list[DecLoraNode[int]]) -> None:
    """Every node sends its update to every other (public copies become the vectors)."""
    payloads = [node.outgoing() for node in nodes]
    for i, node in enumerate(nodes):
        for j, payload in enumerate(payloads):
            if j != i:
                node.receive(j, payload)


def randomise(nodes: list[DecLoraNode[int]], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    vecs = [rng.normal(0, 0.1, node.size).astype(np.float32) for node in nodes]
    for node, v in zip(nodes, vecs, strict=True):
        node.trainer.set_vector(v)
    return vecs


def frozen_a(lm: LoraModel) -> dict[str, np.ndarray]:
    """The model's LoRA A factors by module prefix (ConLoRA: never bound, never trained)."""
    return {
        n.split(A_MARK)[0]: p.detach().numpy().copy()
        for n, p in lm.model.named_parameters()
        if A_MARK in n
    }


def b_factors(lm: LoraModel, vec: np.ndarray) -> dict[str, np.ndarray]:
    return {
        n.split(B_MARK)[0]: t.numpy() for n, t in lm.schema.unflatten(vec).items() if B_MARK in n
    }


def best_rank(m: np.ndarray, r: int) -> np.ndarray:
    u, s, vt = np.linalg.svd(m)
    return (u[:, :r] * s[:r]) @ vt[:r]


# --------------------------------------------------------------------- the option
def test_default_method_keeps_the_fingerprint(tiny_lm: LoraModel, decaf_lm: LoraModel) -> None:
    assert set(TINY_SPEC.as_dict()) == OLD_SPEC_KEYS  # Dec-LoRA's identity is unchanged
    again = LoraModel(
        LoraSpec(**{**TINY_SPEC.as_dict(), "targets": (), "method": "dec-lora"}),  # type: ignore[arg-type]
        num_labels=NUM_CLASSES,
        label_names=CLASS_NAMES,
    )
    assert again.fingerprint == tiny_lm.fingerprint
    assert decaf_lm.schema == tiny_lm.schema  # same tensors, yet nodes must not mix
    assert decaf_lm.fingerprint != tiny_lm.fingerprint
    assert decaf_lm.base_digest == tiny_lm.base_digest


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "fedavg"}, "method"),
        ({"method": "decaf", "codec": "q8"}, "needs --codec fp32, not q8"),
        ({"method": "decaf", "consensus_step": 0.5}, "needs --consensus-step 1"),
        ({"method": "decaf", "robust_mixing": "clip"}, "--robust-mixing"),
        ({"method": "decaf", "gradient_tracking": True}, "--gradient-tracking"),
        ({"method": "kill-revive", "robust_mixing": "trim"}, "kill-revive cannot be combined"),
    ],
)
def test_recipe_refuses_what_a_method_cannot_do(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Recipe(**changes)  # type: ignore[arg-type]
    assert Recipe(method="conlora", codec="q4", gradient_tracking=True).method == "conlora"
    assert Recipe(method="decaf", consensus_step=1.0).lora_spec().method == "decaf"


def test_hello_names_a_method_mismatch() -> None:
    ours = recipe_facts(LoraSpec().as_dict(), ())
    theirs = recipe_facts(LoraSpec(method="conlora").as_dict(), ())
    assert ours["method"] == "dec-lora"
    assert recipe_differences(theirs, ours) == "--method is 'conlora' there, 'dec-lora' here"


# --------------------------------------------------------------------- ConLoRA
def test_conlora_trains_and_sends_only_b(
    conlora_lm: LoraModel, tiny_lm: LoraModel, synthetic: TextDataset
) -> None:
    assert not any(".lora_A." in n for n in conlora_lm.schema.names)
    assert sum(".lora_B." in n for n in conlora_lm.schema.names) == 4
    a_before = frozen_a(conlora_lm)
    assert all(not p.requires_grad for n, p in conlora_lm.model.named_parameters() if "lora_A" in n)
    con = nodes_on(conlora_lm, synthetic, 1)[0]
    dec = nodes_on(tiny_lm, synthetic, 1)[0]
    loss = con.train(3)
    dec.train(3)
    assert np.isfinite(loss) and not np.allclose(con.vector(), con.initial)  # B moved
    for key, a in frozen_a(conlora_lm).items():
        np.testing.assert_array_equal(a, a_before[key])  # A did not
    con_bytes, dec_bytes = len(con.outgoing()), len(dec.outgoing())
    n_a = sum(a.size for a in a_before.values())
    assert dec.size - con.size == n_a == 512  # 4 modules x r=4 x 32
    assert (dec_bytes - OVERHEAD, con_bytes - OVERHEAD) == (4 * dec.size, 4 * con.size)
    lora_dec = 4 * sum(t.numel for t in tiny_lm.schema.tensors if ".lora_" in t.name)
    lora_con = 4 * sum(t.numel for t in conlora_lm.schema.tensors if ".lora_" in t.name)
    assert lora_con * 2 == lora_dec  # the LoRA part is exactly half; the head is the same
    assert con_bytes < 0.6 * dec_bytes


def test_conlora_mixing_b_averages_the_products(
    conlora_lm: LoraModel, synthetic: TextDataset
) -> None:
    nodes = nodes_on(conlora_lm, synthetic, 3)
    vecs = randomise(nodes, seed=1)
    exchange(nodes)
    weights = {1: 0.25, 2: 0.35}
    nodes[0].mix(weights)
    w = [0.4, 0.25, 0.35]
    a = frozen_a(conlora_lm)
    mixed = b_factors(conlora_lm, nodes[0].vector())
    bs = [b_factors(conlora_lm, v) for v in vecs]
    for key, a_k in a.items():
        mean_of_products = sum(wj * (b[key] @ a_k) for wj, b in zip(w, bs, strict=True))
        np.testing.assert_allclose(mixed[key] @ a_k, mean_of_products, rtol=0, atol=1e-6)


def test_conlora_saves_a_full_peft_adapter(
    conlora_lm: LoraModel, synthetic: TextDataset, tmp_path: Path
) -> None:
    node = nodes_on(conlora_lm, synthetic, 1)[0]
    node.train(2)
    conlora_lm.save_adapter(node.vector(), tmp_path / "adapter", {})
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    a = frozen_a(conlora_lm)
    a_saved = {k.split(".lora_A.")[0]: v for k, v in saved.items() if ".lora_A." in k}
    assert len(a_saved) == len(a) == 4
    for key, value in a.items():
        np.testing.assert_array_equal(a_saved[key], value)
    loaded = load_adapter(tmp_path / "adapter")
    assert loaded.info["spec"]["method"] == "conlora"
    assert loaded.info["fingerprint"] == conlora_lm.fingerprint
    texts = list(synthetic.texts[:8])
    ids, mask = conlora_lm.tokenizer(texts, conlora_lm.spec.max_length)
    with conlora_lm.using(node.vector()), torch.no_grad():
        conlora_lm.model.eval()
        want = conlora_lm.model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(loaded.logits(texts), want, rtol=0, atol=1e-6)


# --------------------------------------------------------------------- DeCAF
def test_refactorise_is_the_best_rank_r_approximation() -> None:
    rng = np.random.default_rng(0)
    out, inn, r, m = 24, 17, 3, 4
    bs = [rng.normal(size=(out, r)) for _ in range(m)]
    as_ = [rng.normal(size=(r, inn)) for _ in range(m)]
    w = [0.4, 0.3, 0.2, 0.1]
    got = refactorise(bs, as_, w, r)
    assert got is not None
    b_new, a_new = got
    assert b_new.shape == (out, r) and a_new.shape == (r, inn) and b_new.dtype == np.float32
    dense = sum(wj * (b @ a) for wj, b, a in zip(w, bs, as_, strict=True))
    best = best_rank(dense, r)
    scale = float(np.abs(best).max())
    np.testing.assert_allclose(b_new @ a_new, best, rtol=0, atol=1e-5 * scale)
    # balanced split: column k of B' and row k of A' carry sqrt(s_k) each
    s = np.linalg.svd(dense, compute_uv=False)[:r]
    np.testing.assert_allclose(np.linalg.norm(b_new, axis=0), np.sqrt(s), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a_new, axis=1), np.sqrt(s), rtol=1e-5)


def test_refactorise_gives_factors_of_the_product_alone() -> None:
    """The same weighted sum stacked in another order (another node's view) gives the
    same factors, signs included."""
    rng = np.random.default_rng(3)
    bs = [rng.normal(size=(20, 3)) for _ in range(3)]
    as_ = [rng.normal(size=(3, 12)) for _ in range(3)]
    w = [0.5, 0.3, 0.2]
    one, two = refactorise(bs, as_, w, 3), refactorise(bs[::-1], as_[::-1], w[::-1], 3)
    assert one is not None and two is not None
    np.testing.assert_allclose(one[0], two[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(one[1], two[1], rtol=0, atol=1e-5)


def test_refactorise_of_an_agreed_product_is_that_product() -> None:
    rng = np.random.default_rng(1)
    b, a = rng.normal(size=(32, 4)), rng.normal(size=(4, 32))
    got = refactorise([b, b, b], [a, a, a], [0.5, 0.25, 0.25], 4)
    assert got is not None
    np.testing.assert_allclose(got[0] @ got[1], b @ a, rtol=0, atol=1e-5 * np.abs(b @ a).max())
    assert refactorise([np.zeros((8, 2))] * 2, [a[:2, :8]] * 2, [0.5, 0.5], 2) is None


def test_decaf_node_mixes_in_product_space(decaf_lm: LoraModel, synthetic: TextDataset) -> None:
    nodes = nodes_on(decaf_lm, synthetic, 3)
    vecs = randomise(nodes, seed=2)
    exchange(nodes)
    weights = {1: 0.25, 2: 0.35}
    nodes[0].mix(weights)
    w = [0.4, 0.25, 0.35]
    got = nodes[0].vector()
    pairs = lora_pairs(decaf_lm.schema)
    assert len(pairs) == 4
    for p in pairs:
        dense = sum(
            wj * (v[p.b].reshape(p.b_shape) @ v[p.a].reshape(p.a_shape))
            for wj, v in zip(w, vecs, strict=True)
        )
        mixed = got[p.b].reshape(p.b_shape) @ got[p.a].reshape(p.a_shape)
        np.testing.assert_allclose(mixed, best_rank(dense, 4), rtol=0, atol=1e-5)
    head = np.ones(got.size, dtype=bool)
    for p in pairs:
        head[p.a] = head[p.b] = False
    mean = sum(wj * v for wj, v in zip(w, vecs, strict=True))
    np.testing.assert_allclose(got[head], mean[head], rtol=0, atol=1e-6)  # head: as Dec-LoRA
    before = nodes[1].vector()
    nodes[1].mix({})  # no neighbour delivered: nothing to refactorise
    np.testing.assert_array_equal(nodes[1].vector(), before)


def test_product_average_averages_the_products(decaf_lm: LoraModel) -> None:
    rng = np.random.default_rng(4)
    vecs = [rng.normal(0, 0.1, decaf_lm.schema.numel).astype(np.float32) for _ in range(3)]
    pairs = lora_pairs(decaf_lm.schema)
    got = product_average(pairs, vecs)
    for p in pairs:
        dense = np.mean(
            [v[p.b].reshape(p.b_shape) @ v[p.a].reshape(p.a_shape) for v in vecs], axis=0
        )
        mixed = got[p.b].reshape(p.b_shape) @ got[p.a].reshape(p.a_shape)
        np.testing.assert_allclose(mixed, best_rank(dense, 4), rtol=0, atol=1e-5)


def test_decaf_node_refuses_inexact_gossip(decaf_lm: LoraModel, synthetic: TextDataset) -> None:
    trainer = LocalTrainer(decaf_lm, decaf_lm.encode(synthetic), 1e-2, 8, seed=0)
    with pytest.raises(ValueError, match="needs --codec fp32, not q8"):
        DecLoraNode(trainer, "q8", None, seed=0)


# --------------------------------------------------------------------- both shells
def products(lm: LoraModel, vec: np.ndarray) -> np.ndarray:
    """What a node's adapter does: every module's B·A (a frozen A from the model) and
    the head, flat: comparable across nodes whatever the factors' gauge."""
    frozen = frozen_a(lm)
    tensors = lm.schema.unflatten(vec)
    out = []
    for name, t in tensors.items():
        if A_MARK in name:
            continue
        if B_MARK in name:
            key = name.split(B_MARK)[0]
            a_name = name.replace(B_MARK, A_MARK)
            a = tensors[a_name].numpy() if a_name in tensors else frozen[key]
            out.append((t.numpy() @ a).reshape(-1))
        else:
            out.append(t.numpy().reshape(-1))
    return np.concatenate(out)


@pytest.mark.parametrize("method", ["conlora", "decaf"])
def test_simulated_rounds_move_nodes_together(synthetic_jsonl: Path, method: str) -> None:
    sim = Simulation(tiny_sim_config(synthetic_jsonl, method=method, rounds=2))
    assert sim.lm.spec.method == method and sim.nodes[0].method == method
    for _ in range(2):
        losses = [node.train(sim.cfg.local_steps) for node in sim.nodes]
        assert all(np.isfinite(loss) for loss in losses)
        before = consensus_distance([products(sim.lm, n.vector()) for n in sim.nodes])[0]
        sim._gossip_round()
        after = consensus_distance([products(sim.lm, n.vector()) for n in sim.nodes])[0]
        assert 0 < after < 0.8 * before
    # gossip-only rounds (the consensus finish): the factors themselves agree too
    start = consensus_distance([n.vector() for n in sim.nodes])[1]
    for _ in range(5):
        sim._gossip_round()
    assert consensus_distance([n.vector() for n in sim.nodes])[1] < 0.5 * start


@pytest.mark.parametrize("method", ["conlora", "decaf", "kill-revive"])
def test_daemon_rounds_are_the_core_rounds(synthetic_jsonl: Path, method: str) -> None:
    """Two in-process daemons exchange and mix twice: each ends every round with
    exactly the vector the core gives for the same workload, training and weights
    (1/2 each). Both train first, one after the other: two trainers in threads would
    race on torch's global seed (dropout), which real daemons, one a process, never do.
    Kill-and-Revive's second round kills modules: the daemon carries its masks."""
    (da, db), (a, b) = pair(synthetic_jsonl, method=method)
    steps = a.settings.local_steps
    work = load_workload(a.settings.recipe(), 2)
    core = [work.node(0), work.node(1)]
    assert type(core[0]) is type(a.node)
    core[0].add_peer(1)
    core[1].add_peer(0)
    sent = 0

    async def go() -> None:
        nonlocal sent
        assert await a.handshaker.dial(b.settings.advertise) is not None
        for _ in range(2):
            for daemon_node, node in zip((a.node, b.node), core, strict=True):
                assert np.isfinite(daemon_node.train(steps))
                node.train(steps)
            await asyncio.gather(da.run_round(a, train=False), db.run_round(b, train=False))
            payloads = [node.outgoing() for node in core]
            sent += len(payloads[0])
            core[0].receive(1, payloads[1])
            core[1].receive(0, payloads[0])
            core[0].mix({1: 0.5})
            core[1].mix({0: 0.5})
            np.testing.assert_array_equal(a.node.vector(), core[0].vector())
            np.testing.assert_array_equal(b.node.vector(), core[1].vector())

    asyncio.run(go())
    assert a.lm.spec.method == method and a.report.self_weight == pytest.approx(0.5)
    assert a.node.bytes_sent == sent
    if method != "kill-revive":
        assert sent == 2 * (OVERHEAD + 4 * a.node.size)
    else:  # round 2 sent the mask, one module of four and the head
        assert sent == 2 * (OVERHEAD + 6) + 4 * (2 * a.node.size - 3 * 256)


# --------------------------------------------------------------------- Kill-and-Revive
def test_update_change_is_the_dense_norm() -> None:
    rng = np.random.default_rng(5)
    a0, a1 = rng.normal(size=(3, 11)), rng.normal(size=(3, 11))
    b0, b1 = rng.normal(size=(9, 3)), rng.normal(size=(9, 3))
    want = float(np.linalg.norm(b1 @ a1 - b0 @ a0))
    assert update_change(a0, b0, a1, b1) == pytest.approx(want, rel=1e-9)
    assert update_change(a0, b0, a0, b0) == pytest.approx(0.0, abs=1e-9)


def kill_revive_nodes(
    data: TextDataset, n: int, tracking: bool = False, **extra: object
) -> list[KillReviveNode[int]]:
    lm = model_for("kill-revive", **extra)
    enc = lm.encode(data)
    nodes = [
        KillReviveNode[int](
            LocalTrainer(lm, enc, 1e-2, 8, seed=i), "fp32", None, seed=i, tracking=tracking
        )
        for i in range(n)
    ]
    for i, node in enumerate(nodes):
        for j in range(n):
            if j != i:
                node.add_peer(j)
    return nodes


def test_a_killed_module_takes_no_gradient_and_sends_no_bytes(synthetic: TextDataset) -> None:
    node, other = kill_revive_nodes(synthetic, 2)
    lm = node.trainer.lm
    node.train(2)  # round 1 revives every module and scores it
    assert node.active.all() and (node.scores > 0).all()
    full = node.outgoing()
    assert len(full) == 5 + 1 + OVERHEAD + 4 * node.size
    before, best = node.vector(), int(np.argmax(node.scores))
    node.train(2)  # round 2: the top 1/8 (one of four modules) trains
    assert node.active.tolist() == [k == best for k in range(4)]
    after = node.vector()
    killed = ~node.entries(node.active)
    np.testing.assert_array_equal(after[killed], before[killed])
    assert not np.array_equal(after[~killed], before[~killed])
    for on, idx in zip(node.active, node._params, strict=True):
        for i in idx:
            assert (lm.params[i].grad is None) == (not on)  # no gradient when killed
    payload = node.outgoing()
    assert len(payload) == 5 + 1 + OVERHEAD + 4 * int((~killed).sum())
    assert int(killed.sum()) == 3 * 256  # three modules of A (4 x 32) and B (32 x 4)
    delta = other.check_payload(0, payload)
    assert np.isnan(delta[killed]).all() and np.isfinite(delta[~killed]).all()
    with pytest.raises(GossipError, match="mask for 3 modules"):
        other.check_payload(0, pack_mask(np.ones(3, dtype=bool)) + payload[6:])
    with pytest.raises(GossipError, match="values for a mask"):
        other.check_payload(0, pack_mask(np.ones(4, dtype=bool)) + payload[6:])


def tracked_exchange(nodes: list[KillReviveNode[int]]) -> list[bytes]:
    """One exchange with tracking among all `nodes` (equal weights); their z messages."""
    payloads = [node.outgoing() for node in nodes]
    zs = [node.tracker_outgoing() for node in nodes]
    n = len(nodes)
    for i, node in enumerate(nodes):
        for j in range(n):
            if j != i:
                node.receive(j, payloads[j])
                node.receive_tracker(j, zs[j])  # type: ignore[arg-type]
        node.mix({j: 1 / n for j in range(n) if j != i})
    return zs  # type: ignore[return-value]


def test_tracking_corrects_only_the_active_modules(synthetic: TextDataset) -> None:
    """Kill-and-Revive with gradient tracking: a killed module takes neither gradient
    nor correction, its z entries are not sent, c_i moves only where both ends sent,
    and the corrections still sum to zero."""
    nodes = kill_revive_nodes(synthetic, 2, tracking=True)
    node, other = nodes
    for n in nodes:
        n.train(2)  # round 1 revives every module
    tracked_exchange(nodes)
    c1 = [n.tracker.correction() for n in nodes]  # type: ignore[union-attr]
    assert (np.abs(c1[0]) > 0).mean() > 0.9  # every module was corrected
    np.testing.assert_allclose(c1[0] + c1[1], 0.0, atol=1e-6)
    node.scores[:] = [0, 0, 0, 1]  # round 2: node keeps module 3, other module 0
    other.scores[:] = [1, 0, 0, 0]
    before = node.vector()
    for n in nodes:
        n.train(2)
    killed = ~node.entries(node.active)
    np.testing.assert_array_equal(node.vector()[killed], before[killed])  # c_i != 0 there
    zs = tracked_exchange(nodes)
    assert len(zs[0]) == 5 + 1 + OVERHEAD + 4 * int((~killed).sum())
    z = other.check_tracker(0, zs[0])
    assert np.isnan(z[killed]).all() and np.isfinite(z[~killed]).all()
    c2 = [n.tracker.correction() for n in nodes]  # type: ignore[union-attr]
    both = node.entries(node.active) & other.entries(other.active)  # the head only
    assert both.sum() < (~killed).sum()
    np.testing.assert_array_equal(c2[0][~both], c1[0][~both])
    assert not np.array_equal(c2[0][both], c1[0][both])
    np.testing.assert_allclose(c2[0] + c2[1], 0.0, atol=1e-6)
    with pytest.raises(GossipError, match="mask for 3 modules"):
        other.check_tracker(0, pack_mask(np.ones(3, dtype=bool)) + zs[0][6:])
    with pytest.raises(GossipError, match="values, expected"):
        other.check_tracker(0, pack_mask(np.ones(4, dtype=bool)) + zs[0][6:])


def test_a_z_under_another_mask_than_its_delta_is_refused(synthetic: TextDataset) -> None:
    """A z whose mask differs from its delta's (same size: one module for another) is
    refused and keeps nothing; the daemon checks the pair before queueing either."""
    node, other = kill_revive_nodes(synthetic, 2, tracking=True)
    for n in (node, other):
        n.train(1)
    tracked_exchange([node, other])
    node.scores[:] = [0, 0, 0, 1]
    for n in (node, other):
        n.train(1)
    delta, z = node.outgoing(), node.tracker_outgoing()
    assert z is not None
    swapped = pack_mask(np.array([True, False, False, False])) + z[6:]  # module 0's size
    checked = other.check_tracker(0, swapped)  # well-formed on its own
    with pytest.raises(GossipError, match="another mask"):
        other.check_pair(0, other.check_payload(0, delta), checked)
    other.check_pair(0, other.check_payload(0, delta), other.check_tracker(0, z))
    other.receive(0, delta)
    with pytest.raises(GossipError, match="another mask"):
        other.receive_tracker(0, swapped)
    assert 0 not in other._tracker_in
    other.receive_tracker(0, z)
    assert 0 in other._tracker_in


def test_a_simulated_tracked_kill_revive_swarm_keeps_the_corrections_sum(
    synthetic_jsonl: Path,
) -> None:
    cfg = tiny_sim_config(
        synthetic_jsonl,
        method="kill-revive",
        rounds=3,
        consensus_rounds=2,
        gradient_tracking=True,
        gossip_steps=3,  # later exchanges send z mixed from a masked one
    )
    sim = Simulation(cfg)
    sim.run()
    corrections = [n.tracker.correction() for n in sim.nodes]  # type: ignore[union-attr]
    assert max(float(np.abs(c).max()) for c in corrections) > 0
    np.testing.assert_allclose(np.sum(corrections, axis=0), 0.0, atol=1e-5)
    assert not all(n.active.all() for n in sim.nodes)  # type: ignore[attr-defined]


def test_every_exchange_of_a_round_sends_its_modules_and_the_finish_sends_all(
    synthetic: TextDataset,
) -> None:
    """With several exchanges a round (`gossip_steps`), the second and later exchanges
    send the round's active modules too; only the consensus finish sends every one."""
    node, other = kill_revive_nodes(synthetic, 2)
    node.train(1)  # round 1: a revive round
    node.train(1)  # round 2: one module of four
    sizes = []
    for _ in range(3):  # three exchanges of round 2
        payload, reply = node.outgoing(), other.outgoing()
        node.receive(1, reply)
        other.receive(0, payload)
        node.mix({1: 0.5})
        other.mix({0: 0.5})
        sizes.append(len(payload))
    active = int(node.entries(node.active).sum())
    assert active < node.size
    assert sizes == [5 + 1 + OVERHEAD + 4 * active] * 3
    node.begin_finish()
    assert len(node.outgoing()) == 5 + 1 + OVERHEAD + 4 * node.size
    node.train(1)  # a node that trains again is back to its round's modules
    assert len(node.outgoing()) == 5 + 1 + OVERHEAD + 4 * active


def test_kill_revive_mixing_preserves_the_average(synthetic: TextDataset) -> None:
    nodes = kill_revive_nodes(synthetic, 3)
    for k, node in enumerate(nodes):  # node k keeps module k alive (after a revive round)
        node.train(0)
        node.scores[:] = 0.0
        node.scores[k] = 1.0
        node.train(0)
        assert node.active.tolist() == [i == k for i in range(4)]
    vecs = randomise(nodes, seed=6)
    exchange(nodes)
    for i, node in enumerate(nodes):
        node.mix({j: 1 / 3 for j in range(3) if j != i})
    total = sum(n.vector().astype(np.float64) for n in nodes)
    np.testing.assert_allclose(total, sum(v.astype(np.float64) for v in vecs), atol=1e-5)
    for i, node in enumerate(nodes):  # modules killed here (all but module i) kept
        killed = ~node.entries(node.active)
        np.testing.assert_array_equal(node.vector()[killed], vecs[i][killed])
    head = nodes[0].entries(np.zeros(4, dtype=bool))  # only the non-LoRA entries
    mean = sum(vecs) / 3
    for node in nodes:  # the head is mixed by everyone: the exact mean
        np.testing.assert_allclose(node.vector()[head], mean[head], atol=1e-6)


def test_simulated_kill_revive_rounds(synthetic_jsonl: Path) -> None:
    sim = Simulation(tiny_sim_config(synthetic_jsonl, method="kill-revive", rounds=3))
    assert all(isinstance(n, KillReviveNode) for n in sim.nodes)
    for r in range(3):
        losses = [node.train(sim.cfg.local_steps) for node in sim.nodes]
        assert all(np.isfinite(loss) for loss in losses)
        assert all(n.active.sum() == (4 if r == 0 else 1) for n in sim.nodes)  # type: ignore[attr-defined]
        before = consensus_distance([n.vector() for n in sim.nodes])[0]
        sim._gossip_round()
        assert consensus_distance([n.vector() for n in sim.nodes])[0] < before


def test_kill_revive_keyframes_and_states_carry_every_module(synthetic: TextDataset) -> None:
    """A keyframe (public copy) and a state (adapter) carry every entry, even in a round
    that killed modules; a keyframe also names the modules its sender mixes."""
    node, other = kill_revive_nodes(synthetic, 2)
    node.train(2, round_number=1)
    node.outgoing()
    node.train(2, round_number=2)
    delta = node.outgoing()
    assert node.active.sum() == 1
    public, entries = other.check_keyframe(0, node.keyframe())
    np.testing.assert_array_equal(public, node.gossip.public)
    np.testing.assert_array_equal(entries, node.entries(node.active))
    np.testing.assert_array_equal(other.check_payload(0, node.full_state()), node.vector())
    with pytest.raises(GossipError, match="mask"):  # one format: no mask, no message
        other.check_keyframe(0, node.keyframe()[6:])
    with pytest.raises(GossipError, match="not a kill-revive delta"):
        other.check_payload(0, node.keyframe())
    with pytest.raises(GossipError, match="not a kill-revive keyframe"):
        other.check_keyframe(0, delta)
    with pytest.raises(GossipError, match="values, expected"):  # a keyframe holds every entry
        other.check_keyframe(0, pack_mask(node.active, KEYFRAME) + delta[6:])


def test_a_keyframe_in_a_killing_round_keeps_the_average(synthetic: TextDataset) -> None:
    """Node 0 sends keyframes (as to neighbours out of step), the others deltas, each
    with another module alive: both ends of every pair mix the same modules, so the
    sum of the adapters is what it was."""
    nodes = kill_revive_nodes(synthetic, 3)
    for k, node in enumerate(nodes):
        node.train(0)
        node.scores[:] = 0.0
        node.scores[k] = 1.0
        node.train(0)
    vecs = randomise(nodes, seed=7)
    payloads = [node.outgoing() for node in nodes]
    for peer in (1, 2):
        nodes[peer].accept_keyframe(0, *nodes[peer].check_keyframe(0, nodes[0].keyframe()))
        for j in (1, 2):
            if j != peer:
                nodes[peer].receive(j, payloads[j])
        nodes[0].receive(peer, payloads[peer])
    for i, node in enumerate(nodes):
        node.mix({j: 1 / 3 for j in range(3) if j != i})
    total = sum(n.vector().astype(np.float64) for n in nodes)
    np.testing.assert_allclose(total, sum(v.astype(np.float64) for v in vecs), atol=1e-5)
    for i, node in enumerate(nodes):  # what this node killed did not move
        killed = ~node.entries(node.active)
        np.testing.assert_array_equal(node.vector()[killed], vecs[i][killed])


def test_kill_revive_daemons_exchange_keyframes(synthetic_jsonl: Path) -> None:
    """Two daemons whose public copies left the shared init before they met send each
    other keyframes in a round that kills modules, take them, mix, and go on by
    deltas in step."""
    (da, db), (a, b) = pair(synthetic_jsonl, method="kill-revive")
    moves: list[list[np.ndarray]] = [[], []]
    for k, (p, moved) in enumerate(zip((a, b), moves, strict=True)):
        p.node.train(p.settings.local_steps, round_number=1)
        p.node.outgoing()  # alone: its public copy leaves the init
        p.progress.round = p.progress.seq = 1
        p.node.scores[:] = np.eye(4)[k]  # type: ignore[attr-defined]  # a keeps module 0, b 1

        def mix(weights: Any, node: Any = p.node, moved: list[np.ndarray] = moved) -> None:
            before = node.vector().astype(np.float64)
            type(node).mix(node, weights)
            moved.append(node.vector() - before)

        p.node.mix = mix  # type: ignore[method-assign]

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        for _ in range(2):
            await asyncio.gather(da.run_round(a, train=True), db.run_round(b, train=True))
            for me, other in ((a, b), (b, a)):
                assert me.report.self_weight == pytest.approx(0.5)
                copy = me.node.gossip.peers[other.settings.node_id]
                np.testing.assert_array_equal(copy, other.node.gossip.public)

    asyncio.run(go())
    assert a.progress.round == b.progress.round == 3
    assert a.counters.keyframes_sent == b.counters.keyframes_sent == 1
    assert a.node.active.tolist() == [True, False, False, False]  # type: ignore[attr-defined]
    assert b.node.active.tolist() == [False, True, False, False]  # type: ignore[attr-defined]
    # every mix, the keyframes' too, moved the two the same amount apart: sum kept
    assert len(moves[0]) == len(moves[1]) == 2
    for ma, mb in zip(*moves, strict=True):
        np.testing.assert_allclose(ma + mb, 0.0, atol=1e-6)


def test_kill_revive_catches_up_from_a_state(synthetic_jsonl: Path) -> None:
    (_, _), (a, b) = pair(synthetic_jsonl, method="kill-revive")
    far = 5 * MAX_ROUNDS_AHEAD
    a.node.train(a.settings.local_steps, round_number=1)
    a.progress.round = far

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        await b.transfer.catch_up()

    asyncio.run(go())
    assert b.progress.round == far
    np.testing.assert_array_equal(b.node.vector(), a.node.vector())
    np.testing.assert_array_equal(b.node.gossip.public, a.node.vector())


def test_a_masked_delta_is_no_state(synthetic: TextDataset) -> None:
    """A catch-up takes full states only: a delta that leaves out killed modules (NaN
    there, as `check_payload` reads it) is refused, and a full state is taken whole."""
    sender, taker = kill_revive_nodes(synthetic, 2)
    sender.train(2, round_number=1)
    sender.outgoing()
    sender.train(2, round_number=2)  # kills modules
    delta = sender.outgoing()
    assert not sender.active.all()
    assert np.isnan(taker.check_payload(0, delta)).any()
    before = taker.vector().copy()
    with pytest.raises(GossipError, match="lacks entries: not a full state"):
        taker.check_state(0, delta)
    np.testing.assert_array_equal(taker.vector(), before)
    taker.take_state(taker.check_state(0, sender.full_state()))
    np.testing.assert_array_equal(taker.vector(), sender.vector())
    assert taker.is_finite()


def test_neighbours_revive_in_the_same_round_whatever_they_skipped(
    synthetic: TextDataset,
) -> None:
    steady, skipper = kill_revive_nodes(synthetic, 2)
    for r in range(1, 11):
        steady.train(0, round_number=r)
        assert steady.active.all() == (r in (1, 9))
    for r in (1, 2, 9, 10):  # rounds 3 to 8 skipped (a catch-up, an outage)
        skipper.train(0, round_number=r)
        assert skipper.active.all() == revives(r) == (r in (1, 9))


def test_a_rolled_back_round_leaves_the_scores(synthetic: TextDataset) -> None:
    (node,) = kill_revive_nodes(synthetic, 1)
    node.train(2, round_number=1)
    scores = node.scores.copy()
    good = TrainerSnapshot.of(node)
    node.train(2, round_number=2)
    node.scores[node.active] = np.nan  # what a round gone non-finite leaves
    good.restore(node)
    np.testing.assert_array_equal(node.scores, scores)
    assert node.choose(2).tolist() == [k == int(np.argmax(scores)) for k in range(4)]


def test_a_kill_revive_checkpoint_resumes_the_active_set(
    synthetic_jsonl: Path, tmp_path: Path
) -> None:
    """Resumed from a checkpoint, a node trains the modules (and reaches the adapter)
    the node that went on does."""
    opts = {"method": "kill-revive", "checkpoint_dir": tmp_path / "a"}
    (da, _), (a, _) = pair(synthetic_jsonl, **opts)
    steps = a.settings.local_steps
    for r in (1, 2):
        a.node.train(steps, round_number=r)
        a.node.outgoing()
        a.node.mix({})
    a.progress.round = 2
    da.store.save_checkpoint()
    (db, _), (b, _) = pair(synthetic_jsonl, first={"resume": True}, **opts)
    db.store.resume(b)
    np.testing.assert_array_equal(b.node.scores, a.node.scores)  # type: ignore[attr-defined]
    for node in (a.node, b.node):
        node.train(steps, round_number=3)
    assert a.node.active.sum() == 1  # type: ignore[attr-defined]
    assert b.node.active.tolist() == a.node.active.tolist()  # type: ignore[attr-defined]
    np.testing.assert_array_equal(b.node.vector(), a.node.vector())


def test_dora_magnitudes_belong_to_their_module(synthetic: TextDataset) -> None:
    """With --dora a killed module's magnitude vector is frozen and sent no more than
    its factors."""
    node, other = kill_revive_nodes(synthetic, 2, dora=True)
    schema = node.trainer.lm.schema
    ends = np.cumsum([t.numel for t in schema.tensors])
    magnitudes = {
        lora_module(t.name): np.arange(end - t.numel, end)
        for t, end in zip(schema.tensors, ends, strict=True)
        if "lora_magnitude_vector" in t.name
    }
    assert len(magnitudes) == 4
    node.train(2, round_number=1)
    node.outgoing()
    before = node.vector()
    node.train(2, round_number=2)
    killed = ~node.entries(node.active)
    assert int(killed.sum()) == 3 * (256 + 32)  # three modules: A, B and 32 magnitudes
    modules = [lora_module(n) for n in schema.names if A_MARK in n]
    for on, module in zip(node.active, modules, strict=True):
        idx = magnitudes[module]
        assert killed[idx].all() != on
        if not on:
            np.testing.assert_array_equal(node.vector()[idx], before[idx])
    payload = node.outgoing()
    assert len(payload) == 5 + 1 + OVERHEAD + 4 * int((~killed).sum())
    delta = other.check_payload(0, payload)
    assert np.isnan(delta[killed]).all() and np.isfinite(delta[~killed]).all()


def test_the_lora_marks_name_every_lora_parameter() -> None:
    """A, B and DoRA's magnitude of each adapted module share its path; the head holds
    no mark."""
    names = model_for("dec-lora", dora=True).schema.names
    lora = [n for n in names if LORA_MARK in n]
    assert len(lora) == 12 and len(names) > len(lora)
    by_module: dict[str | None, list[str]] = {}
    for n in lora:
        by_module.setdefault(lora_module(n), []).append(n)
    assert len(by_module) == 4
    for module, group in by_module.items():
        assert module is not None and all(n.startswith(module + LORA_MARK) for n in group)
        assert sum(A_MARK in n for n in group) == sum(B_MARK in n for n in group) == 1
    assert all(lora_module(n) is None for n in names if n not in lora)
