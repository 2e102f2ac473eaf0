"""The last review of the CLI split (revlast3): one help text per option, and no
statement after a call that never returns (`exits.fail` and its kin)."""

from __future__ import annotations

import ast
from itertools import pairwise
from pathlib import Path

import pytest
from typer.testing import CliRunner

from declora.cli.app import app

CLI_DIR = Path(__file__).resolve().parents[1] / "cli"


def _debug_line(args: list[str]) -> str:
    res = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    [line] = [line for line in res.stdout.splitlines() if "--debug" in line]
    return " ".join(line.strip(" │").split())


@pytest.mark.parametrize("command", ["predict", "generate", "export"])
def test_debug_has_one_help_everywhere(command: str) -> None:
    """`declora-node --debug` and `declora-node predict --debug` are one option: they
    said "Show a traceback with an error (for bug reports)." and "Show tracebacks."."""
    assert _debug_line([command]) == _debug_line([])


def _exits(trees: dict[Path, ast.Module]) -> set[str]:
    """The names of the CLI's functions annotated `-> NoReturn`."""
    return {
        node.name
        for tree in trees.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        and isinstance(node.returns, ast.Name)
        and node.returns.id == "NoReturn"
    }


def test_nothing_follows_a_call_that_never_returns() -> None:
    """A statement after `fail(...)`, `fail_with(...)` or `interrupted(...)` in the same
    block is dead code (cli/lab.py kept a `raise  # unreachable` after fail_with)."""
    trees = {p: ast.parse(p.read_text(encoding="utf-8")) for p in sorted(CLI_DIR.glob("*.py"))}
    exits = _exits(trees)
    assert {"fail", "fail_with", "interrupted"} <= exits
    dead = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            for block in (getattr(node, f, None) for f in ("body", "orelse", "finalbody")):
                if not isinstance(block, list):
                    continue
                for stmt, after in pairwise(block):
                    call = stmt.value if isinstance(stmt, ast.Expr) else None
                    func = call.func if isinstance(call, ast.Call) else None
                    name = getattr(func, "id", None) or getattr(func, "attr", None)
                    if name in exits:
                        dead.append(f"{path.name}:{after.lineno}")
    assert dead == []


def test_the_slow_mark_is_described_once(pytestconfig: pytest.Config) -> None:
    """pyproject.toml's description of `slow` is the one `pytest --markers` shows: the
    conftest added a second, stale one ("real MiniLM + BBC News, runs by default, as in
    CI"; make test leaves slow tests out)."""
    slow = [m for m in pytestconfig.getini("markers") if m.split(":")[0].strip() == "slow"]
    assert len(slow) == 1 and "make test" in slow[0], slow
