"""A JSON file a node reads back (a checkpoint's declora.json, a history's last line)
nested deeper than Python's recursion limit is read as damaged, never a RecursionError
traceback (adapter_io's and run_folder's readers are covered in
test_revdata_adapter_info and test_revops3_resume_identity)."""

from __future__ import annotations

from pathlib import Path

from declora.node.adapter_card import DECLORA_INFO
from declora.node.daemon.persistence import _whole_record, trained_round

DEEP = b"[" * 100_000 + b"]" * 100_000


def test_a_deeply_nested_card_records_no_trained_round(tmp_path: Path) -> None:
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / DECLORA_INFO).write_bytes(DEEP)
    assert trained_round(tmp_path) is None


def test_a_deeply_nested_last_history_line_is_no_whole_record() -> None:
    assert not _whole_record(DEEP)
    assert _whole_record(b'{"round": 1}')


def test_a_deeply_nested_peft_config_is_left_for_the_loader(tmp_path: Path) -> None:
    from declora.node.adapter_card import portable_base

    config = tmp_path / "adapter_config.json"
    config.write_bytes(DEEP)
    portable_base(config, {"hub_id": "some/model"})
    assert config.read_bytes() == DEEP
