"""A node dialling addresses that come and go for days keeps the last outcome of the
`MAX_DIALLED` it dialled most recently, not of every address it ever dialled (audit
"longrun"; figures printed with `pytest -s`)."""

from __future__ import annotations

from declora.node.daemon.startup import MAX_DIALLED, DialLog


def test_dial_outcomes_are_bounded_and_keep_the_recent() -> None:
    """Before: 10,000 addresses dialled once each left 10,000 outcomes."""
    dials = DialLog()
    dials.record("10.9.9.9:7070", "refused the handshake: full")
    for i in range(10_000):
        dials.record(f"10.0.{i // 250}.{i % 250 + 1}:7070", "UNAVAILABLE: timed out")
        if i % 100 == 0:  # a --peers address the start waits for, dialled every call
            dials.record("10.9.9.9:7070", "DEADLINE_EXCEEDED: timed out")
    print(f"after 10,000 distinct addresses dialled: len(outcomes) = {len(dials.outcomes):,}")
    assert len(dials.outcomes) == MAX_DIALLED
    assert "10.0.0.1:7070" not in dials.outcomes  # dialled longest ago: forgotten
    assert dials.outcomes["10.0.39.250:7070"] == "UNAVAILABLE: timed out"
    # the address dialled again and again keeps its outcome and the refusal before it
    assert dials.outcomes["10.9.9.9:7070"].endswith("before that: refused the handshake: full")
    assert len(dials.refused) <= MAX_DIALLED
