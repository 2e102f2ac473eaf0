"""Bounds on what a peer may claim: node ids, rounds, counters.

Every number and id that arrives from outside is checked against these before it is
used: a node id is 1-64 characters of `[A-Za-z0-9._:@-]` starting with a letter or
digit (so it is safe in a log line, a file name and a table), and rounds, payload
sequence numbers and degrees stay far below where arithmetic on them could overflow.
`shown` renders anything a peer sent for a log line: escaped and truncated.
"""

from __future__ import annotations

import re

NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}")
MAX_ROUND = 2**40  # a round a second for 34,000 years
# The highest round this node may be moved to (a catch-up) or resume at (a checkpoint):
# half of MAX_ROUND, so a node there still runs 2^39 rounds before its Hello, which
# states its round, would exceed the bound every neighbour holds it to.
MAX_OWN_ROUND = MAX_ROUND // 2
MAX_SEQ = 2**62
MAX_DEGREE = 4096


def node_id_problem(value: str) -> str:
    """'' when `value` is a valid node id, else what is wrong with it."""
    if not value:
        return "empty node id"
    if len(value) > 64:
        return f"node id of {len(value)} characters (at most 64)"
    if not NODE_ID.fullmatch(value):
        return f"node id {shown(value)} has characters outside [A-Za-z0-9._:@-]"
    return ""


def shown(value: object, limit: int = 80) -> str:
    """`value` for a log line: repr-escaped, at most `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
