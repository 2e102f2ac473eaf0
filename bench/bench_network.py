"""Rounds over shaped links: 4 real daemons in a ring, each in its own network namespace,
under link profiles from loopback to a bad home uplink, per message codec.

Each node is a `declora-node start` process (the lab's `node_command`) run with
`ip netns exec` in a namespace of its own; the namespaces are joined through
`netemu.py`, a user-space emulator that shapes every node's uplink (rate, one-way
delay, loss; see its docstring: the kernel's `sch_netem` is often missing). Profiles
(one-way delay per uplink: a round trip takes twice it):

    loopback  127.0.0.1, no namespaces, no emulator (every other bench's setting)
    tun       namespaces and emulator, unshaped: the emulator's own cost
    lan       1 Gbit/s, 0.5 ms
    wan       100 Mbit/s, 20 ms
    home      10 Mbit/s, 40 ms, 0.5% loss
    bad       2 Mbit/s, 100 ms, 2% loss
    congested 0.5 Mbit/s, 100 ms (two fp32 pushes share it near the receivers' minimum)
    thin      0.3 Mbit/s, 100 ms (two fp32 pushes in parallel: each below that minimum)

The model is tiny-bert at `--rank 288`: its q/v adapter has 2 x 2 x 2 x 32 x 288 =
73,728 values, the size of MiniLM-L6's at r = 8, while a step costs little CPU, so the
link, not the training, sets the pace. The recipe is `bench_round_latency.py`'s (K = 1,
one exchange a round, unaccelerated, eval off) with the daemon's default
`--round-deadline` (60 s) and a short consensus finish. Per profile and codec it prints
the round seconds over all nodes and training rounds but the first (median, p90, max),
the payload bytes each node sent per round and the rate that makes over a median round
(and its share of the uplink's rate), rounds that did not mix with every neighbour, neighbours
that left a live set (from the logs: missed deadline, refused port, overrun acks),
streams a receiver cut while they flowed (too slow for their pace, or idle),
the largest disagreement at the end, and the emulator's packet counts. Nothing is
asserted: the exit code is 1 only when a node exited non-zero or was still running at
the timeout.

Without root, `ip`, `/dev/net/tun` or namespaces (CI containers), every shaped profile
falls back to `loopback` and the header says so.

    sudo python bench/bench_network.py                          # all profiles, fp32 and q4
    sudo python bench/bench_network.py --profiles home,bad --codecs fp32,q4,topk:0.1
    sudo python bench/bench_network.py --profiles lan --codecs fp32 --rounds 12 \
        --consensus-rounds 0 --degrade congested --degrade-after 4   # 1 Gbit/s, then 0.5
    python bench/bench_network.py --smoke                       # tun (or loopback), 2 rounds
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import netemu
from benchlib import (
    HOST,
    Node,
    Swarm,
    free_ports,
    load_average,
    median,
    parse_args,
    quantile,
    round_problems,
    sigterm_as_exit,
    stop_processes,
    train_rounds,
)

from declora.cli.lab import LabConfig, node_command
from declora.node.acceleration import UNACCELERATED
from declora.node.topology import from_spec

NS_PREFIX = "dlw"  # namespaces dlw<pid>n<i>; TUN devices dlw<pid>t<i>
NS_NAME = re.compile(rf"^{NS_PREFIX}(\d+)n\d+$")
PORT = 7400  # every node's port inside its own namespace
SMOKE = {"profiles": "tun", "codecs": "fp32", "rounds": 2, "consensus_rounds": 0, "timeout": 60.0}
LEFT = re.compile(r"neighbour (\S+) left the live set: (.*)$")
# a push (or state) a receiver cut while it flowed: too slow for its pace, or idle
CUT = re.compile(r"refused a message: stream (too slow|idle for)")


@dataclass(frozen=True)
class Profile:
    name: str
    rate: float  # bit/s of each uplink, 0: no cap
    delay: float  # one-way seconds
    loss: float
    shaped: bool = True  # False: 127.0.0.1, no namespaces

    def describe(self) -> str:
        if not self.shaped:
            return "127.0.0.1"
        if not (self.rate or self.delay or self.loss):
            return "netns + emulator, unshaped"
        rate = f"{self.rate / 1e6:g} Mbit/s" if self.rate else "no cap"
        return f"{rate}, {self.delay * 1e3:g} ms, {self.loss:.1%} loss"


PROFILES = {
    p.name: p
    for p in (
        Profile("loopback", 0, 0, 0, shaped=False),
        Profile("tun", 0, 0, 0),
        Profile("lan", 1e9, 0.0005, 0),
        Profile("wan", 100e6, 0.020, 0),
        Profile("home", 10e6, 0.040, 0.005),
        Profile("bad", 2e6, 0.100, 0.02),
        Profile("congested", 0.5e6, 0.100, 0.0),  # for --degrade: a link that falls off
        Profile("thin", 0.3e6, 0.100, 0.0),  # two fp32 pushes in parallel: each too slow
    )
}


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


def namespaces_usable() -> str:
    """Empty when namespaces and TUN devices can be made here, else why not."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        return "no `ip` (iproute2)"
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        return "no /dev/net/tun"
    probe = f"{NS_PREFIX}{os.getpid()}n99"
    try:
        ip("netns", "add", probe)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"cannot add a network namespace ({exc})"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=20)
    return ""


def sweep_leftovers() -> None:
    """Delete namespaces of this bench whose process is gone (a run killed hard)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20)
    for line in out.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = NS_NAME.match(name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)


class Network:
    """`n` namespaces joined by a `netemu.py` process shaping every uplink to `profile`;
    `with Network(...)` always stops the emulator and deletes the namespaces."""

    def __init__(self, n: int, profile: Profile) -> None:
        tag = f"{NS_PREFIX}{os.getpid()}"
        self.names = [f"{tag}n{i}" for i in range(n)]
        self.tun = f"{tag}t"
        self.profile = profile
        self.emulator: subprocess.Popen[str] | None = None
        self.counts: dict[str, Any] = {}

    def __enter__(self) -> Network:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        p = self.profile
        cmd = [sys.executable, str(Path(netemu.__file__)), "--prefix", self.tun]
        cmd += ["--nodes", str(len(self.names)), "--rate", str(p.rate)]
        cmd += ["--delay", str(p.delay), "--loss", str(p.loss)]
        self.emulator = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.emulator.stdout is not None
        if self.emulator.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the link emulator did not start: {' '.join(cmd)}")
        for i, name in enumerate(self.names):
            dev = f"{self.tun}{i}"
            ip("netns", "add", name)
            ip("link", "set", dev, "netns", name)
            ip("-n", name, "addr", "add", f"{netemu.address(i)}/24", "dev", dev)
            ip("-n", name, "link", "set", dev, "up")
            ip("-n", name, "link", "set", "lo", "up")

    def reshape(self, profile: Profile) -> None:
        """Every uplink takes `profile`'s shape from now on."""
        assert self.emulator is not None and self.emulator.stdin is not None
        self.emulator.stdin.write(f"{profile.rate} {profile.delay} {profile.loss}\n")
        self.emulator.stdin.flush()

    def close(self) -> None:
        if self.emulator is not None:
            if self.emulator.poll() is None:
                try:  # EOF on its stdin: it prints its counts and exits
                    out, _ = self.emulator.communicate(timeout=10)
                    self.counts = json.loads(out.strip().splitlines()[-1])
                except (subprocess.TimeoutExpired, ValueError, IndexError):
                    stop_processes([self.emulator], grace=2)  # type: ignore[list-item]
            self.emulator = None
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)


class NetSwarm(Swarm):
    """A `Swarm` whose node i runs in `names[i]` at `netemu.address(i)` (none: 127.0.0.1)."""

    def __init__(self, cfg: LabConfig, out: Path, names: list[str] | None) -> None:
        super().__init__(cfg, out)
        self.names = names
        self.secret = uuid.uuid4().hex  # as a real swarm over a network would run

    def start(self) -> None:
        cfg = self.cfg
        topo = from_spec(cfg.topology, cfg.nodes, seed=cfg.seed)
        if self.names is None:
            addresses = [f"{HOST}:{p}" for p in free_ports(cfg.nodes)]
        else:
            addresses = [f"{netemu.address(i)}:{PORT}" for i in range(cfg.nodes)]
        self.out.mkdir(parents=True, exist_ok=True)
        for i in range(cfg.nodes):
            folder = self.out / f"lab-{i}"
            peers = [addresses[j] for j in topo.neighbors(i)]
            cmd = node_command(cfg, i, addresses[i], peers, folder, self.swarm_id)
            if self.names is not None:
                cmd = ["ip", "netns", "exec", self.names[i], *cmd]
            log_path = self.out / f"lab-{i}.log"
            log = log_path.open("wb")
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "DECLORA_SWARM_SECRET": self.secret},
            )
            self.nodes.append(Node(i, f"lab-{i}", addresses[i], folder, proc, log_path, log))


def lab_config(args: argparse.Namespace, codec: str, out: Path) -> LabConfig:
    return LabConfig(
        nodes=args.nodes,
        topology="ring",
        partition_scheme="iid",
        rounds=args.rounds,
        local_steps=1,
        model="tiny-bert",
        rank=args.rank,
        alpha=2 * args.rank,
        codec=codec,
        data=args.data,
        seed=0,
        max_eval=16,
        eval_every=0,
        round_deadline=args.round_deadline,
        consensus_rounds=args.consensus_rounds,
        output=out,
        gossip_steps=1,
        **UNACCELERATED,
        extra={"device": "cpu", "checkpoint_every": args.rounds + 1},
    )


def run_one(args: argparse.Namespace, profile: Profile, codec: str, out: Path) -> dict[str, Any]:
    """One swarm under `profile` with `codec`: its figures and problems."""
    cfg = lab_config(args, codec, out)
    topo = from_spec("ring", args.nodes, seed=0)
    problems: list[str] = []
    counts: dict[str, Any] = {}
    with Network(args.nodes, profile) if profile.shaped else _Nothing() as net:
        names = net.names if isinstance(net, Network) else None
        with NetSwarm(cfg, out, names) as swarm:
            swarm.start()
            t_end = time.monotonic() + args.timeout
            if args.degrade and isinstance(net, Network):
                degrade(swarm, net, args)
            finished = swarm.wait(max(t_end - time.monotonic(), 0))
            if not finished:
                problems.append(f"still running after {args.timeout:.0f}s; stopped")
            swarm.stop()
            codes = swarm.exit_codes()
            if any(c != 0 for c in codes.values()):
                problems.append(f"exit codes {codes}")
            histories = swarm.histories()
            left = [
                f"{node}: {m.group(1)}: {m.group(2)}"
                for node, line in swarm.log_lines()
                if (m := LEFT.search(line)) and "left after round" not in line
            ]
            warnings = swarm.log_problems(expected="left the live set: it left after round")
            cut = sum(1 for _, line in swarm.log_lines() if CUT.search(line))
        if isinstance(net, Network):
            net.close()
            counts = net.counts
    found, _ = round_problems(histories, topo, args.rounds, args.round_deadline)
    rows = train_rounds(histories, skip_first=1)
    seconds = [float(r["seconds"]) for r in rows]
    sent_per_round = _bytes_per_round(histories)
    finals = [
        float(r["disagreement"])
        for h in histories.values()
        for r in h[-1:]
        if r.get("disagreement") is not None
    ]
    return {
        "seconds": seconds,
        "sent_per_round": sent_per_round,
        "sent_round_1": _first_round_bytes(histories),
        "unmixed": sum(1 for p in found if "mixed without" in p),
        "problems": problems + [p for p in found if "mixed without" not in p] + warnings,
        "left": left,
        "cut": cut,
        "disagreement": max(finals, default=float("nan")),
        "emulator": counts,
        "failed": bool(problems) or not seconds,
    }


def degrade(swarm: NetSwarm, net: Network, args: argparse.Namespace) -> None:
    """Once every node has recorded round `--degrade-after`, reshape the links to the
    `--degrade` profile (or when the swarm ends first)."""
    while not all(n.process.poll() is not None for n in swarm.nodes):
        done = [max((int(r["round"]) for r in h), default=0) for h in swarm.histories().values()]
        if len(done) == len(swarm.nodes) and min(done) >= args.degrade_after:
            net.reshape(PROFILES[args.degrade])
            print(f"  (rounds {done}: links now {args.degrade})", flush=True)
            return
        time.sleep(0.2)


class _Nothing:
    def __enter__(self) -> _Nothing:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _bytes_per_round(histories: dict[str, list[dict[str, Any]]]) -> float:
    """Median over nodes of the bytes sent per train round, round 1 left out (as for
    the round seconds: its keyframes after a slow handshake are a one-off)."""
    per_node = []
    for hist in histories.values():
        train = [r for r in hist if r.get("phase") == "train"]
        if len(train) >= 2:
            first, last = train[0], train[-1]
            rounds = int(last["round"]) - int(first["round"])
            per_node.append((float(last["bytes_sent"]) - float(first["bytes_sent"])) / rounds)
    return median(per_node)


def _first_round_bytes(histories: dict[str, list[dict[str, Any]]]) -> float:
    """Median over nodes of the bytes sent in train round 1 (its keyframes included)."""
    firsts = [
        float(train[0]["bytes_sent"])
        for hist in histories.values()
        if (train := [r for r in hist if r.get("phase") == "train"]) and int(train[0]["round"]) == 1
    ]
    return median(firsts)


def row(profile: Profile, codec: str, res: dict[str, Any]) -> str:
    xs = res["seconds"]
    emu = res["emulator"]
    lost = f"{emu.get('lost', 0)}/{emu.get('queue_drops', 0)}" if emu else "-"
    send = res["sent_per_round"] * 8 / median(xs) / 1e6 if xs else float("nan")
    use = f"{send * 1e6 / profile.rate:.0%}" if profile.rate else "-"
    return (
        f"| {profile.name} | {codec} | {median(xs):.2f} | {quantile(xs, 0.9):.2f} | "
        f"{max(xs, default=float('nan')):.2f} | {res['sent_per_round'] / 1e3:.0f} | "
        f"{send:.2f} | {use} | {res['unmixed']} | {len(res['left'])} | {res['cut']} | "
        f"{res['disagreement']:.1e} | {lost} | {res['sent_round_1'] / 1e3:.0f} |"
    )


HEADER = (
    "| profile | codec | round s median | p90 | max | kB sent/node/round | Mbit/s sent/node "
    "| uplink use | rounds not fully mixed | neighbours left | streams cut | final "
    "disagreement | pkts lost/tail-dropped | kB sent/node in round 1 |"
    "\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", default="loopback,tun,lan,wan,home,bad")
    ap.add_argument("--codecs", default="fp32,q4")
    ap.add_argument("--nodes", type=int, default=4, help="ring size (at most 250)")
    ap.add_argument("--rank", type=int, default=288, help="LoRA rank of tiny-bert")
    ap.add_argument("--data", default="bbcnews")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--consensus-rounds", type=int, default=3)
    ap.add_argument("--round-deadline", type=float, default=60.0)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per swarm")
    ap.add_argument("--degrade", default="", help="a profile every shaped link turns to mid-run")
    ap.add_argument("--degrade-after", type=int, default=3, help="...after this round")
    ap.add_argument("--output", type=Path, default=None, help="keep node folders here")
    args = parse_args(ap, SMOKE, argv)
    unknown = [p for p in [*args.profiles.split(","), args.degrade] if p and p not in PROFILES]
    if unknown:
        ap.error(f"unknown profiles {unknown}: choose from {', '.join(PROFILES)}")
    if args.rounds < 2 or not 2 <= args.nodes <= 250:
        ap.error("--rounds must be >= 2 (round 1 is skipped) and --nodes 2..250")
    profiles = [PROFILES[p] for p in args.profiles.split(",")]
    why_not = namespaces_usable() if any(p.shaped for p in profiles) else ""
    if why_not:
        print(f"no network namespaces here ({why_not}): every profile runs as loopback, unshaped")
        profiles = [PROFILES["loopback"]]
    else:
        sweep_leftovers()
    codecs = [c for c in args.codecs.split(",") if c]
    work = args.output or Path(tempfile.mkdtemp(prefix="declora-bench-network-"))
    print(
        f"network: {args.nodes}-node ring, tiny-bert r={args.rank} (MiniLM-L6 r=8's adapter "
        f"size at 288), K=1, {args.rounds} rounds (round 1 skipped) + up to "
        f"{args.consensus_rounds} consensus, --round-deadline {args.round_deadline:g}; "
        f"load average {load_average()}"
    )
    for p in profiles:
        print(f"  {p.name}: {p.describe()}")
    print(HEADER, flush=True)
    failed = False
    details: list[str] = []
    try:
        with sigterm_as_exit():
            for profile in profiles:
                for codec in codecs:
                    out = work / f"{profile.name}-{codec.replace(':', '')}-{uuid.uuid4().hex[:4]}"
                    t0 = time.perf_counter()
                    res = run_one(args, profile, codec, out)
                    failed = failed or res["failed"]
                    print(row(profile, codec, res), flush=True)
                    what = f"{profile.name}/{codec} ({time.perf_counter() - t0:.0f}s)"
                    details += [f"{what}: left: {x}" for x in res["left"]]
                    details += [f"{what}: {x}" for x in res["problems"]]
                    if res["emulator"]:
                        details.append(f"{what}: emulator {json.dumps(res['emulator'])}")
    finally:
        if args.output is None:
            shutil.rmtree(work, ignore_errors=True)
    for line in details:
        print(line)
    print(f"load average at end: {load_average()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
