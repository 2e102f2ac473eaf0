"""The node daemon: builds its parts, starts, runs the train loop, stops.

One asyncio event loop serves peers (grpc.aio) while training runs in a worker
thread. A round is the core's sequence (`DecLoraNode`): train K steps, then the
round's exchange (`exchange`): push to every live neighbour, wait for theirs until
all have arrived or `round_deadline` passes, mix with Metropolis-Hastings weights.

Invariants callers may rely on:
- `await Daemon(settings).run()` returns the process exit code;
- checkpoints are written atomically (see `checkpoint`) every `checkpoint_every`
  training rounds and at exit, unless nothing was trained, mixed or taken since this
  start (then neither checkpoint nor adapter: a folder stays as the start found it);
  a checkpoint that cannot be written in a round (a full or read-only disk) is a
  warning and training goes on; at exit, a final adapter (or a stopped run's
  checkpoint) that cannot be written is a `UserError` (exit 1) raised once the
  neighbours were told and the server stopped;
  SIGTERM/SIGINT/SIGHUP finish the current step, tell neighbours, checkpoint and exit
  0; a second signal exits at once (130);
- after the last training round, gossip-only rounds (the consensus finish) run
  until every live neighbour is within `consensus_tol`, then the final adapter is
  written in the PEFT format to `<checkpoint_dir>/adapter`; a node resumed into the
  finish whose missing neighbours all refuse connections at `startup_timeout`
  (nothing listens there: they finished and left) finishes alone with a warning,
  writes its final adapter and exits 0; where one of them still listens (loading:
  it reserved its port first) or never answered, it exits 1 as any start would.
- a node that wants neighbours (`--min-peers` above 0, its default with --peers or
  --mdns) and has none live waits for one before each training round, up to the
  round's deadline, then trains alone (`rounds.Isolation`): cut off, it falls behind
  the swarm instead of racing ahead of it; once every known neighbour has left after
  this node's last training round (finished), it trains alone at full speed.
It owns the lifecycle only; `parts` builds the node, `rounds` runs its rounds and
`persistence` keeps its files (the package docstring lists every part).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from declora.node import PROTOCOL_VERSION, logs, run_folder
from declora.node.daemon.auth import Auth, watch_revocations
from declora.node.daemon.gate import LoadingGate
from declora.node.daemon.parts import Parts, build_parts, resolve_device
from declora.node.daemon.peers import Peer, PeerTable
from declora.node.daemon.persistence import Persistence
from declora.node.daemon.rounds import RoundLoop
from declora.node.daemon.service import SwarmService, pool_total
from declora.node.daemon.signals import take_over
from declora.node.daemon.startup import (
    DialLog,
    StartupError,
    UserError,
    check_device,
    plan_line,
    serve_metrics,
    startup_failure,
    stop_line,
)
from declora.node.daemon.state import NodeState, Progress
from declora.node.daemon.status import (
    Counters,
    RoundReport,
)
from declora.node.daemon.transport import Transport
from declora.node.discovery import Discovery, MdnsDiscovery, StaticDiscovery
from declora.node.metrics import NodeMetrics
from declora.node.quantize import check_runtime
from declora.node.security import SwarmAuth, TlsFiles, is_loopback
from declora.node.settings import NodeSettings
from declora.proto import pb

log = logging.getLogger(__name__)

STOP_GRACE = 30.0  # seconds a polite stop waits for the round in progress to mix


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
        self.dial_log = DialLog(self.transport.tls is not None)  # each dial's last end
        self.transport.dial_log = self.dial_log
        self.gate = LoadingGate()  # what the server answers until the parts exist
        self.store = Persistence(settings.state_dir)
        self.parts: Parts | None = None
        self.started_at = 0  # the round this start began at (`_shutdown` saves past it)
        self.rounds: RoundLoop | None = None
        self._discovery: Discovery | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    def build(self) -> Parts:
        """Load data and model and wire the parts (blocking: `run` calls it in a thread)."""
        parts = build_parts(
            self.settings,
            self.progress,
            self.report,
            self.counters,
            self.metrics,
            self.transport,
            self.auth,
        )
        self.store.attach(parts)
        self.rounds = RoundLoop(parts, self.store, self.metrics)
        return parts

    async def run_round(self, parts: Parts, train: bool) -> bool | None:
        """One round of a built node: whether it trained, None when none ran (see
        `rounds.RoundLoop.run_round`)."""
        assert self.rounds is not None and self.rounds.parts is parts
        return await self.rounds.run_round(train)

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
        """Bind (answering "still loading"), load, find the wanted neighbours, train,
        stop; the exit code. A user's mistake raises `UserError` (port in use, bad data
        file, too few neighbours by the startup timeout, ...)."""
        s = self.settings
        loop = asyncio.get_running_loop()
        take_over(loop, self.request_stop)  # and act on a signal that came before
        if self.transport.tls is None and self.auth.secret is None and not is_loopback(s.listen):
            log.warning(
                "serving %s with neither mTLS nor a swarm secret: anyone who reaches this "
                "port can join the swarm and read the adapter; set DECLORA_SWARM_SECRET (or "
                "DECLORA_SWARM_SECRET_FILE) or --tls-cert/--tls-key/--tls-ca (`declora-node "
                "certs` mints them)",
                s.listen,
            )
        self.progress.state = NodeState.LOADING
        places = pool_total(s.max_concurrent_streams, s.max_neighbors)  # the Pull pool's too
        await self.transport.start(self.gate, places)
        try:
            parts = await self._load()
        except BaseException:
            await self.transport.stop(grace=0)
            raise
        self.parts = parts
        self.started_at = self.progress.round  # 0, or the round resumed at
        logs.set_round(self.progress.round)
        self.gate.open(SwarmService(parts))
        self._discovery = self._discovery_for(parts)
        parts.handshaker.discovery = self._discovery
        try:
            await self._discovery.start()
        except BaseException:  # nothing trained: stop serving, save nothing
            await self._shutdown(save=False)
            raise
        self.transport.ready_when(lambda: len(parts.peers.live))  # health's declora.ready
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
        log.info(
            "recipe: lr %g a node (--lr %g x sqrt(--swarm-size %d)), %s schedule, %d warmup "
            "steps, gradient tracking %s, %d exchange(s) a training round, weighting %s "
            "(gradient x %g)",
            s.node_lr,
            s.lr,
            max(s.swarm_size, 1),
            s.lr_schedule,
            s.warmup_steps or 0,
            "on" if s.gradient_tracking else "off",
            s.exchanges_per_round,
            s.weighting,
            parts.node.trainer.grad_weight,
        )
        log.info("%s", plan_line(s))  # the rounds as Status' total_rounds counts them
        if s.swarm_size == 0:
            log.info(
                "--swarm-size not given: the lr is not scaled for the swarm (simulate "
                "and lab scale it by sqrt(nodes))"
            )
        save = True
        tls = getattr(self.transport, "tls", None)
        watch = watch_revocations(tls, parts.peers, parts.counters, self.progress)
        self._tasks.append(asyncio.create_task(watch))
        self._tasks.append(asyncio.create_task(parts.pex.run()))  # learns from the start
        try:
            await self._bootstrap(parts)
            self._tasks.append(asyncio.create_task(parts.handshaker.reconnect_forever()))
            assert self.rounds is not None
            await self.rounds.train_loop()
        except StartupError:
            save = False  # nothing trained: no checkpoint, no adapter
            raise
        finally:
            failure = await self._shutdown(save)  # the error raised, if any, wins
        if failure is not None:
            raise failure
        return 0

    async def _load(self) -> Parts:
        """The metrics port, the device, data and model, the checkpoint (UserError)."""
        s = self.settings
        serve_metrics(self.metrics, s.metrics_port, s.metrics_host)
        check_device(s.device)
        check_runtime(s.quantize, s.precision, resolve_device(s.device))  # before data loads
        parts = await asyncio.to_thread(self.build)
        if s.resume:
            self.store.resume(parts)
        return parts

    async def _bootstrap(self, parts: Parts) -> None:
        """Wait for the wanted neighbours, then catch up; at the startup timeout with
        too few, StartupError naming why each missing peer failed. A node with no
        training round left (resumed into the consensus finish) goes on instead, with
        a warning, only when the last dial of every missing wanted address (at least
        one) was refused a connection or named a host that no longer resolves
        (`DialLog.all_gone`: they finished and exited),
        and mixes with whoever is live: with nobody, the train loop ends the finish at
        once and the node writes its final adapter from its own state and exits 0. A
        neighbour still loading listens on its port already (its dial times out or
        answers "still loading"), so a swarm restarted together never finishes alone
        for want of a slow neighbour: StartupError, and a restart policy retries. With
        no address to dial (mDNS found nobody; a loading node is not advertised yet)
        nothing shows the neighbours left: StartupError too."""
        s = self.settings
        want = s.wanted_peers
        deadline = time.monotonic() + s.startup_timeout
        self.progress.state = NodeState.CONNECTING
        while len(parts.peers.live) < want and not self.progress.stop_requested:
            await parts.handshaker.connect_known()
            if len(parts.peers.live) >= want:
                break
            if time.monotonic() >= deadline:
                wanted = [*s.peers, *parts.handshaker.candidates()]
                live = {p.address for p in parts.peers.live}
                missing = [a for a in dict.fromkeys(wanted) if a not in live]
                finish = self._only_the_finish_left()
                if finish and self.dial_log.all_gone(missing):
                    live_now = len(parts.peers.live)
                    log.warning(
                        "%d of %d wanted neighbours after %g s (--startup-timeout), nothing "
                        "listening at the others' addresses (finished and left) and no "
                        "training round left (round %d, --rounds %d): finishing %s",
                        live_now,
                        want,
                        s.startup_timeout,
                        self.progress.round,
                        s.rounds,
                        f"with {live_now} neighbour(s)" if live_now else "alone",
                    )
                    break
                failure = startup_failure(s, want, wanted, live, self.dial_log.outcomes)
                if finish:
                    failure.hint = (
                        "no training round is left: this node finishes alone once nothing "
                        "listens at its missing peers' addresses; " + failure.hint
                    )
                raise failure
            await asyncio.sleep(0.2)  # between rounds of dialling
        assert self.rounds is not None
        await self.rounds.catch_up()

    def _only_the_finish_left(self) -> bool:
        """Whether the train loop has no training round left to run (--rounds reached:
        a resume into the consensus finish)."""
        s = self.settings
        return s.rounds > 0 and self.progress.round >= s.rounds * s.exchanges_per_round

    def request_stop(self) -> None:
        """SIGTERM/SIGINT/SIGHUP: finish the round in progress, its local steps and its mix
        (at most `STOP_GRACE` s), then leave; a second signal exits at once (130)."""
        progress = self.progress
        if progress.stop_requested or progress.stop_pending:
            log.warning("second interrupt: exiting now")
            os._exit(130)
        if progress.in_round:
            log.info("stop requested: finishing round %d first (steps and mix)", progress.round + 1)
            progress.stop_after_round()
            asyncio.get_running_loop().call_later(STOP_GRACE, progress.stop_now)
        else:
            log.info("stop requested")
            progress.stop_now()

    async def _shutdown(self, save: bool = True) -> UserError | None:
        """Tell live neighbours, stop discovery, checkpoint and write the final adapter
        (unless not `save`, or nothing changed since this start and the run did not
        finish), stop serving, whatever happened before. What could not be written (a
        full or read-only disk): the exit error (`Persistence.save_at_exit`)."""
        # nothing trained, mixed or taken since this start (a stop before the first
        # round): nothing to save, so a fresh folder stays fresh and a resumed one as it
        # was; a finished run (DONE) writes its adapter even so
        moved = self.progress.round != self.started_at
        finished = self.progress.state == NodeState.DONE
        self.progress.state = NodeState.STOPPING
        self.transport.set_serving(False)
        for task in self._tasks:
            task.cancel()
        parts = self.parts
        if parts is not None:
            s = self.settings

            def notice(peer: Peer) -> pb.LeaveNotice:
                return parts.auth.sign(
                    pb.LeaveNotice(
                        node_id=s.node_id,
                        swarm_id=s.swarm_id,
                        round=self.progress.round,
                        session=peer.token_out,
                        receiver_id=peer.node_id,
                    )
                )

            told = goodbye_to(parts.peers, getattr(self.transport, "tls", None))
            if told:
                await asyncio.gather(
                    *(parts.peers.stub(p).Leave(notice(p), timeout=2) for p in told),
                    return_exceptions=True,
                )
        if self._discovery is not None:
            try:
                await self._discovery.stop()
            except Exception:  # stopping must go on to the checkpoint
                log.exception("stopping discovery failed")
        failure: UserError | None = None
        try:
            if parts is not None and save and (moved or finished):
                unsaved = moved and self.store.saved_round != self.progress.round  # not LATEST's
                failure = await asyncio.to_thread(self.store.save_at_exit, unsaved, finished)
        finally:  # a failure above still closes the server: no grpc noise at exit
            if parts is not None:
                await parts.peers.close()
                parts.handshaker.flush_refusals(final=True)
            await self.transport.stop(grace=1.0)
            self.progress.state = NodeState.STOPPED
            logs.flush_repeats()
            run_folder.release(self.settings.state_dir)
        log.info("%s", stop_line(self.settings, self.progress.round))
        return failure


def goodbye_to(peers: PeerTable, tls: TlsFiles | None = None) -> list[Peer]:
    """Whom a stopping node says goodbye to: its live neighbours, and those not live
    that delivered valid payloads (`proven`) and hold a session with it (`token_out`):
    a neighbour dropped for lagging behind may still be training, and without the
    goodbye it would wait a deadline per remaining round for this node (its isolation
    pacing) and keep re-dialling it. Not one whose certificate --tls-crl revokes (as
    last seen: `Revocations.revoked_names`): this node dials no revoked server. Bounded
    by the peer table; each call by 2 s."""
    told = [p for p in peers.all() if p.live or (p.proven and p.token_out and p.address)]
    if tls is None or tls.crl is None:
        return told
    revoked = tls.crl.revoked_names([p.node_id for p in told])
    return [p for p in told if p.node_id not in revoked]


def serve(settings: NodeSettings) -> int:
    """Run a daemon until it finishes or is stopped; the process exit code (UserError
    for a user's mistake). See `launch`: the port is bound before torch loads."""
    from declora.node.daemon.launch import launch

    return launch(settings)
