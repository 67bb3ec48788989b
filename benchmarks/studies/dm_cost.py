"""What a DM candidate costs a run (the DM choice's cost limit), measured in one process on one machine.

    python benchmarks/studies/dm_cost.py --env maze2d-umaze --base BEFORE_RL RL [--threads 1]
        [--candidate "--dm-steps 20000" ...]

For the default settings of --env and each --candidate (train_offline.py flags), it times, with
benchmarks/speed.py's functions on random data of the maze's sizes (only the speed means
anything): DM training steps/s and one DyDiff synthesis round (M = 2, rollout_batch_size
rollouts). What a candidate does not change comes from --base, two numbers of a default run of
the task on this machine (its summary.json's phase_seconds): the seconds before RL without the
DM (data + dynamics + reward) and the RL seconds of a cached run. Then, per candidate:
    cached run = RL + rounds x (round - default round),   rounds = updates / rollout_every
    first run  = cached run + BEFORE_RL + dm_steps / (DM steps/s)
and both against the default's, which the choice rule limits to 1.25x (cached) and 1.5x (first).
Time it on an otherwise idle machine. Prints a table; writes nothing.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import train_offline as drv  # noqa: E402
from benchmarks import speed  # noqa: E402
from scripts.files import one_line_errors  # noqa: E402


def config(flags: list[str], env: str):
    """The Config a run of env with these train_offline.py flags uses (bad flags: its one line)."""
    cfg = drv.make_config(drv.parse_args(["--env", env, *flags]), drv.resolve_task(env))
    cfg.device = "cpu"
    return cfg


def measure(cfg) -> dict:
    steps_per_s = speed.bench_diffusion(cfg, 60)
    return {"dm_steps_per_s": steps_per_s, "dm_seconds": cfg.dm_steps / steps_per_s,
            "round_seconds": speed.bench_synthesis(cfg, 3)}


def costs(rows: dict, rounds: int, before_rl: float, rl: float) -> None:
    """Adds each row's estimated cached and first run seconds (rows["default"] is the base)."""
    default_round = rows["default"]["round_seconds"]
    for r in rows.values():
        r["cached"] = rl + rounds * (r["round_seconds"] - default_round)
        r["first"] = r["cached"] + before_rl + r["dm_seconds"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    one_line_errors(p)
    p.add_argument("--env", default="maze2d-umaze")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--candidate", action="append", default=[], help="train_offline.py flags")
    p.add_argument("--base", nargs=2, type=float, required=True, metavar=("BEFORE_RL", "RL"),
                   help="a default run's seconds: data + dynamics + reward (no DM), and RL")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    configs = {"default": config([], args.env)}  # every candidate's flags checked first
    configs |= {c: config(shlex.split(c), args.env) for c in args.candidate}
    base = configs["default"]
    for name, cfg in configs.items():  # the formula's RL time and rounds are the default's
        if (cfg.updates, cfg.rollout_every) != (base.updates, base.rollout_every):
            p.error(f"--candidate {name!r} changes --updates or --rollout-every: DMs only")
    rows = {name: measure(cfg) for name, cfg in configs.items()}
    before_rl, rl = args.base
    default = rows["default"]
    rounds = base.updates // base.rollout_every
    print(f"{args.env}, {args.threads} thread(s), {speed.cpu()}; base: {before_rl:.0f} s before "
          f"RL (no DM), {rl:.0f} s RL; {rounds} synthesis rounds")
    print("| candidate | DM steps/s | DM s | M=2 round s | cached run s (x default) "
          "| first run s (x default) |")
    print("|---|---|---|---|---|---|")
    costs(rows, rounds, before_rl, rl)
    for name, r in rows.items():
        print(f"| {name} | {r['dm_steps_per_s']:.1f} | {r['dm_seconds']:.0f} | "
              f"{r['round_seconds']:.2f} | {r['cached']:.0f} "
              f"({r['cached'] / default['cached']:.2f}x) | "
              f"{r['first']:.0f} ({r['first'] / default['first']:.2f}x) |")


if __name__ == "__main__":
    main()
