"""What trained maze policies do at the goal, where the score is made (the late-decline diagnosis).

    python benchmarks/studies/goal_study.py RUN_DIR [RUN_DIR ...] [--episodes 50] [--out runs]

A run of train_offline.py keeps the actor and its Polyak-averaged target of every evaluation in
RUN_DIR/actors/. For each run, this takes two of them: the one of the run's best evaluation (the
peak) and the last. Each is rolled out in the run's evaluation env on the evaluation episodes
(reset with train_offline.EVAL_SEED + k), once with the env's goal noise (as evaluation does) and
once with it off (the goal exactly on its cell's centre), and measured per episode:

- score: the normalised score (the evaluation's own, for the noisy goal);
- first_entry: the step of the first entry into the goal disc (within 0.45 of the goal the env
  drew), NaN if never;
- entries: how often the point enters the disc; steps_per_visit: steps inside per entry;
- speed_inside: mean speed while inside; final_dist: distance to the goal cell's centre at the end.

Means over episodes go to a table and to <out>/goal_study.json, one row per run, actor kind
(actor, actor_target), evaluation (peak, final) and goal (noisy, centre).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import minari
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import train_offline as T  # noqa: E402
from benchmarks.studies.critic_study import open_maze_run  # noqa: E402


def episode_stats(policy, env, seed: int) -> dict:
    """One evaluation episode of `policy` (states [1, 4] -> actions [1, 2]) from reset(seed)."""
    obs, done, rewards, inside, speed = env.reset(seed=seed)[0], False, [], [], []
    goal = env.unwrapped.goal.copy()
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy(obs["observation"][None])[0])
        state = obs["observation"]
        rewards.append(reward)
        inside.append(np.linalg.norm(state[:2] - goal) <= 0.45)
        speed.append(np.linalg.norm(state[2:4]))
        done = terminated or truncated
    inside = np.array(inside)
    entries = int(inside[0]) + int((inside[1:] & ~inside[:-1]).sum())
    (centre,) = env.unwrapped.maze.unique_goal_locations
    return {
        "return": float(np.sum(rewards)),
        "first_entry": float(np.argmax(inside)) if inside.any() else np.nan,
        "entries": entries,
        "steps_per_visit": inside.sum() / entries if entries else np.nan,
        "speed_inside": float(np.mean(np.array(speed)[inside])) if inside.any() else np.nan,
        "final_dist": float(np.linalg.norm(state[:2] - centre)),
    }


def mean_of_finite(values: list) -> float:
    """The mean over the episodes where a measure exists (no entry: no speed inside), else NaN."""
    v = np.array(values, dtype=float)
    return float(v[np.isfinite(v)].mean()) if np.isfinite(v).any() else float("nan")


def study(run_dir: Path, episodes: int) -> list[dict]:
    ckpt, _, _, dataset, agent = open_maze_run(run_dir)  # the agent: for its state normaliser
    args = ckpt["args"]
    evals = [r for r in ckpt["rows"] if "score" in r and np.isfinite(r["score"])]
    picks = {"peak": max(evals, key=lambda r: r["score"])["update"], "final": evals[-1]["update"]}
    rows = []
    for when, update in picks.items():
        saved = torch.load(run_dir / "actors" / f"{update}.pt", weights_only=True)
        for kind in ("actor", "actor_target"):
            agent.actor.load_state_dict(saved[kind])
            policy = lambda s: agent.act(torch.as_tensor(s, dtype=torch.float32)).numpy()  # noqa: E731
            for goal, noise in (("noisy", None), ("centre", 0.0)):
                env = T.make_eval_env(dataset)
                if noise is not None:
                    env.unwrapped.position_noise_range = noise
                per = [episode_stats(policy, env, T.EVAL_SEED + k) for k in range(episodes)]
                env.close()
                row = {k: mean_of_finite([p[k] for p in per]) for k in per[0]}
                row["reached"] = float(np.mean([np.isfinite(p["first_entry"]) for p in per]))
                returns = np.array([p["return"] for p in per])
                row["score"] = float(100 * minari.get_normalized_score(dataset, returns).mean())
                rows.append({"run": run_dir.name, "algo": args["algo"], "seed": args["seed"],
                             "eval": when, "update": update, "actor": kind, "goal": goal} | row)  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--out", type=Path, default=ROOT / "runs")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        rows = [row for run in args.runs for row in study(run, args.episodes)]
    except (T.UserError, FileNotFoundError) as e:  # no such run, an older one without actors/
        sys.exit(f"error: {e}")
    keys = ["algo", "seed", "eval", "update", "actor", "goal", "score", "reached", "first_entry",
            "entries", "steps_per_visit", "speed_inside", "final_dist"]  # fmt: skip
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print(
            "| "
            + " | ".join(f"{r[k]:.3g}" if isinstance(r[k], float) else str(r[k]) for k in keys)
            + " |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "goal_study.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
