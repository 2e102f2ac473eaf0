"""The node daemon: builds its parts, starts, runs the train loop, stops.

One asyncio event loop serves peers (grpc.aio) while training runs in a worker
thread. A round is the core's sequence (`DecLoraNode`): train K steps, then the
round's exchange (`exchange`): push to every live neighbour, wait for theirs until
all have arrived or `round_deadline` passes, mix with Metropolis-Hastings weights.

Invariants callers may rely on:
- `await Daemon(settings).run()` returns the process exit code;
- checkpoints are written atomically (see `checkpoint`) every `checkpoint_every`
  rounds and at exit; SIGTERM/SIGINT finish the current step, tell neighbours,
  checkpoint and exit 0; a second signal exits at once (130);
- after the last training round, gossip-only rounds (the consensus finish) run
  until every live neighbour is within `consensus_tol`, then the final adapter is
  written in the PEFT format to `<checkpoint_dir>/adapter`.
The parts: `transport` (gRPC), `peers` (the live set), `handshake` (who may join),
`exchange` (one round), `service` (the RPCs), `status` (what the node reports).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import torch

from declora.node import PROTOCOL_VERSION, checkpoint, logs
from declora.node.daemon.exchange import MAX_ROUNDS_AHEAD, Exchange, Identity
from declora.node.daemon.handshake import Auth, Handshaker
from declora.node.daemon.peers import PeerTable
from declora.node.daemon.service import SwarmService
from declora.node.daemon.state import NodeState, Progress
from declora.node.daemon.status import (
    Counters,
    NodeFacts,
    RoundReport,
    append_round,
    round_entry,
    state_digest,
    status_reply,
)
from declora.node.daemon.transport import Transport
from declora.node.dec_lora import DecLoraNode, NodeSnapshot
from declora.node.discovery import Discovery, MdnsDiscovery, StaticDiscovery
from declora.node.gossip import GossipError
from declora.node.limits import NodeLimits
from declora.node.metrics import NodeMetrics
from declora.node.security import SwarmAuth, auth_mode, is_loopback
from declora.node.settings import NodeSettings
from declora.node.trainer import Encoded, LoraModel
from declora.node.wire import WireError
from declora.node.workload import load_workload
from declora.proto import pb

log = logging.getLogger(__name__)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


@dataclass
class Parts:
    """A running node's parts, wired together (what the servicer hands RPCs to)."""

    settings: NodeSettings
    lm: LoraModel
    node: DecLoraNode[str]
    test: Encoded | None
    progress: Progress
    report: RoundReport
    counters: Counters
    facts: NodeFacts
    limits: NodeLimits
    auth: Auth
    peers: PeerTable
    handshaker: Handshaker
    exchange: Exchange

    def status(self, include_digest: bool = False) -> Any:
        digest = state_digest(self.node, self.exchange.inbox) if include_digest else ""
        return status_reply(
            self.facts, self.progress, self.report, self.counters, self.node, self.peers, digest
        )


class Daemon:
    """One node. `await run()` returns the process exit code."""

    def __init__(self, settings: NodeSettings, transport: Transport | None = None) -> None:
        self.settings = settings
        self.metrics = NodeMetrics()
        self.progress = Progress()
        self.report = RoundReport()
        self.counters = Counters(self.metrics)
        self.transport = transport or Transport(settings, settings.tls())
        secret = settings.swarm_secret
        self.auth = Auth(
            SwarmAuth(secret.get_secret_value().encode()) if secret else None, self.counters
        )
        self.checkpoint_dir = settings.checkpoint_dir or Path("declora-state") / settings.node_id
        self.saved_round = -1  # round of the newest checkpoint written or resumed from
        self.parts: Parts | None = None
        self._discovery: Discovery | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    # ------------------------------------------------------------ building
    def build(self) -> Parts:
        """Load data and model and wire the parts (blocking: `run` calls it in a thread)."""
        s = self.settings
        if s.threads:
            torch.set_num_threads(s.threads)
        index, total = s.partition_index or (0, 1)
        work = load_workload(s.recipe(), total, device=resolve_device(s.device))
        node = work.node(index)
        lm = work.lm
        limits = NodeLimits(
            handshakes_per_minute=s.max_handshakes_per_minute,
            pushes_per_round=s.max_pushes_per_round,
            pulls_per_minute=s.max_pulls_per_minute,
            rounds_ahead=MAX_ROUNDS_AHEAD,
        )
        peers = PeerTable(
            node,
            self.progress,
            self.transport,
            self.metrics,
            s.max_neighbors,
            close_grace=s.round_deadline + 1.0,
        )
        handshaker = Handshaker(
            s, lm.fingerprint, self.progress, peers, self.transport, self.auth, self.counters
        )
        identity = Identity(s.node_id, s.swarm_id, lm.fingerprint, lm.schema, node.codec_spec)
        exchange = Exchange(
            s,
            identity,
            node,
            self.progress,
            peers,
            handshaker,
            self.auth,
            limits,
            self.counters,
            self.report,
            self.metrics,
        )
        facts = NodeFacts(
            node_id=s.node_id,
            swarm_id=s.swarm_id,
            fingerprint=lm.fingerprint,
            listen_address=s.advertise,
            codec=s.codec,
            total_rounds=s.rounds,
            auth=auth_mode(self.transport.tls is not None, self.auth.secret is not None),
            gradient_tracking=s.gradient_tracking,
        )
        return Parts(
            s,
            lm,
            node,
            work.encoded_test(),
            self.progress,
            self.report,
            self.counters,
            facts,
            limits,
            self.auth,
            peers,
            handshaker,
            exchange,
        )

    def _resume(self, parts: Parts) -> None:
        state = checkpoint.load(self.checkpoint_dir, parts.lm)
        checkpoint.restore_trainer(parts.node.trainer, state.trainer, state.vector)
        parts.node.restore(NodeSnapshot(state.vector, state.public, state.correction))
        self.progress.round, self.progress.seq = state.round, state.seq
        self.saved_round = state.round
        log.info("resumed from %s at round %d", checkpoint.latest(self.checkpoint_dir), state.round)

    def _discovery_for(self, parts: Parts) -> Discovery:
        s = self.settings
        if not s.mdns:
            return StaticDiscovery(s.peers, s.advertise)
        return MdnsDiscovery(
            node_id=s.node_id,
            swarm_id=s.swarm_id,
            fingerprint=parts.lm.fingerprint,
            protocol_version=PROTOCOL_VERSION,
            advertise=s.advertise,
            interface=s.mdns_interface,
            logger=logging.getLogger("declora.discovery"),
        )

    # ------------------------------------------------------------ lifecycle
    async def run(self) -> int:
        s = self.settings
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        if self.transport.tls is None and self.auth.secret is None and not is_loopback(s.listen):
            log.warning(
                "serving %s with neither mTLS nor a swarm secret: anyone who reaches this "
                "port can join the swarm and read the adapter; set DECLORA_SWARM_SECRET or "
                "--tls-cert/--tls-key/--tls-ca (`declora-node certs` mints them)",
                s.listen,
            )
        self.progress.state = NodeState.LOADING
        parts = await asyncio.to_thread(self.build)
        if s.resume:
            self._resume(parts)
        self.parts = parts
        logs.set_round(self.progress.round)
        await self.transport.start(SwarmService(parts))
        if s.metrics_port:
            self.metrics.serve(s.metrics_port)
        self._discovery = self._discovery_for(parts)
        parts.handshaker.discovery = self._discovery
        await self._discovery.start()
        self.transport.set_serving(True)
        log.info(
            "serving on %s (swarm %s, fingerprint %s, %d adapter values, codec %s, "
            "robust mixing %s)",
            s.listen,
            s.swarm_id,
            parts.lm.fingerprint,
            parts.lm.schema.numel,
            parts.node.codec_spec,
            parts.node.robust_spec,
        )
        try:
            await self._bootstrap(parts)
            self._tasks.append(asyncio.create_task(parts.handshaker.reconnect_forever()))
            await self._train_loop(parts)
        finally:
            await self._shutdown()
        return 0

    async def _bootstrap(self, parts: Parts) -> None:
        """Wait for the wanted neighbours (or the startup timeout), then catch up."""
        s = self.settings
        want = s.min_peers if s.min_peers >= 0 else (len(s.peers) if not s.mdns else 1)
        want = min(want, s.max_neighbors)
        deadline = time.monotonic() + s.startup_timeout
        self.progress.state = NodeState.CONNECTING
        while (
            len(parts.peers.live) < want
            and time.monotonic() < deadline
            and not self.progress.stop_requested
        ):
            await parts.handshaker.connect_known()
            if len(parts.peers.live) < want:
                await asyncio.sleep(0.2)
        if len(parts.peers.live) < want:
            log.warning("starting with %d of %d wanted neighbours", len(parts.peers.live), want)
        try:
            await parts.exchange.catch_up()
        except (WireError, GossipError, grpc.aio.AioRpcError) as exc:  # keep our own state
            why = exc.reason if isinstance(exc, WireError) else str(exc)
            log.warning("could not take a neighbour's state (%s): going on from our own", why)

    def request_stop(self) -> None:
        if self.progress.stop_requested:
            log.warning("second interrupt: exiting now")
            os._exit(130)
        log.info("stop requested: finishing the current step")
        self.progress.stop_requested = True
        self.progress.wake()

    async def run_round(self, parts: Parts, train: bool) -> None:
        """Train K local steps (unless `train` is false), then one exchange and mix."""
        progress, report, metrics = self.progress, self.report, self.metrics
        parts.exchange.align_round()
        r = progress.round + 1
        logs.set_round(r)
        t0 = time.perf_counter()
        if train:
            progress.state = NodeState.TRAINING
            report.loss = await asyncio.to_thread(
                parts.node.train, self.settings.local_steps, lambda: progress.stop_requested
            )
            metrics.loss.set(report.loss)
        progress.state = NodeState.EXCHANGING
        await parts.exchange.exchange(r)
        progress.round = r
        report.last_round_seconds = time.perf_counter() - t0
        metrics.rounds.inc()
        metrics.round.set(r)
        metrics.round_seconds.observe(report.last_round_seconds)
        log.info(
            "round %d done in %.2fs: loss %.4f, %d live neighbours, self weight %.3f",
            r,
            report.last_round_seconds,
            report.loss,
            len(parts.peers.live),
            report.self_weight,
        )

    async def _train_loop(self, parts: Parts) -> None:
        s, progress = self.settings, self.progress
        while not progress.stop_requested and (s.rounds == 0 or progress.round < s.rounds):
            await self.run_round(parts, train=True)
            evaluated = bool(s.eval_every and progress.round % s.eval_every == 0)
            if evaluated:
                await self._evaluate(parts)
            self._record(parts, "train", evaluated)
            if progress.round % s.checkpoint_every == 0:
                await asyncio.to_thread(self._save_checkpoint, parts)
        if progress.stop_requested:
            return
        progress.state = NodeState.CONSENSUS
        for _ in range(s.consensus_rounds):
            live = [p.node_id for p in parts.peers.live]
            if progress.stop_requested or not live:
                break
            if parts.node.disagreement(live) <= s.consensus_tol:
                break
            await self.run_round(parts, train=False)
            self._record(parts, "consensus", False)
        await self._evaluate(parts)
        self._record(parts, "final", True)
        progress.state = NodeState.DONE

    async def _evaluate(self, parts: Parts) -> None:
        if parts.test is None:
            return
        self.progress.state = NodeState.EVALUATING
        vec = parts.node.vector()
        self.report.last_eval = await asyncio.to_thread(parts.lm.evaluate, vec, parts.test)
        if "accuracy" in self.report.last_eval:
            self.metrics.accuracy.set(self.report.last_eval["accuracy"])
        log.info("eval %s", {k: round(v, 4) for k, v in self.report.last_eval.items()})

    def _record(self, parts: Parts, phase: str, evaluated: bool) -> None:
        entry = round_entry(self.progress, self.report, parts.node, parts.peers, phase, evaluated)
        append_round(self.checkpoint_dir, entry)

    def _save_checkpoint(self, parts: Parts) -> None:
        snap = parts.node.snapshot()
        state = checkpoint.NodeState(
            round=self.progress.round,
            seq=self.progress.seq,
            vector=snap.vector,
            public=snap.public,
            trainer=checkpoint.trainer_state(parts.node.trainer),
            fingerprint=parts.lm.fingerprint,
            correction=snap.correction,
        )
        meta = {"node_id": self.settings.node_id}
        path = checkpoint.save(self.checkpoint_dir, parts.lm, state, meta)
        self.saved_round = state.round
        log.info("checkpoint written: %s", path)

    def _save_final(self, parts: Parts) -> Path:
        path = self.checkpoint_dir / "adapter"
        meta = {
            "node_id": self.settings.node_id,
            "round": self.progress.round,
            "eval": self.report.last_eval,
        }
        parts.lm.save_adapter(parts.node.vector(), path, meta)
        log.info("final adapter written: %s", path)
        return path

    async def _shutdown(self) -> None:
        self.progress.state = NodeState.STOPPING
        self.transport.set_serving(False)
        for task in self._tasks:
            task.cancel()
        parts = self.parts
        if parts is not None:
            s = self.settings
            notice = parts.auth.sign(
                pb.LeaveNotice(node_id=s.node_id, swarm_id=s.swarm_id, round=self.progress.round)
            )
            live = parts.peers.live
            if live:
                await asyncio.gather(
                    *(parts.peers.stub(p).Leave(notice, timeout=2) for p in live),
                    return_exceptions=True,
                )
        if self._discovery is not None:
            try:
                await self._discovery.stop()
            except Exception:  # stopping must go on to the checkpoint
                log.exception("stopping discovery failed")
        if parts is not None:
            if self.saved_round != self.progress.round:  # never rewrite what LATEST names
                await asyncio.to_thread(self._save_checkpoint, parts)
            await asyncio.to_thread(self._save_final, parts)
            await parts.peers.close()
        await self.transport.stop(grace=1.0)
        self.progress.state = NodeState.STOPPED
        log.info("stopped after round %d", self.progress.round)


def serve(settings: NodeSettings) -> int:
    """Run a daemon until it finishes or is stopped; the process exit code."""
    logs.configure(settings.node_id, settings.log_format, settings.log_level)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
        return asyncio.run(Daemon(settings).run())
    return uvloop.run(Daemon(settings).run())
