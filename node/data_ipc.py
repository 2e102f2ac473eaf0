"""How many bytes an Arrow IPC (.arrow) file takes decoded, found without decoding it."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

# MessageHeader union members: the messages whose body is read into a table
_DICTIONARY_BATCH, _RECORD_BATCH = 2, 3


def ipc_decoded(inner: Path) -> int:
    """Bytes Arrow IPC file `inner` (stream or file format) takes decoded, at most:
    its record and dictionary batches' buffers (`_message_decoded`: no batch is
    decoded, so a small file of compressed repeated values costs no memory), and the
    values of its dictionary-encoded columns (nested in a struct or a list too), which
    `datasets` decodes, counted through their dictionaries (`_dictionary_values`).
    `struct.error` or an Arrow error for a file that is not IPC (an IndexError for one
    whose metadata points past its end)."""
    import pyarrow as pa

    with pa.memory_map(str(inner)) as source:
        file_format = source.read(6) == b"ARROW1"
        source.seek(8 if file_format else 0)  # the file format: its magic, then a stream
        total = sum(_message_decoded(m) for m in pa.ipc.MessageReader.open_stream(source))
        source.seek(0)
        schema = (pa.ipc.open_file if file_format else pa.ipc.open_stream)(source).schema
        for i, field in enumerate(schema):
            if _has_dictionary(pa, field.type):
                source.seek(0)
                total += _dictionary_values(pa, source, file_format, i)
    return total


def _dictionary_values(pa: Any, source: Any, file_format: bool, column: int) -> int:
    """Bytes the dictionary-encoded values in `column` of the IPC file open as `source`
    take decoded (`_decoded`), read a batch at a time (only that column is read)."""
    options = pa.ipc.IpcReadOptions(included_fields=[column])
    if file_format:
        reader = pa.ipc.open_file(source, options=options)
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    else:
        batches = iter(pa.ipc.open_stream(source, options=options))
    return sum(_decoded(pa, batch.column(0)) for batch in batches)


def _has_dictionary(pa: Any, kind: Any) -> bool:
    """Whether Arrow type `kind` is, or holds, a dictionary type."""
    if pa.types.is_dictionary(kind):
        return True
    return any(_has_dictionary(pa, kind.field(i).type) for i in range(kind.num_fields))


def _decoded(pa: Any, values: Any) -> int:
    """Bytes the dictionary arrays in and under Arrow array `values` take decoded: each
    value's length and 8 (its offset) for texts and bytes, through the dictionary;
    other value types decoded. A struct's or union's fields and a list's or map's
    values are searched whole (an upper bound of a slice's)."""
    import pyarrow.compute as pc

    kind = values.type
    if pa.types.is_dictionary(kind):
        value = kind.value_type
        if (
            pa.types.is_string(value)
            or pa.types.is_large_string(value)
            or pa.types.is_binary(value)
            or pa.types.is_large_binary(value)
        ):
            lengths = pc.take(pc.binary_length(values.dictionary), values.indices)
            return int(pc.sum(lengths).as_py() or 0) + 8 * len(values)
        return int(pc.take(values.dictionary, values.indices).nbytes)
    if pa.types.is_struct(kind) or pa.types.is_union(kind):
        inside = [values.field(i) for i in range(kind.num_fields)]
    else:
        inside = [values.values] if kind.num_fields else []
    return sum(_decoded(pa, inner) for inner in inside)


def _message_decoded(message: Any) -> int:
    """Bytes IPC `message`'s buffers take decoded (0 for a schema), read from its
    flatbuffer metadata and, when compressed, each buffer's 8-byte decoded length."""
    meta = memoryview(message.metadata)
    root = _table(meta, _u32(meta, 0))
    kind = root(1)
    if kind is None or meta[kind] not in (_DICTIONARY_BATCH, _RECORD_BATCH):
        return 0
    header = _table(meta, _ref(meta, root(2)))
    batch = _table(meta, _ref(meta, header(1))) if meta[kind] == _DICTIONARY_BATCH else header
    buffers, compressed = batch(2), batch(3) is not None
    if buffers is None:
        return 0
    at = _ref(meta, buffers)
    body = memoryview(message.body) if compressed else None
    total = 0
    for k in range(_u32(meta, at)):
        offset, length = struct.unpack_from("<qq", meta, at + 4 + 16 * k)
        if body is not None and length >= 8:
            (decoded,) = struct.unpack_from("<q", body, offset)
            length = length - 8 if decoded == -1 else decoded  # -1: stored as is
        total += max(length, 0)
    return total


def _u32(buf: memoryview, at: int) -> int:
    return int(struct.unpack_from("<I", buf, at)[0])


def _ref(buf: memoryview, at: int | None) -> int:
    """The position a flatbuffer offset field at `at` points to."""
    if at is None:
        raise struct.error("a missing table")
    return at + _u32(buf, at)


def _table(buf: memoryview, pos: int) -> Callable[[int], int | None]:
    """Field `i` of the flatbuffer table at `pos`: its position, or None when absent."""
    vtable = pos - struct.unpack_from("<i", buf, pos)[0]
    (size,) = struct.unpack_from("<H", buf, vtable)

    def field(i: int) -> int | None:
        if 4 + 2 * i >= size:
            return None
        (off,) = struct.unpack_from("<H", buf, vtable + 4 + 2 * i)
        return pos + off if off else None

    return field
