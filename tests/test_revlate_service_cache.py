"""Under deploy/declora-node.service everything but the state folder, the cache folder
(`CacheDirectory`, /var/cache/<name>) and a private /tmp is read-only. Both caches the
node writes, declora's (SmolLM2's conversion) and huggingface_hub's (a hub model's
download, `HF_HOME`, by default under XDG_CACHE_HOME), must lie in the cache folder:
with XDG_CACHE_HOME=/var/cache a hub model was to be downloaded into the read-only
/var/cache/huggingface."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_deploy_service import directives

SHOW = (
    "from declora.node.embedded_llm import cache_root; import huggingface_hub.constants as c; "
    "print(cache_root()); print(c.HF_HOME)"
)


def test_every_cache_lies_in_the_units_cache_folder() -> None:
    d = directives()
    env = {k: v for k, _, v in (e.partition("=") for e in d["Environment"])}
    writable = Path("/var/cache") / d["CacheDirectory"][0]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "XDG_"))}
    out = subprocess.run(
        [sys.executable, "-c", SHOW],
        env={**clean, **env, "HOME": "/nonexistent"},  # ProtectHome=yes
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    assert len(out) == 2, out
    for cache in out:
        assert Path(cache).is_relative_to(writable), (cache, writable)
