"""A user-space link emulator for `bench_network.py`: N network namespaces joined by TUN
devices through this one process, which shapes every node's uplink.

Why not `tc netem`: many kernels (this machine's included) ship without `sch_netem`;
TUN devices and network namespaces need only root. Each namespace `i` holds one TUN
device `<prefix><i>` with address `10.77.0.<i+1>/24`; every IPv4 packet a node sends
leaves through it, and this process delivers it into the destination's TUN device after
its sender's uplink has shaped it, like netem on the sender's egress:

- loss: each packet (SYN and ACK included) is dropped with probability `loss`;
- rate: packets leave the uplink one after the other at `rate` bit/s (serialization);
  a packet that would wait more than `QUEUE_SECONDS` behind the ones queued is dropped
  (a tail drop, as at a full router queue);
- delay: each packet arrives `delay` seconds after it left the uplink (one way: a round
  trip between two nodes takes 2 x delay).

The MTU is 1500 and TUN hands over no GSO super-packets, so losses hit real-sized
packets and the kernels' TCP stacks react to them as on a wire. The emulator runs in
Python: it forwards some tens of thousands of packets a second, so rates above a few
hundred Mbit/s are capped by it (the bench's `tun` profile measures that overhead).

    python bench/netemu.py --prefix dlwt1234 --nodes 4 --rate 10e6 --delay 0.04 --loss 0.005

creates the devices, prints `ready` and forwards until SIGTERM/SIGINT or EOF on stdin,
then prints one JSON line of counts and exits; the devices vanish with it. A line
`RATE DELAY LOSS` on stdin reshapes every uplink from then on (a link that degrades).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import fcntl
import json
import os
import random
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
SUBNET = "10.77.0"  # inside the namespaces only: no clash with any host network
QUEUE_SECONDS = 0.5  # the most a packet waits in an uplink's queue before a tail drop
BATCH = 256  # packets read from one device per wake-up


def address(i: int) -> str:
    """Node `i`'s address inside its namespace."""
    return f"{SUBNET}.{i + 1}"


def open_tun(name: str) -> int:
    """A non-blocking fd of a new TUN device `name` (gone when the fd closes)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


class Uplink:
    """One node's shaped uplink: a FIFO of packets with their delivery times."""

    def __init__(self, rate: float, delay: float, loss: float, rng: random.Random) -> None:
        self.rate, self.delay, self.loss, self.rng = rate, delay, loss, rng
        self.free_at = 0.0  # when the last queued packet has left
        self.queue: collections.deque[tuple[float, int, bytes]] = collections.deque()
        self.counts = {"packets": 0, "bytes": 0, "lost": 0, "queue_drops": 0}
        self.max_backlog = 0.0

    def offer(self, now: float, dst: int, pkt: bytes) -> bool:
        """Queue `pkt` for `dst`; False when it is lost or tail-dropped."""
        if self.loss and self.rng.random() < self.loss:
            self.counts["lost"] += 1
            return False
        start = max(now, self.free_at)
        if self.rate:
            if start - now > QUEUE_SECONDS:
                self.counts["queue_drops"] += 1
                return False
            self.max_backlog = max(self.max_backlog, start - now)
            start += 8 * len(pkt) / self.rate
        self.free_at = start
        self.queue.append((start + self.delay, dst, pkt))
        self.counts["packets"] += 1
        self.counts["bytes"] += len(pkt)
        return True


class Emulator:
    """Reads every TUN device, shapes by the sender's `Uplink`, writes to the receiver's."""

    def __init__(self, fds: list[int], rate: float, delay: float, loss: float, seed: int) -> None:
        rng = random.Random(seed)
        self.fds = fds
        self.links = [Uplink(rate, delay, loss, rng) for _ in fds]
        self.timers: list[asyncio.TimerHandle | None] = [None] * len(fds)
        self.misrouted = 0
        self.write_errors = 0
        self.loop = asyncio.get_running_loop()

    def start(self) -> None:
        for i, fd in enumerate(self.fds):
            self.loop.add_reader(fd, self.read, i)

    def read(self, i: int) -> None:
        link = self.links[i]
        for _ in range(BATCH):
            try:
                pkt = os.read(self.fds[i], 65536)
            except BlockingIOError:
                break
            except OSError:
                self.write_errors += 1
                break
            if len(pkt) < 20 or pkt[0] >> 4 != 4:
                continue  # IPv6 router solicitations and the like: not forwarded
            dst = pkt[19] - 1
            if not 0 <= dst < len(self.fds) or dst == i or pkt[16:19] != bytes([10, 77, 0]):
                self.misrouted += 1
                continue
            if link.offer(time.monotonic(), dst, pkt) and self.timers[i] is None:
                self.schedule(i)

    def schedule(self, i: int) -> None:
        when = self.links[i].queue[0][0]
        self.timers[i] = self.loop.call_at(when, self.deliver, i)

    def deliver(self, i: int) -> None:
        queue, now = self.links[i].queue, time.monotonic()
        while queue and queue[0][0] <= now:
            _, dst, pkt = queue.popleft()
            try:
                os.write(self.fds[dst], pkt)
            except OSError:
                self.write_errors += 1
        self.timers[i] = None
        if queue:
            self.schedule(i)

    def summary(self) -> dict[str, object]:
        total = collections.Counter[str]()
        for link in self.links:
            total.update(link.counts)
        return {
            **total,
            "max_backlog_s": round(max(link.max_backlog for link in self.links), 4),
            "misrouted": self.misrouted,
            "io_errors": self.write_errors,
        }


async def serve(args: argparse.Namespace) -> None:
    fds = [open_tun(f"{args.prefix}{i}") for i in range(args.nodes)]
    emu = Emulator(fds, args.rate, args.delay, args.loss, args.seed)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        emu.loop.add_signal_handler(sig, stop.set)

    def command() -> None:
        line = sys.stdin.readline()
        if not line:  # EOF: the bench is done or went away
            stop.set()
            return
        rate, delay, loss = (float(x) for x in line.split())
        for link in emu.links:
            link.rate, link.delay, link.loss = rate, delay, loss

    emu.loop.add_reader(sys.stdin.fileno(), command)
    emu.start()
    print("ready", flush=True)
    await stop.wait()
    print(json.dumps(emu.summary()), flush=True)
    for fd in fds:
        os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefix", required=True, help="TUN device names: PREFIX0, PREFIX1, ...")
    ap.add_argument("--nodes", type=int, required=True)
    ap.add_argument("--rate", type=float, default=0.0, help="bit/s of each uplink (0: no cap)")
    ap.add_argument("--delay", type=float, default=0.0, help="one-way seconds")
    ap.add_argument("--loss", type=float, default=0.0, help="probability a packet is lost")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not 1 <= args.nodes <= 250 or len(args.prefix) > 12:
        ap.error("--nodes must be 1..250 and --prefix at most 12 characters")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
