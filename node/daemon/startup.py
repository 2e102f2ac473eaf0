"""A node's start, failing loudly: user errors, checks before loading, dial outcomes.

- `UserError` is a mistake the user can fix: one line, an exit code (2: the
  configuration, 1: at run time) and a hint; `as_user_error` maps the library's own
  errors (bad data file, unknown model, missing checkpoint, port in use) to one;
- `check_config` runs before anything loads (peers or --solo, --resume, an earlier
  run's files: `earlier_run`), `check_device`
  before the model loads;
- `DialLog` records, per address, how this node's last handshake with it ended (as a
  gRPC client interceptor on the transport's channels), and `startup_failure` turns
  that into the exit message of a node that found too few neighbours in time.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from declora.node import run_folder
from declora.node.address import split_address
from declora.node.logs import safe_text
from declora.node.rpc_failure import LOADING, Cause, cause
from declora.node.settings import NodeSettings

CONFIG = 2  # exit code: a configuration mistake
RUNTIME = 1  # exit code: a failure at run time
HANDSHAKE_METHOD = "/declora.v1.Swarm/Handshake"


class UserError(Exception):
    """A mistake the user can fix: `message` (one line), `code` (exit code), `hint`."""

    def __init__(self, message: str, code: int = CONFIG, hint: str = "") -> None:
        super().__init__(message)
        self.message, self.code, self.hint = message, code, hint


class StartupError(UserError):
    """Too few neighbours by the startup timeout: a line per missing peer and why."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message, RUNTIME, hint)


def _error_class(module: str, name: str) -> type[BaseException] | None:
    """`module.name` if that module is loaded (an error of an unloaded one cannot occur:
    no import of torch just to classify an error)."""
    cls = getattr(sys.modules.get(module), name, None)
    return cls if isinstance(cls, type) and issubclass(cls, BaseException) else None


def as_user_error(exc: BaseException) -> UserError | None:
    """`exc` as the user's mistake it reports, or None for anything else (a bug)."""
    if isinstance(exc, UserError):
        return exc
    hinted = _error_class("declora.node.errors", "HintedError")  # data, model, checkpoint..
    if hinted is not None and isinstance(exc, hinted):
        return UserError(getattr(exc, "message", str(exc)), CONFIG, getattr(exc, "hint", ""))
    for module, name in (
        ("declora.node.security", "TlsError"),
        ("declora.node.settings", "ConfigFileError"),
        ("declora.node.settings", "SettingsError"),
    ):
        cls = _error_class(module, name)
        if cls is not None and isinstance(exc, cls):
            return UserError(str(exc), CONFIG)
    checkpoint_error = _error_class("declora.node.checkpoint", "CheckpointError")
    if checkpoint_error is not None and isinstance(exc, checkpoint_error):
        return UserError(
            str(exc), RUNTIME, "begin afresh in another --checkpoint-dir (this one is kept)"
        )
    return None


def earlier_run(folder: Path) -> list[str]:
    """What in `folder` an earlier run wrote (`run_folder.earlier_run`: LATEST, the
    final adapter, rounds.jsonl, ckpt-* folders). `run_folder` is what `settings`
    (`resume = auto`: `resumable`), `check_config` and `checkpoint.load`
    (`resume_point`) all read the folder with."""
    return run_folder.earlier_run(folder)


def check_config(settings: NodeSettings) -> list[Path]:
    """Before anything loads: someone to train with; a checkpoint folder that can be
    written, holding a checkpoint to resume with --resume (`run_folder.resume_point`:
    LATEST's, or without LATEST the newest complete ckpt-*) and none without (an
    earlier run's checkpoints and adapter are never replaced by a fresh start, LATEST
    or not: `earlier_run`; a rounds.jsonl alone is appended to). The folders it
    created, innermost first (`launch` removes those still empty when the start fails)."""
    s = settings
    if not (s.peers or s.mdns or s.solo):
        raise UserError(
            "no peers: this node would train alone",
            CONFIG,
            "give --peers HOST:PORT[,...] or --mdns to join a swarm, or --solo to train alone",
        )
    flag = "--checkpoint-dir" if s.checkpoint_dir else "--checkpoint-dir (default)"
    where = f"{s.state_dir} ({flag})"
    found = earlier_run(s.state_dir)
    held = run_folder.resumable(s.state_dir)  # LATEST, or a complete checkpoint
    if s.resume and not found:
        raise UserError(
            f"--resume: nothing to resume in {where}",
            CONFIG,
            "start without --resume to begin afresh, or pass the --checkpoint-dir it used",
        )
    listed = f"{', '.join(found[:4])}{', ...' if len(found) > 4 else ''}"
    # a history alone (a crash before the first checkpoint) is appended to by a fresh
    # start, so a restart policy (resume = auto) can start over; anything else is kept
    if found and not held and (s.resume or found != ["rounds.jsonl"]):
        raise UserError(
            f"{where} holds an earlier run's files ({listed}) but no complete checkpoint "
            "(a ckpt-* folder holding state.pt): "
            + ("it cannot be resumed" if s.resume else "a fresh start would replace them"),
            CONFIG,
            "pass another --checkpoint-dir to begin afresh (delete the old folder to "
            "start over in it)",
        )
    if held and not s.resume:
        point = run_folder.resume_point(s.state_dir)
        raise UserError(
            f"{where} holds an earlier run's checkpoints and adapter ({listed}): a fresh "
            "start would replace them",
            CONFIG,
            "pass --resume to continue that run"
            + (f" (from {point.name})" if point is not None else "")
            + ", or another --checkpoint-dir (delete the old folder to start over in it)",
        )
    from declora.node.adapter import OUTPUT_HINT, output_problem

    problem = output_problem(s.state_dir)
    if problem:
        raise UserError(f"cannot use {where} for checkpoints: {problem}", CONFIG, OUTPUT_HINT)
    created = [d for d in (s.state_dir, *s.state_dir.parents) if not d.exists()]
    try:  # what output_problem cannot see (a read-only file system, root on /proc)
        s.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        for folder in created:  # what mkdir made before it failed
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise UserError(
            f"cannot use {where} for checkpoints: {exc.strerror or exc}",
            CONFIG,
            OUTPUT_HINT,
        ) from None
    return created


def check_device(name: str) -> None:
    """An explicit --device must exist here (imports torch)."""
    import torch

    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(
                f"--device {name}: torch sees no CUDA GPU on this machine",
                CONFIG,
                "use --device cpu (or auto: the GPU when there is one)",
            )
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise UserError(
                f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)",
                CONFIG,
                "count from 0: --device cuda:0",
            )
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: MPS is not available here", CONFIG, "use --device cpu")


def serve_metrics(metrics: Any, port: int) -> None:
    """Serve `metrics` (a NodeMetrics) on 127.0.0.1:`port`; 0 = none. UserError when
    the port is taken."""
    if not port:
        return
    try:
        metrics.serve(port)
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise UserError(
            f"cannot serve metrics on 127.0.0.1:{port}: {why}",
            CONFIG,
            "pick another --metrics-port (0: no metrics endpoint)",
        ) from exc


# ---------------------------------------------------------------- dial outcomes
def dial_failure(address: str, code: grpc.StatusCode, details: str) -> str:
    """Why a handshake call to `address` failed, in the user's words."""
    why = cause(code.name, details)
    if why is Cause.LOADING:
        return LOADING
    if why is Cause.REFUSED:
        return "connection refused: nothing listens on that port"
    if why is Cause.DNS:
        try:
            host = split_address(address)[0]
        except ValueError:
            host = address
        return f"DNS lookup of {host} failed"
    if why is Cause.TIMEOUT:
        return "timed out: no answer to the handshake"
    return f"{code.name}: {details}".strip()


REFUSED = ("refused the handshake", "not joining")  # a dial outcome that says why


class DialLog:
    """How this node's last handshake with each address ended ('' = accepted)."""

    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}
        self.refused: dict[str, str] = {}  # each address's last refusal

    def record(self, address: str, why: str) -> None:
        """How dialling `address` ended ('' = accepted); a later failure (the peer gave
        up first) keeps the refusal that came before it."""
        if why.startswith(REFUSED):
            self.refused[address] = why
        elif not why:
            self.refused.pop(address, None)
        elif address in self.refused:
            why = f"{why}; before that: {self.refused[address]}"
        self.outcomes[address] = why

    def interceptor(self, address: str) -> grpc.aio.UnaryUnaryClientInterceptor:
        """A client interceptor for a channel to `address` that records Handshakes."""
        return _HandshakeWatch(self, address)


class _HandshakeWatch(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, log: DialLog, address: str) -> None:
        self.log, self.address = log, address

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        call = await continuation(client_call_details, request)
        method = client_call_details.method
        if (method.decode() if isinstance(method, bytes) else method) != HANDSHAKE_METHOD:
            return call
        try:
            welcome = await call
        except grpc.aio.AioRpcError as exc:
            why = dial_failure(self.address, exc.code(), exc.details() or "")
            self.log.record(self.address, why)
            raise
        refused = "refused the handshake: " + safe_text(welcome.reason, 300)
        reason = "" if welcome.accepted else refused
        self.log.record(self.address, reason)
        return call


def startup_failure(
    settings: NodeSettings,
    want: int,
    addresses: Iterable[str],
    live_addresses: set[str],
    outcomes: dict[str, str],
) -> StartupError:
    """The exit message of a node with too few of `want` neighbours at the timeout: a
    line for each of `addresses` that is not live, with how dialling it last ended."""
    s = settings
    lines = [
        f"{len(live_addresses)} of {want} wanted neighbours after {s.startup_timeout:g} s "
        f"(--startup-timeout); why each peer is missing:"
    ]
    for address in dict.fromkeys(addresses):
        if address in live_addresses:
            continue
        why = outcomes.get(address)
        if why is None:
            why = "never dialled"
        elif not why:
            why = "accepted the handshake but did not stay a neighbour (see the log)"
        lines.append(f"  {address}: {why}")
    if s.mdns and len(lines) == 1:
        where = s.mdns_interface or "the LAN"
        lines.append(f"  mDNS: no node of swarm {s.swarm_id!r} answered on {where}")
    hint = (
        "start the missing peers or fix --peers; --startup-timeout waits longer, "
        "--min-peers 0 starts without them, --solo trains alone"
    )
    return StartupError("\n".join(lines), hint)
