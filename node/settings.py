"""Daemon configuration: one pydantic-settings model.

Precedence, highest first: command-line flags, environment variables `DECLORA_*`,
a config file (`--config` TOML, JSON or YAML), then the defaults below. Every option
has a default that runs a node on this machine; bad values raise a ValidationError
that names the option, before anything starts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from declora.node.recipe import Recipe
from declora.node.security import TlsFiles

ADDRESS = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


class ConfigFileError(ValueError):
    """The config file is missing, unreadable or not a mapping."""


def read_config_file(path: Path) -> dict[str, Any]:
    """Options from a TOML, JSON or YAML file (keys as in `NodeSettings`, - or _)."""
    if not path.is_file():
        raise ConfigFileError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data: object = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise ConfigFileError(f"{path}: use a .toml, .json or .yaml config file")
    except (ValueError, ImportError) as exc:
        if isinstance(exc, ConfigFileError):
            raise
        raise ConfigFileError(f"{path}: cannot parse: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: the top level must be a mapping of options")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def check_address(value: str) -> str:
    m = ADDRESS.match(value)
    if not m or not 0 < int(m.group(2)) < 65536:
        raise ValueError(f"{value!r} is not host:port")
    return value


class _FileSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class NodeSettings(BaseSettings, Recipe):
    """Everything `declora-node start` can be told: the swarm's `Recipe`, and this
    node's network, persistence, operations and security options."""

    model_config = SettingsConfigDict(env_prefix="DECLORA_", extra="forbid", validate_default=True)

    # identity and network
    node_id: str = Field(
        "", description="unique id in the swarm; default: derived from the address"
    )
    swarm_id: str = Field("default", min_length=1, max_length=128)
    listen: str = "127.0.0.1:7070"
    advertise: str = Field("", description="address peers dial; default: the listen address")
    peers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    mdns: bool = False
    mdns_interface: str = Field("", description="IP to announce and browse on (e.g. 127.0.0.1)")
    max_neighbors: int = Field(8, ge=1, le=256)
    min_peers: int = Field(-1, ge=-1, description="wait for this many at start (-1: all static)")
    startup_timeout: float = Field(60.0, ge=0, description="seconds to wait for min_peers")
    # this node's share of a dataset (labs and experiments)
    partition: str = Field("", description="this node's share: 'i/N' (0-based), empty = all")
    # rounds and devices
    round_deadline: float = Field(60.0, gt=0, description="seconds to wait for neighbours")
    # persistence
    checkpoint_dir: Path | None = None
    checkpoint_every: int = Field(5, ge=1)
    resume: bool = False
    # operations
    metrics_port: int = Field(0, ge=0, le=65535, description="0 = no metrics endpoint")
    device: str = "auto"
    threads: int = Field(0, ge=0, description="torch threads (0 = torch default)")
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_message_mib: int = Field(256, ge=1, le=4096)
    chunk_kib: int = Field(1024, ge=1, le=4096)
    # limits (see node/limits.py); an honest peer never reaches them
    max_concurrent_streams: int = Field(64, ge=4, le=4096, description="RPCs served at once")
    max_pushes_per_round: int = Field(6, ge=3, le=1000, description="per sender and round")
    max_handshakes_per_minute: int = Field(600, ge=1, description="per remote host")
    max_pulls_per_minute: int = Field(12, ge=1, description="per requesting node")
    # security (see node/security.py)
    tls_cert: Path | None = Field(None, description="this node's PEM certificate (mTLS)")
    tls_key: Path | None = Field(None, description="its PEM private key")
    tls_ca: Path | None = Field(None, description="the swarm CA's PEM certificate")
    swarm_secret: SecretStr | None = Field(
        None, description="shared secret (>= 16 characters) that signs every message"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls, _FILE_DATA.get({})))

    @field_validator("peers", mode="before")
    @classmethod
    def _split_peers(cls, v: object) -> object:
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("peers")
    @classmethod
    def _peers_ok(cls, v: list[str]) -> list[str]:
        return [check_address(p) for p in v]

    @field_validator("listen")
    @classmethod
    def _listen_ok(cls, v: str) -> str:
        return check_address(v)

    @field_validator("advertise")
    @classmethod
    def _advertise_ok(cls, v: str) -> str:
        return check_address(v) if v else v

    @field_validator("partition")
    @classmethod
    def _partition_ok(cls, v: str) -> str:
        if v and not re.fullmatch(r"\d+/\d+", v):
            raise ValueError("partition must be 'i/N' with 0 <= i < N, e.g. 0/4")
        if v:
            i, n = map(int, v.split("/"))
            if not 0 <= i < n:
                raise ValueError(f"partition {v}: need 0 <= i < N")
        return v

    @field_validator("swarm_secret")
    @classmethod
    def _secret_ok(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (e.g. `openssl rand -hex 32`)")
        return v

    @field_validator("device")
    @classmethod
    def _device_ok(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
            raise ValueError("device must be auto, cpu, cuda, cuda:N or mps")
        return v

    @model_validator(mode="after")
    def _fill(self) -> NodeSettings:
        if not self.advertise:
            self.advertise = self.listen
        if not self.node_id:
            self.node_id = "node-" + self.advertise.replace(":", "-").replace("[", "").replace(
                "]", ""
            )
        if self.resume and self.checkpoint_dir is None:
            raise ValueError("--resume needs --checkpoint-dir")
        self.tls()  # TlsError is a ValueError: reported like any bad option
        return self

    def tls(self) -> TlsFiles | None:
        """The TLS files read and checked (TlsError naming the option); None without TLS."""
        return TlsFiles.load(self.tls_cert, self.tls_key, self.tls_ca)

    @property
    def partition_index(self) -> tuple[int, int] | None:
        if not self.partition:
            return None
        i, n = map(int, self.partition.split("/"))
        return i, n


class _FileData:
    """The config-file mapping in effect while `load_settings` builds settings."""

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}

    def get(self, default: dict[str, Any]) -> dict[str, Any]:
        return self._data or default

    def set(self, data: dict[str, Any]) -> None:
        self._data = data


_FILE_DATA = _FileData()


def load_settings(cli: dict[str, Any], config_file: Path | None = None) -> NodeSettings:
    """Settings from CLI values (None = not given), env, file, defaults, in that order."""
    _FILE_DATA.set(read_config_file(config_file) if config_file else {})
    try:
        return NodeSettings(**{k: v for k, v in cli.items() if v is not None})
    finally:
        _FILE_DATA.set({})
