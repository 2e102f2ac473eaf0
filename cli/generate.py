"""`declora-node generate`: continue prompts with a saved causal-LM adapter.

Prompts come from `--prompt`, from a file (`--input`) or from standard input (plain
lines, or JSON lines when the first line is an object). A `.jsonl` file holds one JSON
object a line with a `prompt` string or a `messages` list of {role, content} turns (or
ShareGPT's `conversations` of {from, value} turns; roles read as training reads them;
the last turn is not the assistant's); a data file (.csv, .tsv, .parquet, .json, .arrow,
any compressed file or archive, or a save_to_disk folder) is read as `predict` reads its
--input (`data_files.read_splits`: an archive or a compressed .txt refused), from its
`prompt` column (texts) or `messages` (else `conversations`) column (turns); any other
file (.txt) is one prompt a line. Line input
(.txt, .jsonl, stdin) gives one output line per input line, and a data file one per
row, as `predict` does: a blank line, or a line or row whose prompt is empty or null, is
no prompt and gives an empty line (json: its keys with null values), and prompt N is
line N. All input is read and checked before the model loads, and every prompt's
length before anything is generated: prompt plus --max-new-tokens must fit the model's
context.

A text prompt, whichever route (--prompt, a file, stdin) it came by, becomes one user
turn rendered as training rendered conversations (`lm_data.encode_prompt`) with the chat
template and its generation prompt; for a tokenizer without one, it gets the plain
rendering (the text and a newline) only when the adapter's `declora.json` records that
it trained on conversations (`lm_rows` "chats"), and is sent as it is when it trained on
plain text or has no record (`renders_text`). `--no-chat-template` sends plain prompts as
they are.
Each prompt is generated on its own; sampling (`temperature` > 0) reseeds with `seed`
before each prompt, so a prompt's output does not depend on the others; temperature 0
is greedy decoding, the same tokens as `model.generate(do_sample=False)`. Generation
stops at the tokenizer's EOS, at the end-of-turn token training closed replies with
(`lm_data.end_of_turn_id`), or at any end-of-turn id of the model's generation_config
(`eos_token_id`, one id or a list: chat models such as Gemma-2-it end a reply with
<end_of_turn>, not EOS); the completion's `stop` is then "eos".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from declora.cli.predict import input_path, text_lines
from declora.node.adapter_io import AdapterError, LoadedAdapter, adapter_folder
from declora.node.data import column_values
from declora.node.data_files import ARCHIVES, BUILDERS, COMPRESSIONS, DataError, read_splits
from declora.node.lm_data import CONVERSATIONS, ROLE_ALIASES, SHAREGPT_ROLES
from declora.node.models import context_length
from declora.node.tokenizers import Tokenizer

_log = logging.getLogger(__name__)

# a prompt: plain text, or a conversation as {role, content} turns
Prompt = str | list[dict[str, str]]


MAX_NEW_TOKENS = 100_000  # tokens a prompt may ask for at most
MAX_TEMPERATURE = 100.0
JSON_LINES = (".jsonl", ".ndjson")  # read line by line, as stdin's JSON lines
PROMPT, MESSAGES = "prompt", "messages"  # a data file's prompt columns
PROMPTS_HINT = "give one prompt a line, or JSON lines"


@dataclass(frozen=True)
class Sampling:
    """How tokens are chosen: greedy at temperature 0, else sampled (nucleus `top_p`)."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def check(self) -> None:
        """`DataError` naming the option that is out of range."""
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise DataError(
                f"--max-new-tokens must be in [1, {MAX_NEW_TOKENS}], got {self.max_new_tokens}",
                "the new tokens of one completion, e.g. --max-new-tokens 128 (the default)",
            )
        if not 0 <= self.temperature <= MAX_TEMPERATURE:  # NaN fails both
            raise DataError(
                f"--temperature must be in [0, {MAX_TEMPERATURE:g}] (0 = greedy), "
                f"got {self.temperature}",
                "leave it out for greedy decoding, or sample with e.g. --temperature 0.7",
            )
        if not 0 <= self.seed < 2**32:
            raise DataError(
                f"--seed must be in [0, 2**32), got {self.seed}", "e.g. --seed 0 (the default)"
            )
        if not 0 < self.top_p <= 1:
            raise DataError(
                f"--top-p must be in (0, 1], got {self.top_p}",
                "1 (the default) keeps every token; e.g. --top-p 0.9 keeps the likeliest 90%",
            )


@dataclass(frozen=True)
class Completion:
    """One prompt's continuation: its text, how many tokens, and why it stopped."""

    text: str
    tokens: int
    stop: str  # "eos" or "length"


def _messages(value: object, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise DataError(
            f"{where}: 'messages' is not a non-empty list of turns",
            'write [{"role": "user", "content": ...}]',
        )
    turns = []
    for t, turn in enumerate(value, 1):
        sharegpt = isinstance(turn, dict) and turn.get("role") is None and "from" in turn
        role_key, text_key = ("from", "value") if sharegpt else ("role", "content")
        ok = isinstance(turn, dict) and all(
            isinstance(turn.get(k), str) for k in (role_key, text_key)
        )
        if not ok:
            raise DataError(
                f"{where}: turn {t} is not a {{role, content}} object of strings",
                'write {"role": "user", "content": "..."} (or ShareGPT\'s {"from": "human", '
                '"value": "..."}); a tool-call turn (content null) is not read: drop it and '
                "the tool turns that answer it",
            )
        role = turn[role_key].strip().lower()  # as training reads roles
        role = SHAREGPT_ROLES.get(role, role) if sharegpt else role
        turns.append({"role": ROLE_ALIASES.get(role, role), "content": turn[text_key]})
    if turns[-1]["role"] == "assistant":
        raise DataError(
            f"{where}: the conversation ends with an assistant turn, so the reply would be "
            "generated as a second assistant turn after it",
            "end each prompt's messages with the turn to answer (drop a final assistant "
            "turn, such as a training file's reference reply)",
        )
    return turns


def _jsonl_prompts(lines: Sequence[str], source: str) -> list[Prompt]:
    prompts: list[Prompt] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            prompts.append("")  # a blank line keeps its place in the output
            continue
        where = f"{source}:{lineno}"
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            what = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise DataError(f"{where}: not valid JSON: {what}", "one JSON object a line") from exc
        if not isinstance(row, dict):
            raise DataError(
                f"{where}: a {type(row).__name__}, not a JSON object",
                'one JSON object a line: {"prompt": "..."} or '
                '{"messages": [{"role": "user", "content": "..."}]}',
            )
        chat = MESSAGES if MESSAGES in row else CONVERSATIONS
        if chat in row:
            prompts.append(_messages(row[chat], where))
        elif isinstance(row.get("prompt"), str) or (PROMPT in row and row[PROMPT] is None):
            text = row[PROMPT] or ""
            prompts.append(text if text.strip() else "")  # keeps its place, as a blank line
        else:
            raise DataError(
                f"{where}: no non-empty 'prompt' string or 'messages' list; keys are {sorted(row)}",
                "give each line a prompt or messages field",
            )
    return _some(prompts, source)


def _some(prompts: list[Prompt], source: str) -> list[Prompt]:
    """`prompts`, unless every one is empty (a `DataError`: there is nothing to do)."""
    if not any(prompts):
        raise DataError(f"{source}: no prompts (every one is empty)", PROMPTS_HINT)
    return prompts


def _table_prompts(path: Path) -> list[Prompt]:
    """The prompts of a data file (or save_to_disk folder): each row's `messages` (else
    `conversations`) turns when it has them, else its `prompt` text; read as `predict`
    reads --input."""
    prompts: list[Prompt] = []
    for where, ds in read_splits(path):
        columns = list(ds.column_names)
        chats = MESSAGES if MESSAGES in columns else CONVERSATIONS
        if PROMPT not in columns and chats not in columns:
            raise DataError(
                f"{where}: no {PROMPT!r} or {MESSAGES!r} column; columns are {sorted(columns)}",
                f"give the prompts a {PROMPT!r} column (one text a row) or a {MESSAGES!r} "
                "column ({role, content} turns)",
            )
        empty: list[Any] = [None] * len(ds)
        turns = column_values(ds, where, chats, "chat", "--input")[0] if chats in columns else empty
        texts = (
            column_values(ds, where, PROMPT, "prompt", "--input")[0] if PROMPT in columns else empty
        )
        for row, (chat, text) in enumerate(zip(turns, texts, strict=True), 1):
            at = f"{where}: row {row}"
            if chat is not None:
                prompts.append(_messages(chat, at))
            elif isinstance(text, str) or (text is None and PROMPT in columns):
                prompts.append(text if text and text.strip() else "")  # keeps its place
            else:
                raise DataError(
                    f"{at}: no non-empty {PROMPT!r} text or {MESSAGES!r} list",
                    "give each row a prompt or messages, or remove it",
                )
    return _some(prompts, str(path))


def read_prompts(prompt: str | None, source: str | None, stdin: TextIO | None) -> list[Prompt]:
    """The prompts in input order, "" for a blank line or an empty or null prompt (it
    keeps its place); `DataError` when there are none or one is malformed."""
    if prompt is not None and source is not None:
        raise DataError(
            "give --prompt or --input, not both", "leave --input out to continue --prompt"
        )
    if prompt is not None:
        if not prompt.strip():
            raise DataError("empty prompt", "give the text to continue with --prompt")
        return [prompt]
    jsonl: bool | None = None  # None: stdin, JSON lines when its first line is an object
    if source not in (None, "-"):
        path = input_path(str(source))
        suffix = path.suffix.lower()  # a compressed file is read whole, as a table is
        table = suffix in (*COMPRESSIONS, *ARCHIVES) or (
            suffix in BUILDERS and suffix not in JSON_LINES
        )
        if path.is_dir() or (path.is_file() and table):
            return _table_prompts(path)
        if not path.is_file():
            raise DataError(f"input file not found: {path}", "check the --input path")
        jsonl = suffix in JSON_LINES
    lines, label = text_lines(source or "-", stdin)
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        raise DataError(f"{label}: no prompts", PROMPTS_HINT)
    if jsonl or (jsonl is None and first.lstrip().startswith("{")):
        return _jsonl_prompts(lines, label)
    return [line if line.strip() else "" for line in lines]


def prompt_ids(tok: Tokenizer, prompt: Prompt, chat_template: bool) -> list[int]:
    """The ids the model continues: a text prompt is one user turn, rendered as training
    rendered conversations (`lm_data.encode_prompt`: the chat template with its
    generation prompt, or, for a model without one, the plain rendering "text\n"), the
    same whichever route it came by; with `chat_template` off (`renders_text`), the text
    as it is (with the special tokens, `lm_data.encode_text`)."""
    from declora.node.lm_data import encode_prompt, encode_text

    if isinstance(prompt, str) and not chat_template:
        return encode_text(tok, prompt)
    return encode_prompt(tok, prompt)


def renders_text(adapter: LoadedAdapter, chat_template: bool) -> bool:
    """Whether a text prompt is rendered as a user turn (`prompt_ids`' `chat_template`):
    unless `chat_template` is off, with the tokenizer's chat template, or without one
    when the adapter trained on conversations (`LoadedAdapter.trained_on_chats`); one
    trained on plain text, or saved before the record, continues the text as it is."""
    return chat_template and (adapter.tokenizer.has_chat_template or adapter.trained_on_chats)


def _warn_rendered(tok: Tokenizer, prompts: Sequence[Prompt]) -> None:
    """One warning when text prompts hold the tokenizer's special tokens: a prompt already
    rendered with the chat template would be rendered again, as a user turn."""
    from declora.node.lm_data import special_tokens_in

    numbers = [n for n, p in enumerate(prompts, 1) if isinstance(p, str)]
    texts = [p for p in prompts if isinstance(p, str)]
    found = [(n, m) for n, m in zip(numbers, special_tokens_in(tok, texts), strict=True) if m]
    if found:
        _log.warning(
            "%d prompt(s) hold the tokenizer's special token %r (first: prompt %d), read as "
            "that token, not as its characters: each text prompt is rendered as a user turn "
            "with the chat template, so a prompt already rendered gets its marks twice; pass "
            "--no-chat-template to send rendered prompts as they are",
            len(found), found[0][1][:40], found[0][0],
        )  # fmt: skip


def check_prompt_lengths(
    adapter: LoadedAdapter, lengths: Sequence[int | None], max_new_tokens: int
) -> None:
    """`DataError` naming the first prompt (by its place: `lengths` holds None for a
    blank line) whose tokens plus `max_new_tokens` exceed the model's context length
    (past it, positions have no embedding: an IndexError, or garbage)."""
    context = context_length(getattr(adapter.model, "config", None))
    if context is None:
        return
    for number, length in enumerate(lengths, 1):
        if length is None or length + max_new_tokens <= context:
            continue
        room = context - length
        raise DataError(
            f"prompt {number} is {length} tokens: with --max-new-tokens {max_new_tokens} "
            f"that is {length + max_new_tokens}, past the model's context length of "
            f"{context} tokens",
            f"lower --max-new-tokens to at most {room}"
            if room > 0
            else f"shorten the prompt to under {context} tokens",
        )


def stop_ids(adapter: LoadedAdapter) -> list[int]:
    """The ids that end a completion (`lm_data.stop_token_ids`): every `eos_token_id`
    of the model's generation_config (an int or a list: a chat model's end of turn),
    the tokenizer's EOS, and the end-of-turn token training taught to close a reply
    (ChatML's <|im_end|> when EOS is <|endoftext|>)."""
    from declora.node.lm_data import stop_token_ids

    generation = getattr(adapter.model, "generation_config", None)
    return stop_token_ids(adapter.tokenizer, getattr(generation, "eos_token_id", None))


@torch.no_grad()
def complete(adapter: LoadedAdapter, ids: list[int], sampling: Sampling) -> Completion:
    """Continue `ids` with the adapter's model (eval mode, its device)."""
    from transformers import GenerationConfig

    tok = adapter.tokenizer
    eos = stop_ids(adapter)
    kw: dict[str, Any] = {"do_sample": sampling.temperature > 0}
    if kw["do_sample"]:
        kw.update(temperature=sampling.temperature, top_p=sampling.top_p)
        torch.manual_seed(sampling.seed)
    config = GenerationConfig(
        max_new_tokens=sampling.max_new_tokens,
        eos_token_id=(eos[0] if len(eos) == 1 else eos) if eos else None,
        pad_token_id=tok.pad_id,
        **kw,
    )
    adapter.model.eval()
    inputs = torch.tensor([ids], dtype=torch.long, device=adapter.lora.device)
    out = adapter.model.generate(  # type: ignore[operator]
        input_ids=inputs, attention_mask=torch.ones_like(inputs), generation_config=config
    )
    new = [int(i) for i in out[0, len(ids) :]]
    stop = "eos" if new and new[-1] in eos else "length"
    return Completion(tok.decode(new), len(new), stop)


def run_generate(
    adapter: Path,
    prompt: str | None,
    source: str | None,
    out: TextIO,
    stdin: TextIO | None,
    *,
    sampling: Sampling,
    chat_template: bool = True,
    fmt: str = "text",
    base: str | None = None,
) -> int:
    """Write one completion per prompt to `out`, in input order, and an empty line for a
    blank input line (json: its keys with null values); returns how many prompts were
    answered.

    `text` writes each completion followed by a newline (a completion may hold
    newlines: use `json` to tell them apart); `json` writes one object a line (JSON Lines):
    prompt, completion, tokens and stop ("eos" or "length").
    """
    from declora.node.adapter_io import load_adapter
    from declora.node.models import quiet_transformers

    sampling.check()
    adapter_folder(adapter)  # a wrong path fails before reading stdin
    prompts = read_prompts(prompt, source, stdin)
    if not chat_template and any(not isinstance(p, str) for p in prompts):
        raise DataError("--no-chat-template takes plain prompts, not messages")
    with quiet_transformers():
        loaded = load_adapter(adapter, base=base)
    if loaded.task != "lm":
        raise AdapterError(f"{loaded.path} is a classifier, not a causal LM adapter", "use predict")
    render = renders_text(loaded, chat_template)
    if render:
        _warn_rendered(loaded.tokenizer, prompts)
    encoded = [prompt_ids(loaded.tokenizer, p, render) if p else None for p in prompts]
    lengths = [None if ids is None else len(ids) for ids in encoded]
    check_prompt_lengths(loaded, lengths, sampling.max_new_tokens)
    for p, ids in zip(prompts, encoded, strict=True):
        done = None if ids is None else complete(loaded, ids, sampling)
        if fmt == "json":
            row: dict[str, object] = {
                "prompt": p,
                **dict.fromkeys(("completion", "tokens", "stop")),
            }
            if done is not None:
                row.update(completion=done.text, tokens=done.tokens, stop=done.stop)
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            out.write(("" if done is None else done.text) + "\n")
        out.flush()
    return sum(ids is not None for ids in encoded)
