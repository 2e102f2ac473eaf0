"""What a resume keeps and what it refuses (node/checkpoint.py, daemon/persistence.py,
daemon/startup.py, run_folder.py): this start's optimizer options over the
checkpoint's, the training share a checkpoint was written on, an earlier run's files
without a complete checkpoint, a checkpoint that lost its LATEST (resumed, not
refused), and a checkpoint trained past --rounds (one of the consensus finish is
resumed). Each refusal is one `error:` line, exit 2, and leaves the checkpoint folder
as it was."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_SPEC
from daemon_helpers import CLI, HOST, Cluster, free_ports, train_args

from declora.node import checkpoint, run_folder
from declora.node.daemon.persistence import TRAINED, check_rounds, trained_round
from declora.node.daemon.startup import CONFIG, UserError, as_user_error, check_config, earlier_run
from declora.node.data import TextDataset
from declora.node.settings import NodeSettings
from declora.node.trainer import LocalTrainer, LoraModel

START = 150.0  # seconds for a node to import torch and build tiny-bert (a loaded machine)


# ------------------------------------------------------------ optimizer options


@pytest.fixture(autouse=True)
def _no_folder_left_held() -> Iterator[None]:
    """Each test lets go of the folders its `check_config` calls locked: a lock held
    until pytest exits refuses a later test, or a node started on that folder."""
    yield
    left = list(run_folder._HELD)
    for folder in left:
        run_folder.release(folder)
    assert not left, f"still held after the test: {left}"


def _trained_state(lm: LoraModel, data: TextDataset) -> tuple[dict[str, object], np.ndarray]:
    """A checkpoint's trainer state after 3 steps at lr 0.05, no weight decay."""
    trainer = LocalTrainer(lm, lm.encode(data.subset(np.arange(64))), 0.05, 16, seed=0)
    trainer.train_steps(3)
    return checkpoint.trainer_state(trainer), trainer.vector()


def _resumed(
    lm: LoraModel, data: TextDataset, state: dict[str, object], vec: np.ndarray, **options: float
) -> LocalTrainer:
    rows = lm.encode(data.subset(np.arange(64)))
    trainer = LocalTrainer(lm, rows, batch_size=16, seed=0, **options)
    checkpoint.restore_trainer(trainer, copy.deepcopy(state), vec)  # as if read from disk
    return trainer


def test_a_resume_trains_with_this_starts_lr_and_weight_decay(
    tiny_lm: LoraModel, synthetic: TextDataset
) -> None:
    """`load_state_dict` brought back the checkpoint's lr and weight decay: a resume
    with other ones trained silently with the old. Now the options are this start's,
    the moments the checkpoint's: a resume with new options is exactly the old resume
    with its param_groups changed by hand, and trains to other weights."""
    state, vec = _trained_state(tiny_lm, synthetic)
    saved = state["optimizer"]
    assert isinstance(saved, dict)
    new = _resumed(tiny_lm, synthetic, state, vec, lr=0.01, weight_decay=0.3)
    [group] = new.optimizer.param_groups
    assert group["lr"] == 0.01 and group["weight_decay"] == 0.3
    for p, kept in zip(group["params"], saved["state"].values(), strict=True):
        torch.testing.assert_close(new.optimizer.state[p]["exp_avg"], kept["exp_avg"])
    new.train_steps(2)
    old = _resumed(tiny_lm, synthetic, state, vec, lr=0.05, weight_decay=0.0)
    assert old.optimizer.param_groups[0]["lr"] == 0.05
    old.train_steps(2)
    assert not np.allclose(new.vector(), old.vector())
    by_hand = _resumed(tiny_lm, synthetic, state, vec, lr=0.05, weight_decay=0.0)
    by_hand.optimizer.param_groups[0].update(lr=0.01, weight_decay=0.3)
    by_hand.train_steps(2)
    np.testing.assert_array_equal(new.vector(), by_hand.vector())


# ------------------------------------------------------------ the training share


def _share(
    lm: LoraModel, dataset: TextDataset, rows: np.ndarray, /, **named: object
) -> dict[str, object]:
    base = {"data": "syn.jsonl", "partition": "0/1", "partition_scheme": "iid"}
    return checkpoint.training_share(lm.encode(dataset.subset(rows)), **{**base, **named})


def test_a_checkpoint_refuses_another_training_share(
    tiny_lm: LoraModel, synthetic: TextDataset, tmp_path: Path
) -> None:
    """The share is saved with the checkpoint; resuming on another --partition, a
    smaller or larger file, or a file with other contents is refused naming what
    differs; the same examples under another file name are accepted."""
    vec = np.concatenate([t.reshape(-1).numpy() for t in tiny_lm.initial_tensors()])
    order = np.arange(100)
    trainer_state = {"optimizer": {}, "step": 0, "epoch": 1, "cursor": 0, "order": order}
    there = _share(tiny_lm, synthetic, np.arange(100))
    state = checkpoint.NodeState(2, 2, vec, vec.copy(), trainer_state, tiny_lm.fingerprint)
    state.share = there
    checkpoint.save(tmp_path, tiny_lm, state, {})
    loaded = checkpoint.load(tmp_path, tiny_lm)
    assert loaded.share == there
    path = tmp_path / "ckpt-00000002"

    def refusal(here: dict[str, object]) -> str:
        with pytest.raises(checkpoint.CheckpointMismatch) as info:
            checkpoint.check_share(path, loaded.share, here, order)
        mistake = as_user_error(info.value)
        assert mistake is not None and mistake.code == CONFIG and "--partition" in mistake.hint
        return str(info.value)

    half = refusal(_share(tiny_lm, synthetic, np.arange(0, 100, 2), partition="0/2"))
    assert "another training share" in half
    assert "partition: '0/1' there, '0/2' here" in half and "examples: 100 there, 50 here" in half
    larger = refusal(_share(tiny_lm, synthetic, np.arange(150), data="big.jsonl"))
    assert "data: 'syn.jsonl' there, 'big.jsonl' here" in larger
    other = refusal(_share(tiny_lm, synthetic, np.arange(100, 200)))
    assert "contents of its 100 training examples differ" in other
    renamed = _share(tiny_lm, synthetic, np.arange(100), data="moved/syn.jsonl")
    assert checkpoint.check_share(path, loaded.share, renamed, order) is True


def test_a_checkpoint_without_a_share_record_is_checked_by_its_order(
    tiny_lm: LoraModel, synthetic: TextDataset
) -> None:
    """Checkpoints written before the record: accepted (False: not checked) unless the
    sampler's order, a permutation of the share's rows, has another length (what made
    the resumed node crash with an IndexError)."""
    here = _share(tiny_lm, synthetic, np.arange(50))
    where = Path("ckpt-00000002")
    assert checkpoint.check_share(where, None, here, np.arange(50)) is False
    assert checkpoint.check_share(where, None, here, np.zeros(0, np.int64)) is False
    with pytest.raises(
        checkpoint.CheckpointMismatch, match="share of 100 examples, this node has 50"
    ):
        checkpoint.check_share(where, None, here, np.arange(100))


# ------------------------------------------------------------ an earlier run's files


def _settings(folder: Path, **more: object) -> NodeSettings:
    return NodeSettings(solo=True, checkpoint_dir=folder, data="syn.jsonl", **more)


def _listing(folder: Path) -> list[tuple[str, str]]:
    return sorted(
        (
            str(p.relative_to(folder)),
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "",
        )
        for p in folder.rglob("*")
    )


@pytest.mark.parametrize("held", ["rounds.jsonl", "adapter", "ckpt-00000004"])
def test_a_folder_with_an_earlier_runs_files_but_no_checkpoint_is_not_empty(
    tmp_path: Path, held: str
) -> None:
    """Before: only LATEST counted, so a fresh start replaced a run that lost its
    LATEST. Now, without a complete checkpoint (a ckpt-* holding state.pt), a fresh
    start and --resume are refused (exit 2) naming the files, which stay; a
    rounds.jsonl alone refuses only --resume (a fresh start appends to it)."""
    folder = tmp_path / "state"
    folder.mkdir()
    assert earlier_run(folder) == [] and earlier_run(tmp_path / "none") == []
    if held == "rounds.jsonl":
        (folder / held).write_text('{"round": 1}\n')
    else:  # an adapter, or a checkpoint folder without its state.pt
        (folder / held / "adapter").mkdir(parents=True)
        (folder / held / "adapter" / "weights").write_bytes(b"mine")
    before = _listing(folder)
    assert earlier_run(folder) == [held] and run_folder.resume_point(folder) is None
    try:
        for resume in (False, True, "auto"):  # auto: a restart policy's start
            settings = _settings(folder, resume=resume)
            if held == "rounds.jsonl" and not settings.resume:
                # a history alone (a crash before the first checkpoint): a fresh start
                # appends to it, so a restart policy can start over
                check_config(settings)
                assert _listing(folder) == before
                continue
            with pytest.raises(UserError) as info:
                check_config(settings)
            err = info.value
            assert err.code == CONFIG, err.message
            assert (
                f"{folder} (--checkpoint-dir) holds an earlier run's files ({held})" in err.message
            )
            assert "but no complete checkpoint" in err.message
            assert (
                "cannot be resumed" if settings.resume else "a fresh start would replace them"
            ) in err.message
            assert "another --checkpoint-dir" in err.hint
            assert _listing(folder) == before
    finally:
        run_folder.release(folder)


def test_a_checkpoint_without_latest_is_resumed_not_replaced(
    tiny_lm: LoraModel, tmp_path: Path
) -> None:
    """A stop between renaming ckpt-N into place and writing LATEST (the first
    checkpoint): before, auto began afresh and check_config refused that (exit 2) at
    every restart. Now --resume and auto resume from the newest complete checkpoint
    (`checkpoint.load` picks it), a plain start is refused naming it, and a LATEST
    naming a checkpoint still decides."""
    folder = tmp_path / "state"
    vec = np.concatenate([t.reshape(-1).numpy() for t in tiny_lm.initial_tensors()])
    trainer_state = {"optimizer": {}, "step": 0, "epoch": 1, "cursor": 0, "order": np.arange(4)}
    for r in (3, 4):
        state = checkpoint.NodeState(r, r, vec, vec.copy(), trainer_state, tiny_lm.fingerprint)
        checkpoint.save(folder, tiny_lm, state, {})
    (folder / "ckpt-00000009").mkdir()  # a folder without its state.pt: not complete
    (folder / "ckpt-00000009" / "adapter").mkdir()
    (folder / "LATEST").unlink()
    before = _listing(folder)
    assert run_folder.resume_point(folder) == folder / "ckpt-00000004"
    assert checkpoint.latest(folder) == folder / "ckpt-00000004"
    assert checkpoint.load(folder, tiny_lm).round == 4
    try:
        for resume in (True, "auto"):
            settings = _settings(folder, resume=resume)
            assert settings.resume is True
            check_config(settings)
        with pytest.raises(UserError) as info:
            check_config(_settings(folder))
    finally:
        run_folder.release(folder)
    err = info.value
    assert err.code == CONFIG
    assert "holds an earlier run's checkpoints and adapter" in err.message
    assert "a fresh start would replace them" in err.message
    assert "--resume" in err.hint and "(from ckpt-00000004)" in err.hint
    assert _listing(folder) == before
    (folder / "LATEST").write_text("ckpt-00000003\n")  # LATEST decides when present
    assert checkpoint.load(folder, tiny_lm).round == 3
    (folder / "LATEST").write_text("ckpt-00000009\n")  # ...even naming an incomplete one
    with pytest.raises(checkpoint.CheckpointError, match="names 'ckpt-00000009'"):
        checkpoint.load(folder, tiny_lm)


# ------------------------------------------------------------ past --rounds


@pytest.mark.parametrize(
    ("rounds", "per_round", "at", "trained", "refused"),
    [
        (2, 1, 2, 2, False),  # the last training round
        (2, 1, 5, 2, False),  # a consensus-finish checkpoint: resumes into the finish
        (2, 1, 40, 2, False),  # ... even past --consensus-rounds (restarts in the finish)
        (2, 1, 3, 3, True),  # trained past --rounds: the user lowered it
        (2, 1, 9, 4, True),  # the finish of a run with more --rounds
        (2, 2, 6, 6, True),  # gossip steps: exchanges
        (2, 2, 7, 4, False),
        (0, 1, 99, 99, False),  # --rounds 0: until stopped
        (2, 1, 5, None, False),  # written before trained_round: up to the planned end
        (2, 1, 8, None, True),  # ... 2 + --consensus-rounds 5 = 7
    ],
)
def test_only_a_checkpoint_trained_past_rounds_is_refused(
    tmp_path: Path, rounds: int, per_round: int, at: int, trained: int | None, refused: bool
) -> None:
    """Before: any checkpoint past --rounds x G was refused, so one the consensus
    finish wrote (a stop during it, or a finished run) made a restart exit 2, and a
    restart policy loop. Now only one trained past it is (or, for checkpoints that do
    not record how far they trained, one past the planned end)."""
    settings = _settings(tmp_path, rounds=rounds, gossip_steps=per_round, consensus_rounds=5)
    assert settings.exchanges_per_round == per_round
    path = tmp_path / f"ckpt-{at:08d}"
    if not refused:
        check_rounds(path, settings, at, trained)
        return
    with pytest.raises(checkpoint.CheckpointMismatch) as info:
        check_rounds(path, settings, at, trained)
    mistake = as_user_error(info.value)
    assert mistake is not None and mistake.code == CONFIG
    assert f"past --rounds {rounds}: resuming would train nothing" in mistake.message
    assert "--rounds" in mistake.hint and "or more to train on" in mistake.hint


def test_a_checkpoint_records_how_far_it_trained(tiny_lm: LoraModel, tmp_path: Path) -> None:
    """`trained_round` reads what `Persistence.save_checkpoint` records in the
    checkpoint's declora.json; None for a checkpoint written before."""
    vec = np.concatenate([t.reshape(-1).numpy() for t in tiny_lm.initial_tensors()])
    trainer_state = {"optimizer": {}, "step": 0, "epoch": 1, "cursor": 0, "order": np.arange(4)}
    state = checkpoint.NodeState(6, 6, vec, vec.copy(), trainer_state, tiny_lm.fingerprint)
    old = checkpoint.save(tmp_path / "old", tiny_lm, state, {})
    new = checkpoint.save(tmp_path / "new", tiny_lm, state, {TRAINED: 4})
    assert trained_round(old) is None and trained_round(new) == 4
    assert trained_round(tmp_path / "none") is None


# ------------------------------------------------------------ real nodes


def _node(
    data: Path, folder: Path, *more: str, **env_more: str
) -> subprocess.CompletedProcess[str]:
    [port] = free_ports(1)
    args = [*CLI, "start", "--solo", *train_args(data), "--listen", f"{HOST}:{port}"]
    args += ["--checkpoint-dir", str(folder), "--eval-every", "0", *more]
    env = {**os.environ, "COLUMNS": "80", **env_more}
    return subprocess.run(args, capture_output=True, text=True, timeout=START, env=env)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, synthetic_jsonl: Path) -> Path:
    """A solo run of 2 rounds on the whole of `synthetic_jsonl`, checkpoint each round."""
    folder = tmp_path_factory.mktemp("resume") / "state"
    res = _node(
        synthetic_jsonl, folder, "--rounds", "2", "--checkpoint-every", "1", "--local-steps", "2"
    )
    assert res.returncode == 0, res.stderr
    assert (folder / "LATEST").read_text().strip() == "ckpt-00000002"
    assert trained_round(folder / "ckpt-00000002") == 2  # recorded by the node
    return folder


@pytest.mark.integration
@pytest.mark.timeout(400)
@pytest.mark.parametrize(
    ("more", "words"),
    [
        (("--partition", "0/2", "--rounds", "4"), "partition: '0/1' there, '0/2' here"),
        (("--rounds", "1"), "is at round 2, past --rounds 1: resuming would train nothing"),
    ],
    ids=["another partition", "past --rounds"],
)
@pytest.mark.slow  # ~25 s of processes; make test-slow
def test_a_refused_resume_writes_nothing(
    finished_run: Path, synthetic_jsonl: Path, more: tuple[str, ...], words: str
) -> None:
    """Before: --partition 0/2 crashed with an IndexError traceback after writing a
    final adapter; --rounds 1 exited 0 having trained nothing. Now each is one error
    line, exit 2, and the folder is as it was."""
    before = _listing(finished_run)
    res = _node(synthetic_jsonl, finished_run, "--resume", "--local-steps", "2", *more)
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and words in lines[0], res.stderr
    assert "hint:" in res.stderr and "Traceback" not in res.stderr
    assert "final adapter written" not in res.stderr
    assert _listing(finished_run) == before
    json.loads((finished_run / "rounds.jsonl").read_text().splitlines()[-1])


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_auto_resumes_a_checkpoint_that_lost_its_latest(
    finished_run: Path, synthetic_jsonl: Path, tmp_path: Path
) -> None:
    """A restart policy's start (DECLORA_RESUME=auto) in a folder whose LATEST is gone
    (a stop between the checkpoint's rename and LATEST's): before, exit 2 at every
    restart. Now it resumes from the newest complete checkpoint, warning, and trains on."""
    folder = tmp_path / "state"
    shutil.copytree(finished_run, folder)
    (folder / "LATEST").unlink()
    more = ("--rounds", "3", "--local-steps", "2", "--checkpoint-every", "1")
    res = _node(synthetic_jsonl, folder, *more, DECLORA_RESUME="auto")
    assert res.returncode == 0, res.stderr
    assert "holds no LATEST" in res.stderr and "ckpt-00000002" in res.stderr, res.stderr
    assert f"resumed from {folder / 'ckpt-00000002'} at round 2" in res.stderr, res.stderr
    assert (folder / "LATEST").read_text().strip() == "ckpt-00000003"
    assert trained_round(folder / "ckpt-00000003") == 3


@pytest.mark.integration
@pytest.mark.timeout(400)
@pytest.mark.slow  # ~30 s of processes; make test-slow
def test_a_stop_in_the_consensus_finish_resumes_into_it(cluster: Cluster) -> None:
    """A SIGTERM during the consensus finish checkpoints a round past --rounds x G
    (gossip rounds advance the round). Before: the restart (DECLORA_RESUME=auto, as
    docker-compose.yml) was refused, exit 2 at every restart. Now it resumes into the
    finish and ends it (exit 0, final adapter); the checkpoint records how far it
    trained."""
    # a path of 3 (Metropolis weights 1/3: no exact consensus) finishing for long
    finish = ["--rounds", "1", "--consensus-rounds", "1000000", "--consensus-tol", "1e-30"]
    nodes = cluster.static(3, [(0, 1), (1, 2)], [*finish, "--eval-every", "0"])
    for node in nodes:
        node.start()
    first = nodes[0]
    cluster.wait_until("a consensus round", lambda: "round 3 done" in first.log(), START, nodes)
    for node in nodes:
        node.signal(signal.SIGTERM)
    assert cluster.wait_exit(nodes, START) == [0, 0, 0], cluster.report()
    path = checkpoint.latest(first.ckpt)
    assert path is not None and int(path.name.removeprefix("ckpt-")) >= 3, cluster.report()
    assert trained_round(path) == 1
    first.start(["--min-peers", "0"], env={"DECLORA_RESUME": "auto"})
    assert cluster.wait_exit([first], START) == [0], cluster.report()
    assert f"resumed from {path}" in first.log() and "past --rounds" not in first.log()
    assert "final adapter written" in first.log(), cluster.report()


# ------------------------------------------------------------ a damaged checkpoint


def test_a_damaged_checkpoint_gives_way_to_the_newest_intact_one(
    tiny_lm: LoraModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a truncated state.pt in the checkpoint LATEST names made --resume exit 1
    with "begin afresh", though an intact older checkpoint was there. Now the newest
    intact one is read, with a warning naming both; with none intact the refusal is
    the folder's (exit 2)."""
    vec = np.concatenate([t.reshape(-1).numpy() for t in tiny_lm.initial_tensors()])
    trainer_state = {"optimizer": {}, "step": 0, "epoch": 1, "cursor": 0, "order": np.arange(4)}
    for r in (1, 2, 3):
        state = checkpoint.NodeState(r, r, vec, vec.copy(), trainer_state, tiny_lm.fingerprint)
        checkpoint.save(tmp_path, tiny_lm, state, {})
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == ["ckpt-00000002", "ckpt-00000003"]
    damaged = tmp_path / "ckpt-00000003" / "state.pt"
    damaged.write_bytes(damaged.read_bytes()[:100])
    with caplog.at_level("WARNING", logger="declora.node.checkpoint"):
        loaded = checkpoint.load(tmp_path, tiny_lm)
    assert (loaded.round, loaded.path) == (2, tmp_path / "ckpt-00000002")
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"{damaged} cannot be read" in warning, warning
    assert f"resuming from the newest intact checkpoint, {loaded.path} (round 2)" in warning
    assert (tmp_path / "LATEST").read_text().strip() == "ckpt-00000003"  # nothing changed
    other = tmp_path / "ckpt-00000002" / "state.pt"
    other.write_bytes(b"")
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.load(tmp_path, tiny_lm)
    assert f"{damaged} cannot be read" in str(info.value)
    mistake = as_user_error(info.value)
    assert mistake is not None and mistake.code == CONFIG


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_resume_past_a_damaged_latest_trains_on_from_the_intact_one(
    finished_run: Path, synthetic_jsonl: Path, tmp_path: Path
) -> None:
    """The same through `start --resume`: it resumes from ckpt-1, warning, trains on,
    and points LATEST at its own new checkpoint."""
    folder = tmp_path / "state"
    shutil.copytree(finished_run, folder)
    (folder / "ckpt-00000002" / "state.pt").write_bytes(b"PK\x03\x04")
    more = ("--rounds", "3", "--local-steps", "2", "--checkpoint-every", "1")
    res = _node(synthetic_jsonl, folder, "--resume", *more)
    assert res.returncode == 0, res.stderr
    assert "resuming from the newest intact checkpoint" in res.stderr, res.stderr
    assert f"resumed from {folder / 'ckpt-00000001'} at round 1" in res.stderr, res.stderr
    assert (folder / "LATEST").read_text().strip() == "ckpt-00000003"
    checkpoint.read_state(folder / "ckpt-00000002")  # written anew at round 2


# ------------------------------------------------------------ labels recorded as decimals


def test_a_checkpoint_with_decimal_labels_resumes_as_integers(tmp_path: Path) -> None:
    """Labels were read as floats ("2.0") before they were read in integer form ("2"):
    such a checkpoint's fingerprint covers "2.0", today's node has "2", and its resume
    was refused naming the labels. It resumes (the same classes in the same order);
    labels in another order are still refused, naming them."""
    old = LoraModel(TINY_SPEC, label_names=("0.0", "1.0", "2.0"))
    vec = np.concatenate([t.reshape(-1).numpy() for t in old.initial_tensors()])
    trainer_state = {"optimizer": {}, "step": 0, "epoch": 1, "cursor": 0, "order": np.arange(4)}
    state = checkpoint.NodeState(2, 2, vec, vec.copy(), trainer_state, old.fingerprint)
    checkpoint.save(tmp_path, old, state, {})
    now = LoraModel(TINY_SPEC, label_names=("0", "1", "2"))
    assert now.fingerprint != old.fingerprint
    assert checkpoint.load(tmp_path, now).round == 2
    other = LoraModel(TINY_SPEC, label_names=("0", "2", "1"))  # other ids: not the same head
    with pytest.raises(checkpoint.CheckpointMismatch, match=r"labels: 3 \['0.0', '1.0', '2.0'\]"):
        checkpoint.load(tmp_path, other)
