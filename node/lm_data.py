"""Causal-LM data: the formats a user's rows come in, and their encoding for training.

Formats (`Recipe.data_format`; `auto` picks the first whose columns are present):
- `messages`: a list of {role, content} turns in `messages_column` (ShareGPT's
  {from, value} turns too, and its "conversations" column when the default "messages"
  is absent);
- `prompt-response`: `prompt_column` and `response_column` (auto and an absent default
  "response" column also accept "completion"): two texts, or TRL's conversational
  prompt-completion (the prompt's turns, then the completion's assistant turns);
- `instruction`: the conventional `instruction`, optional `input` and `output` columns
  (the user turn is the instruction, then a blank line and the input when there is one);
- `text`: one document per row in `text_column` (the fallback, and the embedded BBC News).
The last three conversational formats become one user/assistant turn each. Roles are
read in lower case, and `model` (Gemma's name) as `assistant`. An assistant turn's
`weight` (OpenAI's fine-tuning format: 0 or 1, default 1) says whether it is trained:
a weight-0 reply is context only; a weight on another role's turn, any other value, or
a conversation whose every reply has weight 0 is a `DataError`. Other keys of a turn
(OpenAI's `name`, `tool_calls`, ...) are not read: one warning per split names them.
A `text_column` other than the default "text" is an explicit choice: `auto` then
reads text. Every malformed row raises `DataError` naming the row, with a hint.

Encoding (`encode_lm`), what training relies on:
- text, packed (`packing`, the default): every document is tokenized, followed by one
  EOS (a tokenizer that appends its own gets no second), concatenated in row order and
  cut into `max_length` blocks; no token is lost but the final partial block (a warning
  when it holds >= 1% of the tokens); every token carries a label.
- text, one example per row: the document plus EOS, truncated to `max_length`.
- conversations, one example per row, truncated to `max_length`: rendered with the
  tokenizer's chat template when it has one (else "content\\n" per turn and
  content + EOS for the assistant's, no EOS a tokenizer appends after that, logged as a
  warning); only the assistant turns'
  tokens, through the end-of-turn text that closes each one (EOS, or the template's
  own end-of-turn token such as <|im_end|> when EOS is another; not the template's
  text after it), carry labels. The ids are the tokenization of the whole rendered
  text; a token is trained when its characters overlap a reply (a fast tokenizer's
  offsets: a token the template and the reply share at their boundary is trained),
  or, without offsets, by counting the tokens of the text before and through each
  reply (a `DataError` when those are not a prefix of the whole). A conversation with no
  trained token within `max_length` stays a row without labels (rows stay aligned
  with the dataset) that the trainer skips; if none has one, `DataError`.
- truncation is never silent: one warning per dataset counts the rows cut and the share
  of tokens (and of trained tokens) dropped.
- padding never carries a label (labels are -100 wherever no loss is taken).

`render_prompt`/`encode_prompt` render a conversation for generation the way training
rendered it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from declora.node.data import (
    Chat,
    DataFormat,
    TextDataset,
    column_values,
    is_chat_turns,
    read_texts,
)
from declora.node.data_files import DataError
from declora.node.errors import one_line
from declora.node.model_source import ModelError
from declora.node.models import EOS_HINT, Offsets, Tokenizer

IGNORE = -100  # the label of a token that carries no loss
INSTRUCTION, INPUT, OUTPUT = "instruction", "input", "output"
COMPLETION = "completion"  # accepted for prompt-response when "response" is absent
CONVERSATIONS = "conversations"  # ShareGPT's chat column, when "messages" is absent
CHAT_EXAMPLE = '[{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]'
WARN_DROPPED = 0.01  # a packed dataset's cut final block is a warning from this share on
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LmFormat:
    """How causal-LM rows are read: a format (or auto) and its columns.

    Called on a `datasets.Dataset` (`data.ExampleReader`), it returns the split's texts
    and, for the conversational formats, its chats."""

    data_format: DataFormat = "auto"
    text_column: str = "text"
    messages_column: str = "messages"
    prompt_column: str = "prompt"
    response_column: str = "response"

    def detect(self, columns: Sequence[str]) -> str:
        """The format of a split with these columns ("text" when nothing else fits)."""
        if self.data_format != "auto":
            return self.data_format
        if self.text_column != "text":
            return "text"  # an explicit --text-column wins over the other formats' columns
        if self._messages(columns) in columns:
            return "messages"
        if self.prompt_column in columns and self._response(columns) in columns:
            return "prompt-response"
        if INSTRUCTION in columns and OUTPUT in columns:
            return "instruction"
        return "text"

    def _messages(self, columns: Sequence[str]) -> str:
        """The chat column: `messages_column`, or ShareGPT's "conversations" when the
        default "messages" is absent."""
        if self.messages_column == "messages" and "messages" not in columns:
            return CONVERSATIONS if CONVERSATIONS in columns else self.messages_column
        return self.messages_column

    def _response(self, columns: Sequence[str]) -> str:
        if self.response_column == "response" and "response" not in columns:
            return COMPLETION if COMPLETION in columns else self.response_column
        return self.response_column

    def __call__(self, ds: Any, where: str) -> tuple[tuple[str, ...], tuple[Chat, ...] | None]:
        columns = list(ds.column_names)
        fmt = self.detect(columns)
        if fmt == "text":
            default = self.text_column == "text"  # an explicit one: read_texts names it
            if self.data_format == "auto" and default and self.text_column not in columns:
                raise DataError(
                    f"{where}: no causal-LM columns; columns are {sorted(columns)}",
                    f"give a {self.text_column!r} column, {self.messages_column!r}, "
                    f"{self.prompt_column!r} + {self.response_column!r}, or instruction + "
                    "output (or name yours with --text-column, --messages-column, ...)",
                )
            return read_texts(ds, where, self.text_column), None
        if fmt == "messages":
            column = self._messages(columns)
            values, _ = column_values(ds, where, column, "chat", "--messages-column")
            chats = tuple(_chat(v, n, where, column) for n, v in enumerate(values, 1))
            _warn_unread(where, values)
            _warn_roles(where, chats)
        elif fmt == "prompt-response":
            chats = self._pairs(ds, where, columns)
        else:
            for column in (INSTRUCTION, OUTPUT):
                if column not in columns:
                    raise DataError(
                        f"{where}: no {column!r} column; columns are {sorted(columns)}",
                        "the instruction format reads instruction, input (optional) and output",
                    )
            asks = _strings(ds, where, INSTRUCTION, "instruction", "--data-format")
            outputs = _strings(ds, where, OUTPUT, "output", "--data-format")
            inputs = _inputs(ds, where) if INPUT in columns else [""] * len(asks)
            chats = tuple(
                _one_turn(f"{a}\n\n{i}" if i else a, o)
                for a, i, o in zip(asks, inputs, outputs, strict=True)
            )
        texts = tuple("\n".join(f"{role}: {content}" for role, content in c) for c in chats)
        return texts, chats

    def _pairs(self, ds: Any, where: str, columns: Sequence[str]) -> tuple[Chat, ...]:
        """prompt-response rows: two texts (one user turn and its reply), or TRL's
        conversational form: the prompt a list of turns (no assistant turn: only the
        completion is trained), the completion a list of assistant turns or a text."""
        response = self._response(columns)
        raw, _ = column_values(ds, where, self.prompt_column, "prompt", "--prompt-column")
        if not raw or not is_chat_turns(raw[0]):  # row 1 decides: texts or turns
            prompts = _strings(ds, where, self.prompt_column, "prompt", "--prompt-column")
            responses = _strings(ds, where, response, "response", "--response-column")
            return tuple(_one_turn(p, r) for p, r in zip(prompts, responses, strict=True))
        replies, _ = column_values(ds, where, response, "response", "--response-column")
        chats = []
        for number, (prompt, reply) in enumerate(zip(raw, replies, strict=True), 1):
            at = f"{where}: row {number}"
            if not is_chat_turns(prompt):
                raise DataError(
                    f"{at}: the prompt in {self.prompt_column!r} is not a list of turns "
                    "(row 1's is)",
                    "write every prompt as chat turns, or every prompt as a text",
                )
            turns = _chat_turns(list(prompt), number, where, self.prompt_column)
            if any(role == "assistant" for role, _ in turns):
                raise DataError(
                    f"{at}: the prompt in {self.prompt_column!r} holds an assistant turn",
                    "only the completion is trained: put such a conversation in a 'messages' "
                    "column instead, where every assistant turn is",
                )
            reply_turns = (
                [{"role": "assistant", "content": reply}] if isinstance(reply, str) else reply
            )
            if isinstance(reply_turns, list) and any(
                role != "assistant" for role, _ in _chat_turns(reply_turns, number, where, response)
            ):
                raise DataError(
                    f"{at}: the completion in {response!r} holds a turn that is not the "
                    "assistant's",
                    "the completion is what the model learns to write: assistant turns only",
                )
            completion = _chat(reply_turns, number, where, response)
            chats.append((*turns, *completion))
        _warn_unread(where, [*raw, *replies])
        return tuple(chats)


def _a(word: str) -> str:
    """`word` after its indefinite article ("an instruction", "a prompt")."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _one_turn(prompt: str, response: str) -> Chat:
    return (("user", prompt), ("assistant", response))


def _strings(ds: Any, where: str, column: str, what: str, option: str) -> list[str]:
    """Non-empty strings of `column` (numbers are read as their text)."""
    values, _ = column_values(ds, where, column, what, option)
    out = []
    for number, value in enumerate(values, 1):
        if value is None:
            raise DataError(
                f"{where}: row {number} has no column {column!r}",
                f"every row needs {_a(what)} in {column!r}",
            )
        _check_text(value, where, number, what, column)
        if not str(value).strip():
            raise DataError(
                f"{where}: row {number} has an empty {what} in column {column!r}",
                f"remove the row or give it {_a(what)}",
            )
        out.append(str(value))
    return out


def _check_text(value: object, where: str, number: int, what: str, column: str) -> None:
    """A `DataError` naming the row when a prompt, response, instruction, input or
    output is a list, a mapping or a boolean: never stringified ("['a', 'b']") and
    trained on. Chat turns get a hint to the `messages` format."""
    if isinstance(value, (list, tuple, dict)):
        hint = (
            "these are chat turns: write every row's prompt as turns (row 1's too: TRL's "
            "conversational prompt-completion), or put each whole conversation in one "
            f"'messages' column (--data-format messages), e.g. {CHAT_EXAMPLE}"
            if is_chat_turns(value) or is_chat_turns([value])
            else f"write the {what} as one string (chat data: a 'messages' column of "
            "{role, content} turns)"
        )
        raise DataError(
            f"{where}: row {number}: the {what} in {column!r} is a "
            f"{type(value).__name__}, not a text",
            hint,
        )
    if isinstance(value, float) and value != value:  # NaN: a missing value, not "nan"
        raise DataError(
            f"{where}: row {number} has no {what} in column {column!r} (NaN)",
            f"remove the row or give it {_a(what)}",
        )
    if isinstance(value, bool):
        raise DataError(
            f"{where}: row {number}: the {what} in {column!r} is the boolean "
            f"{str(value).lower()}, not a text",
            f"write the {what} as a string (or check the column names)",
        )


def _inputs(ds: Any, where: str) -> list[str]:
    values, _ = column_values(ds, where, INPUT, "input", "--data-format")
    for number, value in enumerate(values, 1):
        if value is not None:
            _check_text(value, where, number, "input", INPUT)
    return ["" if v is None else str(v).strip() for v in values]


def _chat(value: object, row: int, where: str, column: str) -> Chat:
    """A validated conversation: >= 1 turn, each a role and a text, >= 1 assistant reply."""
    at = f"{where}: row {row}"
    if value is None:
        raise DataError(f"{at} has no column {column!r}", f"every row needs a {column!r} list")
    if not isinstance(value, (list, tuple)) or not value:
        what = "an empty list" if isinstance(value, (list, tuple)) else f"a {type(value).__name__}"
        encoded = isinstance(value, str) and value.lstrip().startswith("[")
        raise DataError(
            f"{at}: {column!r} is {what}, not a list of {{role, content}} turns",
            "the turns are written as JSON text: store them as a list (decode each row's "
            f"text with json.loads before saving), e.g. {CHAT_EXAMPLE}"
            if encoded
            else f"write {CHAT_EXAMPLE}",
        )
    turns = _chat_turns(list(value), row, where, column)
    if not any(role == "assistant" for role, _ in turns):
        found = list(dict.fromkeys(role for role, _ in turns))
        raise DataError(
            f"{at} has no assistant turn (nothing to train on); its roles are {found}",
            "end each conversation with the assistant's reply; the reply's role is "
            "'assistant' (also read: 'model', Gemma's name, and 'gpt' in ShareGPT's "
            "{from, value} turns; a 'role' of 'gpt' or 'human' is not read as ShareGPT's)",
        )
    if not any(_trained(role) for role, _ in turns):
        raise DataError(
            f"{at}: every assistant turn has weight 0 (nothing to train on)",
            "remove the row or give a reply weight 1",
        )
    return turns


class UntrainedRole(str):
    """The role "assistant" of a reply with weight 0: rendered as any assistant turn
    (it equals "assistant"), but none of its tokens carries a label."""

    __slots__ = ()


ASSISTANT_UNTRAINED = UntrainedRole("assistant")
READ_KEYS = frozenset({"role", "content", "weight", "from", "value"})  # ShareGPT: from, value


def _trained(role: str) -> bool:
    """Whether a turn of `role` carries labels: an assistant turn not of weight 0."""
    return role == "assistant" and not isinstance(role, UntrainedRole)


def _weight(turn: Mapping[Any, Any], role: str, at: str, t: int) -> str:
    """`role`, or `ASSISTANT_UNTRAINED` for an assistant turn of weight 0; a weight
    other than 0 or 1, or one on another role's turn, is a `DataError`."""
    weight = turn.get("weight")
    if weight is None:  # absent (a file's other turns give it: the column reads None)
        return role
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight not in (0, 1):
        raise DataError(
            f"{at}: turn {t} ({role}) has weight {weight!r}",
            "a weight is 0 (not trained) or 1 (trained, the default)",
        )
    if role != "assistant":
        raise DataError(
            f"{at}: turn {t} ({role}) has a weight, but only assistant turns are trained",
            "remove the weight from the turns that are not the assistant's",
        )
    return role if weight else ASSISTANT_UNTRAINED


def _warn_unread(where: str, values: Sequence[object]) -> None:
    """One warning naming the keys (with a value) of the turns in `values` (lists of
    turns; anything else is skipped) that are not read."""
    unread = {
        str(key)
        for value in values
        if isinstance(value, (list, tuple))
        for turn in value
        if isinstance(turn, Mapping)
        for key, v in turn.items()
        if key not in READ_KEYS and v is not None  # None: absent from this turn
    }
    if unread:
        _log.warning(
            "%s: the chat turns' keys %s are not read (declora reads role, content and "
            "weight, or ShareGPT's from and value): their information is not trained on",
            where,
            sorted(unread),
        )


KNOWN_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function", "ipython"})
NAMED_ROLES = 8  # roles a message names (speaker names as roles can be thousands)
ROLE_CHARS = 40  # characters of a role a message shows (a role is any string of the file)


def _shown_roles(roles: Sequence[str]) -> list[str]:
    """`roles` as a message names them: each cut to `ROLE_CHARS` characters."""
    return [r if len(r) <= ROLE_CHARS else r[:ROLE_CHARS] + "..." for r in roles]


def _warn_roles(where: str, chats: Sequence[Chat]) -> None:
    """One warning naming the roles other than `KNOWN_ROLES` (a misspelt "assistant",
    "bot"), with the first row of each: their turns are context, never trained."""
    first: dict[str, int] = {}
    for row, chat in enumerate(chats, 1):
        for role, _ in chat:
            if role not in KNOWN_ROLES:
                first.setdefault(role, row)
    if first:
        named = sorted(first)[:NAMED_ROLES]
        more = f" and {len(first) - len(named)} more" if len(first) > len(named) else ""
        _log.warning(
            "%s: the roles %s (first in rows %s)%s are not system, user, assistant or "
            "tool: their turns are rendered as the chat template renders them and are not "
            "trained on (the reply's role is 'assistant')",
            where, _shown_roles(named), [first[r] for r in named], more,
        )  # fmt: skip


SHAREGPT_ROLES = {"human": "user", "gpt": "assistant"}  # ShareGPT's "from" -> role
ROLE_ALIASES = {"model": "assistant"}  # Gemma's name of the assistant (its template maps back)


def _chat_turns(value: list[object], row: int, where: str, column: str) -> Chat:
    """Each turn a role and a text: {role, content}, or ShareGPT's {from, value} (human
    and gpt read as user and assistant); an assistant reply is never empty."""
    at = f"{where}: row {row}"
    turns: list[tuple[str, str]] = []
    for t, turn in enumerate(value, 1):
        if not isinstance(turn, Mapping):
            raise DataError(
                f"{at}: turn {t} is a {type(turn).__name__}, not a {{role, content}} mapping",
                f"write {CHAT_EXAMPLE}",
            )
        sharegpt = "role" not in turn and "from" in turn
        role = turn.get("from") if sharegpt else turn.get("role")
        content = turn.get("value") if sharegpt else turn.get("content")
        if not isinstance(role, str) or not role.strip():
            raise DataError(f"{at}: turn {t} has no role", "give every turn a 'role' string")
        role = role.strip().lower()  # "Assistant", "USER": a template expects lower case
        role = SHAREGPT_ROLES.get(role, role) if sharegpt else role
        role = ROLE_ALIASES.get(role, role)
        if content is None and (turn.get("tool_calls") or turn.get("function_call")):
            raise DataError(
                f"{at}: turn {t} ({role}) is a tool call with no 'content' text: tool calls "
                "are not read, so this turn would be empty",
                "remove the tool-call turn and the 'tool' turns that answer it (or give "
                "the turn a 'content' text to train on)",
            )
        if not isinstance(content, str):
            kind = "none" if content is None else f"a {type(content).__name__}"
            raise DataError(
                f"{at}: turn {t} ({role}) has no text 'content' (it is {kind})",
                "give every turn a 'content' string (content parts such as "
                '[{"type": "text", "text": ...}] are not read: join them into one string)',
            )
        if role == "assistant" and not content.strip():
            raise DataError(
                f"{at}: turn {t} is an empty assistant reply",
                "remove the row or write the reply",
            )
        turns.append((_weight(turn, role, at, t), content))
    return tuple(turns)


# --------------------------------------------------------------------------- rendering


def _messages(chat: Chat) -> list[dict[str, str]]:
    return [{"role": str(role), "content": content} for role, content in chat]


def _as_chat(messages: str | Sequence[Mapping[str, str]]) -> Chat:
    if isinstance(messages, str):
        return (("user", messages),)
    return tuple((str(m["role"]), str(m["content"])) for m in messages)


def _eos(tok: Tokenizer) -> tuple[int, str]:
    """The EOS token's id and text."""
    if tok.eos_token is None or tok.eos_id is None:
        raise ModelError("the tokenizer has no EOS token, which causal-LM training needs", EOS_HINT)
    return tok.eos_id, tok.eos_token


def _appends_eos(tok: Tokenizer) -> bool:
    """Whether `tok.encode` with special tokens ends a text with EOS itself (a tokenizer
    saved with `add_eos_token`): the EOS declora adds then would be a second one."""
    added = tok.encode(["a"], add_special_tokens=True)[0]
    plain = tok.encode(["a"], add_special_tokens=False)[0]
    return added[-1:] == [tok.eos_id] and plain[-1:] != [tok.eos_id]


def _template(tok: Tokenizer, messages: list[dict[str, str]], generation: bool) -> str:
    try:
        return tok.apply_chat_template(messages, add_generation_prompt=generation)
    except Exception as exc:  # a template's own checks (turn order, roles) raise anything
        roles = [m["role"] for m in messages]
        first = next((m["content"] for m in messages if m["role"] == "user"), "")
        shown = str(_shown_roles(roles[:NAMED_ROLES]))
        if len(roles) > NAMED_ROLES:
            shown = f"{shown[:-1]}, ...] ({len(roles)} turns)"
        hint = "check its roles and their order"
        if "system" in roles:
            hint = (
                "this model's template may take no system turn (Gemma's does not): fold "
                "the system text into the first user turn, or " + hint
            )
        elif "system" in str(exc).lower():
            hint = (
                "this model's template may need a system turn first: add one (generate: "
                '--input JSON lines of {"messages": [{"role": "system", "content": ...}, '
                '{"role": "user", "content": ...}]}), or ' + hint
            )
        raise DataError(
            f"the chat template refuses the conversation of roles {shown} whose first user "
            f"turn starts {first[:40]!r}: {one_line(str(exc))}",
            hint,
        ) from exc


def _segments(tok: Tokenizer, chat: Chat) -> list[tuple[str, bool]]:
    """The rendered conversation in pieces (text, trained); trained = an assistant turn
    (not of weight 0) through the end-of-turn text that closes it (`_turn_end`)."""
    _, eos = _eos(tok)
    if not tok.has_chat_template:
        return [(c + eos, _trained(r)) if r == "assistant" else (c + "\n", False) for r, c in chat]
    msgs = _messages(chat)
    full = _template(tok, msgs, False)
    out: list[tuple[str, bool]] = []
    pos = 0
    for i, (role, content) in enumerate(chat):
        if not _trained(role):  # another role's turn, or a reply of weight 0
            continue
        before = _template(tok, msgs[:i], True)
        after = _template(tok, msgs[: i + 1], False)
        if not (after.startswith(before) and full.startswith(after) and len(before) >= pos):
            raise DataError(
                "the chat template renders earlier turns differently once later ones "
                "follow, so the assistant's tokens cannot be located",
                "use a template whose rendering of a conversation's prefix is a prefix of it",
            )
        turn = after[len(before) :]
        cut, _ = _turn_end(tok, turn, content)
        out += [(full[pos : len(before)], False), (turn[:cut], True)]
        pos = len(before) + cut
    out.append((full[pos:], False))
    return [(text, trained) for text, trained in out if text]


def _specials(tok: Tokenizer) -> list[str]:
    """The texts of the tokenizer's special tokens (its added tokens marked special),
    EOS first; for a tokenizer that lists none (`ByteTokenizer`), EOS alone."""
    hf = getattr(tok, "hf", None)
    found = [str(t) for t in getattr(hf, "all_special_tokens", None) or ()]
    added = getattr(hf, "added_tokens_decoder", None) or {}
    found += [str(t.content) for t in added.values() if getattr(t, "special", False)]
    return list(dict.fromkeys([t for t in [tok.eos_token, *found] if t]))


def _turn_end(tok: Tokenizer, turn: str, content: str) -> tuple[int, str | None]:
    """How much of an assistant turn's rendering `turn` (its reply `content`, then the
    template's closing text) is trained, and the end-of-turn text it ends with: the
    first of the tokenizer's special tokens (EOS included) in the closing text, e.g.
    ChatML's <|im_end|> when EOS is <|endoftext|> (Qwen2.5 base) or Gemma's
    <end_of_turn>; the template's text after it (its newline) is not trained. A closing
    with no special token is trained whole (None)."""
    reply = content.strip()
    at = turn.rfind(reply) if reply else -1
    start = at + len(reply) if at >= 0 else 0
    closing = turn[start:]
    marks = [(closing.find(m), m) for m in _specials(tok) if m in closing]
    if not marks:
        return len(turn), None
    where, mark = min(marks, key=lambda found: found[0])
    return start + where + len(mark), mark


# end_of_turn_id's probes: a reply to a user turn, then with a system turn first (for a
# template that requires one)
_PROBE = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
_PROBES = (_PROBE, [{"role": "system", "content": "Be brief."}, *_PROBE])


def end_of_turn_id(tok: Tokenizer) -> int | None:
    """The id of the token that closes a trained assistant turn (`_turn_end`), found by
    rendering a one-reply conversation (with a system turn first when the template
    refuses it without): EOS, or the template's own end-of-turn token; None when the
    template closes a reply with no special token (or refuses both probes)."""
    if not tok.has_chat_template:
        return tok.eos_id
    for msgs in _PROBES:
        try:
            before = _template(tok, msgs[:-1], True)
            after = _template(tok, msgs, False)
        except DataError:
            continue
        if not after.startswith(before):
            return None
        _, mark = _turn_end(tok, after[len(before) :], "Hello")
        ids = tok.encode([mark], add_special_tokens=False)[0] if mark else []
        return ids[0] if len(ids) == 1 else None
    return None


def stop_token_ids(tok: Tokenizer, configured: object = None) -> list[int]:
    """The ids that end a reply, each once: `configured` (a generation_config's
    `eos_token_id`, an int or a list) first, then EOS and `end_of_turn_id`'s token;
    what `generate` stops at and what `export --merge` writes, so both stop alike."""
    given = [configured] if isinstance(configured, int) else configured
    ids: list[int] = []
    for i in [*(given if isinstance(given, list | tuple) else ()), tok.eos_id, end_of_turn_id(tok)]:
        if isinstance(i, int) and not isinstance(i, bool) and i >= 0 and i not in ids:
            ids.append(i)
    return ids


def render_prompt(tok: Tokenizer, messages: str | Sequence[Mapping[str, str]]) -> str:
    """The text a model continues to answer `messages` (a string is one user turn):
    the chat template with its generation prompt, or the plain rendering training uses."""
    chat = _as_chat(messages)
    if tok.has_chat_template:
        return _template(tok, _messages(chat), True)
    return "".join(text for text, _ in _segments(tok, chat))


def encode_prompt(tok: Tokenizer, messages: str | Sequence[Mapping[str, str]]) -> list[int]:
    """`render_prompt`'s ids, tokenized as training tokenizes (special tokens added only
    without a chat template, whose text holds its own: `encode_text`)."""
    text = render_prompt(tok, messages)
    if tok.has_chat_template:
        return tok.encode([text], add_special_tokens=False)[0]
    return encode_text(tok, text)


def encode_text(tok: Tokenizer, text: str) -> list[int]:
    """The ids a model continues `text` from: with the tokenizer's special tokens (a
    BOS), but never an EOS after it, which a tokenizer that appends one would add."""
    ids = tok.encode([text])[0]
    return ids[:-1] if _appends_eos(tok) else ids


# --------------------------------------------------------------------------- encoding


def encode_lm(
    tok: Tokenizer, data: TextDataset, max_length: int, *, packing: bool, scoring: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, labels) for causal-LM `data` (see the module doc).

    What is cut to fit `max_length` is logged as one warning for `data`: the rows
    truncated and the share of tokens dropped (for packing, the final partial block
    when it holds at least `WARN_DROPPED` of the tokens). `scoring`: `predict` asks,
    scoring texts with a saved adapter whose training `max_length` this is; the
    warning then says only the first tokens are scored, and how to score more."""
    what = _what(data)
    if data.chats is not None:
        return _encode_chats(tok, data.chats, max_length, what)
    eos, _ = _eos(tok)
    added = [eos] if not _appends_eos(tok) else []  # one EOS after each document
    docs = [[*ids, *added] for ids in tok.encode(list(data.texts))]
    total = sum(len(d) for d in docs)
    if not packing:
        seqs = [d[:max_length] for d in docs]
        long = sum(len(d) > max_length for d in docs)
        if long and scoring:
            _log.warning(
                "%d of %d texts are longer than the adapter's training --max-length of %d "
                "tokens: only their first %d tokens are scored (%s of the tokens are not); "
                "to score more, retrain the adapter with a larger --max-length",
                long,
                len(docs),
                max_length,
                max_length,
                _share(total - sum(len(q) for q in seqs), total),
            )
        elif long:
            _log.warning(
                "%s: %d of %d texts are longer than --max-length %d tokens and are "
                "truncated: %s of the tokens are dropped, those texts' EOS included (raise "
                "--max-length, or leave packing on: it keeps every token but the final "
                "partial block)",
                what,
                long,
                len(docs),
                max_length,
                _share(total - sum(len(q) for q in seqs), total),
            )
        return _padded(seqs, seqs, max_length, tok.pad_id)
    stream = [t for d in docs for t in d]
    blocks = len(stream) // max_length
    if blocks == 0:
        test = data.name == "test"
        raise DataError(
            f"{what}: {len(data)} text(s) hold {len(stream)} tokens, less than one block of "
            f"max_length={max_length}",
            (
                "give the data more text (the test split is a fifth of a data file's "
                "rows, or a saved dataset's own 'test' split)"
                if test
                else "give this node more text"
            )
            + ", lower --max-length or pass --no-packing",
        )
    dropped = len(stream) - blocks * max_length
    if dropped and dropped >= WARN_DROPPED * len(stream):
        _log.warning(
            "%s: packing into blocks of --max-length %d tokens drops the final partial "
            "block: %d of %d tokens (%s) are not used (lower --max-length, or pass "
            "--no-packing)",
            what,
            max_length,
            dropped,
            len(stream),
            _share(dropped, len(stream)),
        )
    ids = torch.tensor(stream[: blocks * max_length], dtype=torch.long).view(blocks, max_length)
    return ids, torch.ones_like(ids), ids.clone()


def _what(data: TextDataset) -> str:
    """How a warning or an error names `data`."""
    return {"train": "training data", "test": "the held-out test split"}.get(
        data.name, "causal-LM data"
    )


def _share(part: int, whole: int) -> str:
    return f"{100 * part / max(whole, 1):.1f}%"


def _encode_chats(
    tok: Tokenizer, chats: Sequence[Chat], max_length: int, what: str = "causal-LM data"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Conversations, one example each, cut to `max_length`. A conversation none of
    whose trained tokens fits is kept as a row with no labels (rows stay aligned with
    the dataset's) and counted in a warning; the trainer skips it. None fitting at all
    is a `DataError`."""
    _warn_rendered(tok, chats, what)
    if not tok.has_chat_template:
        _log.warning(
            "%s: the tokenizer has no chat template, so conversations are rendered as "
            "plain text: each turn's content on a line of its own, the assistant's closed "
            "by EOS (%r), with no role marks (system, user and assistant turns look "
            "alike); use a model with a chat template (an instruct model) to train the "
            "format it will be prompted in",
            what,
            tok.eos_token,
        )
    seqs: list[list[int]] = []
    labels: list[list[int]] = []
    total = kept = trained = trained_kept = long = cut = empty = 0
    try:
        pieces = [_segments(tok, chat) for chat in chats]
    except DataError as exc:
        raise DataError(f"{what}: {exc.message}", exc.hint) from exc
    for ids, lab in _labelled(tok, pieces):
        targets = sum(v != IGNORE for v in lab[1:])  # the model shifts labels by one
        fitting = sum(v != IGNORE for v in lab[1:max_length])
        total, kept = total + len(ids), kept + min(len(ids), max_length)
        trained, trained_kept = trained + targets, trained_kept + fitting
        long += len(ids) > max_length
        cut += fitting < targets
        empty += fitting == 0
        seqs.append(ids[:max_length])
        labels.append(lab[:max_length])
    if chats and empty == len(chats):
        raise DataError(
            f"{what}: no conversation has a trained (assistant) token within "
            f"--max-length {max_length} ({len(chats)} conversation(s): their prompts fill it)",
            "raise --max-length or shorten the conversations",
        )
    if long:
        _log.warning(
            "%s: %d of %d conversations are longer than --max-length %d tokens and are "
            "truncated: %s of the tokens and %s of the trained (assistant) tokens are "
            "dropped; %d lose the end of a reply, the end-of-turn token that closes it "
            "included, so the model is not taught to stop there%s (raise --max-length)",
            what,
            long,
            len(chats),
            max_length,
            _share(total - kept, total),
            _share(trained - trained_kept, trained),
            cut,
            f"; no trained token is left in {empty} of them, which training skips" if empty else "",
        )
    return _padded(seqs, labels, max_length, tok.pad_id)


def special_tokens_in(tok: Tokenizer, texts: Sequence[str]) -> list[str | None]:
    """For each of `texts`, the first of the tokenizer's special tokens (of more than one
    character: a chat template's marks, EOS) it holds, else None."""
    marks = [m for m in _specials(tok) if len(m) > 1]
    if not marks:
        return [None] * len(texts)
    pattern = re.compile("|".join(re.escape(m) for m in sorted(marks, key=len, reverse=True)))
    return [hit.group(0) if (hit := pattern.search(text)) else None for text in texts]


def _warn_rendered(tok: Tokenizer, chats: Sequence[Chat], what: str) -> None:
    """One warning when turns' texts hold the tokenizer's special tokens (a chat
    template's marks such as <|im_start|>, or EOS), which the tokenizer reads as those
    tokens: text already rendered with a template is rendered again, its marks doubled."""
    hits = [
        next(filter(None, special_tokens_in(tok, [c for _, c in chat])), None) for chat in chats
    ]
    found = [hit for hit in hits if hit is not None]
    if found:
        _log.warning(
            "%s: %d of %d conversations hold the tokenizer's special token %r in a turn's "
            "text, where it is read as that token, not as its characters: text already "
            "rendered with a chat template is rendered again (its marks doubled), and a text "
            "that only names the token trains the token itself; give each turn its plain text "
            "(or train rendered text as documents: --data-format text)",
            what, len(found), len(chats), found[0][:40],
        )  # fmt: skip


def _labelled(
    tok: Tokenizer, pieces: Sequence[list[tuple[str, bool]]]
) -> list[tuple[list[int], list[int]]]:
    """Each rendered conversation's ids (the tokenization of its whole text) and labels.

    With a fast tokenizer's character offsets, a token is trained when its characters
    overlap a trained piece: a token the template and the reply share at their boundary
    (" Paris" after "ASSISTANT:", a newline merged into the reply's first one) is
    trained; a token with no characters of its own (an added BOS) never is. Without
    offsets, each trained piece's bounds are found by tokenizing the text before and
    through it, which must give a prefix of the whole text's ids, else `DataError`."""
    texts = ["".join(text for text, _ in segs) for segs in pieces]
    special = not tok.has_chat_template  # a chat template's text holds its own
    # the plain rendering closes a reply with EOS itself: not a second from the tokenizer
    cut = 1 if special and _appends_eos(tok) else 0
    offsets = _offsets(tok, texts, special)
    out = []
    if offsets is not None:
        for segs, (whole, marks) in zip(pieces, offsets, strict=True):
            ids, spans = whole[: len(whole) - cut], marks[: len(marks) - cut]
            trained, pos = [], 0
            for text, is_trained in segs:
                trained += [(pos, pos + len(text))] if is_trained else []
                pos += len(text)
            lab = [
                i if s < e and any(s < b and e > a for a, b in trained) else IGNORE
                for i, (s, e) in zip(ids, spans, strict=True)
            ]
            out.append((ids, lab))
        return out
    # every prefix at a piece boundary, tokenized from the start (the last is the whole)
    prefixes = [
        "".join(text for text, _ in segs[: k + 1]) for segs in pieces for k in range(len(segs))
    ]
    encoded = iter(tok.encode(prefixes, add_special_tokens=special))
    for segs in pieces:
        prefix_ids = [(ids := next(encoded))[: len(ids) - cut] for _ in segs]
        ids = prefix_ids[-1]
        lab, start = [IGNORE] * len(ids), 0
        for (text, is_trained), head in zip(segs, prefix_ids, strict=True):
            if head != ids[: len(head)]:
                raise DataError(
                    f"the tokenizer merges the text before and after {text[-20:]!r} into one "
                    "token, and gives no character offsets to tell the reply's tokens from "
                    "the template's",
                    "use the model's fast tokenizer (its tokenizer.json), or a chat template "
                    "whose text before each reply ends where a token ends (no trailing space)",
                )
            if is_trained:
                lab[start : len(head)] = ids[start : len(head)]
            start = max(start, len(head))
        out.append((ids, lab))
    return out


def _offsets(tok: Tokenizer, texts: list[str], special: bool) -> Offsets | None:
    """`tok.offsets` of `texts`; None when there are none to give (no texts, or a
    tokenizer without offsets: labelled by token counts, as a slow tokenizer is)."""
    return tok.offsets(texts, add_special_tokens=special) if texts else None


def _padded(
    seqs: Sequence[list[int]], labels: Sequence[list[int]], max_length: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.full((len(seqs), max_length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), max_length), dtype=torch.long)
    lab = torch.full((len(seqs), max_length), IGNORE, dtype=torch.long)
    for row, (seq, label) in enumerate(zip(seqs, labels, strict=True)):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
        lab[row, : len(label)] = torch.tensor(label, dtype=torch.long)
    return ids, mask, lab
