"""A resumed node keeps the node id its run recorded (opsleft). Before, a node started
without --node-id took its id from --listen's port, so `--resume` on another port
continued the run under a new id (its neighbours' copies of its adapter and its round
under the old one); a --node-id that differs from the recorded one is refused (exit 2,
nothing written), as is a certificate naming another node."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from daemon_helpers import CLI, free_ports, train_args

from declora.node.settings import load_settings

RUN = 300  # seconds for a tiny solo run of a few rounds, model loading included


def start(
    data: Path, state: Path, port: int, rounds: int, *extra: str
) -> subprocess.CompletedProcess[str]:
    args = ["--solo", "--rounds", str(rounds), "--eval-every", "0", "--checkpoint-every", "1"]
    command = [*CLI, "start", *train_args(data), *args, "--listen", f"127.0.0.1:{port}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECLORA_")}
    return subprocess.run(
        [*command, "--checkpoint-dir", str(state), *extra],
        capture_output=True,
        text=True,
        timeout=RUN,
        cwd=state.parent,
        env={**env, "OMP_NUM_THREADS": "1"},
    )


def recorded(state: Path) -> str:
    return json.loads((state / "adapter" / "declora.json").read_text())["node_id"]


@pytest.mark.integration
@pytest.mark.slow  # three real solo runs (~40 s on a loaded machine): make test-slow
def test_a_resume_on_another_port_keeps_the_node_id(synthetic_jsonl: Path, tmp_path: Path) -> None:
    first, second = free_ports(2)
    state = tmp_path / "state"
    ran = start(synthetic_jsonl, state, first, 2)
    assert ran.returncode == 0, ran.stderr
    original = f"node-127.0.0.1-{first}"
    assert recorded(state) == original

    renamed = start(synthetic_jsonl, state, second, 4, "--resume", "--node-id", "other")
    assert renamed.returncode == 2, renamed.stderr
    line = renamed.stderr.splitlines()[0]
    assert line.startswith("error: ") and "Traceback" not in renamed.stderr, renamed.stderr
    assert f"--resume: {state} is the run of node {original}, but --node-id is other" in line
    assert (state / "LATEST").read_text().strip() == "ckpt-00000002"  # nothing written

    resumed = start(synthetic_jsonl, state, second, 4, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert recorded(state) == original, resumed.stderr
    assert f"[{original} r4]" in resumed.stderr and f"127.0.0.1-{second} r" not in resumed.stderr


def fake_run(state: Path, node_id: str) -> None:
    """A run folder whose resume point records `node_id` (what `settings` reads)."""
    point = state / "ckpt-00000003"
    (point / "adapter").mkdir(parents=True)
    (point / "state.pt").write_bytes(b"")
    (point / "adapter" / "declora.json").write_text(json.dumps({"node_id": node_id}))
    (state / "LATEST").write_text(point.name)


def test_a_swarm_node_resumes_under_its_recorded_id(tmp_path: Path) -> None:
    state = tmp_path / "state"
    fake_run(state, "lab-a")
    peers = {"peers": "127.0.0.1:9", "checkpoint_dir": str(state), "listen": "127.0.0.1:7071"}
    assert load_settings({**peers, "resume": "auto"}).node_id == "lab-a"
    assert load_settings({**peers, "resume": True, "node_id": "lab-a"}).node_id == "lab-a"
    assert load_settings(peers).node_id == "node-127.0.0.1-7071"  # a fresh start: its own


def test_a_card_without_a_valid_id_leaves_the_id_alone(tmp_path: Path) -> None:
    state = tmp_path / "state"
    fake_run(state, "bad id\n")
    settings = load_settings({"solo": True, "checkpoint_dir": str(state), "resume": True})
    assert settings.node_id == "node-127.0.0.1-7070"


def test_a_certificate_naming_another_node_is_refused(tmp_path: Path) -> None:
    from declora.cli.certs import mint
    from declora.node.settings import SettingsError, resolve_settings

    state = tmp_path / "state"
    fake_run(state, "lab-a")
    pki = tmp_path / "pki"
    mint(pki, ["lab-b"], ["127.0.0.1"], 30, False)
    files = {
        f"tls_{k}": str(pki / v)
        for k, v in (("cert", "lab-b.pem"), ("key", "lab-b-key.pem"), ("ca", "ca.pem"))
    }
    with pytest.raises(
        SettingsError, match="is the run of node lab-a, but the name of --tls-cert is lab-b"
    ):
        resolve_settings({"solo": True, "checkpoint_dir": str(state), "resume": True, **files})
    assert (state / "LATEST").read_text() == "ckpt-00000003"


def test_a_resume_in_the_default_folder_names_the_runs_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --checkpoint-dir the folder is declora-state/<node id>: on another port
    (another id) there is nothing to resume; the hint names the id that has a run."""
    from declora.node.daemon.startup import UserError, check_config

    monkeypatch.chdir(tmp_path)
    fake_run(tmp_path / "declora-state" / "node-127.0.0.1-7071", "node-127.0.0.1-7071")
    settings = load_settings({"solo": True, "listen": "127.0.0.1:7072", "resume": True})
    with pytest.raises(UserError) as refused:
        check_config(settings)
    assert "nothing to resume" in refused.value.message
    assert "--node-id node-127.0.0.1-7071" in refused.value.hint, refused.value.hint
    assert not (tmp_path / "declora-state" / "node-127.0.0.1-7072").exists()


def test_config_says_the_id_came_from_the_checkpoint(tmp_path: Path) -> None:
    from declora.node.settings import resolve_settings

    state = tmp_path / "state"
    fake_run(state, "lab-a")
    resolved = resolve_settings({"solo": True, "checkpoint_dir": str(state), "resume": True})
    assert (resolved.settings.node_id, resolved.sources["node_id"]) == ("lab-a", "checkpoint")
    fresh = resolve_settings({"solo": True, "checkpoint_dir": str(tmp_path / "new")})
    assert fresh.sources["node_id"] == "default"
