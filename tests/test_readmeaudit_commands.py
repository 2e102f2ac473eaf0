"""README.md against the code: every `declora-node` command line it shows parses; every
`--option`, `DECLORA_*` variable, `make` target and repository path it names exists.

The command lines are those of fenced blocks (backslash continuations joined, shell
variables of the block expanded) and inline code spans. Each is parsed by click as the
real command would be (`make_context`: option names, arities and value types), and
nothing runs. Options of the benchmark scripts (`bench/*.py`) count as known.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from declora.cli.app import app
from declora.node.settings import NodeSettings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")

# written in README but not declora's: pip's, and a placeholder
FOREIGN_OPTIONS = frozenset({"--no-deps", "--flag"})
# named in README as placeholders or a prefix, not as a variable
PLACEHOLDER_VARS = frozenset({"DECLORA_", "DECLORA_X"})
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def command_lines(text: str) -> list[tuple[int, str]]:
    """(line number, command) for each `declora-node ...` in `text`."""
    found: list[tuple[int, str]] = []
    in_fence, buf, start = False, "", 0
    variables: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            in_fence, buf, variables = not in_fence, "", {}
            continue
        if in_fence:
            buf, start = (f"{buf} {line.strip()}", start) if buf else (line.strip(), number)
            if buf.endswith("\\"):
                buf = buf[:-1]
                continue
            assigned = re.fullmatch(r"([A-Z_]+)=\"([^\"]*)\"", buf)
            if assigned:
                variables[assigned[1]] = assigned[2]
            elif "declora-node " in buf:
                for name, value in variables.items():
                    buf = buf.replace(f"${name}", value)
                found.append((start, buf))
            buf = ""
        else:
            found += [(number, m[1]) for m in re.finditer(r"`([^`]*declora-node [^`]*)`", line)]
    return found


def arguments(command: str) -> list[str]:
    """The arguments after `declora-node`, less redirections, `&` and placeholders."""
    command = command[command.index("declora-node ") :]
    command = re.split(r"\s(?:\||&&|;)\s", command)[0]
    words = shlex.split(command, comments=True)[1:]
    kept: list[str] = []
    target = False  # the word after a bare `>` is its file
    for word in words:
        if target or word in {"&", "...", "[options]"} or re.fullmatch(r"\d?>.*", word):
            target = word in {">", "2>", ">>"}
            continue
        kept.append(word)
    while kept and kept[0] == "--debug":
        kept.pop(0)
    return kept


def parse(args: list[str]) -> None:
    """Click's parse of `declora-node ARGS` (a group's own options too); raises on a
    usage error, runs nothing."""
    group: Any = typer.main.get_command(app)
    ctx = group.make_context("declora-node", [], resilient_parsing=True)
    command: Any = group
    named = all(re.fullmatch(r"[a-z]+", a) for a in args)
    while hasattr(command, "get_command") and args and not args[0].startswith("-"):
        name, args = args[0], args[1:]
        command = command.get_command(ctx, name)
        assert command is not None, f"no command {name!r}"
        ctx = command.make_context(name, list(args), parent=ctx, resilient_parsing=True)
    assert command is not group, "no command named"
    # a command named alone (`declora-node export` in a sentence) is a reference
    command.make_context(ctx.info_name, list(args), parent=ctx.parent, resilient_parsing=named)


def cli_options() -> set[str]:
    """Every option of every command (names and their --no- forms)."""
    names = {"--help", "-h"}
    group: Any = typer.main.get_command(app)
    pending = [(group, group.make_context("declora-node", [], resilient_parsing=True))]
    while pending:
        command, ctx = pending.pop()
        for param in command.params:
            names.update(getattr(param, "opts", ()), getattr(param, "secondary_opts", ()))
        for name in getattr(command, "list_commands", lambda _: [])(ctx):
            sub = command.get_command(ctx, name)
            pending.append((sub, sub.make_context(name, [], parent=ctx, resilient_parsing=True)))
    return names


def bench_options() -> set[str]:
    return {
        m[1]
        for path in (ROOT / "bench").glob("*.py")
        for m in re.finditer(r"\"(--[a-z][a-z0-9-]*)\"", path.read_text(encoding="utf-8"))
    }


def unknown_options(text: str, known: set[str]) -> dict[str, int]:
    """Options `text` names that are not in `known`: each with its first line."""
    unknown: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        for name in OPTION.findall(line):
            if name not in known and name not in FOREIGN_OPTIONS:
                unknown.setdefault(name, number)
    return unknown


def unknown_variables(text: str) -> set[str]:
    """`DECLORA_*` names in `text` that are no option and no variable the code reads."""
    source = " ".join(
        p.read_text(encoding="utf-8")
        for folder in ("node", "cli")
        for p in (ROOT / folder).rglob("*.py")
    )
    fields = {f"DECLORA_{name.upper()}" for name in NodeSettings.model_fields}
    named = set(re.findall(r"DECLORA_[A-Z0-9_]*", text)) - PLACEHOLDER_VARS
    return {v for v in named if v not in fields and not re.search(rf"\b{v}\b", source)}


def missing_paths(text: str) -> list[str]:
    """Repository paths in code spans of `text` (`node/...`, `tests/x.py::test_y`, a
    `bench_*.py`; test and bench files anywhere) and `make` targets that do not exist."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    missing = [f"make {t}" for t in re.findall(r"`make ([a-z][a-z-]*)", text) if t not in targets]
    spans = re.findall(r"`([^`\n]+)`", text)
    words = [w for span in spans for w in span.split()]
    words += re.findall(r"(?<![\w/])(?:tests|bench)/\w+\.py(?:::\w+)?", text)  # outside spans
    for word in dict.fromkeys(w.rstrip(".,;:)") for w in words):
        path, _, test = word.partition("::")
        if re.fullmatch(r"bench_\w+\.py", path):
            path = f"bench/{path}"
        if not re.match(r"(node|cli|tests|bench|deploy|results|proto)/\S", path):
            continue
        if "<" in path or "*" in path:
            continue
        exists = (ROOT / path).exists()
        text_of = (ROOT / path).read_text(encoding="utf-8") if exists and test else ""
        if not exists or (test and not re.search(rf"def {re.escape(test)}\b", text_of)):
            missing.append(word)
    return missing


COMMANDS = command_lines(README)


def test_readme_shows_commands() -> None:
    """The extraction finds the README's examples (a guard against a parser that finds
    nothing and so passes everything)."""
    assert len(COMMANDS) >= 30
    assert any("certs revoke" in c for _, c in COMMANDS)


@pytest.mark.parametrize(("line", "command"), COMMANDS, ids=[f"L{n}" for n, _ in COMMANDS])
def test_every_readme_command_line_parses(line: int, command: str) -> None:
    args = arguments(command)
    if not args or (args[0].startswith("--") and len(args) == 1):
        return  # `declora-node --debug`, `declora-node --version`: the group's own
    try:
        parse(args)
    except Exception as exc:  # click's UsageError and its kin, typer's Exit
        if type(exc).__name__ == "Exit":  # --help
            return
        pytest.fail(f"README.md:{line}: `{command}` does not parse: {exc}")


def test_every_option_readme_names_exists() -> None:
    assert unknown_options(README, cli_options() | bench_options()) == {}


def test_every_declora_variable_readme_names_exists() -> None:
    assert unknown_variables(README) == set()


def test_every_path_and_make_target_readme_names_exists() -> None:
    assert missing_paths(README) == []


def test_the_checks_catch_a_wrong_name() -> None:
    """The checks above fail on a renamed option, a misspelt variable, a bad value."""
    text = (
        "Run `declora-node start --no-such-option 3`.\n"
        '```bash\nX="--rounds"\ndeclora-node lab $X many \\\n    --nodes 4\n```\n'
        "Set DECLORA_NO_SUCH_VARIABLE.\n"
    )
    (_, inline), (_, fenced) = command_lines(text)
    assert arguments(fenced) == ["lab", "--rounds", "many", "--nodes", "4"]
    for command in (inline, fenced):
        with pytest.raises(Exception, match=r"no-such-option|integer"):
            parse(arguments(command))
    assert unknown_options(text, cli_options()) == {"--no-such-option": 1}
    assert unknown_variables(text) == {"DECLORA_NO_SUCH_VARIABLE"}
    paths = "`make tset`, `node/gone.py`, `bench_gone.py`, `tests/test_cli.py::test_gone`"
    assert missing_paths(paths + " (tests/test_gone.py)") == [
        "make tset",
        "node/gone.py",
        "bench_gone.py",
        "tests/test_cli.py::test_gone",
        "tests/test_gone.py",
    ]
    assert missing_paths("`make test`, `node/recipe.py`, `bench_codecs.py`") == []
