"""Tests for declora.node.settings: precedence, list parsing and validation messages."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from declora.node.config_file import ConfigFileError
from declora.node.settings import (
    NodeSettings,
    SettingsError,
    default_text,
    load_settings,
    read_config_file,
    resolve_settings,
    unknown_env_vars,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DECLORA_* variable of the calling shell leaks into a test."""
    for key in list(os.environ):
        if key.upper().startswith("DECLORA_"):
            monkeypatch.delenv(key)


def write_config(tmp_path: Path, kind: str, options: dict[str, object]) -> Path:
    path = tmp_path / f"node.{kind}"
    if kind == "json":
        path.write_text(json.dumps(options))
    else:

        def toml_value(v: object) -> str:
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, str):
                return json.dumps(v)
            if isinstance(v, list):
                return "[" + ", ".join(toml_value(x) for x in v) + "]"
            return str(v)

        path.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in options.items()))
    return path


def test_defaults() -> None:
    s = load_settings({})
    assert (s.model, s.data, s.rank, s.lora_alpha, s.codec) == ("minilm", "bbcnews", 8, 16, "fp32")
    assert s.listen == s.advertise == "127.0.0.1:7070"
    assert s.node_id == "node-127.0.0.1-7070"
    assert s.peers == [] and s.targets == ()
    assert s.partition_index is None
    assert s.checkpoint_dir is None and not s.resume
    assert s.state_dir == Path("declora-state/node-127.0.0.1-7070")
    assert s.consensus_rounds == 50 and s.min_peers is None and s.startup_timeout == 60.0


@pytest.mark.parametrize("kind", ["toml", "json"])
def test_precedence_cli_env_file_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    cfg = write_config(
        tmp_path, kind, {"rank": 4, "alpha": 32, "lr": 0.01, "codec": "q8", "local-steps": 7}
    )
    monkeypatch.setenv("DECLORA_RANK", "12")
    monkeypatch.setenv("DECLORA_ALPHA", "24")
    s = load_settings({"rank": 16, "alpha": None, "lr": None}, cfg)
    assert s.rank == 16  # CLI beats env and file
    assert s.alpha == 24  # env beats file (CLI None means "not given")
    assert s.lr == 0.01  # file beats default
    assert s.codec == "q8"
    assert s.local_steps == 7  # dashed keys in files
    assert s.batch_size == 16  # default

    monkeypatch.delenv("DECLORA_RANK")
    assert load_settings({}, cfg).rank == 4
    assert load_settings({}).rank == 8  # the file applies only to the call that names it


def test_yaml_config(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    path = tmp_path / "node.yaml"
    path.write_text("rank: 6\npeers:\n  - 10.0.0.1:7070\n")
    s = load_settings({}, path)
    assert s.rank == 6 and s.peers == ["10.0.0.1:7070"]


def test_lists_from_comma_separated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DECLORA_PEERS", "127.0.0.1:7001, [::1]:7002,,host-b.local:7003 ")
    monkeypatch.setenv("DECLORA_TARGETS", "query,value")
    s = load_settings({})
    assert s.peers == ["127.0.0.1:7001", "[::1]:7002", "host-b.local:7003"]
    assert s.targets == ("query", "value")
    # CLI strings are split the same way, lists are taken as they are
    assert load_settings({"targets": "q_proj,v_proj"}).targets == ("q_proj", "v_proj")
    assert load_settings({"targets": ["k_proj"]}).targets == ("k_proj",)


def test_env_types(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DECLORA_MDNS", "true")
    monkeypatch.setenv("DECLORA_LR", "5e-4")
    monkeypatch.setenv("DECLORA_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.setenv("DECLORA_RESUME", "1")
    monkeypatch.setenv("DECLORA_PARTITION", "2/4")
    s = load_settings({})
    assert s.mdns is True and s.lr == 5e-4 and s.resume is True
    assert s.checkpoint_dir == tmp_path
    assert s.partition_index == (2, 4)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("listen", "127.0.0.1:70000", "port 70000 is not 1-65535"),
        ("listen", "localhost", "not host:port"),
        ("peers", "127.0.0.1:0", "port 0 is not 1-65535"),
        ("metrics_port", 70000, "less than or equal to 65535"),
        ("codec", "q9", "bad codec spec 'q9'"),
        ("partition", "3/2", "need 0 <= i < N"),
        ("partition", "1-4", "'i/N'"),
        ("device", "tpu", "device must be"),
        ("task", "seq2seq", "'cls' or 'lm'"),
        ("rank", 0, "greater than or equal to 1"),
    ],
)
def test_bad_cli_values_name_the_option(option: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        load_settings({option: value})
    assert [e["loc"][0] for e in info.value.errors()] == [option]


def test_bad_env_value_names_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DECLORA_CODEC", "q9")
    with pytest.raises(ValidationError, match="codec") as info:
        load_settings({})
    assert info.value.errors()[0]["loc"] == ("codec",)
    # a valid CLI value overrides the bad env value
    assert load_settings({"codec": "q4"}).codec == "q4"


def test_resume_uses_the_default_state_dir(tmp_path: Path) -> None:
    s = load_settings({"resume": True, "node_id": "n1"})
    assert s.resume and s.state_dir == Path("declora-state/n1")
    s = load_settings({"resume": True, "checkpoint_dir": str(tmp_path)})
    assert s.resume and s.state_dir == tmp_path


def test_resume_auto_continues_only_where_a_checkpoint_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """auto (environment or file) is resolved to a bool once, from the checkpoint folder:
    what a restart policy needs (the first start begins afresh, a restart continues)."""
    monkeypatch.setenv("DECLORA_RESUME", "auto")
    assert load_settings({"checkpoint_dir": str(tmp_path)}).resume is False
    # a history alone, or a checkpoint folder without its state.pt: begin afresh
    (tmp_path / "rounds.jsonl").write_text('{"round": 1}\n')
    (tmp_path / "ckpt-00000004" / "adapter").mkdir(parents=True)
    assert load_settings({"checkpoint_dir": str(tmp_path)}).resume is False
    # a complete checkpoint without LATEST (a stop before LATEST was written): resume
    (tmp_path / "ckpt-00000004" / "state.pt").write_bytes(b"state")
    assert load_settings({"checkpoint_dir": str(tmp_path)}).resume is True
    (tmp_path / "ckpt-00000004" / "state.pt").unlink()
    (tmp_path / "LATEST").write_text("ckpt-00000005\n")
    assert load_settings({"checkpoint_dir": str(tmp_path)}).resume is True
    assert load_settings({"checkpoint_dir": str(tmp_path), "resume": False}).resume is False
    config = tmp_path / "node.toml"
    config.write_text('resume = "AUTO"\n')
    monkeypatch.delenv("DECLORA_RESUME")
    assert resolve_settings({"checkpoint_dir": str(tmp_path)}, config).settings.resume is True
    monkeypatch.setenv("DECLORA_RESUME", "sometimes")
    with pytest.raises(SettingsError, match="DECLORA_RESUME: must be true, false or auto"):
        resolve_settings({}, None)


@pytest.mark.parametrize(
    ("options", "wanted"),
    [
        ({}, 0),
        ({"solo": True}, 0),
        ({"peers": "a:1,b:2,c:3"}, 1),
        ({"mdns": True}, 1),
        ({"peers": "a:1,b:2,c:3", "min_peers": -1}, 3),
        ({"mdns": True, "min_peers": -1}, 1),
        ({"peers": "a:1,b:2", "min_peers": 0}, 0),
        ({"peers": "a:1", "min_peers": 5, "max_neighbors": 2}, 2),
    ],
)
def test_wanted_peers(options: dict[str, object], wanted: int) -> None:
    assert load_settings(options).wanted_peers == wanted


def test_a_partition_scheme_without_a_partition_is_refused() -> None:
    """It shares nothing out without --partition: the node would silently train on all."""
    with pytest.raises(ValidationError, match="no --partition i/N"):
        load_settings({"partition_scheme": "dirichlet:0.1"})
    assert load_settings({"partition_scheme": "dirichlet:0.1", "partition": "0/4"}).partition
    assert load_settings({"partition_scheme": "iid"}).partition == ""


def test_a_blank_swarm_secret_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least 16 characters"):
        load_settings({"swarm_secret": " " * 20})


def test_solo_with_peers_is_refused() -> None:
    with pytest.raises(ValidationError, match="--solo trains alone"):
        load_settings({"solo": True, "peers": "a:1"})


def test_every_option_has_a_description_and_a_shown_default() -> None:
    for name, info in NodeSettings.model_fields.items():
        assert info.description, f"{name} has no description"
        assert default_text(name), name
    assert default_text("min_peers") == "1 with --peers or --mdns, 0 with --solo"
    assert default_text("mdns") == "off" and default_text("rank") == "8"


def test_sources_and_errors_name_where_a_value_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(tmp_path, "toml", {"rank": 4, "seed": 3})
    monkeypatch.setenv("DECLORA_LR", "0.01")
    resolved = resolve_settings({"seed": 5, "rank": None}, cfg)
    assert resolved.sources["seed"] == "flag"
    assert resolved.sources["lr"] == "env DECLORA_LR"
    assert resolved.sources["rank"] == "file node.toml"
    assert resolved.sources["codec"] == "default"
    assert (resolved.settings.seed, resolved.settings.rank, resolved.settings.lr) == (5, 4, 0.01)

    bad = write_config(tmp_path, "toml", {"rnak": 4, "rank": 0})
    monkeypatch.setenv("DECLORA_CODEC", "q9")
    with pytest.raises(SettingsError) as info:
        resolve_settings({"partition": "3/2"}, bad)
    message = str(info.value)
    assert "\n" not in message
    assert "node.toml: key 'rnak' is not an option (did you mean 'rank'?)" in message
    assert "node.toml: key 'rank': Input should be greater than or equal to 1" in message
    assert "DECLORA_CODEC: bad codec spec 'q9'" in message
    assert "--partition: partition 3/2: need 0 <= i < N" in message


def test_unknown_env_vars() -> None:
    env = {"DECLORA_RNAK": "1", "DECLORA_RANK": "2", "DECLORA_CRASH_AT": "x", "HOME": "/"}
    assert unknown_env_vars(env) == [
        "environment variable DECLORA_RNAK is not an option (ignored) "
        "(did you mean 'DECLORA_RANK'?)"
    ]


@pytest.mark.parametrize("kind", ["toml", "json"])
def test_unknown_key_in_file_is_named(tmp_path: Path, kind: str) -> None:
    cfg = write_config(tmp_path, kind, {"rank": 4, "rnak": 5})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted") as info:
        load_settings({}, cfg)
    assert [e["loc"] for e in info.value.errors()] == [("rnak",)]


def test_bad_value_in_file_is_named(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "toml", {"partition": "3/2"})
    with pytest.raises(ValidationError, match="partition"):
        load_settings({}, cfg)


def test_missing_or_garbage_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="not found"):
        load_settings({}, tmp_path / "nope.toml")
    garbage = {
        "bad.toml": "rank = = 4\n",
        "bad.json": "{rank: 4",
        "list.json": "[1, 2]",
        "scalar.toml.json": "42",
        "node.ini": "[node]\nrank=4\n",
    }
    for name, text in garbage.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ConfigFileError, match=name.replace(".", r"\.")):
            load_settings({}, path)
    # a failed load leaves no file options behind for the next call
    assert load_settings({}).rank == 8


def test_read_config_file_normalizes_keys(tmp_path: Path) -> None:
    path = write_config(tmp_path, "json", {"max-neighbors": 3, "swarm_id": "s"})
    assert read_config_file(path) == {"max_neighbors": 3, "swarm_id": "s"}


def test_explicit_advertise_and_node_id() -> None:
    s = load_settings({"listen": "0.0.0.0:9000", "advertise": "[fe80::1]:9000"})
    assert s.node_id == "node-fe80--1-9000"
    assert load_settings({"node_id": "n1"}).node_id == "n1"
    assert isinstance(s, NodeSettings)


def test_every_number_a_user_gives_is_bounded() -> None:
    """Every int or float option of start, simulate and lab has an upper bound (a huge
    value or inf is one clear error before anything starts, never an overflow later)."""
    import types

    import annotated_types

    from declora.cli.lab import LabConfig
    from declora.node.simulator import SimConfig

    unbounded = []
    for model in (NodeSettings, SimConfig, LabConfig):
        for name, info in model.model_fields.items():
            ann = info.annotation
            kinds = ann.__args__ if isinstance(ann, types.UnionType) else (ann,)
            if not {int, float} & set(kinds):
                continue
            if not any(
                isinstance(m, annotated_types.Le | annotated_types.Lt) for m in info.metadata
            ):
                unbounded.append(f"{model.__name__}.{name}")
    assert unbounded == []
    for option, value in (("round_deadline", "inf"), ("seed", str(2**40)), ("threads", "10000")):
        with pytest.raises(SettingsError, match=f"--{option.replace('_', '-')}"):
            resolve_settings({option: value}, None)


SECRET_LINE = "SUPERSECRET0123456789abcdef"


@pytest.mark.parametrize(
    "name, text, where",
    [
        # an unterminated quote on the secret's line: yaml quotes the line in its message
        ("bad.yaml", f'swarm_secret: "{SECRET_LINE}\nmodel: tiny-bert\n', "line 1, column 15"),
        ("alias.yaml", f"swarm_secret: *{SECRET_LINE}\n", "line 1, column 15"),
        ("bad.json", f'{{"swarm_secret": "{SECRET_LINE}\n", "rank": 1}}', "line 1, column 46"),
        ("bad.toml", f"swarm_secret = {SECRET_LINE}\n", "line 1, column 16"),
    ],
)
def test_a_config_syntax_error_names_the_place_never_the_text(
    tmp_path: Path, name: str, text: str, where: str
) -> None:
    from typer.testing import CliRunner

    from declora.cli.app import app

    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigFileError) as caught:
        read_config_file(path)
    assert str(caught.value.message).startswith(f"{path}: not valid ")
    assert where in caught.value.message and caught.value.hint
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no chain
    for command in ("config", "start"):
        res = CliRunner().invoke(app, [command, "--config", str(path)])
        assert res.exit_code == 2, res.output
        assert SECRET_LINE[:8] not in res.output, res.output
        assert f"error: {path}: not valid" in res.stderr and "\nhint: " in res.stderr
        assert "Traceback" not in res.output


def test_a_secret_is_its_text_less_surrounding_whitespace(tmp_path: Path) -> None:
    """ "S\\n" (a file's newline, a YAML block scalar) and "S" are one secret: the same
    key signs and verifies, wherever each was given."""
    from declora.node.security import SwarmAuth
    from declora.proto import pb

    secret = "0123456789abcdef0123456789abcdef"
    cfg = tmp_path / "node.yaml"
    cfg.write_text(f"swarm_secret: |\n  {secret}\n")
    a = load_settings({}, cfg).swarm_secret
    b = NodeSettings(swarm_secret=f" {secret}\t\r\n").swarm_secret
    assert a is not None and b is not None
    assert a.get_secret_value() == b.get_secret_value() == secret
    hello = SwarmAuth(f"{secret}\n".encode()).sign(pb.Hello(node_id="a"))  # status's way
    SwarmAuth(b.get_secret_value().encode()).verify(hello)
    with pytest.raises(ValidationError, match="at least 16 characters"):
        NodeSettings(swarm_secret=" " * 10 + "0123456789abcde" + "\n")


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_a_config_file_holding_the_secret_open_to_others_is_warned_about(
    tmp_path: Path,
) -> None:
    cfg = write_config(tmp_path, "toml", {"swarm_secret": "0123456789abcdef0123"})
    cfg.chmod(0o644)
    (line,) = resolve_settings({}, cfg).warnings
    assert line == (
        f"config file (holding swarm_secret) {cfg}: permissions 0644 are too open (anyone "
        f"on this machine may read what should be private): run `chmod 600 {cfg}`"
    )
    cfg.chmod(0o600)
    assert resolve_settings({}, cfg).warnings == []
    (tmp_path / "x").mkdir()
    other = write_config(tmp_path / "x", "toml", {"rank": 4})
    other.chmod(0o644)
    assert resolve_settings({}, other).warnings == []  # no secret in it: nothing to hide
