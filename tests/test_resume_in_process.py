"""What a resume does with what changed since the checkpoint, on in-process daemons
(an in-memory transport, a checkpoint written by the node's own `Persistence`):
- a resume with another --batch-size or --grad-accumulation (`checkpoint.
  SAMPLER_OPTIONS`) or --codec is accepted, with one warning line for each (the swarm
  does not agree on them: each payload names its codec); a checkpoint written before
  they were recorded is not compared;
- a node resumed into the consensus finish after its neighbours have finished waits
  for them as long as any start does (--startup-timeout), then, when nothing listens
  at their addresses (real sockets on 127.0.0.1), finishes alone, warning, writes its
  final adapter and exits 0; where a neighbour still listens (loading: a reserved
  port, or the loading gate) it refuses to start, as does a node with training left."""

from __future__ import annotations

import asyncio
import copy
import logging
from pathlib import Path

import numpy as np
import pytest
from daemon_helpers import HOST, free_ports
from memory_transport import MemoryNetwork, MemoryTransport
from test_daemon_parts import settings

from declora.node import checkpoint
from declora.node.daemon import Daemon
from declora.node.daemon.gate import LoadingGate
from declora.node.daemon.persistence import Persistence, trained_round
from declora.node.daemon.startup import DialLog, StartupError
from declora.node.daemon.transport import Transport
from declora.node.data import TextDataset
from declora.node.settings import NodeSettings
from declora.node.trainer import LocalTrainer, LoraModel


def _stopped_at(data: Path, round_: int, **extra: object) -> NodeSettings:
    """Settings of a node of --rounds 2 (the options `extra`) whose neighbour is gone
    (a port nobody serves), with a checkpoint at `round_` in its folder, as a SIGTERM
    there leaves it; ready to resume, waiting 0.5 s for neighbours."""
    [dead, mine] = free_ports(2)
    s = settings("a", data, 0, [f"{HOST}:{dead}"], rounds=2, consensus_rounds=50, **extra)
    s = s.model_copy(update={"listen": f"{HOST}:{mine}", "advertise": f"{HOST}:{mine}"})
    parts = Daemon(s, MemoryTransport(MemoryNetwork(), s, None)).build()
    parts.progress.round = parts.progress.seq = round_
    store = Persistence(s.state_dir)
    store.attach(parts)
    assert store.save_checkpoint()
    return s.model_copy(update={"resume": True, "startup_timeout": 0.5})


def _run(s: NodeSettings, **changes: object) -> int:
    """Run a daemon of `s` with `changes` (options of this start) to its end."""
    s = NodeSettings(**{**s.model_dump(), **changes})
    return asyncio.run(Daemon(s, MemoryTransport(MemoryNetwork(), s, None)).run())


def _warnings(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if words in r.getMessage()]


# ------------------------------------------------------------ options a resume changes


def test_a_resume_with_another_batch_size_says_so(
    synthetic_jsonl: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a resume with another --batch-size trained on with it silently. Now one
    warning line names the option, this start's value and the checkpoint's run's."""
    s = _stopped_at(synthetic_jsonl, 1, batch_size=16)
    with caplog.at_level(logging.WARNING):
        assert _run(s, batch_size=8, min_peers=0) == 0
    assert _warnings(caplog, "resuming with") == [
        "resuming with --batch-size 8; the checkpoint's run used 16"
    ]
    assert trained_round(s.state_dir / "ckpt-00000002") == 2  # it trained on


def test_the_sampler_options_are_recorded_and_compared(
    tiny_lm: LoraModel, synthetic: TextDataset, caplog: pytest.LogCaptureFixture
) -> None:
    """The trainer state records the step's size; a resume warns for each that differs
    and trains with this start's; an older state without the record is not compared."""
    rows = tiny_lm.encode(synthetic.subset(np.arange(64)))
    saved = LocalTrainer(tiny_lm, rows, 0.05, 16, seed=0)
    saved.train_steps(1)
    state, vec = checkpoint.trainer_state(saved), saved.vector()
    assert (state["batch_size"], state["grad_accumulation"]) == (16, 1)
    fresh = LocalTrainer(tiny_lm, rows, 0.05, 4, seed=0, grad_accumulation=2)
    with caplog.at_level(logging.WARNING, logger="declora.node.checkpoint"):
        checkpoint.restore_trainer(fresh, copy.deepcopy(state), vec)
    assert _warnings(caplog, "resuming with") == [
        "resuming with --batch-size 4; the checkpoint's run used 16",
        "resuming with --grad-accumulation 2; the checkpoint's run used 1",
    ]
    fresh.train_steps(1)
    assert fresh.cursor == 16 + 8  # this start's 4 x 2 rows a step
    caplog.clear()
    older = {k: v for k, v in state.items() if k not in ("batch_size", "grad_accumulation")}
    with caplog.at_level(logging.WARNING, logger="declora.node.checkpoint"):
        checkpoint.restore_trainer(fresh, copy.deepcopy(older), vec)
        checkpoint.restore_trainer(saved, copy.deepcopy(state), vec)  # the same options
    assert _warnings(caplog, "resuming with") == []


def test_a_checkpoint_records_the_codec(tiny_lm: LoraModel, tmp_path: Path) -> None:
    """state.pt records the run's codec; one written before reads as unknown (None),
    which `option_change` does not compare."""
    vec = np.concatenate([t.reshape(-1).numpy() for t in tiny_lm.initial_tensors()])
    trainer = {"optimizer": {}, "step": 0, "epoch": 1, "cursor": 0, "order": np.arange(4)}
    for folder, codec in (("new", "q8"), ("old", None)):
        state = checkpoint.NodeState(1, 1, vec, vec.copy(), trainer, tiny_lm.fingerprint)
        state.codec = codec
        checkpoint.save(tmp_path / folder, tiny_lm, state, {})
        assert checkpoint.load(tmp_path / folder, tiny_lm).codec == codec
    assert checkpoint.option_change("--codec", "q8", "fp32") == (
        "resuming with --codec fp32; the checkpoint's run used q8"
    )
    assert checkpoint.option_change("--codec", None, "fp32") == ""
    assert checkpoint.option_change("--codec", "q8", "q8") == ""


def test_a_resume_with_another_codec_says_so(
    synthetic_jsonl: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a resume with another --codec sent with it silently. Now one warning
    line names it (a --codec fp16 that changes the default weighting, which joins the
    fingerprint, is refused as before)."""
    s = _stopped_at(synthetic_jsonl, 1, codec="q8")
    with caplog.at_level(logging.WARNING):
        assert _run(s, codec="bf16", min_peers=0) == 0
    assert _warnings(caplog, "resuming with") == [
        "resuming with --codec bf16; the checkpoint's run used q8"
    ]


# ------------------------------------------------------------ the finish, alone


async def _run_beside(s: NodeSettings, loading: str) -> int:
    """Run a daemon of `s` over real sockets to its end, its neighbour's address held
    meanwhile as a node still loading holds it: "" nothing listens, "port" a plain
    listening socket (`Transport.reserve`), "gate" gRPC answering "still loading"."""
    [neighbour] = s.peers
    held = Transport(s.model_copy(update={"listen": neighbour}), None)
    if loading == "port":
        held.reserve()
    elif loading == "gate":
        await held.start(LoadingGate(), 4)
    try:
        return await Daemon(s).run()
    finally:
        await held.stop(grace=0)


def test_a_node_resumed_into_the_finish_ends_it_alone(
    synthetic_jsonl: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: `StartupError` (exit 1) "0 of 1 wanted neighbours", nothing written,
    and the same at every restart under a restart policy. Now, when its neighbour's
    port refuses connections (it finished and exited), one warning, the final
    adapter, exit 0; the checkpoint stays the one resumed (nothing moved)."""
    s = _stopped_at(synthetic_jsonl, 4)
    assert trained_round(s.state_dir / "ckpt-00000004") == 2  # within the finish
    with caplog.at_level(logging.WARNING):
        assert asyncio.run(_run_beside(s, "")) == 0
    [warning] = _warnings(caplog, "finishing")
    assert warning == (
        "0 of 1 wanted neighbours after 0.5 s (--startup-timeout), nothing listening at "
        "the others' addresses (finished and left) and no training round left (round 4, "
        "--rounds 2): finishing alone"
    )
    assert (s.state_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert checkpoint.latest(s.state_dir) == s.state_dir / "ckpt-00000004"


@pytest.mark.parametrize(
    ("loading", "why"),
    [("port", "timed out: no answer to the handshake"), ("gate", "still loading its model")],
)
def test_a_node_resumed_into_the_finish_waits_for_a_loading_neighbour(
    synthetic_jsonl: Path, loading: str, why: str
) -> None:
    """Before: a neighbour slower to load than --startup-timeout (a swarm restarted
    together) left this node to finish alone, unconverged, with exit 0, so a restart
    policy did not retry. Now a neighbour address that accepts connections (a loading
    node's reserved port, or its loading gate) keeps the exit 1 of any start."""
    s = _stopped_at(synthetic_jsonl, 4)
    with pytest.raises(StartupError) as failure:
        asyncio.run(_run_beside(s, loading))
    assert f"{s.peers[0]}: {why}" in failure.value.message
    assert failure.value.hint.startswith("no training round is left: this node finishes")
    assert not (s.state_dir / "adapter").exists()


def test_no_address_to_dial_shows_no_neighbour_gone() -> None:
    """mDNS that found nobody: no dial says the neighbours left (a loading node is not
    advertised yet), so the finish is not ended alone; one refused address of two is
    not enough either."""
    dials = DialLog()
    assert not dials.all_gone([])
    dials.record("a:1", "connection refused: nothing listens on that port")
    dials.record("b:1", "timed out: no answer to the handshake")
    assert dials.all_gone(["a:1"])
    assert not dials.all_gone(["a:1", "b:1"])
    assert not dials.all_gone(["a:1", "c:1"])  # never dialled
    # a compose service that finished: Docker's DNS no longer resolves its name
    dials.record("node3:7070", "DNS lookup of node3 failed")
    assert dials.all_gone(["a:1", "node3:7070"])


def test_a_node_with_training_left_still_waits_for_its_neighbours(
    synthetic_jsonl: Path,
) -> None:
    s = _stopped_at(synthetic_jsonl, 1)
    with pytest.raises(StartupError, match="0 of 1 wanted neighbours"):
        _run(s)
    assert not (s.state_dir / "adapter").exists()
