"""An installed declora (the wheel `pip install .` and the Docker image install) works.

Every other test runs on the editable install, which finds any file of the tree: a
subpackage or data file the wheel lacks, or a path reaching outside the package, shows
only here. The wheel goes into a fresh venv that reuses this venv's dependencies through
a .pth line (whose folder's own .pth files, the editable finder's among them, Python
does not read), and the commands run from there, outside the checkout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest
from conftest import make_synthetic, write_jsonl
from daemon_helpers import HOST, free_ports, train_args
from pkgcheck_wheel import ROOT, build_wheel, copy_sources

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a venv holding declora's wheel, not the editable tree."""
    tmp = tmp_path_factory.mktemp("installed")
    wheel = build_wheel(copy_sources(tmp / "src"), tmp / "wheel")
    env = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    [site] = (env / "lib").glob("python3*/site-packages")
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = env / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    # --ignore-installed: this venv's editable declora is seen through the .pth line
    # and must be neither taken as the install nor uninstalled
    done = subprocess.run(
        [*pip, "--ignore-installed", str(wheel)], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr
    where = run(env / "bin", "python", "-c", "import declora.node; print(declora.node.__file__)")
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout
    return env / "bin"


def run(bin_dir: Path, program: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`program` of the venv at `bin_dir` run with `args` from the venv's folder (not the
    checkout) and no DECLORA_* variable of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECLORA_")}
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [str(bin_dir / program), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=bin_dir.parent,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_version_and_example_config(installed: Path) -> None:
    from declora.node.version import VERSION

    version = run(installed, "declora-node", "--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"declora {VERSION}")
    example = ROOT / "deploy" / "node.example.toml"
    config = run(installed, "declora-node", "config", "--config", str(example))
    assert config.returncode == 0, config.stderr
    assert "node.example.toml" in config.stdout
    module = run(installed, "python", "-m", "declora.cli", "--version")
    assert module.returncode == 0, module.stderr


def test_a_solo_node_trains_and_saves_its_adapter(installed: Path, tmp_path: Path) -> None:
    data = write_jsonl(make_synthetic(120), tmp_path / "data.jsonl")
    folder = tmp_path / "state"
    (port,) = free_ports(1)
    start = run(
        installed,
        "declora-node",
        *["start", "--solo", "--node-id", "solo", "--listen", f"{HOST}:{port}"],
        *["--checkpoint-dir", str(folder), "--rounds", "2", "--max-eval", "8"],
        *train_args(data),
    )
    assert start.returncode == 0, start.stderr
    assert (folder / "adapter" / "adapter_model.safetensors").is_file(), start.stderr
    inspect = run(installed, "declora-node", "inspect", str(folder / "adapter"), "--format", "json")
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["round"] == 2


def test_the_service_names_only_what_the_install_makes(installed: Path) -> None:
    """The files deploy/declora-node.service's settings name under /opt/declora (the
    venv its comment installs into) exist in such a venv: it named a deploy/README.md
    there, which no install makes."""
    text = (ROOT / "deploy" / "declora-node.service").read_text(encoding="utf-8")
    settings = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    named = set(re.findall(r"/opt/declora/(\S+)", settings))
    assert "bin/declora-node" in named
    assert sorted(p for p in named if not (installed.parent / p).exists()) == []


def test_the_images_entry_point_is_an_installed_script(installed: Path) -> None:
    """deploy/Dockerfile's ENTRYPOINT runs a program pip installs (tini, then it)."""
    text = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    [entry] = re.findall(r"^ENTRYPOINT (\[.*\])\s*$", text, re.M)
    program = json.loads(entry)[-1]
    assert (installed / program).is_file(), program
