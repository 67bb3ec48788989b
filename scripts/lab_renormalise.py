"""The lab's stored scores on its corrected 0 point, without rerunning anything.

    python scripts/lab_renormalise.py            # writes results/lab/renormalised.json

The lab's 0 point is the mean return of random actions. The records in results/lab/ were made
with a baseline that drew its numbers from a generator made anew, with the same seed, at every
step: each episode got one constant push, not random actions (mean return 1.34). The lab now
draws from one generator per evaluation (lab.random_actions: 2.30). Only the 0 point moves, and
training never reads a score, so each stored score s maps exactly onto the new 0 point: its
return R = old + s (expert - old) / 100 scores 100 (R - new) / (expert - new). The map is affine:
differences, standard deviations and intervals scale by (expert - old) / (expert - new), p-values
stay. The records are left as they are; renormalised.json holds the new numbers beside them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.stats import describe, paired  # noqa: E402
from scripts import lab  # noqa: E402
from scripts.files import git_commit  # noqa: E402

RECORDS = ["main", "main_rerun", "M1", "M4", "keep1", "H16", "H64", "unet", "unet8",
           "dev/lab_dev_seeds100-104", "dev/lab_dev_2000updates_lr3e-4"]  # fmt: skip
# (record, algo) - (record, algo), on the same seeds: what docs/lab.md and the README cite
PAIRS = [(("main", "dydiff"), ("main", "td3bc")), (("main", "dydiff"), ("main", "m0"))] + [
    ((name, "dydiff"), ("main", base)) for name in RECORDS[2:9] for base in ("dydiff", "m0")
] + [(("unet8", "dydiff"), ("main", "td3bc"))]  # fmt: skip


def old_random_return() -> float:
    """The old 0 point, by the old code: a generator made anew at every step."""
    return lab.episode_returns(lambda s: np.random.default_rng(1).uniform(-1, 1, (len(s), 2))).mean()


def renormalise(score: float, old: float, new: float, expert: float) -> float:
    """A score on the old 0 point -> the same return's score on the new one."""
    ret = old + score * (expert - old) / 100
    return 100 * (ret - new) / (expert - new)


def main(folder: Path = ROOT / "results" / "lab") -> dict:
    old, new, expert = old_random_return(), lab.RANDOM_RETURN.mean(), lab.EXPERT_RETURN.mean()
    def move(score: float) -> float:
        return renormalise(score, old, new, expert)

    records, finals = {}, {}
    for name in RECORDS:
        r = json.loads((folder / f"{name}.json").read_text())
        final = {a: {seed: move(s) for seed, s in f.items()} for a, f in r["final"].items()}
        curves = {a: {seed: [[u, move(s)] for u, s in c] for seed, c in cs.items()}
                  for a, cs in r["curves"].items()}  # fmt: skip
        finals[name] = final
        means = {a: np.mean([[s for _, s in c] for c in cs.values()], 0).tolist()
                 for a, cs in curves.items()}  # mean over seeds at each evaluation
        line = lab.summary_line({a: list(f.values()) for a, f in final.items()},
                                r["config"]["iterations"])  # fmt: skip
        records[f"{name}.json"] = {"command": r["command"], "commit": r["commit"],
                                   "line_old": r["line"], "line": line, "final": final,
                                   "mean_curve": means, "curves": curves}  # fmt: skip
    comparisons = {}
    for (a_rec, a), (b_rec, b) in PAIRS:
        d = np.array(list(finals[a_rec][a].values())) - np.array(list(finals[b_rec][b].values()))
        stats = paired(d)
        comparisons[f"{a_rec} {a} - {b_rec} {b}"] = {"text": describe(stats), **stats}
    return {
        "command": "python scripts/lab_renormalise.py", "commit": git_commit(),
        "what": "the stored lab scores on the corrected 0 point (scripts/lab_renormalise.py's "
                "docstring); records made before this file, unchanged beside it",
        "random_return": {"old": old, "new": new}, "expert_return": expert,
        "scale": (expert - old) / (expert - new), "shift": 100 * (old - new) / (expert - new),
        "paired": comparisons, "records": records,
    }  # fmt: skip


if __name__ == "__main__":
    out = ROOT / "results" / "lab" / "renormalised.json"
    result = main()
    out.write_text(json.dumps(result, indent=1) + "\n")
    for name, r in result["records"].items():
        print(f"{name}: {r['line']}")
    for name, p in result["paired"].items():
        print(f"{name}: {p['text']}")
    print(f"wrote {out.relative_to(ROOT)}")
