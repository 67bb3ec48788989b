"""Rollout error against the simulator (the paper's Fig. 3), and a picture of policy injection.

    python benchmarks/rollout_error.py --env maze2d-umaze [--policy-run RUN_DIR] [--smoke]
        [--seed 0] [--threads N] [--out results] [--cache cache] [any dydiff.Config flag]

From N start states of the data (256; 16 with --smoke), a fixed policy is rolled out for H - 1
steps in the real simulator (the state set to the data's: PointMaze x, y, vx, vy; Hopper with its
x position, which the observation omits and nothing depends on, at 0), autoregressively with the
dynamics ensemble (M = 0), and with DyDiff (that rollout, then M policy-injection rounds) for M in
{1, iterations, 4}. Measured: the per-step MSE against the simulator over the state dimensions
(Hopper: over the start states whose simulated hopper has not fallen by that step), and in mazes
the share of states inside walls. Policies: the data's own (the mazes' expert controller; for the
local Hopper data the SAC policy that made it) and, with --policy-run, the actor of a finished
DyDiff or TD3+BC run (read by train_offline.read_run). --seed seeds the
start states and the rollouts. Every flag of train_offline.py (--smoke, --cache, --model-seed,
--device, Config flags) means what it means there. The models are train_offline.pretrain's: from
--cache when the same code, data, settings and --model-seed made them, as for the training runs.
With --policy-run every setting is the run's own (a flag that says otherwise is refused; --seed,
--threads, --device and --cache stay this command's), and for a DyDiff run the models are the very
files the run used (train_offline.run_models): its policy is rolled out with its own models (an
M = 0 run has no DM: the DM of its settings, and M = 2, as for a TD3+BC run).

Writes to --out: rollout_error.json and rollout_error.png (per-step MSE, one panel per policy), and
policy_injection.png (a few start states: the simulator, the dynamics rollout and the states after
each injection round, for one policy; mazes only). With --smoke every name gets a _smoke suffix.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import dydiff  # noqa: E402
import train_offline as drv  # noqa: E402
from scripts import pointmaze_dataset as pointmaze  # noqa: E402

EXPERT, TRAINED = "expert", "trained policy (--policy-run)"
SAC_POLICY = "the data's SAC policy"  # local Hopper data: scripts/mujoco_dataset.py keeps it


def sac_policy(device: str):
    """The deterministic action of the SAC policy that made the local Hopper data, batched."""
    from stable_baselines3 import SAC  # only here: the maze experiments do not need it

    from scripts import mujoco_dataset

    folder = drv.get_dataset_path(mujoco_dataset.local_dataset_id("medium-replay"))
    actor = SAC.load(Path(folder) / mujoco_dataset.POLICY_FILE, device=device).actor

    def policy(states: torch.Tensor) -> torch.Tensor:  # [..., S] -> [..., A]
        flat = states.reshape(-1, states.shape[-1])  # SB3 flattens all but the first dimension
        return actor(flat, deterministic=True).detach().reshape(*states.shape[:-1], -1)

    return policy


def expert_policy(maze, goal_xy: np.ndarray, device: str):
    """The data's expert as a pure function of the state (x, y, vx, vy), batched in torch: head for
    the centre of the next cell on the plan (the exact goal in the goal cell) with the PD law
    a = clip(10 (waypoint - pos) - vel). No jitter or waypoint memory, so the simulator, the
    dynamics model and DyDiff all roll out exactly the same policy. The plan is the Q-iteration
    table of WaypointController (a next cell for every cell); the data's expert plans with DFS. In
    the U-maze both give the same path (there is only one); medium and large would need the DFS path
    from each start cell instead."""
    goal_cell = tuple(int(v) for v in maze.cell_xy_to_rowcol(goal_xy))
    plan = pointmaze.WaypointController(maze, np.random.default_rng(0))._plan(goal_cell)
    grid = np.zeros((len(maze.maze_map), len(maze.maze_map[0]), 2), np.float32)
    for cell, nxt in plan.items():
        grid[cell] = goal_xy if goal_cell in (cell, nxt) else maze.cell_rowcol_to_xy(np.array(nxt))
    table, s = torch.as_tensor(grid, device=device), maze.maze_size_scaling

    def policy(states: torch.Tensor) -> torch.Tensor:
        i = ((maze.y_map_center - states[..., 1]) / s).floor().long().clamp(0, table.shape[0] - 1)
        j = ((states[..., 0] + maze.x_map_center) / s).floor().long().clamp(0, table.shape[1] - 1)
        return (10 * (table[i, j] - states[..., :2]) - states[..., 2:4]).clamp(-1, 1)

    return policy


def in_walls(states: np.ndarray, maze) -> np.ndarray:
    """Whether each state's (x, y) lies inside a wall cell: impossible in the simulator."""
    grid = np.array([[cell == 1 for cell in row] for row in maze.maze_map])  # (goal cells: "g")
    i = np.floor((maze.y_map_center - states[..., 1]) / maze.maze_size_scaling).astype(int)
    j = np.floor((states[..., 0] + maze.x_map_center) / maze.maze_size_scaling).astype(int)
    return grid[i.clip(0, grid.shape[0] - 1), j.clip(0, grid.shape[1] - 1)]


def set_state(env, s: np.ndarray) -> None:
    """Put the simulator in the observed state s (after a reset)."""
    s = s.astype(float)
    if hasattr(env.unwrapped, "point_env"):  # the ball
        env.unwrapped.point_env.set_state(s[:2], s[2:])
    else:  # hopper: qpos = (x, s[:5]), qvel = s[5:]
        env.unwrapped.set_state(np.r_[0.0, s[:5]], s[5:])


def simulate(env, policy, s0: np.ndarray, horizon: int, device: str, seed: int, actions=None):
    """States [N, H, S] of the real simulator under `policy`, one start state at a time; NaN
    after a termination (a fallen hopper). With `actions` [N, >= H - 1, A] instead of a policy:
    those actions, open loop (benchmarks/dm_fidelity.py)."""
    sim = np.full((len(s0), horizon, s0.shape[1]), np.nan, np.float32)
    sim[:, 0] = s0
    for k in range(len(s0)):
        env.reset(seed=seed + k)  # then the state is set to s0[k]
        set_state(env, s0[k])
        for t in range(1, horizon):
            if actions is None:
                a = policy(torch.as_tensor(sim[k, t - 1][None], device=device))[0].cpu().numpy()
            else:
                a = actions[k, t - 1]
            obs, _, terminated, _, _ = env.step(a)
            sim[k, t] = obs["observation"] if isinstance(obs, dict) else obs
            if terminated:
                break
    return sim


def injection_rounds(s0, policy, models: dict, horizon: int, rounds: int, seed: int) -> list:
    """States [N, H, S] of the dynamics rollout (item 0) and after each injection round 1..rounds.

    dydiff_rollout returns only its last round, but the random draws of round k are the same for
    any number of rounds >= k: with the same seed, the call with m rounds repeats the call with
    m - 1 and adds one round. So one call per m gives every round without copying the rollout."""
    out = []
    for m in range(rounds + 1):
        torch.manual_seed(seed)
        states, _ = dydiff.dydiff_rollout(
            s0, policy, models["dynamics"], models["diffusion"], horizon, m
        )
        out.append(states.cpu().numpy())
    return out


def label(m: int) -> str:
    return "dynamics (single-step)" if m == 0 else f"DyDiff M={m}"


def measure(sim: np.ndarray, rounds: list, maze, iterations: int, done_fn=None) -> dict:
    """Per-step MSE against the simulator (over the start states still alive there) and, in
    mazes, the share of states inside walls, per method; with done_fn (Hopper: the driver's
    termination rule), the share of trajectories that have ended (fallen) by step H - 1."""
    walls = (lambda states: float(in_walls(states[:, 1:], maze).mean())) if maze else None
    out = {"simulator": {"in_walls": walls(sim)} if maze else {}}
    alive = np.isfinite(sim).all(2)  # [N, H]
    out["simulator"]["alive"] = alive.mean(0).tolist()
    if done_fn:
        out["simulator"]["fallen"] = 1 - float(alive[:, -1].mean())
    for m in sorted({0, 1, iterations, 4}):
        err = np.where(alive, ((rounds[m] - np.nan_to_num(sim)) ** 2).mean(2), 0.0)
        out[label(m)] = {"mse": (err.sum(0) / np.maximum(alive.sum(0), 1)).tolist()}
        if maze:
            out[label(m)]["in_walls"] = walls(rounds[m])
        if done_fn:
            n, h, s = rounds[m][:, 1:].shape
            done = done_fn(torch.as_tensor(rounds[m][:, 1:]).reshape(-1, s)).reshape(n, h)
            out[label(m)]["fallen"] = float(done.any(1).float().mean())
    return out


OWN = ("seed", "threads", "device", "cache", "out")  # this command's, with --policy-run too


def settings(policy_run: str | None, args: argparse.Namespace):
    """(checkpoint, settings): without --policy-run (None, the command line's); with it the run's
    checkpoint and the run's settings but OWN. A flag given with another value than the run's is
    refused: the Config, so the shapes of the models, are the run's."""
    if not policy_run:
        return None, args
    ckpt = drv.read_run(policy_run)
    defaults, used = vars(drv.parse_args([])), ckpt["args"]
    for k, v in vars(args).items():
        if k not in OWN and v != defaults[k] and v != used[k]:
            flag = "--" + k.replace("_", "-")
            raise drv.UserError(f"--policy-run takes every setting from the run: drop {flag}")
    return ckpt, argparse.Namespace(**used | {k: getattr(args, k) for k in OWN})


def plot_errors(results: dict, h: int, path: Path) -> None:
    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (name, methods) in zip(axes[0], results.items()):
        for method, r in methods.items():
            if "mse" in r:
                ax.plot(range(1, h), r["mse"][1:], label=method)
        ax.set(yscale="log", xlabel="rollout step h", ylabel="MSE vs simulator", title=name)
        ax.grid(alpha=0.3)
        ax.legend()
    drv.save_figure(fig, path)


def plot_injection(path: Path, maze, sim: np.ndarray, rounds: list, picks, name: str) -> None:
    """One panel per start state, zoomed on its trajectories: the simulator (black), the dynamics
    rollout (M = 0, dashed) and the states after each injection round, light to dark. Each title
    gives their mean (x, y) distance to the simulator."""
    shades = plt.cm.Blues(np.linspace(0.35, 1.0, len(rounds) - 1))
    styles = [dict(color="tab:orange", ls="--", label="dynamics model (M = 0)")] + [
        dict(color=c, label=f"after injection round {m}") for m, c in enumerate(shades, 1)
    ]
    names = ["M=0"] + [f"round {m}" for m in range(1, len(rounds))]
    fig, axes = plt.subplots(2, (len(picks) + 1) // 2, figsize=(8.5, 8.8), squeeze=False)
    for n, (ax, k) in enumerate(zip(axes.flat, picks), 1):
        pointmaze.draw_maze(ax, maze)
        ax.plot(*sim[k, :, :2].T, color="k", lw=4, label="simulator", zorder=3)
        for states, style in zip(rounds, styles):
            ax.plot(*states[k, :, :2].T, marker="o", ms=2.5, lw=1.5, zorder=4, **style)
        ax.plot(*sim[k, 0, :2], "o", color="k", ms=9, mfc="w", mew=2, label="start s0", zorder=5)
        dist = [np.linalg.norm(r[k, :, :2] - sim[k, :, :2], axis=1).mean() for r in rounds]
        dists = ", ".join(f"{w} {d:.2f}" for w, d in zip(names, dist))
        ax.set_title(f"start {n}, mean distance to the simulator:\n{dists}", fontsize=10)
        points = np.concatenate([sim[k, :, :2], *(r[k, :, :2] for r in rounds)])
        centre, half = (points.max(0) + points.min(0)) / 2, max(np.ptp(points, 0).max() / 2, 0.6)
        ax.set(xlim=centre[0] + np.array([-1, 1]) * (half + 0.2), aspect="equal",
               ylim=centre[1] + np.array([-1, 1]) * (half + 0.2))  # fmt: skip
    for ax in axes.flat[len(picks) :]:
        ax.axis("off")
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="lower center", ncol=3)
    fig.suptitle(f"Policy injection, {name}, H = {sim.shape[1]}:\nthe 4 of {len(sim)} start "
                 "states where the single-step model ends farthest from the simulator")  # fmt: skip
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    drv.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def portable(word: str) -> str:
    """A command-line word with an absolute path made relative to the repository (or its name)."""
    flag, value = word.split("=", 1) if word.startswith("--") and "=" in word else ("", word)
    if os.path.isabs(value):
        p = Path(value).resolve()
        value = str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else f"<elsewhere>/{p.name}"
    return f"{flag}={value}" if flag else value


def print_table(results: dict, h: int, iterations: int) -> None:
    for name, methods in results.items():
        dyn, dm = methods[label(0)]["mse"], methods[label(iterations)]["mse"]
        cross = next((t for t in range(1, h) if all(dm[u] < dyn[u] for u in range(t, h))), None)
        labels = [k for k in methods if "mse" in methods[k]]
        print(f"\n{name}: per-step MSE against the simulator")
        print("  h    " + "".join(f"{k:>24}" for k in labels))
        for t in sorted({1, 2, 4, 8, 16, h - 1} & set(range(1, h))):
            print(f"  {t:<5d}" + "".join(f"{methods[k]['mse'][t]:>24.4g}" for k in labels))
        if "in_walls" in methods["simulator"]:
            print("  states inside walls: " + ", ".join(
                f"{k} {r['in_walls']:.1%}" for k, r in methods.items()))  # fmt: skip
        else:
            print(f"  simulated hoppers still up at h = {h - 1}: "
                  f"{methods['simulator']['alive'][-1]:.0%} (the MSE is over those)")  # fmt: skip
            print(f"  fallen by h = {h - 1}: " + ", ".join(
                f"{k} {r['fallen']:.0%}" for k, r in methods.items()))  # fmt: skip
        below = f"stays below it from h = {cross} on" if cross else "does not stay below it"
        print(f"  DyDiff M={iterations} against the single-step model: {below}")


def open_run(policy_run: str | None, args: argparse.Namespace):
    """(settings, task, Config, data, dataset, models, agent) of --policy-run (its settings, its
    models, its final learner) or, without one, of the command line (agent None). A run without a
    DM (TD3+BC, M = 0) gets the DM of its settings and M = its M or 2. A task whose simulator's state
    cannot be set: UserError."""
    ckpt, args = settings(policy_run, args)
    task = drv.resolve_task(args.env)
    if task.maze is None and not task.dataset_id.startswith("local/hopper/"):
        raise drv.UserError(f"{args.env}: this experiment sets the state of a PointMaze or of the "
                            "local Hopper data's simulator only")  # fmt: skip
    cfg = drv.make_config(args, task)
    data, data_key, dataset = drv.load_data(task, args)
    models = drv.run_models(ckpt, cfg, data) if ckpt else None  # the files a DyDiff run used
    if models is None or "diffusion" not in models:  # no run, TD3+BC, or an M = 0 run (no DM):
        cfg.iterations = cfg.iterations or dydiff.Config.iterations  # these settings' models, with
        names = ("diffusion",) if models else tuple(drv.MODELS)  # a DM; M = 0 has the other two
        models = (models or {}) | drv.pretrain(data, cfg, args, data_key, {}, names)[0]
    agent = None
    if ckpt:
        s_dim, a_dim = data["observations"].shape[1], data["actions"].shape[1]
        agent = dydiff.TD3BC(s_dim, a_dim, dydiff.Normalizer(s_dim), cfg)
        agent.load_state_dict(ckpt["trainer"]["agent"])
    return args, task, cfg, data, dataset, models, agent


def run(argv: list[str], own: argparse.Namespace, args: argparse.Namespace) -> None:
    args, task, cfg, data, dataset, models, agent = open_run(own.policy_run, args)
    env = drv.make_eval_env(dataset)
    maze = getattr(env.unwrapped, "maze", None)
    if maze:
        policies = {EXPERT: expert_policy(maze, maze.unique_goal_locations[0], cfg.device)}
    else:
        policies = {SAC_POLICY: sac_policy(cfg.device)}
    if agent:
        policies[TRAINED] = agent.act
    n, h = (16 if args.smoke else 256), cfg.horizon
    rng = np.random.default_rng(args.seed)
    s0 = data["observations"][rng.choice(len(data["observations"]), n, replace=False)]
    results, shown = {}, TRAINED if own.policy_run else next(iter(policies))
    done_fn = drv.termination_fn(task)  # Hopper's rule: which rollouts have fallen; mazes: None
    for name, policy in policies.items():
        sim = simulate(env, policy, s0, h, cfg.device, args.seed)
        start = torch.as_tensor(s0, device=cfg.device)
        rounds = injection_rounds(start, policy, models, h, max(4, cfg.iterations), args.seed)
        results[name] = measure(sim, rounds, maze, cfg.iterations, done_fn)
        if name == shown and maze:  # the picture: the 4 start states where the single-step model drifts
            drift = np.linalg.norm(rounds[0][:, -1, :2] - sim[:, -1, :2], axis=1)  # most at step H
            picks = np.argsort(-drift)[:4]  # (the title says so: they are not typical)
            picture = (sim, rounds[: cfg.iterations + 1], picks, shown)
    env.close()

    out, tag = Path(own.out), "_smoke" if args.smoke else ""
    plot_errors(results, h, out / f"rollout_error{tag}.png")
    if maze:
        plot_injection(out / f"policy_injection{tag}.png", maze, *picture)
    record = {"command": " ".join(["python benchmarks/rollout_error.py", *map(portable, argv)]),
              "commit": drv.COMMIT, "seed": args.seed, "horizon": h,
              "iterations": cfg.iterations, "n_start_states": n, "smoke": args.smoke,
              "policy_run": portable(own.policy_run) if own.policy_run else None,
              "per_method": results}  # fmt: skip
    text = json.dumps(record, indent=1)
    drv.atomic_write(out / f"rollout_error{tag}.json", lambda tmp: tmp.write_text(text))
    print_table(results, h, cfg.iterations)
    injection = f" and {out}/policy_injection{tag}.png" if maze else ""
    print(f"\nwrote {out}/rollout_error{tag}.json, .png{injection}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    epilog = (
        "Every other flag is train_offline.py's, meaning what it means there: --env, --seed, "
        "--smoke, --cache, --model-seed, --threads, --device, dydiff.Config flags."
    )
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], epilog=epilog, allow_abbrev=False
    )
    p.add_argument("--policy-run", metavar="RUN_DIR", help="also roll out this run's policy")
    p.add_argument("--out", default="results", help="folder for the JSON and the pictures")
    own, rest = p.parse_known_args(argv)
    args = drv.parse_args([*rest, "--out", own.out])  # --seed, --smoke, --cache, Config flags...
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        run(argv, own, args)
    except (drv.UserError, FloatingPointError) as e:  # bad input, or a NaN loss: one line
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("\ninterrupted")


if __name__ == "__main__":
    main()
