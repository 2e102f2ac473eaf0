"""Talking to a running node from the CLI: the Status RPC and its rendering."""

from __future__ import annotations

import time
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from declora.node.security import TlsFiles
from declora.proto import pb, pb_grpc


class StatusError(RuntimeError):
    """The node could not be reached or did not answer."""


def fetch_status(
    target: str, timeout: float = 5.0, include_digest: bool = False, tls: TlsFiles | None = None
) -> pb.StatusReply:
    """One Status call to `target` (host:port) over a fresh channel (mTLS with `tls`)."""
    channel = (
        grpc.insecure_channel(target)
        if tls is None
        else grpc.secure_channel(target, tls.channel_credentials())
    )
    with channel:
        try:
            reply: pb.StatusReply = pb_grpc.SwarmStub(channel).Status(
                pb.StatusRequest(include_digest=include_digest), timeout=timeout
            )
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "ERROR"
            extra = ""
            if tls is None and code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                extra = " (if the node serves mTLS, pass --tls-cert, --tls-key and --tls-ca)"
            elif tls is not None and code == "UNAVAILABLE" and hasattr(exc, "details"):
                extra = f": {exc.details()}"  # e.g. why the TLS handshake failed
            raise StatusError(f"cannot get status from {target}: {code}{extra}") from exc
    return reply


def status_to_dict(reply: pb.StatusReply) -> dict[str, Any]:
    return MessageToDict(
        reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _ago(ts: float) -> str:
    return "never" if ts <= 0 else f"{max(time.time() - ts, 0):.1f}s ago"


def render_status(reply: pb.StatusReply) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    total = f"/{reply.total_rounds}" if reply.total_rounds else ""
    tracking = "  gradient tracking" if reply.gradient_tracking else ""
    evals = ", ".join(f"{k} {v:.4f}" for k, v in sorted(reply.last_eval.items())) or "none yet"
    console.print(
        f"[bold]{reply.node_id}[/] on {reply.listen_address}  swarm {reply.swarm_id}  "
        f"declora {reply.package_version}\n"
        f"state {reply.state}  round {reply.round}{total}  step {reply.step}  "
        f"loss {reply.loss:.4f}  last round {reply.last_round_seconds:.2f}s\n"
        f"eval: {evals}\n"
        f"codec {reply.codec}{tracking}  sent {reply.bytes_sent:,} B  "
        f"received {reply.bytes_received:,} B  "
        f"keyframes {reply.keyframes_sent}  self weight {reply.self_weight:.3f}  "
        f"fingerprint {reply.fingerprint}"
    )
    if reply.rejected:
        console.print(
            "refused: " + ", ".join(f"{k} {v}" for k, v in sorted(reply.rejected.items()))
        )
    table = Table(
        "neighbour",
        "address",
        "live",
        "weight",
        "degree",
        "round",
        "last seen",
        "sent B",
        "recv B",
        "missed",
    )
    for n in reply.neighbors:
        table.add_row(
            n.node_id,
            n.address,
            "yes" if n.live else "no",
            f"{n.weight:.3f}",
            str(n.degree),
            str(n.round),
            _ago(n.last_seen_unix),
            f"{n.bytes_sent:,}",
            f"{n.bytes_received:,}",
            str(n.missed_deadlines),
        )
    console.print(table)
