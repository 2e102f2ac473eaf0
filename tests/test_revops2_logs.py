"""Under --log-format json transformers' own warnings are JSON records too: transformers
gives its loggers a stderr handler of its own and stops them propagating, so they went
out as plain text around `logs.configure`'s handler (revops2)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = """
from declora.node import logs
{before}
logs.configure("n0", "json", "INFO")
{after}
from transformers.utils import logging as hf_logging
hf_logging.get_logger("transformers.tokenization_utils_base").warning("a tokenizer warning")
"""


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("import transformers.utils.logging", ""),  # imported first: configure routes it
        ("", "import transformers.utils.logging; logs.route_libraries()"),  # launch's way
    ],
    ids=["imported-before", "imported-after"],
)
def test_transformers_warnings_are_json_records(before: str, after: str) -> None:
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(before=before, after=after)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    [line] = res.stderr.splitlines()  # once: not its handler's line as well
    record = json.loads(line)  # the old code: a plain "a tokenizer warning" line
    assert record["logger"] == "transformers.tokenization_utils_base"
    assert record["message"] == "a tokenizer warning" and record["node"] == "n0"
