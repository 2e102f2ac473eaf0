"""revcli4's review of cliuser's work: an empty --data from every source, a too-short
swarm secret kept out of --debug tracebacks, predict's --batch-size bounded."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from declora.cli.app import app
from declora.cli.predict import run_predict
from declora.node.data_files import DataError

runner = CliRunner()
CLI = [sys.executable, "-m", "declora.cli"]
EMPTY_DATA = "is empty: give a data file or folder, or bbcnews or bbc-headlines"


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DECLORA_")}


@pytest.mark.parametrize("command", ["config", "simulate", "lab"])
def test_an_empty_data_flag_is_refused(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--data ''` was the working folder (config showed it as '(bbcnews)', rc 0)."""
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, [command, "--data", ""])
    lines = res.stderr.splitlines()
    assert res.exit_code == 2, res.output
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    assert f"--data: {EMPTY_DATA}" in lines[0]
    assert not list(tmp_path.iterdir())  # nothing written


def test_an_empty_data_from_the_environment_or_the_file_is_refused_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One rule whatever the source: DECLORA_DATA= and `data = ""` as --data ''."""
    monkeypatch.setenv("DECLORA_DATA", " ")
    res = runner.invoke(app, ["config"])
    assert res.exit_code == 2 and f"DECLORA_DATA: {EMPTY_DATA}" in res.stderr
    monkeypatch.delenv("DECLORA_DATA")
    config = tmp_path / "node.toml"
    config.write_text('data = ""\n')
    res = runner.invoke(app, ["config", "--config", str(config)])
    assert res.exit_code == 2 and f"key 'data': {EMPTY_DATA}" in res.stderr


def test_a_named_data_set_is_still_taken() -> None:
    """A guard: the embedded data and a file name pass."""
    for data in ("bbcnews", "bbc-headlines", "train.jsonl"):
        res = runner.invoke(app, ["config", "--data", data, "--task", "lm", "--format", "json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["data"]["value"] == data


@pytest.mark.parametrize("json_logs", [False, True])
def test_a_debug_traceback_does_not_quote_a_short_swarm_secret(json_logs: bool) -> None:
    """--debug printed pydantic's error, `input_value='<the secret>'`; under --log-format
    json it went to the log collector in the `exc` field."""
    secret = "tooshort-S3KR1T"  # 15 characters: refused
    env = {**_clean_env(), "DECLORA_SWARM_SECRET": secret}
    logs = ["--log-format", "json"] if json_logs else []
    res = subprocess.run(
        [*CLI, "--debug", "start", "--solo", *logs],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 2, res.stderr
    assert "Traceback (most recent call last)" in res.stderr  # --debug still traces
    assert "at least 16 characters" in res.stderr
    assert "S3KR1T" not in res.stderr


@pytest.mark.parametrize("size", [0, 65_537, 10**30])
def test_predict_batch_size_is_bounded_before_anything_is_read(size: int, tmp_path: Path) -> None:
    """--batch-size 10**30 had no upper bound (the adapter's check came first)."""
    with pytest.raises(DataError) as caught:
        run_predict(tmp_path / "missing", "-", "text", "text", io.StringIO(), None, None, size)
    assert str(caught.value.message) == f"--batch-size must be 1 to 65,536, got {size}"


def test_the_help_reflow_keeps_an_example_or_a_list_as_written() -> None:
    """cliuser's reflow joined every paragraph's lines: an indented example or a list in
    a command's docstring became one run-on line."""
    from declora.cli.lazy_group import reflowed

    doc = """Run a node.

    Every option is also an environment
    variable.

    Examples:
      declora-node start --solo
      declora-node start --peers 10.0.0.2:7070

    - one
    - two

    \b
    kept
    too"""
    assert reflowed(doc).split("\n\n") == [
        "Run a node.",
        "Every option is also an environment variable.",
        "Examples:\n  declora-node start --solo\n  declora-node start --peers 10.0.0.2:7070",
        "- one\n- two",
        "\b\nkept\ntoo",
    ]


def test_an_empty_peers_list_means_no_static_peers() -> None:
    """A guard: `--peers ''` (DECLORA_PEERS= from an unset compose variable) is the
    default, no static peers: with --solo or --mdns a node starts; alone it is refused
    exactly as with --peers left out."""
    for extra in (["--solo"], ["--mdns"]):
        res = runner.invoke(app, ["config", "--peers", "", *extra, "--format", "json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["peers"]["value"] == []
    empty = runner.invoke(app, ["start", "--peers", ""])
    left_out = runner.invoke(app, ["start"])
    assert empty.exit_code == left_out.exit_code == 2
    assert empty.stderr == left_out.stderr and "no peers" in empty.stderr
