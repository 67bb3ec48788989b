"""How the default DM was chosen: the choice rule, read off benchmarks/dm_fidelity.py's records.

    python benchmarks/studies/dm_choice.py results/dm_fidelity/run2/*.json   # the rule of each file

The rule (docs/dm_fidelity.md, "How the default DM was chosen"), for the mean and the median over
start states: score = mean log10 of DyDiff M = 2's error under the trained actor (b) and of M = 2's
stored tuples (c), at h = 8 and h = H - 1 (lower is better); below_from = the first h from which
DyDiff M = 2 stays below the single-step model (M = 0) under the trained actor. Prints one line per
file; a record without a trained actor has no rule: one line "error: ..." and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from benchmarks.dm_fidelity import CLOSED  # noqa: E402
from scripts.files import one_line_errors  # noqa: E402


def rule(results: dict) -> dict:
    """The choice rule, for the mean and the median over start states (per_step of a record):
    score = mean log10 of DyDiff M = 2's error under the trained actor (b) and of M = 2's stored
    tuples (c), at h = 8 and h = H - 1 (lower is better); below_from = the first h from which
    DyDiff M = 2 stays below the single-step model (M = 0) under the trained actor."""
    b, c = results["b: trained actor"], results["c: stored tuples (trained actor)"]
    out = {}
    for stat in ("mean", "median"):
        m2, m0, tuples = b[CLOSED[2]][stat], b[CLOSED[0]][stat], c["M=2"][stat]
        last = len(m2) - 1
        four = [m2[min(8, last)], m2[last], tuples[min(8, last)], tuples[last]]
        above = [h for h in range(1, last + 1) if m2[h] is None or m0[h] is None or m2[h] >= m0[h]]
        score = np.mean(np.log10(four)) if None not in four else None  # None: every hopper fell
        out[f"score_{stat}"] = None if score is None else round(float(score), 3)
        below_from = above[-1] + 1 if above else 1
        out[f"below_from_{stat}"] = below_from if below_from <= last else None  # None: never
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    one_line_errors(p)
    p.add_argument("json", nargs="+", metavar="JSON", help="records of benchmarks/dm_fidelity.py")
    for path in p.parse_args(argv).json:
        try:
            print(path, json.dumps(rule(json.loads(Path(path).read_text())["per_step"])))
        except (OSError, ValueError, KeyError) as e:
            p.error(f"{path}: not a record of dm_fidelity.py with a trained actor ({e!r})")


if __name__ == "__main__":
    main()
