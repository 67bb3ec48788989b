"""Scores over seeds: runs train_offline.py, keeps one JSON per run, and compares algorithms.

    python benchmarks/scores.py --env maze2d-umaze --algos dydiff td3bc --seeds 0 1 2 [--parallel 2]
    python benchmarks/scores.py --env maze2d-umaze --aggregate-only
    python benchmarks/scores.py --algos dydiff --seeds 0 1 2 --iterations 0 --label M=0 --group my_ablation
    python benchmarks/scores.py --group my_ablation --baseline M=0 --with-runs scores/dydiff=M=2 \
        --aggregate-only

Anything not listed below goes to train_offline.py as it is (--iterations 0 above), checked by its
parser before any run; but scores.py owns each run's folder and seed, so --out, --resume, --seed and
--algo are refused (use --seeds and --algos). Each run is the ordinary command
`python train_offline.py ... --env E --algo A --seed S --threads T --out OUT` with its own
OUT = runs/<group>/<env>/<label>_seed<S>/ (log.txt in it); its run folder is the one folder the run
added to OUT; a run stopped before its end there (checkpoint.pt, no summary.json) is continued
with --resume instead, so long runs span sessions by the same command run again. Its summary and
learning curve go to results/<group>/<env>/<label>_seed<S>.json as soon as it ends. The aggregate,
results/<group>_<env>.json and .png (and a table printed as markdown), reports per label the mean
and SAMPLE standard deviation over seeds of the final score (the last evaluation), of the mean of
the last five evaluations and of the best evaluation, and for every label against --baseline the
paired difference over the seeds both have, with every statistic of benchmarks/stats.py (bootstrap
and t intervals, sign-flip p, seeds ahead, the verdict). --driver SCRIPT runs SCRIPT instead of
train_offline.py (same flags: an intervention such as benchmarks/studies/relabelled_rollouts.py).
--with-runs GROUP/LABEL=NAME adds runs of another group under a name of this table (the main runs'
DyDiff, whose M is the default 2, as "M=2" of the ablation; GROUP/LABEL keeps the label's name, so
dm_earns_its_place/M=0 is that group's "M=0" and joins this group's "M=0"; a LABEL no run there has
is an error), without copying their files, and only on the seeds of this group's own runs (if it has
any), so that every row covers the same seeds; with --aggregate-only, --seeds S... sets those seeds
for every row instead (seeds 0-9 of one group and 10-19 of another make one row of 20).
"""

import argparse
import csv
import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import train_offline  # noqa: E402
from benchmarks.stats import bootstrap_interval, describe, paired  # noqa: E402
from scripts.files import fail, one_line_errors  # noqa: E402


def run_one(env: str, algo: str, seed: int, threads: int, extra: list[str], out: Path,
            driver: str = "train_offline.py") -> Path:
    """Run `driver` (train_offline.py or a script with its flags) once with --out `out` (a folder
    of its own); return its run folder."""
    (ROOT / out).mkdir(parents=True, exist_ok=True)
    cmd = [driver, *extra, "--env", env, "--algo", algo, "--seed", str(seed),
           "--threads", str(threads), "--out", str(out)]  # fmt: skip
    log, before = ROOT / out / "log.txt", run_dirs(ROOT / out)
    stopped = [d for d in before  # stopped before its end: a checkpoint, no summary
               if (d / "checkpoint.pt").exists() and not (d / "summary.json").exists()]
    if len(stopped) == 1:  # a run stopped (at the end of a session, say): it goes on, exactly
        cmd = [driver, "--resume", str(stopped[0].relative_to(ROOT))]
        print(f"{out}: resuming {stopped[0].name}", flush=True)
    start = time.time()
    with log.open("a") as f:
        code = subprocess.run([sys.executable, *cmd], cwd=ROOT, stdout=f, stderr=f).returncode
    print(f"{out}: exit {code} after {time.time() - start:.0f} s", flush=True)
    if code != 0:
        raise RuntimeError(f"python {' '.join(cmd)} failed; see {out / 'log.txt'}")
    return stopped[0] if len(stopped) == 1 else new_run_dir(ROOT / out, before)


def run_dirs(out: Path) -> set[Path]:
    return {p for p in out.iterdir() if p.is_dir()} if out.is_dir() else set()


def new_run_dir(out: Path, before: set[Path]) -> Path:
    """The run folder a run added to `out`: the one folder there that was not in `before`. Never
    the newest by date, which may be an older run's when this one wrote elsewhere."""
    new = run_dirs(out) - before
    if len(new) != 1:
        raise RuntimeError(f"{out}: expected one new run folder, found {len(new)}")
    return new.pop()


def collect(run_dir: Path, dest: Path, label: str) -> None:
    """summary.json plus the learning curve (update, score) as one JSON per run."""
    summary = json.loads((run_dir / "summary.json").read_text())
    with open(run_dir / "metrics.csv") as f:
        curve = [(int(r["update"]), float(r["score"])) for r in csv.DictReader(f) if r["score"]]
    rel = run_dir.resolve().relative_to(ROOT) if run_dir.resolve().is_relative_to(ROOT) else None
    dest.parent.mkdir(parents=True, exist_ok=True)
    record = summary | {"label": label, "run_dir": str(rel) if rel else None, "curve": curve}
    dest.write_text(json.dumps(record, indent=1))


def plot_curves(runs: dict[str, dict[int, dict]], baseline: str, path: Path, title: str) -> None:
    """Left: score against updates per label, the mean over seeds and a +- sample std band.
    Right: the paired difference label - baseline at every evaluation, its mean and 95% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, dx) = plt.subplots(1, 2, figsize=(12, 4))
    for label, by_seed in runs.items():
        n = min(len(r["curve"]) for r in by_seed.values())
        x = np.array([u for u, _ in next(iter(by_seed.values()))["curve"][:n]])
        y = np.array([[s for _, s in r["curve"][:n]] for r in by_seed.values()])
        (line,) = ax.plot(x, y.mean(0), label=f"{label} ({len(y)} seeds)")
        if len(y) > 1:
            std = y.std(0, ddof=1)
            ax.fill_between(x, y.mean(0) - std, y.mean(0) + std, alpha=0.2)
        pairs = sorted(set(by_seed) & set(runs.get(baseline, {})))
        if label != baseline and pairs:
            d = np.array([[a - b for (_, a), (_, b) in zip(by_seed[s]["curve"][:n],
                                                           runs[baseline][s]["curve"][:n])]
                          for s in pairs])  # fmt: skip
            band = np.array([bootstrap_interval(col, n=2_000) for col in d.T])
            c = line.get_color()  # the label's colour in both panels
            dx.plot(x, d.mean(0), color=c, label=f"{label} - {baseline} ({len(pairs)} seeds)")
            dx.fill_between(x, band[:, 0], band[:, 1], color=c, alpha=0.2)
    ax.set(xlabel="updates", ylabel="normalised score", title=title)
    dx.axhline(0, color="k", lw=0.8)
    dx.set(xlabel="updates", ylabel="score difference", title="paired difference, 95% bootstrap")
    ax.legend()
    if len(dx.lines) > 1:  # a difference besides the zero line
        dx.legend()
    for a in (ax, dx):
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def results_dir(group: str, env: str) -> Path:
    """results/<group>/<env>/: one JSON per run (collect)."""
    return ROOT / "results" / group / env.replace("/", "_")


def read_runs(group: str, env: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results_dir(group, env).glob("*.json"))]


def aggregate(env: str, group: str, baseline: str, with_runs: tuple[str, ...] = (),
              only_seeds: tuple[int, ...] = ()) -> dict:
    runs: dict[str, dict[int, dict]] = {}
    for r in read_runs(group, env):
        if r["seed"] in only_seeds or not only_seeds:
            runs.setdefault(r["label"], {})[r["seed"]] = r
    seeds = set(only_seeds) or {s for by_seed in runs.values() for s in by_seed}  # this group's
    for spec in with_runs:  # "scores/dydiff=M=2": the runs labelled dydiff in results/scores/
        other, rest = spec.split("/", 1)  # "dm_earns_its_place/M=0": its label M=0 as it is
        found = read_runs(other, env)
        labels = {r["label"] for r in found}
        matches = [lb for lb in labels if rest == lb or rest.startswith(lb + "=")]
        if not matches:  # a typo would silently drop a row
            fail(f"--with-runs {spec}: no such label in {results_dir(other, env).relative_to(ROOT)}/"
                 f" (its labels: {', '.join(sorted(labels)) or 'none'})")
        label = max(matches, key=len)  # "M=2=N": the label M=2, named N
        name = rest if label == rest else rest[len(label) + 1:]
        for r in found:
            if r["label"] == label and (r["seed"] in seeds or not seeds):
                runs.setdefault(name, {})[r["seed"]] = r | {"label": name}
    runs = dict(sorted(runs.items()))  # labels in order: M=0, M=1, ... or dydiff, td3bc
    metrics = {  # per run: the last evaluation, the mean of the last five, the best (as CORL)
        "final": lambda r: r["final_score"],
        "last5": lambda r: float(np.mean([s for _, s in r["curve"][-5:]])),
        "best": lambda r: r["best_score"],
    }
    table = {}
    for label, by_seed in runs.items():
        row = {"seeds": sorted(by_seed)}
        for m, f in metrics.items():
            v = np.array([f(by_seed[s]) for s in row["seeds"]])
            std = float(v.std(ddof=1)) if len(v) > 1 else None
            row |= {f"{m}_mean": float(v.mean()), f"{m}_std": std, f"{m}_per_seed": v.tolist()}
        curves = [by_seed[s]["curve"] for s in row["seeds"]]  # mean curve: the driver's picture
        row["mean_curve"] = [[c[0], float(np.mean([r[i][1] for r in curves]))]
                             for i, c in enumerate(curves[0][: min(map(len, curves))])]  # fmt: skip
        minutes = [by_seed[s]["phase_seconds"]["rl"] / 60 for s in row["seeds"]]  # not data, models
        row["rl_minutes_per_run"] = float(np.mean(minutes))
        if label != baseline and baseline in runs:
            pairs = sorted(set(by_seed) & set(runs[baseline]))
            for m, f in metrics.items():
                d = np.array([f(by_seed[s]) - f(runs[baseline][s]) for s in pairs])
                if len(d) > 1:  # mean, std, bootstrap and t intervals, p, seeds ahead, verdict
                    row[f"{m}_minus_{baseline}"] = {"seeds": pairs} | paired(d)
        table[label] = row
    out = ROOT / "results" / f"{group}_{env.replace('/', '_')}"
    out.with_suffix(".json").write_text(json.dumps(table, indent=1))
    plot_curves(runs, baseline, out.with_suffix(".png"), f"{env}: mean +- sample std over seeds")
    print_table(env, table, baseline)
    return table


def print_table(env: str, table: dict, baseline: str) -> None:
    fmt = lambda m, s: f"{m:.1f} +- {s:.1f}" if s is not None else f"{m:.1f}"  # noqa: E731

    def diff(t: dict, m: str) -> str:
        if not (d := t.get(f"{m}_minus_{baseline}")):
            return ""
        return f"{d['mean']:+.1f} [{d['bootstrap_95'][0]:+.1f}, {d['bootstrap_95'][1]:+.1f}]"

    names = {"final": "final", "last5": "mean of last 5 evals", "best": "best"}
    print(f"\n| {env} | seeds | " + " | ".join(names.values()) + " | "
          + " | ".join(f"{n} - {baseline} [95% CI]" for n in names.values()) + " |\n|---"
          + "|---" * (1 + 2 * len(names)) + "|")  # fmt: skip
    for label, t in table.items():
        cells = [fmt(t[f"{m}_mean"], t[f"{m}_std"]) for m in names] + [diff(t, m) for m in names]
        print(f"| {label} | {len(t['seeds'])} | " + " | ".join(cells) + " |")
    words = {"+": "ahead", "-": "behind", None: "not decided"}
    for label, t in table.items():  # every statistic; the verdict follows the weakest of them
        for m, name in names.items():
            if d := t.get(f"{m}_minus_{baseline}"):
                print(f"{label} - {baseline}, {name}: {describe(d)}: {words[d['verdict']]}")


REFUSED = {  # train_offline.py flags scores.py sets itself for every run
    "--out": "scores.py puts each run in runs/<group>/<env>/<label>_seed<S>/",
    "--resume": "scores.py starts new runs only",
    "--seed": "use --seeds",
    "--algo": "use --algos",
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    one_line_errors(p)
    p.add_argument("--env", default="maze2d-umaze")
    p.add_argument("--algos", nargs="+", default=["td3bc", "dydiff"])
    p.add_argument("--seeds", nargs="+", type=int,
                   help="seeds to run (default 0 1 2); with --aggregate-only, the seeds of every row")
    p.add_argument("--parallel", type=int, default=1, help="runs at once (use --threads 1 with 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--label", help="name of these runs in tables and plots (default: the algo)")
    p.add_argument("--group", default="scores", help="results/<group>/ folder and file prefix")
    p.add_argument("--baseline", default="td3bc", help="label the others are compared with")
    p.add_argument("--with-runs", nargs="+", default=[], metavar="GROUP/LABEL[=NAME]",
                   help="also aggregate these runs of another group, under NAME")
    p.add_argument("--aggregate-only", action="store_true")
    p.add_argument("--driver", default="train_offline.py",
                   help="the script each run is, with train_offline.py's flags (an intervention)")
    for flag in REFUSED:  # declared so that abbreviations of them are caught too
        p.add_argument(flag, help=argparse.SUPPRESS)
    args, extra = p.parse_known_args(argv)  # anything else goes to train_offline.py as it is
    for flag, why in REFUSED.items():
        if getattr(args, flag[2:]) is not None:
            p.error(f"{flag} is not passed to train_offline.py: {why}")
    if args.label and len(args.algos) > 1:
        p.error("--label names the runs of one algo: give one --algos with it")
    for spec in args.with_runs:
        if not re.fullmatch(r"[\w.-]+/[\w.=-]+", spec):
            p.error(f"--with-runs {spec}: expected GROUP/LABEL=NAME (scores/dydiff=M=2) or "
                    "GROUP/LABEL (its own name)")
    if not args.aggregate_only:
        if not (ROOT / args.driver).is_file():
            p.error(f"--driver {args.driver}: no such script in the repository")
        train_offline.parse_args(extra)  # an unknown or malformed flag: one line, before any run

        def job(algo_seed):
            algo, seed = algo_seed
            label = args.label or algo
            out = Path("runs") / args.group / args.env.replace("/", "_") / f"{label}_seed{seed}"
            run_dir = run_one(args.env, algo, seed, args.threads, extra, out, args.driver)
            dest = results_dir(args.group, args.env) / f"{label}_seed{seed}.json"
            collect(run_dir, dest, label)  # written as it ends

        try:
            with ThreadPoolExecutor(args.parallel) as pool:
                list(pool.map(job, [(a, s) for a in args.algos for s in args.seeds or (0, 1, 2)]))
        except RuntimeError as e:  # a run failed: its log says why
            sys.exit(f"error: {e}")
    only = tuple(args.seeds or ()) if args.aggregate_only else ()
    aggregate(args.env, args.group, args.baseline, tuple(args.with_runs), only)


if __name__ == "__main__":
    main()
