"""Why does DyDiff's critic loss grow? A look inside finished maze runs (settings are chosen on
development seeds; on the final runs this only describes what happened).

    python benchmarks/critic_study.py runs/dev/maze2d-umaze/*/maze2d-umaze__*  [--out results/dev]

For each run folder (metrics.csv and checkpoint.pt of train_offline.py) it reports:
- the critic loss: at the first log, its maximum, at the end;
- the mean Q1(s, pi(s)) on real and on synthetic states at the end (q_real, q_synthetic);
- the reward model's optimism on the synthetic transitions in the checkpoint's buffer: the mean
  reward it predicted against the true maze reward of the same transition (1 if the next position
  is within 0.45 of the evaluation goal), and the share of transitions the model calls rewarding
  (prediction > 0.5) that are not;
- how old the synthetic rows are, in synthesis rounds (FIFO capacity / transitions kept per round);
- whether the critic over-estimates: at the start states of the 50 evaluation episodes, Q1(s, pi(s))
  against the discounted return the policy really gets from there in the simulator, with the
  reward the critic learns (next position within 0.45 of the goal cell's centre), over 600 steps
  (the time limit ignored; 0.99^600 leaves at most 0.24 of the value out).
One table on the screen and <out>/critic_study.json.
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import dydiff  # noqa: E402
import train_offline as T  # noqa: E402


def study(run_dir: Path) -> dict:
    with open(run_dir / "metrics.csv") as f:
        rl = [r for r in csv.DictReader(f) if r["phase"] == "rl"]
    ckpt = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    args, cfg = ckpt["args"], json.loads((run_dir / "config.json").read_text())["config"]
    critic = [float(r["critic_loss"]) for r in rl]
    last = rl[-1]
    out = {
        "run": run_dir.name, "algo": args["algo"], "seed": args["seed"],
        "critic_loss_first": critic[0], "critic_loss_max": max(critic), "critic_loss_end": critic[-1],
        "final_score": float(next(r["score"] for r in reversed(rl) if r.get("score"))),
    }  # fmt: skip
    for k in ("q_real", "q_synthetic"):
        out[k] = float(last[k]) if last.get(k) else None
    size = args.get("dataset_size") or (20_000 if args["smoke"] else None)
    dataset = T.load_dataset(T.resolve_task(args["env"]), size, log=lambda m: None)
    goal = goal_of(dataset)
    out |= q_against_return(ckpt["trainer"]["agent"], cfg, dataset, goal)
    synthetic = ckpt["trainer"]["synthetic"]["data"]
    if len(synthetic["states"]) and args["algo"] == "dydiff":
        dist = (synthetic["next_states"][:, :2] - torch.as_tensor(goal)).norm(dim=1)
        true, pred = (dist <= 0.45).float(), synthetic["rewards"][:, 0]
        kept = float(last["kept_transitions"])
        out |= {
            "reward_pred_mean": pred.mean().item(), "reward_true_mean": true.mean().item(),
            "false_reward_share": ((pred > 0.5) & (true < 0.5)).float().sum().item()
            / max(1.0, (pred > 0.5).float().sum().item()),
            "buffer_age_rounds": cfg["synthetic_capacity"] / max(kept, 1.0),
        }  # fmt: skip
    return out


def goal_of(dataset) -> np.ndarray:
    """The evaluation goal cell's centre of the run's dataset (as the relabelling uses)."""
    env = T.make_eval_env(dataset)
    (goal,) = env.unwrapped.maze.unique_goal_locations
    env.close()
    return goal


@torch.no_grad()
def q_against_return(weights: dict, cfg: dict, dataset, goal, episodes=50, steps=600) -> dict:
    """Mean Q1(s0, pi(s0)) and mean discounted return from the evaluation episodes' start states."""
    config = dydiff.Config(**cfg | {"unet_dim_mults": tuple(cfg["unet_dim_mults"]), "device": "cpu"})
    agent = dydiff.TD3BC(4, 2, dydiff.Normalizer(4), config)
    agent.load_state_dict(weights)
    env, q, ret = T.make_eval_env(dataset), [], []
    for k in range(episodes):
        state = env.reset(seed=10_000 + k)[0]["observation"]
        s = agent.state_norm(torch.as_tensor(state, dtype=torch.float32)[None])
        q.append(agent.q1(torch.cat([s, agent.actor(s)], -1)).item())
        ret.append(0.0)
        for t in range(steps):  # past the time limit: the critic values the continuing task
            action = agent.act(torch.as_tensor(state, dtype=torch.float32)[None])[0].numpy()
            state = env.step(action)[0]["observation"]
            ret[-1] += config.gamma**t * float(np.linalg.norm(state[:2] - goal) <= 0.45)
    env.close()
    return {"q_start": float(np.mean(q)), "return_start": float(np.mean(ret))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "dev")
    args = p.parse_args()
    torch.set_num_threads(1)  # it runs beside training runs
    rows = [study(r) for r in args.runs if (r / "checkpoint.pt").exists()]
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
