"""Holding a daemon's listen port before anything heavy loads.

`reserve_port` binds and listens on the address at once with a plain socket, so a port
in use (another node), an address not of this machine or a privileged port fails with a
`ServerError` (a configuration error, exit 2, with a hint) before the model loads;
`Transport.start` later swaps the socket for the gRPC server.

Every connection a node serves holds a file descriptor, from its TCP accept on, before
any TLS or HTTP/2 handshake (the transport drops one that made none after 10 s): a stranger's
2,000 silent connections took all 1,024 of a node's default soft limit, and the node
answered no Status and lost its neighbours while they stayed. So `launch` first raises
the soft limit of open files to the hard one, at most 2**20 (`raise_file_limit`).
"""

from __future__ import annotations

import errno
import logging
import os
import socket

from declora.node.address import split_address
from declora.node.daemon.startup import CONFIG, UserError

log = logging.getLogger(__name__)


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


FILES_WANTED = 1 << 20  # the highest soft limit of open files asked for


def raise_file_limit() -> int:
    """Raise this process's soft limit of open files towards its hard limit, at most
    `FILES_WANTED` (a hard limit of a billion, or none, would give every child
    process a limit its libraries may size tables by), and log the change; never
    lower it. The soft limit now; -1 where there is no such limit (Windows). Where the
    system refuses a limit (macOS: above its per-process maximum), half of it is
    tried, down to the old one."""
    try:
        import resource
    except ImportError:  # not POSIX: no such limit
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, FILES_WANTED)
    if soft == resource.RLIM_INFINITY:
        return soft
    while wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):  # above the system's maximum: try less
            wanted //= 2
            continue
        log.info("open files: soft limit raised from %d to %d", soft, wanted)
        return wanted
    return soft


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
