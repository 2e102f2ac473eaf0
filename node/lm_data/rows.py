"""Reading causal-LM rows: the formats a user's rows come in (`LmFormat`), each row
checked and read as texts or chats (see the package doc for the formats and turns)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from declora.node.data import Chat, DataFormat, column_values, is_chat_turns, read_texts
from declora.node.data_files import DataError

INSTRUCTION, INPUT, OUTPUT = "instruction", "input", "output"
COMPLETION = "completion"  # accepted for prompt-response when "response" is absent
CONVERSATIONS = "conversations"  # ShareGPT's chat column, when "messages" is absent
CHAT_EXAMPLE = '[{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]'
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
    if not any(is_trained(role) for role, _ in turns):
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


def is_trained(role: str) -> bool:
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


def shown_roles(roles: Sequence[str]) -> list[str]:
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
            "%s: the roles %s (first in rows %s)%s are not system, user, assistant or tool "
            "(nor developer, function or ipython): their turns are rendered as the chat "
            "template renders them and are not trained on (the reply's role is 'assistant')",
            where, shown_roles(named), [first[r] for r in named], more,
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
