"""Every user mistake is two lines on stderr, `error: ...` then `hint: ...`, exit 2, and
no traceback: click's usage errors (no boxed panel), bad configurations (each with a
hint), errors whose hint rode inline, experiment options that do not apply, lab ports
and edge-list topologies. Also: gRPC's C core is quiet unless asked, and `inspect`
shows every method and the recorded base, on the folders predict and export accept."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from adapter_helpers import save_trained_tiny
from typer.testing import CliRunner, Result

from declora.cli.app import app

runner = CliRunner()


def two_lines(res: Result, needle: str, hint: str = "") -> list[str]:
    """Exit 2; stderr is exactly `error: ...` naming `needle` and `hint: ...` (holding
    `hint`); no panel, no usage block, no traceback."""
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2, res.stderr
    assert lines[0].startswith("error: ") and needle in lines[0], res.stderr
    assert lines[1].startswith("hint: ") and hint in lines[1], res.stderr
    assert "(hint:" not in lines[0]
    for noise in ("Traceback", "╭", "Usage:", "Try '"):
        assert noise not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    return lines


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """A check that fails to refuse must not start a grid or a lab (MiniLM)."""

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("the command should have been refused before any work")

    monkeypatch.setattr("declora.cli.experiment.run_grid", refuse)
    monkeypatch.setattr("declora.cli.lab.run_lab", refuse)


# click's usage errors


@pytest.mark.parametrize(
    ("args", "needle", "command"),
    [
        (["lab", "--rank", "abc"], "Invalid value for '--rank'", "lab"),
        (["lab", "--bogus"], "No such option: --bogus", "lab"),
        (["start", "--solo=yes"], "Option '--solo' does not take a value", "start"),
        (["predict"], "Missing argument", "predict"),
        (["status", "--timeout", "soon"], "Invalid value for '--timeout'", "status"),
        (["bogus"], "No such command 'bogus'", ""),
        (["--bogus"], "No such option: --bogus", ""),
    ],
)
def test_a_usage_error_is_an_error_and_a_hint_line(
    args: list[str], needle: str, command: str, no_work: None
) -> None:
    where = f"declora-node {command}".strip()
    two_lines(runner.invoke(app, args), needle, f"see `{where} --help`")


def test_help_is_unchanged() -> None:
    res = runner.invoke(app, ["lab", "--help"])
    assert res.exit_code == 0 and "Usage:" in res.stdout and "--topology" in res.stdout
    bare = runner.invoke(app, [])  # no command: the help, as before
    assert "Usage:" in bare.output and "error:" not in bare.output


def test_the_installed_command_prints_the_same_two_lines() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "declora.cli", "lab", "--rank", "abc"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: Invalid value for '--rank': Input should be a valid integer, unable to "
        "parse string as an integer",
        "hint: see `declora-node lab --help`",
    ]


# bad configurations: each with a hint


@pytest.mark.parametrize(
    ("args", "needle", "hint"),
    [
        (["start", "--rank", "0"], "--rank", "`declora-node config` shows where"),
        (["start", "--swarm-secret", "x"], "--swarm-secret", "declora-node start --help"),
        (["start", "--tls-cert", "cert.pem"], "go together", "declora-node start --help"),
        (["config", "--rank", "0"], "--rank", "declora-node config --help"),
        (["simulate", "--nodes", "0"], "--nodes", "declora-node simulate --help"),
        (["lab", "--nodes", "0"], "--nodes", "declora-node lab --help"),
        (["lab", "--topology", "banana"], "accepted forms", "declora-node lab --help"),
    ],
)
def test_a_bad_configuration_has_a_hint(
    args: list[str], needle: str, hint: str, no_work: None
) -> None:
    [error, _] = two_lines(runner.invoke(app, args), needle, hint)
    assert error.startswith("error: bad configuration: ")


def test_bad_client_certificates_have_a_hint(tmp_path: Path) -> None:
    res = runner.invoke(app, ["status", "--tls-cert", str(tmp_path / "a.pem")])
    two_lines(res, "go together", "declora-node certs")


@pytest.mark.parametrize(
    "command", [["predict"], ["generate", "-p", "x"], ["export", "-o", "X"], ["inspect"]]
)
def test_an_adapter_error_prints_its_hint_on_its_own_line(
    tmp_path: Path, command: list[str]
) -> None:
    name, *rest = command
    rest = [str(tmp_path / "out") if a == "X" else a for a in rest]
    res = runner.invoke(app, [name, str(tmp_path / "missing"), *rest])
    [error, hint] = two_lines(res, "does not exist", "pass a node's adapter/")
    assert error == f"error: {tmp_path / 'missing'} does not exist"
    assert hint == "hint: pass a node's adapter/ or a checkpoint folder"  # no internal name


# experiment: options that do not apply are refused


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--only", ""], "--only needs run names"),
        (["--only", "base,"], "--only needs run names"),
        (["--only", " , "], "--only needs run names"),
        (["--only", "nope"], "unknown runs ['nope']"),
        (["--only", "base", "--table"], "--table runs nothing"),
        (["--only", "base", "--list"], "--list runs nothing"),
        (["--list", "--table"], "not both"),
        (["--workers", "3"], "--workers is for --task swarm"),
        (["--task", "lm", "--workers", "1"], "--task lm runs its grid one run at a time"),
        (["--task", "swarm", "--only", ""], "--only and --list are for --task"),
        (["--task", "methods", "--table", "--workers", "2"], "--table runs nothing"),
    ],
)
def test_experiment_refuses_what_does_not_apply(
    args: list[str], needle: str, tmp_path: Path, no_work: None
) -> None:
    two_lines(runner.invoke(app, ["experiment", "--output", str(tmp_path), *args]), needle)


def test_experiment_table_of_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    res = runner.invoke(app, ["experiment", "--output", str(missing), "--table"])
    two_lines(res, f"{missing} is no folder", "declora-node experiment --task cls")
    assert not missing.exists()


def test_experiment_table_of_a_folder_still_works(tmp_path: Path) -> None:
    res = runner.invoke(app, ["experiment", "--output", str(tmp_path), "--table"])
    assert res.exit_code == 0 and "Not run yet" in res.stdout, res.output


# lab: ports that exist, edge lists that can be read


def test_lab_ports_must_fit_below_65536(no_work: None) -> None:
    from declora.cli.lab import LabConfig

    res = runner.invoke(app, ["lab", "--nodes", "2", "--base-port", "65535"])
    two_lines(res, "--base-port 65535 with --nodes 2", "declora-node lab --help")
    assert "at most 65534" in res.stderr
    assert LabConfig(nodes=2, base_port=65534).base_port == 65534
    assert LabConfig(nodes=64, base_port=0).base_port == 0  # any free ports


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "does not exist"),
        ("folder", "is a folder"),
        (b"\xff\xfe\x00\x81", "is not a text file"),
        ("0 1\nfoo\n", ":2: expected 'i j', got 'foo'"),
        ("0 1\n1 5\n", "endpoint outside 0..1"),
        ("0 0\n", "self loop"),
    ],
)
def test_lab_edge_list_problems_are_configuration_errors(
    tmp_path: Path, content: str | bytes | None, needle: str, no_work: None
) -> None:
    from test_topology import write_edge_list

    path = tmp_path / "graph.txt"
    write_edge_list(path, content)
    res = runner.invoke(app, ["lab", "--nodes", "2", "--topology", f"edges:{path}"])
    [error, _] = two_lines(res, needle, "declora-node lab --help")
    assert str(path) in error


def test_a_good_edge_list_is_a_lab_topology(tmp_path: Path) -> None:
    from declora.cli.lab import LabConfig

    path = tmp_path / "graph.txt"
    path.write_text("# a triangle\n0 1\n1 2\n2 0\n")
    assert LabConfig(nodes=3, topology=f"edges:{path}").topology == f"edges:{path}"


def test_lab_help_lists_every_topology_form() -> None:
    from declora.cli.lab import LabConfig
    from declora.cli.options import help_text
    from declora.node.topology import SPEC_FORMS

    text = help_text("topology", LabConfig)
    for form in SPEC_FORMS:
        assert form in text
    shown = runner.invoke(app, ["lab", "--help"], terminal_width=200).stdout
    for token in ("ring", "complete", "er:P", "torus:RxC", "star", "edges:PATH"):
        assert token in shown, token


# gRPC's C core: errors only, unless the user asks for more


def _main_with(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from declora.cli.app import main

    monkeypatch.setattr(sys, "argv", ["declora-node", *argv])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2


def test_grpc_verbosity_is_error_for_a_node_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRPC_VERBOSITY", "restored after the test")
    monkeypatch.delenv("GRPC_VERBOSITY")
    _main_with(["start", "--rank", "abc"], monkeypatch)
    assert os.environ["GRPC_VERBOSITY"] == "ERROR"
    monkeypatch.setenv("GRPC_VERBOSITY", "DEBUG")
    _main_with(["start", "--rank", "abc"], monkeypatch)
    assert os.environ["GRPC_VERBOSITY"] == "DEBUG"


def test_lab_daemons_start_through_main(tmp_path: Path) -> None:
    """Each lab node runs `python -m declora.cli start`, that is `main`, and inherits
    the lab's environment (which `main` gave GRPC_VERBOSITY)."""
    from declora.cli.lab import LabConfig, node_command

    cfg = LabConfig(nodes=2, centralized=False)
    cmd = node_command(cfg, 0, "127.0.0.1:1", ["127.0.0.1:2"], tmp_path, "s")
    assert cmd[1:4] == ["-m", "declora.cli", "start"]
    main_module = Path(__import__("declora.cli.app").cli.__file__).parent / "__main__.py"
    assert "main()" in main_module.read_text()


# inspect: the method, the base, the folders predict and export accept


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inspect") / "node"  # a checkpoint root: no LATEST
    save_trained_tiny(root / "adapter", steps=1)
    return root


def _set_method(src: Path, dst: Path, method: str) -> Path:
    shutil.copytree(src, dst)
    info = json.loads((dst / "declora.json").read_text())
    info["spec"]["method"] = method
    (dst / "declora.json").write_text(json.dumps(info))
    return dst


@pytest.mark.parametrize("method", ["kill-revive", "conlora", "decaf"])
def test_inspect_shows_the_method_of_a_lora_adapter(
    saved: Path, tmp_path: Path, method: str
) -> None:
    folder = _set_method(saved / "adapter", tmp_path / method, method)
    res = runner.invoke(app, ["inspect", str(folder)], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert f"method={method}" in res.stdout
    info = json.loads(runner.invoke(app, ["inspect", str(folder), "--format", "json"]).stdout)
    assert info["method"] == method


def test_inspect_shows_the_recorded_base(saved: Path) -> None:
    recorded = json.loads((saved / "adapter" / "declora.json").read_text())["base"]["name"]
    res = runner.invoke(app, ["inspect", str(saved / "adapter")], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert f"base={recorded}" in res.stdout and "base=None" not in res.stdout
    assert "method=dec-lora" in res.stdout


def test_inspect_predict_and_export_accept_the_same_checkpoint_root(
    saved: Path, tmp_path: Path
) -> None:
    from declora.node.adapter_io import adapter_folder

    assert not (saved / "LATEST").exists()
    root = runner.invoke(app, ["inspect", str(saved), "--format", "json"])
    assert root.exit_code == 0, root.output
    direct = runner.invoke(app, ["inspect", str(saved / "adapter"), "--format", "json"])
    assert json.loads(root.stdout) == json.loads(direct.stdout)
    assert Path(json.loads(root.stdout)["path"]) == adapter_folder(saved)
    assert json.loads(root.stdout)["kind"] == "adapter"
    exported = runner.invoke(app, ["export", str(saved), "-o", str(tmp_path / "copy")])
    assert exported.exit_code == 0, exported.output


def lm_on_an_encoder(tmp_path: Path) -> list[str]:
    """`simulate`'s arguments for a causal-LM run on tiny-bert (an encoder): a ModelError."""
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"w{i} x y", "label": "ab"[i % 2]}) + "\n"
                            for i in range(40)))  # fmt: skip
    args = ["--task", "lm", "--model", "tiny-bert", "--data", str(data), "--nodes", "2"]
    return ["simulate", *args, "--output", str(tmp_path / "sim")]


LM_ERROR = "is not a causal (decoder) LM"
LM_HINT = "--task lm needs a decoder-only causal LM"


def test_a_model_error_of_simulate_and_lab_is_two_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """simulate and lab build models in process (the nodes, the reference): a ModelError
    there is the user's (exit 2, two lines), as it is in `start`. In-process here (torch
    loaded once); test_a_model_error_of_simulate_is_two_lines_in_a_real_process runs
    `python -m declora.cli simulate` (make test-slow)."""
    two_lines(runner.invoke(app, lm_on_an_encoder(tmp_path)), LM_ERROR, LM_HINT)

    from declora.node.model_source import ModelError

    def model_error(*_: Any, **__: Any) -> None:
        raise ModelError("the model 'm' is not there", "give a local folder")

    monkeypatch.setattr("declora.cli.lab.run_lab", model_error)
    res = runner.invoke(app, ["lab", "--output", str(tmp_path / "lab")])
    two_lines(res, "the model 'm' is not there", "give a local folder")


@pytest.mark.slow  # a real process importing torch (~12 s); the test above: in-process
def test_a_model_error_of_simulate_is_two_lines_in_a_real_process(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "declora.cli", *lm_on_an_encoder(tmp_path)]
    proc = subprocess.run(cli, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    error, hint = proc.stderr.strip().splitlines()[-2:]
    assert error.startswith("error: ") and LM_ERROR in error
    assert hint.startswith(f"hint: {LM_HINT}")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["certs", "--nodes", "a", "--days", "4000000"], "--days: must be from 1 to 36500"),
        (["generate", "x", "-p", "hi", "--temperature", "nan"], "--temperature must be in"),
        (["generate", "x", "-p", "hi", "--seed", str(2**40)], "--seed must be in"),
        (["generate", "x", "-p", "hi", "--max-new-tokens", "0"], "--max-new-tokens must be in"),
    ],
)
def test_numbers_of_the_other_commands_are_bounded(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    """certs and generate bound their numbers too (--days 4000000 was an OverflowError
    traceback that left an empty folder; --temperature nan reached transformers)."""
    out = tmp_path / "pki"
    full = [*args, "--output", str(out)] if args[0] == "certs" else args
    res = runner.invoke(app, full)
    assert res.exit_code == 2, res.output
    assert needle in res.stderr and "Traceback" not in res.output
    assert not out.exists()


def test_every_output_folder_option_is_output_or_o() -> None:
    """One name for an output folder on every command that writes one: --output, -o."""
    for command in ("simulate", "lab", "certs", "export", "experiment"):
        res = runner.invoke(app, [command, "--help"], terminal_width=200)
        assert res.exit_code == 0, res.output
        assert any("--output" in line and "-o " in line for line in res.output.splitlines()), (
            command
        )
