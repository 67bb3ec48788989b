"""DyDiff+TD3BC against TD3+BC: several seeds each, same data, budget and evaluation.

    python benchmarks/scores.py --env maze2d-umaze --seeds 0 1 2 [--parallel 2 --threads 1]
    python benchmarks/scores.py --env maze2d-umaze --aggregate-only
    python benchmarks/scores.py --algos dydiff --seeds 0 --iterations 0 --label M=0 --group ablation_M

Anything not listed below goes to train_offline.py as it is (--iterations 0 above).

Each run is the ordinary command `python train_offline.py --env E --algo A --seed S` (logs in
runs/scores/logs/). Its summary and learning curve are copied to results/scores/<env>/<algo>_seed<S>.json
(command, seed, git commit, scores, phase times); then results/scores_<env>.json holds mean +- std
over seeds of the final and best normalised score, and results/scores_<env>.png both curves.
"""

import argparse
import csv
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_one(env: str, algo: str, seed: int, threads: int, extra: list[str], group: str) -> Path:
    """Run train_offline.py once (in runs/<group>/); return its run folder."""
    out = ROOT / "runs" / group
    (out / "logs").mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "train_offline.py", "--env", env, "--algo", algo, "--seed", str(seed),
           "--threads", str(threads), "--out", str(out), *extra]  # fmt: skip
    log = out / "logs" / f"{env.replace('/', '_')}__{algo}__{seed}.log"
    start = time.time()
    with log.open("w") as f:
        code = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    print(
        f"{algo} seed {seed}: exit {code} after {time.time() - start:.0f} s (log {log})", flush=True
    )
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed; see {log}")
    return max(
        out.glob(f"{env.replace('/', '_')}__{algo}__{seed}__*"), key=lambda p: p.stat().st_mtime
    )


def collect(run_dir: Path, dest: Path, label: str) -> None:
    """summary.json plus the learning curve (update, score) as one JSON per run."""
    summary = json.loads((run_dir / "summary.json").read_text())
    with open(run_dir / "metrics.csv") as f:
        curve = [(int(r["update"]), float(r["score"])) for r in csv.DictReader(f) if r["score"]]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(
        json.dumps(summary | {"label": label, "run_dir": str(run_dir), "curve": curve}, indent=1)
    )


def aggregate(env: str, group: str) -> None:
    from train_offline import plot_learning_curve, save_json

    runs: dict[str, list[dict]] = {}
    for path in sorted((ROOT / "results" / group / env.replace("/", "_")).glob("*.json")):
        r = json.loads(path.read_text())
        runs.setdefault(r.get("label", r["algo"]), []).append(r)
    table = {}
    for algo, rs in runs.items():
        final = np.array([r["final_score"] for r in rs])
        best = np.array([r["best_score"] for r in rs])
        table[algo] = {
            "seeds": [r["seed"] for r in rs],
            "final_mean": final.mean(), "final_std": final.std(),
            "best_mean": best.mean(), "best_std": best.std(),
            "final_per_seed": final.tolist(),
            "minutes_per_run": np.mean([sum(r["phase_seconds"].values()) for r in rs]) / 60,
        }  # fmt: skip
    save_json(table, ROOT / "results" / f"{group}_{env.replace('/', '_')}.json")
    curves = {
        a: [[{"update": u, "score": s} for u, s in r["curve"]] for r in rs]
        for a, rs in runs.items()
    }
    plot_learning_curve(curves, ROOT / "results" / f"{group}_{env.replace('/', '_')}.png", env)
    print(
        f"\n| {env} | seeds | final score | best score | minutes per run |\n|---|---|---|---|---|"
    )
    for algo, t in table.items():
        print(f"| {algo} | {len(t['seeds'])} | {t['final_mean']:.1f} +- {t['final_std']:.1f} | "
              f"{t['best_mean']:.1f} +- {t['best_std']:.1f} | {t['minutes_per_run']:.1f} |")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--env", default="maze2d-umaze")
    p.add_argument("--algos", nargs="+", default=["td3bc", "dydiff"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--parallel", type=int, default=1, help="runs at once (use --threads 1 with 2)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0: default)")
    p.add_argument("--label", help="name of these runs in tables and plots (default: the algo)")
    p.add_argument("--group", default="scores", help="results/<group>/ folder and file prefix")
    p.add_argument("--aggregate-only", action="store_true")
    args, extra = p.parse_known_args()  # anything else goes to train_offline.py as it is
    if not args.aggregate_only:
        jobs = [(a, s) for a in args.algos for s in args.seeds]
        with ThreadPoolExecutor(args.parallel) as pool:
            dirs = list(
                pool.map(lambda j: run_one(args.env, *j, args.threads, extra, args.group), jobs)
            )
        for (algo, seed), d in zip(jobs, dirs):
            label = args.label or algo
            dest = (
                ROOT
                / "results"
                / args.group
                / args.env.replace("/", "_")
                / f"{label}_seed{seed}.json"
            )
            collect(d, dest, label)
    aggregate(args.env, args.group)


if __name__ == "__main__":
    main()
