"""What the learner gets: one synthesis round of M = 0 and of M = 2, checked against the simulator.

    python benchmarks/synthetic_study.py --policy-run RUN_DIR [--n 1024] [--seed 0] [--out DIR]

With a finished run's final actor and models (rollout_error.open_run: a run without a DM gets the
DM of its settings), one synthesis round is made as DyDiffTrainer makes it, by dydiff.synthesise
itself (rollout from n start states drawn from the data, the reward model, the termination rule,
the hardmax filter), once with M = 0 and once with M = 2 (the same start states and the same
single-step rollout). Each transition (s, a, s') it would store is checked against the simulator
set to s and stepped with a (rollout_error.simulate), and measured, for the kept trajectories
(the learner's data) and for all:
- inconsistency: RMS of s' - sim(s, a) in units of the data's per-dimension std, overall, per
  step of the horizon and per state dimension: how far a stored tuple is from a step the simulator
  could make; and the step ratio, the stored steps' length along the simulator's (1: they agree;
  below 1: the stored steps fall short);
- reward: the reward model's mean r(s, a) against the true one (maze: the relabelled reward of the
  simulator's next state, pointmaze_dataset.maze_reward; Hopper: the simulator's reward);
- success: mazes, the share of trajectories in which the simulator's step reaches a reward > 0.5
  (the goal) somewhere; Hopper, the share whose stored states the termination rule calls fallen,
  and whose simulated steps fall;
- the filter: mean true return of the kept trajectories against the dropped ones;
- the critic: the run's mean Q1(s, pi(s)) on kept synthetic states against data states;
- coverage: mean distance of kept synthetic states to the nearest of 10,000 data states (std
  units), beside the same for 1,000 other data states.
The M = 2 round is also measured with every next state relabelled by the single-step model,
s' = f(s, a), as benchmarks/studies/relabelled_rollouts.py stores it ("2 relabelled"; the same
kept trajectories; a Hopper step counts as fallen by its new s').
Writes <out>/synthetic_study.json (one record per M) and <out>/synthetic_study.png (the
inconsistency per step), and prints a table. Every other flag is rollout_error.py's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import dydiff  # noqa: E402
import train_offline as drv  # noqa: E402
from benchmarks import rollout_error as RE  # noqa: E402
from scripts import pointmaze_dataset as pointmaze  # noqa: E402
from scripts.files import one_line_errors  # noqa: E402


def synthesis_round(s0, agent, models, cfg, terminal_fn, m: int, seed: int) -> dict:
    """dydiff.synthesise with M = m, its rollout and filter watched: states [N, H, S], actions
    [N, H, A], the predicted returns [N] and the kept indices."""
    seen, originals = {}, (dydiff.dydiff_rollout, dydiff.filter_trajectories)

    def watch(name, f):
        def watched(*args, **kwargs):
            seen[name] = (args, f(*args, **kwargs))
            return seen[name][1]

        return watched

    dydiff.dydiff_rollout = watch("rollout", originals[0])
    dydiff.filter_trajectories = watch("filter", originals[1])
    try:
        torch.manual_seed(seed)
        one = dydiff.Config(**{**vars(cfg), "iterations": m, "filter": "hardmax"})
        dydiff.synthesise(s0, agent.act, models["dynamics"], models["diffusion"],
                          models["reward"], one, terminal_fn)  # fmt: skip
    finally:
        dydiff.dydiff_rollout, dydiff.filter_trajectories = originals
    states, actions = seen["rollout"][1]
    return {"states": states.cpu().numpy(), "actions": actions.cpu().numpy(),
            "returns": seen["filter"][0][0].cpu().numpy(), "keep": seen["filter"][1].cpu().numpy()}  # fmt: skip


def one_step(env, states: np.ndarray, actions: np.ndarray, seed: int, maze) -> tuple:
    """The simulator's next state, reward and termination for each (s, a) row: [R, S], [R], [R].
    Mazes: the reward is the relabelled one the data holds (maze_reward of the next position)."""
    nxt, rewards, ended = np.zeros_like(states), np.zeros(len(states)), np.zeros(len(states), bool)
    for k in range(len(states)):
        env.reset(seed=seed + k)
        RE.set_state(env, states[k])
        obs, rewards[k], ended[k], _, _ = env.step(actions[k])
        nxt[k] = obs["observation"] if maze is not None else obs
    if maze is not None:
        rewards = pointmaze.maze_reward(nxt[:, :2], env).astype(np.float64)
    return nxt, rewards, ended


def step_agreement(s: np.ndarray, s2: np.ndarray, sim: np.ndarray, std: np.ndarray) -> tuple:
    """Rows [R, S] of states, stored next states and the simulator's -> (RMS of s2 - sim per state
    dimension [S], in data stds; the stored steps' length along the simulator's, sum <s2 - s,
    sim - s> / sum |sim - s|^2 in std units: 1 when they agree, below 1 when the stored steps fall
    short of the real ones)."""
    real, stored = (sim - s) / std, (s2 - s) / std
    per_dim = np.sqrt((((s2 - sim) / std) ** 2).mean(0))
    return per_dim, float((stored * real).sum() / max((real**2).sum(), 1e-12))


@torch.no_grad()
def measure(r: dict, env, maze, data, agent, terminal_fn, seed: int) -> dict:
    """What the learner gets from the synthesis r; the simulator's steps from its (s, a) are kept
    in r["simulated"], so that r measured again with relabelled next states does not redo them."""
    s, a = r["states"][:, :-1], r["actions"][:, :-1]
    s2 = r.get("next_states", r["states"][:, 1:])  # (relabelled: the single-step model's)
    n, h, s_dim = s.shape
    if "simulated" not in r:
        sim, true_r, sim_fell = one_step(env, s.reshape(-1, s_dim), a.reshape(n * h, -1), seed, maze)
        r["simulated"] = sim.reshape(n, h, s_dim), true_r.reshape(n, h), sim_fell.reshape(n, h)
    sim, true_r, sim_fell = r["simulated"]
    std = data["observations"].std(0) + 1e-6
    err = ((s2 - sim) / std) ** 2  # [N, H-1, S]
    fell = np.zeros((n, h), bool)
    if terminal_fn is not None:
        fell = terminal_fn(torch.as_tensor(s2.reshape(-1, s_dim))).numpy().reshape(n, h)
    valid = (np.cumsum(fell, 1) - fell) == 0  # as synthesise: steps up to the first terminal
    kept = np.zeros(n, bool)
    kept[r["keep"]] = True
    true_return = (true_r * valid).sum(1)
    out = {}
    for name, rows in (("kept", kept), ("all", np.ones(n, bool))):
        v = valid[rows]
        out[name] = {
            "inconsistency": float(np.sqrt(err[rows][v].mean())),
            "inconsistency_per_step": np.sqrt(
                (err[rows] * v[..., None]).sum((0, 2)) / (v.sum(0) * s_dim).clip(1)).tolist(),
            "reward_predicted": float(r["returns"][rows].sum() / v.sum()),
            "reward_true": float(true_r[rows][v].mean()),
            "reached_goal" if maze is not None else "fell": float(
                ((true_r[rows] > 0.5) & v).any(1).mean() if maze is not None
                else fell[rows].any(1).mean()),
        }  # fmt: skip
        per_dim, ratio = step_agreement(s[rows][v], s2[rows][v], sim[rows][v], std)
        out[name] |= {"inconsistency_per_dim": per_dim.tolist(), "step_ratio": ratio}
        if maze is None:
            out[name]["simulator_fell"] = float((sim_fell[rows] & v).any(1).mean())
    out["true_return_kept"], out["true_return_dropped"] = (
        float(true_return[kept].mean()), float(true_return[~kept].mean()) if (~kept).any() else None)
    kept_states = torch.as_tensor(s[kept][valid[kept]], dtype=torch.float32)
    data_s = torch.as_tensor(data["observations"], dtype=torch.float32)
    q = lambda x: agent.q1(torch.cat([agent.state_norm(x), agent.act(x)], -1)).mean().item()  # noqa: E731
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(data_s), min(11_000, len(data_s)), replace=False)
    ref, others = data_s[pick[:10_000]], data_s[pick[10_000:]]
    sample = kept_states[rng.choice(len(kept_states), min(1_000, len(kept_states)), replace=False)]
    scale = torch.as_tensor(std, dtype=torch.float32)
    nearest = lambda x: torch.cdist(x / scale, ref / scale).min(1).values.mean().item()  # noqa: E731
    out |= {"q_synthetic": q(kept_states), "q_data": q(data_s[pick[:10_000]]),
            "coverage_synthetic": nearest(sample), "coverage_data": nearest(others)}  # fmt: skip
    return out


def plot(records: dict, path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m, rec in records.items():
        for name, style in (("kept", "-"), ("all", ":")):
            y = rec[name]["inconsistency_per_step"]
            ax.plot(range(1, len(y) + 1), y, style, label=f"M = {m}, {name}")
    ax.set(xlabel="step i of the trajectory (transition s_i -> s_i+1)", yscale="log",
           ylabel="RMS of s' - sim(s, a), data std units", title=title)  # fmt: skip
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(argv: list[str], own: argparse.Namespace, args: argparse.Namespace) -> dict:
    args, task, cfg, data, dataset, models, agent = RE.open_run(own.policy_run, args)
    env = drv.make_eval_env(dataset)
    maze = getattr(env.unwrapped, "maze", None)
    rng = np.random.default_rng(args.seed)
    s0 = data["observations"][rng.choice(len(data["observations"]), own.n, replace=False)]
    s0 = torch.as_tensor(s0, device=cfg.device)
    terminal_fn = drv.termination_fn(task)
    records = {}
    for m in (0, 2):
        r = synthesis_round(s0, agent, models, cfg, terminal_fn, m, args.seed)
        records[m] = measure(r, env, maze, data, agent, terminal_fn, args.seed)
    with torch.no_grad():  # M = 2 as relabelled_rollouts.py stores it: s' = f(s, a)
        s, a = (torch.as_tensor(r[k][:, :-1], device=cfg.device) for k in ("states", "actions"))
        f = models["dynamics"].predict(s.flatten(0, 1), a.flatten(0, 1))  # rows [N (H - 1), S]
        r["next_states"] = f.reshape(s.shape).cpu().numpy()
    records["2 relabelled"] = measure(r, env, maze, data, agent, terminal_fn, args.seed)
    env.close()
    out = Path(own.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(records, out / "synthetic_study.png", f"{args.env}: {Path(own.policy_run).name}")
    record = {"command": " ".join(["python benchmarks/synthetic_study.py", *map(RE.portable, argv)]),
              "commit": drv.COMMIT, "seed": args.seed, "n_start_states": own.n,
              "policy_run": RE.portable(own.policy_run), "per_M": records}  # fmt: skip
    text = json.dumps(record, indent=1)
    drv.atomic_write(out / "synthetic_study.json", lambda tmp: tmp.write_text(text))
    for m, rec in records.items():
        k = rec["kept"]
        print(f"M = {m}: kept inconsistency {k['inconsistency']:.4f} (all {rec['all']['inconsistency']:.4f}), "
              f"reward predicted {k['reward_predicted']:.3f} true {k['reward_true']:.3f}, "
              f"true return kept {rec['true_return_kept']:.2f} dropped {rec['true_return_dropped']:.2f}, "
              f"Q synthetic {rec['q_synthetic']:.2f} data {rec['q_data']:.2f}, coverage "
              f"{rec['coverage_synthetic']:.3f} (data {rec['coverage_data']:.3f})")  # fmt: skip
    return record


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    one_line_errors(p)
    p.add_argument("--policy-run", metavar="RUN_DIR", required=True, help="a finished run")
    p.add_argument("--n", type=int, default=1024, help="start states (a synthesis round's)")
    p.add_argument("--out", default="results", help="folder for the JSON and the picture")
    own, rest = p.parse_known_args(argv)
    args = drv.parse_args([*rest, "--out", own.out])
    if own.n < 2:
        p.error(f"--n must be at least 2, got {own.n}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        run(argv, own, args)
    except (drv.UserError, FloatingPointError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
