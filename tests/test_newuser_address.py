"""`--listen 127.0.0.1:0` (an ephemeral port, as other servers take it) was called
"not host:port": the message names the port and its range."""

from __future__ import annotations

import pytest

from declora.node.address import address_problem, split_address


@pytest.mark.parametrize("address", ["127.0.0.1:0", "127.0.0.1:70000"])
def test_a_port_out_of_range_is_named_as_such(address: str) -> None:
    with pytest.raises(ValueError, match=r"port \d+ is not 1-65535"):
        split_address(address)
    assert address_problem(address).endswith("is not 1-65535")


def test_a_malformed_address_is_still_not_host_port() -> None:
    assert address_problem("127.0.0.1") == "'127.0.0.1' is not host:port"
