"""Dialling under mTLS with a revocation list (--tls-crl): what `Handshaker` does about
revoked certificates, on either side of a dial.

- `RevokedDials.server` reads the server's certificate before any Hello is sent: a
  revoked server is not joined and never admits this node (it logged it joined, then
  left, on every re-dial);
- `refused_line` is what a node whose own certificate a server refuses as revoked
  logs, with the command that re-issues it;
- `say` logs either at WARNING once per address and line (a line names the
  certificate: a new one is said again), then at DEBUG, for the `SAID` addresses
  logged most recently.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from declora.node.address import split_address
from declora.node.daemon.transport import Transport
from declora.node.revocation import RevokedError

log = logging.getLogger("declora.node.daemon.handshake")  # where dials are logged

SAID = 1024  # addresses whose revoked certificate (or refusal of ours) was logged


class RevokedDials:
    """Revoked certificates met in dials, and what was logged about them."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.said: OrderedDict[str, str] = OrderedDict()  # address: the line logged

    async def server(self, address: str, timeout: float) -> tuple[str, str]:
        """Under mTLS with a revocation list: why the server at `address` may not be
        joined (its certificate, read within `timeout` s before any Hello is sent, is
        revoked), and its certificate's name when read (for
        `Admission.certificate_refusal`: not read again); ('', '') when it is not
        revoked but cannot be read (the dial goes on and says why), or without a list."""
        tls = getattr(self.transport, "tls", None)
        if tls is None or tls.crl is None:
            return "", ""
        try:
            host, port = split_address(address)
            return "", await tls.server_name(host, port, timeout)
        except RevokedError as exc:
            return str(exc), ""
        except ValueError:  # TlsError too: not readable; the dial's own check says so
            return "", ""

    def refused_line(self, address: str, details: str) -> str:
        """The line saying `address` refused this node's revoked certificate (the
        peer's `details`, escaped), with the command that re-issues it."""
        tls = getattr(self.transport, "tls", None)
        pki = tls.ca_path.parent if tls is not None and tls.ca_path is not None else "PKI"
        name = tls.name if tls is not None else "NAME"
        return (
            f"{address} refuses this node: {details}; its peers refuse a revoked --tls-cert: "
            f"re-issue it with `declora-node certs --output {pki} --nodes {name} --force` "
            "(and its --hosts) and restart the node with the new one"
        )

    def say(self, address: str, line: str, outcome: str = "") -> None:
        """Record `outcome` (when given) as how the dial of `address` ended
        (`startup.DialLog`) and log `line` at WARNING once per address and line, then
        at DEBUG."""
        dial_log = getattr(self.transport, "dial_log", None)
        if dial_log is not None and outcome:
            dial_log.record(address, outcome)
        if self.said.get(address) == line:
            log.debug("%s", line)
            return
        self.said[address] = line
        self.said.move_to_end(address)
        while len(self.said) > SAID:
            self.said.popitem(last=False)
        log.warning("%s", line)
