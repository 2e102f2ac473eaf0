"""Under --log-format json every line a node writes on stderr is one JSON object, also
what other libraries log (asyncio's slow-callback warnings under PYTHONASYNCIODEBUG=1,
grpc's, transformers') and Python warnings: they went out as plain text through
logging's last resort and `warnings.showwarning`."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import logging, warnings
from declora.node import logs
logs.configure("n0", {fmt!r}, "INFO")
logs.configure("n0", {fmt!r}, "INFO")  # configured twice (a lab, a test): written once
logging.getLogger("declora.node.x").info("ours")
logging.getLogger("asyncio").warning("Executing <Task> took 0.2 seconds")
logging.getLogger("transformers").info("chatter below WARNING")
warnings.warn("a library's warning\\nsecond line", UserWarning, stacklevel=1)
logging.getLogger("asyncio").warning("Executing <Task> took 0.2 seconds")  # held back
logs.flush_repeats()  # at exit: the count of what was held back
"""


def _stderr(fmt: str) -> list[str]:
    res = subprocess.run(
        [sys.executable, "-W", "always", "-c", SCRIPT.format(fmt=fmt)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
    return res.stderr.splitlines()


def test_json_logs_carry_other_libraries_and_warnings_as_json() -> None:
    records = [json.loads(line) for line in _stderr("json")]  # a plain line fails here
    assert [(r["logger"], r["level"]) for r in records] == [
        ("declora.node.x", "INFO"),
        ("asyncio", "WARNING"),
        ("py.warnings", "WARNING"),
        ("asyncio", "WARNING"),
    ]
    assert "(repeated 1 times in the last" in records[3]["message"]
    assert all(r["node"] == "n0" for r in records)
    assert "a library's warning\\nsecond line" in records[2]["message"]


def test_text_logs_give_a_library_warning_one_prefixed_line() -> None:
    lines = _stderr("text")
    assert len(lines) == 4, lines
    assert all(" [n0 r0] " in line for line in lines), lines
