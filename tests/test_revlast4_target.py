"""A --target without a host (a bare port, `:0`) is named as not host:port, not as a
port out of range: `--target 70000` said 'port 70000 is not in 1-65535' (it fails on
the old code); a host's port out of range is still named (a guard)."""

from __future__ import annotations

import pytest

from declora.cli.client import target_problem


@pytest.mark.parametrize("target", ["0", "70000", ":0"])
def test_a_target_without_a_host_is_not_host_port(target: str) -> None:
    problem = target_problem(target)
    assert problem is not None and "must be host:port" in problem, problem


def test_a_hosts_port_out_of_range_is_still_named() -> None:
    problem = target_problem("127.0.0.1:70000")
    assert problem is not None and "port 70000 is not in 1-65535" in problem, problem
