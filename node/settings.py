"""Daemon configuration: one pydantic-settings model.

Precedence, highest first: command-line flags, environment variables `DECLORA_*`,
a config file (`--config` TOML, JSON or YAML), then the defaults below. Every option
has a default that runs a node on this machine; bad values raise a ValidationError
that names the option, before anything starts.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from declora.node.address import address_problem, dial_problem, split_address
from declora.node.config_file import check_paths, read_config_file, read_secret_file
from declora.node.errors import HintedError
from declora.node.identity import node_id_problem
from declora.node.option_values import (
    BLANK_PATH,
    ENV_PREFIX,
    blank_path,
    env_key,
    env_name,
    home_path,
    option_name,
)
from declora.node.recipe import given_as, named_as
from declora.node.security import TlsFiles, secret_text
from declora.node.settings_fields import NodeOptions
from declora.node.settings_report import (
    SettingsError,
    advertise_warning,
    error_hints,
    given_name,
    problem,
    start_warnings,
    suggest,
)

# the words a yes/no option takes (pydantic's, any case), in pairs as errors list them
BOOL_PAIRS = (("true", "false"), ("yes", "no"), ("on", "off"), ("1", "0"), ("t", "f"), ("y", "n"))
BOOL_WORDS = frozenset(word for pair in BOOL_PAIRS for word in pair)


def check_address(value: str) -> str:
    """`value`, stripped, if it is host:port or [IPv6]:port as a peer's Hello must state
    it (`address_problem`: a DNS name or IP literal); ValueError naming it otherwise."""
    split_address(value)  # its own message for a port out of range
    if problem := address_problem(value.strip()):
        raise ValueError(problem)
    return value.strip()


class _FileSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class NodeSettings(BaseSettings, NodeOptions):
    """Everything `declora-node start` can be told: the swarm's `Recipe` and this
    node's own options (`NodeOptions`), read from flags, environment and file, checked
    and filled in."""

    model_config = SettingsConfigDict(env_prefix="DECLORA_", extra="forbid", validate_default=True)

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

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_upper(cls, v: object) -> object:
        return v.strip().upper() if isinstance(v, str) else v  # --log-level debug

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

    @field_validator("metrics_host")
    @classmethod
    def _metrics_host_ok(cls, v: str) -> str:
        try:
            return str(ipaddress.ip_address(v.strip("[]")))
        except ValueError:
            raise ValueError(f"{v!r} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)") from None

    @field_validator("advertise")
    @classmethod
    def _advertise_ok(cls, v: str) -> str:
        if not v:
            return v
        address = check_address(v)
        if problem := dial_problem(address):  # peers refuse a Hello stating it
            raise ValueError(f"{problem}: give this machine's address as peers reach it")
        return address

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
        """The secret less surrounding whitespace (`security.secret_text`: a file's or a
        block scalar's newline), as every user of it signs with; at least 16 characters."""
        if v is None:
            return v
        text = secret_text(v.get_secret_value())
        if len(text) < 16:
            raise ValueError("must be at least 16 characters (e.g. `openssl rand -hex 32`)")
        return SecretStr(text)

    @field_validator(
        "swarm_secret_file",
        "tls_cert",
        "tls_key",
        "tls_ca",
        "tls_crl",
        "checkpoint_dir",
        mode="before",
    )
    @classmethod
    def _path_given(cls, v: object) -> object:
        """An empty value (`DECLORA_TLS_CRL=` from an unset compose variable) or one of
        only spaces is refused as such (`blank_path`), from a flag too: an empty one was
        taken as the working folder. A leading `~` is the home folder (`home_path`): a
        config file's `checkpoint_dir = "~/state"` made a folder named `~` here."""
        if blank_path(v):
            raise ValueError(BLANK_PATH)
        return home_path(v) if isinstance(v, str | Path) else v

    @field_validator("resume", mode="before")
    @classmethod
    def _resume_ok(cls, v: object) -> object:
        """One error for any other value (a file's `resume = 5` got two of pydantic's)."""
        word = v.strip().lower() if isinstance(v, str) else v
        known = isinstance(word, str | int | float) and word in BOOL_WORDS | {"auto", 1, 0}
        if not known:  # 1 and 0: also True, False (and 1.0, 0.0) as pydantic takes them
            also = ", ".join("/".join(pair) for pair in BOOL_PAIRS[1:])
            shown = v.strip() if isinstance(v, str) else v
            raise ValueError(f"must be true, false or auto (or {also}; any case), got {shown!r}")
        return word

    @field_validator("device")
    @classmethod
    def _device_ok(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
            raise ValueError("device must be auto, cpu, cuda, cuda:N or mps")
        return v

    @model_validator(mode="after")
    def _fill(self) -> NodeSettings:
        self._tls_together()
        dialled = "--advertise" if self.advertise else "--listen"  # the address peers dial
        if not self.advertise:
            self.advertise = self.listen
        given_id = self.node_id  # '' unless --node-id (its variable, its key) gave one
        if not self.node_id:  # under mTLS a node's id is its certificate's name
            tls = self.tls()
            self.node_id = (
                tls.name
                if tls is not None
                else "node-" + self.advertise.replace(":", "-").replace("[", "").replace("]", "")
            )
        problem = node_id_problem(self.node_id)
        if problem:
            raise ValueError(f"--node-id: {problem}")
        if self.partition_scheme != "iid" and not self.partition:
            raise ValueError(
                f"{given_as('partition_scheme')} {self.partition_scheme} shares a dataset out "
                "among nodes, but there is no --partition i/N: this node would train on all "
                f"of --data (give --partition, or drop {given_as('partition_scheme')})"
            )
        if self.solo and (self.peers or self.mdns):
            other = " and ".join(given_as(f) for f in ("peers", "mdns") if getattr(self, f))
            raise ValueError(
                f"{given_as('solo')} trains alone: drop {other}, or drop {given_as('solo')}"
            )
        if self.gossip_acceleration == "chebyshev":
            raise ValueError(
                f"{given_as('gossip_acceleration')} chebyshev needs the mixing matrix's second "
                "eigenvalue of the swarm's graph, which a daemon does not know: give "
                "chebyshev:LAMBDA "
                "(`declora-node lab` and `simulate` compute it from the topology)"
            )
        if self.swarm_secret_file is not None:
            if self.swarm_secret is not None:
                raise ValueError(
                    f"{given_as('swarm_secret')} and {given_as('swarm_secret_file')} both give "
                    "the swarm secret: keep one"
                )
            try:  # read once, here: the file's problems named as the option was given
                text = read_secret_file(self.swarm_secret_file)
            except ValueError as exc:
                raise ValueError(f"{given_as('swarm_secret_file')}: {exc}") from None
            self.swarm_secret = SecretStr(text)
        if self.resume == "auto":  # resolved once, here: the rest of the node sees a bool
            from declora.node.run_folder import resumable  # LATEST or a complete ckpt-*

            self.resume = resumable(self.state_dir)
        if self.resume:
            self._keep_recorded_id(given_id)
        self.fill_daemon_defaults()
        tls = self.tls()  # TlsError is a ValueError: reported like any bad option
        problem = tls.address_problem(dialled, self.advertise) if tls is not None else ""
        if problem:  # peers would refuse the certificate: joins and drops, over and over
            raise ValueError(problem)
        return self

    def _keep_recorded_id(self, given: str) -> None:
        """A resume keeps the node id its run recorded (`run_folder.recorded_id`): taken
        when none was given (the id from --listen/--advertise would change with the
        port); refused when --node-id or the certificate's name differs, since the
        neighbours know the run under its id (their copies of its adapter, its round).
        The folder stays the one resumed: the default one is named after the id."""
        from declora.node.run_folder import recorded_id

        recorded = recorded_id(self.state_dir)
        if recorded is None or recorded == self.node_id:
            return
        if not given and self.tls() is None:
            self.checkpoint_dir = self.state_dir
            self.node_id = recorded
            return
        source = given_as("node_id") if given else f"the name of {given_as('tls_cert')}"
        fix = (  # under mTLS the id is the certificate's name (`security_certs`)
            f"present the certificate of {recorded} ({given_as('tls_cert')}, {given_as('tls_key')})"
            if self.tls_cert is not None
            else f"leave out {given_as('node_id')} (a resume takes the id its run recorded)"
        )
        raise HintedError(
            f"--resume: {self.state_dir} is the run of node {recorded}, but {source} is "
            f"{self.node_id}: its neighbours know that run as {recorded}",
            f"{fix}, or begin afresh in another --checkpoint-dir (this one is kept)",
        )

    def _tls_together(self) -> None:
        """--tls-cert, --tls-key and --tls-ca all or none, --tls-crl only with them:
        else a ValueError naming each as it was given (`TlsFiles.load` names flags)."""
        fields = ("tls_cert", "tls_key", "tls_ca")
        missing = [option_name(f) for f in fields if getattr(self, f) is None]
        if len(missing) == len(fields) and self.tls_crl is not None:
            raise ValueError(f"{given_as('tls_crl')} needs mTLS: also give {', '.join(missing)}")
        if 0 < len(missing) < len(fields):
            named = ", ".join(given_as(f) for f in fields)
            raise ValueError(f"{named} go together: also give {', '.join(missing)}")

    def tls(self) -> TlsFiles | None:
        """The TLS files read and checked for a node (TlsError naming the option): valid
        now, signed by --tls-ca, a node's certificate (not a CA's, not the CLI's), named
        --node-id, not revoked by --tls-crl (when given: a CRL the CA signed); None
        without TLS."""
        return TlsFiles.load(
            self.tls_cert,
            self.tls_key,
            self.tls_ca,
            role="node",
            node_id=self.node_id or None,
            crl=self.tls_crl,
        )

    @property
    def wanted_peers(self) -> int:
        """Live neighbours to wait for at start: --min-peers, -1 = every static peer
        (one with mDNS alone), default 1 with --peers or --mdns, else 0. Above 0, a
        training round with no live neighbour also waits for one, up to its deadline
        (`rounds.Isolation`)."""
        if self.solo:
            return 0
        if self.min_peers is None:
            want = 1 if self.peers or self.mdns else 0
        elif self.min_peers == -1:
            want = len(self.peers) or (1 if self.mdns else 0)
        else:
            want = self.min_peers
        return min(want, self.max_neighbors)

    @property
    def state_dir(self) -> Path:
        """Checkpoints, history and final adapter: --checkpoint-dir or declora-state/<id>."""
        return self.checkpoint_dir or Path("declora-state") / self.node_id

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


# ---------------------------------------------------------------- where a value came from
# variables the daemon reads that are not options (fault injection, node/faults.py)
OTHER_VARIABLES = frozenset({"DECLORA_CRASH_AT", "DECLORA_CRASH_ARM_FILE"})


def default_text(field: str, model: type[BaseModel] | None = None) -> str:
    """The default of option `field` of `model` (`NodeSettings` unless given) as
    `--help` and `config` show it."""
    info = (model or NodeSettings).model_fields[field]
    extra = info.json_schema_extra
    if isinstance(extra, dict) and "default_text" in extra:
        return str(extra["default_text"])
    value = info.get_default(call_default_factory=True)
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or value in ("", [], ()):
        return "none"
    return str(value)


def unknown_env_vars(environ: dict[str, str]) -> list[str]:
    """One warning line per `DECLORA_*` variable that is not an option."""
    known = {env_name(f) for f in NodeSettings.model_fields} | OTHER_VARIABLES
    out = []
    for var in sorted(environ):
        if var.upper().startswith(ENV_PREFIX) and var.upper() not in known:
            hint = suggest(var.upper(), sorted(known - OTHER_VARIABLES))
            out.append(f"environment variable {var} is not an option (ignored){hint}")
    return out


@dataclass
class Resolved:
    """Settings, per option where its value came from, and a line for each thing to
    fix that does not stop a start (`start_warnings`)."""

    settings: NodeSettings
    sources: dict[str, str]
    warnings: list[str] = dataclasses.field(default_factory=list)


def _origins(
    cli: dict[str, Any], data: dict[str, Any], environ: dict[str, str], config_file: Path | None
) -> dict[str, str]:
    """Per option: 'flag', 'env DECLORA_X', 'file <name>' or 'default'."""
    out = {}
    for field in NodeSettings.model_fields:
        var = env_key(env_name(field), environ)
        if cli.get(field) is not None:
            out[field] = "flag"
        elif var is not None:
            out[field] = f"env {var}"
        elif field in data and config_file is not None:
            out[field] = f"file {config_file.name}"
        else:
            out[field] = "default"
    return out


def resolve_settings(cli: dict[str, Any], config_file: Path | None = None) -> Resolved:
    """`load_settings` with each value's origin; SettingsError naming every bad value as
    the user gave it (with its validators' hints), ConfigFileError for a missing or
    unreadable file or a relative path in it meant for another folder (`check_paths`)."""
    from pydantic import ValidationError

    data = read_config_file(config_file) if config_file else {}
    origins = _origins(cli, data, dict(os.environ), config_file)
    if config_file:  # the file's own relative paths (a flag's or variable's win)
        check_paths(config_file, data, [k for k, v in origins.items() if v.startswith("file ")])
    try:
        with named_as(lambda field: given_name(field, origins, config_file)):
            settings = load_settings(cli, config_file)
    except ValidationError as exc:
        errors = exc.errors()
        options = list(NodeSettings.model_fields)
        problems = "; ".join(problem(e, origins, config_file, options) for e in errors)
        raise SettingsError(f"bad configuration: {problems}", error_hints(errors)) from exc
    if settings.swarm_secret_file is not None:  # the secret it holds: from there
        origins["swarm_secret"] = "swarm-secret-file"
    if origins["advertise"] == "default":  # copied from --listen (`_fill`)
        origins["advertise"] = "listen"
    if origins["node_id"] == "default" and settings.resume and settings.tls_cert is None:
        from declora.node.run_folder import recorded_id  # kept by `_keep_recorded_id`

        if recorded_id(settings.state_dir) == settings.node_id:
            origins["node_id"] = "checkpoint"
    secret_file = given_name("swarm_secret_file", origins, config_file)
    warnings = start_warnings(settings, config_file, data, secret_file)
    if line := advertise_warning(settings, origins, config_file):
        warnings.insert(0, line)
    return Resolved(settings, origins, warnings)
