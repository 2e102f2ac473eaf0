"""How the CLI ends on a user's mistake (cliuser): an EOFError is exactly an `error:` and a
`hint:` line (typer wrote an empty line first); a closed stdin is a user error, not a
traceback; under `start --log-format json --debug` every stderr line is one JSON record,
the traceback the error record's `exc` field; an empty path is refused, never taken for
the current folder; every command's help paragraphs wrap to the terminal's width."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from declora.cli import client
from declora.cli.app import app
from declora.cli.generate import read_prompts
from declora.cli.predict import read_rows
from declora.node.data_files import DataError

runner = CliRunner()
CLI = [sys.executable, "-m", "declora.cli"]


def test_an_eof_error_is_exactly_an_error_and_a_hint_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def show_status(*_: object) -> int:
        raise EOFError("Ran out of input")

    monkeypatch.setattr(client, "show_status", show_status)
    res = runner.invoke(app, ["status", "--target", "127.0.0.1:1"])
    assert res.exit_code == 1
    assert res.stderr.splitlines() == [
        "error: an input ended early (Ran out of input)",
        "hint: check that the files and standard input it reads are whole; --debug shows where",
    ]


def test_a_closed_stdin_is_a_user_error() -> None:
    """`declora-node predict ADAPTER <&-`: Python's sys.stdin is None."""
    with pytest.raises(DataError, match="standard input is closed") as predicted:
        read_rows("-", "text", None)[0]
    with pytest.raises(DataError, match="standard input is closed") as generated:
        read_prompts(None, None, None)
    assert predicted.value.hint and generated.value.hint


@pytest.mark.parametrize(
    "args",
    [
        ["--rank", "-1"],  # refused by the settings
        ["--listen", "127.0.0.1:0", "--data", "nowhere.jsonl"],  # refused by launch's checks
    ],
)
def test_debug_under_json_logs_keeps_every_stderr_line_json(args: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECLORA_")}
    res = subprocess.run(
        [*CLI, "--debug", "start", "--log-format", "json", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 2, res.stderr
    records = [json.loads(line) for line in res.stderr.splitlines()]
    error = records[-1]
    assert error["level"] == "ERROR" and error["exit_code"] == 2 and error["hint"]
    assert "Traceback (most recent call last)" in error["exc"]


def test_without_debug_the_json_error_has_no_traceback() -> None:
    res = subprocess.run(
        [*CLI, "start", "--log-format", "json", "--rank", "-1"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    records = [json.loads(line) for line in res.stderr.splitlines()]
    assert res.returncode == 2 and records and "exc" not in records[-1]


@pytest.fixture
def fake_adapter(tmp_path: Path) -> Path:
    """A folder that passes `adapter_folder`'s check (read before --input)."""
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    return tmp_path


EMPTY_PATHS = [
    (["export", "ADAPTER", "--output", "", "--force"], "'--output' / '-o': an empty path"),
    (["predict", ""], "'adapter': an empty path"),
    (["inspect", ""], "'path': an empty path"),
    (["certs", "--output", ""], "'--output' / '-o': an empty path"),
    (["certs", "revoke", "--output", ""], "'--output' / '-o': an empty path"),
    (["start", "--config", ""], "'--config': an empty path"),
    (["lab", "--output", ""], "'--output' / '-o': an empty path"),
    (["status", "--tls-ca", "", "--target", "127.0.0.1:1"], "'--tls-ca': an empty path"),
    (["predict", "ADAPTER", "--input", ""], "--input is empty"),
    (["generate", "ADAPTER", "--input", ""], "--input is empty"),
    # only spaces, as settings refuse it (opsleft3: typer took it for a file named so)
    (["export", "ADAPTER", "-o", " ", "--force"], "'--output' / '-o': an empty path"),
    (["lab", "--output", "  "], "'--output' / '-o': an empty path"),
    (["certs", "--output", " "], "'--output' / '-o': an empty path"),
    (["predict", "ADAPTER", "--input", "  "], "--input is empty"),
    (["generate", "ADAPTER", "--prompt", "x", "--input", "y"], "not both"),
]


@pytest.mark.parametrize(("args", "said"), EMPTY_PATHS, ids=[" ".join(a) for a, _ in EMPTY_PATHS])
def test_an_empty_path_is_refused_with_a_hint(
    args: list[str], said: str, fake_adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty path was Path("."): `export --output "" --force` replaced the current folder."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    monkeypatch.chdir(work)
    res = runner.invoke(app, [str(fake_adapter) if a == "ADAPTER" else a for a in args])
    lines = res.stderr.splitlines()
    assert res.exit_code == 2, res.output
    assert len(lines) == 2 and lines[0].startswith("error: ") and said in lines[0]
    assert lines[1].startswith("hint: ")
    assert sorted(p.name for p in work.iterdir()) == ["keep.txt"]


def _commands() -> list[str]:
    group = typer.main.get_command(app)
    ctx = group.make_context("declora-node", [], resilient_parsing=True)
    return list(group.list_commands(ctx))  # type: ignore[attr-defined]


@pytest.mark.parametrize("width", [80, 200])
@pytest.mark.parametrize("command", _commands())
def test_every_commands_help_wraps_only_at_the_width(command: str, width: int) -> None:
    """A paragraph of a command's description breaks a line only where the next word
    would not fit (typer kept the docstring's own line breaks after the first one)."""
    res = runner.invoke(app, [command, "--help"], env={"COLUMNS": str(width)})
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "Usage:" in line) + 1
    end = next(i for i, line in enumerate(lines) if line.startswith("╭"))
    text = [line.strip() for line in lines[start:end]]
    assert any(text), res.stdout
    for line, after in itertools.pairwise(text):
        if line and after:  # the same paragraph: `after`'s first word did not fit
            assert len(line) + 1 + len(after.split()[0]) > width - 2, (line, after)
