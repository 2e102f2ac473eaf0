"""A given --advertise no peer can dial (0.0.0.0, ::, multicast, broadcast) is
refused with one line (exit 2): peers refuse a Hello stating it
(`admission.check_hello`). Unset, --listen's 0.0.0.0 stays a warning: the Hello then
states no address (revsec5)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from declora.cli.app import app

PEERS = "10.0.0.2:7070"


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0:7070",
        "[::]:7070",
        "224.0.0.1:7070",
        "[ff02::1]:7070",
        "255.255.255.255:1",
    ],
)
def test_an_advertise_no_peer_can_dial_is_refused(address: str) -> None:
    res = CliRunner().invoke(app, ["config", "--advertise", address, "--peers", PEERS])
    assert res.exit_code == 2, res.output
    line = res.stderr.splitlines()[0]
    assert line.startswith(f"error: bad configuration: --advertise: {address!r} is ")
    assert line.endswith("no peer can dial it: give this machine's address as peers reach it")


def test_the_same_from_its_variable_and_link_local_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DECLORA_ADVERTISE", "0.0.0.0:7070")
    res = CliRunner().invoke(app, ["config", "--peers", PEERS])
    assert (
        res.exit_code == 2 and "DECLORA_ADVERTISE: '0.0.0.0:7070' is an unspecified" in res.stderr
    )
    monkeypatch.setenv("DECLORA_ADVERTISE", "169.254.1.1:7070")  # a LAN without DHCP
    assert CliRunner().invoke(app, ["config", "--peers", PEERS]).exit_code == 0
