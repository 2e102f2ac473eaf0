"""Review of the `;`-separated CSV rule and the class-folders command: a `;` header
whose quoted name holds a comma reads `;`-separated (it was refused), a compressed
file's info line names that file (it named a temporary copy), and a folder name an error
line cannot show as typed is FOLDER in the command (a newline was printed inside it)."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from declora.node.data import load_dataset
from declora.node.data_error import DataError
from declora.node.data_files import read_splits

ROWS = [("shares fell", "business"), ("a late goal", "sport")] * 3


def _semicolon(header: str) -> bytes:
    return (header + "\n" + "".join(f"{t};{g}\n" for t, g in ROWS)).encode()


def test_a_quoted_comma_in_a_semicolon_header_is_read(tmp_path: Path) -> None:
    path = tmp_path / "sheet.csv"
    path.write_bytes(_semicolon('"headline, short";category'))
    train, _ = load_dataset(path, 0.0, "category", text_column="headline, short", dedupe=False)
    assert sorted(set(train.texts)) == ["a late goal", "shares fell"]
    assert train.label_names == ("business", "sport")


def test_a_compressed_files_info_line_names_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "sheet.csv.gz"
    path.write_bytes(gzip.compress(_semicolon("text;label")))
    with caplog.at_level(logging.INFO, logger="declora.node.data_csv"):
        [(_, table)] = read_splits(path)
    assert table.column_names == ["text", "label"]
    [said] = [r.getMessage() for r in caplog.records if "semicolon" in r.getMessage()]
    assert said.startswith(f"{path}: read semicolon-separated"), said


@pytest.mark.parametrize("header", ['"notes; misc"', '"a;b",c', "text,label;x"])
def test_a_comma_header_holding_a_semicolon_stays_comma_separated(
    tmp_path: Path, header: str
) -> None:
    """Guard: a header that reads as two or more comma-separated names, or one quoted
    name holding `;`, is read comma-separated."""
    path = tmp_path / "c.csv"
    width = header.count(",") + 1
    path.write_text(header + "\n" + ",".join(["v;w"] * width) + "\n")
    [(_, table)] = read_splits(path)
    assert len(table.column_names) == width and table[0][table.column_names[0]] == "v;w"


def _class_folders(root: Path) -> str:
    for label, text in (("sport", "a goal"), ("tech", "new chip")):
        (root / label).mkdir(parents=True)
        (root / label / "1.txt").write_text(text)
    with pytest.raises(DataError) as err:
        read_splits(root)
    return err.value.hint or ""


def test_a_folder_name_with_a_newline_is_folder_in_the_command(tmp_path: Path) -> None:
    hint = _class_folders(tmp_path / "my\nnews")
    assert "\n" not in hint and "'FOLDER'" not in hint
    assert hint.endswith("FOLDER > data.jsonl (FOLDER: the path of this folder)")


def test_a_quote_in_the_folder_name_is_shell_quoted(tmp_path: Path) -> None:
    """Guard: the command, run in a shell, reads a folder named `Tom's "news" é`."""
    root = tmp_path / 'Tom\'s "news" é'
    hint = _class_folders(root)
    command = hint.split("pass that file: ", 1)[1].replace("python3 ", f"{sys.executable} ", 1)
    subprocess.run(command, shell=True, cwd=tmp_path, check=True, timeout=60)
    rows = [json.loads(line) for line in (tmp_path / "data.jsonl").read_text().splitlines()]
    assert rows == [{"text": "a goal", "label": "sport"}, {"text": "new chip", "label": "tech"}]


def test_a_tab_separated_file_named_csv_is_still_named_so(tmp_path: Path) -> None:
    """A tab-separated header whose last name holds `;` was read `;`-separated, its
    columns 'text<TAB>label' and 'x'; it is refused with the hint to name it .tsv."""
    path = tmp_path / "sheet.csv"
    path.write_text("text\tlabel;x\n" + "".join(f"{t}\t{g}\n" for t, g in ROWS))
    with pytest.raises(DataError) as err:
        read_splits(path)
    assert "looks tab-separated" in err.value.message and ".tsv" in (err.value.hint or "")


def test_the_command_reads_the_texts_as_utf8_in_any_locale(tmp_path: Path) -> None:
    """Under a locale that is not UTF-8 (LC_ALL=C without Python's UTF-8 fallbacks, as
    Windows' cp1252 is) the command's read_text() failed on 'café' or misread it."""
    import os

    root = tmp_path / "news"
    (root / "food").mkdir(parents=True)
    (root / "food" / "1.txt").write_text("café au lait", encoding="utf-8")
    (root / "tech").mkdir()
    (root / "tech" / "1.txt").write_text("new chip", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_splits(root)
    command = (err.value.hint or "").split("pass that file: ", 1)[1]
    command = command.replace("python3 ", f"{sys.executable} ", 1)
    env = {**os.environ, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    subprocess.run(command, shell=True, cwd=tmp_path, check=True, timeout=60, env=env)
    rows = [json.loads(line) for line in (tmp_path / "data.jsonl").read_text().splitlines()]
    assert rows[0] == {"text": "café au lait", "label": "food"}
