"""`listen.raise_file_limit` on systems whose hard limit of open files is huge or
none, or whose kernel refuses a limit (a fake `resource` module: the real one would
change the test process's limit)."""

from __future__ import annotations

import logging
import sys
from types import SimpleNamespace

import pytest

from declora.node.daemon import listen

INFINITY = -1  # RLIM_INFINITY as Linux's resource module reports it


def fake_resource(soft: int, hard: int, refused_above: int | None = None) -> SimpleNamespace:
    """A `resource` module whose RLIMIT_NOFILE is (soft, hard); setrlimit refuses a
    soft limit above `refused_above` (ValueError, as macOS above its maximum)."""
    limits = {"now": (soft, hard)}

    def setrlimit(kind: int, value: tuple[int, int]) -> None:
        if refused_above is not None and value[0] > refused_above:
            raise ValueError("not allowed to raise maximum limit")
        limits["now"] = value

    return SimpleNamespace(
        RLIMIT_NOFILE=7,
        RLIM_INFINITY=INFINITY,
        getrlimit=lambda kind: limits["now"],
        setrlimit=setrlimit,
        limits=limits,
    )


@pytest.mark.parametrize(
    ("soft", "hard", "refused_above", "now"),
    [
        (1024, 1 << 30, None, 1 << 20),  # before: a soft limit of a billion
        (1024, INFINITY, 10240, 1 << 13),  # macOS: before, it stayed 1,024
        (1024, 524288, None, 524288),  # a guard: the hard limit, below 2**20
        (1 << 21, 1 << 30, None, 1 << 21),  # before: a billion too; never lowered
        (1024, 1024, None, 1024),  # a guard: no room
    ],
)
def test_the_soft_limit_rises_at_most_to_two_to_the_twenty(
    monkeypatch: pytest.MonkeyPatch, soft: int, hard: int, refused_above: int | None, now: int
) -> None:
    fake = fake_resource(soft, hard, refused_above)
    monkeypatch.setitem(sys.modules, "resource", fake)
    assert listen.raise_file_limit() == now
    assert fake.limits["now"] == (now, hard)


def test_a_raised_limit_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "resource", fake_resource(1024, 4096))
    with caplog.at_level(logging.INFO, logger=listen.__name__):
        listen.raise_file_limit()
    assert [r.getMessage() for r in caplog.records] == [
        "open files: soft limit raised from 1024 to 4096"
    ]
