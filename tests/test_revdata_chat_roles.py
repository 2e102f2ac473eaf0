"""The messages that name a chat file's roles stay one readable line however many
roles there are: a file whose roles are speaker names (a script: hundreds of them)
names the first 8 unknown roles and how many more in its one warning, and a chat
template's refusal of a long conversation the first 8 roles and its turn count (both
listed every role: a warning of 1,000 names, a refusal of 60)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from declora.node.data import TextDataset, load_dataset
from declora.node.data_files import DataError
from declora.node.lm_data import LmFormat, encode_lm
from declora.node.models import load_base


def test_many_unknown_roles_are_named_in_a_bounded_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [
        {
            "messages": [
                {"role": f"speaker{i:04d}", "content": "line"},
                {"role": "assistant", "content": "ok"},
            ]
        }
        for i in range(1000)
    ]
    path = tmp_path / "script.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.WARNING):
        load_dataset(path, label_column=None, examples=LmFormat(), dedupe=False)
    (warned,) = [r.getMessage() for r in caplog.records if "are not system" in r.getMessage()]
    assert "'speaker0000'" in warned and "'speaker0007'" in warned
    assert "'speaker0008'" not in warned
    assert "(first in rows [1, 2, 3, 4, 5, 6, 7, 8]) and 992 more are not" in warned
    assert len(warned) < 500


def test_a_long_conversation_refused_by_the_template_is_summed_up(tmp_path: Path) -> None:
    from test_model_checks import hf_folder, llama_config

    folder = hf_folder(tmp_path / "m", llama_config())
    refuse = "{{ raise_exception('roles must alternate') }}"
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": refuse}))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    tok = load_base(str(folder), "lm", 2, seed=0).tokenizer
    chat = tuple(("user" if t % 2 == 0 else "assistant", f"w{t}") for t in range(60))
    with pytest.raises(DataError) as info:
        encode_lm(tok, TextDataset(("a",), None, (), (chat,), "train"), 32, packing=False)
    message = info.value.message
    assert "roles ['user', 'assistant', 'user', 'assistant', 'user', 'assistant'," in message
    assert "'assistant', ...] (60 turns) whose first user turn starts 'w0'" in message
    assert len(message) < 300
