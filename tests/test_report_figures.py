"""What `status`, `inspect --target`, the lab's table and a --resume refusal report is
what is so: figures whole when written to a pipe or file, the consensus finish named
as such with a total that includes it, an exited lab node's end from its rounds.jsonl,
and a refused resume naming the option that differs."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from declora.cli.client import render_status, status_to_dict
from declora.cli.inspect import render
from declora.proto import pb

ADDRESS = "127.0.0.1:17202"


def reply(**changes: object) -> pb.StatusReply:
    """A node's Status with figures long enough to be wrapped or cut at 80 columns."""
    fields: dict[str, object] = {
        "node_id": "p1",
        "swarm_id": "default",
        "fingerprint": "ac5b3ff152b496e7",
        "package_version": "0.1.0",
        "state": "training",
        "round": 2000,
        "step": 2000,
        "loss": 1.2345,
        "listen_address": "127.0.0.1:17201",
        "codec": "fp32",
        "keyframes_sent": 1234567,
        "gradient_tracking": True,
        "weighting": "examples",
        "bytes_sent": 16593792,
        "bytes_received": 16593792,
    }
    msg = pb.StatusReply(**{**fields, **changes})  # type: ignore[arg-type]
    msg.last_eval.update({"accuracy": 0.5, "loss": 1.1, "macro_f1": 0.25})
    msg.neighbors.append(
        pb.NeighborStatus(
            node_id="p2-with-a-long-name",
            address=ADDRESS,
            live=True,
            package_version="0.1.0",  # the node's own: no release column
            weight=0.5,
            degree=1,
            bytes_sent=16593792,
            bytes_received=16593791,
            round=2000,
            missed_deadlines=3,
        )
    )
    return msg


def test_status_to_a_pipe_keeps_each_line_and_figure_whole(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: 80 columns when stdout is not a terminal, so 'keyframes' lost its number
    to the next line and the neighbour table cut the address ('127.0.…')."""
    render_status(reply())
    out = capsys.readouterr().out
    assert "keyframes 1234567" in out and "…" not in out, out
    assert max(len(line) for line in out.splitlines()[:6]) <= 80, out  # as laid out
    [row] = [line for line in out.splitlines() if line.startswith("p2-with-a-long-name")]
    assert row.split()[:3] == ["p2-with-a-long-name", ADDRESS, "yes"], out


def test_a_narrow_terminal_folds_a_figure_rather_than_cutting_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """60 columns: the neighbour's name and address fold onto 4 lines, none is cut."""
    render_status(reply(), width=60)
    out = capsys.readouterr().out
    assert "…" not in out, out
    folds = out.splitlines()[-4:]  # the neighbour's row and its folds
    assert "".join(line.split()[0] for line in folds) == "p2-with-a-long-name", out
    assert "".join(line.split()[1] for line in folds[:3]) == ADDRESS, out


def test_inspect_target_to_a_pipe_shows_every_byte_count_whole(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: '16,558…' for 16593792 and '127.0.…' for the address."""
    render({"kind": "node", **status_to_dict(reply())})
    out = capsys.readouterr().out
    assert "16,593,792" in out and "16,593,791" in out and ADDRESS in out, out
    assert "…" not in out, out


@pytest.mark.parametrize(
    ("state", "shown"),
    [
        ("training", "state training  round 30/240\n"),
        (
            "consensus",
            "state consensus  round 262 (240 planned + 22 of the consensus finish, which ends "
            "once the neighbours agree)\n",
        ),
    ],
)  # fmt: skip
def test_status_names_the_consensus_finish(
    capsys: pytest.CaptureFixture[str], state: str, shown: str
) -> None:
    render_status(reply(state=state, round=30 if state == "training" else 262, total_rounds=240))
    assert shown in capsys.readouterr().out


def test_the_consensus_finish_reads_consensus_with_a_total_that_includes_it(
    synthetic_jsonl: Path,
) -> None:
    """In the finish each gossip round's exchange set the state to 'exchanging' and
    total_rounds left the finish out: `status` said 'exchanging round 262/40'. Now the
    state is 'consensus' and the total is the planned training exchanges (`status`
    shows the finish's rounds past them apart, opsleft), while a stop during the
    finish's exchange still lets it mix."""
    from test_daemon_parts import pair

    (da, _), (a, b) = pair(synthetic_jsonl, rounds=2, consensus_rounds=5)
    assert da.rounds is not None
    end = 2 * a.settings.exchanges_per_round
    seen: list[tuple[str, int, bool]] = []

    async def exchange(r: int) -> None:
        status = await a.status()
        seen.append((status.state, status.total_rounds, a.progress.in_round))
        assert status.consensus_rounds == 5  # the most the finish may run past them

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        a.progress.round = end  # training done: the finish is next
        a.exchange.exchange = exchange  # type: ignore[method-assign]
        a.node.disagreement = lambda live: 1.0  # type: ignore[method-assign]
        await da.rounds.train_loop()  # type: ignore[union-attr]

    asyncio.run(go())
    assert seen == [("consensus", end, True)] * 5
    assert a.progress.state.value == "done"


def test_the_labs_last_table_shows_where_each_node_ended(tmp_path: Path) -> None:
    """Before: the last poll's figures (55/60, an old loss) and the exited neighbour
    still listed live; now an exited node's round, loss and accuracy are its
    rounds.jsonl's last ones, and no exited node is anyone's live neighbour."""
    from declora.cli.lab import LabNode
    from declora.cli.lab_summary import lab_table

    nodes, statuses = [], {}
    for i, code in enumerate((0, None)):
        folder = tmp_path / f"lab-{i}"
        folder.mkdir()
        rows = [
            {"round": 59, "phase": "train", "loss": 1.5, "eval": {"accuracy": 0.25}},
            {"round": 60, "phase": "train", "loss": 1.25, "eval": None, "bytes_sent": 2048},
            {"round": 60, "phase": "final", "loss": 1.125, "eval": {"accuracy": 0.75}},
        ]
        (folder / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        script = "pass" if code == 0 else "import time; time.sleep(60)"
        proc = subprocess.Popen([sys.executable, "-c", script])
        if code == 0:
            proc.wait()
        nodes.append(LabNode(i, f"lab-{i}", f"127.0.0.1:{7300 + i}", folder, proc, None))
        statuses[f"lab-{i}"] = reply(
            node_id=f"lab-{i}", state="training", round=55, total_rounds=60, loss=9.5
        )
        statuses[f"lab-{i}"].neighbors[0].node_id = f"lab-{1 - i}"
    try:
        console = Console(width=200, record=True)
        console.print(lab_table(nodes, statuses, "lab", "accuracy"))
    finally:
        nodes[1].process.kill()
        nodes[1].process.wait()
    text = console.export_text()
    [ended] = [line for line in text.splitlines() if "lab-0 " in line]
    cells = [c.strip() for c in ended.strip("│ ").split("│")]
    assert cells[:6] == ["lab-0", "exited (0)", "60 (final)", "1.1250", "0.750", ""], text
    [running] = [line for line in text.splitlines() if "lab-1 " in line]
    cells = [c.strip() for c in running.strip("│ ").split("│")]
    assert cells[:6] == ["lab-1", "training", "55/60", "9.5000", "0.500", ""], text


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from adapter_helpers import save_trained_tiny

    path = tmp_path_factory.mktemp("adapter") / "adapter"
    save_trained_tiny(path, steps=1)
    return path


def recorded_as(saved: Path, folder: Path, **changes: object) -> Path:
    """A copy of the adapter whose declora.json records `changes` (spec, agreed)."""
    shutil.copytree(saved, folder)
    info = json.loads((folder / "declora.json").read_text())
    (folder / "declora.json").write_text(json.dumps({**info, **changes}))
    return folder


def test_a_refused_resume_names_gradient_tracking_and_the_default_method(
    saved: Path, tmp_path: Path
) -> None:
    """Before: 'weighting: 'examples' there, None here' after --no-gradient-tracking,
    and 'method: None there, 'conlora' here' where None was the default dec-lora."""
    from conftest import CLASS_NAMES, TINY_SPEC

    from declora.node.adapter_io import recorded_differences
    from declora.node.trainer import LoraModel

    info = json.loads((saved / "declora.json").read_text())
    plain = LoraModel(TINY_SPEC, label_names=CLASS_NAMES)
    tracked = recorded_as(saved, tmp_path / "tracked", agreed={"weighting": "examples"})
    assert recorded_differences(tracked, plain) == [
        "weighting: 'examples' there, 'nodes' here (weighting 'examples' needs "
        "gradient_tracking and a codec other than fp16: tracking is off here, --codec is "
        "fp16 here, or --weighting nodes was given)"
    ]
    grouped = recorded_as(
        saved, tmp_path / "grouped", agreed={"gossip_steps": 2, "tracking_exchanges": 2}
    )
    untracked = LoraModel(TINY_SPEC, label_names=CLASS_NAMES, agreed={"gossip_steps": 2})
    assert recorded_differences(grouped, untracked) == ["gradient_tracking: on there, off here"]
    assert "method" not in info["spec"]  # the default is left out of the record
    conlora = LoraModel(replace(TINY_SPEC, method="conlora"), label_names=CLASS_NAMES)
    assert recorded_differences(saved, conlora) == ["method: 'dec-lora' there, 'conlora' here"]


def test_a_resume_with_other_gossip_steps_does_not_blame_gradient_tracking(
    saved: Path, tmp_path: Path
) -> None:
    """tracking_exchanges is recorded only past one exchange a round: a tracked run
    resumed with gossip_steps 1 -> 2 also said 'gradient_tracking: off there, on here'."""
    from conftest import CLASS_NAMES, TINY_SPEC

    from declora.node.adapter_io import recorded_differences
    from declora.node.trainer import LoraModel

    one = recorded_as(saved, tmp_path / "one", agreed={})
    two = {"gossip_steps": 2, "tracking_exchanges": 2}
    lm = LoraModel(TINY_SPEC, label_names=CLASS_NAMES, agreed=two)
    assert recorded_differences(one, lm) == ["gossip_steps: 1 there, 2 here"]
    three = recorded_as(
        saved, tmp_path / "three", agreed={"gossip_steps": 3, "tracking_exchanges": 3}
    )
    assert recorded_differences(three, lm) == ["gossip_steps: 3 there, 2 here"]
    untracked = recorded_as(saved, tmp_path / "untracked", agreed={"gossip_steps": 2})
    assert recorded_differences(untracked, lm) == ["gradient_tracking: off there, on here"]


def test_each_unrecorded_fact_is_what_agreed_facts_leaves_out() -> None:
    """One table, recipe.UNRECORDED_FACTS, decides what Recipe.agreed_facts leaves out
    and what adapter_io shows for a fact a record leaves out (no copy to drift): a
    recipe set to each value records no such fact, and one set otherwise records it."""
    from declora.node import adapter_io
    from declora.node.recipe import UNRECORDED_FACTS, Recipe

    assert adapter_io.UNRECORDED_FACTS is UNRECORDED_FACTS

    other = {
        "lr_schedule": "cosine",  # with rounds
        "warmup_steps": 5,
        "weighting": "examples",
        "gossip_steps": 2,
        "gossip_acceleration": "chebyshev",
        "step_after_mixing": True,
        "validation_fraction": 0.1,
        "test_fraction": 0.0,
        "dedupe": False,
    }
    assert set(other) == set(UNRECORDED_FACTS)
    for key, value in UNRECORDED_FACTS.items():
        assert key not in Recipe(**{key: value}).agreed_facts(), key
        rounds = 10 if key == "lr_schedule" else 0  # a decaying schedule needs rounds
        assert key in Recipe(**{key: other[key], "rounds": rounds}).agreed_facts(), key


PLAIN = {"weighting": "nodes", "validation_fraction": 0.0}  # Recipe() records both


@pytest.mark.parametrize(
    ("options", "facts"),
    [
        ({}, {"weighting": "examples", "validation_fraction": 0.1}),
        ({**PLAIN, "gossip_acceleration": "none", "dedupe": True}, {}),
        ({**PLAIN, "gossip_steps": 3}, {"gossip_steps": 3, "tracking_exchanges": 3}),
        ({**PLAIN, "gossip_steps": 2, "gradient_tracking": False}, {"gossip_steps": 2}),
        (
            {"gossip_acceleration": "chebyshev:0.5", "step_after_mixing": True},
            {
                "weighting": "examples",
                "gossip_acceleration": "chebyshev:0.5",
                "step_after_mixing": True,
                "validation_fraction": 0.1,
            },
        ),
        ({**PLAIN, "test_fraction": 0.0, "dedupe": False}, {"test_fraction": 0.0, "dedupe": False}),
        (
            {**PLAIN, "lr_schedule": "cosine", "rounds": 10, "local_steps": 2, "warmup_steps": 3},
            {"lr_schedule": "cosine", "warmup_steps": 3, "local_steps": 2, "rounds": 10},
        ),
    ],
)
def test_agreed_facts_are_what_they_were(options: dict[str, object], facts: dict) -> None:
    """Deriving the omissions from UNRECORDED_FACTS changed no recipe's facts (nor so
    any fingerprint)."""
    from declora.node.recipe import Recipe

    assert Recipe(**options).agreed_facts() == facts
