"""Node-level combination errors name every option to drop, as the user gave it; the
defaults table's test is blind to `declora_*` variables of any case."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_defaults_table import _no_environment

from declora.node.settings import SettingsError, resolve_settings


def test_solo_with_peers_and_mdns_names_both(tmp_path: Path) -> None:
    config = tmp_path / "n.toml"
    config.write_text("solo = true\nmdns = true\n")
    with pytest.raises(SettingsError) as err:
        resolve_settings({"peers": ["127.0.0.1:5000"]}, config)
    # before: "drop --peers, or drop ..." and, once done, a second error for mdns
    assert "drop --peers and n.toml key 'mdns', or drop n.toml key 'solo'" in str(err.value)


def test_solo_with_mdns_alone_names_mdns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DECLORA_MDNS", "on")
    with pytest.raises(SettingsError) as err:
        resolve_settings({"solo": True}, None)
    assert "--solo trains alone: drop DECLORA_MDNS, or drop --solo" in str(err.value)


def test_the_defaults_table_sees_no_lowercase_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("declora_rounds", "7")  # the settings read it (any case)
    with _no_environment():
        assert resolve_settings({}, None).settings.rounds != 7
    # before: the table's `start` column read rounds 7 and the test failed


@pytest.mark.parametrize(("value", "shown"), [("5", "5"), ("[1]", "[1]"), ("2.5", "2.5")])
def test_resume_of_another_type_in_a_file_is_one_error(
    tmp_path: Path, value: str, shown: str
) -> None:
    config = tmp_path / "n.toml"
    config.write_text(f"solo = true\nresume = {value}\n")
    with pytest.raises(SettingsError) as err:
        resolve_settings({}, config)
    # before: pydantic's two ("Input should be a valid boolean ...; Input should be 'auto'")
    assert str(err.value) == (
        "bad configuration: n.toml: key 'resume': must be true, false or auto (or yes/no, "
        f"on/off, 1/0, t/f, y/n; any case), got {shown}"
    )


@pytest.mark.parametrize(
    ("value", "resume"), [("true", True), ("1", True), ("0", False), ('"Off"', False)]
)
def test_resume_yes_no_values_in_a_file_still_work(
    tmp_path: Path, value: str, resume: bool
) -> None:
    config = tmp_path / "n.toml"
    config.write_text(f"solo = true\nresume = {value}\ncheckpoint_dir = '{tmp_path / 's'}'\n")
    assert resolve_settings({}, config).settings.resume is resume
