"""The options of a node beyond its swarm's `Recipe`: network, persistence,
operations, limits and security (`settings.NodeSettings` reads and checks them). Every
field is a `declora-node start` flag, a config key and a `DECLORA_*` variable of the
same name."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr
from pydantic_settings import NoDecode

from declora.node.recipe import Recipe


class NodeOptions(Recipe):
    """This node's own options, with their defaults and `--help` texts."""

    # identity and network
    node_id: str = Field(
        "",
        description="unique id in the swarm",
        json_schema_extra={
            "default_text": "its certificate's name under mTLS, else from the advertise address"
        },
    )
    swarm_id: str = Field(
        "default", min_length=1, max_length=128, description="nodes mix only within one swarm"
    )
    listen: str = Field("127.0.0.1:7070", description="host:port the gRPC server binds")
    advertise: str = Field(
        "", description="host:port peers dial", json_schema_extra={"default_text": "--listen"}
    )
    peers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="static peers: host:port,host:port"
    )
    mdns: bool = Field(False, description="find peers on the LAN by mDNS")
    mdns_interface: str = Field(
        "",
        description="IP to announce and browse on (e.g. 127.0.0.1)",
        json_schema_extra={"default_text": "every interface"},
    )
    solo: bool = Field(False, description="train alone on purpose: no peers, no warning")
    max_neighbors: int = Field(8, ge=1, le=256, description="mix with at most this many peers")
    min_peers: int | None = Field(
        None,
        ge=-1,
        le=4096,
        description=(
            "live neighbours to wait for at start; -1: every static peer; above 0, a "
            "round with none live also waits for one, up to its deadline"
        ),
        json_schema_extra={"default_text": "1 with --peers or --mdns, 0 with --solo"},
    )
    startup_timeout: float = Field(
        60.0,
        ge=0,
        le=604_800,
        description="seconds to wait for --min-peers, then exit 1 saying why",
    )
    # this node's share of a dataset (labs and experiments)
    partition: str = Field("", description="this node's share: 'i/N' (0-based), empty = all")
    validation_fraction: float = Field(
        0.0,
        ge=0,
        le=0.5,
        description="share of the node's data held out for validation (lab, simulate: 0.1)",
    )
    # rounds and devices
    round_deadline: float = Field(
        60.0, gt=0, le=86_400, description="seconds to wait for neighbours"
    )
    consensus_rounds: int = Field(
        50,
        ge=0,
        le=1_000_000,
        description="gossip-only rounds after the last one, until neighbours agree",
    )
    # persistence
    checkpoint_dir: Path | None = Field(
        None,
        description="checkpoints, rounds.jsonl and the final adapter",
        json_schema_extra={"default_text": "declora-state/<node-id>"},
    )
    checkpoint_every: int = Field(
        5, ge=1, le=1_000_000, description="training rounds between checkpoints"
    )
    resume: bool | Literal["auto"] = Field(
        False,
        description="continue from the latest checkpoint; --resume=auto (for restart "
        "policies): if there is one, else start afresh",
    )
    # operations
    metrics_port: int = Field(0, ge=0, le=65535, description="0 = no metrics endpoint")
    metrics_host: str = Field(
        "127.0.0.1",
        description="IP the metrics endpoint binds (0.0.0.0 or :: in a container, for "
        "Prometheus to reach it)",
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    threads: int = Field(0, ge=0, le=1024, description="torch threads (0 = torch default)")
    log_format: Literal["text", "json"] = Field("text", description="text or json lines")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR"
    )
    max_message_mib: int = Field(
        0, ge=0, le=4096, description="largest payload accepted (0 = from the adapter's size)"
    )
    chunk_kib: int = Field(
        1024,
        ge=1,
        le=4096,
        description="largest chunk of a streamed payload (pushes and states send at most "
        "what arrives in a quarter of --stream-idle-seconds at 32 KiB/s: 80 KiB by default)",
    )
    # limits (see node/limits.py); an honest peer never reaches them
    max_concurrent_streams: int = Field(
        64, ge=4, le=4096, description="push streams served at once (other RPCs: own pools)"
    )
    stream_idle_seconds: float = Field(
        10.0, gt=0, le=600, description="a push stream silent this long is cut"
    )
    max_known_peers: int = Field(64, ge=1, le=4096, description="peer table size")
    max_value: float = Field(
        1e4, gt=0, le=1e30, description="largest |value| accepted in a peer's adapter or z message"
    )
    max_pushes_per_round: int = Field(6, ge=3, le=1000, description="per sender and round")
    max_handshakes_per_minute: int = Field(
        600, ge=1, le=1_000_000, description="per remote address (16x per IPv6 /64)"
    )
    max_pulls_per_minute: int = Field(
        12, ge=1, le=100_000, description="per remote address (16x per IPv6 /64)"
    )
    # security (see node/security.py)
    tls_cert: Path | None = Field(None, description="this node's PEM certificate (mTLS)")
    tls_key: Path | None = Field(None, description="its PEM private key")
    tls_ca: Path | None = Field(None, description="the swarm CA's PEM certificate")
    tls_crl: Path | None = Field(
        None,
        description="the swarm CA's PEM revocation list (re-read when it changes; "
        "`declora-node certs revoke`)",
    )
    swarm_secret: SecretStr | None = Field(
        None, description="shared secret (>= 16 characters) that signs every message"
    )
    swarm_secret_file: Path | None = Field(
        None,
        description="file holding the swarm secret (a Docker or Kubernetes secret mount); "
        "not with --swarm-secret",
    )
