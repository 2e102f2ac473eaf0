"""Tokenizers: what declora asks of one (`Tokenizer`), the byte tokenizer of the tiny
test models (`ByteTokenizer`) and the wrapper of a transformers tokenizer
(`HFTokenizer`), with the checks a model folder's tokenizer must pass before its
weights load. Callers may rely on:

- `tok(texts, max_length)` gives right-padded, truncated (ids, mask) long tensors of
  shape (len(texts), max_length); `encode` gives unpadded, untruncated ids;
- `truncate_counted` gives the same tensors plus what truncation cut;
- `check_special_tokens` and `check_vocab` raise a one-line `ModelError` with a hint.

Building a base model around a tokenizer is `models.py`'s, which imports this module
(and re-exports its names); nothing here imports `models`.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from declora.node.model_source import ModelError, Task

# each text's ids and each id's character span (start, end) in it: `Tokenizer.offsets`
Offsets = list[tuple[list[int], list[tuple[int, int]]]]


class Tokenizer(Protocol):
    """The part of a tokenizer declora uses: texts -> padded id and mask tensors; for
    causal LM also unpadded ids, the EOS token, a chat template and character offsets
    (node/lm_data/)."""

    @property
    def pad_id(self) -> int: ...
    @property
    def eos_id(self) -> int | None: ...
    @property
    def eos_token(self) -> str | None: ...
    @property
    def has_chat_template(self) -> bool: ...

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def encode(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        """Each text's ids, unpadded and untruncated; the EOS token's text maps to `eos_id`."""
        ...

    def apply_chat_template(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = False
    ) -> str:
        """The conversation rendered as text (only when `has_chat_template`)."""
        ...

    def decode(self, ids: list[int]) -> str:
        """Ids back to text, special tokens dropped."""
        ...

    def offsets(self, texts: list[str], add_special_tokens: bool = True) -> Offsets | None:
        """Each text's ids (as `encode` gives them) and each id's character span
        (start, end) in the text, empty for a token with no characters of its own (an
        added BOS); None when this tokenizer gives no offsets (a slow transformers
        tokenizer, the byte tokenizer)."""
        ...


class ByteTokenizer:
    """UTF-8 bytes as ids (0 = pad, 1 = bos, 2 = eos, bytes at 3..258); for the tiny
    test models. `encode` reads the text "</s>" as EOS; the built-in chat template
    renders each turn as "<|role|>\\n" + content + "</s>\\n"."""

    vocab_size = 259
    pad_id = 0
    eos_id = 2
    eos_token = "</s>"
    has_chat_template = True

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros((len(texts), max_length), dtype=torch.long)
        mask = torch.zeros((len(texts), max_length), dtype=torch.long)
        for row, text in enumerate(texts):
            # only the bytes that fit are read (a long text costs no more than a short one)
            raw = [1, *(b + 3 for b in text.encode("utf-8")[:max_length])][:max_length]
            ids[row, : len(raw)] = torch.tensor(raw, dtype=torch.long)
            mask[row, : len(raw)] = 1
        return ids, mask

    def encode(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        out = []
        for text in texts:
            ids = [1] if add_special_tokens else []
            for k, piece in enumerate(text.split(self.eos_token)):
                ids.extend([self.eos_id] if k else [])
                ids.extend(b + 3 for b in piece.encode("utf-8"))
            out.append(ids)
        return out

    def apply_chat_template(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = False
    ) -> str:
        turns = "".join(f"<|{m['role']}|>\n{m['content']}{self.eos_token}\n" for m in messages)
        return turns + ("<|assistant|>\n" if add_generation_prompt else "")

    def decode(self, ids: list[int]) -> str:
        return bytes(i - 3 for i in ids if 3 <= i < self.vocab_size).decode(errors="replace")

    def offsets(self, texts: list[str], add_special_tokens: bool = True) -> Offsets | None:
        return None  # none given: lm_data labels a chat's pieces by their token counts


CUT_BATCH = 256  # texts encoded again at a time to count what truncation dropped


def truncate_counted(
    tokenizer: Tokenizer, texts: list[str], max_length: int
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """`tokenizer(texts, max_length)` plus (texts cut, content tokens dropped). A fast
    transformers tokenizer reports what it cut as it truncates (its `overflowing`
    pieces: nothing is encoded twice); any other encodes again, CUT_BATCH at a time,
    only the texts that fill all `max_length` positions."""
    if isinstance(tokenizer, HFTokenizer):
        counted = tokenizer.truncate(texts, max_length)
        if counted is not None:
            return counted
    ids, mask = tokenizer(texts, max_length)
    full = (mask.sum(dim=1) >= max_length).nonzero().flatten().tolist()
    cut = dropped = 0
    for start in range(0, len(full), CUT_BATCH):
        batch = [texts[i] for i in full[start : start + CUT_BATCH]]
        for over in (len(row) - max_length for row in tokenizer.encode(batch)):
            cut, dropped = cut + (over > 0), dropped + max(over, 0)
    return ids, mask, cut, dropped


# how to give a model folder's tokenizer the EOS (and pad) token it lacks
EOS_HINT = (
    "set eos_token (and/or pad_token) in the model folder's tokenizer_config.json to a "
    'token of its vocabulary, e.g. "eos_token": "</s>"'
)


def check_special_tokens(name: str, tokenizer: object, task: Task) -> None:
    """`ModelError` (with `EOS_HINT`) when the transformers `tokenizer` of model `name`
    lacks a token the task needs: an EOS token for "lm" (each text and reply ends with
    it), a pad or an EOS token for "cls" (padding)."""
    eos = getattr(tokenizer, "eos_token", None) is not None
    eos = eos and getattr(tokenizer, "eos_token_id", None) is not None
    if task == "lm" and not eos:
        why = "no EOS token, which causal-LM training needs"
    elif not eos and getattr(tokenizer, "pad_token", None) is None:
        why = "neither a pad nor an EOS token, which padding needs"
    else:
        return
    raise ModelError(f"the tokenizer of model {name!r} has {why}", EOS_HINT)


def check_vocab(name: str, config: Any, tokenizer: Any) -> None:
    """`ModelError` when the tokenizer of model `name` has more tokens than the model's
    config embeds (`vocab_size`): a text with one of the extra tokens would index past
    the embedding mid-run. A config that names no vocab size is not checked."""
    cfg = getattr(config, "text_config", None) or config
    embeds = getattr(cfg, "vocab_size", None)
    if not isinstance(embeds, int) or isinstance(embeds, bool) or embeds <= 0:
        return
    tokens = len(tokenizer)
    if tokens <= embeds:
        return
    raise ModelError(
        f"the tokenizer of model {name!r} has {tokens} tokens, but the model embeds only "
        f"{embeds} (vocab_size in its config.json): a token id past {embeds - 1} would "
        "crash training",
        "use the tokenizer saved with these weights; after adding tokens to a tokenizer, "
        "call model.resize_token_embeddings(len(tokenizer)) and save_pretrained the model",
    )


class HFTokenizer:
    """Adapter around a transformers tokenizer with right padding and truncation."""

    def __init__(self, tokenizer: object) -> None:
        """Without a pad token the EOS token pads (`check_special_tokens` first)."""
        self._tok = tokenizer
        if getattr(tokenizer, "pad_token", None) is None:
            tokenizer.pad_token = tokenizer.eos_token  # type: ignore[attr-defined]
        self.pad_id = int(tokenizer.pad_token_id)  # type: ignore[attr-defined]
        self.eos_id: int | None = getattr(tokenizer, "eos_token_id", None)
        self.eos_token: str | None = getattr(tokenizer, "eos_token", None)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self._tok, "chat_template", None))

    @property
    def hf(self) -> Any:
        """The wrapped transformers tokenizer (to save it beside an exported model)."""
        return self._tok

    def _padded(self, texts: list[str], max_length: int) -> Any:
        return self._tok(  # type: ignore[operator]
            texts,
            padding="max_length",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._padded(texts, max_length)
        return out["input_ids"], out["attention_mask"]

    def truncate(
        self, texts: list[str], max_length: int
    ) -> tuple[torch.Tensor, torch.Tensor, int, int] | None:
        """`self(texts, max_length)` and (texts cut, content tokens dropped), read from
        the fast tokenizer's overflowing pieces; None for a slow tokenizer."""
        if not getattr(self._tok, "is_fast", False) or not texts:
            return None
        out = self._padded(texts, max_length)
        if out.encodings is None:
            return None
        cut = dropped = 0
        for encoding in out.encodings:
            pieces = [
                sum(m > s for m, s in zip(o.attention_mask, o.special_tokens_mask, strict=True))
                for o in encoding.overflowing
            ]
            cut, dropped = cut + bool(pieces), dropped + sum(pieces)
        return out["input_ids"], out["attention_mask"], cut, dropped

    def encode(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        if not texts:
            return []
        out = self._tok(texts, add_special_tokens=add_special_tokens, verbose=False)  # type: ignore[operator]
        return [list(ids) for ids in out["input_ids"]]

    def apply_chat_template(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = False
    ) -> str:
        rendered = self._tok.apply_chat_template(  # type: ignore[attr-defined]
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return str(rendered)

    def decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=True))  # type: ignore[attr-defined]

    def offsets(self, texts: list[str], add_special_tokens: bool = True) -> Offsets | None:
        """A fast (Rust) tokenizer's offsets; None for a slow one."""
        if not getattr(self._tok, "is_fast", False):
            return None
        if not texts:
            return []
        out = self._tok(  # type: ignore[operator]
            texts,
            add_special_tokens=add_special_tokens,
            return_offsets_mapping=True,
            verbose=False,
        )
        return [
            ([int(i) for i in ids], [(int(s), int(e)) for s, e in spans])
            for ids, spans in zip(out["input_ids"], out["offset_mapping"], strict=True)
        ]
