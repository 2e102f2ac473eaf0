"""A user's own classification files as spreadsheets and pandas write them: a quoted
multi-line text is read as written, a stray quote mark that swallows rows is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from declora.node.data import load_file
from declora.node.data_files import DataError


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.mark.parametrize(
    "text",
    [
        "Pros and cons:\nprice,good\nservice,bad",  # a line like a row: the old check refused
        "Order:\nsize,2\nqty,1\nThanks",  # a list whose lines hold labels of other rows
        "Hi,\n\nprice,good",  # a blank line, and a first line with the header's fields
    ],
)
def test_a_quoted_multi_line_text_with_list_like_lines_is_read(tmp_path: Path, text: str) -> None:
    body = f'text,label\n"{text}",good\nfine food,bad\nslow,2\ngreat,1\n'
    data = load_file(_write(tmp_path, "reviews.csv", body))
    assert list(data.texts) == [text, "fine food", "slow", "great"]
    assert sorted(data.label_names) == ["1", "2", "bad", "good"]


@pytest.mark.parametrize(
    ("name", "body", "needle"),
    [
        (  # the stray quote swallows two rows, a blank line between them
            "blank.csv",
            'text,label\nq r,a\n"x y,a\nm n,b\n\ns t,a\nfoo",b\n',
            "row 2's quoted field in column 1 runs over line 4, which reads as a row",
        ),
        (  # the quote closes at a line's start: the last swallowed line is a whole row
            "start.tsv",
            'text\tlabel\nq r\ta\n"x y\ta\nm n\tb\n"\tb\n',
            "row 2's quoted field in column 1 runs over line 4",
        ),
    ],
)
def test_a_stray_quote_that_swallows_rows_is_still_refused(
    tmp_path: Path, name: str, body: str, needle: str
) -> None:
    with pytest.raises(DataError) as caught:
        load_file(_write(tmp_path, name, body))
    assert needle in caught.value.message, caught.value.message


def test_rows_dedupe_drops_from_a_user_file_are_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """59 of 60 rows copies of one text: the share was refused as "1 training rows" with
    the drop only at info level, so the user saw 1 row of their 60 and no reason."""
    import json
    import logging

    from declora.node.data import load_dataset

    rows = [{"text": "same text", "label": "ab"[i % 2]} for i in range(59)]
    body = "".join(json.dumps(r) + "\n" for r in [*rows, {"text": "other", "label": "a"}])
    path = _write(tmp_path, "rows.jsonl", body)
    with caplog.at_level(logging.WARNING, logger="declora.node.data"):
        load_dataset(path)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("58 of 60 rows dropped" in m and "--no-dedupe" in m for m in warned), warned
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="declora.node.data"):
        load_dataset(path, dedupe=False)
    assert not [r for r in caplog.records if "dropped" in r.getMessage()]


def test_a_parquet_file_of_columns_and_no_row_has_no_rows(tmp_path: Path) -> None:
    """pandas writes an empty frame as parquet with its columns: it was "cannot read it
    as parquet: BatchSize must be greater than 0", hint "is it really a parquet file?"."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(
        pa.table({"text": pa.array([], pa.string()), "label": pa.array([], pa.int64())}), path
    )
    packed = tmp_path / "rows.parquet.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    for given in (path, packed):
        with pytest.raises(DataError) as caught:
            load_file(given)
        assert caught.value.message.startswith(f"{given}: no rows"), caught.value.message
        assert caught.value.hint == "write one example per row"


def test_an_object_as_a_row_s_label_is_told_to_be_one_value(tmp_path: Path) -> None:
    """The hint was the one for column-oriented JSON ({"text": [...], ...}), which the
    file is not."""
    import json

    rows = [{"text": f"text {i}", "label": "ab"[i % 2]} for i in range(10)]
    rows[2]["label"] = {"name": "a"}
    path = _write(tmp_path, "rows.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as caught:
        load_file(path)
    assert "row 3: the label in column 'label' is a dict" in caught.value.message
    assert caught.value.hint == "write the label as one value (a string or a number), not an object"


def test_rows_nested_under_a_key_are_told_to_be_rows(tmp_path: Path) -> None:
    """{"data": [{"text": ..., "label": ...}, ...]} read as one row: the hint was to name
    the text column with --text-column, and --text-column data then refused a list."""
    import json

    rows = [{"text": f"text {i}", "label": "ab"[i % 2]} for i in range(10)]
    path = _write(tmp_path, "rows.json", json.dumps({"version": 1, "data": rows}))
    with pytest.raises(DataError) as caught:
        load_file(path)
    assert "rows are nested under 'data' (10 of them)" in caught.value.message
    assert "jq -c '.data[]'" in (caught.value.hint or "")
    assert len(load_file(_write(tmp_path, "rows2.json", json.dumps(rows)))) == 10


def test_a_long_text_does_not_end_the_check_of_the_rows_after_it(tmp_path: Path) -> None:
    """A text over csv's 131,072-character field limit ended the check silently: a stray
    quote mark after it swallowed rows that pandas then merged into one."""
    long_text = "word " * 40_000  # 200,000 characters
    body = f'text,label\nq r,a\n"{long_text}",b\n"x y,a\nm n,b\nfoo",b\n'
    with pytest.raises(DataError) as caught:
        load_file(_write(tmp_path, "long.csv", body))
    assert "row 3's quoted field in column 1 runs over line 5" in caught.value.message
    data = load_file(_write(tmp_path, "fine.csv", f'text,label\nq r,a\n"{long_text}",b\n'))
    assert data.texts[1] == long_text


def test_a_label_of_the_saved_test_split_only_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A saved train/test pair whose test split holds a class the training split lacks:
    the class got a head row no node trained, its test rows always wrong, silently."""
    import logging

    import datasets

    from declora.node.data import load_dataset

    train = {"text": [f"train text {i}" for i in range(12)], "label": ["a", "b"] * 6}
    test = {"text": ["test one", "test two", "test three"], "label": ["a", "c", "c"]}
    folder = tmp_path / "saved"
    datasets.DatasetDict(
        train=datasets.Dataset.from_dict(train), test=datasets.Dataset.from_dict(test)
    ).save_to_disk(str(folder))
    with caplog.at_level(logging.WARNING, logger="declora.node.data"):
        _, held = load_dataset(folder)
    assert held.label_names == ("a", "b", "c")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("['c'] are in its 'test' split only, on 2 row(s)" in m for m in warned), warned


def test_a_folder_of_data_files_is_told_to_pass_one(tmp_path: Path) -> None:
    """A folder holding train.jsonl (not a save_to_disk folder) got the generic list of
    file types; its own data files are named now."""
    folder = tmp_path / "data"
    folder.mkdir()
    _write(folder, "train.jsonl", '{"text": "a", "label": "x"}\n')
    _write(folder, "notes.txt", "my notes\n")
    with pytest.raises(DataError) as caught:
        load_file(folder)
    assert "is a folder but not one written by Dataset.save_to_disk" in caught.value.message
    assert (caught.value.hint or "").startswith(
        f"pass one of its data files ({folder}/train.jsonl)"
    )
