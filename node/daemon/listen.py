"""Holding a daemon's listen port before anything heavy loads.

`reserve_port` binds and listens on the address at once with a plain socket, so a port
in use (another node), an address not of this machine or a privileged port fails with a
`ServerError` (a configuration error, exit 2, with a hint) before the model loads;
`Transport.start` later swaps the socket for the gRPC server.
"""

from __future__ import annotations

import errno
import os
import socket

from declora.node.address import split_address
from declora.node.daemon.startup import CONFIG, UserError


class ServerError(UserError):
    """The server could not bind its address (in use, not local, not permitted)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, CONFIG, hint)


BIND_HINTS = {
    errno.EADDRINUSE: "another process (another node?) holds that port: stop it or pick "
    "another --listen",
    errno.EADDRNOTAVAIL: "--listen must name an address of this machine (0.0.0.0: all)",
    errno.EACCES: "ports below 1024 need privileges: pick a higher --listen port",
}


def reserve_port(listen: str) -> socket.socket | None:
    """Bind and listen on `listen` with a plain socket (ServerError when it cannot);
    None for port 0 (any free port: nothing to reserve)."""
    if listen.endswith(":0"):  # any free port: nothing to reserve
        return None
    host, port = split_address(listen)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ServerError(
            f"cannot listen on {listen}: {exc.strerror}", BIND_HINTS[errno.EADDRNOTAVAIL]
        ) from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen()
    except OSError as exc:
        sock.close()
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ServerError(
            f"cannot listen on {listen}: {why}", BIND_HINTS.get(exc.errno or 0, "")
        ) from exc
    return sock
