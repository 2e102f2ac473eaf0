"""What a daemon tells about itself: refusal counters, the Status reply, the state
digest and the round history (`rounds.jsonl`).

- every refusal is counted by reason, in `Status.rejected` and in
  `declora_rejected_total{reason}`; one of a revoked certificate is logged at WARNING
  once per certificate (`Counters.refused`), then at DEBUG; the gRPC interceptor's
  refusals (`first_message.REFUSALS`: a request message that never came, did not
  parse (`malformed_request`, apart from a push's `malformed`) or was cut from the
  waiting room, an answer past a network's share) are counted there too
  (the transport's `refused`, set by `service.SwarmService`), not logged;
- `pending` lists the configured peers (`--peers`) no table entry stands for yet,
  each with how far it got: "resolving" (a DNS name: the lookup has not answered),
  "dialling", or its last dial's outcome ("DNS lookup of NAME failed": unresolved),
  bounded (`REACH_CHARS`); one that joined is a neighbour row instead;
- each neighbour's row carries its release (`NeighborStatus.package_version`, from
  its Hello, at most `peers.RELEASE` characters; empty from an older node);
- the state digest is a SHA-256 over the adapter, every public copy, the tracking
  correction and every queued payload: equal digests mean nothing was touched;
- `rounds.jsonl` gets one JSON line per completed round, appended; past
  `HISTORY_CAP` bytes it is rotated to `rounds.jsonl.1` (`append_round`), so a node's
  history takes at most about twice the cap on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from declora.node import __version__, run_folder
from declora.node.address import ip_of, split_address
from declora.node.daemon.method_status import fill_method
from declora.node.daemon.peers import PeerTable
from declora.node.daemon.state import Progress
from declora.node.dec_lora import DecLoraNode
from declora.node.limits import RATE_LIMITED
from declora.node.logs import RefusalLog, safe_text
from declora.node.metrics import NodeMetrics
from declora.node.wire import WireError
from declora.proto import pb

if TYPE_CHECKING:
    from declora.node.daemon.inbox import Inbound

log = logging.getLogger(__name__)

REVOKED_SAID = 1024  # revoked certificates whose refusal `Counters.refused` remembers saying


@dataclass
class Counters:
    """Refusals by reason and keyframes sent; mirrored into the metrics."""

    metrics: NodeMetrics
    rejected: dict[str, int] = field(default_factory=dict)
    keyframes_sent: int = 0
    # refused messages logged in full at most 20 a minute per counter, the rest summed up
    refusals: dict[str, RefusalLog] = field(default_factory=dict, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    # the reasons of `revoked` refusals logged (each names one certificate): said once each
    revoked_said: OrderedDict[str, None] = field(default_factory=OrderedDict, repr=False)

    def count(self, counter: str) -> None:
        """Count one refusal by reason."""
        self.rejected[counter] = self.rejected.get(counter, 0) + 1
        self.metrics.rejected.labels(counter).inc()

    def refused(self, exc: WireError) -> None:
        """Count and log a refused message: rate limiting at DEBUG, the rest at WARNING
        at most `REFUSALS_LOGGED` a minute per counter in full, then counted in one
        line (`RefusalLog`): a flood, even a stranger's, must not flood the log too. A
        revoked certificate's refusal is logged once per reason (per certificate: the
        `REVOKED_SAID` latest), then at DEBUG: a revoked node re-dials for as long as it
        runs."""
        self.count(exc.counter)
        if exc.counter == RATE_LIMITED or self._said_before(exc):
            log.debug("refused a message: %s", exc.reason)
            return
        refusals = self.refusals.get(exc.counter)
        if refusals is None:  # counters are the code's names: a bounded set
            refusals = RefusalLog(f"refused messages ({exc.counter})", clock=self.clock, logger=log)
            self.refusals[exc.counter] = refusals
        refusals.warning("refused a message: %s", exc.reason)

    def _said_before(self, exc: WireError) -> bool:
        """Whether `exc` is a `revoked` refusal logged before (remembered from now on)."""
        if exc.counter != "revoked":
            return False
        said = exc.reason in self.revoked_said
        self.revoked_said[exc.reason] = None
        self.revoked_said.move_to_end(exc.reason)
        while len(self.revoked_said) > REVOKED_SAID:
            self.revoked_said.popitem(last=False)
        return said

    def flush_refusals(self, final: bool = False) -> None:
        """Sum up the refused messages not logged in full; `final` at exit."""
        for refusals in self.refusals.values():
            refusals.flush(final)


@dataclass
class RoundReport:
    """The latest figures of the node's rounds (what Status and the history show)."""

    loss: float = float("nan")
    last_eval: dict[str, float] = field(default_factory=dict)
    self_weight: float = 1.0
    last_round_seconds: float = 0.0


def state_digest(node: DecLoraNode[str], inbox: Mapping[int, Mapping[str, Inbound]]) -> str:
    """SHA-256 over the adapter, every public copy, the correction and the queue."""
    h = node.digest(hashlib.sha256())
    for r in sorted(inbox):
        for pid in sorted(inbox[r]):
            msg = inbox[r][pid]
            h.update(f"{r}/{pid}/{msg.kind}/{msg.seq}/{msg.degree}\0".encode())
            h.update(msg.vector.tobytes())
            if msg.tracker is not None:
                h.update(msg.tracker.tobytes())
    return h.hexdigest()


@dataclass
class NodeFacts:
    """What Status reports that never changes while the node runs."""

    node_id: str
    swarm_id: str
    fingerprint: str
    listen_address: str
    codec: str
    total_rounds: int
    auth: str
    gradient_tracking: bool
    weighting: str
    started_unix: float = field(default_factory=time.time)
    consensus_rounds: int = 0  # the most the finish may run past total_rounds


RESOLVING, DIALLING = "resolving", "dialling"  # a configured peer no dial of which ended
REACH_CHARS = 200  # of a pending peer's reach (a dial's outcome may quote the peer)


def pending_peers(
    configured: Sequence[str],
    peers: PeerTable,
    outcomes: Mapping[str, str],
    resolved: Mapping[str, Collection[str]],
) -> list[pb.PendingPeer]:
    """The `configured` addresses that neither a table entry's address is nor joined
    at their last dial ('' in `outcomes`) nor name an entry's IP and port (`localhost:7401`
    for 127.0.0.1:7401: never dialled), in order, each with its `reach` (see the
    module); `resolved`: the IPs of the names that resolved once."""
    known = {p.address for p in peers.all()}
    ends = set().union(*(_ends(a, {}) for a in known))
    pending = []
    for address in dict.fromkeys(a.strip() for a in configured):
        why = outcomes.get(address)
        if why == "" or address in known or _ends(address, resolved) & ends:
            continue
        if why is None:
            why = DIALLING if _is_ip(address) or address in resolved else RESOLVING
        pending.append(pb.PendingPeer(address=address, reach=safe_text(why, REACH_CHARS)))
    return pending


def _ends(address: str, resolved: Mapping[str, Collection[str]]) -> set[tuple[str, int]]:
    """The (IP, port) pairs `address` stands for: its IP, or those its name resolved to
    (`resolved`; none before it did, or when it is malformed)."""
    try:
        host, port = split_address(address)
    except ValueError:
        return set()
    hosts = [host] if ip_of(host) is not None else resolved.get(address, ())
    return {(str(ip), port) for h in hosts if (ip := ip_of(h)) is not None}


def _is_ip(address: str) -> bool:
    try:
        return ip_of(split_address(address)[0]) is not None
    except ValueError:  # malformed: no name to resolve either
        return True


def neighbor_statuses(peers: PeerTable) -> list[pb.NeighborStatus]:
    """Each known peer as `status` shows it. Its `last_seen_unix` is this node's wall
    clock now less the monotonic time since it was heard (`Peer.heard`), so a wall-clock
    step since then (NTP, a resumed VM) does not move the "last seen" ago; 0 when it
    was never heard."""
    wall, mono = time.time(), peers.clock()
    return [
        pb.NeighborStatus(
            node_id=p.node_id,
            address=p.address,
            live=p.live,
            weight=p.weight,
            degree=p.degree,
            last_seen_unix=wall - max(mono - p.heard, 0.0) if p.heard > 0 else 0.0,
            bytes_sent=p.bytes_sent,
            bytes_received=p.bytes_received,
            round=p.round,
            missed_deadlines=p.missed,
            package_version=p.release,
        )
        for p in peers.all()
    ]


def status_reply(
    facts: NodeFacts,
    progress: Progress,
    report: RoundReport,
    counters: Counters,
    node: DecLoraNode[str],
    peers: PeerTable,
    digest: str = "",
    pending: Sequence[pb.PendingPeer] = (),
) -> pb.StatusReply:
    """The Status RPC's answer (`pending`: see `pending_peers`)."""
    reply = pb.StatusReply(
        node_id=facts.node_id,
        swarm_id=facts.swarm_id,
        fingerprint=facts.fingerprint,
        package_version=__version__,
        state=progress.state.value,
        round=progress.round,
        step=node.trainer.step,
        loss=report.loss,
        self_weight=report.self_weight,
        bytes_sent=node.bytes_sent,
        bytes_received=node.bytes_received,
        listen_address=facts.listen_address,
        codec=facts.codec,
        started_unix=facts.started_unix,
        total_rounds=facts.total_rounds,
        consensus_rounds=facts.consensus_rounds,
        last_round_seconds=report.last_round_seconds,
        keyframes_sent=counters.keyframes_sent,
        auth=facts.auth,
        gradient_tracking=facts.gradient_tracking,
        weighting=facts.weighting,
        state_digest=digest,
    )
    fill_method(reply, node, progress.round)
    reply.last_eval.update(report.last_eval)
    reply.rejected.update(counters.rejected)
    reply.neighbors.extend(neighbor_statuses(peers))
    reply.pending.extend(pending)
    return reply


HISTORY_CAP = 32 * 1024 * 1024  # bytes of rounds.jsonl: a line past it rotates the file


def append_round(folder: Path, entry: dict[str, Any]) -> None:
    """Append one JSON line to `<folder>/rounds.jsonl` (the node's history). A line
    that would take the file past `HISTORY_CAP` first rotates it, as logrotate does:
    `os.replace` moves it whole to rounds.jsonl.1 (replacing the older one) and the
    line begins a fresh rounds.jsonl; the two hold every line since the rotation
    before the last. A line that cannot be written whole (OSError: a full disk) is cut
    off again, so the files hold whole lines only; when the rotation fails (OSError)
    the line is not written and the file is left as it was: past the cap it does not
    grow. The file is its owner's only (0600), as the rest of the folder. For the
    process holding the folder (`run_folder.hold`): the only writer."""
    folder.mkdir(parents=True, exist_ok=True)
    line = memoryview((json.dumps(entry) + "\n").encode())
    path = folder / run_folder.HISTORY
    with contextlib.suppress(FileNotFoundError):  # none yet: the line begins it
        size = path.stat().st_size
        if size and size + len(line) > HISTORY_CAP:
            os.replace(path, folder / run_folder.OLDER_HISTORY)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        info = os.fstat(fd)
        if info.st_mode & 0o077:  # an earlier version's 0644: the folder's own, 0600
            with contextlib.suppress(OSError):  # not ours to change: the line still goes
                os.fchmod(fd, 0o600)
        size = info.st_size
        try:
            while line:
                line = line[os.write(fd, line) :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def round_entry(
    progress: Progress,
    report: RoundReport,
    node: DecLoraNode[str],
    peers: PeerTable,
    phase: str,
    evaluated: bool,
) -> dict[str, Any]:
    """One line of the history: round, phase, loss, eval, live set, bytes, seconds,
    disagreement (null while not measured: with no live neighbour, or DECA after a
    resume)."""
    live = [p.node_id for p in peers.live]
    return {
        "time": time.time(),
        "round": progress.round,
        "phase": phase,
        "step": node.trainer.step,
        "loss": None if np.isnan(report.loss) else report.loss,
        "eval": report.last_eval if evaluated else None,
        "live_neighbors": live,
        "self_weight": report.self_weight,
        "bytes_sent": node.bytes_sent,
        "bytes_received": node.bytes_received,
        "seconds": report.last_round_seconds,
        "disagreement": gap if live and np.isfinite(gap := node.disagreement(live)) else None,
    }
