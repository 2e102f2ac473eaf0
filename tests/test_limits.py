"""Rate limits (node/limits.py): the buckets in isolation, then a flood of handshakes,
pushes and pulls from a raw gRPC client against a live, training pair of daemons (the
flooded one mixing with `--robust-mixing clip`, the other with plain gossip)."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from daemon_helpers import HOST, Cluster, Member, Node, free_ports, live_ids, serve_fake_peer

from declora.node import PROTOCOL_VERSION
from declora.node.limits import (
    RATE_LIMITED,
    SUBNET_SHARE,
    AddressBuckets,
    KeyedBuckets,
    NodeLimits,
    RoundCounter,
    TokenBucket,
    address_key,
    peer_host,
    subnet_key,
)
from declora.node.trainer import LoraModel
from declora.node.wire import WireError, chunks, make_header
from declora.proto import pb, pb_grpc


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- units


def test_token_bucket_spends_refills_and_caps() -> None:
    b = TokenBucket(capacity=3, rate=0.5, tokens=3, stamp=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.tokens == 0.0  # a refusal spends nothing
    assert not b.take(1.0)  # half a token
    assert b.take(2.0) and not b.take(2.0)
    assert not b.full(7.0) and b.full(8.0)
    assert b.tokens == 3  # capped at capacity however long it waited
    assert b.take(1.0) and b.tokens == 2  # a clock going back neither adds nor removes


def test_keyed_buckets_are_independent_and_bounded() -> None:
    clock = FakeClock()
    kb = KeyedBuckets(per_minute=2, clock=clock, max_keys=2)
    assert [kb.allow("a"), kb.allow("a"), kb.allow("a")] == [True, True, False]
    assert kb.allow("b")
    assert not kb.allow("c")  # two active keys already: a newcomer is refused
    clock.now += 60  # both refilled: forgotten, room again
    assert kb.allow("c") and set(kb.buckets) == {"c"}
    clock.now += 30  # one token back per 30 s at 2 a minute
    assert kb.allow("c") and kb.allow("c") and not kb.allow("c")


def test_round_counter_per_sender_and_round() -> None:
    rc = RoundCounter(limit=3, window=9)
    assert all(rc.allow("b", 1, current=0) for _ in range(3))
    assert not rc.allow("b", 1, current=0)
    assert rc.allow("c", 1, current=0)  # another sender has its own allowance
    assert rc.allow("b", 2, current=0)  # and another round
    # finished rounds are never counted (refused stale before any data is read)...
    assert all(rc.allow("b", r, current=0) for r in (-5, -1, 0) for _ in range(10))
    # ...far-future ones share the last slot of the window
    assert all(rc.allow("b", r, current=0) for r in (9, 100, 10**9))
    assert not rc.allow("b", 50, current=0)
    assert all(k[1] >= 1 for k in rc.counts)
    # round 1 done: its counts are forgotten, late pushes for it count nothing
    assert all(rc.allow("b", 1, current=1) for _ in range(10))
    assert min(k[1] for k in rc.counts) == 2
    assert all(rc.allow("b", 10, current=1) for _ in range(3))  # the new last slot
    assert not rc.allow("b", 99, current=1)


def test_an_honest_sender_is_never_limited() -> None:
    """Delta, keyframe and one resend a round, sent while this node is one round behind
    or two, then late ones after it moved on."""
    limits = NodeLimits(
        handshakes_per_minute=1, pushes_per_round=3, pulls_per_minute=1, rounds_ahead=8
    )
    for current in range(200):
        for r in (current + 1, current + 1, current + 2, current, current - 1, current - 2):
            limits.check_push("b", r, current)


def test_a_diverged_honest_neighbour_is_never_limited() -> None:
    """Audit: once two honest nodes diverged, the one behind kept pushing rounds the
    other had finished (its delta, a keyframe, a resend for each, stale every time);
    they all shared the slot of the current round, so after two rounds of retries it
    hit "more than 6 pushes for round N". Stale rounds now count nothing."""
    limits = NodeLimits(
        handshakes_per_minute=1, pushes_per_round=6, pulls_per_minute=1, rounds_ahead=8
    )
    for r in range(1, 40):  # b is at round 50, a at 1..39, three tries a round
        for _ in range(3):
            limits.check_push("a", r, 50)
    assert limits.pushes.counts == {}  # and nothing kept for them
    for _ in range(6):  # a round b will read still has its whole allowance
        limits.check_push("a", 51, 50)
    with pytest.raises(WireError, match="more than 6 pushes for round 51"):
        limits.check_push("a", 51, 50)


def test_host_key_is_the_network() -> None:
    from declora.node.limits import host_key

    assert host_key("10.0.0.5") == host_key("10.0.0.200") == "10.0.0.0/24"
    assert host_key("10.0.1.5") == "10.0.1.0/24"
    # loopback: only this machine; a lab stands for other hosts by other addresses
    assert host_key("127.0.0.1") == "127.0.0.1" != host_key("127.0.0.2") == "127.0.0.2"
    assert host_key("::1") == "::1"
    assert host_key("2001:db8::1") == host_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert host_key("2001:db8:0:1::1") == "2001:db8:0:1::/64"
    assert host_key("::ffff:10.0.0.7") == "10.0.0.0/24"
    assert host_key("fe80::1%eth0") == "fe80::/64%eth0" != host_key("fe80::1%eth1")
    assert host_key("unix:/tmp/sock") == "unix:/tmp/sock"


def test_node_limits_raise_resource_exhausted() -> None:
    clock = FakeClock()
    limits = NodeLimits(
        handshakes_per_minute=2, pushes_per_round=3, pulls_per_minute=1, rounds_ahead=8, clock=clock
    )
    limits.check_handshake("ipv4:10.0.0.5:4000")
    limits.check_handshake("ipv4:10.0.0.5:4001")  # a new connection: same host, same bucket
    limits.check_handshake("ipv4:10.0.0.6:4000")  # another address: its own bucket (a LAN)
    with pytest.raises(WireError) as info:
        limits.check_handshake("ipv4:10.0.0.5:4002")
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.counter == RATE_LIMITED
    assert info.value.reason == "more than 2 handshakes a minute from 10.0.0.5"
    limits.check_pull("n1")
    with pytest.raises(WireError, match="more than 1 pulls a minute from 'n1'"):
        limits.check_pull("n1")
    for _ in range(3):
        limits.check_push("n1", 5, 4)
    with pytest.raises(WireError, match="more than 3 pushes for round 5 from 'n1'"):
        limits.check_push("n1", 5, 4)


def test_address_key_is_the_address_and_subnet_key_an_ipv6_64() -> None:
    """Each address is its own key (a link-local one with its zone: another link is
    another host); only an IPv6 address that stands for no IPv4 host and no single
    link also counts towards its /64."""
    assert address_key("10.0.0.5") == "10.0.0.5" != address_key("10.0.0.6")  # a LAN
    assert address_key("::ffff:10.0.0.5") == "10.0.0.5"  # IPv4-mapped: as IPv4
    assert address_key("::1") == "::1" and address_key("127.0.0.2") == "127.0.0.2"
    assert address_key("2001:db8::1") == "2001:db8::1" != address_key("2001:db8::2")
    assert address_key("fe80::1%eth0") == "fe80::1%eth0" != address_key("fe80::1%wlan0")
    assert address_key("::10.0.0.5") == "::a00:5" != address_key("::10.0.0.6")
    assert address_key("unix:/tmp/sock") == "unix:/tmp/sock"
    assert subnet_key("2001:db8::1") == subnet_key("2001:db8::abcd:1") == "2001:db8::/64"
    assert subnet_key("2001:db8:0:1::1%eth0") == "2001:db8:0:1::/64"
    assert subnet_key("fd00::5") == "fd00::/64"  # a ULA LAN is a /64 too
    for alone in ("10.0.0.5", "::ffff:10.0.0.5", "::10.0.0.5", "64:ff9b::a00:5", "::1"):
        assert subnet_key(alone) is None, alone
    assert subnet_key("fe80::1%eth0") is None and subnet_key("unix:/tmp/sock") is None


def limits_of(
    kind: str, per_minute: int, clock: FakeClock
) -> tuple[NodeLimits, Callable[..., None]]:
    """NodeLimits whose `kind` (handshake, pull or status) allows `per_minute`, and a
    call of it from a host (and port)."""
    limits = NodeLimits(
        handshakes_per_minute=per_minute,
        pushes_per_round=3,
        pulls_per_minute=per_minute,
        rounds_ahead=8,
        clock=clock,
    )
    limits.statuses = AddressBuckets(per_minute, clock)  # the Status cap, shortened

    def check(host: str, port: int = 4000) -> None:
        peer = f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
        if kind == "handshake":
            limits.check_handshake(peer)
        elif kind == "pull":
            limits.check_pull(peer_host(peer))
        else:
            limits.check_status(peer)

    return limits, check


@pytest.mark.parametrize("kind", ["handshake", "pull", "status"])
def test_the_ipv6_nodes_of_one_64_each_have_their_own_allowance(kind: str) -> None:
    """Before (5abb1db), one IPv6 /64 shared a single address's bucket: 12 pulls a
    minute for every node of an IPv6 LAN or cloud subnet together, and link-local
    addresses of every link in one bucket ('fe80::/64'). Now each address has its own
    bucket; the /64 caps their sum at SUBNET_SHARE addresses' worth."""
    clock = FakeClock()
    _limits, check = limits_of(kind, 2, clock)
    lan = [f"2001:db8::{i:x}" for i in range(1, SUBNET_SHARE + 1)]  # 16 honest nodes
    for host in lan:
        check(host)
        check(host, 4001)  # each one's whole allowance, however many share the /64
    check("2001:db8:0:1::1")
    check("2001:db8:0:1::1", 4001)
    with pytest.raises(WireError, match=r"more than 2 .*a minute from '?2001:db8:0:1::1'?$"):
        check("2001:db8:0:1::1", 4002)  # but each address still has only its own
    for host in ("fe80::1%eth0", "fe80::1%wlan0", "::10.0.0.5", "::10.0.0.6"):
        check(host)
        check(host, 4001)  # each link, each IPv4-compatible address: its own bucket
    with pytest.raises(WireError, match=r"a minute from '?fe80::1%eth0"):
        check("fe80::1%eth0", 4002)


@pytest.mark.parametrize("kind", ["handshake", "pull", "status"])
def test_addresses_rotated_within_one_64_gain_at_most_subnet_share(kind: str) -> None:
    """An attacker rotating addresses within its /64 (2^64 of them) gets SUBNET_SHARE
    addresses' allowance a minute, then the /64 is refused as one, spending nothing;
    another /64, IPv4 addresses and loopback keep theirs; a minute on it is served."""
    clock = FakeClock()
    limits, check = limits_of(kind, 2, clock)
    cap = SUBNET_SHARE * 2
    for i in range(cap):
        check(f"2001:db8::{i + 1:x}")  # one call each from `cap` addresses
    with pytest.raises(
        WireError, match=rf"more than {cap} .*the addresses of '?2001:db8::/64"
    ) as info:
        check("2001:db8::ffff")
    assert info.value.counter == RATE_LIMITED
    buckets = {"handshake": limits.handshakes, "pull": limits.pulls, "status": limits.statuses}[
        kind
    ]
    assert "2001:db8::ffff" not in buckets.addresses.buckets  # refused: nothing spent, kept
    check("2001:db8:0:1::1")  # the next /64: its own allowance
    check("10.0.0.5")
    check("::ffff:10.0.0.5")  # IPv4-mapped: the same address
    with pytest.raises(WireError, match=r"a minute from '?10\.0\.0\.5'?$"):
        check("10.0.0.5", 4001)
    check("::1")
    clock.now += 60.0  # refilled: the /64 is served again
    check("2001:db8::ffff")


def test_an_address_refused_spends_nothing_from_its_64() -> None:
    """A call refused by its address's own bucket takes no token from the /64, so one
    busy address cannot use up its neighbours' share by being refused."""
    clock = FakeClock()
    buckets = AddressBuckets(1, clock)
    assert buckets.refusal("2001:db8::1") is None
    for _ in range(50):
        refused = buckets.refusal("2001:db8::1")
        assert refused is not None and not refused.subnet
    shared = buckets.subnets.buckets["2001:db8::/64"]
    assert shared.tokens == SUBNET_SHARE - 1
    assert all(buckets.refusal(f"2001:db8::{i:x}") is None for i in range(2, SUBNET_SHARE + 1))


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:127.0.0.1:54321", "127.0.0.1"),
        ("ipv6:[::1]:7070", "::1"),
        ("ipv6:%5B::1%5D:7070", "::1"),
        ("unix:/tmp/sock", "unix:/tmp/sock"),
    ],
)
def test_peer_host(peer: str, host: str) -> None:
    assert peer_host(peer) == host


# --------------------------------------------------------------------------- a live pair

START = 150.0  # seconds for two daemons to load and pair (tests/test_daemon.py's bound)
HANDSHAKES, PUSHES, PULLS = 10, 3, 2  # the limits of the flooded node
FLOOD = 30


def codes(calls: Callable[[], object], n: int) -> list[grpc.StatusCode]:
    """The status code of each of `n` calls (OK when it returned)."""
    out = []
    for _ in range(n):
        try:
            calls()
            out.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            out.append(exc.code())  # type: ignore[attr-defined]
    return out


@pytest.fixture
def pair(tmp_path: Path, synthetic_jsonl: Path) -> Iterator[tuple[Cluster, Node, Node]]:
    cluster = Cluster(tmp_path, synthetic_jsonl)
    try:
        limits = f"--max-handshakes-per-minute {HANDSHAKES} --max-pushes-per-round {PUSHES} "
        limits += f"--max-pulls-per-minute {PULLS} --robust-mixing clip"
        run = ["--rounds", "0", "--eval-every", "0", "--round-deadline", "60"]
        a, b = cluster.static(2, [(0, 1)], run)
        a.start(limits.split())
        b.start()
        yield cluster, a, b
    finally:
        cluster.close()


class AcceptAll(pb_grpc.SwarmServicer):
    """A fake member's server: takes every push (and sends nothing itself)."""

    def Push(self, request_iterator: Iterator[pb.Chunk], context: object) -> pb.PushAck:
        for _ in request_iterator:
            pass
        return pb.PushAck(accepted=True)


def flood(
    a: Member,
    b: Member,
    swarm_id: str,
    wait: Callable[[str, Callable[[], pb.StatusReply | None]], pb.StatusReply],
    tiny_lm: LoraModel,
) -> None:
    """The flood of a (limited as `pair` starts it) from a raw gRPC member while a
    mixes with b, and its checks: refused, counted, logged at DEBUG, and a keeps
    mixing with b. `wait(what, check)` polls `check` until it returns a reply."""

    def mixing_with_b() -> pb.StatusReply | None:
        reply = a.status()
        ok = reply is not None and b.node_id in live_ids(reply) and reply.round >= 2
        return reply if ok else None

    before = wait("a and b mixing", mixing_with_b)
    assert before.fingerprint == tiny_lm.fingerprint  # the raw client's header matches
    assert "robust mixing clip:1.0)" in a.log() and "robust mixing none)" in b.log()
    # The flooder is a member (it shook hands, so it holds a session with a) that serves
    # an accept-everything gRPC server, so a's pushes to it succeed meanwhile.
    [port] = free_ports(1)
    server = serve_fake_peer(AcceptAll(), f"{HOST}:{port}")
    with grpc.insecure_channel(a.address) as channel:
        stub = pb_grpc.SwarmStub(channel)
        joined = stub.Handshake(
            pb.Hello(
                protocol_version=PROTOCOL_VERSION,
                node_id="flooder",
                swarm_id=swarm_id,
                fingerprint=tiny_lm.fingerprint,
                listen_address=f"{HOST}:{port}",
                seq=5,
            ),
            timeout=10,
        )
        assert joined.accepted, joined.reason
        session = joined.node.session

        # pushes for a round far ahead: refused OUT_OF_RANGE from their header (nothing
        # read, nothing changes, nothing counted); pushes for a round a reads: after
        # PUSHES of them in one round, RESOURCE_EXHAUSTED
        def push(ahead: int = 100) -> object:
            r = (a.status() or before).round
            data = b"\0" * 64
            header = make_header(
                sender_id="flooder",
                swarm_id=swarm_id,
                fingerprint=tiny_lm.fingerprint,
                round=r + ahead,
                sender_degree=1,
                kind=pb.PAYLOAD_KIND_DELTA,
                codec="fp32",
                seq=1,
                data=data,
                schema=tiny_lm.schema,
                session=session,
                receiver_id=a.node_id,
            )
            return stub.Push(chunks(header, data, 1024), timeout=10)

        far = codes(push, FLOOD)
        assert set(far) == {grpc.StatusCode.OUT_OF_RANGE}, far
        round0 = (a.status() or before).round
        read = codes(lambda: push(4), FLOOD)  # answered `need_keyframe` (OK) until the limit
        rounds_spanned = (a.status() or before).round - round0 + 1
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in read, read
        assert set(read) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, read
        assert read.count(grpc.StatusCode.OK) <= PUSHES * rounds_spanned
        assert read[:PUSHES] == [grpc.StatusCode.OK] * PUSHES, read
        pushes = far + read

        request = pb.PullRequest(
            node_id="flooder",
            swarm_id=swarm_id,
            kind=pb.PAYLOAD_KIND_STATE,
            session=session,
            receiver_id=a.node_id,
        )
        pulls = codes(lambda: list(stub.Pull(request, timeout=10)), 6)
        # pulls are limited per remote host: PULLS, or one less if b pulled at start
        served = pulls.count(grpc.StatusCode.OK)
        assert served in (PULLS - 1, PULLS), pulls
        assert pulls == [grpc.StatusCode.OK] * served + [grpc.StatusCode.RESOURCE_EXHAUSTED] * (
            6 - served
        )

        # handshakes from another swarm: refused with a reason until the limit, then
        # RESOURCE_EXHAUSTED (b's own handshake at start-up came from the same host)
        hello = pb.Hello(
            protocol_version=PROTOCOL_VERSION, node_id="flooder", swarm_id="other", seq=0
        )
        shakes = codes(lambda: stub.Handshake(hello, timeout=10), FLOOD)
        accepted = shakes.count(grpc.StatusCode.OK)
        assert HANDSHAKES - 4 <= accepted <= HANDSHAKES - 1, shakes  # - the flooder's
        assert shakes[:accepted] == [grpc.StatusCode.OK] * accepted
        assert set(shakes[accepted:]) == {grpc.StatusCode.RESOURCE_EXHAUSTED}

    server.stop(grace=None)
    limited = sum(c == grpc.StatusCode.RESOURCE_EXHAUSTED for c in [*pushes, *pulls, *shakes])
    after = a.status()
    assert after is not None, "a stopped answering Status after the flood"
    assert after.rejected[RATE_LIMITED] == limited
    assert after.rejected["future_round"] == pushes.count(grpc.StatusCode.OUT_OF_RANGE)
    # and it keeps mixing with b: two more rounds with b live
    wait(
        "a to mix two more rounds with b",
        lambda: r if (r := mixing_with_b()) is not None and r.round >= after.round + 2 else None,
    )
    assert "refused a message: more than" not in a.log()  # refusals of a flood log at DEBUG
    assert not re.search(rf"neighbour {b.node_id} left the live set", a.log()), a.log()[-3000:]


@pytest.mark.integration
@pytest.mark.timeout(360)
@pytest.mark.slow  # ~16 s of processes; test_testspeed3_limits.py: the same flood in-process
def test_flood_is_refused_counted_and_the_node_keeps_mixing(
    pair: tuple[Cluster, Node, Node], tiny_lm: LoraModel
) -> None:
    """`flood` against two `declora-node start` processes; make test floods two
    in-process daemons over real gRPC the same way (test_testspeed3_limits.py)."""
    cluster, a, b = pair

    def wait(what: str, check: Callable[[], pb.StatusReply | None]) -> pb.StatusReply:
        return cluster.wait_until(what, check, START, running=[a, b])

    flood(a, b, cluster.swarm_id, wait, tiny_lm)
    for node in (a, b):
        node.signal(signal.SIGTERM)
    assert cluster.wait_exit([a, b], 60) == [0, 0], cluster.report()
