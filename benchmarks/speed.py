"""Speed benchmark of the DyDiff implementation, each figure beside its yardstick or target.

    python benchmarks/speed.py [--threads N] [--quick] [--run-dir RUN ...] [--out results]

Items: TD3+BC updates/s (ours, fed by DyDiff's batch mixing, against the plain loop of
benchmarks/td3bc_plain.py run here as a subprocess with the same threads and batch, in turns, three
times each: ours should be no slower than it, within 10%), diffusion-model training steps/s (MLP default and U-Net), one DyDiff
synthesis round, one dynamics-ensemble epoch, 100 evaluation episodes on maze2d-umaze, and the peak
RSS of this process. --threads defaults to the driver's default (half the cores). --run-dir adds the phase times of finished runs (their summary.json), each
under its folder's name and its --threads (config.json; 0: torch's default, all cores), e.g. a
default run and two runs that shared the cores.
Models are untrained and data random (except evaluation, on the --smoke maze data of
train_offline.py, generated into MINARI_DATASETS_PATH if missing, arrays cached in --cache): only
the speed means anything. Prints one table and writes the same numbers to results/speed.json
(--out: another folder). Time it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import dydiff  # noqa: E402
import train_offline as drv  # noqa: E402
from benchmarks.rollout_error import portable  # noqa: E402
from scripts.files import cpu_name, one_line_errors  # noqa: E402

PLAIN = ROOT / "benchmarks" / "td3bc_plain.py"  # the team's yardstick
S_DIM, A_DIM = 4, 2  # maze2d sizes


def timed(fn, n: int, warmup: int) -> float:
    """Seconds per call of fn() over n calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def random_buffer(n: int) -> dydiff.ReplayBuffer:
    buf = dydiff.ReplayBuffer(S_DIM, A_DIM, n, "cpu")
    buf.add(
        {
            "states": torch.randn(n, S_DIM),
            "actions": torch.rand(n, A_DIM) * 2 - 1,
            "rewards": torch.randn(n, 1),
            "next_states": torch.randn(n, S_DIM),
            "dones": torch.zeros(n, 1),
        }
    )
    return buf


def make_agent(cfg: dydiff.Config, states: torch.Tensor) -> dydiff.TD3BC:
    return dydiff.TD3BC(S_DIM, A_DIM, dydiff.Normalizer(S_DIM).fit_zscore(states), cfg)


def bench_td3bc(cfg, n: int, threads: int, rounds: int = 3) -> tuple[float, float]:
    """Our update fed by sample_mixed (real and synthetic buffers full, as in DyDiffTrainer.step),
    and the plain loop's updates/s from a subprocess with the same threads and batch; in turns,
    `rounds` times each, so a drift of the machine's speed hits both: the medians."""
    real, synthetic = random_buffer(100_000), random_buffer(100_000)
    agent = make_agent(cfg, real.data["states"])
    step = lambda: agent.update(
        dydiff.sample_mixed(real, synthetic, cfg.batch_size, cfg.real_ratio)
    )  # noqa: E731
    cmd = [sys.executable, str(PLAIN), "--state-dim", str(S_DIM), "--action-dim", str(A_DIM),
           "--batch", str(cfg.batch_size), "--updates", str(n // rounds), "--threads", str(threads)]  # fmt: skip
    for _ in range(200):  # warm-up
        step()
    ours, plain = [], []
    for _ in range(rounds):
        ours.append(1 / timed(step, n // rounds, warmup=0))
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        plain.append(float(re.search(r"([\d.]+) updates/s", out).group(1)))
    return float(np.median(ours)), float(np.median(plain))


def bench_diffusion(cfg, n: int) -> float:
    """Training steps/s as in train_diffusion: window gather, .loss, Adam step, update_ema."""
    dm = dydiff.build_diffusion(cfg, S_DIM, A_DIM)
    rows = torch.rand(20_000, S_DIM + A_DIM) * 2 - 1
    starts, offsets = torch.arange(len(rows) - cfg.horizon), torch.arange(cfg.horizon)
    mask, opt = dm.condition_mask(S_DIM), torch.optim.Adam(dm.denoiser.parameters(), lr=cfg.dm_lr)

    def step():
        pick = starts[torch.randint(len(starts), (cfg.dm_batch_size,))]
        loss = dm.loss(dm.norm(rows[pick[:, None] + offsets]), mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        dm.update_ema()

    return 1 / timed(step, n, warmup=max(3, n // 10))


def bench_synthesis(cfg, n: int) -> float:
    """Seconds for one synthesise() round of rollout_batch_size trajectories (untrained models)."""
    dyn, dm = dydiff.build_dynamics(cfg, S_DIM, A_DIM), dydiff.build_diffusion(cfg, S_DIM, A_DIM)
    rew = dydiff.build_reward_model(cfg, S_DIM, A_DIM)
    agent = make_agent(cfg, torch.randn(1000, S_DIM))
    s0 = torch.randn(cfg.rollout_batch_size, S_DIM)
    term = drv.termination_fn(drv.resolve_task("maze2d-umaze"))
    small = dataclasses.replace(cfg, rollout_batch_size=64)
    dydiff.synthesise(s0[:64], agent.act, dyn, dm, rew, small, term)  # warm-up at a small size
    return timed(lambda: dydiff.synthesise(s0, agent.act, dyn, dm, rew, cfg, term), n, warmup=0)


def bench_dynamics_epoch(cfg, n: int) -> float:
    """Seconds per epoch (model_epoch_steps steps) of the ensemble's loop in fit_with_holdout."""
    dyn = dydiff.build_dynamics(cfg, S_DIM, A_DIM)
    x, y = torch.randn(20_000, S_DIM + A_DIM), torch.randn(20_000, S_DIM) * 0.01
    boot = torch.randint(len(x), (cfg.n_members, len(x)))
    opt = torch.optim.Adam(dyn.parameters(), lr=cfg.model_lr)

    def step():
        idx = boot.gather(1, torch.randint(boot.shape[1], (cfg.n_members, cfg.model_batch_size)))
        loss = dyn.loss(x[idx], y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed(step, n, warmup=max(3, n // 10)) * cfg.model_epoch_steps


def bench_evaluation(cfg, n_episodes: int, cache: Path) -> float:
    """Seconds for 100 umaze episodes (scaled from n_episodes) of train_offline.evaluate, which
    calls the policy once per step on one state; the data is the driver's --smoke maze data."""
    args = drv.parse_args(["--env", "maze2d-umaze", "--smoke", "--cache", str(cache)])
    data, _, dataset = drv.load_data(
        drv.resolve_task(args.env), args, log=lambda m: print("  " + m)
    )
    agent = make_agent(cfg, torch.as_tensor(data["observations"], dtype=torch.float32))
    policy = lambda s: agent.act(torch.as_tensor(s, dtype=torch.float32)).numpy()  # noqa: E731
    drv.evaluate(policy, dataset, 2, seed=drv.EVAL_SEED)  # warm-up: env creation, first steps
    start = time.perf_counter()
    drv.evaluate(policy, dataset, n_episodes, seed=drv.EVAL_SEED)
    return (time.perf_counter() - start) * 100 / n_episodes


def cpu() -> str:
    """The CPU's model name, its core count and whether it has AVX-512 (speeds differ by 2-3x)."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return f"{cpu_name()}, {os.cpu_count()} cores, " + ("AVX-512" if "avx512f" in flags else "no AVX-512")


def finished_runs(run_dirs: list[Path]) -> list[dict]:
    """Name, --threads and phase times of each finished run (config.json and summary.json)."""
    runs = []
    for run in run_dirs:
        if not (run / "summary.json").is_file() or not (run / "config.json").is_file():
            raise ValueError(f"--run-dir {run}: no finished run there (summary.json, config.json)")
        threads = json.loads((run / "config.json").read_text())["args"]["threads"]
        phases = json.loads((run / "summary.json").read_text())["phase_seconds"]
        runs.append({"run": run.resolve().name, "threads": threads, "phase_seconds": phases})
    return runs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    one_line_errors(p)
    p.add_argument(
        "--threads",
        type=int,
        default=drv.THREADS,
        help="torch threads (0: all cores; default: the driver's)",
    )
    p.add_argument(
        "--quick", action="store_true", help="fewer iterations: a fast check, not a measurement"
    )
    p.add_argument("--run-dir", type=Path, nargs="+", action="extend", default=[], metavar="RUN",
                   help="finished runs (several, or the flag again): phase times")  # fmt: skip
    p.add_argument("--out", type=Path, default=ROOT / "results", help="folder for speed.json")
    p.add_argument("--cache", type=Path, default=ROOT / "cache", help="cached arrays (evaluation)")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    if args.threads < 0:
        p.error("--threads must be >= 0")
    try:  # before the minutes of measuring
        runs = finished_runs(args.run_dir)
    except ValueError as e:
        p.error(str(e))
    if args.threads:
        torch.set_num_threads(args.threads)
    threads, q = torch.get_num_threads(), args.quick
    torch.manual_seed(0)
    cfg = dydiff.Config()  # defaults: horizon 32, MLP denoiser, 1024 rollouts, M = 2
    rows: list[dict] = []  # name, value, unit, reference (text), ok (bool or None)

    def add(name, value, unit, ref="", ok=None):
        rows.append(
            {"item": name, "value": round(value, 3), "unit": unit, "reference": ref, "ok": ok}
        )
        print(f"  done: {name}", flush=True)

    ours, plain = bench_td3bc(cfg, 300 if q else 3000, threads)
    add("TD3+BC updates/s (batch 256)", ours, "upd/s", f"plain loop {plain:.0f} upd/s")
    add("  ratio ours / plain", ours / plain, "x", ">= 0.9x (no slower, within 10%)",
        ours / plain >= 0.9)  # fmt: skip
    for kind, n in (("mlp", 20 if q else 300), ("unet", 5 if q else 60)):
        rate = bench_diffusion(dataclasses.replace(cfg, denoiser=kind), n)
        add(
            f"DM training steps/s ({kind})",
            rate,
            "steps/s",
            f"{cfg.dm_steps} steps = {cfg.dm_steps / rate / 60:.1f} min"
            + ("" if kind == "mlp" else " (ref.)"),
        )
    t = bench_synthesis(cfg, 1 if q else 3)
    add(
        f"synthesis round ({cfg.rollout_batch_size} x H{cfg.horizon}, M={cfg.iterations})",
        t,
        "s",
        "< 10 s",
        t < 10,
    )
    t = bench_dynamics_epoch(cfg, 30 if q else 300)
    add(
        f"dynamics epoch ({cfg.model_epoch_steps} steps x {cfg.n_members})",
        t,
        "s",
        f"max {cfg.model_max_epochs} epochs = {t * cfg.model_max_epochs / 60:.1f} min",
    )
    t = bench_evaluation(cfg, 10 if q else 100, args.cache)
    add("evaluation, 100 umaze episodes" + (" (from 10)" if q else ""), t, "s", "< 15 s", t < 15)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    add("peak RSS of this benchmark", peak, "MB", "< 2048 MB (default run)", peak < 2048)

    print(
        f"\nDyDiff speed, torch {torch.__version__}, {threads} thread(s)" + (", QUICK" if q else "")
    )
    print(f"{'item':<44} {'measured':>12}  {'yardstick / target':<34} ok")
    print("-" * 96)
    for r in rows:
        mark = {True: "yes", False: "NO", None: ""}[r["ok"]]
        print(f"{r['item']:<44} {r['value']:>8.4g} {r['unit']:<7} {r['reference']:<34} {mark}")
    for r in runs:
        times = ", ".join(f"{k} {v:.0f} s" for k, v in r["phase_seconds"].items())
        print(f"run {r['run']}, --threads {r['threads']}: {times}")

    out = args.out / "speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": " ".join(["python benchmarks/speed.py", *map(portable, argv)]),
                "commit": drv.COMMIT,
                "cpu": cpu(),
                "torch": torch.__version__,
                "threads": threads,
                "quick": q,
                "date": datetime.datetime.now().isoformat(timespec="seconds"),
                "runs": runs,  # phase times of finished runs, by folder name
                "items": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
