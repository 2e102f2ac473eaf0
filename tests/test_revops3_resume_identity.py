"""A resume that keeps the run's recorded node id (revops3's review of opsleft's
deba874): a damaged card is ignored, not a traceback; the default folder stays the
one resumed when the id changes; under mTLS the refusal's hint names the certificate,
since --node-id must be the certificate's name there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from declora.node.settings import SettingsError, load_settings, resolve_settings


def fake_run(state: Path, card: str) -> None:
    """A run folder whose resume point's adapter card is `card` (what settings read)."""
    point = state / "ckpt-00000003"
    (point / "adapter").mkdir(parents=True)
    (point / "state.pt").write_bytes(b"")
    (point / "adapter" / "declora.json").write_text(card)
    (state / "LATEST").write_text(point.name)


def test_a_deeply_nested_card_leaves_the_id_alone(tmp_path: Path) -> None:
    """Before: json's RecursionError escaped the settings (a traceback at every start)."""
    state = tmp_path / "state"
    fake_run(state, "[" * 200_000)
    settings = load_settings({"solo": True, "checkpoint_dir": str(state), "resume": True})
    assert settings.node_id == "node-127.0.0.1-7070"


def test_the_default_folder_stays_the_one_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """declora-state/<id> holding the run of another id (a folder copied or renamed):
    the id is the run's, the folder still the one that holds it. Before, the folder
    followed the new id to declora-state/lab-a, which holds nothing."""
    monkeypatch.chdir(tmp_path)
    folder = Path("declora-state") / "node-127.0.0.1-7070"
    fake_run(folder, json.dumps({"node_id": "lab-a"}))
    settings = load_settings({"solo": True, "resume": "auto"})
    assert (settings.node_id, settings.state_dir) == ("lab-a", folder)
    assert settings.resume is True


def test_under_mtls_the_refusal_names_the_certificate(tmp_path: Path) -> None:
    """Before, the hint said `give --node-id lab-a`, which mTLS refuses in turn (the
    id must be the certificate's name)."""
    from declora.cli.certs import mint

    state = tmp_path / "state"
    fake_run(state, json.dumps({"node_id": "lab-a"}))
    pki = tmp_path / "pki"
    mint(pki, ["lab-b"], ["127.0.0.1"], 30, False)
    files = {"tls_cert": "lab-b.pem", "tls_key": "lab-b-key.pem", "tls_ca": "ca.pem"}
    options = {k: str(pki / v) for k, v in files.items()}
    with pytest.raises(SettingsError) as refused:
        resolve_settings({"solo": True, "checkpoint_dir": str(state), "resume": True, **options})
    said = str(refused.value)
    assert "present the certificate of lab-a" in said and "--node-id lab-a" not in said, said
    assert (state / "LATEST").read_text() == "ckpt-00000003"
