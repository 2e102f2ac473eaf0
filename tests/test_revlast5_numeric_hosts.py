"""A host made of numbers alone is no host name (revlast5): the C library reads
'0x0' as 0.0.0.0, '0xe0000001' as 224.0.0.1 and '0x7f.1' as 127.0.0.1, so a Hello
stating one passed `address.dial_problem` (the name was 'the dialler's business') and
was dialled as the IP it hides. '127.1' was refused already; hex forms were not. The
settings check --advertise, --listen and --peers by the same rule."""

from __future__ import annotations

import socket

import pytest
from test_daemon_parts import RULE, hello
from typer.testing import CliRunner

from declora.cli.app import app
from declora.node.address import address_problem
from declora.node.daemon.admission import check_hello

HIDDEN = {
    "0x0:7070": "0.0.0.0",
    "0xffffffff:7070": "255.255.255.255",
    "0xe0000001:7070": "224.0.0.1",
    "0X7F.0.0.1:7070": "127.0.0.1",
}


@pytest.mark.parametrize("address", HIDDEN)
def test_a_hello_stating_a_number_for_a_name_is_refused(address: str) -> None:
    host = address.rsplit(":", 1)[0]
    # what the dial would have reached (the resolver's reading, not a name lookup)
    assert socket.getaddrinfo(host, 7070, type=socket.SOCK_STREAM)[0][4][0] == HIDDEN[address]
    got = check_hello(hello(listen_address=address), **RULE)  # type: ignore[arg-type]
    assert got == f"listen address {address!r}: {host!r} is not a host name or IP"


@pytest.mark.parametrize("option", ["--advertise", "--listen", "--peers"])
@pytest.mark.parametrize("host", ["0x0", "127.1", "a..b"])
def test_the_settings_refuse_what_peers_would_refuse(option: str, host: str) -> None:
    """--advertise was checked as host:port only: a node advertising '127.1:7070' or
    'a..b:7070' started, and every peer refused its Hello (a line in their logs)."""
    res = CliRunner().invoke(app, ["config", option, f"{host}:7070"])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith(
        f"error: bad configuration: {option}: '{host}:7070': '{host}' is not a host name or IP"
    )


@pytest.mark.parametrize("address", ["0x1a.example.com:7070", "deadbeef:7070", "a0x0:7070"])
def test_names_that_only_look_hex_pass(address: str) -> None:
    assert address_problem(address) == ""
