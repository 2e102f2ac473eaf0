"""User-facing paths of `lab`, `start`, `config` and `simulate` that used to refuse or
say nothing: `lab --task lm` on unlabelled data without a chosen scheme (iid, as
`simulate`), `--resume=auto` on the command line, a Ctrl-C before the node or the
run started (one line, exit 130), and a lab node that exits with an error (its
`error:` line in the lab's summary)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
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
    from declora.node.data import DataError
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
    from declora.cli.lab import failure_line

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
        error == "error: bad configuration: --resume: must be true, false or auto, got 'sometimes'"
    )
    assert hint.startswith("hint: see `declora-node config --help`")


def test_start_help_shows_resume_takes_auto() -> None:
    shown = runner.invoke(app, ["start", "--help"], terminal_width=200).stdout
    assert "--resume" in shown and "[=auto]" in shown and "--resume=auto" in shown


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
        patch.setattr("declora.cli.app._settings", _interrupt)
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
        patch.setattr("declora.cli.app._node_settings", _interrupt)
        one_line(
            runner.invoke(app, start), "interrupted before the command began; nothing was written"
        )


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
