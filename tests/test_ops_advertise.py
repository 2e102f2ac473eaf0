"""A node that advertises 0.0.0.0 or :: (the image's --listen, no --advertise) is
warned at start and by `config`, naming the option as given and what to set; a real
address, a DNS name, or --solo get no such warning."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from declora.cli.app import app
from declora.node.settings import resolve_settings

PEERS = "10.0.0.2:7070"


def _warned(options: dict[str, object]) -> list[str]:
    found = resolve_settings({"peers": PEERS, **options}).warnings
    return [w for w in found if "peers cannot dial" in w]


def test_an_unspecified_advertised_address_is_warned_about(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (line,) = _warned({"listen": "0.0.0.0:7070"})
    assert line.startswith("--advertise (unset: --listen) is 0.0.0.0:7070, which peers cannot")
    assert "--node-id node-0.0.0.0-7070, taken from it, is the same on every node" in line
    assert line.endswith("set --advertise HOST:7070 (this machine's address as peers reach it)")
    (line,) = _warned({"listen": "[::]:7071", "node_id": "a"})
    assert line.startswith("--advertise (unset: --listen) is [::]:7071") and "--node-id" not in line
    monkeypatch.setenv("DECLORA_LISTEN", "0.0.0.0:7070")
    (line,) = _warned({})
    assert line.startswith("--advertise (unset: DECLORA_LISTEN) is 0.0.0.0:7070")


@pytest.mark.parametrize(
    "options",
    [
        {"listen": "0.0.0.0:7070", "advertise": "10.0.0.1:7070"},
        {"listen": "0.0.0.0:7070", "advertise": "node0:7070"},
        {"listen": "127.0.0.1:7070"},
    ],
)
def test_a_dialable_address_is_not(options: dict[str, object]) -> None:
    assert _warned(options) == []


def test_solo_is_not_and_config_shows_the_warning() -> None:
    assert resolve_settings({"listen": "0.0.0.0:7070", "solo": True}).warnings == []
    res = CliRunner().invoke(app, ["config", "--listen", "0.0.0.0:7070", "--peers", PEERS])
    assert res.exit_code == 0, res.output
    assert "warning: --advertise (unset: --listen) is 0.0.0.0:7070" in res.stderr
