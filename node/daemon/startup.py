"""A node's start, failing loudly: user errors, checks before loading, dial outcomes.

- `UserError` is a mistake the user can fix: one line, an exit code (2: the
  configuration, 1: at run time) and a hint; `as_user_error` maps the library's own
  errors (bad data file, unknown model, missing checkpoint, port in use) to one;
- `check_config` runs before anything loads (peers or --solo, --resume, an earlier
  run's files: `earlier_run`, a writable folder no other node holds), `check_device`
  before the model loads; `plan_line` is the log line of the rounds it plans
  (`planned_rounds`, Status' total; `finish_rounds`: the most of the consensus finish);
- `DialLog` records, per address, how this node's last handshake with it ended (as a
  gRPC client interceptor on the transport's channels; `all_gone`: nothing listens at
  any of some addresses), and `startup_failure` turns that into the exit message of a
  node that found too few neighbours in time.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from declora.node import protocol_note, run_folder
from declora.node.address import join_address, split_address
from declora.node.identity import node_id_problem
from declora.node.logs import safe_text
from declora.node.rpc_failure import LOADING, TLS_HINT, VERIFIED_TLS, Cause, cause, tls_failure
from declora.node.settings import NodeSettings

CONFIG = 2  # exit code: a configuration mistake
RUNTIME = 1  # exit code: a failure at run time
HANDSHAKE_METHOD = "/declora.v1.Swarm/Handshake"

log = logging.getLogger(__name__)


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
        ("declora.node.config_file", "ConfigFileError"),
        ("declora.node.settings_report", "SettingsError"),
    ):
        cls = _error_class(module, name)
        if cls is not None and isinstance(exc, cls):
            return UserError(str(exc), CONFIG)
    if isinstance(exc, OSError) and exc.errno in DISK_ERRORS:  # a write the run could
        # not go on without (`persistence` turns those it can into warnings)
        return disk_error(f"cannot write {exc.filename or 'a file'}", exc)
    checkpoint_error = _error_class("declora.node.checkpoint", "CheckpointError")
    if checkpoint_error is not None and isinstance(exc, checkpoint_error):
        return UserError(  # the folder, not the run: a configuration's mistake
            str(exc), CONFIG, "begin afresh in another --checkpoint-dir (this one is kept)"
        )
    return None


DISK_ERRORS = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "EDQUOT", "EROFS", "EIO", "EFBIG")
    if hasattr(errno, name)
)  # a full, read-only or failing disk, or a file past its size limit


def disk_error(what: str, exc: OSError, resume_from: Path | None = None) -> UserError:
    """`what` failed for want of disk (`exc`: no space, read-only, I/O error): exit 1,
    with how to go on (from checkpoint `resume_from`, when there is one)."""
    then = f"; --resume continues from {resume_from.name}" if resume_from is not None else ""
    return UserError(
        f"{what}: {exc.strerror or exc}",
        RUNTIME,
        f"free space on that disk or make it writable{then}",
    )


def earlier_run(folder: Path) -> list[str]:
    """What in `folder` an earlier run wrote (`run_folder.earlier_run`: LATEST, the
    final adapter, rounds.jsonl and rounds.jsonl.1, ckpt-* folders). `run_folder` is
    what `settings` (`resume = auto`: `resumable`), `check_config` and
    `checkpoint.load` (`resume_point`) all read the folder with."""
    return run_folder.earlier_run(folder)


def check_config(settings: NodeSettings) -> list[Path]:
    """Before anything loads: someone to train with; a checkpoint folder that can be
    written, holding a checkpoint to resume with --resume (`run_folder.resume_point`:
    LATEST's, or without LATEST the newest complete ckpt-*) and none without (an
    earlier run's checkpoints and adapter are never replaced by a fresh start, LATEST
    or not: `earlier_run`; a history alone is appended to), held by no other
    process and held by this one from here on (`run_folder.hold`; the half-written
    folders a crash left in it are deleted then). The folders it created, innermost
    first (`launch` removes those still empty when the start fails)."""
    s = settings
    if not (s.peers or s.mdns or s.solo):
        raise UserError(
            "no peers: this node would train alone",
            CONFIG,
            "give --peers HOST:PORT[,...] or --mdns to join a swarm, or --solo to train alone",
        )
    flag = "--checkpoint-dir" if s.checkpoint_dir else "--checkpoint-dir (default)"
    where = f"{s.state_dir} ({flag})"
    existed = s.state_dir.is_dir()
    held = existed and _hold(s.state_dir, where)  # before anything in it is read
    created: list[Path] = []
    try:
        created = _check_folder(s, where)
        held = held or (not existed and _hold(s.state_dir, where))  # one it made
        _check_writable(s.state_dir, where)
    except BaseException:
        run_folder.release(s.state_dir)
        for folder in created:  # a refused start leaves no folder it made
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    if held:  # no other node writes here: a crash's half-written folders are garbage
        gone = run_folder.clear_builds(s.state_dir)
        if gone:
            log.info("deleted what a crash left half-written in %s: %s", s.state_dir, gone)
    return created


def _hold(folder: Path, where: str) -> bool:
    """`run_folder.hold`, refused (exit 2) when another process holds `folder`."""
    try:
        if run_folder.hold(folder):
            return True
        log.warning("%s cannot be locked here: a second node on it is not refused", folder)
        return False
    except run_folder.FolderBusy as busy:
        if busy.command and busy.command != "declora-node start":  # an export, a lab
            raise UserError(
                f"{where} is in use by `{busy.command}` (pid {busy.pid})",
                CONFIG,
                "wait for it to finish (or stop it), or pass another --checkpoint-dir",
            ) from None
        holder = f"pid {busy.pid}" if busy.pid else "another process"
        raise UserError(
            f"{where} is in use by another node ({holder})",
            CONFIG,
            "stop that node first, or pass another --checkpoint-dir",
        ) from None
    except OSError as exc:  # the folder cannot be opened: its checks below say why
        log.warning("cannot lock %s (%s): a second node on it is not refused", folder, exc)
        return False


def _check_writable(folder: Path, where: str) -> None:
    """A file can be made in `folder` (a read-only mount, which `output_problem` cannot
    see in an existing folder); the probe is deleted."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)
    except OSError as exc:
        owner = _owner(folder) if exc.errno == errno.EACCES else None
        remedy = "make it writable (a read-only mount?)"
        if owner:
            remedy = f"make it the node's (chown -R {os.geteuid()} {folder})"
        raise UserError(
            f"cannot use {where} for checkpoints: {exc.strerror or exc}"
            + (f" ({owner[0]}; this node runs as {owner[1]})" if owner else ""),
            CONFIG,
            f"{remedy}, or pass another --checkpoint-dir",
        ) from None
    os.close(fd)
    os.unlink(probe)


def _owner(folder: Path) -> tuple[str, str] | None:
    """Who owns `folder` and who this process is ("uid 0 (root)"), when they differ:
    a state folder made by root (a `mkdir` before the unit ran as its user); None when
    they are the same user (then its mode is what refuses) or it cannot be looked at."""
    try:
        uid = folder.stat().st_uid
    except OSError:
        return None
    me = os.geteuid()
    return None if uid == me else (f"owned by {_user(uid)}", _user(me))


def _user(uid: int) -> str:
    try:
        import pwd

        return f"uid {uid} ({safe_text(pwd.getpwuid(uid).pw_name, 32)})"
    except (ImportError, KeyError):  # no such user here (a container's), or Windows
        return f"uid {uid}"


def planned_rounds(s: NodeSettings) -> int:
    """The `total_rounds` Status reports: the node's planned rounds, its training
    rounds' exchanges (round numbers count exchanges); the consensus finish after them
    is not counted in (it ends once the neighbours agree, and a solo node has none:
    `status` shows its rounds apart); 0 with `--rounds 0` (until stopped)."""
    return s.rounds * s.exchanges_per_round


def finish_rounds(s: NodeSettings) -> int:
    """The most rounds the consensus finish may run past the planned ones (Status'
    `consensus_rounds`): --consensus-rounds, 0 where none runs (--solo, --rounds 0)."""
    return 0 if s.solo or not s.rounds else s.consensus_rounds


def stop_line(s: NodeSettings, round_: int) -> str:
    """The exit's log line of the round a node stopped after, as `status` counts it: the
    rounds past the planned ones (`planned_rounds`) apart, as the consensus finish's
    ("stopped after round 2 (1 planned + 1 of the consensus finish)")."""
    planned = planned_rounds(s)
    if 0 < planned < round_:
        return (
            f"stopped after round {round_} ({planned} planned + {round_ - planned} of the "
            "consensus finish)"
        )
    return f"stopped after round {round_}"


def plan_line(s: NodeSettings) -> str:
    """`start`'s log line of its rounds, as `status` counts them (`planned_rounds`),
    then the consensus finish where one can run (`finish_rounds`)."""
    planned = planned_rounds(s)
    if not planned:
        return "rounds: until stopped (--rounds 0)"
    line = f"rounds: {planned} planned (--rounds {s.rounds})"
    if not finish_rounds(s):
        return line
    return (
        f"{line}, then a consensus finish of at most {finish_rounds(s)} "
        "(--consensus-rounds; it ends once the neighbours agree)"
    )


SIBLINGS_LOOKED_AT = 256  # entries of the default folder's parent a refusal looks at


def resume_hint(s: NodeSettings) -> str:
    """The hint of a --resume with nothing to resume; with the default folder, named
    after the node id (from --listen's port when --node-id is not given, the
    certificate's name under mTLS), the ids whose runs its parent holds (a few of the
    first `SIBLINGS_LOOKED_AT` entries; only folders named as a node id can be: no
    name can forge a line) and what to pass to resume one."""
    hint = "start without --resume to begin afresh, or pass the --checkpoint-dir it used"
    parent = s.state_dir.parent
    if s.checkpoint_dir is not None or not parent.is_dir():
        return hint
    with contextlib.suppress(OSError):
        entries = itertools.islice(parent.iterdir(), SIBLINGS_LOOKED_AT)
        runs = sorted(
            e.name
            for e in entries
            if not node_id_problem(e.name) and e.is_dir() and run_folder.resumable(e)
        )
        if runs:
            shown = ", ".join(runs[:3]) + (", ..." if len(runs) > 3 else "")
            other = (  # under mTLS the id is the certificate's name, never --node-id
                f"present the certificate of {runs[0]} (--tls-cert, --tls-key)"
                if s.tls_cert is not None
                else f"pass --node-id {runs[0]}"
            )
            return (
                f"{parent} holds the runs of {shown}: its folder is named after the node "
                f"id, so {other} (or --checkpoint-dir {parent / runs[0]})"
            )
    return hint


def _check_folder(s: NodeSettings, where: str) -> list[Path]:
    """`check_config`'s checks of the folder's contents, then the folder made; the
    folders made, innermost first."""
    found = earlier_run(s.state_dir)
    complete = run_folder.resumable(s.state_dir)  # LATEST, or a complete checkpoint
    if s.resume and not found:
        raise UserError(f"--resume: nothing to resume in {where}", CONFIG, resume_hint(s))
    listed = f"{', '.join(found[:4])}{', ...' if len(found) > 4 else ''}"
    # a history alone (rounds.jsonl and/or its rotated .1: a crash before the first
    # checkpoint) is appended to by a fresh start, so a restart policy (resume = auto)
    # can start over; anything else is kept
    if found and not complete and (s.resume or not run_folder.history_only(found)):
        raise UserError(
            f"{where} holds an earlier run's files ({listed}) but no complete checkpoint "
            "(a ckpt-* folder holding state.pt): "
            + ("it cannot be resumed" if s.resume else "a fresh start would replace them"),
            CONFIG,
            "pass another --checkpoint-dir to begin afresh (delete the old folder to "
            "start over in it)",
        )
    if complete and not s.resume:
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
        s.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # its own: 0700
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


def serve_metrics(metrics: Any, port: int, host: str = "127.0.0.1") -> None:
    """Serve `metrics` (a NodeMetrics) on `host`:`port`; 0 = none. UserError when
    the port is taken (or the address is not this machine's)."""
    if not port:
        return
    try:
        metrics.serve(port, host)
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise UserError(
            f"cannot serve metrics on {join_address(host, port)}: {why}",
            CONFIG,
            "pick another --metrics-port (0: no metrics endpoint) or --metrics-host",
        ) from exc


# ---------------------------------------------------------------- dial outcomes
def dial_failure(address: str, code: grpc.StatusCode, details: str, tls: bool = False) -> str:
    """Why a handshake call to `address` failed, in the user's words (`tls`: dialled
    with mTLS; a verified TLS cause begins "TLS: ", and startup_failure gives it
    TLS_HINT; a closed connection or a non-TLS answer, which TLS may explain or not,
    is told without)."""
    why = cause(code.name, details, tls)
    words = tls_failure(why, tls)
    if why in VERIFIED_TLS:
        return f"TLS: {words}"
    if words:
        return words
    if why is Cause.LOADING:
        return LOADING
    if why is Cause.REFUSED:
        return NOTHING_LISTENS
    if why is Cause.DNS:
        try:
            host = split_address(address)[0]
        except ValueError:
            host = address
        return f"{NO_SUCH_HOST} {host} failed"
    if why is Cause.TIMEOUT:
        return "timed out: no answer to the handshake"
    return f"{code.name}: {details}".strip()


REFUSED = ("refused the handshake", "not joining")  # a dial outcome that says why
NOTHING_LISTENS = "connection refused: nothing listens on that port"  # no node is up
NO_SUCH_HOST = "DNS lookup of"  # the name resolves to nothing (a stopped container's)


MAX_DIALLED = 4096  # addresses whose last dial `DialLog` keeps (discovery offers 1024)


class DialLog:
    """How this node's last handshake with each address ended ('' = accepted), for
    the `MAX_DIALLED` addresses dialled most recently: a node running for days dials
    every address a peer introduced itself with, and discovery's, which churn bounds
    nothing; the addresses a start waits for are dialled every few seconds, so
    theirs stay."""

    def __init__(self, tls: bool = False) -> None:
        self.tls = tls  # this node dials with mTLS
        self.outcomes: dict[str, str] = {}  # the most recent last
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
        self.outcomes.pop(address, None)
        self.outcomes[address] = why
        while len(self.outcomes) > MAX_DIALLED:  # forget the address dialled longest ago
            oldest = next(iter(self.outcomes))
            del self.outcomes[oldest]
            self.refused.pop(oldest, None)

    def all_gone(self, addresses: Iterable[str]) -> bool:
        """Whether `addresses` name at least one address and the last dial of each was
        refused a connection (`NOTHING_LISTENS`: no node is up there; one that finished
        and exited, or whose process has not bound its port yet) or named a host that
        does not resolve (`NO_SUCH_HOST`: Docker's DNS drops a stopped container's
        name, so a compose service that finished is no longer found). A node still loading
        listens on its port already (`Transport.reserve`, then the loading gate), so a
        dial to it ends otherwise (timed out, "still loading its model"), as does a
        dial that never ended."""
        wanted = list(addresses)
        return bool(wanted) and all(
            self.outcomes.get(a, "").startswith((NOTHING_LISTENS, NO_SUCH_HOST)) for a in wanted
        )

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
            why = dial_failure(self.address, exc.code(), exc.details() or "", self.log.tls)
            self.log.record(self.address, why)
            raise
        reason = safe_text(welcome.reason, 300)
        refused = "refused the handshake: " + reason + protocol_note(reason)
        reason = "" if welcome.accepted else refused
        self.log.record(self.address, reason)
        return call


# how a dial ends that a node of another wire protocol version refused (`DialLog`'s
# line; an older release words the rest of it otherwise), and the hint for it
PROTOCOL_REFUSED = "refused the handshake: protocol version "
PROTOCOL_HINT = (
    "nodes of two protocol versions never mix, and waiting longer changes nothing: run "
    "one declora release on every node (upgrade the node of the older protocol)"
)


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
    missing = [o for a, o in outcomes.items() if a not in live_addresses]
    if any(o.startswith("TLS: ") for o in missing):
        hint = TLS_HINT  # a TLS line: starting peers or waiting longer changes nothing
    elif missing and all(o.startswith(PROTOCOL_REFUSED) for o in missing):
        hint = PROTOCOL_HINT  # the peers run: waiting longer changes nothing either
    return StartupError("\n".join(lines), hint)
