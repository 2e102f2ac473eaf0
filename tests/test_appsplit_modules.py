"""Guards of the CLI's split into modules (`cli/app.py` assembles them): a Ctrl-C
while any of them loads is still the one `NOT_BEGUN` line with exit 130 (each is
imported after `loading.cover`), and loading the CLI still loads neither the settings
models nor torch (`status` and the other light commands need neither)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from declora.cli.loading import NOT_BEGUN

CHILD = """
import os, signal, sys
from importlib.abc import MetaPathFinder

TARGET = sys.argv.pop(1)


class Interrupt(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == TARGET:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None


sys.meta_path.insert(0, Interrupt())
sys.argv[0] = "declora-node"
from declora.cli.app import main

sys.exit(main())
"""

MODULES = [
    *("exits", "checks", "flags", "lazy_group", "start_command", "run_commands"),
    *("query_commands", "certs_command", "experiment_command", "adapter_commands"),
]


@pytest.mark.parametrize("module", MODULES)
def test_a_ctrl_c_while_a_command_module_loads_is_one_line(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, f"declora.cli.{module}", "status", "--target", "x:1"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (130, NOT_BEGUN + "\n"), done.stderr[-2000:]


def test_loading_the_cli_loads_no_settings_model_nor_torch() -> None:
    code = (
        "import sys, declora.cli.app; "
        "print(sorted(m for m in ('pydantic', 'torch', 'numpy') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr[-2000:]
