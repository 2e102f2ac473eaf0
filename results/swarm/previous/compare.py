"""The recipe before and after multi-exchange tracking (z mixed in every exchange of
a round, 150120b), seed by seed: worst node after the consensus finish and bytes.

`previous/` holds the recipe's runs made before that change (z mixed in the first
exchange of a round only; lr 8e-3, K 2, as that study selected), `runs/` the study's
current ones. Only the recipe changed: the plain and centralized runs are shared.

    python results/swarm/previous/compare.py   # from the repo root
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
RUNS = HERE.parent / "runs"
SETTINGS = ("ring-8", "star-6", "er-12", "torus-16")


def worst_and_bytes(path: Path) -> tuple[float, float]:
    final = json.loads(path.read_text())["final"]
    return 100 * final["after_consensus"]["honest_worst_accuracy"], final["bytes_sent_per_node"]


PREVIOUS = "lr0.008-k2"  # what the study selected before the change


def one(
    folder: Path, row: str, setting: str, seed: int, chosen: str
) -> tuple[str, float, float] | None:
    path = folder / f"{row}-{setting}-{chosen}-seed{seed}.json"
    return (chosen, *worst_and_bytes(path)) if path.is_file() else None


def main() -> None:
    pick = json.loads((HERE.parent / "selection.json").read_text())["rows"]["recipe"]
    now = f"lr{pick['lr']:g}-k{pick['k']}"
    print("| setting | row | seed | before (%) | after (%) | change | bytes after/before |")
    print("|---|---|---|---|---|---|---|")
    for setting in SETTINGS:
        for row in ("recipe", "recipe-q4"):
            for seed in (0, 1, 2):
                old = one(HERE, row, setting, seed, PREVIOUS)
                new = one(RUNS, row, setting, seed, now)
                if old is None or new is None:
                    continue
                print(
                    f"| {setting} | {row} ({old[0]} -> {new[0]}) | {seed} | {old[1]:.1f} | "
                    f"{new[1]:.1f} | {new[1] - old[1]:+.1f} | {new[2] / old[2]:.2f}x |"
                )


if __name__ == "__main__":
    main()
