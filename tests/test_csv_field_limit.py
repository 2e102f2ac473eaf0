"""The CSV check's raised field limit stays within what every platform's csv takes."""

from __future__ import annotations

import csv

from declora.node.data_files import _field_limit


def test_a_size_past_a_c_long_is_capped_and_put_back() -> None:
    before = csv.field_size_limit()
    with _field_limit(2**70):  # raised OverflowError (Windows: already past 2 GiB)
        assert csv.field_size_limit() == 2**31 - 1
    assert csv.field_size_limit() == before
