"""Chat templates and rendering: a conversation rendered as training renders it (the
tokenizer's chat template, else plain text closed by EOS), its trained pieces
(`segments`), the token that ends a reply, and a prompt rendered for generation."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from declora.node.data import Chat
from declora.node.data_files import DataError
from declora.node.errors import one_line
from declora.node.lm_data.rows import NAMED_ROLES, is_trained, shown_roles
from declora.node.model_source import ModelError
from declora.node.tokenizers import EOS_HINT, Tokenizer


def _messages(chat: Chat) -> list[dict[str, str]]:
    return [{"role": str(role), "content": content} for role, content in chat]


def _as_chat(messages: str | Sequence[Mapping[str, str]]) -> Chat:
    if isinstance(messages, str):
        return (("user", messages),)
    return tuple((str(m["role"]), str(m["content"])) for m in messages)


def eos_of(tok: Tokenizer) -> tuple[int, str]:
    """The EOS token's id and text."""
    if tok.eos_token is None or tok.eos_id is None:
        raise ModelError("the tokenizer has no EOS token, which causal-LM training needs", EOS_HINT)
    return tok.eos_id, tok.eos_token


def appends_eos(tok: Tokenizer) -> bool:
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
        shown = str(shown_roles(roles[:NAMED_ROLES]))
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


def segments(tok: Tokenizer, chat: Chat) -> list[tuple[str, bool]]:
    """The rendered conversation in pieces (text, trained); trained = an assistant turn
    (not of weight 0) through the end-of-turn text that closes it (`_turn_end`)."""
    _, eos = eos_of(tok)
    if not tok.has_chat_template:
        return [
            (c + eos, is_trained(r)) if r == "assistant" else (c + "\n", False) for r, c in chat
        ]
    msgs = _messages(chat)
    full = _template(tok, msgs, False)
    out: list[tuple[str, bool]] = []
    pos = 0
    for i, (role, content) in enumerate(chat):
        if not is_trained(role):  # another role's turn, or a reply of weight 0
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
    return "".join(text for text, _ in segments(tok, chat))


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
    return ids[:-1] if appends_eos(tok) else ids


def special_tokens_in(tok: Tokenizer, texts: Sequence[str]) -> list[str | None]:
    """For each of `texts`, the first of the tokenizer's special tokens (of more than one
    character: a chat template's marks, EOS) it holds, else None."""
    marks = [m for m in _specials(tok) if len(m) > 1]
    if not marks:
        return [None] * len(texts)
    pattern = re.compile("|".join(re.escape(m) for m in sorted(marks, key=len, reverse=True)))
    return [hit.group(0) if (hit := pattern.search(text)) else None for text in texts]
