"""The CLI refuses bad input before any work: one line `error: ...` (and a hint), exit 2,
nothing written: partition schemes, shares larger than the data, --format, output
folders, and options of the other --task."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from daemon_helpers import free_ports
from typer.testing import CliRunner, Result

from declora.cli.app import app
from declora.node.data import DataError
from declora.node.partition import PartitionError, check_scheme, partition

runner = CliRunner()
TINY = ["--model", "tiny-bert", "--rounds", "1"]


def assert_refused(res: Result, needle: str, hint: bool = False) -> None:
    """Exit 2, `error: ...` on one line naming `needle` (and a `hint:` line), no traceback."""
    assert res.exit_code == 2, res.output
    log = re.compile(r"\d{4}-\d\d-\d\d \d\d:")  # a daemon's log lines come first
    lines = [line for line in res.stderr.strip().splitlines() if not log.match(line)]
    assert lines and lines[0].startswith("error: "), res.stderr
    assert len(lines) == (2 if hint else 1), res.stderr
    if hint:
        assert lines[1].startswith("hint: ")
    assert needle in lines[0] and "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def write_rows(path: Path, n: int) -> Path:
    rows = [
        {"text": f"row {i}: " + " ".join(f"w{i}x{k}" for k in range(6)), "label": "ab"[i % 2]}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# A: partition schemes are checked when the configuration is built
@pytest.mark.parametrize("scheme", ["banana", "dirichlet:-1", "dirichlet:nan", "shards:0", "iid:2"])
@pytest.mark.parametrize("command", ["config", "simulate", "lab"])
def test_bad_partition_scheme_is_a_configuration_error(command: str, scheme: str) -> None:
    res = runner.invoke(app, [command, "--partition-scheme", scheme])
    assert_refused(res, "--partition-scheme")
    assert "accepted forms" in res.stderr


def test_good_partition_schemes_pass_in_their_plain_form() -> None:
    assert check_scheme(" SKEW:0.5 ") == "skew:0.5"
    assert [check_scheme(s) for s in ("iid", "dirichlet:0.5", "skew", "shards:2")] == [
        "iid",
        "dirichlet:0.5",
        "skew",
        "shards:2",
    ]
    res = runner.invoke(app, ["config", "--json", "--partition-scheme", "Dirichlet:0.3"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["partition_scheme"]["value"] == "dirichlet:0.3"


def test_more_nodes_than_rows_is_a_data_error_with_a_hint() -> None:
    labels = np.arange(48) % 2
    with pytest.raises(PartitionError, match="48 training rows among 100 nodes") as info:
        partition("iid", labels, 100, 0)
    assert isinstance(info.value, DataError) and "fewer nodes" in info.value.hint
    with pytest.raises(PartitionError, match="shards:30"):
        partition("shards:30", labels, 2, 0)


def test_simulate_with_more_nodes_than_rows(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl", 20)
    out = tmp_path / "sim"
    args = ["simulate", *TINY, "--data", str(data), "--nodes", "40", "--output", str(out)]
    res = runner.invoke(app, [*args, "--partition-scheme", "iid"])
    assert_refused(res, "among 40 nodes", hint=True)
    assert not out.exists()


def test_log_level_is_read_in_any_case() -> None:
    from declora.node.settings import NodeSettings

    assert NodeSettings(log_level="debug").log_level == "DEBUG"  # type: ignore[arg-type]


def test_start_with_a_partition_beyond_the_rows(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl", 20)
    args = [
        *TINY,
        "--eval-every",
        "0",
        "--solo",
        "--listen",
        f"127.0.0.1:{free_ports(1)[0]}",
        "--data",
        str(data),
    ]
    args += ["--checkpoint-dir", str(tmp_path / "state"), "--partition", "99/100"]
    res = runner.invoke(app, ["start", *args])
    assert_refused(res, "among 100 nodes", hint=True)
    assert not (tmp_path / "state").exists()  # a failed start leaves no folder


# B: --format
def test_inspect_and_lab_refuse_unknown_formats(tmp_path: Path) -> None:
    assert_refused(
        runner.invoke(app, ["inspect", str(tmp_path), "--format", "xml"]), "text or json"
    )
    assert_refused(runner.invoke(app, ["lab", "--format", "xml"]), "text or json")


# C: output folders
@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["export", "ADAPTER", "-o", "afile/sub"], "--output"),
        (["export", "ADAPTER", "--merge", "-o", "afile/sub2"], "--output"),
        (["simulate", *TINY, "--output", "afile"], "--output"),
        (["lab", *TINY, "--output", "afile"], "--output"),
        (["lab", *TINY, "--output", "afile/sub"], "--output"),
        (["certs", "--out", "afile", "--nodes", "n0"], "--out"),
        (["certs", "--out", "afile/sub", "--nodes", "n0"], "--out"),
    ],
)
def test_unusable_output_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], option: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "ADAPTER").mkdir()
    res = runner.invoke(app, args)
    assert_refused(res, f"{option} afile", hint=True)
    assert "is a file, not a folder" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ADAPTER", "afile"]
    assert (tmp_path / "afile").read_text() == "x"


# D: options of the other task
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["--task", "cls", "--data", "rows.jsonl", "--data-format", "instruction"],
            "--data-format instruction",
        ),
        (["--task", "lm", "--labels", "a,b", "--partition-scheme", "iid"], "--labels"),
    ],
)
@pytest.mark.parametrize("command", ["config", "simulate", "lab"])
def test_options_of_the_other_task_are_refused(command: str, args: list[str], needle: str) -> None:
    assert_refused(runner.invoke(app, [command, *args]), needle)


def test_defaults_and_meaningful_combinations_pass() -> None:
    for args in (
        [],
        ["--task", "lm"],
        ["--task", "lm", "--labels", "a,b", "--partition-scheme", "skew"],
    ):
        res = runner.invoke(app, ["config", "--json", *args])
        assert res.exit_code == 0, res.output
