"""revdata's review of the data-file checks: what measuring a file's table holds in
memory, and the CSV stray-quote check."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from declora.node import data_files


def test_sizing_a_parquet_table_never_decodes_its_repeated_texts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parquet file of 65,536 copies of one 1 KiB text (a few KiB on disk) is sized at
    its 64 MiB decoded, while no batch read to size it holds more than 1 MiB (sizing
    by decoded batches held 64 MiB at once: 1 GiB for a 16 KiB text, so a tiny .gz
    could exhaust memory before its free-space check)."""
    inner = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": ["x" * 1024] * 65_536, "label": ["a"] * 65_536}), inner)
    assert inner.stat().st_size < 1 << 20
    held: list[int] = []
    iter_batches = pq.ParquetFile.iter_batches

    def watched(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for batch in iter_batches(self, *args, **kwargs):
            held.append(batch.nbytes)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", watched)
    bound = data_files.table_bound(inner, 0)
    assert held and max(held) < 1 << 20, max(held)
    assert bound >= 65_536 * (1024 + 1), bound


@pytest.mark.parametrize(
    "swallowed",
    [
        "Terrible,neg\nOkay I guess,neutral\n",  # a label no row outside the swallow has
        "Terrible,neg\nNo label here,\n",  # a row that left its label out
    ],
)
def test_a_stray_quote_is_refused_when_a_swallowed_row_has_a_rare_label(
    tmp_path: Path, swallowed: str
) -> None:
    """A stray quote mark (`"Loved it`) swallows rows up to a later quote mark that ends
    a field (`55"`, inches); one swallowed row whose label no other row holds let all
    of them through silently as one text labelled pos."""
    from declora.node.data import load_file

    path = tmp_path / "reviews.csv"
    body = f'text,label\n"Loved it,pos\n{swallowed}TV is 55",pos\nBad,neg\nGood,pos\n'
    path.write_text(body, encoding="utf-8")
    with pytest.raises(data_files.DataError) as caught:
        load_file(path)
    assert "row 1's quoted field in column 1 runs over line 3" in caught.value.message
