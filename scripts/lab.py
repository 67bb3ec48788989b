"""DyDiff in a lab session: does DyDiff's synthetic data help TD3+BC, and does its diffusion model
earn its place? Seeds 0-4 of a small task, about three minutes on one CPU core, on the same
dydiff.py code as the full runs.

    python scripts/lab.py [--seeds 0-4] [--algos td3bc,dydiff,m0] [--iterations 2] [--out FILE]

The task: a point mass in a walled box must reach a goal and stay there. State (x, y, vx, vy),
action a force in [-1, 1]^2; the exact dynamics below are the simulator. The data: a noisy
controller walks to random waypoints (it never heads for the goal), rewards relabelled with what
evaluation pays, as on maze2d. Made on the spot in a second.

The experiment: the dynamics, reward and diffusion models are trained once and shared by every
seed and algorithm (the full runs share one set per task). Then, per seed, three TD3+BC learners
with the same starting networks: td3bc (the real data only), dydiff (with DyDiff's synthetic
data, M = 2 policy-injection rounds) and m0 (M = 0: single-step rollouts, no diffusion model).
Each is scored every 250 updates: 0 = uniform random actions, 100 = a controller that knows the
goal. The last line compares the final scores:

    lab: td3bc M +- S, dydiff M +- S, M=0 M +- S, dydiff-td3bc D [LO, HI], M2-M0 D [LO, HI]

mean +- sample std over seeds; D: mean paired difference, [LO, HI] its 95% bootstrap interval
(seeds resampled). Every dydiff.Config field is a flag (--horizon 16, --keep-ratio 1, --denoiser
unet, ...); --out FILE records the line, every seed's scores, the command, the commit, the CPU
and the time. Imports torch, numpy, the standard library and dydiff only, so it runs beside
dydiff.py alone and can be pasted into a notebook cell by cell. docs/lab.md.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime
import inspect
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

if "__file__" in globals():  # as a script: dydiff.py is one folder up (in a notebook: beside it)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dydiff

# ---- The task: a point mass in the box [-1, 1]^2 that must reach GOAL ---------------------------
GOAL = np.array([0.5, 0.5], np.float32)
DRAG, GAIN, DT = 0.8, 0.2, 0.1  # v' = DRAG v + GAIN a; top speed GAIN / (1 - DRAG) = 1
EPISODE = 60  # evaluation steps: crossing the box's diagonal takes about 25
DATA_EPISODES, DATA_LENGTH = 200, 100  # 20,000 transitions, episodes long enough for H = 64
EVAL_EPISODES = 100  # evaluation start states (the same for every run)


def step(s: np.ndarray, a: np.ndarray) -> np.ndarray:
    """The exact dynamics, states [B, 4], actions [B, 2] -> next states. A wall stops the mass."""
    v = DRAG * s[:, 2:] + GAIN * np.clip(a, -1, 1)
    p = s[:, :2] + DT * v
    hit = np.abs(p) > 1
    return np.concatenate([np.clip(p, -1, 1), np.where(hit, 0, v)], 1).astype(np.float32)


def reward(s2: np.ndarray) -> np.ndarray:
    """What evaluation pays for arriving at s2: 1 at the goal, e^-1 at 0.2 from it."""
    return np.exp(-np.linalg.norm(s2[:, :2] - GOAL, axis=1) / 0.2).astype(np.float32)


def controller(s: np.ndarray, target: np.ndarray) -> np.ndarray:
    """A PD controller that steers the mass to target and stops there."""
    return np.clip(3 * (target - s[:, :2]) - 2 * s[:, 2:], -1, 1).astype(np.float32)


def make_data(seed: int = 0, noise: float = 0.5) -> dict[str, np.ndarray]:
    """DATA_EPISODES episodes of the controller walking to random waypoints (a new one on arrival
    or after 40 steps) with Gaussian action noise; dydiff's data contract (dydiff.check_data)."""
    rng = np.random.default_rng(seed)
    s = np.zeros((DATA_EPISODES, 4), np.float32)
    s[:, :2] = rng.uniform(-1, 1, (DATA_EPISODES, 2))
    waypoint, age = rng.uniform(-1, 1, (DATA_EPISODES, 2)), np.zeros(DATA_EPISODES)
    rows = {k: [] for k in ("observations", "actions", "next_observations")}
    for _ in range(DATA_LENGTH):
        new = (np.linalg.norm(waypoint - s[:, :2], axis=1) < 0.1) | (age >= 40)
        waypoint[new], age[new] = rng.uniform(-1, 1, (new.sum(), 2)), 0
        a = controller(s, waypoint) + noise * rng.standard_normal(s[:, :2].shape)
        a = np.clip(a, -1, 1).astype(np.float32)  # the actions stored are the actions stepped
        s2 = step(s, a)
        for k, x in zip(rows, (s, a, s2)):
            rows[k].append(x)
        s, age = s2, age + 1
    # [T, E, .] -> episode-major rows: an episode's rows consecutive
    data = {k: np.stack(v, 1).reshape(-1, v[0].shape[1]) for k, v in rows.items()}
    data["rewards"] = reward(data["next_observations"])
    data["terminals"] = np.zeros(len(data["rewards"]), np.float32)  # no state ends an episode
    data["episode_ids"] = np.repeat(np.arange(DATA_EPISODES), DATA_LENGTH)
    return data


def episode_returns(policy, seed: int = 10_000) -> np.ndarray:
    """Returns of EVAL_EPISODES episodes run at once in the exact dynamics, from rest at start
    positions drawn with `seed` (the same for every run); policy: states [B, 4] -> actions."""
    s = np.zeros((EVAL_EPISODES, 4), np.float32)
    s[:, :2] = np.random.default_rng(seed).uniform(-1, 1, (EVAL_EPISODES, 2))
    total = np.zeros(EVAL_EPISODES)
    for _ in range(EPISODE):
        s = step(s, policy(s))
        total += reward(s)
    return total


def random_actions(seed: int = 1):
    """The 0 point: a policy of uniform random forces, a new one at every step of every episode,
    all drawn from one generator made here (seeded: the same baseline every time)."""
    rng = np.random.default_rng(seed)
    return lambda s: rng.uniform(-1, 1, (len(s), 2))


RANDOM_RETURN = episode_returns(random_actions())
EXPERT_RETURN = episode_returns(lambda s: controller(s, GOAL))


def score(policy) -> float:
    """Normalised score: 0 = random actions, 100 = the controller that knows the goal."""
    ret = episode_returns(policy).mean()
    return float(100 * (ret - RANDOM_RETURN.mean()) / (EXPERT_RETURN.mean() - RANDOM_RETURN.mean()))


# ---- The experiment: sizes for one core (chosen on development seeds 100-104), models, runs -----
LAB = dict(updates=1_000, eval_every=250, lr=1e-3, horizon=32, rollout_batch_size=256,
           rollout_every=200, synthetic_capacity=50_000, n_diffusion_steps=10, mlp_width=128,
           mlp_blocks=2, dm_steps=800, dm_batch_size=128, dynamics_hidden=64, reward_hidden=64,
           model_epoch_steps=100, model_max_epochs=8, model_patience=3, max_holdout=2_000,
           hidden=64)  # fmt: skip
ALGOS = ("td3bc", "dydiff", "m0")  # m0: DyDiff with iterations = 0 (the single-step model only)


def train_models(data: dict, cfg: dydiff.Config, algos: list[str], times: dict) -> dict | None:
    """The dynamics, reward and diffusion models, once for all seeds (each its own seed, so the
    same whatever --algos asks for); none for TD3+BC alone, no DM for M = 0 alone."""
    if algos == ["td3bc"]:
        return None
    fits = dict(dynamics=dydiff.train_dynamics, reward=dydiff.train_reward_model,
                diffusion=dydiff.train_diffusion)  # fmt: skip
    models = {"diffusion": None}
    for name, fit in fits.items():
        if name == "diffusion" and not ({"dydiff"} & set(algos) and cfg.iterations):
            continue
        start = time.time()
        torch.manual_seed(0)
        models[name] = fit(data, cfg)
        times[name] = time.time() - start
        print(f"{name} model: trained in {times[name]:.0f} s", flush=True)
    return models


def run(algo: str, seed: int, data: dict, models: dict | None, cfg: dydiff.Config) -> list:
    """One TD3+BC run (with DyDiff's synthetic data unless td3bc); its score at each evaluation."""
    cfg = dataclasses.replace(cfg, iterations=0) if algo == "m0" else cfg
    torch.manual_seed(seed)  # same seed, same starting networks for every algorithm (paired)
    trainer = dydiff.DyDiffTrainer(cfg, data, None if algo == "td3bc" else models)
    def act(states: np.ndarray) -> np.ndarray:
        return trainer.agent.act(torch.as_tensor(states, device=cfg.device)).cpu().numpy()

    curve = []
    trainer.train(cfg.updates, evaluate=lambda update: curve.append([update, score(act)]) or {})
    return curve


def bootstrap(diffs: np.ndarray, n: int = 10_000) -> tuple[float, float]:
    """95% percentile interval of the mean of diffs, resampling the seeds with replacement."""
    means = diffs[np.random.default_rng(0).integers(0, len(diffs), (n, len(diffs)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summary_line(finals: dict[str, list[float]], iterations: int) -> str:
    """The lab's last line, for the algorithms that ran."""
    names = dict(td3bc="td3bc", dydiff="dydiff", m0="M=0")
    parts = [f"{names[a]} {np.mean(f):.1f} +- {np.std(f, ddof=1) if len(f) > 1 else np.nan:.1f}"
             for a, f in finals.items()]  # fmt: skip
    for a, b, label in (("dydiff", "td3bc", "dydiff-td3bc"), ("dydiff", "m0", f"M{iterations}-M0")):
        if a in finals and b in finals:
            d = np.array(finals[a]) - np.array(finals[b])
            lo, hi = bootstrap(d)
            parts.append(f"{label} {d.mean():+.1f} [{lo:+.1f}, {hi:+.1f}]")
    return "lab: " + ", ".join(parts)


def main(argv: list[str] | None = None) -> None:
    """The lab: the data, the models once, every seed's runs, then the line (--out: the record)."""
    start, cpu_start = time.time(), time.process_time()  # (Python's start and imports: not in)
    args = parse_args(argv)
    cfg, times = args.cfg, {}
    torch.set_num_threads(args.threads)
    algos = [a for a in ALGOS if a in args.algos]  # always in the same order
    data = make_data()
    dydiff.check_data(data)
    print(f"data: {len(data['rewards']):,} transitions of a noisy waypoint walk; models: ", end="")
    print("none (TD3+BC only)" if algos == ["td3bc"] else "trained once for all seeds", flush=True)
    models = train_models(data, cfg, algos, times)
    finals, curves = {a: [] for a in algos}, {a: {} for a in algos}
    for seed in args.seeds:
        for algo in algos:
            t = time.time()
            curves[algo][seed] = curve = run(algo, seed, data, models, cfg)
            finals[algo].append(curve[-1][1])
            times[f"{algo}_{seed}"] = took = time.time() - t
            print(f"{algo} seed {seed}: final {curve[-1][1]:.1f} ({took:.0f} s)", flush=True)
    line = summary_line(finals, cfg.iterations)
    seconds, cpu_seconds = time.time() - start, time.process_time() - cpu_start
    info = machine()
    print(f"time: {seconds:.0f} s ({cpu_seconds:.0f} s of CPU), {args.threads} thread(s), "
          f"{info['cpu']} ({info['cpu_capability']})")  # fmt: skip
    if args.out:
        command = " ".join(["python", "scripts/lab.py", *(sys.argv[1:] if argv is None else argv)])
        record = {
            "line": line, "command": command, **info, "seconds": round(seconds, 1),
            "cpu_seconds": round(cpu_seconds, 1), "threads": args.threads, "seeds": args.seeds,
            "final": {a: dict(zip(args.seeds, f)) for a, f in finals.items()}, "curves": curves,
            "phase_seconds": {k: round(v, 1) for k, v in times.items()},
            "random_return": RANDOM_RETURN.mean(), "expert_return": EXPERT_RETURN.mean(),
            "config": dataclasses.asdict(cfg),
        }  # fmt: skip
        Path(args.out).write_text(json.dumps(record, indent=1))
    print(line)


# ---- Command line and provenance ----------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="TD3+BC, DyDiff and M = 0 on a point mass, in minutes.")
    p.error = lambda message: p.exit(2, f"error: {message}\n")  # one line, no usage
    p.add_argument("--seeds", default="0-4", help="RL seeds: 0-4 or 0,1,2 (development: 100-104)")
    p.add_argument("--algos", default=",".join(ALGOS), help="which of td3bc,dydiff,m0 to run")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", help="write the results to this JSON file")
    g = p.add_argument_group("dydiff.Config fields (defaults: the lab's sizes, else Config's)")
    config_flags(g, lambda name, default: LAB.get(name, default))
    args = p.parse_args(argv)
    try:
        args.seeds = parse_seeds(args.seeds)
        args.algos = args.algos.split(",")
        if bad := [a for a in args.algos if a not in ALGOS]:
            raise ValueError(f"--algos: unknown '{bad[0]}' (choose from {','.join(ALGOS)})")
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        given = {f.name: getattr(args, f.name) for f in dataclasses.fields(dydiff.Config)}
        args.cfg = dydiff.Config(**LAB | {k: v for k, v in given.items() if v is not None})
        dydiff.validate(args.cfg)
        if args.cfg.horizon > DATA_LENGTH:
            raise ValueError(f"horizon must be at most {DATA_LENGTH} (the data's episodes)")
        torch.empty(0, device=args.cfg.device)  # a device this machine has
        if args.out:  # before minutes of work, not after
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).touch()
    except (ValueError, RuntimeError, AssertionError, OSError) as e:  # (no CUDA: AssertionError)
        p.error(str(e).splitlines()[0] if str(e) else type(e).__name__)
    return args


def parse_seeds(text: str) -> list[int]:
    """'0-4' -> [0, 1, 2, 3, 4]; '0,2,7' -> [0, 2, 7]."""
    try:
        lo, _, hi = text.partition("-")
        seeds = list(range(int(lo), int(hi) + 1)) if hi else [int(x) for x in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
        raise ValueError(f"--seeds: expected distinct seeds >= 0 like 0-4 or 0,1,2, got '{text}'")
    return seeds


def config_flags(parser, shown=lambda name, default: default, skip: tuple = ()) -> None:
    """One flag per dydiff.Config field (--keep-ratio for keep_ratio; None when not given), typed
    by its default (a tuple or a bool: a Python literal), its help the field's comment in Config's
    source, then [shown(name, default)]. train_offline.py's flags too: they cannot drift apart."""
    source = inspect.getsource(dydiff.Config)
    helps = dict(re.findall(r"^\s+(\w+): [^=]+= .*?#\s*(.*)$", source, re.M))
    for f in dataclasses.fields(dydiff.Config):
        if f.name not in skip:
            kind = type(f.default) if type(f.default) in (int, float, str) else ast.literal_eval
            text = helps.get(f.name, "").replace("%", "%%")  # argparse formats help with %
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind,
                                help=f"{text} [{shown(f.name, f.default)}]")


def machine() -> dict:
    """Which code, CPU and torch made the numbers: the commit (-dirty: edited since), the CPU's
    model name (as scripts/files.py's git_commit and cpu_name; the lab imports dydiff alone)."""
    git = ["git", "-C", str(Path(dydiff.__file__).parent), "describe", "--always", "--dirty"]
    try:
        commit = subprocess.run(git, capture_output=True, text=True).stdout.strip() or None
    except OSError:  # no git here
        commit = None
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [x.split(":", 1)[1].strip() for x in cpuinfo.splitlines() if x.startswith("model name")]
    return {"commit": commit, "cpu": (names or [platform.processor() or platform.machine()])[0],
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


if __name__ == "__main__":
    main()
