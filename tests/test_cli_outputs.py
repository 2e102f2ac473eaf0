"""Nothing a user wrote is lost: `simulate`, `lab` and `export` (with or without --merge)
refuse an --output folder that already holds files, before any work, unless --force
(exit 2, `error:` and `hint:` lines); an empty folder is theirs to fill. Experiment
grids and studies resume in their folder by design and are not covered here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from adapter_helpers import save_trained_tiny
from typer.testing import CliRunner, Result

from declora.cli.app import app
from declora.node.trainer import LoraModel

runner = CliRunner()
TINY = ["--model", "tiny-bert", "--rounds", "1"]
ADAPTER_FILES = ["README.md", "adapter_config.json", "adapter_model.safetensors", "declora.json"]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("outputs") / "adapter"
    _: tuple[LoraModel, np.ndarray] = save_trained_tiny(path, steps=2)
    return path


def rows(path: Path, n: int = 20) -> Path:
    lines = [
        json.dumps(
            {"text": f"row {i}: " + " ".join(f"w{i}x{k}" for k in range(6)), "label": "ab"[i % 2]}
        )
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def files(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def tree(folder: Path) -> list[str]:
    """Every path below `folder`, files and folders (hidden build folders too)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def old_output(folder: Path) -> Path:
    """A folder holding a user's files: `notes.txt`, `run.json` and `lab-0/keep.bin`."""
    (folder / "lab-0").mkdir(parents=True)
    (folder / "notes.txt").write_text("mine\n")
    (folder / "run.json").write_text('{"old": true}\n')
    (folder / "lab-0" / "keep.bin").write_bytes(bytes(range(256)))
    return folder


def command(name: str, tmp_path: Path, adapter: Path, out: Path) -> list[str]:
    data = str(rows(tmp_path / "rows.jsonl"))
    return {
        "simulate": ["simulate", *TINY, "--data", data, "--nodes", "2", "--output", str(out)],
        "lab": [
            *("lab", *TINY, "--data", data, "--nodes", "1", "--no-centralized"),
            *("--eval-every", "0", "--base-port", "0", "--output", str(out)),
        ],
        "export": ["export", str(adapter), "-o", str(out)],
        "export --merge": ["export", str(adapter), "--merge", "-o", str(out)],
    }[name]


def assert_refused_output(res: Result, out: Path, name: str) -> None:
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    replaced = "the whole folder" if name.startswith("export") else "what it writes there"
    assert lines == [
        f"error: --output {out} already holds files (lab-0, notes.txt, run.json)",
        f"hint: pass --force to replace {replaced}, or choose another --output",
    ], res.stderr
    assert res.stdout == "" and "Traceback" not in res.output


@pytest.mark.parametrize("name", ["simulate", "lab", "export", "export --merge"])
def test_an_output_that_holds_files_is_refused_and_left_as_it_was(
    name: str, tmp_path: Path, adapter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = old_output(tmp_path / "out")
    args = command(name, tmp_path, adapter, out)
    before, around = files(out), tree(tmp_path)

    def no_work(*_: object, **__: object) -> None:
        raise AssertionError("the command started its work")

    monkeypatch.setattr("declora.cli.experiment.run_one", no_work)
    monkeypatch.setattr("declora.cli.lab.run_lab", no_work)
    monkeypatch.setattr("declora.cli.predict.run_export", no_work)
    assert_refused_output(runner.invoke(app, args), out, name)
    assert files(out) == before  # byte-identical
    assert tree(tmp_path) == around  # nothing created beside it either


def test_more_than_three_files_are_counted(tmp_path: Path, adapter: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for name in ("a", "b", "c", "d", "e"):
        (out / name).write_text(name)
    res = runner.invoke(app, ["export", str(adapter), "-o", str(out)])
    assert res.exit_code == 2, res.output
    assert f"--output {out} already holds files (a, b, c and 2 more)" in res.stderr


def test_simulate_force_replaces_its_results(tmp_path: Path, adapter: Path) -> None:
    out = old_output(tmp_path / "out")
    res = runner.invoke(app, [*command("simulate", tmp_path, adapter, out), "--force"])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "run.json").read_text())
    assert "old" not in result and result["config"]["nodes"] == 2
    assert (out / "run.md").is_file() and (out / "run.png").is_file()


@pytest.mark.slow  # a 2-node lab; simulate's --force stays; make test-slow
def test_lab_force_replaces_its_results(tmp_path: Path, adapter: Path) -> None:
    out = old_output(tmp_path / "out")
    (out / "results.json").write_text('{"old": true}\n')
    res = runner.invoke(app, [*command("lab", tmp_path, adapter, out), "--force"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "results.json").read_text())
    assert "old" not in summary and summary["ok"] and list(summary["exit_codes"]) == ["lab-0"]
    assert not (out / "lab-0" / "keep.bin").exists()  # the node's folder is new
    assert (out / "lab-0" / "adapter" / "adapter_config.json").is_file()


@pytest.mark.parametrize("merge", [False, True])
def test_export_force_replaces_the_folder_whole(tmp_path: Path, adapter: Path, merge: bool) -> None:
    out = old_output(tmp_path / "out")
    args = command("export --merge" if merge else "export", tmp_path, adapter, out)
    res = runner.invoke(app, [*args, "--force"])
    assert res.exit_code == 0, res.output
    assert str(out) in res.stdout
    written = sorted(p.name for p in out.iterdir())
    if merge:
        assert "config.json" in written and "declora_export.json" in written
    else:
        assert written == ADAPTER_FILES
        kept = [n for n in ADAPTER_FILES if n != "README.md"]  # the card names the copy
        assert {n: b for n, b in files(out).items() if n in kept} == {
            n: (adapter / n).read_bytes() for n in kept
        }
        assert f"load_adapter({str(out)!r})" in (out / "README.md").read_text()
    assert "notes.txt" not in written and "lab-0" not in written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "rows.jsonl"]  # no build left


def test_a_failed_export_with_force_keeps_the_old_folder(tmp_path: Path) -> None:
    out = old_output(tmp_path / "out")
    before = files(out)
    res = runner.invoke(app, ["export", str(tmp_path / "gone"), "-o", str(out), "--force"])
    assert res.exit_code == 2 and "does not exist" in res.stderr, res.output
    assert files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("name", ["simulate", "export", "export --merge"])
def test_an_empty_existing_folder_is_accepted(name: str, tmp_path: Path, adapter: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    res = runner.invoke(app, command(name, tmp_path, adapter, out))
    assert res.exit_code == 0, res.output
    assert any(out.iterdir())


def test_lab_accepts_an_empty_folder(
    tmp_path: Path, adapter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without daemons: the gate lets the lab start (its run is covered above)."""
    out = tmp_path / "out"
    out.mkdir()
    seen: list[Path] = []

    def run_lab(cfg: object) -> dict[str, object]:
        seen.append(cfg.output)  # type: ignore[attr-defined]
        return {"ok": True}

    monkeypatch.setattr("declora.cli.lab.run_lab", run_lab)
    res = runner.invoke(app, command("lab", tmp_path, adapter, out))
    assert res.exit_code == 0, res.output
    assert seen == [out]


def test_force_has_one_name_and_help() -> None:
    for name in ("simulate", "lab", "export", "certs"):
        res = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        [line] = [line for line in res.stdout.splitlines() if "--force" in line]
        assert "Replace existing files." in line, (name, line)


def test_a_lab_into_a_folder_another_lab_writes_is_refused_and_changes_nothing(
    tmp_path: Path, adapter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first lab holds its output folder's lock (`output_lock`) for its life: a
    second one, even with --force, is refused before it deletes or truncates anything
    (before: it replaced the first one's node folders and logs under it). The lab's
    run past the lock is left out (a real one: test_lab_force_replaces_its_results)."""
    from declora.cli.lab_lock import output_lock

    ran: list[Path] = []
    monkeypatch.setattr(
        "declora.cli.lab_swarm.run_swarm", lambda _, out, *__: ran.append(out) or {"ok": True}
    )
    out = old_output(tmp_path / "out")
    with output_lock(out):  # what a running lab holds
        before = files(out)
        res = runner.invoke(app, [*command("lab", tmp_path, adapter, out), "--force"])
        assert res.exit_code == 2, res.output
        assert res.stderr.strip().splitlines() == [
            f"error: --output {out} is in use by another lab (pid {os.getpid()})",
            "hint: wait for it to finish (or stop it), or choose another --output",
        ]
        assert files(out) == before and res.stdout == "" and ran == []
    res = runner.invoke(app, [*command("lab", tmp_path, adapter, out), "--force"])
    assert res.exit_code == 0, res.output  # once it is done, the folder is free again
    assert ran == [out.resolve()]


def test_a_lab_past_its_timeout_stops_the_nodes_and_writes_what_they_did(
    tmp_path: Path, adapter: Path
) -> None:
    """Past --timeout: one `error:` line and a hint, exit 1, no traceback; every node
    stopped, results.json written and marked timed out (before: a TimeoutError
    traceback and no results.json)."""
    out = tmp_path / "out"
    args = command("lab", tmp_path, adapter, out)
    args[args.index("--rounds") + 1] = "100000"
    res = runner.invoke(app, [*args, "--timeout", "2", "--format", "json"])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert lines[-2:] == [
        "error: lab did not finish within 2s",
        "hint: raise --timeout (it was 2 seconds) or give fewer --rounds; results.json holds "
        "what the nodes had done (timed_out), each node's folder its last checkpoint",
    ], res.stderr
    summary = json.loads((out / "results.json").read_text())
    assert summary == json.loads(res.stdout)
    assert summary["timed_out"] and not summary["ok"] and not summary["interrupted"]
    assert summary["exit_codes"]["lab-0"] is not None  # stopped, not left running
    assert "lab timed out after" in res.stderr and (out / "lab-0.log").is_file()
