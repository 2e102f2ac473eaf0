"""A data file with a value nested past Python's recursion limit is refused before
pyarrow reads it: pyarrow's JSON reader crashed the process on it (`predict --input`
with 100,000 levels: a segmentation fault, exit 139) or the diagnosis of its error
was a RecursionError traceback (`start --data`). Run in a child process, so the old
crash fails the test instead of ending the test run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROWS = "".join(f'{{"text": "row {i}", "label": "{"ab"[i % 2]}"}}\n' for i in range(20))
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("lines.jsonl", ROWS + f'{{"text": {DEEP}, "label": "a"}}\n'),
        ("shallower.jsonl", ROWS + '{"text": ' + "[" * 3000 + "]" * 3000 + ', "label": "a"}\n'),
        ("array.json", '[{"text": "x", "label": "a"}, {"text": ' + DEEP + ', "label": "b"}]'),
    ],
)
def test_a_data_file_nested_too_deeply_is_one_error(
    tmp_path: Path, name: str, content: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    code = (
        "from pathlib import Path\n"
        "from declora.node.data_files import read_splits\n"
        "from declora.node.data_error import DataError\n"
        "try:\n"
        f"    read_splits(Path({str(path)!r}))\n"
        "except DataError as exc:\n"
        "    print(exc.message)\n"
        "    print(exc.hint)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    message, hint = done.stdout.splitlines()[:2]
    assert message.startswith(str(path)) and "nests JSON arrays or objects too deeply" in message
    assert "flatten that value" in hint
