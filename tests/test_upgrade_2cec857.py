"""A rolling upgrade from the last release (commit 2cec857, which says 0.1.0) to this
one: real `declora-node start` processes of both on 127.0.0.1 (tiny-bert) mix in one
swarm, plain, with a swarm secret and under mTLS with --tls-crl; each release's CLI
reads the other's node; an old node's checkpoint folder resumes under this release.

The old release runs from `git archive 2cec857` in this venv: a folder on PYTHONPATH
holds `declora/{node,cli,proto}` of that tree and a `declora-0.1.0.dist-info`, so it
reports 0.1.0 as its release did. Skipped where git or the commit is missing (a
shallow clone)."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from daemon_helpers import CLI, Cluster, Node, live_ids
from test_revocation_daemons import revoke
from test_security import START, log_has, mint, node_tls

from declora.node import __version__
from declora.node.security import TlsFiles

OLD = "2cec857"
ROOT = Path(__file__).resolve().parent.parent
RUN = ["--rounds", "0", "--local-steps", "1", "--eval-every", "0", "--round-deadline", "30"]
SECRET = "upgrade-test-secret-0123456789"

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def old_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment that runs release 2cec857's code (PYTHONPATH), built once."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    known = subprocess.run(
        [git, "-C", str(ROOT), "cat-file", "-e", f"{OLD}^{{commit}}"], capture_output=True
    )
    if known.returncode != 0:
        pytest.skip(f"commit {OLD} is not in this clone (a shallow one?)")
    tree, path = tmp_path_factory.mktemp("old-tree"), tmp_path_factory.mktemp("old-path")
    archive = subprocess.run(
        [git, "-C", str(ROOT), "archive", OLD, "node", "cli", "proto"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    (path / "declora").mkdir()
    for part in ("node", "cli", "proto"):
        (path / "declora" / part).symlink_to(tree / part)
    info = path / "declora-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: declora\nVersion: 0.1.0\n")
    return {"PYTHONPATH": str(path)}


def cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """One CLI command of this release, or of the old one with `env` = `old_env`."""
    full = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=full, timeout=120, cwd=ROOT.parent
    )


def mixing(cluster: Cluster, nodes: list[Node], rounds: int) -> None:
    """Wait until every node is past `rounds` and received bytes from each neighbour."""

    def done(node: Node) -> bool:
        reply = node.status()
        return (
            reply is not None
            and reply.round >= rounds
            and len(reply.neighbors) == 2
            and all(n.live and n.bytes_received > 0 for n in reply.neighbors)
        )

    cluster.wait_until(
        f"every node mixing past round {rounds}",
        lambda: all(done(n) for n in nodes),
        START + 60 * rounds,
        running=nodes,
    )


def releases(node: Node) -> dict[str, str]:
    reply = node.status()
    assert reply is not None
    return {n.node_id: n.package_version for n in reply.neighbors}


def test_a_ring_of_one_new_and_two_old_nodes_mixes_and_each_cli_reads_the_other(
    cluster: Cluster, old_env: dict[str, str]
) -> None:
    """Then old n1 stops and resumes its checkpoint folder under this release."""
    n0, n1, n2 = cluster.static(3, [(0, 1), (1, 2), (2, 0)], [*RUN, "--checkpoint-every", "1"])
    n0.start()
    n1.start(env=old_env)
    n2.start(env=old_env)
    mixing(cluster, [n0, n1, n2], 3)
    assert releases(n0) == {"n1": "0.1.0", "n2": "0.1.0"}
    assert n1.status().package_version == "0.1.0"  # type: ignore[union-attr]

    new_on_old = cli(["status", "--target", n1.address])
    print("\n$ status --target <old n1>  (new CLI)\n" + new_on_old.stdout)
    assert new_on_old.returncode == 0, new_on_old.stderr
    assert "declora 0.1.0" in new_on_old.stdout and "release" in new_on_old.stdout
    old_on_new = cli(["status", "--target", n0.address], old_env)
    print("$ status --target <new n0>  (old CLI)\n" + old_on_new.stdout)
    assert old_on_new.returncode == 0, old_on_new.stderr
    assert f"declora {__version__}" in old_on_new.stdout
    for target, env in ((n1, None), (n0, old_env)):
        seen = cli(["inspect", "--target", target.address], env)
        print(f"$ inspect --target {target.node_id}\n" + seen.stdout)
        assert seen.returncode == 0, seen.stderr
        assert {"n0", "n1", "n2"} - {target.node_id} <= set(re.findall(r"\bn\d\b", seen.stdout))

    round_before = n1.status().round  # type: ignore[union-attr]
    n1.signal()
    assert cluster.wait_exit([n1], 120) == [0], n1.tail()
    n1.start(["--resume"])  # this release, the old release's folder
    cluster.wait_until(
        "n1 resumed under this release and mixing again",
        lambda: (
            (r := n1.status()) is not None
            and r.package_version == __version__
            and r.round > round_before
            and live_ids(r) == {"n0", "n2"}
        ),
        START,
        running=[n0, n1, n2],
    )
    resumed = re.search(r".*resum.*", n1.log(), re.IGNORECASE)
    assert resumed, n1.tail()
    print(f"n1 under {__version__}: {resumed.group(0)}")
    assert releases(n0) == {"n1": __version__, "n2": "0.1.0"}
    mixing(cluster, [n0, n1, n2], n1.status().round + 2)  # type: ignore[union-attr]


def test_a_swarm_secret_signs_across_releases(cluster: Cluster, old_env: dict[str, str]) -> None:
    """Two new nodes and an old one, every message signed: each verifies the others'
    Hellos (the new ones carry fields the old does not know) and nothing is refused;
    each CLI's signed Status call is answered by the other release."""
    secret = {"DECLORA_SWARM_SECRET": SECRET}
    n0, n1, n2 = cluster.static(3, [(0, 1), (1, 2), (2, 0)], RUN)
    n0.start(env=secret)
    n1.start(env=secret)
    n2.start(env={**old_env, **secret})
    mixing(cluster, [n0, n1, n2], 4)
    for node in (n0, n1, n2):
        reply = node.status()
        assert reply is not None and not reply.rejected, (node.node_id, dict(reply.rejected))
        assert not log_has(node, r"refused a message"), node.tail()
    for target, env in ((n2, secret), (n0, {**old_env, **secret})):
        seen = cli(["status", "--target", target.address], env)
        assert seen.returncode == 0, seen.stderr


def test_mtls_with_revocation_lists_mixes_across_releases(
    cluster: Cluster, old_env: dict[str, str], tmp_path: Path
) -> None:
    """Every node with --tls-crl: the new nodes ask the old one for its list (it does
    not know the call) and go on mixing with it; a newer list spreads between the new
    ones around it; a list that revokes the old node makes the new ones drop it."""
    pki = tmp_path / "pki"
    mint(pki, "n0,n1,n2")
    revoke(pki, "--serial", "0x1234")  # CRL number 1: revokes none of them
    n0, n1, n2 = cluster.static(3, [(0, 1), (1, 2), (2, 0)], RUN)
    lists = []
    for node, env in ((n0, None), (n1, None), (n2, old_env)):
        own = pki / f"{node.node_id}-crl.pem"
        shutil.copy(pki / "crl.pem", own)
        lists.append(own)
        node.start([*node_tls(pki, node.node_id), "--tls-crl", str(own)], env=env)
        node.tls = TlsFiles.load(pki / "cli.pem", pki / "cli-key.pem", pki / "ca.pem")
    mixing(cluster, [n0, n1, n2], 3)

    revoke(pki, "--serial", "0x5678", "--crl", str(lists[0]))  # CRL number 2, in n0's only
    cluster.wait_until(
        "n1 taking n0's newer list",
        functools.partial(log_has, n1, r"took the newer revocation list of neighbour n0"),
        120,
        running=[n0, n1, n2],
    )
    mixing(cluster, [n0, n1, n2], n2.status().round + 2)  # type: ignore[union-attr]
    assert not re.search(r"WARNING|ERROR", n2.log()), n2.tail()
    tls = [*node_tls(pki, "cli")]
    for target, env in ((n2, None), (n0, old_env)):
        seen = cli(["status", "--target", target.address, *tls], env)
        assert seen.returncode == 0, seen.stderr

    revoke(pki, "--cert", str(pki / "n2.pem"), "--crl", str(lists[0]))  # number 3
    for node in (n0, n1):  # n1 by the second list it takes from n0 within seconds
        cluster.wait_until(
            f"{node.node_id} dropping the revoked old node",
            lambda node=node: "n2" not in live_ids(node.status()),  # type: ignore[misc]
            120,
            running=[n0, n1],
        )
    cluster.wait_until(  # the old node is told why
        "n2 refused as revoked",
        functools.partial(log_has, n2, r"PERMISSION_DENIED .*\(n2\) is revoked"),
        60,
    )
