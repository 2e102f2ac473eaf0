"""`export` holds its --output while it writes it, as a running node holds its
--checkpoint-dir (`run_folder.holding`): a node started there meanwhile is refused,
naming the export, and a node that took the folder after export's checks makes the
export refuse it, not write into it. Before, the lock was only tried (and let go) by a
check before the write."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from adapter_helpers import save_trained_tiny
from test_export_safety import HOLD, export, tree
from test_predict_cli import assert_user_error
from typer.testing import CliRunner

from declora.cli import predict
from declora.cli.app import app
from declora.node import run_folder
from declora.node.adapter_io import AdapterError, export_merged
from declora.node.daemon.startup import UserError, check_config
from declora.node.settings import NodeSettings

runner = CliRunner()
LINUX = pytest.mark.skipif(
    not Path("/proc/locks").exists(), reason="the holder's pid and command come from /proc"
)
# `declora-node` as its console script runs it, but pausing before the write
PAUSED_CLI = """
import sys
from declora.cli import predict
from declora.cli.app import main

write = predict._export


def paused(*args, **kwargs):
    print("writing", flush=True)
    sys.stdin.readline()
    return write(*args, **kwargs)


predict._export = paused
main()
"""


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export-lock") / "adapter"
    save_trained_tiny(path, steps=2)
    return path


@pytest.fixture
def holder() -> Iterator[subprocess.Popen[str]]:
    """Another process, to hold a folder (`hold_in`) as a running node does."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; exec(sys.stdin.readline())"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    yield proc
    proc.kill()
    proc.wait()


def hold_in(proc: subprocess.Popen[str], folder: Path) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    code = HOLD.replace("sys.argv[1]", repr(str(folder)))
    proc.stdin.write(code + "\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "held\n"


@LINUX
def test_a_start_during_an_export_is_refused_naming_the_export(
    adapter: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()  # made by the user beforehand: a start could take it at any time
    script = tmp_path / "bin" / "declora-node"
    script.parent.mkdir()
    script.write_text(PAUSED_CLI)
    proc = subprocess.Popen(
        [sys.executable, str(script), "export", str(adapter), "-o", str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
        with pytest.raises(run_folder.FolderBusy) as busy:
            run_folder.hold(out)
        assert busy.value.pid == proc.pid
        assert busy.value.command == "declora-node export"
        assert busy.value.who == f"pid {proc.pid} (declora-node export)"
        with pytest.raises(UserError) as refused:
            check_config(NodeSettings(solo=True, checkpoint_dir=out, data="syn.jsonl"))
        assert f"pid {proc.pid}" in refused.value.message
        _, err = proc.communicate("\n", timeout=300)
    finally:
        run_folder.release(out)  # had the start taken it
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert (out / "adapter_model.safetensors").read_bytes() == (
        adapter / "adapter_model.safetensors"
    ).read_bytes()
    assert run_folder.holder(out) is None  # let go when done


def test_a_node_that_takes_the_folder_after_the_checks_refuses_the_export(
    adapter: Path,
    tmp_path: Path,
    holder: subprocess.Popen[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No gap between export's checks and its write: a node that starts on --output
    right after them (here: after the last check) is refused the folder, or holds it
    and the export is refused; never both writing."""
    out = tmp_path / "out"
    out.mkdir()
    checks = predict.check_export_output

    def then_a_node_starts(*args: object) -> None:
        checks(*args)  # type: ignore[arg-type]
        if run_folder.holder(out) is None:  # not held by the export yet: the node takes it
            hold_in(holder, out)

    monkeypatch.setattr(predict, "check_export_output", then_a_node_starts)
    res = runner.invoke(app, export(adapter, "-o", out))
    assert_user_error(res, f"--output {out} is held by pid {holder.pid}")
    assert "hint: stop that process first" in res.stderr
    assert tree(out) == {}


def test_export_merged_holds_its_output_and_refuses_a_held_one(
    adapter: Path, tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    held = tmp_path / "held"
    held.mkdir()
    hold_in(holder, held)
    with pytest.raises(AdapterError, match=f"is held by pid {holder.pid}"):
        export_merged(adapter, held)
    assert tree(held) == {}
    out, _ = export_merged(adapter, tmp_path / "new" / "merged")
    assert (out / "config.json").is_file() and run_folder.holder(out) is None


def test_a_failed_export_removes_the_folders_it_made(adapter: Path, tmp_path: Path) -> None:
    """--output is made to be held before the write; an export that fails after the
    checks (a damaged weights file) leaves no folder behind."""
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for p in adapter.iterdir():
        (damaged / p.name).write_bytes(p.read_bytes())
    (damaged / "adapter_model.safetensors").write_bytes(b"not safetensors")
    res = runner.invoke(app, export(damaged, "-o", tmp_path / "a" / "b"))
    assert_user_error(res, "is not a readable safetensors file")
    assert not (tmp_path / "a").exists()
