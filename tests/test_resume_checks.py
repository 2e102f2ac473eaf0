"""What a resume keeps and what it refuses (node/checkpoint.py, daemon/persistence.py,
daemon/startup.py): this start's optimizer options over the checkpoint's, the
training share a checkpoint was written on, an earlier run's files without LATEST,
and a checkpoint already past --rounds. Each refusal is one `error:` line, exit 2,
and leaves the checkpoint folder as it was."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from daemon_helpers import CLI, HOST, free_ports, train_args

from declora.node import checkpoint
from declora.node.daemon.startup import CONFIG, UserError, as_user_error, check_config, earlier_run
from declora.node.data import TextDataset
from declora.node.settings import NodeSettings
from declora.node.trainer import LocalTrainer, LoraModel

START = 150.0  # seconds for a node to import torch and build tiny-bert (a loaded machine)


# ------------------------------------------------------------ optimizer options


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
def test_a_folder_with_an_earlier_runs_files_but_no_latest_is_not_empty(
    tmp_path: Path, held: str
) -> None:
    """Before: only LATEST counted, so a fresh start replaced a run that lost its
    LATEST. Now a fresh start and --resume are refused (exit 2) naming the files, which
    stay; a rounds.jsonl alone refuses only --resume (a fresh start appends to it)."""
    folder = tmp_path / "state"
    folder.mkdir()
    assert earlier_run(folder) == [] and earlier_run(tmp_path / "none") == []
    if held == "rounds.jsonl":
        (folder / held).write_text('{"round": 1}\n')
    else:
        (folder / held).mkdir()
        (folder / held / "state.pt").write_bytes(b"mine")
    before = _listing(folder)
    assert earlier_run(folder) == [held]
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
        assert f"{folder} (--checkpoint-dir) holds an earlier run's files ({held})" in err.message
        assert (
            "cannot be resumed" if settings.resume else "a fresh start would replace them"
        ) in err.message
        assert "another --checkpoint-dir" in err.hint
        if held.startswith("ckpt-"):
            assert f"echo {held} > {folder / 'LATEST'}" in err.hint
        assert _listing(folder) == before


# ------------------------------------------------------------ real nodes


def _node(data: Path, folder: Path, *more: str) -> subprocess.CompletedProcess[str]:
    [port] = free_ports(1)
    args = [*CLI, "start", "--solo", *train_args(data), "--listen", f"{HOST}:{port}"]
    args += ["--checkpoint-dir", str(folder), "--eval-every", "0", *more]
    env = {**os.environ, "COLUMNS": "80"}
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
