"""Why does DyDiff's critic loss grow? A look inside finished maze runs (settings are chosen on
development seeds; on the final runs this only describes what happened).

    python benchmarks/studies/critic_study.py runs/mazes_dev/maze2d-umaze/*/maze2d-umaze__*  [--out runs]

For each run folder (its checkpoint.pt, read by train_offline.read_run, and config.json) it reports:
- the critic loss: at the first log, its maximum, at the end;
- the weight of the Q term, lambda = alpha / mean|Q|, averaged over the last 10,000 updates;
- the mean Q1(s, pi(s)) on real and on synthetic states at the end (q_real, q_synthetic);
- the reward model's optimism on the synthetic transitions in the checkpoint's buffer: the mean
  reward it predicted against the true reward of the same transition (maze_reward of
  scripts/pointmaze_dataset.py, the rule of the relabelled data the critic learns from), and the
  share of transitions the model calls rewarding (prediction > 0.5) that are not;
- how old the synthetic rows are, in synthesis rounds (FIFO capacity / transitions kept per round);
- how physical the transitions are: the RMS of xy' - xy - dt v' (the position change against the
  next velocity, dt fitted on the data by least squares), for the data and the synthetic buffer,
  and the share of synthetic next states inside a wall (rollout_error.in_walls);
- whether the critic over-estimates: at the start states of the evaluation episodes (reset with
  train_offline.EVAL_SEED + k), Q1(s, pi(s)) against the discounted return of maze_reward the
  policy really gets from there in the simulator over 600 steps (the time limit ignored; 0.99^600
  leaves at most 0.24 of the value out).
The run's data (which dataset, its sizes) comes from train_offline.load_data with the run's own
settings. One table on the screen and <out>/critic_study.json.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import dydiff  # noqa: E402
import train_offline as T  # noqa: E402
from benchmarks.rollout_error import in_walls  # noqa: E402
from scripts import pointmaze_dataset as pointmaze  # noqa: E402


def open_maze_run(run_dir: Path):
    """(checkpoint, Config, data, dataset, agent) of a finished maze run: its checkpoint through
    train_offline.read_run, the Config it used (config.json), its data as the driver chose it, and
    its learner at the last evaluation. A run that is not on a maze is a UserError."""
    ckpt = T.read_run(run_dir)
    args = ckpt["args"]
    task = T.resolve_task(args["env"])
    if task.maze is None:
        raise T.UserError(f"{run_dir}: a run on {args['env']}, not on a maze")
    cfg = json.loads((run_dir / "config.json").read_text())["config"]
    config = dydiff.Config(
        **cfg | {"unet_dim_mults": tuple(cfg["unet_dim_mults"]), "device": "cpu"}
    )
    data, _, dataset = T.load_data(task, argparse.Namespace(**args), log=lambda m: None)
    s_dim, a_dim = data["observations"].shape[1], data["actions"].shape[1]
    agent = dydiff.TD3BC(s_dim, a_dim, dydiff.Normalizer(s_dim), config)
    agent.load_state_dict(ckpt["trainer"]["agent"])
    return ckpt, config, data, dataset, agent


def study(run_dir: Path) -> dict:
    ckpt, config, data, dataset, agent = open_maze_run(run_dir)
    args, rl = ckpt["args"], [r for r in ckpt["rows"] if r["phase"] == "rl"]
    critic = [r["critic_loss"] for r in rl]
    last = rl[-1]
    out = {
        "run": run_dir.name, "algo": args["algo"], "seed": args["seed"],
        "critic_loss_first": critic[0], "critic_loss_max": max(critic),
        "critic_loss_end": critic[-1],
        "lambda_last_10k": float(np.mean(
            [r["lambda"] for r in rl if r["update"] > last["update"] - 10_000])),
        "final_score": float(next(r["score"] for r in reversed(rl) if "score" in r)),
    }  # fmt: skip
    for k in ("q_real", "q_synthetic"):
        out[k] = last.get(k)
    env = T.make_eval_env(dataset)
    out |= q_against_return(agent, env, config.gamma)
    dt = data_dt(data)
    out["physics_rms_data"] = physics_rms(data["observations"], data["next_observations"], dt)
    synthetic = ckpt["trainer"]["synthetic"]["data"]
    if len(synthetic["states"]) and args["algo"] == "dydiff":
        true = torch.as_tensor(pointmaze.maze_reward(synthetic["next_states"][:, :2].numpy(), env))
        pred = synthetic["rewards"][:, 0]
        kept = float(last["kept_transitions"])
        walls = in_walls(synthetic["next_states"].numpy(), env.unwrapped.maze)
        out |= {
            "reward_pred_mean": pred.mean().item(), "reward_true_mean": true.mean().item(),
            "false_reward_share": ((pred > 0.5) & (true < 0.5)).float().sum().item()
            / max(1.0, (pred > 0.5).float().sum().item()),
            "buffer_age_rounds": config.synthetic_capacity / max(kept, 1.0),
            "physics_rms_synthetic": physics_rms(synthetic["states"], synthetic["next_states"], dt),
            "in_walls_synthetic": float(walls.mean()),
        }  # fmt: skip
    env.close()
    return out


def physics_rms(states, next_states, dt: float) -> float:
    """RMS of xy' - xy - dt v' over transitions of maze states (x, y, vx, vy) [N, 4], dt the
    data's. The simulator moves the point by about dt v' per step, so on real data this is small
    (not 0: several substeps per step, wall contacts); a step the simulator cannot make is not."""
    dxy = np.asarray(next_states)[:, :2] - np.asarray(states)[:, :2]
    return float(np.sqrt(((dxy - dt * np.asarray(next_states)[:, 2:4]) ** 2).sum(1).mean()))


def data_dt(data: dict) -> float:
    """The data's least-squares dt of xy' - xy = dt v' (see physics_rms)."""
    dxy = data["next_observations"][:, :2] - data["observations"][:, :2]
    v2 = data["next_observations"][:, 2:4]
    return float((dxy * v2).sum() / (v2 * v2).sum())


@torch.no_grad()
def q_against_return(agent: dydiff.TD3BC, env, gamma: float, episodes=50, steps=600) -> dict:
    """Mean Q1(s0, pi(s0)) and mean discounted return of pointmaze.maze_reward from the start
    states of the evaluation episodes (episode k reset with EVAL_SEED + k) of the maze env `env`."""
    q, ret = [], []
    for k in range(episodes):
        state = env.reset(seed=T.EVAL_SEED + k)[0]["observation"]
        s = agent.state_norm(torch.as_tensor(state, dtype=torch.float32)[None])
        q.append(agent.q1(torch.cat([s, agent.actor(s)], -1)).item())
        ret.append(0.0)
        for t in range(steps):  # past the time limit: the critic values the continuing task
            action = agent.act(torch.as_tensor(state, dtype=torch.float32)[None])[0].numpy()
            state = env.step(action)[0]["observation"]
            ret[-1] += gamma**t * float(pointmaze.maze_reward(state[:2], env))
    return {"q_start": float(np.mean(q)), "return_start": float(np.mean(ret))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=ROOT / "runs")
    args = p.parse_args()
    torch.set_num_threads(1)  # it runs beside training runs
    try:  # runs without a checkpoint yet are left out
        rows = [study(r) for r in args.runs if (r / "checkpoint.pt").exists()]
    except T.UserError as e:  # an older or unreadable checkpoint, missing data
        sys.exit(f"error: {e}")
    keys = [k for k in rows[0] if k != "run"] if rows else []
    print(" | ".join(keys))
    for r in rows:
        print(
            " | ".join(
                f"{r[k]:.3g}" if isinstance(r.get(k), float) else str(r.get(k)) for k in keys
            )
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "critic_study.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
