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
