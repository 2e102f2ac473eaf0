"""Paths in a node's options as users write them where no shell reads them (a config
file's keys, DECLORA_* variables from systemd or Docker), and the refusal of a config
file's relative path meant for the file's own folder (`config_file.misplaced_path`):

- `~` is the home folder (`option_values.home_path`), for `start` and for `status`
  reading the node's own files alike: `checkpoint_dir = "~/state"` made a folder named
  `~` in the current folder, and a fresh run there;
- the refusal's hint names the folder to start in (the config file's), not the
  path's parent; offers a new run here for `checkpoint_dir`; `labels` are read as a
  path only as "@FILE".
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_security import mint

from declora.cli.client import own_secret
from declora.cli.health_check import CheckConfigError, node_tls
from declora.node.config_file import ConfigFileError
from declora.node.data_labels import read_label_file
from declora.node.option_values import OptionValues
from declora.node.settings import SettingsError, resolve_settings


def test_a_home_path_in_the_config_file_is_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    config = tmp_path / "node.toml"
    config.write_text('checkpoint_dir = "~/state"\nsolo = true\n')
    settings = resolve_settings({}, config).settings  # old: Path("~/state"), under cwd
    assert settings.checkpoint_dir == home / "state"
    monkeypatch.setenv("DECLORA_CHECKPOINT_DIR", "~/other")  # a systemd Environment=
    assert resolve_settings({}, config).settings.checkpoint_dir == home / "other"
    monkeypatch.setenv("DECLORA_CHECKPOINT_DIR", "~no-such-user-r5/state")
    with pytest.raises(SettingsError) as err:
        resolve_settings({}, config)
    assert "~no-such-user-r5" in err.value.message
    assert list(cwd.iterdir()) == []


def test_status_reads_the_nodes_home_paths_as_start_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    mint(home / "pki", "n0")
    (home / "secret").write_text("s" * 32 + "\n")
    monkeypatch.setenv("HOME", str(home))
    environ = {
        "DECLORA_TLS_CERT": "~/pki/n0.pem",
        "DECLORA_TLS_KEY": "~/pki/n0-key.pem",
        "DECLORA_TLS_CA": "~/pki/ca.pem",
        "DECLORA_SWARM_SECRET_FILE": "~/secret",
    }
    values = OptionValues(environ=environ)
    assert node_tls(values) is not None  # old: "no such file" for ~/pki/n0.pem
    assert own_secret(values) == "s" * 32
    bad = OptionValues(environ={**environ, "DECLORA_TLS_CA": "~no-such-user-r5/ca.pem"})
    with pytest.raises(CheckConfigError) as err:
        node_tls(bad)
    assert "DECLORA_TLS_CA" in err.value.message


def test_the_refusal_names_the_config_files_folder_and_a_new_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc, cwd = tmp_path / "etc", tmp_path / "cwd"
    (etc / "runs" / "state").mkdir(parents=True)
    cwd.mkdir()
    config = etc / "node.toml"
    config.write_text('checkpoint_dir = "runs/state"\nsolo = true\n')
    monkeypatch.chdir(cwd)
    with pytest.raises(ConfigFileError) as err:
        resolve_settings({}, config)
    hint = err.value.hint or ""
    assert f"or start in {etc} (systemd" in hint, hint  # old: {etc}/runs
    assert "a new run here: --checkpoint-dir runs/state" in hint
    given = resolve_settings({"checkpoint_dir": Path("runs/state")}, config)  # as offered
    assert given.settings.checkpoint_dir == Path("runs/state")


def test_labels_are_a_path_only_as_at_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    etc, cwd = tmp_path / "etc", tmp_path / "cwd"
    etc.mkdir()
    cwd.mkdir()
    (etc / "neg,pos").write_text("")  # a file the label list happens to name
    config = etc / "node.toml"
    config.write_text('labels = "neg,pos"\nsolo = true\n')
    monkeypatch.chdir(cwd)
    assert resolve_settings({}, config).settings.labels == ("neg", "pos")  # old: refused
    (etc / "labels.txt").write_text("neg\npos\n")
    config.write_text('labels = "@labels.txt"\nsolo = true\n')
    with pytest.raises(ConfigFileError):  # guard: "@FILE" is still checked
        resolve_settings({}, config)


def test_a_label_file_in_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--labels @~/labels.txt`: no shell reads `~` after `@` (old: "label file not
    found: ~/labels.txt")."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "labels.txt").write_text("neg\npos\n")
    config = tmp_path / "node.toml"
    config.write_text('labels = "@~/labels.txt"\nsolo = true\n')
    assert resolve_settings({}, config).settings.labels == ("neg", "pos")
    assert read_label_file("~/labels.txt") == ("neg", "pos")


def test_a_data_file_in_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`data = "~/train.jsonl"` in a config file (or DECLORA_DATA): no shell reads it; it
    was looked for in a folder named `~` here."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "node.toml"
    config.write_text('data = "~/train.jsonl"\nsolo = true\n')
    assert resolve_settings({}, config).settings.data == str(tmp_path / "train.jsonl")
    assert resolve_settings({"data": "ag_news"}, config).settings.data == "ag_news"  # guard


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("node.yaml", "checkpoint_dir: state\n", 'checkpoint_dir: "{}"'),
        ("node.json", '{"checkpoint_dir": "state"}', '"checkpoint_dir": "{}"'),
        ("node.toml", 'checkpoint_dir = "state"\n', 'checkpoint_dir = "{}"'),
    ],
)
def test_the_refusal_writes_the_line_in_the_files_language(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str, line: str
) -> None:
    """The line to write is YAML or JSON for such a file (it was always TOML's)."""
    etc, cwd = tmp_path / "etc", tmp_path / "cwd"
    (etc / "state").mkdir(parents=True)
    cwd.mkdir()
    (etc / name).write_text(text)
    monkeypatch.chdir(cwd)
    with pytest.raises(ConfigFileError) as err:
        resolve_settings({}, etc / name)
    assert f"give {line.format(etc / 'state')}, or start in" in (err.value.hint or "")
