"""Who may join this node: the rules a Hello or Welcome must meet, and the identity
it claims.

- `check_hello` is the rule (pure): same protocol version, swarm, fingerprint and
  gradient-tracking setting, a non-empty id that is not this node's; anything else is
  refused with a reason the operator can act on (a recipe mismatch names the options
  that differ on both sides, `recipe_differences`);
- every number and id in a Hello is bounded (`identity`) before it is used;
- without a swarm secret, a signed Hello or Welcome is refused ("'a' uses
  --swarm-secret, this node has none": `Admission.secret_mismatch`), so a swarm whose
  nodes disagree about the secret refuses on both sides and neither counts the other
  towards `--min-peers`; with one, a Hello for another receiver is refused
  (`Admission.names_me`), so a signed Hello seen on the wire cannot be replayed to
  another node;
- with mTLS, a node id must be its certificate's common name, and the CLI's
  certificate (`cli`) may only read Status: checked on a Hello (the caller's
  certificate) and, when dialling, on the Welcome (the certificate the server presents,
  read by a TLS connection of its own: `TlsFiles.server_name`);
- a Hello's `listen_address` is `host:port` only (an IPv4 or [IPv6] literal or a DNS
  name, port 1-65535): never another gRPC target (`unix:`, `dns:///`, a list), so a
  peer cannot make this node dial a local socket or look up a name of its choosing;
  nor one no peer can dial (`address.dial_problem`: unspecified, multicast,
  broadcast), which this node would re-dial in vain (0.0.0.0: its own host);
  link-local addresses pass (a LAN without DHCP); a node advertising one states none
  (`Handshaker.hello`);
- a Hello from a peer that is not configured here (`Admission.configured`: not in
  --peers, not offered by discovery, not a known configured entry; or such an
  address another live id holds; or a call from another host than that address's:
  `Admission.vouched`) is refused while its remote host (`slot_key`: an IPv4
  address, or an IPv6 /64) holds `SLOTS_PER_HOST` live slots of such peers already,
  so one member (one secret, any number of ids) cannot fill this node's neighbour
  slots or outvote robust mixing from one host; loopback hosts are exempt (every
  node of a one-machine lab, and of the tests, calls from 127.0.0.1), and so is a
  Hello whose host is unknown. A dial of such a peer (`Handshaker.dial`) is held to
  the same share, by the dialled address's IP or the host its Hellos came from;
- a Hello for an id that is live at another address is refused, and so is one from
  another remote host (the IP of `context.peer()`) than the one the id's accepted
  Hellos came from (or, for a peer this node dialled, its address's IP; one dialled
  by DNS name and never heard from has no known host: only a renewal is accepted)
  unless it repeats the session this node holds for that id (a renewal; only the
  peer knows it).

What open mode (no swarm secret, no mTLS) can and cannot protect. Nothing in a Hello
proves who sent it, so the remote host is the only evidence: while a neighbour is
live, a third party on another host can neither take over its entry nor receive its
token (its Hello is refused: "live from another host"; the Welcome of a server of its
that this node dials: "live at another address"), nor push, pull or leave in its
name (no token). A third party on the neighbour's own host (every node of a local lab
shares 127.0.0.1), or one that can spoof source addresses or read the traffic (tokens
travel in clear), can handshake in its name and push with the fresh token it gets
(it never learns the neighbour's own token, which stays valid beside it, though its
Hello's session replaces the one this node pushes with: the neighbour renews); and
anyone may claim the id of a neighbour that is not live. Only a swarm secret or mTLS
binds an id to a key. The host check needs the caller's `context.peer()`
(`Handshaker.answer(..., peer=)`); where the servicer passes none, only the address
check holds.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Collection

from declora.node import PROTOCOL_VERSION, __version__
from declora.node.address import address_problem, dial_problem, ip_of, split_address
from declora.node.daemon.auth import Auth
from declora.node.daemon.peers import PeerTable
from declora.node.daemon.transport import Transport
from declora.node.identity import MAX_DEGREE, MAX_ROUND, MAX_SEQ, node_id_problem, shown
from declora.node.limits import address_key, host_key
from declora.node.methods import DEFAULT_METHOD
from declora.node.revocation import RevokedError
from declora.node.security import TlsError
from declora.node.settings import NodeSettings
from declora.proto import pb

# Live neighbour slots one remote host (`slot_key`) may hold for peers this node was
# not configured with: two nodes on one machine or behind one NAT join unlisted, more
# need --peers (or discovery). A member holding the swarm secret can mint any number
# of ids, so ids are no measure of how many parties stand behind them; hosts are,
# up to what the member controls: with N hosts it gets 2N slots, not max_neighbors.
SLOTS_PER_HOST = 2
CLI_CERT = "cli"  # the common name `declora-node certs` gives the CLI's certificate
SAME_SECRET = "give every node the same secret"
MAX_RESOLVED = 1024  # DNS names whose resolved IPs are kept (`Admission.note_resolved`)

log = logging.getLogger(__name__)


def address_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP of host:port `address`; None for a DNS name or a malformed address."""
    try:
        return ip_of(split_address(address)[0])
    except ValueError:
        return None


_LOCALHOST = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}


def same_host(a: str, b: str) -> bool:
    """Whether two remote hosts are one: equal IPs (IPv4-mapped IPv6 as IPv4), or
    127.0.0.1 and ::1 (localhost either way; other loopback addresses, 127.0.0.2 and
    on, count as hosts of their own, as in the per-host limits); other text as is."""
    ia, ib = ip_of(a), ip_of(b)
    if ia is None or ib is None:
        return a == b
    return ia == ib or {ia, ib} <= _LOCALHOST


def slot_key(host: str) -> str | None:
    """The key `SLOTS_PER_HOST` counts remote `host` (`limits.peer_host`) under: an
    IPv4 address itself (`limits.address_key`: the machines of one LAN stay apart),
    an IPv6 address's /64 (`limits.host_key`: one machine may fill it with
    addresses); None for a loopback address (exempt: a one-machine lab runs every
    node on it) and for an empty host; a host that is not an IP as is."""
    ip = ip_of(host)
    if not host or (ip is not None and ip.is_loopback):
        return None
    return host_key(host) if isinstance(ip, ipaddress.IPv6Address) else address_key(host)


RECIPE_KEYS = (
    *("model", "task", "rank", "alpha", "targets", "max_length", "seed", "labels"),
    *("method", "deca_blocks", "deca_block_rounds"),  # DECA's only when it runs
    *("lora_dropout", "rslora", "dora", "quantize", "lr_schedule", "warmup_steps"),
    *("rounds", "local_steps"),  # the span of a schedule: compared when both state it
    *("gossip_steps", "weighting", "validation_fraction", "test_fraction", "dedupe"),
)
# the value of a key the spec omits when it is the default (see `LoraSpec.as_dict`,
# `Recipe.agreed_facts`)
RECIPE_DEFAULTS = {
    **{"lora_dropout": "0.0", "rslora": "False", "dora": "False", "quantize": "none"},
    **{"lr_schedule": "constant", "warmup_steps": "0", "gossip_steps": "1"},
    **{"weighting": "nodes", "validation_fraction": "0.0", "dedupe": "True"},
    "test_fraction": "0.2",  # data.BBC_TEST_FRACTION
}
SCHEDULE_SPAN = ("rounds", "local_steps")


def recipe_facts(spec: dict[str, object], labels: tuple[str, ...]) -> dict[str, str]:
    """What a Hello says the fingerprint is made of, as text (see `recipe_differences`)."""
    facts = {k: str(spec[k]) for k in RECIPE_KEYS if k in spec}
    facts["targets"] = ",".join(map(str, spec.get("targets", ()) or ()))  # type: ignore[call-overload]
    facts["labels"] = ",".join(labels)
    facts["method"] = str(spec.get("method", DEFAULT_METHOD))  # the spec omits the default
    return {**RECIPE_DEFAULTS, **facts}


def recipe_differences(
    theirs: dict[str, str], ours: dict[str, str], where: tuple[str, str] = ("there", "here")
) -> str:
    """The options that differ, each with the peer's and this node's value, the two
    sides called `where` (a refusal names both nodes: it is read on both sides)."""
    out = []
    theirs, ours = {**RECIPE_DEFAULTS, **theirs}, {**RECIPE_DEFAULTS, **ours}
    for key in RECIPE_KEYS:
        if key in SCHEDULE_SPAN and not (key in theirs and key in ours):
            continue
        a, b = theirs.get(key, "?"), ours.get(key, "?")
        if a != b:
            out.append(
                f"--{key.replace('_', '-')} is {shown(a, 60)} {where[0]}, {shown(b, 60)} {where[1]}"
            )
    return "; ".join(out)


def protocol_refusal(h: pb.Hello, node_id: str) -> str:
    """Why Hello `h` of another wire protocol version than this node's may not join:
    both versions and both declora releases, each side named by its node id (the
    reason is logged here and read by the peer, where "this node" would name the other
    one), and which node to upgrade: the one of the older protocol, named first (a
    dialler logs only the first 300 characters of a refusal)."""
    theirs, ours = f"{h.protocol_version}", f"{PROTOCOL_VERSION}"
    who = shown(h.node_id or "?", 40)
    release = shown(h.package_version, 40) if h.package_version else "(unknown)"
    older = who if h.protocol_version < PROTOCOL_VERSION else repr(node_id)
    return (  # the action first: a dialler keeps only the first 300 characters
        f"protocol version {theirs} != {ours}: upgrade {older}, as nodes of two protocol "
        f"versions never mix; {who} runs declora {release} (protocol {theirs}), "
        f"{node_id!r} declora {__version__!r} (protocol {ours})"
    )


def check_hello(
    h: pb.Hello,
    *,
    node_id: str,
    swarm_id: str,
    fingerprint: str,
    gradient_tracking: bool,
    recipe: dict[str, str] | None = None,
) -> str:
    """'' when `h` may join this node's swarm, else the reason it may not; a recipe
    mismatch names the options that differ on both sides, by node id (the reason is
    logged here and read by the peer)."""
    sides = (f"at {shown(h.node_id, 40)}", f"at {node_id!r}")
    if h.protocol_version != PROTOCOL_VERSION:
        return protocol_refusal(h, node_id)
    if h.swarm_id != swarm_id:
        return f"swarm {shown(h.swarm_id)} != {swarm_id!r}"
    if h.fingerprint != fingerprint:
        differ = recipe_differences(dict(h.recipe), recipe or {}, sides)
        if differ:
            return f"the swarm's recipe differs: {differ}"
        return (
            f"fingerprint {shown(h.fingerprint)} != {fingerprint}: the base model's weights "
            "or the tensor schema differ (the same --model files everywhere?)"
        )
    if h.gradient_tracking != gradient_tracking:
        theirs, ours = ("on", "off") if h.gradient_tracking else ("off", "on")
        return (
            f"gradient tracking is {theirs} {sides[0]} and {ours} {sides[1]}: start every "
            "node of the swarm with the same --gradient-tracking"
        )
    problem = node_id_problem(h.node_id)
    if problem:
        return problem
    if h.node_id == node_id:
        return f"node id {h.node_id!r} is this node's own id"
    if h.round > MAX_ROUND or h.seq > MAX_SEQ or h.live_degree > MAX_DEGREE:
        return f"round {h.round}, seq {h.seq} or degree {h.live_degree} out of range"
    if len(h.listen_address) > 300 or len(h.session) > 64 or len(h.receiver) > 300:
        return "listen address, session or receiver too long"
    if h.listen_address and (problem := address_problem(h.listen_address)):
        return f"listen address {problem}"
    if problem := dial_problem(h.listen_address):  # its peers would dial that, in vain
        return f"listen address {problem}: set --advertise to the address peers reach"
    if len(h.recipe) > 32 or any(len(k) > 64 or len(v) > 4096 for k, v in h.recipe.items()):
        return "recipe too long"
    return ""


class Admission:
    """This node's checks of a peer's Hello (`hello_refusal`) and of the Welcome of a
    node it dialled (`welcome_refusal`, `certificate_refusal`): each gives '' when
    the peer may join, else the reason, and changes nothing. It holds this node's
    `fingerprint` and `recipe`, which its Hello states (`Handshaker.hello`)."""

    def __init__(
        self,
        settings: NodeSettings,
        fingerprint: str,
        recipe: dict[str, str],
        peers: PeerTable,
        auth: Auth,
        transport: Transport,
    ) -> None:
        self.settings = settings
        self.fingerprint = fingerprint
        self.recipe = recipe
        self.peers = peers
        self.auth = auth
        self.transport = transport
        # configured DNS-name address -> the IPs it resolved to when this node dialled
        # it (`note_resolved`): the hosts that may speak for that address (`vouched`)
        self.resolved: dict[str, frozenset[str]] = {}

    def hello_refusal(
        self, h: pb.Hello, cert_name: str | None, host: str, configured: bool = False
    ) -> str:
        """Why a peer's (authentic) Hello may not join: `secret_mismatch`, `check`, the
        identity it claims (`cert_name`: its TLS certificate's common name under mTLS,
        else None; `host`: the caller's remote host, '' where unknown), or, where it is
        not `configured` (`Admission.configured`), its host's share of the slots
        (`host_refusal`)."""
        who = shown(h.node_id or "?")
        return (
            self.secret_mismatch(h, who)
            or self.check(h)
            or self._identity_refusal(h, cert_name, host)
            or ("" if configured else self.host_refusal(h, host))
        )

    def configured(self, h: pb.Hello, host: str, discovered: Collection[str] = ()) -> bool:
        """Whether Hello `h` comes from one of this node's configured addresses: in
        --peers, among the addresses discovery offers (`discovered`), or a known entry
        marked configured; called from a host that may speak for it (`vouched`), and
        not held by another live id (one id at a time), so no Hello borrows another
        node's address, nor mints ids at its own."""
        address = h.listen_address
        if not address:
            return False
        known = self.peers.by_address(address)
        listed = address in self.settings.peers or address in discovered
        if not (listed or (known is not None and known.configured)):
            return False
        held = any(
            p.node_id != h.node_id and p.address == address and self.vouched(address, p.host)
            for p in self.peers.live
        )
        return not held and self.vouched(address, host)

    def vouched(self, address: str, host: str) -> bool:
        """Whether a call from remote `host` may speak for `address`: `host` is the
        IP of an IP-literal address, or one of the IPs a DNS name resolved to when this
        node dialled it (`note_resolved`; none before: a name never resolved vouches
        for no host). True where `host` is '' (unknown, or an entry only dialled:
        this node reached it at that address)."""
        if not host:
            return True
        ip = address_ip(address)
        if ip is not None:
            return same_host(host, str(ip))
        return any(same_host(host, r) for r in self.resolved.get(address, ()))

    def note_resolved(self, address: str, ips: Collection[str]) -> None:
        """Record the IPs DNS-name `address` resolved to as this node dialled it (the
        last resolution that found any; the record is kept for a failed one). Besides
        the names in --peers, at most `MAX_RESOLVED` are kept, the one resolved longest
        ago forgotten past that (discovery's names, over days of a LAN's announcements,
        bound nothing); a name forgotten vouches for no host until it is resolved again
        (`Handshaker.connect_known` resolves a discovered name not on record)."""
        if ips and address_ip(address) is None:
            self.resolved.pop(address, None)  # the newest last: insertion order
            self.resolved[address] = frozenset(ips)
            listed = set(self.settings.peers)
            if len(self.resolved) - len(listed & self.resolved.keys()) > MAX_RESOLVED:
                del self.resolved[next(a for a in self.resolved if a not in listed)]
                log.warning(
                    "over %d DNS names from discovery resolved: forgetting the oldest",
                    MAX_RESOLVED,
                )

    def host_refusal(self, h: pb.Hello, host: str) -> str:
        """Why `h`, from a peer that is not configured, may not take a live slot: its
        remote host (`slot_key`) holds `SLOTS_PER_HOST` of them for other such peers
        (live entries not configured, or configured at an address their host does not
        vouch for) ('' for a loopback or unknown host, and for an id live already)."""
        key = slot_key(host)
        known = self.peers.get(h.node_id)
        if key is None or (known is not None and known.live):
            return ""
        held = [
            p.node_id
            for p in self.peers.live
            if not (p.configured and self.vouched(p.address, p.host))
            and slot_key(p.host or str(address_ip(p.address) or "")) == key
        ]
        if len(held) < SLOTS_PER_HOST:
            return ""
        address = shown(h.listen_address)
        hint = (
            f"{address} is in its --peers, but another id holds it or this host is not its"
            if h.listen_address in self.settings.peers
            else f"list {address} in its --peers to admit more"
        )
        return (
            f"host {key} already holds {len(held)} of {self.settings.node_id!r}'s neighbour "
            f"slots for peers not in its --peers (at most {SLOTS_PER_HOST} a host): {hint}"
        )

    def welcome_refusal(self, node: pb.Hello, address: str) -> str:
        """Why the (authentic) Welcome of the node dialled at `address` may not join:
        `secret_mismatch`, `check`, or, with a swarm secret, a Welcome for another
        node."""
        reason = self.secret_mismatch(node, shown(node.node_id or address)) or self.check(node)
        if not reason and self.auth.secret is not None and node.receiver != self.settings.node_id:
            reason = f"its welcome is for {shown(node.receiver)}, not this node"
        return reason

    def check(self, h: pb.Hello) -> str:
        """`check_hello` against this node."""
        s = self.settings
        return check_hello(
            h,
            node_id=s.node_id,
            swarm_id=s.swarm_id,
            fingerprint=self.fingerprint,
            gradient_tracking=bool(s.gradient_tracking),
            recipe=self.recipe,
        )

    def secret_mismatch(self, h: pb.Hello, who: str) -> str:
        """Why a signed Hello or Welcome cannot join this open-mode node ('' when this
        node has a secret, whose check is `Auth.refusal`, or `h` carries no mac): the
        sender uses a swarm secret, so it refuses this node's unsigned messages; refused
        here too, so that neither side counts the other as a neighbour."""
        if self.auth.secret is not None or not (h.mac or h.nonce):
            return ""
        return f"{who} uses --swarm-secret, this node has none: {SAME_SECRET}"

    def names_me(self, receiver: str) -> bool:
        """Whether `receiver` (a Hello's) is this node: its id, advertised or listen
        address. Enforced with a swarm secret, where the mac makes it binding."""
        s = self.settings
        return self.auth.secret is None or receiver in (s.node_id, s.advertise, s.listen)

    def _identity_refusal(self, h: pb.Hello, cert_name: str | None, host: str) -> str:
        if cert_name == CLI_CERT:
            return "the CLI's certificate may only read Status"
        if cert_name is not None and cert_name != h.node_id:
            return f"node id {shown(h.node_id)} is not the certificate's name {shown(cert_name)}"
        if not self.names_me(h.receiver):
            return (
                f"this Hello is for {shown(h.receiver)}, not this node: dial its advertised "
                f"address {self.settings.advertise}"
            )
        if h.listen_address in (self.settings.advertise, self.settings.listen):
            return f"listen address {shown(h.listen_address)} is this node's own"
        known = self.peers.get(h.node_id)
        if known is None or not known.live:
            return ""
        # a Hello stating no address (its --advertise no peer can dial) keeps the one
        # this node dialled; the host check below still holds for it
        if h.listen_address and known.address != h.listen_address:
            return f"node id {shown(h.node_id)} is live at another address"
        renewal = bool(h.session) and h.session == known.token_out
        if not host or renewal:
            return ""
        dialled = address_ip(known.address)  # a peer this node dialled calls from there
        expected = known.host or ("" if dialled is None else str(dialled))
        if not expected:  # dialled by name, never called: its host is unknown
            return f"node id {shown(h.node_id)} is live and only it can renew (its session)"
        if not same_host(host, expected):
            return f"node id {shown(h.node_id)} is live from another host"
        return ""

    async def certificate_refusal(
        self, address: str, node_id: str, timeout: float, name: str = ""
    ) -> str:
        """Under mTLS: '' when the server at `address` presents the certificate of
        `node_id` (what its Welcome claims), else why not; '' without mTLS. `timeout`:
        seconds for the TLS connection that reads it; `name`: its certificate's name
        as this dial read it already (`RevokedDials.server`), then not read again."""
        tls = getattr(self.transport, "tls", None)
        if tls is None:
            return ""
        try:
            host, port = split_address(address)
            name = name or await tls.server_name(host, port, timeout)
        except RevokedError as exc:
            return str(exc)
        except (ValueError, TlsError) as exc:  # TlsError is a ValueError
            return f"cannot check its certificate: {exc}"
        if name == CLI_CERT:
            return "it serves with the CLI's certificate, which may only read Status"
        if name != node_id:
            return f"node id {shown(node_id)} is not its certificate's name {shown(name)}"
        return ""
