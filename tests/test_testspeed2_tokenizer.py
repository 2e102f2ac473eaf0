"""The byte tokenizer reads only the bytes that fit in `max_length` (a long text
cost a pass over all of its bytes per encode: 14 million in one study test)."""

from __future__ import annotations

import torch

from declora.node.models import ByteTokenizer


class _CountedBytes(bytes):
    """Bytes that count what is iterated over them (a slice is plain bytes)."""

    read = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        for b in super().__iter__():
            _CountedBytes.read += 1
            yield b


class _Text(str):
    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return _CountedBytes(super().encode(encoding, errors))


def test_a_long_text_is_read_only_as_far_as_it_fits() -> None:
    _CountedBytes.read = 0
    long = _Text("é" * 5000)  # two bytes each
    ids, mask = ByteTokenizer()([long, "ab"], 8)
    assert _CountedBytes.read <= 8
    full = ByteTokenizer().encode([str(long), "ab"])
    assert ids[0].tolist() == full[0][:8]  # BOS, then the first 7 bytes (a cut character)
    assert ids[1].tolist() == [1, 100, 101, 0, 0, 0, 0, 0]
    assert mask.tolist() == [[1] * 8, [1, 1, 1, 0, 0, 0, 0, 0]]
    assert ByteTokenizer()(["abc"], 0)[0].shape == torch.Size([1, 0])
