"""`declora-node start`'s path into a daemon: check, bind, then load.

`launch` checks the configuration (someone to train with, a checkpoint to resume),
raises the soft limit of open files (`listen.raise_file_limit`: every connection
holds a descriptor from its accept on), reserves the listen port with a plain socket,
and only then imports torch and builds
the daemon, which swaps the reservation for its gRPC server before the model loads.
So a port in use or a bad configuration fails within a second, with a `UserError`; so
does a machine with no writable temporary folder (a container's read-only root
filesystem without a tmpfs at /tmp), which torch's import needs.
A stop signal from here on is remembered until the daemon handles it (`signals`);
one before, while the configuration is checked, is `NotStarted`.
"""

from __future__ import annotations

import asyncio
import contextlib

from declora.node import logs, run_folder, temp_folder
from declora.node.daemon.listen import raise_file_limit
from declora.node.daemon.signals import NotStarted, stop_signals
from declora.node.daemon.startup import CONFIG, UserError, check_config
from declora.node.daemon.transport import Transport
from declora.node.settings import NodeSettings


def launch(settings: NodeSettings) -> int:
    """Run a node until it finishes or is stopped; the exit code (UserError: a mistake).
    A start that fails or is interrupted (`NotStarted` before stop signals are taken
    over) leaves none of the folders it created behind while they are empty."""
    state = settings.state_dir
    created = [d for d in (state, *state.parents) if not d.exists()]  # check_config's
    try:
        try:  # check_config imports torch: seconds in which a Ctrl-C is still raised
            logs.configure(settings.node_id, settings.log_format, settings.log_level)
            check_temp_folder()
            created = check_config(settings)
        except KeyboardInterrupt as exc:
            raise NotStarted from exc
        with stop_signals():
            raise_file_limit()  # process-wide: only a node's own process
            transport = Transport(settings, settings.tls())
            transport.reserve()
            import transformers.utils.logging  # noqa: F401 (the daemon's, imported next)

            logs.route_libraries()  # its warnings in the node's log format
            try:
                import uvloop
            except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
                return asyncio.run(_run(settings, transport))
            return uvloop.run(_run(settings, transport))
    except BaseException:
        run_folder.release(state)  # check_config's lock: free it for a caller that goes on
        for folder in created:  # a start that failed leaves no empty folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()  # only while empty
        raise


def check_temp_folder() -> None:
    """A writable temporary folder exists (`temp_folder.temp_folder_missing`), else a
    `UserError` (exit 2): torch's import needs one and crashed with a traceback. Data
    files and TLS probes use it too; nothing stays there."""
    if temp_folder.temp_folder_missing():
        raise UserError(temp_folder.PROBLEM, CONFIG, temp_folder.HINT)


async def _run(settings: NodeSettings, transport: Transport) -> int:
    try:
        from declora.node.daemon.daemon import Daemon
    except BaseException:
        await transport.stop()
        raise
    return await Daemon(settings, transport).run()
