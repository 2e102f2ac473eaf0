"""A relative path in a config file is read against the current folder, as a flag's is.
A file written to be used from its own folder (`cd /etc/declora && declora-node start
--config node.toml`) and then started from elsewhere (a systemd unit without
WorkingDirectory=, whose folder is /) found no run at `state` there and, under
`resume = "auto"`, began a fresh one beside the run it was meant to resume. Now a
relative path that names nothing here but something beside the config file is
refused, naming both and what to write; nothing is written."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from daemon_helpers import CLI, HOST, free_ports, train_args

from declora.node.config_file import ConfigFileError
from declora.node.settings import resolve_settings


def _site(tmp_path: Path) -> tuple[Path, Path]:
    """/etc-like folder holding node.toml and the run it wrote to `state`; a cwd beside."""
    etc, cwd = tmp_path / "etc", tmp_path / "cwd"
    (etc / "state" / "ckpt-00000003").mkdir(parents=True)
    (etc / "state" / "LATEST").write_text("ckpt-00000003\n")
    (etc / "node.toml").write_text('checkpoint_dir = "state"\nresume = "auto"\nsolo = true\n')
    cwd.mkdir()
    return etc / "node.toml", cwd


def test_a_run_beside_the_config_file_is_not_begun_again_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, cwd = _site(tmp_path)
    monkeypatch.chdir(cwd)
    with pytest.raises(ConfigFileError) as err:  # the old code: a fresh run in cwd/state
        resolve_settings({}, config)
    assert "key 'checkpoint_dir': state is not in the current folder" in err.value.message
    assert str(tmp_path / "etc" / "state") in err.value.message
    assert f'checkpoint_dir = "{tmp_path / "etc" / "state"}"' in (err.value.hint or "")
    assert not (cwd / "state").exists()


def test_a_data_file_beside_the_config_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, cwd = _site(tmp_path)
    (config.parent / "my.jsonl").write_text('{"text": "a", "label": "x"}\n')
    config.write_text('data = "my.jsonl"\nsolo = true\n')
    monkeypatch.chdir(cwd)
    with pytest.raises(ConfigFileError) as err:
        resolve_settings({}, config)
    assert "key 'data': my.jsonl is not in the current folder" in err.value.message


def test_paths_found_here_or_given_otherwise_are_read_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards: a path that names something here is read here (both exist: the meaning
    is unchanged); a flag's or an absolute path is not checked; a name is no path."""
    config, cwd = _site(tmp_path)
    monkeypatch.chdir(cwd)
    (cwd / "state").mkdir()
    assert resolve_settings({}, config).settings.checkpoint_dir == Path("state")
    (cwd / "state").rmdir()
    assert resolve_settings({"checkpoint_dir": Path("here")}, config).settings.checkpoint_dir
    config.write_text(f'checkpoint_dir = "{config.parent / "state"}"\nsolo = true\n')
    resolve_settings({}, config)
    config.write_text('model = "tiny-bert"\nsolo = true\n')
    resolve_settings({}, config)


@pytest.mark.slow  # a real `declora-node start` (its CLI's start-up): a few seconds
def test_start_from_another_folder_refuses_and_writes_nothing(
    tmp_path: Path, synthetic_jsonl: Path
) -> None:
    """The old code began a fresh run of the tiny model: `--rounds 1` ends it in seconds."""
    config, cwd = _site(tmp_path)
    [port] = free_ports(1)
    run = [*train_args(synthetic_jsonl), "--rounds", "1", "--eval-every", "0"]
    res = subprocess.run(
        [*CLI, "start", "--config", str(config), *run, "--listen", f"{HOST}:{port}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "not in the current folder" in lines[0]
    assert lines[1].startswith("hint: ") and "WorkingDirectory=" in lines[1]
    assert "Traceback" not in res.stderr
    assert list(cwd.iterdir()) == []
