"""Earlier recipe runs beside the study's current ones, seed by seed: worst node after
the consensus finish and bytes sent per node.

Each folder holds the recipe's runs (fp32 and q4) from before one change; `runs/`
holds the current ones. Only the recipe changed each time: the plain and centralized
runs are shared.

- `previous/`: before multi-exchange tracking (150120b: z mixed in the first exchange
  of a round only); that study selected lr 8e-3, K 2;
- `node-weighted/`: before `--weighting examples` (every node weighed the same);
  that study selected lr 4e-3, K 1;
- `single-seed/`: the same recipe as today, selected on seed 0's validation alone
  (lr 8e-3, K 1), before the selection's finalists ran with every seed. Its ring
  runs (seeds 1 and 2 are today's finalists) stay in `runs/`, where this reads them.

    python results/swarm/compare.py previous        # from the repo root
    python results/swarm/compare.py node-weighted
    python results/swarm/compare.py single-seed
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
RUNS = HERE / "runs"
SETTINGS = ("ring-8", "star-6", "er-12", "torus-16")
SELECTED = {  # what each chose
    "previous": "lr0.008-k2",
    "node-weighted": "lr0.004-k1",
    "single-seed": "lr0.008-k1",
}


def worst_and_bytes(path: Path) -> tuple[float, float]:
    final = json.loads(path.read_text())["final"]
    return 100 * final["after_consensus"]["honest_worst_accuracy"], final["bytes_sent_per_node"]


def one(
    folder: Path, row: str, setting: str, seed: int, chosen: str
) -> tuple[str, float, float] | None:
    name = f"{row}-{setting}-{chosen}-seed{seed}.json"
    path = folder / name
    if folder.name == "single-seed" and not path.is_file():
        path = RUNS / name  # its ring runs are today's selection runs
    return (chosen, *worst_and_bytes(path)) if path.is_file() else None


def main(earlier: str) -> None:
    pick = json.loads((HERE / "selection.json").read_text())["rows"]["recipe"]
    now = f"lr{pick['lr']:g}-k{pick['k']}"
    print(f"before: {earlier}/ ({SELECTED[earlier]}), after: runs/ ({now})")
    print("| setting | row | seed | before (%) | after (%) | change | bytes after/before |")
    print("|---|---|---|---|---|---|---|")
    for setting in SETTINGS:
        for row in ("recipe", "recipe-q4"):
            for seed in (0, 1, 2):
                old = one(HERE / earlier, row, setting, seed, SELECTED[earlier])
                new = one(RUNS, row, setting, seed, now)
                if old is None or new is None:
                    continue
                print(
                    f"| {setting} | {row} | {seed} | {old[1]:.1f} | {new[1]:.1f} | "
                    f"{new[1] - old[1]:+.1f} | {new[2] / old[2]:.2f}x |"
                )


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in SELECTED:
        sys.exit(f"usage: python results/swarm/compare.py {{{','.join(SELECTED)}}}")
    main(sys.argv[1])
