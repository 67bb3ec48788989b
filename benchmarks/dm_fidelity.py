"""How faithful is the diffusion model (DM) where DyDiff needs it? Per-step error against the truth.

    python benchmarks/dm_fidelity.py --env maze2d-umaze [--policy-run RUN_DIR] [--heldout 0.02]
        [--n-starts 256] [--seed 0] [--smoke] [--out results/dm_fidelity] [train_offline.py flags]

The models (dynamics ensemble, reward model, DM) are train_offline.pretrain's, with THIS command's
settings (--model-seed and Config flags such as --dm-steps, --n-diffusion-steps, --mlp-width,
--denoiser, as for a training run) and cached in --cache like a run's, but trained on every episode
except a held-out set: the last --heldout share of the episodes in the data's order (2%, at least
one). --policy-run supplies only an actor (of a DyDiff or TD3+BC run on the same task).

Error at step h = 1..H-1: the mean over start states of the MSE over the state dimensions, each
divided by the data's std (z units); a start state whose true hopper has fallen by h does not count.
 (a) The data's windows: s0 and the window's H actions; truth: the data. Windows from training
     episodes and from held-out ones (in-distribution fit, and generalisation).
 (b) Actions the data did not pair with s0; truth: the simulator set to s0 (rollout_error.simulate):
     another window's actions (open loop); the data's controller without its noise (closed loop:
     the maze expert, rollout_error.expert_policy, heading for the evaluation goal; Hopper: the SAC
     policy's mean); the trained actor (closed loop).
     Models: "DM alone" (one sample with s0 and the truth's actions inpainted) and "single-step,
     open loop" (the ensemble under the same actions); closed-loop conditions add the ensemble
     under the policy ("single-step, M=0") and DyDiff with M = 1, 2 injection rounds.
 (c) What the critic learns from: one dydiff.synthesise round (rollout_batch_size start states of
     the training episodes; the trained actor, else the controller) for M = 0, 1, 2; each stored
     (s_i, a_i, s_{i+1}) against the simulator set to s_i applying a_i; h = i + 1.
Also timed, with --threads torch threads: one synthesis round per M and, when this command trains
them, the models. Writes <out>/<env>__<settings>.json and .png (no absolute paths in the JSON) and
prints a table at h = 1, 8, H - 1. Bad input: one line "error: ..." and exit code 2. The rule that
chose the default DM from such records is a past study: benchmarks/studies/dm_choice.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
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
from benchmarks import rollout_error as RE  # noqa: E402
from scripts.files import cpu_name, data_hash, fail, one_line_errors, weights_hash  # noqa: E402

DM, OPEN = "DM alone", "single-step, open loop"
CLOSED = {0: "single-step, M=0", 1: "DyDiff M=1", 2: "DyDiff M=2"}  # closed loop, by M
COLOURS = {DM: "C0", OPEN: "C1", **{v: f"C{m + 2}" for m, v in CLOSED.items()},
           **{f"M={m}": f"C{m + 2}" for m in CLOSED}}  # (c)'s M = m: the colour of DyDiff M = m
NOTE = "one torch thread unless --threads says otherwise; the machine was shared with other jobs"


# ---- Data: held-out episodes and windows ---------------------------------------------------------
def split_episodes(data: dict, share: float) -> tuple[dict, dict]:
    """(training, held out): the last `share` of the episodes (at least one, never all) held out.
    An episode's rows are consecutive and episode ids ascend, so that is a tail of the rows."""
    ids = data["episode_ids"]
    n_episodes = int(ids[-1]) + 1
    n_held = min(max(1, round(share * n_episodes)), n_episodes - 1)
    cut = int(np.searchsorted(ids, n_episodes - n_held))  # the first held-out row
    return {k: v[:cut] for k, v in data.items()}, {k: v[cut:] for k, v in data.items()}


def windows(data: dict, horizon: int, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """States [n, H, S] and actions [n, H, A] of n random windows of H rows inside an episode."""
    starts = dydiff.window_starts(data["episode_ids"], horizon)
    if len(starts) == 0:
        raise drv.UserError(f"no episode of {len(data['rewards']):,} rows is {horizon} steps long")
    rows = rng.choice(starts, min(n, len(starts)), replace=False)[:, None] + np.arange(horizon)
    return data["observations"][rows], data["actions"][rows]


def pretrain_on_training_episodes(data: dict, cfg, args, share: float, times: dict):
    """(models, files, training data, held-out data): the driver's pretrain (and cache) on the
    training episodes only; their own content hash keys the cache, apart from a run's models."""
    train, held = split_episodes(data, share)
    models, _, files = drv.pretrain(train, cfg, args, data_hash(train), times)
    return models, files, train, held


# ---- Measuring -----------------------------------------------------------------------------------
def summarise(per_h: list) -> dict:
    """{"mean": [H], "median": [H]} of each step's errors (None where a step has none). The mean
    is the benchmark's number; the median shows when a few start states decide it."""
    stats = (("mean", np.mean), ("median", np.median))
    return {k: [float(f(e)) if len(e) else None for e in per_h] for k, f in stats}


def per_step(pred: np.ndarray, truth: np.ndarray, std: np.ndarray) -> dict:
    """Over start states, per step: the MSE over state dimensions in std units. A start state
    counts at h while its truth is defined (NaN: the simulated hopper fell); a NaN prediction
    where the truth is defined stays NaN, never hidden."""
    alive = np.isfinite(truth).all(-1)  # [N, H]
    err = (((pred - np.nan_to_num(truth)) / std) ** 2).mean(-1)
    return summarise([err[alive[:, t], t] for t in range(err.shape[1])])


def open_loop(dynamics, s0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """States [N, H, S] of the single-step ensemble under fixed actions [N, H, A]."""
    states = [s0]
    for i in range(actions.shape[1] - 1):
        states.append(dynamics.predict(states[-1], actions[:, i]))
    return torch.stack(states, 1)


def model_errors(models, s0, actions, truth, std, seed, policy=None, device="cpu") -> dict:
    """{model: per_step errors} for start states s0 [N, S] under actions [N, H, A] with truth
    [N, H, S]; with a policy (closed loop) also M = 0, 1, 2 (rollout_error.injection_rounds)."""
    t = lambda x: torch.as_tensor(x, dtype=torch.float32, device=device)  # noqa: E731
    torch.manual_seed(seed)
    out = {DM: models["diffusion"].sample_states(t(s0), t(actions)).cpu().numpy()}
    out[OPEN] = open_loop(models["dynamics"], t(s0), t(actions)).cpu().numpy()
    if policy is not None:
        rounds = RE.injection_rounds(t(s0), policy, models, truth.shape[1], 2, seed)
        out |= {CLOSED[m]: states for m, states in enumerate(rounds)}
    return {k: per_step(v, truth, std) for k, v in out.items()}


def tuple_steps(states: np.ndarray, next_states: np.ndarray) -> np.ndarray:
    """h = i + 1 of each stored tuple (s_i, a_i, s_{i+1}). synthesise keeps a trajectory's tuples
    in order, so a new trajectory begins where a tuple's s_i is not the previous one's s_{i+1}."""
    new = np.r_[True, (states[1:] != next_states[:-1]).any(1)]
    first = np.flatnonzero(new)
    return np.arange(len(states)) - first[np.cumsum(new) - 1] + 1


def tuple_errors(env, tuples: dict, h: np.ndarray, std, horizon: int, n_max: int, seed: int):
    """One-step consistency per step h (of each tuple; h = 0: None): the simulator set to s_i
    applies a_i, against the stored s_{i+1}, in std units, for at most n_max random tuples."""
    s, a, s2 = (tuples[k].cpu().numpy() for k in ("states", "actions", "next_states"))
    pick = np.random.default_rng(seed).choice(len(s), min(n_max, len(s)), replace=False)
    sim = RE.simulate(env, None, s[pick], 2, "cpu", seed, actions=a[pick, None])[:, 1]
    err = (((sim - s2[pick]) / std) ** 2).mean(1)
    return summarise([err[h[pick] == i] for i in range(horizon)])


def fidelity(models, env, train, held, policies: dict, cfg, n: int, seed: int, terminal_fn=None):
    """Every condition's {model: per_step errors}, and the synthesis rounds' seconds and stats.
    policies: {"controller": f, "trained actor": f or absent}, f batched on [..., S] tensors."""
    rng, h, dev = np.random.default_rng(seed), cfg.horizon, cfg.device
    std = np.concatenate([train["observations"], held["observations"]]).std(0) + 1e-6
    out, synth = {}, {"seconds": {}, "stats": {}}
    for name, part in (("a: data windows, trained on", train), ("a: data windows, held out", held)):
        states, actions = windows(part, h, n, rng)
        out[name] = model_errors(models, states[:, 0], actions, states, std, seed, device=dev)
    states, _ = windows(train, h, n, rng)
    s0 = states[:, 0]  # the same start states for every condition of (b)
    _, other = windows(train, h, len(s0), rng)  # (other windows: almost surely other episodes)
    truth = RE.simulate(env, None, s0, h, dev, seed, actions=other)
    name = "b: another window's actions"
    out[name] = model_errors(models, s0, other, truth, std, seed, device=dev)
    for name, policy in policies.items():
        truth = RE.simulate(env, policy, s0, h, dev, seed)
        with torch.no_grad():  # the actions the policy took in the simulator (none after a fall)
            acts = policy(torch.as_tensor(np.nan_to_num(truth), device=dev)).cpu().numpy()
        acts[~np.isfinite(truth).all(-1)] = 0.0
        out[f"b: {name}"] = model_errors(models, s0, acts, truth, std, seed, policy, dev)
    name, policy = list(policies.items())[-1]  # the trained actor if there is one
    starts = torch.as_tensor(train["observations"][rng.choice(len(train["observations"]),
                             cfg.rollout_batch_size)], device=dev)  # fmt: skip
    models3 = [models[k] for k in ("dynamics", "diffusion", "reward")]
    for m in (0, 1, 2):
        torch.manual_seed(seed)
        begin = time.perf_counter()
        c = dataclasses.replace(cfg, iterations=m)
        tuples, stats = dydiff.synthesise(starts, policy, *models3, c, terminal_fn)
        synth["seconds"][f"M={m}"] = round(time.perf_counter() - begin, 2)
        synth["stats"][f"M={m}"] = stats
        steps = tuple_steps(tuples["states"].cpu().numpy(), tuples["next_states"].cpu().numpy())
        errors = tuple_errors(env, tuples, steps, std, h, 32 * n, seed)
        out.setdefault(f"c: stored tuples ({name})", {})[f"M={m}"] = errors
    return out, synth


# ---- Output --------------------------------------------------------------------------------------
def table_steps(horizon: int) -> list:
    return sorted({1, 8, horizon - 1} & set(range(1, horizon)))


def print_table(results: dict, horizon: int) -> None:
    steps = table_steps(horizon)
    print("\nper-step MSE in std units against the truth (a: the data; b, c: the simulator), "
          "mean over start states (median)")  # fmt: skip
    print(f"{'condition':<38}{'model':<24}" + "".join(f"{f'h={t}':>18}" for t in steps))
    for cond, methods in results.items():
        for model, err in methods.items():
            mean, median = err["mean"], err["median"]
            cells = "".join(f"{mean[t]:>9.4f} ({median[t]:.4f})" if mean[t] is not None
                            else f"{'-':>18}" for t in steps)  # fmt: skip
            print(f"{cond:<38}{model:<24}{cells}")


def plot(results: dict, horizon: int, title: str, path: Path) -> None:
    cols = 3
    rows = -(-len(results) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax, (cond, methods) in zip(axes.flat, results.items()):
        for model, err in methods.items():  # the mean, and the median thin and dashed
            for stat, style in (("mean", dict(label=model)), ("median", dict(lw=0.8, ls="--"))):
                y = [np.nan if e is None else e for e in err[stat][1:]]
                ax.plot(range(1, horizon), y, color=COLOURS.get(model), **style)
        ax.set(yscale="log", xlabel="step h", ylabel="MSE (std units)", title=cond)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.flat[len(results) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    drv.save_figure(fig, path)


def output_name(args, env: str) -> str:
    """<env>__<Config flags given>__mseed<N>[__seed<N>]: one file per task and model settings."""
    fields = [f.name for f in dataclasses.fields(dydiff.Config)[1:]]
    given = [f"{k.replace('_', '-')}={v}" for k in fields if (v := getattr(args, k)) is not None]
    seed = [f"seed{args.seed}"] if args.seed else []  # the benchmark's own draws
    name = "__".join([env.replace("/", "_"), *given, f"mseed{args.model_seed}", *seed])
    return name.replace(" ", "").replace("(", "").replace(")", "") + ("_smoke" * args.smoke)


def run(argv: list[str], own: argparse.Namespace, args: argparse.Namespace) -> None:
    task = drv.resolve_task(args.env)
    if task.maze is None and not task.dataset_id.startswith("local/hopper/"):
        raise drv.UserError(f"{args.env}: this benchmark sets the state of a PointMaze or of the "
                            "local Hopper data's simulator only")  # fmt: skip
    ckpt = drv.read_run(own.policy_run) if own.policy_run else None
    if ckpt and drv.resolve_task(ckpt["args"]["env"]).dataset_id != task.dataset_id:
        raise drv.UserError(f"--policy-run: a run on {ckpt['args']['env']}, not on {args.env}")
    cfg = drv.make_config(args, task)
    data, data_key, dataset = drv.load_data(task, args)
    times: dict = {}
    models, files, train, held = pretrain_on_training_episodes(data, cfg, args, own.heldout, times)
    env = drv.make_eval_env(dataset)
    maze = getattr(env.unwrapped, "maze", None)
    if maze:
        goal = maze.unique_goal_locations[0]
        policies = {"maze expert": RE.expert_policy(maze, goal, cfg.device)}
    else:
        policies = {"SAC policy's mean": RE.sac_policy(cfg.device)}
    if ckpt:  # only the actor: the models are this command's
        s_dim, a_dim = data["observations"].shape[1], data["actions"].shape[1]
        agent = dydiff.TD3BC(s_dim, a_dim, dydiff.Normalizer(s_dim), cfg)
        agent.load_state_dict(ckpt["trainer"]["agent"])
        policies["trained actor"] = agent.act
    n = 16 if args.smoke else own.n_starts
    results, synth = fidelity(models, env, train, held, policies, cfg, n, args.seed,
                              drv.termination_fn(task))  # fmt: skip
    env.close()

    out, name = Path(own.out), output_name(args, args.env)
    hashes = {k: weights_hash(m) for k, m in models.items()}
    seconds = {f"{k}_training": round(v, 1) for k, v in times.items()}
    previous = out / f"{name}.json"  # models from the cache: their training time as first recorded
    if "diffusion" not in times and previous.exists():
        old = json.loads(previous.read_text())
        if old.get("model_hashes") == hashes:
            seconds |= {k: v for k, v in old["seconds"].items() if k.endswith("_training")}
    policy_run = None
    if ckpt:
        run_args = ckpt["args"]
        policy_run = {"folder": RE.portable(own.policy_run), "algo": run_args["algo"],
                      "seed": run_args["seed"], "updates": ckpt["trainer"]["updates"]}  # fmt: skip
    n_held = int(held["episode_ids"][-1] - held["episode_ids"][0] + 1)
    record = {
        "command": " ".join(["python benchmarks/dm_fidelity.py", *map(RE.portable, argv)]),
        "commit": drv.COMMIT, "env": args.env, "dataset": dataset.spec.dataset_id,
        "data_hash": data_key, "training_data_hash": data_hash(train),
        "held_out": {"rule": f"the last {own.heldout:.0%} of the episodes (data order), in no "
                     "model's training data", "episodes": n_held, "rows": len(held["rewards"])},
        "seed": args.seed, "model_seed": args.model_seed, "n_start_states": n,
        "threads": torch.get_num_threads(), "cpu": cpu_name(), "smoke": args.smoke,
        "settings": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "device"},
        "policy_run": policy_run, "policies": list(policies),
        "model_files": {k: Path(v).name for k, v in files.items()}, "model_hashes": hashes,
        "seconds": seconds | {"synthesis_round": synth["seconds"], "note": NOTE},
        "synthesis_stats": synth["stats"],
        "error": "per-step MSE over the state dimensions in units of the data's std, index h: "
                 "mean and median over start states (c: over stored tuples)",
        "per_step": results,
    }  # fmt: skip
    text = json.dumps(record, indent=1)
    drv.atomic_write(out / f"{name}.json", lambda tmp: tmp.write_text(text))
    title = f"{name}: per-step MSE in std units, mean (median dashed), commit {drv.COMMIT}"
    plot(results, cfg.horizon, title, out / f"{name}.png")
    print_table(results, cfg.horizon)
    print(f"\nseconds: {json.dumps(record['seconds'])}")
    print(f"wrote {out}/{name}.json and .png")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], allow_abbrev=False,
        epilog="Every other flag is train_offline.py's, meaning what it means there.",
    )  # fmt: skip
    one_line_errors(p)
    p.add_argument("--policy-run", metavar="RUN_DIR", help="a run whose actor is rolled out")
    p.add_argument("--out", default="results/dm_fidelity", help="folder for the JSON and picture")
    p.add_argument("--heldout", type=float, default=0.02, help="share of episodes held out")
    p.add_argument("--n-starts", type=int, default=256, help="start states per condition")
    own, rest = p.parse_known_args(argv)
    if not 0 < own.heldout <= 0.5:
        p.error(f"--heldout must be in (0, 0.5], got {own.heldout}")
    if own.n_starts < 2:
        p.error(f"--n-starts must be at least 2, got {own.n_starts}")
    args = drv.parse_args([*rest, "--out", own.out])  # its own errors: one line, exit 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        run(argv, own, args)
    except drv.UserError as e:  # bad input: one line
        fail(str(e))
    except FloatingPointError as e:  # a NaN loss
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
