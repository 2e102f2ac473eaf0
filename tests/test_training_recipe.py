"""The standard LLM training recipe and QLoRA (issue 12), on the tiny models.

Each option is checked by what it changes: accumulation by the gradient the
optimizer sees, checkpointing by the recomputed forward passes, the schedule by the
optimizer's lr at each step, clipping by the gradient norm, the LoRA variants by the
PEFT layers, precision by the dtype a layer computes in, targets by the wrapped
modules, QLoRA by its refusal on this (CPU) machine and by its config arguments.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_sim_config
from pydantic import ValidationError
from torch import nn

from declora.node import checkpoint
from declora.node.adapter import fingerprint
from declora.node.daemon.admission import recipe_differences, recipe_facts
from declora.node.lora_targets import default_targets, wrap_lora
from declora.node.model_source import ModelError
from declora.node.models import BaseModel, ByteTokenizer
from declora.node.quantize import check_runtime, quantization_kwargs
from declora.node.recipe import Recipe
from declora.node.schedule import Schedule
from declora.node.simulator import Simulation
from declora.node.trainer import Encoded, LocalTrainer, LoraModel, LoraSpec
from declora.node.workload import load_workload

LLAMA = LoraSpec(model="tiny-llama", task="lm", rank=4, alpha=8, max_length=32, seed=0)


def encoded(n: int = 16, seed: int = 0, max_length: int = 32) -> Encoded:
    """`n` texts of very different lengths, tokenized for the tiny models (LM labels)."""
    rng = np.random.default_rng(seed)
    texts = ["ab " * int(rng.integers(1, 10)) + "end" for _ in range(n)]
    ids, mask = ByteTokenizer()(texts, max_length)
    labels = ids.masked_fill(mask == 0, -100)
    return Encoded(ids, mask, labels)


def grads_seen(trainer: LocalTrainer, steps: int) -> list[np.ndarray]:
    """The gradient (flat) the optimizer is handed at each of `steps` steps."""
    seen: list[np.ndarray] = []

    def hook(grads: list[torch.Tensor]) -> None:
        seen.append(torch.cat([g.reshape(-1) for g in grads]).numpy().copy())

    for _ in range(steps):
        trainer.train_steps(1, grad_hook=hook)
    return seen


# ----------------------------------------------------------- gradient accumulation


@pytest.mark.parametrize("task", ["lm", "cls"])
def test_accumulation_of_two_by_two_is_one_batch_of_four(task: str) -> None:
    spec = LoraSpec(**{**LLAMA.as_dict(), "task": task, "targets": ()})  # type: ignore[arg-type]
    lm = LoraModel(spec, num_labels=3)
    data = encoded()
    if task == "cls":
        data = Encoded(data.input_ids, data.attention_mask, torch.arange(len(data)) % 3)
    big = LocalTrainer(lm, data, lr=1e-2, batch_size=4, seed=0)
    acc = LocalTrainer(lm, data, lr=1e-2, batch_size=2, seed=0, grad_accumulation=2)
    half = LocalTrainer(lm, data, lr=1e-2, batch_size=2, seed=0)  # what G=2 must not be
    g_big, g_acc, g_half = grads_seen(big, 2), grads_seen(acc, 2), grads_seen(half, 1)
    for a, b in zip(g_big, g_acc, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-7)
    assert not np.allclose(g_half[0], g_big[0], rtol=1e-2, atol=1e-6)
    np.testing.assert_allclose(acc.vector(), big.vector(), rtol=1e-4, atol=1e-6)
    assert acc.step == big.step == 2  # a local step is one optimizer step


def test_accumulation_weights_micro_batches_by_their_target_tokens() -> None:
    lm = LoraModel(LLAMA)
    data = encoded()
    big = LocalTrainer(lm, data, lr=1e-2, batch_size=4, seed=0)
    acc = LocalTrainer(lm, data, lr=1e-2, batch_size=2, seed=0, grad_accumulation=2)
    assert acc.train_steps(1) == pytest.approx(big.train_steps(1), rel=1e-5)


# ---------------------------------------------------------- gradient checkpointing


def forward_calls(lm: LoraModel) -> Callable[[], int]:
    """A counter of the forward passes of the first decoder layer's q projection."""
    calls = [0]
    q = next(m for n, m in lm.model.named_modules() if n.endswith("layers.0.self_attn.q_proj"))
    q.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return lambda: calls[0]


def test_gradient_checkpointing_recomputes_and_gives_the_same_step() -> None:
    plain, ckpt = LoraModel(LLAMA), LoraModel(LLAMA, gradient_checkpointing=True)
    count_plain, count_ckpt = forward_calls(plain), forward_calls(ckpt)
    data = encoded()
    a = LocalTrainer(plain, data, lr=1e-2, batch_size=4, seed=0)
    b = LocalTrainer(ckpt, data, lr=1e-2, batch_size=4, seed=0)
    assert b.train_steps(2) == pytest.approx(a.train_steps(2), rel=1e-6)
    assert count_plain() == 2 and count_ckpt() == 4  # the backward pass ran it again
    np.testing.assert_allclose(b.vector(), a.vector(), rtol=1e-5, atol=1e-7)
    assert ckpt.fingerprint == plain.fingerprint  # how a node computes is its own business


# ------------------------------------------------------------------- lr schedule


def test_schedule_warms_up_then_decays_to_the_end() -> None:
    lin = [Schedule("linear", 2, 10).factor(s) for s in range(11)]
    assert lin[:3] == [0.5, 1.0, 1.0]
    assert lin[2:] == pytest.approx([1 - k / 8 for k in range(9)])  # ...to 0 at step 10
    cos = [Schedule("cosine", 0, 8).factor(s) for s in range(9)]
    assert cos[0] == 1.0 and cos[4] == pytest.approx(0.5) and cos[8] == 0.0
    assert all(a > b for a, b in itertools.pairwise(cos))
    const = Schedule("constant", 3, 0)
    assert [const.factor(s) for s in range(5)] == pytest.approx([1 / 3, 2 / 3, 1, 1, 1])
    assert Schedule().is_flat and not const.is_flat


def test_decay_needs_rounds_and_steps_after_warmup() -> None:
    with pytest.raises(ValidationError, match="--lr-schedule cosine needs --rounds > 0"):
        Recipe(lr_schedule="cosine")
    with pytest.raises(ValidationError, match="--warmup-steps 10 leaves no step"):
        Recipe(lr_schedule="linear", rounds=2, local_steps=5, warmup_steps=10)
    with pytest.raises(ValidationError, match="lr_schedule"):
        Recipe(lr_schedule="step")  # type: ignore[arg-type]
    assert Recipe(warmup_steps=5).schedule().factor(0) == 0.2  # warmup alone runs forever
    assert Recipe().schedule_facts() == {}


def on_step(trainer: LocalTrainer, what: Callable[[], float]) -> list[float]:
    """Records `what()` at every optimizer step the trainer takes from now on."""
    seen: list[float] = []
    step = trainer.optimizer.step

    def recording(*args: Any, **kw: Any) -> Any:
        seen.append(what())
        return step(*args, **kw)

    trainer.optimizer.step = recording  # type: ignore[method-assign]
    return seen


def lrs_used(trainer: LocalTrainer) -> list[float]:
    return on_step(trainer, lambda: float(trainer.optimizer.param_groups[0]["lr"]))


def test_two_nodes_use_the_same_lr_at_the_same_round(synthetic_jsonl: Path) -> None:
    cfg = tiny_sim_config(
        synthetic_jsonl, nodes=2, rounds=4, local_steps=3, lr_schedule="cosine", warmup_steps=2
    )
    work = load_workload(cfg, 2)
    a, b = work.node(0), work.node(1)
    used_a, used_b = lrs_used(a.trainer), lrs_used(b.trainer)
    for r in range(1, 5):
        a.train(3, round_number=r)
    b.train(3, round_number=4)  # b skipped rounds 1-3 (or took a neighbour's state)
    plan = [cfg.lr * cfg.schedule().factor(s) for s in range(12)]
    assert used_a == pytest.approx(plan)
    assert plan[0] < plan[1] == cfg.lr > plan[5] > plan[11] > 0  # warmup, peak, decay
    assert used_b == used_a[9:]  # the same lr as a at round 4, not b's own first steps
    # the centralized reference spans the swarm's total steps: 2 nodes x 12
    central = work.centralized_trainer()
    assert central.schedule.total_steps == 24 and central.schedule.warmup_steps == 4


def test_simulator_passes_the_round(synthetic_jsonl: Path) -> None:
    cfg = tiny_sim_config(
        synthetic_jsonl, nodes=2, rounds=2, local_steps=2, lr_schedule="linear",
        consensus_rounds=0, max_eval=10,
    )  # fmt: skip
    sim = Simulation(cfg)
    sim.run()
    last = cfg.lr * cfg.schedule().factor(3)
    assert [n.trainer.optimizer.param_groups[0]["lr"] for n in sim.nodes] == [last, last]


def test_schedule_joins_the_fingerprint_and_names_the_option(synthetic_jsonl: Path) -> None:
    plain = load_workload(tiny_sim_config(synthetic_jsonl), 2).lm
    cos_cfg = tiny_sim_config(synthetic_jsonl, lr_schedule="cosine", warmup_steps=0)
    cosine = load_workload(cos_cfg, 2).lm
    assert plain.identity == plain.spec.as_dict() | {"labels": list(plain.label_names)}
    assert cosine.fingerprint != plain.fingerprint
    assert cosine.identity["lr_schedule"] == "cosine" and cosine.identity["rounds"] == 3
    ours = recipe_facts(plain.identity, plain.label_names)
    theirs = recipe_facts(cosine.identity, cosine.label_names)
    differ = recipe_differences(theirs, ours)
    assert differ == "--lr-schedule is 'cosine' there, 'constant' here"
    longer = load_workload(cos_cfg.model_copy(update={"rounds": 6}), 2).lm
    assert longer.fingerprint != cosine.fingerprint
    assert "--rounds is '6' there, '3' here" in recipe_differences(
        recipe_facts(longer.identity, ()), recipe_facts(cosine.identity, ())
    )


# --------------------------------------------- clipping, weight decay, the wiring


def test_max_grad_norm_clips_what_the_optimizer_sees() -> None:
    lm, data = LoraModel(LLAMA), encoded()
    norms: dict[float, list[float]] = {}
    for clip in (0.0, 1e-3):
        t = LocalTrainer(lm, data, lr=1e-2, batch_size=4, seed=0, max_grad_norm=clip)
        norms[clip] = on_step(
            t, lambda: float(torch.stack([p.grad.norm() for p in lm.params]).norm())
        )
        t.train_steps(1)
    assert norms[0.0][0] > 1e-2 and norms[1e-3][0] == pytest.approx(1e-3, rel=1e-3)


def test_the_recipe_reaches_the_trainer(synthetic_jsonl: Path) -> None:
    cfg = tiny_sim_config(
        synthetic_jsonl, weight_decay=0.1, grad_accumulation=3, max_grad_norm=1.0,
        lr_schedule="linear", warmup_steps=1,
    )  # fmt: skip
    work = load_workload(cfg, 2)
    t = work.trainer(1)
    assert t.optimizer.param_groups[0]["weight_decay"] == 0.1
    assert (t.grad_accumulation, t.max_grad_norm) == (3, 1.0)
    assert t.schedule == Schedule("linear", 1, 15)
    plain = LocalTrainer(work.lm, t.data, lr=cfg.lr, batch_size=16, seed=t.seed)
    t.train_steps(1)
    plain.train_steps(1)
    assert not np.allclose(t.vector(), plain.vector())
    with pytest.raises(ValidationError, match="weight_decay"):
        Recipe(weight_decay=-1)
    with pytest.raises(ValidationError, match="grad_accumulation"):
        Recipe(grad_accumulation=0)


# --------------------------------------------------------------- LoRA variants


def lora_layer(lm: LoraModel) -> Any:
    return next(m for n, m in lm.model.named_modules() if n.endswith("layers.0.self_attn.q_proj"))


def old_fingerprint(lm: LoraModel) -> str:
    """The fingerprint as it was computed before the variants existed."""
    s = lm.spec
    old = {
        "model": s.model, "task": s.task, "rank": s.rank, "alpha": s.alpha,
        "targets": list(s.targets), "max_length": s.max_length, "seed": s.seed,
    }  # fmt: skip
    return fingerprint(s.model, lm.base_digest, old, lm.schema)


def test_lora_variants_change_the_adapter_and_the_fingerprint() -> None:
    plain = LoraModel(LLAMA)
    assert plain.fingerprint == old_fingerprint(plain)  # the defaults change nothing
    drop = LoraModel(LoraSpec(**{**LLAMA.as_dict(), "lora_dropout": 0.25}))  # type: ignore[arg-type]
    rs = LoraModel(LoraSpec(**{**LLAMA.as_dict(), "rslora": True}))  # type: ignore[arg-type]
    dora = LoraModel(LoraSpec(**{**LLAMA.as_dict(), "dora": True}))  # type: ignore[arg-type]
    assert lora_layer(drop).lora_dropout["default"].p == 0.25
    assert isinstance(lora_layer(plain).lora_dropout["default"], nn.Identity)
    assert lora_layer(rs).scaling["default"] == pytest.approx(8 / math.sqrt(4))
    assert lora_layer(plain).scaling["default"] == 2.0
    assert any("lora_magnitude_vector" in n for n in dora.schema.names)
    assert not any("magnitude" in n for n in plain.schema.names)
    prints = {plain.fingerprint, drop.fingerprint, rs.fingerprint, dora.fingerprint}
    assert len(prints) == 4
    assert (drop.identity["lora_dropout"], rs.identity["rslora"], dora.identity["dora"]) == (
        0.25, True, True,
    )  # fmt: skip
    differ = recipe_differences(recipe_facts(dora.identity, ()), recipe_facts(plain.identity, ()))
    assert differ == "--dora is 'True' there, 'False' here"
    data = encoded()
    trained = [LocalTrainer(m, data, lr=1e-2, batch_size=4, seed=0) for m in (plain, drop)]
    for t in trained:
        t.train_steps(2)
    assert not np.allclose(trained[0].vector(), trained[1].vector())  # dropout was on
    with pytest.raises(ValidationError, match="lora_dropout"):
        Recipe(lora_dropout=1.0)
    recipe = Recipe(lora_dropout=0.1, rslora=True, dora=True, quantize="nf4")
    spec = recipe.lora_spec()
    assert (spec.lora_dropout, spec.rslora, spec.dora, spec.quantize) == (0.1, True, True, "nf4")


# -------------------------------------------------------------------- precision


def linear_dtypes(lm: LoraModel) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    layer = next(m for n, m in lm.model.named_modules() if n.endswith("layers.0.mlp.up_proj"))
    layer.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


def test_bf16_on_cpu_runs_a_step_in_bf16() -> None:
    data = encoded()
    seen = {}
    for precision in ("fp32", "bf16"):
        lm = LoraModel(LLAMA, precision=precision)
        seen[precision] = linear_dtypes(lm)
        loss = LocalTrainer(lm, data, lr=1e-2, batch_size=4, seed=0).train_steps(1)
        assert np.isfinite(loss)
        assert lm.fingerprint == LoraModel(LLAMA).fingerprint
    assert set(seen["fp32"]) == {torch.float32} and set(seen["bf16"]) == {torch.bfloat16}


def test_fp16_off_cuda_is_refused_in_one_line() -> None:
    with pytest.raises(ModelError, match=r"^--precision fp16 needs a CUDA GPU") as err:
        LoraModel(LLAMA, precision="fp16")
    assert "\n" not in str(err.value)
    with pytest.raises(ValidationError, match="precision"):
        Recipe(precision="fp8")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- targets


def tiny_base(config: Any, family: str) -> BaseModel:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    return BaseModel(model, ByteTokenizer(), "lm", f"tiny-{family}", family)


def wrapped(model: nn.Module) -> set[str]:
    """Names of the modules that carry a LoRA adapter."""
    return {n for n, m in model.named_modules() if hasattr(m, "lora_A")}


SMALL = {
    **{"vocab_size": 259, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2},
    **{"pad_token_id": 0, "max_position_embeddings": 64},
}


def test_qwen2_gets_q_and_v_by_default() -> None:
    from transformers import Qwen2Config

    base = tiny_base(Qwen2Config(**SMALL, num_key_value_heads=2, intermediate_size=64), "qwen2")
    assert base.model.config.model_type == "qwen2"
    targets = default_targets("qwen2", base.model)
    assert targets == ("q_proj", "v_proj")
    model = wrap_lora(base, 4, 8, targets, seed=0)
    assert {n.rsplit(".", 1)[-1] for n in wrapped(model)} == {"q_proj", "v_proj"}


@pytest.mark.parametrize(("family", "expected"), [("phi3", ("qkv_proj",)), ("gpt2", ("c_attn",))])
def test_fused_attention_families_have_defaults(family: str, expected: tuple[str, ...]) -> None:
    from transformers import GPT2Config, Phi3Config

    cfg: Any = (
        Phi3Config(**SMALL, intermediate_size=64)
        if family == "phi3"
        else GPT2Config(vocab_size=259, n_embd=32, n_layer=2, n_head=2, n_positions=64)
    )
    base = tiny_base(cfg, family)
    assert base.model.config.model_type == family
    assert default_targets(family) == expected
    assert len(wrapped(wrap_lora(base, 4, 8, expected, seed=0))) == 2  # one per layer


def test_unknown_families_get_targets_from_their_attention_layers() -> None:
    from transformers import GPTNeoXConfig, OPTConfig

    opt = tiny_base(OPTConfig(**SMALL, ffn_dim=64, word_embed_proj_dim=32), "opt")
    assert default_targets("opt", opt.model) == ("q_proj", "v_proj")
    neox = tiny_base(GPTNeoXConfig(**SMALL, intermediate_size=64), "gpt_neox")
    targets = default_targets("gpt_neox", neox.model)
    assert targets == ("attention.dense", "attention.query_key_value")
    names = wrapped(wrap_lora(neox, 4, 8, targets, seed=0))
    assert len(names) == 4 and all(".attention." in n for n in names)  # not the MLP's dense
    plain = nn.Sequential()
    plain.add_module("fc1", nn.Linear(4, 4))
    assert default_targets("mystery", plain) == ("all-linear",)
    with pytest.raises(ModelError, match="pass --targets"):
        default_targets("mystery")


def test_all_linear_wraps_every_linear_but_the_head() -> None:
    assert Recipe(targets="all-linear").targets == ("all-linear",)
    lm = LoraModel(LoraSpec(**{**LLAMA.as_dict(), "targets": ("all-linear",)}))  # type: ignore[arg-type]
    names = wrapped(lm.model)
    leaves = {n.rsplit(".", 1)[-1] for n in names}
    assert leaves == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert len(names) == 2 * 7  # every linear layer of both decoder layers...
    head = [n for n, m in lm.model.named_modules() if n.endswith("lm_head")]
    assert len(head) == 1 and isinstance(dict(lm.model.named_modules())[head[0]], nn.Linear)
    assert head[0] not in names  # ...but the output head
    assert lm.spec.targets == ("all-linear",)
    with pytest.raises(ModelError, match="cannot be combined"):
        LoraModel(LoraSpec(**{**LLAMA.as_dict(), "targets": ("all-linear", "q_proj")}))  # type: ignore[arg-type]


# ------------------------------------------------------------------------ QLoRA


def test_bitsandbytes_config_arguments() -> None:
    nf4 = quantization_kwargs("nf4")
    assert nf4 == {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_compute_dtype": torch.bfloat16,
        "bnb_4bit_use_double_quant": True,
    }
    assert quantization_kwargs("fp4")["bnb_4bit_quant_type"] == "fp4"
    assert quantization_kwargs("int8") == {"load_in_8bit": True}
    assert quantization_kwargs("none") == {}
    with pytest.raises(ModelError):
        quantization_kwargs("int3")


def test_quantize_is_refused_before_any_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    import declora.node.trainer as trainer_module

    def no_load(*_: object, **__: object) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(trainer_module, "load_base", no_load)
    spec = LoraSpec(**{**LLAMA.as_dict(), "model": "some/llm", "quantize": "nf4"})  # type: ignore[arg-type]
    with pytest.raises(ModelError, match=r"^--quantize nf4 needs a CUDA GPU"):
        LoraModel(spec)
    # with CUDA but without the package, the package is named
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ModelError, match="needs the bitsandbytes package"):
        check_runtime("int8", "fp32", "cuda")


def test_quantize_is_part_of_the_fingerprint_identity() -> None:
    assert LoraSpec(**{**LLAMA.as_dict(), "quantize": "fp4"}).as_dict()["quantize"] == "fp4"  # type: ignore[arg-type]
    assert "quantize" not in LLAMA.as_dict()
    ours = recipe_facts(LoraSpec(**{**LLAMA.as_dict(), "quantize": "nf4"}).as_dict(), ())  # type: ignore[arg-type]
    differ = recipe_differences(recipe_facts(LLAMA.as_dict(), ()), ours)
    assert differ == "--quantize is 'none' there, 'nf4' here"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_start_refuses_quantize_on_cpu_in_one_line(tmp_path: Path) -> None:
    cli = Path(sys.executable).with_name("declora-node")
    args = [
        *("start", "--solo", "--quantize", "nf4", "--model", "tiny-llama", "--task", "lm"),
        *("--device", "cpu", "--listen", f"127.0.0.1:{free_port()}"),
        *("--checkpoint-dir", str(tmp_path / "state"), "--data", str(tmp_path / "none.jsonl")),
    ]
    res = subprocess.run(
        [str(cli), *args], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert res.returncode == 2, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --quantize nf4 needs a CUDA GPU (bitsandbytes); this node runs on "
                      "cpu: use --quantize none"]  # fmt: skip
    assert "Traceback" not in res.stderr


def test_the_daemon_places_its_round_on_the_schedule(synthetic_jsonl: Path) -> None:
    from test_daemon_parts import pair

    (da, db), (a, b) = pair(synthetic_jsonl, lr_schedule="cosine", rounds=4, warmup_steps=1)
    assert a.handshaker.recipe["lr_schedule"] == "cosine" and a.handshaker.recipe["rounds"] == "4"
    used = [lrs_used(p.node.trainer) for p in (a, b)]
    for p in (a, b):
        p.progress.round = 2  # as if both had taken a neighbour's state at round 2

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        await asyncio.gather(da.run_round(a, train=True), db.run_round(b, train=True))

    asyncio.run(go())
    plan = a.settings.schedule()
    assert used[0] == used[1] == [0.05 * plan.factor(s) for s in (4, 5)]  # round 3, K = 2
    assert a.progress.round == 3 and a.node.trainer.step == 2  # not the trainer's own count


def test_a_node_mid_group_goes_on_with_its_exchange_number(synthetic_jsonl: Path) -> None:
    """gossip_steps 2: a node put at exchange 3 (a catch-up, a resume) only mixes at
    exchange 4, then trains at exchange 5, on training round 3's place on the schedule."""
    from test_daemon_parts import pair

    recipe = {"lr_schedule": "cosine", "rounds": 4, "warmup_steps": 1, "gossip_steps": 2}
    (da, db), (a, b) = pair(synthetic_jsonl, **recipe)
    used = [lrs_used(p.node.trainer) for p in (a, b)]
    for p in (a, b):
        p.progress.round = 3

    async def go() -> list[int]:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        steps = []
        for _ in range(2):
            await asyncio.gather(da.run_round(a, train=True), db.run_round(b, train=True))
            steps.append(a.node.trainer.step)
        return steps

    assert asyncio.run(go()) == [0, 2]  # exchange 4 only mixed, exchange 5 trained
    plan = a.settings.schedule()
    assert used[0] == used[1] == [0.05 * plan.factor(s) for s in (4, 5)]  # round 3, K = 2
    assert a.progress.round == b.progress.round == 5


def test_a_checkpoint_keeps_the_fp16_loss_scale() -> None:
    """fp16 needs CUDA; the CPU scaler stands in for it: the scale it has learnt (after
    overflows) survives a checkpoint instead of restarting at 65536."""
    data = encoded()
    saved = LocalTrainer(LoraModel(LLAMA), data, lr=1e-2, batch_size=4, seed=0)
    saved.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    saved.train_steps(1)
    saved.scaler.update(new_scale=128.0)
    state = checkpoint.trainer_state(saved)
    fresh = LocalTrainer(LoraModel(LLAMA), data, lr=1e-2, batch_size=4, seed=0)
    fresh.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    checkpoint.restore_trainer(fresh, state, saved.vector())
    assert fresh.scaler.get_scale() == 128.0
    without = {k: v for k, v in state.items() if k != "scaler"}  # a checkpoint from before
    checkpoint.restore_trainer(fresh, without, saved.vector())
    assert fresh.step == saved.step
