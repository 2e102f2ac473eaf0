"""Guards of the codecs split (`node/codecs.py` names the parts in `node/codecs_*.py`):
the public names are the parts' own objects, `__all__` is as before, and a payload's
bytes are those the single module wrote (digests taken from it before the split)."""

from __future__ import annotations

import hashlib
from types import ModuleType

import numpy as np
import pytest

from declora.node import codecs, codecs_common, codecs_specs

COMMON = ["Codec", "CodecError", "DEFAULT_BLOCK", "F32", "HEADER_SIZE", "MAGIC", "OVERHEAD"]
PUBLIC: dict[str, ModuleType] = {
    **dict.fromkeys(COMMON, codecs_common),
    **dict.fromkeys(["ACCEPTED_SPECS", "make_codec"], codecs_specs),
}

# sha256 (first 16 hex digits) of each codec's payload for X with default_rng(7),
# printed by the unsplit node/codecs.py (a543687).
BEFORE_SPLIT = {
    "fp32": "b6bfa06728cc2eb1",
    "fp16": "7e3f3bb59c0a2577",
    "bf16": "34f1801ea3591db7",
    "q8": "065f001a5964dee4",
    "q4:block=64": "79bc8d53033e0c7e",
    "q2": "c9897ab7585cec29",
    "topk:0.1+q4": "09c7630f83b3a04c",
}
X = ((np.arange(1000, dtype=np.float32) * 37) % 201 - 100) / np.float32(7)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_a_public_name_is_the_object_its_part_defines(name: str) -> None:
    assert getattr(codecs, name) is getattr(PUBLIC[name], name)


def test_all_names_the_same_six_as_before_the_split() -> None:
    assert codecs.__all__ == [
        *("Codec", "CodecError", "compressed_size_ratio", "decode", "encoded_size"),
        "make_codec",
    ]


@pytest.mark.parametrize("spec", sorted(BEFORE_SPLIT))
def test_a_payload_is_byte_for_byte_what_the_unsplit_module_wrote(spec: str) -> None:
    payload = codecs.make_codec(spec).encode(X, np.random.default_rng(7))
    assert hashlib.sha256(payload).hexdigest()[:16] == BEFORE_SPLIT[spec]
    decoded = codecs.decode(payload, spec=spec)
    assert np.array_equal(decoded, codecs.make_codec(spec).decode(payload))
