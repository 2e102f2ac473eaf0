"""A port of other digits than ASCII's is not a port (secleft3): the address parser's
`\\d` took '７０００' (fullwidth) and '١٢' (Arabic-Indic), which `int` reads as 7000 and
12, so a Hello's listen address 'h:１２' passed `check_hello` and would be kept as the
peer's address (the target this node dials)."""

from __future__ import annotations

import pytest

from declora.node import PROTOCOL_VERSION
from declora.node.address import address_problem, split_address
from declora.node.daemon.admission import check_hello
from declora.proto import pb


@pytest.mark.parametrize("address", ["127.0.0.1:７０００", "h:١٢", "[::1]:７"])
def test_a_port_of_other_digits_is_refused(address: str) -> None:
    assert "is not host:port" in address_problem(address)
    with pytest.raises(ValueError, match="is not host:port"):
        split_address(address)


def test_a_hello_naming_one_is_refused() -> None:
    hello = pb.Hello(
        protocol_version=PROTOCOL_VERSION,
        node_id="p",
        swarm_id="s",
        fingerprint="f",
        listen_address="h:１２",
    )
    rule = {"node_id": "me", "swarm_id": "s", "fingerprint": "f", "gradient_tracking": False}
    assert "is not host:port" in check_hello(hello, **rule)  # type: ignore[arg-type]


def test_ascii_ports_still_parse() -> None:
    """A guard."""
    assert split_address("[::1]:7000") == ("::1", 7000) and not address_problem("h:1")
