"""User-facing paths of `lab`, `start`, `config` and `simulate` that used to refuse or
say nothing: `lab --task lm` on unlabelled data without a chosen scheme (iid, as
`simulate`), `--resume=auto` on the command line, a Ctrl-C before the node or the
run started (one line, exit 130), and a lab node that exits with an error (its
`error:` line in the lab's summary)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from declora.cli.app import app

runner = CliRunner()
CLI = [sys.executable, "-m", "declora.cli"]


def _lm_data(folder: Path) -> Path:
    path = folder / "lm.jsonl"
    rows = [{"text": f"the fox number {i} jumps over the lazy dog {i % 7}"} for i in range(40)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------ lab --task lm, unlabelled


def test_lab_shares_unlabelled_lm_data_out_iid_unless_a_scheme_was_chosen(tmp_path: Path) -> None:
    """The lab hands each daemon its scheme, so a daemon refused the lab's default
    (dirichlet:0.5) on unlabelled LM data as if the user had chosen it: every node
    exited 2. Now the lab shares it out iid and says so; a scheme the user chose, in
    the flags or in `extra`, is refused with the hint before any daemon starts."""
    from declora.cli.lab import LabConfig, lab_scheme, node_config
    from declora.node.data_files import DataError
    from declora.node.settings import NodeSettings

    data = str(_lm_data(tmp_path))
    lab = LabConfig(task="lm", model="tiny-llama", data=data, nodes=2)
    cfg, note = lab_scheme(lab)
    assert cfg.partition_scheme == "iid" and lab.partition_scheme == "dirichlet:0.5"
    assert "no label column 'label'" in note and "iid, not dirichlet:0.5" in note
    daemon = NodeSettings(
        **node_config(cfg, 0, "127.0.0.1:7001", ["127.0.0.1:7002"], tmp_path, "s")
    )
    assert daemon.partition_scheme == "iid" and daemon.partition == "0/2"
    for chosen in (
        LabConfig(task="lm", model="tiny-llama", data=data, partition_scheme="dirichlet:0.5"),
        LabConfig(task="lm", model="tiny-llama", data=data, extra={"partition_scheme": "skew"}),
    ):
        with pytest.raises(DataError) as info:
            lab_scheme(chosen)
        assert "no label column 'label'" in info.value.message
        assert "--partition-scheme iid" in info.value.hint
    with pytest.raises(DataError) as info:  # declared labels need a label column too
        lab_scheme(LabConfig(task="lm", model="tiny-llama", data=data, labels="a,b"))
    assert "--labels declares the classes of a label column" in info.value.message
    assert info.value.hint.startswith("drop --labels for unlabelled data")
    # labelled data, classification and a chosen iid are the lab's as given
    for same in (
        LabConfig(task="lm", model="tiny-llama"),  # the embedded data is labelled
        LabConfig(task="lm", model="tiny-llama", data=data, partition_scheme="iid"),
        LabConfig(model="tiny-bert"),
    ):
        assert lab_scheme(same) == (same, "")


def test_lab_refuses_a_chosen_scheme_on_unlabelled_lm_data_before_any_node(
    tmp_path: Path,
) -> None:
    out = tmp_path / "lab"
    res = runner.invoke(app, [
        "lab", "--task", "lm", "--model", "tiny-llama", "--data", str(_lm_data(tmp_path)),
        "--nodes", "2", "--rounds", "1", "--partition-scheme", "dirichlet:0.5",
        "--no-centralized", "--base-port", "0", "--output", str(out),
    ])  # fmt: skip
    assert res.exit_code == 2, res.output
    error, hint = res.stderr.strip().splitlines()
    assert error.startswith("error: ") and "no label column 'label'" in error
    assert hint == (
        "hint: use --partition-scheme iid for unlabelled data (or name its label column "
        "with --label-column)"
    )
    assert not out.exists()  # no daemon started, nothing written


@pytest.mark.slow  # a 2-node LM lab; the LM simulate and experiment runs stay; make test-slow
@pytest.mark.integration
def test_a_lab_of_lm_nodes_trains_on_unlabelled_data(tmp_path: Path) -> None:
    """Two tiny-llama daemons on a text-only file, no scheme given: both finish."""
    out = tmp_path / "lab"
    res = subprocess.run([
        *CLI, "lab", "--task", "lm", "--model", "tiny-llama", "--data",
        str(_lm_data(tmp_path)), "--nodes", "2", "--rounds", "1", "--consensus-rounds", "0",
        "--max-eval", "8", "--no-centralized", "--base-port", "0", "--output", str(out),
        "--format", "json",
    ], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)
    assert summary["ok"] and summary["config"]["partition_scheme"] == "iid"
    assert "sharing it out iid, not dirichlet:0.5" in res.stderr


def test_simulate_names_the_iid_share_it_falls_back_to(tmp_path: Path) -> None:
    """simulate shared unlabelled LM data out iid, as it should, but its header and
    run.json named the default it did not use (dirichlet:0.1)."""
    out = tmp_path / "sim"
    res = runner.invoke(app, [
        "simulate", "--task", "lm", "--model", "tiny-llama", "--data", str(_lm_data(tmp_path)),
        "--nodes", "2", "--rounds", "1", "--consensus-rounds", "0", "--no-centralized",
        "--output", str(out),
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "simulate: " in res.stderr and "sharing it out iid, not dirichlet:0.1" in res.stderr
    assert json.loads((out / "run.json").read_text())["config"]["partition_scheme"] == "iid"


def test_the_lab_summary_says_why_a_node_exited(tmp_path: Path) -> None:
    """A node that exited with an error was "no final adapter", its reason only in its
    log; the summary line now quotes its `error:` and `hint:` lines."""
    from declora.cli.lab_summary import failure_line

    log = tmp_path / "lab-0.log"
    log.write_text("some output\nerror: x.jsonl: no label column 'label'\nhint: name it\n")
    line = failure_line("lab-0", 2, log)
    assert line == f"  lab-0: exited 2: x.jsonl: no label column 'label'; name it (log: {log})"
    log.write_text("Segmentation fault\n")
    assert failure_line("lab-0", -11, log) == f"  lab-0: exited -11 (see {log})"


# ------------------------------------------------------------ --resume=auto


def _resume(*args: str) -> Result:
    return runner.invoke(app, ["config", "--format", "json", *args])


def test_resume_auto_is_a_command_line_value_too(tmp_path: Path) -> None:
    """`--resume=auto` was a usage error (auto only from DECLORA_RESUME or the file);
    now one option: `--resume` (true), `--no-resume`, `--resume=auto`, `--resume auto`."""
    from declora.node import run_folder

    folder = ["--checkpoint-dir", str(tmp_path)]
    for args, value in (
        (["--resume=auto"], False),  # nothing to resume: start afresh
        (["--resume", "auto"], False),
        (["--resume"], True),
        (["--resume=true"], True),
        (["--no-resume"], False),
        (["--resume", "--solo"], True),
    ):
        res = _resume(*folder, *args)
        assert res.exit_code == 0, (args, res.output)
        row = json.loads(res.stdout)["resume"]
        assert row == {"value": value, "source": "flag"}, args
    (tmp_path / "ckpt-00000003").mkdir()
    (tmp_path / "ckpt-00000003" / "state.pt").write_bytes(b"x")
    assert run_folder.resumable(tmp_path)
    assert json.loads(_resume(*folder, "--resume=auto").stdout)["resume"]["value"] is True


def test_another_resume_value_is_one_error_line() -> None:
    res = _resume("--resume=sometimes")
    assert res.exit_code == 2
    error, hint = res.stderr.strip().splitlines()
    assert (
        error == "error: bad configuration: --resume: must be true, false or auto (or yes/no, "
        "on/off, 1/0, t/f, y/n; any case), got 'sometimes'"
    )
    assert hint.startswith("hint: see `declora-node config --help`")


def test_start_help_shows_resume_takes_auto() -> None:
    """Shown as every other yes/no option is, `--resume` beside `--no-resume` (the
    help never named --no-resume), and the word it also takes."""
    shown = runner.invoke(app, ["start", "--help"], terminal_width=200).stdout
    (row,) = [line for line in shown.splitlines() if "--resume " in line]
    assert row.split()[1:4] == ["--resume", "--no-resume", "[=auto]"], row
    assert "--resume=auto" in shown


def _resume_value(*args: str) -> bool | str:
    res = _resume("--solo", *args)
    assert res.exit_code == 0, (args, res.output)
    return json.loads(res.stdout)["resume"]["value"]


def test_resume_leaves_the_option_after_it_alone() -> None:
    """The token after `--resume` was consumed and, unless `auto`, passed on raw:
    `--resume --no-resume` was "No such option: --no-resume", `--resume --resume`
    "requires an argument"."""
    from declora.cli.options import flag_words
    from declora.node.settings import NodeSettings

    assert _resume_value("--resume", "--no-resume") is False  # the last one given wins
    assert _resume_value("--no-resume", "--resume") is True
    assert _resume_value("--resume", "--resume") is True
    assert flag_words(["--resume", "--no-resume", "--rank", "4"], NodeSettings) == [
        "--resume=true", "--resume=false", "--rank", "4",
    ]  # fmt: skip
    # after `--` nothing is an option
    assert flag_words(["--", "--resume", "auto"], NodeSettings) == ["--", "--resume", "auto"]


def test_resume_takes_its_words_in_any_case_and_refuses_others_by_name() -> None:
    """`--resume=Auto` was accepted but `--resume Auto` (and `--resume sometimes`) was
    "Got unexpected extra argument(s) (Auto)", naming no option. A word of letters and
    digits after --resume is its value: any word --resume=WORD takes, in any case;
    another is refused naming --resume and its values. Anything else there (a path) is
    not --resume's: the command's own error for it."""
    assert _resume_value("--resume", "Auto") is False  # nothing to resume: afresh
    assert _resume_value("--resume", "AUTO", "--rank", "4") is False
    assert _resume_value("--resume", "YES") is True
    assert _resume_value("--resume", "no") is False
    assert _resume_value("--resume", "True") is True
    for word in ("sometimes", "Sometimes", "2"):
        res = _resume("--solo", "--resume", word)
        assert res.exit_code == 2, res.output
        error, hint = res.stderr.strip().splitlines()
        assert error == (
            "error: bad configuration: --resume: must be true, false or auto (or yes/no, "
            f"on/off, 1/0, t/f, y/n; any case), got {word!r}"
        )
        assert hint.startswith("hint: see `declora-node config --help`")
    res = _resume("--solo", "--resume", "./run.toml")
    assert res.exit_code == 2
    assert res.stderr.splitlines()[0] == "error: Got unexpected extra argument(s) (./run.toml)"


# ------------------------------------------------------------ Ctrl-C before the start


def _interrupt(*_: Any, **__: Any) -> None:
    raise KeyboardInterrupt


def one_line(res: Result, line: str) -> None:
    """Exit 130; stderr is exactly `line`; no traceback."""
    assert res.exit_code == 130, res.output
    assert res.stderr == line + "\n", res.stderr
    assert "Traceback" not in res.output


def test_a_ctrl_c_before_the_node_started_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It exited 130 saying nothing (typer's silent exit for a KeyboardInterrupt)."""
    folder = tmp_path / "state"
    start = ["start", "--solo", "--checkpoint-dir", str(folder)]
    with monkeypatch.context() as patch:  # reading the settings, importing the daemon
        patch.setattr("declora.cli.start_command._settings", _interrupt)
        one_line(
            runner.invoke(app, start), "interrupted before the node started; nothing was written"
        )
        debug = runner.invoke(app, ["--debug", *start])
        assert debug.exit_code == 130 and "Traceback" in debug.stderr
    with monkeypatch.context() as patch:  # launch checking the configuration (torch)
        patch.setattr("declora.node.daemon.launch.check_config", _interrupt)
        one_line(
            runner.invoke(app, start), "interrupted before the node started; nothing was written"
        )
    assert not folder.exists()
    with monkeypatch.context() as patch:  # before the command began: building it
        patch.setattr("declora.cli.lazy_group._node_settings", _interrupt)
        one_line(
            runner.invoke(app, start), "interrupted before the command began; nothing was written"
        )


def test_a_ctrl_c_just_after_the_state_folder_was_made_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """check_config makes the state folder last: a Ctrl-C after that (before launch had
    its list of the folders it made) left them there, while the line said "nothing
    was written"."""
    from declora.node.daemon import launch

    check_config = launch.check_config

    def made_then_interrupted(settings: Any) -> list[Path]:
        created = check_config(settings)
        assert settings.state_dir.is_dir() and created
        raise KeyboardInterrupt

    monkeypatch.setattr(launch, "check_config", made_then_interrupted)
    top = tmp_path / "new"
    one_line(
        runner.invoke(app, ["start", "--solo", "--checkpoint-dir", str(top / "run" / "state")]),
        "interrupted before the node started; nothing was written",
    )
    assert list(tmp_path.iterdir()) == []


def test_a_ctrl_c_in_simulate_or_lab_says_what_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    monkeypatch.setattr("declora.cli.experiment.run_one", _interrupt)
    one_line(
        runner.invoke(app, ["simulate", "--model", "tiny-bert", "--output", str(out)]),
        "interrupted before the simulation wrote its results; nothing was written",
    )

    def half_written(*_: Any, **__: Any) -> None:
        out.mkdir()
        (out / "run.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr("declora.cli.experiment.run_one", half_written)
    one_line(
        runner.invoke(app, ["simulate", "--model", "tiny-bert", "--output", str(out), "--force"]),
        f"interrupted while writing the results: {out} may hold some",
    )
    monkeypatch.setattr("declora.cli.lab.run_lab", _interrupt)
    one_line(
        runner.invoke(app, ["lab", "--model", "tiny-bert", "--output", str(tmp_path / "lab")]),
        "interrupted before any node started; nothing was written",
    )


def _old(path: Path) -> None:
    """`path` as a previous run left it: written an hour ago."""
    os.utime(path, (time.time() - 3600, time.time() - 3600))


def _said(guard: Any, capsys: pytest.CaptureFixture[str]) -> str:
    """The line `guard` (an `Interrupts` watching) prints for a Ctrl-C now."""
    capsys.readouterr()
    with pytest.raises(typer.Exit), guard:
        raise KeyboardInterrupt
    return capsys.readouterr().err.strip()


def test_a_ctrl_c_looks_only_at_what_the_command_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--output . --force` in a checkout: every file under it (.venv) was read before
    the run and again after a Ctrl-C (seconds). Now only the folder's own entries and
    the folders the command rewrites (`watch`'s `within`), which every write changes."""
    from declora.cli.exits import Interrupts

    out = tmp_path / "out"
    deep = out / ".venv" / "lib"
    deep.mkdir(parents=True)
    for i in range(300):
        (deep / f"m{i}.py").write_text("x")
    (out / "run.json").write_text("{}")
    _old(out / "run.json")
    stats = 0
    for name in ("stat", "lstat"):
        real = getattr(Path, name)

        def counted(self: Path, *a: Any, real: Any = real, **k: Any) -> Any:
            nonlocal stats
            stats += 1
            return real(self, *a, **k)

        monkeypatch.setattr(Path, name, counted)
    guard = Interrupts("untouched", "touched")
    guard.watch(out)
    assert stats < 20, stats  # was one for each of the 300 files and more
    assert _said(guard, capsys) == "untouched"
    assert stats < 40, stats
    monkeypatch.undo()
    # what simulate does there is seen: a file replaced (write_json), one rewritten
    (out / ".run.json.tmp").write_text("{}")
    (out / ".run.json.tmp").replace(out / "run.json")
    assert _said(guard, capsys) == "touched"
    guard.watch(out)
    (out / "run.json").write_text("{}")
    assert _said(guard, capsys) == "touched"
    guard.watch(tmp_path / "new" / "sim")  # a folder it makes
    (tmp_path / "new" / "sim").mkdir(parents=True)
    assert _said(guard, capsys) == "touched"
    # lab rewrites lab-N: a file removed deep in one (rmtree's first steps) is seen
    ckpt = tmp_path / "lab" / "lab-0" / "ckpt-00000001"
    ckpt.mkdir(parents=True)
    (ckpt / "state.pt").write_bytes(b"x")
    for path in (ckpt / "state.pt", ckpt, ckpt.parent):
        _old(path)
    guard.watch(tmp_path / "lab", ["lab-0"])
    assert _said(guard, capsys) == "untouched"
    (ckpt / "state.pt").unlink()
    assert ckpt.parent.stat().st_mtime < time.time() - 60  # lab-0 itself is unchanged
    assert _said(guard, capsys) == "touched"


def test_a_ctrl_c_in_simulate_over_a_big_output_folder_is_still_true(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`simulate --force` into a folder holding a deep tree of someone else's files:
    "nothing was written" while run_one wrote nothing, "may hold some" once it has."""
    out = tmp_path / "out"
    (out / ".venv" / "lib").mkdir(parents=True)
    (out / ".venv" / "lib" / "m.py").write_text("x")
    (out / "run.json").write_text("{}")
    _old(out / "run.json")
    simulate = ["simulate", "--model", "tiny-bert", "--output", str(out), "--force"]
    monkeypatch.setattr("declora.cli.experiment.run_one", _interrupt)
    one_line(
        runner.invoke(app, simulate),
        "interrupted before the simulation wrote its results; nothing was written",
    )

    def rewrites(*_: Any, **__: Any) -> None:
        (out / "run.json").write_text('{"rounds": []}')
        raise KeyboardInterrupt

    monkeypatch.setattr("declora.cli.experiment.run_one", rewrites)
    one_line(
        runner.invoke(app, simulate), f"interrupted while writing the results: {out} may hold some"
    )


def test_a_ctrl_c_while_status_waits_is_one_line() -> None:
    """`status` (answered without building the app) waiting for a node that never
    answers: Ctrl-C is "interrupted", exit 130, no traceback."""
    import signal
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        silent.settimeout(120)
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        proc = subprocess.Popen(
            [*CLI, "status", "--target", target, "--timeout", "60"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        conn, _ = silent.accept()  # the call is under way
        with conn:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err == "interrupted\n", err
