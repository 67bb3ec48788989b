# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # DyDiff in a lab session: policy injection on a point mass
#
# Zhao et al., *Long-Horizon Rollout via Dynamics Diffusion for Offline Reinforcement Learning*
# (arXiv 2405.19189), on a task small enough for a laptop CPU: the lab of `scripts/lab.py`
# ([docs/lab.md](../docs/lab.md)) cell by cell, with a picture of policy injection. One to three
# minutes on one core (a recent laptop's or a Colab CPU's), most of it section 6's 15 training runs.
#
# Everything runs on two files of the repository: `dydiff.py` (the method, torch + numpy only) and
# `scripts/lab.py` (the task, its data, the lab's settings and its runs). This notebook imports
# them; it copies none of their code.
#
# - **In a checkout** (Jupyter, VS Code): open `notebooks/dydiff_lab.ipynb` and run all cells; the
#   next cell finds the repository root above the notebook.
# - **In Colab**: upload this `.ipynb`, then either upload `dydiff.py` and `scripts/lab.py` into the
#   working folder (the Files panel on the left; both beside each other) or set `DYDIFF_SOURCE`
#   below to the repository's raw files, `https://raw.githubusercontent.com/OWNER/REPO/BRANCH`.
#   Colab has torch, numpy and matplotlib already.
# - **The source of this notebook** is `notebooks/dydiff_lab.py` (jupytext percent format, plain
#   text). Edit that file, then make the `.ipynb` again, without outputs:
#   `jupytext --update --to ipynb notebooks/dydiff_lab.py`. `tests/test_notebook.py` checks that the two
#   agree and runs the notebook with tiny settings (`DYDIFF_NOTEBOOK_QUICK=1`).

# %%
import os
import sys
import urllib.request
from pathlib import Path

# Where dydiff.py and lab.py come from: one of
#   ""                   this repository (the folder above the notebook or the working folder), or
#                        the two files beside the notebook. Colab: upload both into the working
#                        folder (Files panel, or `from google.colab import files; files.upload()`)
#   "/path/to/checkout"  a local checkout, or a folder that holds dydiff.py and lab.py
#   "https://raw.githubusercontent.com/OWNER/REPO/BRANCH"  the repository's raw files, downloaded
#                        into the working folder (again at every run of this cell)
# After a change: restart the kernel (Python keeps the modules it imported first).
DYDIFF_SOURCE = os.environ.get("DYDIFF_SOURCE", "")

# Tiny settings for the test suite (seconds; the scores then mean nothing). False: the lab's own.
QUICK = os.environ.get("DYDIFF_NOTEBOOK_QUICK") == "1"

REPO_PATHS = {"dydiff.py": "dydiff.py", "lab.py": "scripts/lab.py"}  # file: its path in the repo


def find_code(source: str) -> list[Path]:
    """The folders of dydiff.py and lab.py, downloading both first if source is a URL."""
    if "://" in source:
        for name, path in REPO_PATHS.items():
            urllib.request.urlretrieve(f"{source.rstrip('/')}/{path}", name)
            print(f"downloaded {source.rstrip('/')}/{path} -> {Path(name).resolve()}")
        source = "."
    roots = [Path(source)] if source else [Path.cwd(), Path.cwd().parent]
    for root in roots:
        labs = [root / "lab.py", root / "scripts" / "lab.py"]
        if (root / "dydiff.py").is_file() and (lab := next((p for p in labs if p.is_file()), None)):
            return [root.resolve(), lab.parent.resolve()]
    looked = ", ".join(str(r.resolve()) for r in roots)
    raise FileNotFoundError(f"no dydiff.py with lab.py (beside it or in scripts/) in {looked}: "
                            "upload both, or set DYDIFF_SOURCE")


CODE_DIRS = find_code(DYDIFF_SOURCE)
for folder in reversed(CODE_DIRS):
    sys.path.insert(0, str(folder))
print("code from:", *CODE_DIRS, "| quick:", QUICK)

# %% [markdown]
# ## 1. The method and the task, imported
#
# `dydiff.py` reads in the order of the algorithm (its sections 1-8; the README maps them to the
# paper). `lab.py` holds the task: `step` (the exact dynamics, our simulator), `reward`,
# `make_data`, `score`, the lab's sizes `LAB`, and `train_models` and `run`, which the lab's
# command line runs. One thread, as the lab: the same seeds then give the same numbers.

# %%
import dataclasses  # noqa: F401 (the exercises at the end use it)
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

import dydiff
import lab

torch.set_num_threads(1)
print("dydiff:", dydiff.__file__)
print("lab:   ", lab.__file__)
print("torch", torch.__version__, "| numpy", np.__version__)

# %% [markdown]
# ## 2. The task and the offline data
#
# A point mass in the walled box [-1, 1]² must reach the goal (0.5, 0.5) and stay there:
# maze2d-umaze in miniature, the task where DyDiff's effect is clearest in the full runs.
#
# - **State** (x, y, vx, vy); **action** a force in [-1, 1]². Dynamics v' = 0.8 v + 0.2 a,
#   p' = p + 0.1 v'; a wall stops the mass. `lab.step` is this simulator, exact and vectorised.
# - **Reward** exp(-|p' - goal| / 0.2): 1 at the goal. An evaluation runs 100 episodes of 60 steps
#   from fixed starts at rest; `lab.score` normalises the return: 0 = random actions, 100 = a PD
#   controller that knows the goal (`lab.controller(s, lab.GOAL)`).
# - **Data**: 200 episodes of 100 steps of the same PD controller walking to *random waypoints*
#   with action noise (std 0.5). It never heads for the goal on purpose: an offline learner must
#   stitch pieces of wandering into a path to the goal. This is the offline RL setting of the
#   paper: a fixed dataset, no simulator during training.
#
# `dydiff.check_data` states (and checks) what the method needs: observations, actions, rewards,
# next observations, terminals and episode ids, an episode's rows consecutive.

# %%
data = lab.make_data()
dydiff.check_data(data)
n_episodes = len(np.unique(data["episode_ids"]))
print(f"data: {len(data['rewards']):,} transitions in {n_episodes} episodes; "
      f"keys {sorted(data)}")
print(f"evaluation returns: random actions {lab.RANDOM_RETURN.mean():.1f}, "
      f"goal controller {lab.EXPERT_RETURN.mean():.1f} (scores 0 and 100)")
print(f"goal controller's score: {lab.score(lambda s: lab.controller(s, lab.GOAL)):.1f}")

# %% [markdown]
# ## 3. Settings
#
# `dydiff.Config` holds every hyperparameter (defaults: the full runs'); `lab.LAB` overrides the
# sizes for one CPU core (1,000 TD3+BC updates, H = 32, 256 rollouts every 200 updates, a DM of 800
# steps, ...; docs/lab.md says how they were chosen). `QUICK` shrinks them further for the test
# suite. To try a variant (the exercises at the end), change `cfg` here or later with
# `dataclasses.replace(cfg, iterations=1)`.

# %%
QUICK_SIZES = dict(updates=60, eval_every=30, rollout_every=20, rollout_batch_size=32,
                   dm_steps=30, model_epoch_steps=10, model_max_epochs=2, max_holdout=500)
cfg = dydiff.Config(**lab.LAB | (QUICK_SIZES if QUICK else {}))
dydiff.validate(cfg)
SEEDS = [0, 1] if QUICK else [0, 1, 2, 3, 4]
ALGOS = list(lab.ALGOS)  # td3bc, dydiff (M = cfg.iterations), m0 (DyDiff with M = 0)
print(f"updates {cfg.updates}, H = {cfg.horizon}, M = {cfg.iterations}, seeds {SEEDS}")

# %% [markdown]
# ## 4. The models: dynamics ensemble, reward model, diffusion model
#
# DyDiff needs three models of the data, trained once before RL (paper: the training procedure;
# `dydiff.py` section 7). The lab trains each with its own seed and shares them across seeds and
# algorithms, as the full runs share one set per task.
#
# 1. **Dynamics ensemble** (`train_dynamics`, MBPO's recipe): 7 MLPs predict s' - s from (s, a),
#    each on its own bootstrap resample; the 5 with the lowest holdout error (*elites*) predict, one
#    picked at random per row. This single-step model makes step 1's rollout: policy-consistent,
#    but its errors compound over the horizon.
# 2. **Reward model** (`train_reward_model`): r(s, a), to score the synthetic trajectories (step 3).
# 3. **Diffusion model** (`train_diffusion`): DDPM on windows of H = 32 consecutive
#    (state, action) rows of an episode. It learns whole trajectories at once, so its errors do not
#    compound, but it imagines the *data's* behaviour; policy injection (next section) makes it
#    follow the learning policy by inpainting: s0 and every action are fixed, the states resampled.
#
# 10-60 s with the lab's sizes on one core, depending on the CPU.

# %%
times: dict = {}
models = lab.train_models(data, cfg, ALGOS, times)
print({name: type(model).__name__ for name, model in models.items()})

# %% [markdown]
# ## 5. Policy injection, seen
#
# `dydiff.dydiff_rollout(s0, pi, dynamics, diffusion, H, M)` is the heart of the method:
#
# - **Step 1**: roll out the policy pi with the dynamics ensemble for H steps from real start
#   states s0: a_i = pi(s_i), s_{i+1} = f(s_i, a_i). This is M = 0 (MBPO-style data).
# - **Step 2**, M times (*policy injection*): the DM resamples all H states with s0 and the current
#   actions fixed; the new states are **averaged** with the old ones and clipped to the data's
#   range; every action is recomputed as pi(state).
#
# Below, pi is one of two fixed policies: the **goal controller**, whose path to the goal crosses
# the open box the data covers (though the data never heads for the goal), and **full force
# to the top-right corner**, a = (1, 1) at every step, which pushes the mass into a wall and
# keeps it there, something the data's waypoint walk never does for long. Top row: one start state
# (the square) rolled out by the single-step model (M = 0), after each injection round (M = 1, 2;
# the same torch seed, so round 2 continues round 1), and by the true simulator `lab.step` (black).
# Bottom row: the position error against the simulator at each step h, averaged over 256 start
# states of the data (DyDiff draws its start states there too).

# %%
POLICIES = {  # numpy states [B, 4] -> actions [B, 2]
    "goal controller": lambda s: lab.controller(s, lab.GOAL),
    "full force to the top-right corner": lambda s: np.ones((len(s), 2), np.float32),
}


def as_torch(policy):
    """A numpy policy for torch states of any leading shape [..., 4] -> actions [..., 2], the
    form dydiff_rollout calls (the injection rounds act on [N, H, 4] at once)."""
    def act(states: torch.Tensor) -> torch.Tensor:
        actions = policy(states.reshape(-1, 4).cpu().numpy())
        return torch.as_tensor(actions, dtype=torch.float32).reshape(*states.shape[:-1], 2)
    return act


def simulate(policy, s0: np.ndarray, horizon: int) -> np.ndarray:
    """The simulator's states [N, H, 4] under policy from s0 [N, 4]."""
    states = [s0]
    for _ in range(horizon - 1):
        states.append(lab.step(states[-1], policy(states[-1])))
    return np.stack(states, 1)


one = np.array([[-0.8, -0.2, 0.0, 0.0]], np.float32)  # the start state of the upper panels
many = data["observations"][np.random.default_rng(0).choice(len(data["rewards"]), 256)]
s0 = torch.as_tensor(np.concatenate([one, many]))
steps = np.arange(1, cfg.horizon)
fig, axes = plt.subplots(2, len(POLICIES), figsize=(11, 9), height_ratios=(3, 2))
for (name, policy), (top, bottom) in zip(POLICIES.items(), axes.T):
    truth = simulate(policy, s0.numpy(), cfg.horizon)
    top.add_patch(plt.Rectangle((-1, -1), 2, 2, fill=False, color="0.5", lw=2))  # the walls
    top.plot(*truth[0, :, :2].T, "k-", lw=3, label="simulator")
    for m in range(cfg.iterations + 1):  # M = 0, 1, ..., cfg.iterations
        torch.manual_seed(0)  # the same draws: M = 2 repeats M = 1's first round
        states, _ = dydiff.dydiff_rollout(s0, as_torch(policy), models["dynamics"],
                                          models["diffusion"], cfg.horizon, m)
        states = states.numpy()
        error = np.linalg.norm(states[1:, 1:, :2] - truth[1:, 1:, :2], axis=-1).mean(0)  # [H-1]
        label = "single-step model (M = 0)" if m == 0 else f"after injection round {m} (M = {m})"
        colour = plt.cm.viridis(0.85 * m / max(cfg.iterations, 1))
        top.plot(*states[0, :, :2].T, "o-", ms=3, color=colour, label=label)
        bottom.plot(steps, error, "o-", ms=3, color=colour, label=label)
        print(f"{name}, M = {m}: position error at h = 1 / 8 / {cfg.horizon - 1}: "
              f"{error[0]:.3f} / {error[7]:.3f} / {error[-1]:.3f}")
    top.plot(*one[0, :2], "ks", ms=8)
    top.plot(*lab.GOAL, "r*", ms=15, label="goal")
    top.set(aspect="equal", xlabel="x", ylabel="y", title=f"pi = {name}")
    bottom.set(yscale="log", xlabel="step h", ylabel="mean |position - simulator's|",
               title="256 start states of the data")
    top.legend(fontsize=8, loc="lower right")
fig.tight_layout()
plt.show()

# %% [markdown]
# **Reading the picture** (the lab's settings; your digits may differ a little; the printed lines
# give the bottom row's errors at h = 1, 8 and 31).
#
# - **Goal controller** (inside the data's range): the single-step model is nearly exact, an error
#   of about 0.005 at every step (the dynamics are almost linear and the data covers the box).
#   Each injection round moves the states *away* from the simulator (0.02-0.07): averaging with a
#   DM sample adds the DM's own error, and this DM is small and briefly trained.
# - **Full force into a corner** (outside it): the single-step model's errors compound. It rarely
#   saw the mass held against a wall, drives through it and ends about 3.4 away by h = 31. The
#   injected trajectories stay in the box and end in the corner (error about 0.01): the DM learned
#   whole windows, walls included, and `clip_to_data` keeps states in the data's range. Early on,
#   though, the DM is the worse model (0.2-0.5 at h = 1-8): the actions it must inpaint are not
#   the data's behaviour, so it is asked about windows it never saw.
#
# That is the paper's case for the DM, long horizons without compounding error, and its price, a
# model of the data's behaviour. Which one matters for learning depends on where the learner's
# policy goes; the next section measures it.
#
# What the picture does *not* show: during training pi is the learner's actor, which changes every
# 200 updates; DyDiff then keeps only the 60% of trajectories with the best predicted return
# (`filter_trajectories`, step 3), and TD3+BC trains on batches of 60% real and 40% synthetic rows
# (step 4). `dydiff.synthesise` does steps 1-3 in one call.

# %% [markdown]
# ## 6. TD3+BC, DyDiff and M = 0 on the same seeds
#
# `lab.run(algo, seed, data, models, cfg)` trains one TD3+BC learner with `dydiff.DyDiffTrainer`
# and returns its score at every evaluation:
#
# - **td3bc**: the real data only (Fujimoto & Gu 2021), the baseline.
# - **dydiff**: every 200 updates, 256 real start states become synthetic trajectories (steps 1-3
#   with the current actor as pi); every batch is 60% real, 40% synthetic rows.
# - **m0**: the same with M = 0, i.e. without the diffusion model: filtered single-step rollouts.
#   It asks whether the DM earns its place.
#
# A seed gives every algorithm the same starting networks, so the comparison is *paired*: per seed
# differences, with a 95% bootstrap interval over seeds (`lab.summary_line`). This is exactly what
# `python scripts/lab.py` runs, in the same order: 15 runs of 3-8 s each on one core.
#
# **What to expect** on seeds 0-4 with the lab's settings. The README's line, from one core of an
# AMD EPYC (AVX2), torch 2.13.0:
#
# `lab: td3bc 25.7 +- 17.1, dydiff 30.4 +- 17.7, M=0 38.0 +- 16.2, dydiff-td3bc +4.7 [+1.6, +8.2], M2-M0 -7.6 [-14.9, -0.2]`
#
# The same CPU type, torch build and seeds give it digit for digit. Another CPU sums floats in
# another order, and 1,000 updates of RL amplify that: on an Intel Xeon with AVX-512, same torch,
# DyDiff was ahead of TD3+BC on 3 seeds of 5 (by less, its interval covering zero) and M = 0
# ahead of M = 2 by more (its interval below zero). Expect numbers within the seeds' spread, not
# one exact line.

# %%
start, cpu_start = time.time(), time.process_time()
finals = {a: [] for a in ALGOS}
curves = {a: [] for a in ALGOS}
for seed in SEEDS:
    for algo in ALGOS:
        t = time.time()
        curve = lab.run(algo, seed, data, models, cfg)
        finals[algo].append(curve[-1][1])
        curves[algo].append([score for _, score in curve])
        print(f"{algo} seed {seed}: final {curve[-1][1]:.1f} ({time.time() - t:.0f} s)", flush=True)
updates = [u for u, _ in curve]
for algo in ALGOS:
    means = np.mean(curves[algo], 0)
    print(f"mean score of {algo} at", " / ".join(f"{u}" for u in updates), "updates:",
          " / ".join(f"{x:.1f}" for x in means))
print(f"time: {time.time() - start:.0f} s ({time.process_time() - cpu_start:.0f} s of CPU)")
print(lab.summary_line(finals, cfg.iterations))

# %% [markdown]
# ## 7. Reading, and what to try
#
# The seeds differ far more from each other (std 12-18) than the algorithms do, which is why the
# comparison is paired. **DyDiff against TD3+BC**: a small gain, +1 to +5 points; on the AMD CPU
# its interval is above zero (DyDiff ahead on 4 seeds of 5), on the Intel one it covers zero
# (3 of 5). Five seeds cannot settle an effect this small. **M = 2 against M = 0**: without the
# diffusion model the score is *higher*, 7-10 points, the interval below zero on both CPUs. On this
# task, as on the full maze2d-umaze, the DM is not what buys DyDiff its gain (on
# hopper-medium-replay it is: README, Results); section 5's picture suggests why: where the data
# covers the box, the single-step model is the better one. Five seeds and 1,000 updates where
# every curve still rises: a miniature for seeing the method and the protocol at work, not
# evidence on its own.
#
# Exercises (docs/lab.md has the measured answers). Run DyDiff alone to save time, e.g.
# `ALGOS = ["dydiff"]` and `cfg = dataclasses.replace(cfg, iterations=1)`, then section 6's cell:
#
# 1. **How many injection rounds?** `iterations=1`, then 4 (lab: M = 0 38.0, 1 27.2, 2 30.4,
#    4 21.7). Does section 5's picture predict the order?
# 2. **No reward filter**: `keep_ratio=1`. **Other horizons**: `horizon=16` or 64 (retrain the
#    models: section 4 first, the DM's windows are H long).
# 3. **Another policy in section 5**: add an entry to `POLICIES`, e.g. random actions, or a learned
#    actor: `trainer = dydiff.DyDiffTrainer(cfg, data, models)`, `trainer.train(cfg.updates)`, then
#    `lambda s: trainer.agent.act(torch.as_tensor(s)).numpy()`. Where do its rollouts go wrong?
