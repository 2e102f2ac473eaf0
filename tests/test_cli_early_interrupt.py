"""A Ctrl-C while `declora-node start` is still loading `declora.cli.app` (typer, the
node package: its first ~0.1 s) is one line and exit 130, as a later one is (before,
a KeyboardInterrupt traceback and death by SIGINT). A real process, a real SIGINT:
an import hook sends it to the process itself as the named module is imported, the
moment a timed signal hits only by chance."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from declora.cli.loading import NOT_BEGUN

CHILD = """
import os, signal, sys
from importlib.abc import MetaPathFinder

TARGET = sys.argv.pop(1)


class Interrupt(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == TARGET:  # a Ctrl-C as `name` is imported (os.kill raises at once)
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None


sys.meta_path.insert(0, Interrupt())
sys.argv[0] = "declora-node"
from declora.cli.app import main  # what the console script does

sys.exit(main())
"""


@pytest.mark.parametrize(
    ("module", "line"),
    [
        ("typer", NOT_BEGUN),  # cli/app.py's first imports: the window that was open
        ("declora.cli.fast", NOT_BEGUN),
        ("declora.node", NOT_BEGUN),
        ("declora.node.settings", NOT_BEGUN),  # building `start` (was already handled)
        ("declora.node.daemon.launch", "interrupted before the node started; nothing was written"),
    ],
)
def test_a_ctrl_c_while_the_cli_loads_is_one_line_and_exit_130(
    tmp_path: Path, module: str, line: str
) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "a", "label": "x"}\n')
    args = ["start", "--solo", "--data", str(data), "--checkpoint-dir", str(tmp_path / "ck")]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, module, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stderr) == (130, line + "\n"), done.stderr[-2000:]
    assert not (tmp_path / "ck").exists() or not any((tmp_path / "ck").iterdir())


def test_once_loaded_the_module_leaves_ctrl_c_to_python() -> None:
    """Importing the CLI (as tests and `lab` do) leaves no handler of its own behind."""
    code = "import signal, declora.cli.app; print(signal.getsignal(signal.SIGINT).__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "default_int_handler", done.stderr[-2000:]


def test_an_import_that_fails_puts_pythons_ctrl_c_handler_back() -> None:
    """`declora.cli.app` failing to load (here: typer missing) leaves no handler of its
    own behind: a later Ctrl-C is Python's KeyboardInterrupt again, not an exit 130."""
    child = """
import signal, sys
sys.modules["typer"] = None  # an import of it raises ImportError
try:
    import declora.cli.app
except ImportError:
    pass
print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
"""
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True", done.stdout
