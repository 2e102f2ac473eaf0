"""Talking to a running node from the CLI: the Status RPC and its rendering."""

from __future__ import annotations

import base64
import contextlib
import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from declora.cli.lines import error_lines
from declora.node.address import join_address, split_address
from declora.node.errors import HintedError
from declora.node.option_values import BLANK_PATH, OptionValues, blank_path, home_path
from declora.node.rpc_failure import Cause, cause
from declora.node.security import SwarmAuth, TlsFiles, secret_text
from declora.proto import pb, pb_grpc

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

# no --target: the node beside this one (`own_target`), as `start` would listen here
STATUS_TARGET: str | None = None
DEFAULT_LISTEN = "127.0.0.1:7070"  # `start`'s --listen default (`settings_fields`)
STATUS_TIMEOUT = 5.0  # seconds
MAX_TIMEOUT = 3600.0  # seconds: the longest --timeout of a call to a node


class StatusError(HintedError):
    """The node could not be reached or did not answer; `hint` says what to check.
    `code`: the exit code it means (1: runtime)."""

    code = 1


class SecretEnvError(StatusError):
    """The swarm secret (DECLORA_SWARM_SECRET(_FILE), a config file's swarm_secret(_file))
    cannot be used: configuration (exit code 2)."""

    code = 2


def own_target(values: OptionValues | None = None) -> str:
    """The address of the node beside this one, from its --listen as `start` reads it
    (`values`, default the environment's: DECLORA_LISTEN, else the config file's
    listen), else 127.0.0.1:7070; an unspecified host (0.0.0.0, ::) as 127.0.0.1, any
    other as it is (the one address the node binds). ValueError naming where the
    address came from when it is not host:port."""
    import ipaddress

    given = (values or OptionValues()).get("listen")
    if given is None:
        return DEFAULT_LISTEN
    value, where = given
    try:
        host, port = split_address(str(value))  # a file's number too: not host:port
    except ValueError:
        raise ValueError(f"{where} must be host:port, got {value!r}") from None
    with contextlib.suppress(ValueError):  # a name: as it is
        if ipaddress.ip_address(host.split("%", 1)[0]).is_unspecified:
            # 127.0.0.1 for :: too: gRPC's [::] is dual-stack, and binds 0.0.0.0 where
            # IPv6 is off (Docker's default network), which ::1 would not reach
            host = "127.0.0.1"
    return join_address(host, port)


def target_problem(target: str | None) -> str | None:
    """Why `target` is not a node's address (host:port, [IPv6]:port), or None; None
    (no --target): why `own_target` cannot be worked out, or None."""
    if target is None:
        try:
            own_target()
        except ValueError as exc:
            return str(exc)
        return None
    try:
        split_address(target)
    except ValueError:
        host, _, port = target.rpartition(":")  # no host (a bare number): not host:port
        numeric = port.isascii() and port.isdigit() and len(port) <= 20
        if host and numeric and not 0 < int(port) < 65536:
            return f"--target {target!r}: port {port} is not in 1-65535"
        return f"--target must be host:port (127.0.0.1:7070, [::1]:7070), got {target!r}"
    return None


def timeout_problem(timeout: float) -> str | None:
    """Why `timeout` is no --timeout (seconds, > 0 and at most MAX_TIMEOUT), or None."""
    if 0 < timeout <= MAX_TIMEOUT:  # NaN fails both
        return None
    return f"--timeout must be > 0 and at most {MAX_TIMEOUT:g} seconds, got {timeout:g}"


def show_status(
    target: str | None,
    as_json: bool,
    timeout: float,
    tls: TlsFiles | None,
    values: OptionValues | None = None,
) -> int:
    """`declora-node status`: print the node's status (a table or JSON); the exit code
    (with one `error:` line and a `hint:` line: 2 when the swarm secret's variables or
    config keys cannot be used, 1 when the node cannot be asked). The node's own
    `values` (default the environment's) give its secret (`own_secret`), without
    `target` its address (`own_target`) and without `tls` its TLS files, as `status
    --check` presents them (`health_check.call_tls`)."""
    import json
    import sys

    from declora.cli.health_check import call_tls

    try:
        secret = own_secret(values)  # a bad one: before any call
        address = target or own_target(values)
        tls, options, own = call_tls(address, tls, values)
        reply = fetch_status(address, timeout, tls=tls, secret=secret, options=options, own=own)
    except StatusError as exc:
        print(*error_lines(exc.message, exc.hint), sep="\n", file=sys.stderr)
        return exc.code
    if as_json:
        print(json.dumps(status_to_dict(reply), indent=2))
    else:
        render_status(reply)
    return 0


def own_secret(values: OptionValues | None = None) -> str | None:
    """The swarm secret the node's own `values` give (default the environment's:
    DECLORA_SWARM_SECRET or the file DECLORA_SWARM_SECRET_FILE names, else its config
    file's keys), with `start`'s rules (`settings.NodeSettings`): not both, an inline one
    of at least 16 characters, the file's path not empty, the file as
    `settings.read_secret_file` reads it; else None. SecretEnvError (exit code 2) names
    the problem where it was given, never the secret."""
    values = values or OptionValues()
    inline, path = values.get("swarm_secret"), values.get("swarm_secret_file")
    if inline is not None and path is not None:
        raise SecretEnvError(
            f"{inline[1]} and {path[1]} both give the swarm secret", "keep one (unset the other)"
        )
    if inline is not None:
        text, where = inline
        if not isinstance(text, str) or len(secret_text(text)) < 16:
            raise SecretEnvError(  # never the secret: not even a number's
                f"{where} must be text of at least 16 characters",
                "give the swarm's secret (e.g. `openssl rand -hex 32`), or unset it",
            )
        return secret_text(text)
    if path is None:
        return None
    file, where = path
    if not isinstance(file, str) or blank_path(file):
        why = BLANK_PATH if isinstance(file, str) else f"must be a file's path, got {file!r}"
        raise SecretEnvError(f"{where}: {why}", "give the secret file's path, or unset it")
    from declora.node.config_file import read_secret_file

    try:
        return read_secret_file(home_path(file))
    except ValueError as exc:
        raise SecretEnvError(f"{where}: {exc}", "fix the file or unset it") from None


def fetch_status(
    target: str,
    timeout: float = 5.0,
    include_digest: bool = False,
    tls: TlsFiles | None = None,
    secret: str | None = None,
    options: Sequence[tuple[str, str]] = (),
    own: str = "",
) -> pb.StatusReply:
    """One Status call to `target` (host:port) over a fresh channel (mTLS with `tls`
    and the channel `options`; `own`: where `tls`, the node's own files, were given, for
    the hints: `health_check.call_tls`);
    signed with the swarm `secret` (default: `own_secret`, when set), which a
    node with a secret requires. With a --tls-crl (`tls.crl`), a node whose certificate
    it revokes is not asked (its certificate is read first, as a node's dial does).
    StatusError says why it failed, with a hint."""
    secret = secret if secret is not None else own_secret()  # a bad one: before any call
    if tls is not None and tls.crl is not None:
        revoked_server(target, timeout, tls)
    request = pb.StatusRequest(include_digest=include_digest)
    if secret:
        SwarmAuth(secret.encode()).sign(request)
    channel = (
        grpc.insecure_channel(target)
        if tls is None
        else grpc.secure_channel(target, tls.channel_credentials(), options=options)
    )
    with channel:
        try:
            reply: pb.StatusReply = pb_grpc.SwarmStub(channel).Status(request, timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "ERROR"
            details = (exc.details() if hasattr(exc, "details") else "") or ""
            why, hint = status_failure(code, details, timeout, tls is not None, own)
            raise StatusError(f"cannot get status from {target}: {why}", hint) from exc
    return reply


def revoked_server(target: str, timeout: float, tls: TlsFiles) -> None:
    """StatusError when the server at `target` presents a certificate --tls-crl
    (`tls.crl`) revokes; nothing when it does not, or when its certificate cannot be
    read here (the Status call then says why it fails)."""
    import asyncio

    from declora.node.revocation import RevokedError
    from declora.node.security import TlsError

    host, port = split_address(target)
    try:
        asyncio.run(tls.server_name(host, port, timeout))
    except RevokedError as exc:
        raise StatusError(
            f"cannot get status from {target}: {exc}",
            "the node's certificate is revoked: its operator re-issues it "
            "(`declora-node certs --nodes NAME --force`); a node you trust is not asked",
        ) from None
    except TlsError:
        return


def status_failure(
    code: str, details: str, timeout: float, tls: bool, own: str = ""
) -> tuple[str, str]:
    """(why, hint) for a failed Status call: gRPC status `code` (its name) and `details`,
    made with mTLS files (`tls`) or without; `own` names where they were given when they
    are the node's own (`health_check.call_tls`), not --tls-* flags. `details` may be the
    node's words: quoted with control characters escaped, at most about `REMOTE_TEXT` x 3
    characters."""
    from declora.node.logs import safe_text

    why = cause(code, details, tls)
    details = safe_text(details, 3 * REMOTE_TEXT)
    if why is Cause.UNAUTHENTICATED:
        return (
            f"the node refused the request: {details}",
            "set DECLORA_SWARM_SECRET or DECLORA_SWARM_SECRET_FILE to the swarm's secret",
        )
    if why is Cause.LOADING:
        return f"the node is {details}", "try again in a moment"
    if why is Cause.REFUSED:
        return (
            "connection refused (nothing listens on that port)",
            "is the node running, and is --target its --listen host:port?",
        )
    if why is Cause.DNS:
        return f"cannot resolve the host ({details})", "check the host name in --target"
    if why is Cause.UNREACHABLE:
        return f"the host is unreachable ({details})", "check --target and the network between"
    if why is Cause.TIMEOUT:
        return (
            f"no answer within {timeout:g}s",
            "the node may be busy, or a firewall drops the connection: raise --timeout",
        )
    if why is Cause.NOT_TLS and own:
        return (
            "the TLS handshake failed: the node does not serve TLS (the TLS files "
            f"presented were the node's own: {own})",
            _own_tls_hint(own),
        )
    if why is Cause.NOT_TLS:
        return (
            "the TLS handshake failed: the node does not serve TLS",
            "leave out --tls-cert, --tls-key and --tls-ca for this node",
        )
    if why is Cause.TLS_UNTRUSTED:
        return (
            "the TLS handshake failed: the node's certificate is not signed by --tls-ca "
            "(CERTIFICATE_VERIFY_FAILED)",
            "give the CA of the node's swarm as --tls-ca",
        )
    if why is Cause.TLS_EXPIRED:
        return (
            "the TLS handshake failed: the node's certificate has expired",
            "mint the node a new certificate (`declora-node certs`) and restart it",
        )
    if why is Cause.TLS_NOT_YET_VALID:
        return (
            "the TLS handshake failed: the node's certificate is not valid yet",
            "check the clocks of this machine and the node's",
        )
    if why is Cause.TLS_HOSTNAME:
        return (
            "the TLS handshake failed: the node's certificate does not name the host of "
            "--target (Hostname Verification)",
            "give --target a host its certificate names, or re-issue it with "
            "`declora-node certs --hosts` naming that host",
        )
    if why is Cause.TLS:
        return (
            f"the TLS handshake failed: {details}",
            "give --tls-cert, --tls-key and --tls-ca of the node's swarm",
        )
    if why is Cause.CLOSED and tls:
        return (
            "the node closed the connection: it refused this certificate, or it went down",
            "give a --tls-cert and --tls-key signed by the node's swarm CA "
            "(`declora-node certs` mints cli.pem), or check that the node is running",
        )
    if why is Cause.CLOSED:
        return (
            "the node closed the connection (it serves mTLS and this command does not, "
            "or it went down)",
            "if the node uses mTLS, give --tls-cert, --tls-key and --tls-ca "
            "(`declora-node certs` mints cli.pem); else check that it is running",
        )
    return f"{code}: {details}".strip(), "check --target, and that the node is running"


def _own_tls_hint(own: str) -> str:
    """How to ask a node without TLS when the node's own files, given where `own` names
    (`DECLORA_TLS_*` variables, a config file's keys), were presented."""
    variables = [name for name in own.split(", ") if name.upper().startswith("DECLORA_")]
    ways = [f"unset {', '.join(variables)} for this command"] if variables else []
    if len(variables) < len(own.split(", ")):
        ways.append("leave out --config (its tls_* keys) and give --target")
    return "to ask a node without TLS, " + ", and ".join(ways)


def message_to_dict(msg: Message) -> dict[str, Any]:
    """A protobuf message as JSON-ready Python values of its own types: 64-bit integers
    stay numbers (MessageToDict writes them as strings), a NaN or infinite float is
    None, every field is present: a message field that is not set is None (a node
    not running DECA has no `deca`)."""
    out: dict[str, Any] = {}
    for f in msg.DESCRIPTOR.fields:
        value = getattr(msg, f.name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            inner = f.message_type.fields_by_name["value"]
            out[f.name] = {k: _field_value(inner, v) for k, v in value.items()}
        elif f.message_type is not None and not f.is_repeated and not msg.HasField(f.name):
            out[f.name] = None
        elif f.is_repeated:
            out[f.name] = [_field_value(f, v) for v in value]
        else:
            out[f.name] = _field_value(f, value)
    return out


def _field_value(f: FieldDescriptor, value: Any) -> Any:
    if f.message_type is not None:
        return message_to_dict(value)
    if f.type == FieldDescriptor.TYPE_ENUM:
        return (
            f.enum_type.values_by_number[value].name
            if value in f.enum_type.values_by_number
            else value
        )
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def status_to_dict(reply: pb.StatusReply) -> dict[str, Any]:
    """The Status reply for `status --format json`: numbers as numbers."""
    return message_to_dict(reply)


def _ago(ts: float) -> str:
    if not ts > 0:  # unset, or a node's NaN
        return "-"
    seconds = max(time.time() - ts, 0.0)
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


WIDEST = 1e9  # a number at or above this (in magnitude) is shown as `figure` shows it


def figure(value: float | None, digits: int) -> str:
    """A number a node gave, as `status` and `inspect` show it: `digits` decimals, or 4
    significant digits (1e+308) when it is `WIDEST` or more, so no node's number fills
    the terminal (1e308 at 2 decimals is 312 characters); nan and inf as such; '-' for
    None (a NaN or infinity in `status_to_dict`'s form)."""
    if value is None:
        return "-"
    if not math.isfinite(value) or abs(value) >= WIDEST:
        return f"{value:.4g}"
    return f"{value:.{digits}f}"


def _size(n: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}G"  # unreachable


WIDE = 10_000  # columns of a report written to a pipe or file: no line is wrapped


def report_console(width: int | None = None, stderr: bool = False) -> Console:
    """The console a command prints a report on: a terminal's own width, else (a pipe,
    a file) `WIDE` columns, so no line wraps and no table cell is cut; `width` forces
    one."""
    from rich.console import Console

    console = Console(width=width, stderr=stderr)
    if width is None and not console.is_terminal:
        console = Console(width=WIDE, stderr=stderr)
    return console


def folded(table: Table) -> Table:
    """`table` with every column folding a value too wide for it onto more lines (a
    narrow terminal) rather than cutting it with an ellipsis."""
    for column in table.columns:
        column.overflow = "fold"
    return table


def round_text(round_: int, total: int, state: str) -> str:
    """A node's round as `status` shows it: "round 12/140" (`total`: its planned
    rounds, --rounds' exchanges; 0: it trains until stopped), and in the finish
    (`state` consensus) the rounds past them apart: "round 152 (140 planned + 12 of
    the consensus finish, which ends once the neighbours agree)"."""
    if state == "consensus":
        past = f"{total} planned + {round_ - total} of " if 0 < total <= round_ else ""
        return f"round {round_} ({past}the consensus finish, which ends once the neighbours agree)"
    return f"round {round_}" + (f"/{total}" if total else "")


SHOWN_TEXT = 40  # characters of a name a node gives (method, auth) that `status` shows
REMOTE_TEXT = 100  # characters of any other string a node gives (ids, addresses, names)
UNKNOWN_RELEASE = "?"  # a neighbour's release where its node does not say (an older one)


def remote_text(value: object, limit: int = REMOTE_TEXT) -> str:
    """A string a node (or a file) gave, as `status` and `inspect` print it: control
    and invisible characters escaped (`logs.safe_text`), at most about `limit`
    characters (the cut said), and rich markup escaped: a hostile node cannot style
    or move the operator's terminal, nor flood it. Shown as sent (backslashes too)
    wherever it stands in markup, before a tag or not."""
    from rich.markup import escape

    from declora.node.logs import safe_text

    text = safe_text(str(value), limit)
    body = text.rstrip("\\")
    if body == text:
        return escape(text)
    # rich's escape doubles one trailing backslash (shown twice unless a tag follows):
    # the run doubled before an empty tag shows as sent, and ends in no backslash
    return escape(body) + "\\" * 2 * (len(text) - len(body)) + "[dim][/dim]"


MAX_ROWS = 256  # neighbours `status` and `inspect` list (--format json lists all)
MAX_ITEMS = 32  # evaluation metrics and refusal reasons `status` lists


def more_text(total: int, shown: int, what: str) -> str:
    """'' when all `total` were shown, else "... and N more <what> (--format json
    lists all)"."""
    if total <= shown:
        return ""
    return f"... and {total - shown} more {what} (--format json lists all)"


def auth_text(auth: str) -> str:
    """Who may connect, as `status` shows it: "auth " and StatusReply.auth as
    `--format json` has it (`security.auth_mode`: none, secret, mtls, mtls+secret),
    one name for one thing; '' when the node does not say (an older one); any other
    value as is (escaped, bounded)."""
    if not auth:
        return ""
    return "auth " + remote_text(auth, SHOWN_TEXT)


def method_text(status: Mapping[str, Any]) -> str:
    """The node's method as `status` and `inspect` show it, from the Status reply's
    JSON form (`status_to_dict`): "method deca: block 2/4, 3 rounds left in its turn",
    "method kill-revive: 3/24 modules active", "method dec-lora"; '' when the node does
    not say (an older one). The name is the node's: escaped, bounded (`remote_text`)."""
    if not (method := status.get("method")):
        return ""
    text = "method " + remote_text(method, SHOWN_TEXT)
    if d := status.get("deca"):
        left = (
            "the last round of its turn"
            if d["rounds_left"] == 1
            else f"{d['rounds_left']} rounds left in its turn"
        )
        text += f": block {d['block']}/{d['blocks']}, {left}"
    elif k := status.get("kill_revive"):
        text += f": {k['active_modules']}/{k['modules']} modules active"
    return text


def refused_text(rejected: Mapping[str, int]) -> str:
    """The node's refusals by reason as `status` and `inspect --target` show them:
    "refused: handshake 2, request_timeout 64" (the first `MAX_ITEMS` by name, then
    how many more; the names are the node's: escaped, bounded); '' when none."""
    if not rejected:
        return ""
    refused = sorted(rejected.items())[:MAX_ITEMS]
    text = "refused: " + ", ".join(f"{remote_text(k)} {v}" for k, v in refused)
    more = more_text(len(rejected), MAX_ITEMS, "refusal reasons")
    return text + (f"\n{more}" if more else "")


def render_status(reply: pb.StatusReply, width: int | None = None) -> None:
    """A node's status in short lines and a neighbour table: a terminal's width (a
    table's cells fold), else one line each, never cut (`report_console`). The table
    has a release column while a neighbour's release differs from the node's own (a
    rolling upgrade; `UNKNOWN_RELEASE` for one that does not say)."""
    from rich.table import Table

    console = report_console(width)
    show = remote_text  # every string below is the node's: escaped, bounded
    tracking = ", gradient tracking" if reply.gradient_tracking else ""
    tracking += f", weighting {show(reply.weighting)}" if reply.weighting else ""
    evals = ", ".join(
        f"{show(k)} {figure(v, 4)}" for k, v in sorted(reply.last_eval.items())[:MAX_ITEMS]
    )
    auth = auth_text(reply.auth)
    lines = [  # each within 80 columns for the usual figures
        f"[bold]{show(reply.node_id)}[/] on {show(reply.listen_address)}  "
        f"swarm {show(reply.swarm_id)}",
        f"state {show(reply.state)}  " + round_text(reply.round, reply.total_rounds, reply.state),
        f"step {reply.step}  loss {figure(reply.loss, 4)}  "
        f"last round {figure(reply.last_round_seconds, 2)}s  "
        f"self weight {figure(reply.self_weight, 3)}  keyframes {reply.keyframes_sent}",
        f"eval: {evals or 'none yet'}",
        more_text(len(reply.last_eval), MAX_ITEMS, "evaluation results"),
        f"codec {show(reply.codec)}{tracking}" + (f"  {auth}" if auth else ""),
        f"sent {_size(reply.bytes_sent)}  received {_size(reply.bytes_received)}  "
        f"fingerprint {show(reply.fingerprint)}  declora {show(reply.package_version)}",
    ]
    if method := method_text(status_to_dict(reply)):
        lines.insert(2, method)
    lines.append(refused_text(reply.rejected))
    console.print("\n".join(line for line in lines if line))
    table = Table(box=None, pad_edge=False, header_style="bold underline")
    rows = reply.neighbors[:MAX_ROWS]
    # a release column only while a neighbour's differs from this node's ('?': unsaid)
    mixed = any(n.package_version != reply.package_version for n in rows)
    for column in ("neighbour", "address", "live", *(["release"] * mixed), "weight", "round"):
        table.add_column(column)
    table.add_column("seen")
    for column in ("sent", "recv", "missed"):
        table.add_column(column, justify="right")
    for n in rows:
        release = show(n.package_version, SHOWN_TEXT) if n.package_version else UNKNOWN_RELEASE
        table.add_row(
            show(n.node_id),
            show(n.address),
            "yes" if n.live else "no",
            *([release] * mixed),
            figure(n.weight, 3),
            str(n.round),
            _ago(n.last_seen_unix),
            _size(n.bytes_sent),
            _size(n.bytes_received),
            str(n.missed_deadlines),
        )
    console.print(folded(table))
    if more := more_text(len(reply.neighbors), MAX_ROWS, "neighbours"):
        console.print(more)
    for p in reply.pending[:MAX_ROWS]:  # configured peers not joined: why, so far
        console.print(f"not joined: {show(p.address)} ({show(p.reach, SHOWN_TEXT)})")
    if more := more_text(len(reply.pending), MAX_ROWS, "configured peers not joined"):
        console.print(more)
