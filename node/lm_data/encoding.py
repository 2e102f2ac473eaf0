"""Tokenising and label masking: causal-LM rows as (input_ids, attention_mask,
labels) for training (`encode_lm`: packed texts, one text a row, or conversations
whose assistant tokens alone carry labels); see the package doc for what it keeps."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from declora.node.data import Chat, TextDataset
from declora.node.data_files import DataError
from declora.node.lm_data.chat_template import appends_eos, eos_of, segments, special_tokens_in
from declora.node.tokenizers import Offsets, Tokenizer

IGNORE = -100  # the label of a token that carries no loss
IDS = torch.int32  # ids and labels as held (half of int64: a token id is < 2**31)
MASK = torch.int8  # the attention mask as held
WARN_DROPPED = 0.01  # a packed dataset's cut final block is a warning from this share on
# Rows tokenized at a time: only a chunk's Python lists of ids and offsets live at once
# (a 10 MB chat file's 12,425 rows, all at once, took 580 MB more), beside the tensors.
CHUNK = 1024
_log = logging.getLogger(__name__)


def encode_lm(
    tok: Tokenizer, data: TextDataset, max_length: int, *, packing: bool, scoring: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, labels) for causal-LM `data` (see the module doc).

    What is cut to fit `max_length` is logged as one warning for `data`: the rows
    truncated and the share of tokens dropped (for packing, the final partial block
    when it holds at least `WARN_DROPPED` of the tokens). `scoring`: `predict` asks,
    scoring texts with a saved adapter whose training `max_length` this is; the
    warning then says only the first tokens are scored, and how to score more.

    The tensors are read-only and compact: ids and labels `IDS`, the mask `MASK`;
    with `packing` the mask is one row expanded and the labels are the ids tensor
    itself (index them, as `Encoded.take` does, for rows of your own)."""
    what = _what(data)
    if data.chats is not None:
        return _encode_chats(tok, data.chats, max_length, what)
    eos, _ = eos_of(tok)
    added = [eos] if not appends_eos(tok) else []  # one EOS after each document
    if not packing:
        return _encode_rows(tok, data.texts, added, max_length, what, scoring)
    parts, total = [], 0
    for start in range(0, len(data.texts), CHUNK):
        chunk = tok.encode(list(data.texts[start : start + CHUNK]))
        flat = [t for ids in chunk for t in (*ids, *added)]
        parts.append(torch.tensor(flat, dtype=IDS))
        total += len(flat)
    blocks = total // max_length
    if blocks == 0:
        test = data.name == "test"
        raise DataError(
            f"{what}: {len(data)} text(s) hold {total} tokens, less than one block of "
            f"max_length={max_length}",
            (
                "give the data more text (the test split is a fifth of a data file's "
                "rows, or a saved dataset's own 'test' split)"
                if test
                else "give this node more text"
            )
            + ", lower --max-length or pass --no-packing",
        )
    dropped = total - blocks * max_length
    if dropped and dropped >= WARN_DROPPED * total:
        _log.warning(
            "%s: packing into blocks of --max-length %d tokens drops the final partial "
            "block: %d of %d tokens (%s) are not used (lower --max-length, or pass "
            "--no-packing)",
            what,
            max_length,
            dropped,
            total,
            percent(dropped, total),
        )
    ids = torch.cat(parts)[: blocks * max_length].view(blocks, max_length)
    # every position is attended and is its own label: one row of ones, expanded, and
    # the ids themselves, not two more tensors of the ids' size (read them, never write)
    return ids, torch.ones((1, max_length), dtype=MASK).expand_as(ids), ids


def _encode_rows(
    tok: Tokenizer,
    texts: Sequence[str],
    added: list[int],
    max_length: int,
    what: str,
    scoring: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One example a text (its ids and `added`), cut to `max_length`; what was cut is
    one warning (see `encode_lm`)."""
    out = _empty(len(texts), max_length, tok.pad_id)
    total = kept = long = 0
    for start in range(0, len(texts), CHUNK):
        chunk = tok.encode(list(texts[start : start + CHUNK]))
        for row, ids in enumerate(chunk, start):
            seq = [*ids, *added]
            total, kept, long = (
                total + len(seq),
                kept + min(len(seq), max_length),
                long + (len(seq) > max_length),
            )
            _fill(out, row, seq[:max_length], seq[:max_length])
    if long and scoring:
        _log.warning(
            "%d of %d texts are longer than the adapter's training --max-length of %d "
            "tokens: only their first %d tokens are scored (%s of the tokens are not); "
            "to score more, retrain the adapter with a larger --max-length",
            long,
            len(texts),
            max_length,
            max_length,
            percent(total - kept, total),
        )
    elif long:
        _log.warning(
            "%s: %d of %d texts are longer than --max-length %d tokens and are "
            "truncated: %s of the tokens are dropped, those texts' EOS included (raise "
            "--max-length, or leave packing on: it keeps every token but the final "
            "partial block)",
            what,
            long,
            len(texts),
            max_length,
            percent(total - kept, total),
        )
    return out


def _what(data: TextDataset) -> str:
    """How a warning or an error names `data`."""
    return {"train": "training data", "test": "the held-out test split"}.get(
        data.name, "causal-LM data"
    )


def percent(part: int, whole: int) -> str:
    """`part` of `whole` to 0.1%; "under 0.1%" when some but not that much (a warning
    that texts were cut said "0.0% of the tokens are dropped")."""
    share = 100 * part / max(whole, 1)
    return "under 0.1%" if 0 < share < 0.05 else f"{share:.1f}%"


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
    out = _empty(len(chats), max_length, tok.pad_id)
    total = kept = trained = trained_kept = long = cut = empty = 0
    for start in range(0, len(chats), CHUNK):
        try:
            pieces = [segments(tok, chat) for chat in chats[start : start + CHUNK]]
        except DataError as exc:
            raise DataError(f"{what}: {exc.message}", exc.hint) from exc
        for row, (ids, lab) in enumerate(_labelled(tok, pieces), start):
            targets = sum(v != IGNORE for v in lab[1:])  # the model shifts labels by one
            fitting = sum(v != IGNORE for v in lab[1:max_length])
            total, kept = total + len(ids), kept + min(len(ids), max_length)
            trained, trained_kept = trained + targets, trained_kept + fitting
            long += len(ids) > max_length
            cut += fitting < targets
            empty += fitting == 0
            _fill(out, row, ids[:max_length], lab[:max_length])
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
            percent(total - kept, total),
            percent(trained - trained_kept, trained),
            cut,
            f"; no trained token is left in {empty} of them, which training skips" if empty else "",
        )
    return out


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
    cut = 1 if special and appends_eos(tok) else 0
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


def _empty(
    rows: int, max_length: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, mask, labels) of `rows` examples holding only padding."""
    ids = torch.full((rows, max_length), pad_id, dtype=IDS)
    mask = torch.zeros((rows, max_length), dtype=MASK)
    return ids, mask, torch.full((rows, max_length), IGNORE, dtype=IDS)


def _fill(
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    row: int,
    seq: list[int],
    label: list[int],
) -> None:
    """Row `row` of `out` set to `seq` and its `label`, padded."""
    ids, mask, lab = out
    ids[row, : len(seq)] = torch.tensor(seq, dtype=IDS)
    mask[row, : len(seq)] = 1
    lab[row, : len(label)] = torch.tensor(label, dtype=IDS)
