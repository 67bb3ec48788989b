"""Why does DyDiff's critic loss grow? A look inside finished maze runs (development seeds only).

    python benchmarks/critic_study.py runs/dev/maze2d-umaze/*/maze2d-umaze__*  [--out results/dev]

For each run folder (metrics.csv and checkpoint.pt of train_offline.py) it reports:
- the critic loss: at the first log, its maximum, at the end;
- the mean Q1(s, pi(s)) on real and on synthetic states at the end (q_real, q_synthetic);
- the reward model's optimism on the synthetic transitions in the checkpoint's buffer: the mean
  reward it predicted against the true maze reward of the same transition (1 if the next position
  is within 0.45 of the evaluation goal), and the share of transitions the model calls rewarding
  (prediction > 0.5) that are not;
- how old the synthetic rows are, in synthesis rounds (FIFO capacity / transitions kept per round).
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
    synthetic = ckpt["trainer"]["synthetic"]["data"]
    if len(synthetic["states"]) and args["algo"] == "dydiff":
        task = T.resolve_task(args["env"])
        goal = goal_of(task, args)
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


def goal_of(task, args) -> np.ndarray:
    """The evaluation goal cell's centre of the run's dataset (as the relabelling uses)."""
    dataset = T.load_dataset(task, args.get("dataset_size") or (20_000 if args["smoke"] else None),
                             log=lambda m: None)  # fmt: skip
    env = T.make_eval_env(dataset)
    (goal,) = env.unwrapped.maze.unique_goal_locations
    env.close()
    return goal


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "dev")
    args = p.parse_args()
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
