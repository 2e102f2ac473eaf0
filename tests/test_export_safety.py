"""`export --force` replaces an earlier export, never what it reads, a declora run or a
folder another process holds (a running node's --checkpoint-dir): those are refused
with one error line and left byte for byte as they were."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from adapter_helpers import save_trained_tiny
from test_predict_cli import assert_user_error
from typer.testing import CliRunner

from declora.cli.app import app

runner = CliRunner()
HOLD = (
    "import sys; from pathlib import Path; from declora.node.run_folder import hold; "
    "hold(Path(sys.argv[1])); print('held', flush=True); sys.stdin.read()"
)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "adapter"
    save_trained_tiny(path, steps=2)
    return path


def tree(folder: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


def node_folder(folder: Path, adapter: Path) -> Path:
    """What a node leaves in its --checkpoint-dir, and the user's notes beside it."""
    shutil.copytree(adapter, folder / "adapter")
    shutil.copytree(adapter, folder / "ckpt-2" / "adapter")
    (folder / "ckpt-2" / "state.pt").write_bytes(b"state")
    (folder / "LATEST").write_text("ckpt-2\n")
    (folder / "rounds.jsonl").write_text('{"round": 1}\n')
    (folder / "notes.txt").write_text("my notes\n")
    return folder


def export(*args: str | Path) -> list[str]:
    return ["export", *(str(a) for a in args)]


def test_the_source_and_its_folder_are_refused(adapter: Path, tmp_path: Path) -> None:
    """The audit's `export ex/node/adapter --merge -o ex/node --force` deleted the run and
    notes.txt; an output inside the source, or a local --base, is refused too."""
    node = node_folder(tmp_path / "node", adapter)
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    before, base_before = tree(node), tree(base)
    cases = [
        (export(node / "adapter", "--merge", "-o", node, "--force"), "holds"),
        (export(node / "adapter", "-o", node / "adapter", "--force"), "is"),
        (export(node, "-o", node / "merged"), "is inside"),
        (export(adapter, "--merge", "--base", base, "-o", base, "--force"), "is"),
    ]
    for args, how in cases:
        res = runner.invoke(app, args)
        assert_user_error(res, f"{how} ")
        assert "which export reads" in res.stderr and "hint: choose an --output" in res.stderr
    assert tree(node) == before and tree(base) == base_before


def test_a_declora_run_is_not_replaced(adapter: Path, tmp_path: Path) -> None:
    node = node_folder(tmp_path / "node", adapter)
    before = tree(node)
    for out, needle in [
        (node, "holds a declora run (LATEST, adapter, rounds.jsonl)"),
        (node / "adapter", "is part of one"),
        (node / "ckpt-2", "holds a declora run (adapter)"),
    ]:
        assert_user_error(runner.invoke(app, export(adapter, "-o", out, "--force")), needle)
    assert tree(node) == before


def test_a_held_folder_is_refused_naming_the_pid(adapter: Path, tmp_path: Path) -> None:
    """A running node holds its --checkpoint-dir (`run_folder.hold`), empty or not."""
    held = tmp_path / "running"
    held.mkdir()
    (held / "node.log").write_text("training\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(held)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        for args in (["-o", held, "--force"], ["-o", held / "sub"]):
            res = runner.invoke(app, export(adapter, *args))
            assert_user_error(res, f"held by pid {proc.pid}")
            assert "hint: stop that process" in res.stderr
        assert "is inside" in res.stderr
        assert tree(held) == {"node.log": b"training\n"}
    finally:
        proc.communicate(timeout=30)  # closing its stdin ends it


def test_force_still_replaces_an_earlier_export(adapter: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for _ in range(2):
        res = runner.invoke(app, export(adapter, "-o", out, "--force"))
        assert res.exit_code == 0, res.output
    assert (out / "adapter_model.safetensors").read_bytes() == (
        adapter / "adapter_model.safetensors"
    ).read_bytes()
