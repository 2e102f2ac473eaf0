"""The swarm secret from a file (`--swarm-secret-file`, `DECLORA_SWARM_SECRET_FILE`,
config key `swarm_secret_file`): as Docker and Kubernetes mount secrets. One name
everywhere, not with the inline secret, the inline secret's whitespace rules, warned
about when open to others, its text never shown."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from declora.cli.app import app
from declora.node.settings import SettingsError, resolve_settings

SECRET = "0123456789abcdef0123456789abcdef"


def _secret_file(tmp_path: Path, text: str = SECRET + "\n", mode: int = 0o600) -> Path:
    path = tmp_path / "swarm.secret"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_file_gives_the_secret_by_flag_env_and_config_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _secret_file(tmp_path, f"  {SECRET}\r\n")  # surrounding whitespace: stripped
    inline = resolve_settings({"swarm_secret": SECRET}).settings.swarm_secret
    by_flag = resolve_settings({"swarm_secret_file": path})
    assert by_flag.settings.swarm_secret == inline  # signs as the inline secret does
    assert by_flag.warnings == []  # mode 0600
    config = tmp_path / "n.toml"
    config.write_text(f'swarm_secret_file = "{path}"\n')
    by_key = resolve_settings({}, config).settings
    monkeypatch.setenv("DECLORA_SWARM_SECRET_FILE", str(path))
    by_env = resolve_settings({})
    assert by_key.swarm_secret == by_env.settings.swarm_secret == inline
    assert by_env.sources["swarm_secret_file"] == "env DECLORA_SWARM_SECRET_FILE"
    assert by_env.sources["swarm_secret"] == "swarm-secret-file"


def test_not_with_the_inline_secret_and_named_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _secret_file(tmp_path)
    with pytest.raises(SettingsError) as flags:
        resolve_settings({"swarm_secret": SECRET, "swarm_secret_file": path})
    assert "--swarm-secret and --swarm-secret-file both give the swarm secret" in str(flags.value)
    monkeypatch.setenv("DECLORA_SWARM_SECRET", SECRET)
    with pytest.raises(SettingsError) as mixed:
        resolve_settings({"swarm_secret_file": path})
    assert "DECLORA_SWARM_SECRET and --swarm-secret-file" in str(mixed.value)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("tooshort-secret\n", "at least 16 characters"),  # 15 characters less the newline
        (b"\xff\xfe0123456789abcdef0123", "not UTF-8"),
        ("x" * (64 * 1024 + 1), "larger than 64 KiB"),
    ],
)
def test_a_bad_file_is_one_line_that_never_quotes_it(
    tmp_path: Path, text: str | bytes, said: str
) -> None:
    path = tmp_path / "swarm.secret"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    res = CliRunner().invoke(app, ["config", "--swarm-secret-file", str(path)])
    assert res.exit_code == 2, res.output
    error = res.stderr.splitlines()[0]
    assert error.startswith(f"error: bad configuration: --swarm-secret-file: {path}: "), error
    assert said in error
    assert "tooshort" not in res.output and "0123456789" not in res.output


def test_a_missing_file_and_a_folder_are_refused(tmp_path: Path) -> None:
    for path in (tmp_path / "absent", tmp_path):
        with pytest.raises(
            SettingsError, match=r"--swarm-secret-file: .*(cannot read|not a regular file)"
        ):
            resolve_settings({"swarm_secret_file": path})


def test_an_open_file_is_warned_about_and_config_never_shows_the_text(tmp_path: Path) -> None:
    path = _secret_file(tmp_path, mode=0o644)
    res = CliRunner().invoke(app, ["config", "--swarm-secret-file", str(path), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert f"warning: --swarm-secret-file {path}: permissions 0644 are too open" in res.stderr
    assert SECRET not in res.output
    rows = json.loads(res.stdout)
    assert rows["swarm_secret"] == {"value": "**********", "source": "swarm-secret-file"}
    assert rows["swarm_secret_file"]["source"] == "flag"


def test_node_settings_is_no_class_over_300_lines() -> None:
    """The rule every class keeps; NodeSettings was 301 lines."""
    root = Path(__file__).resolve().parent.parent / "node"
    for name in ("settings.py", "settings_fields.py"):
        tree = ast.parse((root / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno is not None
                assert node.end_lineno - node.lineno < 300, (name, node.name)
