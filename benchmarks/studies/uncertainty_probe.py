"""Does the dynamics ensemble's uncertainty see a rollout go through a wall? Before any RL run.

    python benchmarks/studies/uncertainty_probe.py --env maze2d-medium [--n 4096] [--out DIR]

With the task's dynamics ensemble (cache/ or trained as a run trains it), u(s, a) =
EnsembleDynamics.uncertainty, the quantity the remedy (--uncertainty-penalty, --uncertainty-halt)
uses, is measured on: (1) every (s, a) of the data; (2) single-step rollouts of the model (as
M = 0 makes them) from n data states with uniform random actions, horizon - 1 steps, split by
whether the model's next state lies inside a wall (rollout_error.in_walls), and at each
trajectory's first step into a wall. If u is no larger at wall crossings than on the data, a
threshold or penalty on u cannot single them out. Writes <out>/uncertainty_probe.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import train_offline as drv  # noqa: E402
from benchmarks import rollout_error as RE  # noqa: E402
from scripts.files import one_line_errors  # noqa: E402


def summary(u: np.ndarray) -> dict:
    return {"n": int(u.size), "mean": float(u.mean()), "max": float(u.max())} | {
        f"q{q:g}": float(np.quantile(u, q / 100)) for q in (50, 90, 99, 99.9)}


def run(args: argparse.Namespace, n: int) -> dict:
    task = drv.resolve_task(args.env)
    if task.maze is None:
        raise drv.UserError(f"{args.env}: the probe needs a PointMaze task (walls)")
    cfg = drv.make_config(args, task)
    data, data_key, dataset = drv.load_data(task, args)
    dyn = drv.pretrain(data, cfg, args, data_key, {}, ("dynamics",))[0]["dynamics"]
    s = torch.as_tensor(data["observations"], device=cfg.device)
    a = torch.as_tensor(data["actions"], device=cfg.device)
    u_data = torch.cat([dyn.uncertainty(torch.cat([s[i : i + 65536], a[i : i + 65536]], 1))
                        for i in range(0, len(s), 65536)])  # fmt: skip
    env = drv.make_eval_env(dataset)
    maze = env.unwrapped.maze
    env.close()
    torch.manual_seed(args.seed)
    states = s[torch.randperm(len(s), device=cfg.device)[:n]]
    u, wall = [], []
    for _ in range(cfg.horizon - 1):  # as dydiff_rollout with M = 0, the actions random
        actions = torch.rand(len(states), a.shape[1], device=cfg.device) * 2 - 1
        u.append(dyn.uncertainty(torch.cat([states, actions], 1)).cpu().numpy())
        states = dyn.predict(states, actions)
        wall.append(RE.in_walls(states.cpu().numpy(), maze))
    u, wall = np.stack(u, 1), np.stack(wall, 1)  # [n, H - 1]
    into = wall.any(1)
    return {"data": summary(u_data.cpu().numpy()), "rollout_states_in_walls": float(wall.mean()),
            "trajectories_into_a_wall": float(into.mean()),
            "rollout_steps_into_walls": summary(u[wall]), "rollout_steps_free": summary(u[~wall]),
            "first_step_into_a_wall": summary(u[into, wall[into].argmax(1)])}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    one_line_errors(p)
    p.add_argument("--n", type=int, default=4096, help="rollouts from random data states")
    p.add_argument("--out", default="results/medium_uncertainty")
    own, rest = p.parse_known_args(argv)
    args = drv.parse_args([*rest, "--out", own.out])
    if own.n < 1:
        p.error(f"--n must be at least 1, got {own.n}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        result = run(args, own.n)
    except drv.UserError as e:
        sys.exit(f"error: {e}")
    record = {"command": " ".join(["python benchmarks/studies/uncertainty_probe.py", *argv]),
              "commit": drv.COMMIT, "env": args.env, "seed": args.seed, "n": own.n} | result
    path = Path(own.out, "uncertainty_probe.json")
    drv.atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
    names = ("data", "rollout_steps_free", "rollout_steps_into_walls", "first_step_into_a_wall")
    for name in names:
        r = result[name]
        print(f"{name:26s} n {r['n']:>8,}  u median {r['q50']:.4f}  q99 {r['q99']:.4f}  "
              f"q99.9 {r['q99.9']:.4f}  max {r['max']:.4f}")
    print(f"rollout states inside walls: {result['rollout_states_in_walls']:.1%}; "
          f"trajectories into a wall: {result['trajectories_into_a_wall']:.1%} -> {path}")


if __name__ == "__main__":
    main()
