"""A node's checkpoint folder under trouble: a full or read-only disk (node/checkpoint.py,
daemon/persistence.py, daemon/status.py, daemon/daemon.py, daemon/startup.py), a second
node on the same folder (run_folder.hold), half-written folders a crash left
(run_folder.clear_builds) and SIGHUP (daemon/signals.py).

A write that fails in a round is a warning and the node trains on, keeping its last
good checkpoint; one at exit is one `error:` line, exit 1, after the neighbours were
told and the server stopped. A folder that cannot be written, or that another process
holds, is refused before anything loads (exit 2)."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from daemon_helpers import CLI, HOST, Cluster, free_ports, train_args
from disk_helpers import small_tmpfs

from declora.node import checkpoint, run_folder
from declora.node.adapter import built_atomically
from declora.node.daemon import signals
from declora.node.daemon.persistence import Persistence
from declora.node.daemon.startup import CONFIG, RUNTIME, UserError, as_user_error, check_config
from declora.node.dec_lora import NodeSnapshot
from declora.node.settings import NodeSettings
from declora.node.trainer import LoraModel

START = 150.0  # seconds for a node to import torch and build tiny-bert (a loaded machine)

# `declora-node` whose adapter writes fail for want of space after DISK_FULL_AFTER of
# them (each checkpoint writes one adapter, the final adapter one more); only those of
# checkpoints with DISK_FULL_CHECKPOINTS set
FULL_DISK = """
import errno, os, sys
import declora.node.trainer as trainer
real, calls = trainer.describe_adapter, [0]
def describe_adapter(folder, info, final_path):
    calls[0] += 1
    if os.environ.get("DISK_FULL_CHECKPOINTS") and ".ckpt-" not in str(folder):
        return real(folder, info, final_path)
    if calls[0] > int(os.environ["DISK_FULL_AFTER"]):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "declora.json"))
    return real(folder, info, final_path)
trainer.describe_adapter = describe_adapter
from declora.cli.app import main
sys.argv[0] = "declora-node"
sys.exit(main())
"""


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(("error:", "hint:"))]


def _settings(folder: Path, **more: object) -> NodeSettings:
    return NodeSettings(solo=True, checkpoint_dir=folder, data="syn.jsonl", **more)


def _save(lm: LoraModel, folder: Path, round_: int) -> Path:
    vec = np.concatenate([t.reshape(-1).numpy() for t in lm.initial_tensors()])
    trainer_state = {"optimizer": {}, "step": 0, "epoch": 1, "cursor": 0, "order": np.arange(4)}
    state = checkpoint.NodeState(round_, round_, vec, vec.copy(), trainer_state, lm.fingerprint)
    return checkpoint.save(folder, lm, state, {})


# ---------------------------------------------------------------- a full disk


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_full_disk_warns_in_training_and_fails_the_final_adapter_cleanly(
    tmp_path: Path, synthetic_jsonl: Path
) -> None:
    """Before: the first checkpoint that hit ENOSPC crashed the node with three chained
    tracebacks and grpc's `Exception ignored ... Event loop is closed` (the server was
    never stopped), no `error:` line, and the final adapter was never attempted. Now
    the failed checkpoints are warnings (LATEST keeps naming the last good one, no
    half-written folder is left), training goes on to the last round, and the final
    adapter's failure is one error line with a hint, exit 1, after a clean stop."""
    folder = tmp_path / "state"
    [port] = free_ports(1)
    args = [sys.executable, "-c", FULL_DISK, "start", "--solo", *train_args(synthetic_jsonl)]
    args += ["--listen", f"{HOST}:{port}", "--checkpoint-dir", str(folder), "--eval-every", "0"]
    args += ["--rounds", "4", "--checkpoint-every", "1", "--local-steps", "1"]
    env = {**os.environ, "DISK_FULL_AFTER": "2", "COLUMNS": "200"}
    res = subprocess.run(args, capture_output=True, text=True, timeout=START, env=env)
    assert res.returncode == 1, res.stderr
    assert _errors(res.stderr) == [
        f"error: cannot write the final adapter to {folder / 'adapter'}: No space left on device",
        "hint: free space on that disk or make it writable; --resume continues from ckpt-00000002",
    ], res.stderr
    assert "Traceback" not in res.stderr and "Exception ignored" not in res.stderr, res.stderr
    for r in (3, 4):
        assert f"cannot write the checkpoint of round {r} to {folder}" in res.stderr
    assert "a resume continues from ckpt-00000002" in res.stderr
    assert "stopped after round 4" in res.stderr, res.stderr  # the server was stopped
    assert (folder / "LATEST").read_text().strip() == "ckpt-00000002"
    checkpoint.read_state(folder / "ckpt-00000002")
    assert sorted(p.name for p in folder.iterdir()) == [
        "LATEST",
        "ckpt-00000001",
        "ckpt-00000002",
        "rounds.jsonl",
    ]
    rounds = [json.loads(line)["round"] for line in (folder / "rounds.jsonl").open()]
    assert rounds[:4] == [1, 2, 3, 4]


@pytest.mark.slow  # ~10 s of processes, make test-slow; the full disk in training stays, but
# not this stop's exit 1 naming the checkpoint it could not write (tested only here)
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_stop_whose_checkpoint_cannot_be_written_exits_1(
    tmp_path: Path, synthetic_jsonl: Path
) -> None:
    """A node stopped (SIGTERM) while its checkpoints fail: before, it had crashed at
    the first. Now it trains on, and at the stop writes its final adapter, then exits
    1 naming the checkpoint it could not write and the one --resume continues from."""
    folder = tmp_path / "state"
    [port] = free_ports(1)
    args = [sys.executable, "-c", FULL_DISK, "start", "--solo", *train_args(synthetic_jsonl)]
    args += ["--listen", f"{HOST}:{port}", "--checkpoint-dir", str(folder), "--eval-every", "0"]
    args += ["--rounds", "0", "--checkpoint-every", "1", "--local-steps", "1"]
    env = {**os.environ, "DISK_FULL_AFTER": "1", "DISK_FULL_CHECKPOINTS": "1"}
    log = tmp_path / "node.log"
    with log.open("w") as err:
        proc = subprocess.Popen(args, stderr=err, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        deadline = time.monotonic() + START
        while "cannot write the checkpoint of round 3" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 1, log.read_text()
    finally:
        proc.kill()
    stderr = log.read_text()
    [error, hint] = _errors(stderr)
    pattern = (
        rf"error: cannot write the checkpoint of round \d+ to {re.escape(str(folder))}: "
        "No space left on device"
    )
    assert re.fullmatch(pattern, error), stderr
    assert hint.endswith("; --resume continues from ckpt-00000001"), stderr
    assert "final adapter written" in stderr and (folder / "adapter").is_dir()
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert (folder / "LATEST").read_text().strip() == "ckpt-00000001"


def test_a_disk_error_the_node_cannot_go_on_without_is_one_line() -> None:
    """A write outside the checkpoints (no space, read-only) was a traceback; now it
    is one line, exit 1, naming the file. Other OSErrors stay bugs."""
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/x/state/rounds.jsonl")
    mistake = as_user_error(full)
    assert mistake is not None and mistake.code == RUNTIME
    assert mistake.message == "cannot write /x/state/rounds.jsonl: No space left on device"
    assert "free space" in mistake.hint
    assert as_user_error(ConnectionRefusedError(errno.ECONNREFUSED, "refused")) is None


def test_a_pointer_that_cannot_be_written_leaves_latest_as_it_was(
    tiny_lm: LoraModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a failed write of LATEST's temporary file left `.LATEST.tmp` behind.
    Now nothing half-written stays and LATEST names the checkpoint before."""
    folder = tmp_path / "state"
    _save(tiny_lm, folder, 1)
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".LATEST.tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="No space left"):
        _save(tiny_lm, folder, 2)
    assert (folder / "LATEST").read_text().strip() == "ckpt-00000001"
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert run_folder.resume_point(folder) == folder / "ckpt-00000001"


def test_a_history_line_that_cannot_be_written_whole_is_cut_off(tmp_path: Path) -> None:
    """Before: a write cut short (a full disk; here a file size limit) left half a
    JSON line in rounds.jsonl, and the next round's line was glued to it. Now the file
    keeps whole lines only."""
    folder = tmp_path / "state"
    folder.mkdir()
    history = folder / "rounds.jsonl"
    history.write_text(json.dumps({"round": 1}) + "\n")
    limit = history.stat().st_size + 100
    code = f"""
import resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
from declora.node.daemon.status import append_round
try:
    append_round(Path({str(folder)!r}), {{"round": 2, "pad": "x" * 1000}})
except OSError as exc:
    sys.exit(f"OSError {{exc.errno}}")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stderr.strip() == f"OSError {errno.EFBIG}", res.stderr
    assert history.read_text() == json.dumps({"round": 1}) + "\n"


# ---------------------------------------------------------------- a read-only folder


def test_resume_in_a_folder_that_cannot_be_written_is_refused(
    tiny_lm: LoraModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: --resume on a folder that became read-only passed the start-up checks,
    loaded, trained and crashed at its first checkpoint. Now it is refused (exit 2)
    before anything loads."""
    folder = tmp_path / "state"
    _save(tiny_lm, folder, 3)

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    with pytest.raises(UserError) as info:
        check_config(_settings(folder, resume=True))
    assert info.value.code == CONFIG
    assert info.value.message == (
        f"cannot use {folder} (--checkpoint-dir) for checkpoints: Read-only file system"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_resume_on_a_read_only_mount_is_refused(tiny_lm: LoraModel, tmp_path: Path) -> None:
    """The same on a real read-only bind mount (as root, which any permission lets by)."""
    folder = tmp_path / "state"
    _save(tiny_lm, folder, 3)
    mount = tmp_path / "ro"
    mount.mkdir()
    made = subprocess.run(["mount", "--bind", str(folder), str(mount)], capture_output=True)
    if made.returncode:
        pytest.skip(f"cannot bind-mount here: {made.stderr.decode().strip()}")
    try:
        ro = ["mount", "-o", "remount,ro,bind", str(mount)]
        assert subprocess.run(ro, capture_output=True).returncode == 0
        with pytest.raises(UserError, match="Read-only file system") as info:
            check_config(_settings(mount, resume=True))
        assert info.value.code == CONFIG
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# ---------------------------------------------------------------- one node a folder

HOLDER = """
import sys, time
from pathlib import Path
from declora.node import run_folder
assert run_folder.hold(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(600)
"""


def test_a_folder_another_process_holds_is_refused_until_it_dies(tmp_path: Path) -> None:
    """Before: any number of nodes used one folder, each pruning the others' half-built
    checkpoints. Now a start is refused (exit 2) naming the folder and the pid that
    holds it, changes nothing, and starts once that process is gone (kill -9 too)."""
    folder = tmp_path / "state"
    folder.mkdir()
    (folder / ".adapter.abc").mkdir()  # the holder's build: not deleted
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError) as info:
            check_config(_settings(folder))
        assert info.value.code == CONFIG
        assert info.value.message == (
            f"{folder} (--checkpoint-dir) is in use by another node (pid {holder.pid})"
        )
        assert "stop that node" in info.value.hint
        assert (folder / ".adapter.abc").is_dir()
    finally:
        holder.kill()
        holder.wait()
    check_config(_settings(folder))  # released by the kill
    run_folder.release(folder)


def test_half_written_builds_are_deleted_by_the_start_that_holds_the_folder(
    tmp_path: Path,
) -> None:
    """Before: `.adapter.*` folders a crash left in the final adapter's write were
    never deleted (`_prune` took only `.ckpt-*`, and only after a checkpoint). Now the
    start that holds the folder deletes both kinds; nothing else."""
    folder = tmp_path / "state"
    folder.mkdir()
    for name in (".adapter.x1", ".ckpt-00000003.x2"):
        (folder / name).mkdir()
        (folder / name / "adapter_model.safetensors").write_bytes(b"half")
    (folder / "rounds.jsonl").write_text('{"round": 1}\n')  # a fresh start appends to it
    (folder / ".keep").write_text("mine")
    check_config(_settings(folder))
    run_folder.release(folder)
    assert sorted(p.name for p in folder.iterdir()) == [".keep", "rounds.jsonl"]


# ---------------------------------------------------------------- SIGHUP


def test_sighup_stops_a_node_unless_it_was_started_ignoring_it() -> None:
    """SIGHUP is a stop signal, except for a node started under `nohup`."""
    before = signal.getsignal(signal.SIGHUP)
    try:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        assert signal.SIGHUP in signals.handled()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        assert signal.SIGHUP not in signals.handled()
        assert signal.SIGTERM in signals.handled()
    finally:
        signal.signal(signal.SIGHUP, before)


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_a_duplicate_resume_is_refused_and_sighup_stops_the_node(cluster: Cluster) -> None:
    """Before: a second node started with --resume on a live node's folder ran beside
    it (one crashed on the other's pruning, rounds.jsonl interleaved both), and a
    SIGHUP (an ssh session closing) killed a node with no leave and no checkpoint. Now
    the duplicate is refused naming the live node's pid, and SIGHUP stops the node as
    SIGTERM does: checkpoint, final adapter, exit 0."""
    [port] = free_ports(1)
    more = ["--solo", "--rounds", "0", "--checkpoint-every", "1", "--local-steps", "1"]
    node = cluster.add("a", port, [*train_args(cluster.data), *more, "--eval-every", "0"])
    node.start()
    cluster.wait_until(
        "a first checkpoint", lambda: "checkpoint written" in node.log(), START, [node]
    )
    [other] = free_ports(1)
    dup = [*CLI, "start", *node.args, "--listen", f"{HOST}:{other}", "--resume"]
    dup += ["--checkpoint-dir", str(node.ckpt)]
    res = subprocess.run(dup, capture_output=True, text=True, timeout=START)
    assert res.returncode == 2, res.stderr
    assert _errors(res.stderr)[0] == (
        f"error: {node.ckpt} (--checkpoint-dir) is in use by another node "
        f"(pid {node.proc.pid if node.proc else 0})"
    ), res.stderr
    assert node.running()
    node.signal(signal.SIGHUP)
    [code] = cluster.wait_exit([node], 60)
    log = node.log()
    assert code == 0, cluster.report()
    assert "stop requested" in log and "final adapter written" in log, log
    rounds = [json.loads(line)["round"] for line in (node.ckpt / "rounds.jsonl").open()]
    assert rounds == list(range(1, len(rounds) + 1))  # one run's history
    latest = (node.ckpt / "LATEST").read_text().strip()
    assert latest == f"ckpt-{rounds[-1]:08d}"
    assert run_folder.holder(node.ckpt) is None  # its lock went with it


# ---------------------------------------------------------------- a real full disk


def test_a_real_full_disk_fails_a_checkpoint_as_an_oserror(
    tiny_lm: LoraModel, tmp_path: Path
) -> None:
    """On a real full disk torch.save raised RuntimeError ("unexpected pos") and
    safetensors SafetensorError, which the node's OSError handling missed: a traceback.
    Now, wherever in the write the disk fills, it fails with ENOSPC and leaves no
    pointer and no half-written build."""
    with small_tmpfs(tmp_path / "disk", "64k") as disk:
        folder, filler = disk / "state", disk / "filler"
        failures = 0
        for fill in range(0, 64 * 1024, 2048):  # less and less room for the checkpoint
            try:
                filler.write_bytes(bytes(fill))
            except OSError:
                break
            try:
                _save(tiny_lm, folder, 1)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                failures += 1
                left = [p.name for p in folder.iterdir()]
                assert left in ([], ["ckpt-00000001"]), left  # no build, no LATEST
            shutil.rmtree(folder, ignore_errors=True)
            filler.unlink()
        assert failures


def test_a_writer_failure_with_room_to_spare_is_unchanged(
    tiny_lm: LoraModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the file system's state makes a writer's failure a disk error."""

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(checkpoint.torch, "save", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        _save(tiny_lm, tmp_path / "state", 1)
    assert not list((tmp_path / "state").glob(".ckpt-*"))


@pytest.mark.slow  # ~10 s of processes; the full disk in training stays; make test-slow
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_solo_node_on_a_real_full_disk_warns_and_still_saves_its_final_adapter(
    tmp_path: Path, synthetic_jsonl: Path
) -> None:
    """Before: the first checkpoint on a full tmpfs crashed the node with a traceback.
    Then each failed checkpoint was a warning, but its removed file stayed allocated
    (torch's writer held it open), so the final adapter failed too: exit 1 on a disk
    with room for it. Now the failed checkpoints give their space back, and the finished
    run saves its final adapter (a finished run's checkpoint is a warning): exit 0."""
    with small_tmpfs(tmp_path / "disk") as disk:
        folder = disk / "state"
        [port] = free_ports(1)
        args = [*CLI, "start", "--solo", *train_args(synthetic_jsonl), "--eval-every", "0"]
        args += ["--listen", f"{HOST}:{port}", "--checkpoint-dir", str(folder)]
        args += ["--rounds", "3", "--checkpoint-every", "1", "--consensus-rounds", "0"]
        res = subprocess.run(args, capture_output=True, text=True, timeout=START)
        saved = (folder / "adapter" / "adapter_model.safetensors").is_file()
        latest = (folder / "LATEST").read_text().strip()
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert "cannot write the checkpoint of round" in res.stderr, res.stderr
    assert "final adapter written" in res.stderr and saved, res.stderr
    assert latest == "ckpt-00000001", latest  # the one that fitted


# ---------------------------------------------------------------- persistence's errors


def _persistence(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Persistence:
    """A `Persistence` of stand-in parts (round 3, a 4-float adapter)."""
    vec = np.zeros(4, dtype=np.float32)
    node = SimpleNamespace(
        apply_deferred_step=lambda: None,
        snapshot=lambda: NodeSnapshot(vec, vec.copy(), None),
        trainer=None,
        full_model=False,
        model_vector=lambda: vec,
        codec_spec="fp32",
    )
    settings = SimpleNamespace(rounds=0, exchanges_per_round=1, node_id="n")
    parts = SimpleNamespace(
        node=node,
        lm=SimpleNamespace(fingerprint="f"),
        progress=SimpleNamespace(round=3, seq=3),
        settings=settings,
        report=SimpleNamespace(last_eval=None),
    )
    monkeypatch.setattr(checkpoint, "trainer_state", lambda trainer: {})
    store = Persistence(folder)
    store.attach(parts)  # type: ignore[arg-type]
    store._share = {}
    return store


def _fails(code: int) -> Callable[..., None]:
    def write(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    return write


def test_only_disk_errors_make_a_checkpoint_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EACCES, EMFILE, ENAMETOOLONG were also "a resume continues from ..." warnings,
    and the node trained on with no checkpoints. Now only the disk's state is."""
    store = _persistence(tmp_path, monkeypatch)
    for code in (errno.ENOSPC, errno.EROFS, errno.EFBIG):
        monkeypatch.setattr(checkpoint, "save", _fails(code))
        assert store.save_checkpoint() is False
        assert store.failed is not None and store.failed.errno == code
    for code in (errno.EACCES, errno.EMFILE, errno.ENAMETOOLONG):
        monkeypatch.setattr(checkpoint, "save", _fails(code))
        with pytest.raises(OSError) as raised:
            store.save_checkpoint()
        assert raised.value.errno == code


def test_a_failed_final_adapter_leaves_no_build_and_no_other_is_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`save_final` cleared every `.ckpt-*` build after a failed write, even where the
    folder could not be locked (NFS): another node's checkpoint being written there.
    Now the failed write removes its own build (`adapter.built_atomically`) and
    nothing else."""
    folder = tmp_path / "state"
    (folder / ".ckpt-00000007.x1").mkdir(parents=True)
    store = _persistence(folder, monkeypatch)
    store.parts.lm.save_adapter = _fails(errno.ENOSPC)
    with pytest.raises(UserError, match="No space left on device"):
        store.save_final()
    final = folder / "adapter"
    with pytest.raises(RuntimeError, match="writer broke"), built_atomically(final, 10) as build:
        (build / "weights").write_bytes(b"half")
        raise RuntimeError("writer broke")  # room to spare: not a disk failure
    assert sorted(p.name for p in folder.iterdir()) == [".ckpt-00000007.x1"]
