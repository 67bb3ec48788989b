"""Means over seeds of benchmarks/synthetic_study.py's records, one row per group and synthesis M.

    python benchmarks/studies/synthetic_table.py --group NAME JSON [JSON ...] [--group ...]
        [--plot FILE]

Each --group names a set of synthetic_study.json records (e.g. the final actors of five seeds of
one arm on one task). For each group and each synthesis (M = 0, M = 2, and M = 2 relabelled where
every record of the group has it) it prints the mean over the records, and the range, of what the
learner gets (the kept trajectories): the stored tuples' inconsistency with the simulator (RMS,
data std units) and their step ratio (a cell of records that lack it: "-"), the reward model's
mean reward against the true one, the share of trajectories that reach the goal (mazes) or fall
(Hopper), the true return of the kept against the dropped trajectories, the critic's Q on
synthetic against data states, and coverage (distance to the nearest data state, against the
data's own). --plot draws the inconsistency per step of the horizon, one line per group and M.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from scripts.files import one_line_errors  # noqa: E402

COLUMNS = {  # column: how it is read from one synthesis (M) of a record
    "inconsistency": lambda r: r["kept"]["inconsistency"],
    "step ratio": lambda r: r["kept"].get("step_ratio"),  # (records before it: none)
    "reward predicted": lambda r: r["kept"]["reward_predicted"],
    "reward true": lambda r: r["kept"]["reward_true"],
    "goal / fell": lambda r: r["kept"].get("reached_goal", r["kept"].get("fell")),
    "true return kept": lambda r: r["true_return_kept"],
    "dropped": lambda r: r["true_return_dropped"],
    "Q synthetic": lambda r: r["q_synthetic"],
    "Q data": lambda r: r["q_data"],
    "coverage": lambda r: r["coverage_synthetic"],
    "data's own": lambda r: r["coverage_data"],
}


def table(groups: dict[str, list[dict]]) -> list[str]:
    lines = ["| group | synthesis | n | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 3) + "|"]
    for name, records in groups.items():
        for m in [m for m in ("0", "2", "2 relabelled") if all(m in r["per_M"] for r in records)]:
            cells = []
            for read in COLUMNS.values():
                x = np.array([np.nan if read(r["per_M"][m]) is None else read(r["per_M"][m])
                              for r in records], float)  # fmt: skip
                cells.append("-" if np.isnan(x).all() else
                             f"{np.nanmean(x):.3g} ({np.nanmin(x):.3g}-{np.nanmax(x):.3g})")  # fmt: skip
            lines.append(f"| {name} | M = {m} | {len(records)} | " + " | ".join(cells) + " |")
    return lines


def plot(groups: dict[str, list[dict]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, records in groups.items():
        for m, style in (("0", ":"), ("2", "-")):
            y = np.mean([r["per_M"][m]["kept"]["inconsistency_per_step"] for r in records], 0)
            ax.plot(range(1, len(y) + 1), y, style, label=f"{name}, M = {m}")
    ax.set(xlabel="step i of a kept trajectory (s_i -> s_i+1)", yscale="log",
           ylabel="RMS of s' - sim(s, a), data std units (mean over seeds)")  # fmt: skip
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    one_line_errors(p)
    p.add_argument("--group", nargs="+", action="append", required=True, metavar=("NAME", "JSON"))
    p.add_argument("--plot", help="PNG file for the inconsistency per step")
    args = p.parse_args(argv)
    groups = {}
    for name, *files in args.group:
        if not files:
            p.error(f"--group {name}: no records given")
        try:
            groups[name] = [json.loads(Path(f).read_text()) for f in files]
        except (OSError, ValueError) as e:
            p.error(f"--group {name}: {e}")
    print("\n".join(table(groups)))
    if args.plot:
        plot(groups, args.plot)


if __name__ == "__main__":
    main()
