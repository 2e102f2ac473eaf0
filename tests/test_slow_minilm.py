"""The real thing, briefly: MiniLM + BBC News, a 4-node Dec-LoRA run and a PEFT round trip.

About 190 CPU-seconds (measured on a 2-core machine under heavy load, so about a minute
and a half of wall time when both cores are free); most of it is the 60 local training
steps and the 10 evaluations of 100 articles. Marked `slow`; it runs by default, as in CI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_RING

from declora.node.models import load_base
from declora.node.simulator import SimConfig, SimResult, Simulation

# The timeout only guards against a hang: a loaded CI runner may need several times the
# free-machine figure above, and the project default (300 s) would cut it off.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CONFIG = SimConfig.model_validate(
    {
        **SMALL_RING,
        "lr": 4e-3,
        "max_eval": 100,
        "eval_every": 3,  # the averaged model is evaluated after the last round only
        # Dec-LoRA as published (the figures below were measured so)
        "gradient_tracking": False,
        "gossip_steps": 1,
        "swarm_size": 1,
        "lr_schedule": "constant",
        "validation_fraction": 0.0,
    }
)
# Measured with this config: averaged-model accuracy 0.90 on the 100 test articles (at lr
# 2e-3 it was 0.89 before the corpus was deduplicated and 0.59 after: 15 steps a node are
# few, so the batch order matters; 4e-3 learns within them); 0.2 is chance on 5 classes.
# The bar sits well below the measurement (room for other CPUs and library versions) and
# far above chance.
ACCURACY_BAR = 0.7


@pytest.fixture(scope="module")
def run() -> tuple[Simulation, SimResult]:
    sim = Simulation(CONFIG)
    return sim, sim.run()


def test_minilm_dec_lora_learns_bbc_news(run: tuple[Simulation, SimResult]) -> None:
    sim, res = run
    assert sim.lm.spec.model == "minilm" and sim.lm.spec.targets == ("query", "value")
    assert len(sim.train_data) == 1654 and len(sim.test_data) == CONFIG.max_eval  # deduped
    assert [r.phase for r in res.rounds[:3]] == ["train"] * 3
    losses = [r.mean_loss for r in res.rounds if r.mean_loss is not None]
    assert len(losses) == 3 and losses[2] < losses[0]
    final = res.final
    print(
        f"\nMiniLM Dec-LoRA: average acc {final['average']['accuracy']:.3f}, "
        f"macro-F1 {final['average']['macro_f1']:.3f}, nodes after finish "
        f"{final['after_consensus']}, consensus rounds {final['consensus_rounds']}"
    )
    assert final["average"]["accuracy"] >= ACCURACY_BAR
    assert final["average"]["macro_f1"] >= ACCURACY_BAR - 0.1
    # after the consensus finish every node holds (nearly) the averaged model
    assert final["consensus_max"] < CONFIG.consensus_tol
    assert final["after_consensus"]["worst_accuracy"] >= ACCURACY_BAR
    numel = sim.lm.schema.numel
    assert res.rounds[0].bytes_sent_per_node == 2 * (4 * numel + 32)


def test_minilm_adapter_round_trips_through_peft(
    run: tuple[Simulation, SimResult], tmp_path: Path
) -> None:
    from peft import PeftModel

    sim, _ = run
    vec = sim.average()
    out = tmp_path / "adapter"
    sim.lm.save_adapter(vec, out, {"source": "test"})
    assert json.loads((out / "declora.json").read_text())["fingerprint"] == sim.lm.fingerprint
    batch = sim.test_enc.take(np.arange(8))
    with sim.lm.using(vec), torch.no_grad():
        sim.lm.model.eval()
        ours = sim.lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    base = load_base("minilm", "cls", sim.train_data.num_labels, CONFIG.seed).model
    peft_model = PeftModel.from_pretrained(base, str(out)).eval()
    with torch.no_grad():
        theirs = peft_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    assert (ours.argmax(-1) == batch.labels).float().mean() > 0.2
