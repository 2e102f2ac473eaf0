"""deploy/README.md's Kubernetes pod template: every variable it sets is a real option,
and each pod gets its own node id and advertised address. The image listens on
0.0.0.0:7070; without DECLORA_NODE_ID and DECLORA_ADVERTISE every pod was
node-0.0.0.0-7070 advertising 0.0.0.0:7070, which its neighbours cannot dial."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from declora.node.settings import NodeSettings

README = Path(__file__).resolve().parents[1] / "deploy" / "README.md"


def pod_env() -> list[dict[str, object]]:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    for block in blocks:
        for doc in yaml.safe_load_all(block):
            for c in (doc or {}).get("spec", {}).get("containers", []):
                return list(c.get("env", []))
    raise AssertionError("no pod template with containers in deploy/README.md")


def test_the_pod_template_names_real_options() -> None:
    names = [str(e["name"]) for e in pod_env()]
    options = [n.removeprefix("DECLORA_").lower() for n in names if n.startswith("DECLORA_")]
    assert options and set(options) <= set(NodeSettings.model_fields), options


def test_each_pod_has_its_own_id_and_address() -> None:
    env = {str(e["name"]): e for e in pod_env()}
    for name in ("DECLORA_NODE_ID", "DECLORA_ADVERTISE"):
        assert name in env, name
        assert "$(POD)" in str(env[name].get("value", "")), env[name]
    assert env["POD"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
