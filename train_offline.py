"""Train DyDiff + TD3+BC on a Minari dataset (driver script).

The data part below turns a task name into a Minari dataset, the dataset into flat arrays, and a
policy into an evaluation score. Where the official PointMaze data cannot be downloaded, it
regenerates it locally with the recipe of the official D4RL/pointmaze datasets.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import hashlib
import inspect
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import socket
import threading
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import matplotlib
import minari
import numpy as np
import torch

with contextlib.redirect_stderr(io.StringIO()):  # its import prints a notice about Adroit envs
    import gymnasium_robotics
from gymnasium_robotics.envs.maze.maps import GOAL, LARGE_MAZE, MEDIUM_MAZE, U_MAZE
from gymnasium_robotics.envs.maze.maze_v4 import Maze
from matplotlib.patches import Rectangle
from minari.data_collector import EpisodeBuffer
from minari.storage.datasets_root_dir import get_dataset_path
from minari.utils import RandomPolicy, get_average_reference_score
from tqdm import tqdm

import dydiff

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt  # noqa: E402

gym.register_envs(gymnasium_robotics)  # registers the PointMaze_* environments


class UserError(Exception):
    """A user mistake: the driver prints str(e) on one line and exits 2 (no traceback)."""


# ---- Tasks ----
@dataclass(frozen=True)
class Task:
    """One row of the task table."""

    name: str  # short name, e.g. "maze2d-umaze", "hopper-medium"
    dataset_id: str  # official Minari id, e.g. "D4RL/pointmaze/umaze-v2"
    maze: str | None  # "umaze" / "medium" / "large" for PointMaze tasks, else None
    horizon: int  # DyDiff rollout horizon H (must suit the U-Net's downsampling)
    eval_episodes: int  # evaluation episodes per evaluation
    updates: int  # default number of RL updates


# Fixed goal cell (row, col) of each maze's evaluation env, as in Minari's pointmaze generation
# script (EVAL_ENV_MAPS in minari-dataset-generation-scripts/scripts/pointmaze).
MAZES = {
    "umaze": ("PointMaze_UMaze", U_MAZE, (1, 1)),
    "medium": ("PointMaze_Medium", MEDIUM_MAZE, (6, 6)),
    "large": ("PointMaze_Large", LARGE_MAZE, (7, 9)),
}
# Minari's mujoco namespace publishes these levels for each robot (Gymnasium v5 envs).
MUJOCO_LEVELS = ("simple", "medium", "expert")


def _default_task(name: str, dataset_id: str) -> Task:
    """A task with this project's defaults; the maze is read from a pointmaze id."""
    ds_name = dataset_id.rsplit("/", 1)[-1].split("-")[0]
    maze = ds_name if "pointmaze/" in dataset_id and ds_name in MAZES else None
    return Task(name, dataset_id, maze, 32, 50 if maze else 10, 50_000 if maze else 100_000)


TASKS: dict[str, Task] = {
    **{
        f"maze2d-{m}{d}": _default_task(f"maze2d-{m}{d}", f"D4RL/pointmaze/{m}{d}-v2")
        for m in MAZES
        for d in ("", "-dense")
    },
    **{
        f"{r}-{lv}": _default_task(f"{r}-{lv}", f"mujoco/{r}/{lv}-v0")
        for r in ("hopper", "halfcheetah", "walker2d")
        for lv in MUJOCO_LEVELS
    },
}


def resolve_task(name: str) -> Task:
    """A known task name, or any raw Minari id (it contains a '/') with default settings."""
    if name in TASKS:
        return TASKS[name]
    if "/" in name:
        return _default_task(name, name)
    raise UserError(f"unknown env '{name}'; known: {', '.join(TASKS)} (or a Minari dataset id)")


# ---- Datasets ----
def _hub_reachable(timeout: float = 3.0) -> bool:
    """Cheap TCP probe of the Hugging Face hub that Minari downloads from.

    Without it, a machine with no network waits ~25 s (measured) while huggingface_hub retries
    five times with back-off. Behind a proxy a direct probe proves nothing, so we let it try."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return True
    from huggingface_hub import constants

    host = urllib.parse.urlparse(constants.ENDPOINT).hostname
    reachable: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            reachable.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)  # a thread: DNS lookups can hang too
    thread.start()
    thread.join(timeout)
    return bool(reachable)


def local_dataset_id(task: Task, n_steps: int | None = None) -> str:
    """Our own id for locally generated data, so it is never mistaken for the official set:
    D4RL/pointmaze/umaze-v2 -> local/pointmaze/umaze-v2 (1M steps) or umaze-<N>steps-v2."""
    name, version = task.dataset_id.rsplit("/", 1)[-1].rsplit("-v", 1)
    size = "" if n_steps is None else f"-{n_steps}steps"
    return f"local/pointmaze/{name}{size}-v{version}"


def load_dataset(
    task: Task, dataset_size: int | None = None, log: Callable[[str], Any] = print
) -> minari.MinariDataset:
    """Local official data, else a download, else (mazes only) locally generated data."""
    if dataset_size is None:
        try:
            return minari.load_dataset(task.dataset_id)
        except FileNotFoundError:
            pass
        log(f"{task.dataset_id} is not local; trying to download it")
        if _hub_reachable():
            try:
                minari.download_dataset(task.dataset_id)
                return minari.load_dataset(task.dataset_id)
            except Exception as e:  # network errors, unknown id, incompatible version
                log(f"download failed: {type(e).__name__}: {e}")
                shutil.rmtree(get_dataset_path(task.dataset_id), ignore_errors=True)
        else:
            log("download failed: the dataset hub is unreachable (no network)")
    if task.maze is None:
        if dataset_size is not None:
            raise UserError("--dataset-size only applies to maze tasks (their data is generated)")
        raise UserError(
            f"dataset {task.dataset_id} is not available locally and cannot be downloaded here; "
            f"run `minari download {task.dataset_id}` on a machine with network, then copy its "
            f"folder to {get_dataset_path(task.dataset_id)}"
        )
    n_steps = dataset_size or 1_000_000
    local_id = local_dataset_id(task, dataset_size)
    try:
        dataset = minari.load_dataset(local_id)
        if dataset.total_steps == n_steps:
            log(f"using locally generated {local_id}")
            return dataset
        raise ValueError(f"{dataset.total_steps} steps")
    except FileNotFoundError:
        pass
    except Exception as e:  # only if killed while writing: _save_dataset cleans up otherwise
        log(f"{local_id} is unreadable or incomplete ({e}); regenerating it")
        shutil.rmtree(get_dataset_path(local_id))
    log(f"generating {local_id} ({n_steps:,} steps) with the official D4RL/pointmaze recipe")
    dense = "-dense" in task.dataset_id
    return generate_maze_dataset(task.maze, local_id, n_steps, dense=dense, log=log)


def _make_env(env: gym.Env | str | gym.envs.registration.EnvSpec, **kwargs) -> gym.Env:
    """gym.make, then delete the XML file each maze env leaves in $TMPDIR (the model is loaded)."""
    env = env if isinstance(env, gym.Env) else gym.make(env, **kwargs)
    xml = getattr(env.unwrapped, "tmp_xml_file_path", None)
    if xml and os.path.exists(xml):
        os.remove(xml)
    return env


def _save_dataset(
    dataset_id: str,
    episodes: list[EpisodeBuffer],
    env: gym.Env,
    eval_env: gym.Env,
    ref_scores: dict[str, float] | None = None,
    **meta,
) -> minari.MinariDataset:
    """Write episodes as a real Minari dataset; never leave a half-written one behind.

    Reference scores go in afterwards: given to create_dataset_from_buffers, they make Minari
    gym.make the eval env once more (and a maze env leaks its XML file)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # missing author e-mail etc.
            dataset = minari.create_dataset_from_buffers(
                dataset_id, episodes, env=env, eval_env=eval_env.spec,
                author="train_offline.py", author_email="n/a",
                code_permalink="train_offline.py", **meta,
            )  # fmt: skip
        if ref_scores:
            dataset.storage.update_metadata(ref_scores)
        return dataset
    except BaseException:  # also KeyboardInterrupt
        shutil.rmtree(get_dataset_path(dataset_id), ignore_errors=True)
        raise


class WaypointController:
    """The scripted expert of D4RL / Minari PointMaze data: plan over maze cells, follow with PD.

    Planner: Q-value iteration on the grid of cells (50 iterations, gamma 0.99, reward 1 for
    entering the goal cell) gives the next cell to head for. Waypoints are cell centres jittered by
    up to 0.2 (the last one is the exact goal); switch to the next one within 0.1. PD control
    a = 10 (waypoint - pos) - 1 vel, unclipped: the caller adds noise first, then clips, so noise
    barely matters far from a waypoint. Like the original it replans when the goal changes."""

    MOVES = ((0, 1), (0, -1), (-1, 0), (1, 0))  # Minari's maze_solver order (ties -> first)

    def __init__(self, maze: Maze, rng: np.random.Generator):
        self.maze, self.rng = maze, rng
        self.goal_xy: np.ndarray | None = None
        self._plans: dict[tuple[int, int], dict] = {}

    def _plan(self, goal: tuple[int, int]) -> dict:
        """Next cell for every free cell, towards goal (cached: there are few goal cells)."""
        if goal not in self._plans:
            grid = self.maze.maze_map
            free = [(i, j) for i, row in enumerate(grid) for j, c in enumerate(row) if c != 1]
            index = {c: k for k, c in enumerate(free)}
            nxt = np.array([[index.get((i + di, j + dj), -1) for di, dj in self.MOVES]
                            for i, j in free])  # fmt: skip
            reward = (nxt == index[goal]).astype(float)
            q = np.zeros_like(reward)
            for _ in range(50):
                q = reward + 0.99 * np.where(nxt >= 0, q.max(1)[nxt], 0.0)
            best = nxt[np.arange(len(free)), q.argmax(1)]
            self._plans[goal] = {c: free[best[k]] for k, c in enumerate(free)}
        return self._plans[goal]

    def _set_waypoint(self, cell: tuple[int, int]) -> None:
        """Head for the cell after `cell` on the plan; in the goal cell, for the goal itself."""
        self.cell = cell if cell == self.goal_cell else self.plan[cell]
        if self.cell == self.goal_cell:
            self.waypoint = self.goal_xy
        else:
            jitter = self.rng.uniform(size=2) * 0.2
            self.waypoint = self.maze.cell_rowcol_to_xy(np.array(self.cell)) - jitter

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        pos = obs["achieved_goal"]
        if self.goal_xy is None or np.linalg.norm(obs["desired_goal"] - self.goal_xy) > 1e-3:
            self.goal_xy = obs["desired_goal"].copy()
            self.goal_cell = tuple(int(v) for v in self.maze.cell_xy_to_rowcol(self.goal_xy))
            self.plan = self._plan(self.goal_cell)
            self._set_waypoint(tuple(int(v) for v in self.maze.cell_xy_to_rowcol(pos)))
        elif self.cell != self.goal_cell and np.linalg.norm(self.waypoint - pos) <= 0.1:
            self._set_waypoint(self.cell)
        return 10.0 * (self.waypoint - pos) - 1.0 * obs["observation"][2:]  # not yet clipped


def _make_maze_envs(maze: str, dense: bool, n_steps: int) -> tuple[gym.Env, gym.Env]:
    """Collection env (random goals, never resets) and evaluation env (one fixed goal cell).

    Both are continuing tasks: reaching the goal never terminates. The eval env keeps its goal
    (reset_target=False) and the registered time limit, 300 / 600 / 800 steps (Minari's spec)."""
    env_name, grid, (gi, gj) = MAZES[maze]
    env_id = f"{env_name}{'Dense' if dense else ''}-v3"
    env = _make_env(env_id, continuing_task=True, reset_target=True, max_episode_steps=n_steps)
    eval_map = [[GOAL if (i, j) == (gi, gj) else c for j, c in enumerate(row)]
                for i, row in enumerate(grid)]  # fmt: skip
    eval_env = _make_env(env_id, maze_map=eval_map, continuing_task=True, reset_target=False)
    return env, eval_env


def generate_maze_dataset(
    maze: str,
    dataset_id: str,
    n_steps: int = 1_000_000,
    seed: int = 0,
    dense: bool = False,
    log: Callable[[str], Any] = print,
    ref_episodes: int = 100,
) -> minari.MinariDataset:
    """Regenerate a D4RL/pointmaze dataset: one long noisy expert stream cut at each success.

    Recipe of the official sets (Minari's create_pointmaze_dataset.py): continuing task with a
    new random goal on every success, actions = expert + N(0, 0.5^2) clipped to [-1, 1], and an
    episode ends (truncation) when its goal is reached. As there, the next episode starts from
    the same observation, which still shows the old desired_goal. No infos are stored."""
    rng = np.random.default_rng(seed)
    env, eval_env = _make_maze_envs(maze, dense, n_steps)
    controller = WaypointController(env.unwrapped.maze, rng)
    obs, _ = env.reset(seed=seed)
    step = env.unwrapped.step  # the raw env: no wrapper overhead, and no time limit to hit
    stream = {k: np.empty((n_steps + 1, len(v))) for k, v in obs.items()}
    actions = np.empty((n_steps, 2), np.float32)
    rewards, success = np.empty(n_steps), np.empty(n_steps, bool)
    for t in tqdm(range(n_steps), desc=f"generating {dataset_id}", mininterval=2, unit="step"):
        for k, v in obs.items():
            stream[k][t] = v
        noise = rng.normal(scale=0.5, size=2)
        actions[t] = np.clip(controller(obs) + noise, -1.0, 1.0)  # as Minari's script
        obs, rewards[t], _, _, info = step(actions[t])
        success[t] = info["success"]
    for k, v in obs.items():
        stream[k][n_steps] = v

    ends = list(np.flatnonzero(success))
    if not ends or ends[-1] != n_steps - 1:
        ends.append(n_steps - 1)  # the unfinished last episode ends in a time-out
    episodes, start = [], 0
    for end in ends:
        steps = slice(start, end + 1)
        cut = np.arange(start, end + 1) == end
        episodes.append(EpisodeBuffer(
            observations={k: v[start : end + 2] for k, v in stream.items()},  # T + 1 rows
            actions=actions[steps], rewards=rewards[steps],
            terminations=np.zeros_like(cut), truncations=cut,
        ))  # fmt: skip
        start = end + 1
    log(f"{len(episodes):,} episodes, {success.sum() / len(episodes):.2%} reach their goal")

    # Reference scores as Minari measures them: mean return over 100 eval episodes of a uniform
    # random policy (min) and of the noise-free expert (max).
    eval_env.action_space.seed(seed)
    ref_min = get_average_reference_score(eval_env, RandomPolicy(eval_env), ref_episodes)
    expert = WaypointController(eval_env.unwrapped.maze, np.random.default_rng(seed))
    ref_max = get_average_reference_score(
        eval_env, lambda obs: np.clip(expert(obs), -1.0, 1.0).astype(np.float32), ref_episodes
    )
    log(f"reference returns: random {ref_min:.1f}, expert {ref_max:.1f}")
    return _save_dataset(
        dataset_id, episodes, env, eval_env, algorithm_name="QIteration+PD (local)",
        ref_scores={"ref_min_score": ref_min, "ref_max_score": ref_max,
                    "num_episodes_average_score": ref_episodes},
        description=f"Local regeneration of D4RL/pointmaze/{maze} data (seed {seed}).",
    )  # fmt: skip


def collect_random_dataset(env_id: str, dataset_id: str, n_steps: int, seed: int):
    """A tiny local dataset of uniform random actions (for tests of the MuJoCo path)."""
    env = _make_env(env_id)
    env.action_space.seed(seed)
    episodes, obs, steps = [], [env.reset(seed=seed)[0]], []
    for t in range(n_steps):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        truncated = truncated or (t == n_steps - 1 and not terminated)  # budget = time-out
        obs.append(next_obs)
        steps.append((action, reward, terminated, truncated))
        if terminated or truncated:
            acts, rews, terms, truncs = map(np.array, zip(*steps))
            episodes.append(EpisodeBuffer(
                observations=np.array(obs), actions=acts, rewards=rews,
                terminations=terms, truncations=truncs,
            ))  # fmt: skip
            obs, steps = [env.reset()[0]], []
    return _save_dataset(dataset_id, episodes, env, env, algorithm_name="random")


def _state(obs: Any) -> np.ndarray:
    """The RL state: the full vector for MuJoCo; (x, y, vx, vy) of a maze's dict observation."""
    return np.asarray(obs["observation"] if isinstance(obs, dict) else obs, np.float32)


def dataset_to_arrays(dataset: minari.MinariDataset, task: Task) -> dict[str, np.ndarray]:
    """Flat float32 transition arrays plus int64 episode_ids (an episode's rows are consecutive).

    Mazes: the data's goal changes every episode but the state has no goal and evaluation uses
    one fixed goal, so - as D4RL did for its maze2d sets (scripts/relabel_maze2d_rewards.py) -
    rewards are relabelled against the eval goal's cell centre with PointMaze's own rule: sparse
    1[||xy' - goal|| <= 0.45], dense exp(-||xy' - goal||). The continuing maze task never
    terminates; truncations are time-outs, so terminals = terminations only."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "act", "rew", "term", "id")}
    for i, ep in enumerate(dataset.iterate_episodes()):
        parts["obs"].append(_state(ep.observations))
        parts["act"].append(np.asarray(ep.actions, np.float32))
        parts["rew"].append(np.asarray(ep.rewards, np.float32))
        parts["term"].append(np.asarray(ep.terminations, np.float32))
        parts["id"].append(np.full(len(ep.rewards), i, np.int64))
    observations = np.concatenate([o[:-1] for o in parts["obs"]])
    next_observations = np.concatenate([o[1:] for o in parts["obs"]])
    rewards = np.concatenate(parts["rew"])
    if task.maze is not None:
        eval_env = make_eval_env(dataset, task)
        maze = eval_env.unwrapped.maze
        assert len(maze.unique_goal_locations) == 1, "the eval env should have one goal cell"
        dist = np.linalg.norm(next_observations[:, :2] - maze.unique_goal_locations[0], axis=1)
        dense = eval_env.unwrapped.reward_type == "dense"
        rewards = (np.exp(-dist) if dense else dist <= 0.45).astype(np.float32)
        eval_env.close()
    return {
        "observations": observations,
        "actions": np.concatenate(parts["act"]),
        "rewards": rewards,
        "next_observations": next_observations,
        "terminals": np.concatenate(parts["term"]),
        "episode_ids": np.concatenate(parts["id"]),
    }


def termination_fn(task: Task) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Done flags for synthetic next states [B, S] -> bool [B], from MBPO's static functions.

    Gymnasium v5 observations start with (z height, torso angle) for both robots. Hopper: MBPO's
    check `np.abs(next_obs[:, 1:] < 100)` has a misplaced parenthesis; we use |s[1:]| < 100."""
    if "hopper" in task.dataset_id.lower():

        def done(s: torch.Tensor) -> torch.Tensor:
            alive = (
                torch.isfinite(s).all(-1)
                & (s[:, 1:].abs() < 100).all(-1)
                & (s[:, 0] > 0.7)
                & (s[:, 1].abs() < 0.2)
            )
            return ~alive

        return done
    if "walker2d" in task.dataset_id.lower():

        def done(s: torch.Tensor) -> torch.Tensor:
            height, angle = s[:, 0], s[:, 1]
            return ~((height > 0.8) & (height < 2.0) & (angle > -1.0) & (angle < 1.0))

        return done
    return None  # halfcheetah and the continuing maze tasks never terminate


# ---- Evaluation ----
def make_eval_env(dataset: minari.MinariDataset, task: Task) -> gym.Env:
    """The dataset's evaluation env (for mazes: one fixed goal cell, Minari's time limit)."""
    return _make_env(dataset.recover_environment(eval_env=True))


def normalized_score(dataset: minari.MinariDataset, returns: np.ndarray) -> np.ndarray | None:
    """D4RL-style score x100 (0 = random policy, 100 = expert); None without reference scores."""
    try:
        return 100.0 * minari.get_normalized_score(dataset, np.asarray(returns, np.float64))
    except ValueError:  # the dataset stores no ref_min_score / ref_max_score
        return None


@torch.no_grad()
def evaluate(
    policy: Callable[[np.ndarray], np.ndarray],
    dataset: minari.MinariDataset,
    task: Task,
    n_episodes: int,
    seed: int,
) -> dict[str, float | None]:
    """Run n_episodes on copies of the eval env stepped together, one policy call per step.

    Episode k is reset with seed + k, so results do not depend on the number of copies."""
    envs = [make_eval_env(dataset, task) for _ in range(min(n_episodes, 10))]
    states, episode_of, returns = [], [], np.zeros(n_episodes)
    for k, env in enumerate(envs):
        states.append(_state(env.reset(seed=seed + k)[0]))
        episode_of.append(k)
    next_episode = len(envs)
    active = list(range(len(envs)))
    while active:
        actions = np.asarray(policy(np.stack([states[i] for i in active])))
        still_active = []
        for i, action in zip(active, actions):
            obs, reward, terminated, truncated, _ = envs[i].step(action)
            returns[episode_of[i]] += reward
            if terminated or truncated:
                if next_episode == n_episodes:
                    continue
                episode_of[i], next_episode = next_episode, next_episode + 1
                obs, _ = envs[i].reset(seed=seed + episode_of[i])
            states[i] = _state(obs)
            still_active.append(i)
        active = still_active
    for env in envs:
        env.close()
    scores = normalized_score(dataset, returns)
    return {
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "score_mean": None if scores is None else float(scores.mean()),
        "score_std": None if scores is None else float(scores.std()),
    }


# ---- Command line ----
def _config_help() -> dict[str, str]:
    """The one-line comment after each Config field in dydiff.py, used as its --help text."""
    source = inspect.getsource(dydiff.Config)
    found = re.findall(r"^\s+(\w+): [^=]+= .*?#\s*(.*)$", source, re.M)
    return {name: text.replace("%", "%%") for name, text in found}  # argparse formats help with %


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Train DyDiff+TD3BC (or plain TD3+BC) offline on a Minari dataset.",
        usage="python train_offline.py [--env ENV] [--algo {dydiff,td3bc}] [--seed N] [options]",
    )
    p.add_argument("--env", help="task name (see README) or a Minari id [maze2d-umaze]")
    p.add_argument("--algo", choices=("dydiff", "td3bc"), help="[dydiff]")
    p.add_argument("--seed", type=int, help="[0]")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--dataset-size", type=int, help="generate a maze dataset of this many steps")
    p.add_argument("--eval-episodes", type=int, help="episodes per evaluation (default: task's)")
    p.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks an install, scores mean nothing"
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--out", default="runs", help="folder for run folders")
    p.add_argument(
        "--cache", default="cache", help="folder for cached arrays and pretrained models"
    )
    p.add_argument(
        "--experiment",
        choices=("train", "rollout-error"),
        default="train",
        help="rollout-error: per-step error of dynamics vs DyDiff rollouts (paper Fig. 3)",
    )
    p.add_argument(
        "--policy-run", metavar="RUN_DIR", help="rollout-error: also roll out this run's policy"
    )
    g = p.add_argument_group("DyDiff hyperparameters (dydiff.Config; defaults from the task table)")
    helps = _config_help()
    for f in dataclasses.fields(dydiff.Config):
        if f.name == "device":
            continue
        kind = {"bool": _bool, "tuple": _ints}.get(type(f.default).__name__, type(f.default))
        g.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=kind,
            default=None,
            help=f"{helps.get(f.name, '')} (default {f.default})",
        )
    args = p.parse_args(argv)
    if not args.resume:  # with --resume these come from the checkpoint
        args.env = args.env or "maze2d-umaze"
        args.algo = args.algo or "dydiff"
        args.seed = 0 if args.seed is None else args.seed
    return args


def _bool(s: str) -> bool:
    if s.lower() not in ("true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")
    return s.lower() in ("true", "1")


def _ints(s: str) -> tuple:
    try:
        return tuple(int(v) for v in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


# Tiny sizes for --smoke: every phase runs, in seconds; the score means nothing.
SMOKE = dict(updates=300, eval_every=150, horizon=8, rollout_batch_size=64, rollout_every=100,
             dm_steps=50, mlp_width=64, model_epoch_steps=20, model_max_epochs=2, unet_dim=8)  # fmt: skip


def make_config(args: argparse.Namespace, task: Task, device: str) -> dydiff.Config:
    """Config defaults <- the task's row <- --smoke <- flags given on the command line."""
    for flag in ("dataset_size", "eval_episodes"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            raise UserError(f"invalid setting: --{flag.replace('_', '-')} must be positive")
    if args.threads < 0:
        raise UserError("invalid setting: --threads must be >= 0")
    values = {"updates": task.updates, "horizon": task.horizon}
    if args.smoke:
        values |= SMOKE
    values |= {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(dydiff.Config)
        if f.name != "device" and getattr(args, f.name, None) is not None
    }
    cfg = dydiff.Config(**values, device=device)
    try:
        cfg.validate()
    except ValueError as e:
        raise UserError(f"invalid setting: {e}") from None
    return cfg


def smoke_size(args: argparse.Namespace, task: Task) -> int | None:
    """--smoke generates a small maze dataset (other tasks use their data as it is)."""
    return 20_000 if args.smoke and task.maze else None


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return name


# ---- Files: atomic writes, cache ----
def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """write(tmp) then rename: a crash never leaves a half-written file where a good one was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # unique: runs may share a cache
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_torch(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_torch(path: Path, what: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated, not a checkpoint at all, ...
        raise UserError(
            f"{what} {path} is unreadable ({type(e).__name__}); delete it or start a new run"
        ) from None


def save_json(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=str)))


def cache_key(dataset_id: str, cfg: dydiff.Config, fields: tuple[str, ...], seed: int) -> str:
    """A readable, unique folder name for what a pretrained model depends on."""
    settings = json.dumps({f: getattr(cfg, f) for f in fields} | {"seed": seed}, sort_keys=True)
    digest = hashlib.sha1(settings.encode()).hexdigest()[:10]
    return f"{dataset_id.replace('/', '_')}__{digest}"


_FIT = "model_lr model_batch_size model_epoch_steps model_max_epochs model_patience holdout_ratio"
MODEL_FIELDS = {  # the settings each pretrained model depends on (besides the data and the seed)
    "dynamics": f"n_members n_elites dynamics_hidden max_holdout {_FIT}".split(),
    "reward": f"reward_hidden max_holdout {_FIT}".split(),
    "diffusion": "horizon denoiser n_diffusion_steps predict_epsilon mlp_width mlp_blocks unet_dim "
    "unet_dim_mults dm_steps dm_batch_size dm_lr ema_decay".split(),
}


def load_arrays(dataset: minari.MinariDataset, task: Task, cache: Path) -> dict[str, np.ndarray]:
    """dataset_to_arrays, cached as .npz (reading 13k episodes from HDF5 takes ~25 s)."""
    path = cache / f"{dataset.spec.dataset_id.replace('/', '_')}__{dataset.total_steps}.npz"
    if path.exists():
        with np.load(path) as f:
            return dict(f)
    data = dataset_to_arrays(dataset, task)
    atomic_write(path, lambda tmp: np.savez(tmp.open("wb"), **data))
    return data


# ---- Pretraining phases ----
def pretrain(
    data: dict[str, np.ndarray],
    dataset_id: str,
    cfg: dydiff.Config,
    seed: int,
    cache: Path,
    times: dict,
) -> tuple[dict, dict]:
    """Dynamics ensemble, reward model and diffusion model, each loaded from the cache if there."""
    s_dim, a_dim = data["observations"].shape[1], data["actions"].shape[1]
    models, info = {}, {}
    for name in ("dynamics", "reward", "diffusion"):
        path = cache / cache_key(dataset_id, cfg, MODEL_FIELDS[name], seed) / f"{name}.pt"
        start = time.time()
        if path.exists():
            saved = load_torch(path, "cached model")
            build = {"dynamics": dydiff.build_dynamics, "reward": dydiff.build_reward_model,
                     "diffusion": dydiff.build_diffusion}[name]  # fmt: skip
            model = build(cfg, s_dim, a_dim)
            model.load_state_dict(saved["state"])
            models[name], info[name] = model, saved["info"]
            print(f"{name}: loaded from cache {path.parent}")
            continue
        torch.manual_seed(seed)
        curve: list[dict] = []  # becomes this phase's rows of metrics.csv
        total, unit = (
            (cfg.dm_steps, "step") if name == "diffusion" else (cfg.model_max_epochs, "epoch")
        )
        with tqdm(total=total, desc=f"{name} model", unit=unit) as bar:

            def log(step: int, metrics: dict) -> None:
                bar.update(step - bar.n)
                bar.set_postfix(metrics)
                curve.append({"update": step, "phase": name} | metrics)

            try:
                if name == "diffusion":
                    model = dydiff.train_diffusion(data, cfg, log)
                    info[name] = {"final_loss": curve[-1]["loss"]}
                else:
                    fit = dydiff.train_dynamics if name == "dynamics" else dydiff.train_reward_model
                    model, errors = fit(data, cfg, log)
                    info[name] = {"holdout_mse": errors.tolist()}
            except ValueError as e:  # settings that do not fit this data, e.g. a horizon too long
                raise UserError(f"{name} model: {e}") from None
        info[name]["curve"] = curve
        models[name] = model
        save_torch({"state": model.state_dict(), "info": info[name]}, path)
        times[name] = time.time() - start
    return models, info


# ---- The run ----
CSV_COLUMNS = ("update phase loss holdout_mse critic_loss actor_loss score return kept_trajectories "
               "kept_transitions return_kept return_all synthetic_rows time").split()  # fmt: skip


def write_metrics(rows: list[dict], path: Path) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


def run_identity(args: argparse.Namespace, cfg: dydiff.Config) -> dict:
    """What a checkpoint must match to be resumed."""
    return {
        "env": args.env,
        "algo": args.algo,
        "seed": args.seed,
        "smoke": args.smoke,
        "dataset_size": args.dataset_size,
        "eval_episodes": args.eval_episodes,
        "config": dataclasses.asdict(cfg) | {"device": None},
    }


def new_run_dir(args: argparse.Namespace) -> Path:
    """runs/<env>__<algo>__<seed>__<time>/ (with a suffix if that second is taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(args.out) / f"{args.env.replace('/', '_')}__{args.algo}__{args.seed}__{stamp}"
    for k in range(100):
        run_dir = base.with_name(base.name + (f"-{k}" if k else ""))
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue
    raise UserError(f"cannot create a run folder next to {base}")


def load_checkpoint(args: argparse.Namespace) -> dict:
    """The checkpoint to resume; its settings replace the defaults in args."""
    run_dir = Path(args.resume)
    ckpt_path = run_dir / "checkpoint.pt"
    if not ckpt_path.exists():
        raise UserError(f"--resume {run_dir}: no checkpoint.pt there")
    ckpt = load_torch(ckpt_path, "checkpoint")
    if not isinstance(ckpt, dict) or "identity" not in ckpt:
        raise UserError(f"checkpoint {ckpt_path} is not a train_offline.py checkpoint")
    saved = ckpt["identity"]
    # settings come from the checkpoint; a flag given now that contradicts it is a mistake
    for key in ("env", "algo", "seed", "smoke", "dataset_size", "eval_episodes"):
        given = getattr(args, key)
        if given not in (None, False) and given != saved[key]:
            raise UserError(
                f"checkpoint is from another configuration: {key}={saved[key]!r}, "
                f"--{key.replace('_', '-')} {given!r}"
            )
        setattr(args, key, saved[key])
    for name, value in saved["config"].items():
        given = getattr(args, name, None)
        if given is not None and given != value and name != "device":
            raise UserError(
                f"checkpoint is from another configuration: {name}={value!r}, "
                f"--{name.replace('_', '-')} {given!r}"
            )
        if name != "device":
            setattr(args, name, value)
    return ckpt


def train(args: argparse.Namespace) -> None:
    ckpt = load_checkpoint(args) if args.resume else None
    task = resolve_task(args.env)
    device = resolve_device(args.device)
    cfg = make_config(args, task, device)  # every setting is checked before any work
    run_dir = Path(args.resume) if args.resume else new_run_dir(args)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    times: dict[str, float] = {}
    cache = Path(args.cache)

    start = time.time()
    dataset = load_dataset(task, args.dataset_size or smoke_size(args, task))
    data = load_arrays(dataset, task, cache)
    times["data"] = time.time() - start
    dataset_id = dataset.spec.dataset_id
    print(
        f"data: {dataset_id}, {len(data['rewards']):,} transitions, "
        f"{len(np.unique(data['episode_ids'])):,} episodes"
    )
    if np.abs(data["actions"]).max() > 1:
        raise UserError("actions outside [-1, 1]: TD3+BC here assumes a [-1, 1] action box")

    models, model_info = None, {}
    if args.algo == "dydiff":
        models, model_info = pretrain(data, dataset_id, cfg, args.seed, cache, times)
    trainer = dydiff.DyDiffTrainer(cfg, data, models, termination_fn(task))
    rows = [row for m in model_info.values() for row in m.get("curve", [])]  # pretraining, RL
    identity = run_identity(args, cfg)
    if ckpt is not None:
        trainer.load_state_dict(ckpt["trainer"])
        torch.set_rng_state(ckpt["torch_rng"])
        rows = ckpt["rows"]
        print(f"resumed {run_dir} at update {trainer.updates:,}")
    save_json(identity | {"command": " ".join(sys.argv)}, run_dir / "config.json")

    n_eval = args.eval_episodes or (2 if args.smoke else task.eval_episodes)

    def policy(states: np.ndarray) -> np.ndarray:
        return trainer.agent.act(torch.as_tensor(states, device=device)).cpu().numpy()

    def evaluate_now(update: int) -> dict:
        # same episodes (seeds) at every evaluation and for every algorithm: a fair comparison
        t = time.time()
        result = evaluate(policy, dataset, task, n_eval, seed=10_000)
        times["evaluation"] = times.get("evaluation", 0.0) + time.time() - t
        score = result["score_mean"]
        return {
            "score": score if score is not None else float("nan"),
            "return": result["return_mean"],
        }

    def checkpoint() -> None:
        save_torch(
            {
                "identity": identity,
                "trainer": trainer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "rows": rows,
            },
            run_dir / "checkpoint.pt",
        )

    start = time.time()
    bar = tqdm(total=cfg.updates, initial=trainer.updates, desc=f"{args.algo} updates", unit="upd")

    def log(update: int, metrics: dict) -> None:
        rows.append(
            {"update": update, "phase": "rl", "time": round(time.time() - start, 1)} | metrics
        )
        bar.update(update - bar.n)
        shown = {k: f"{metrics[k]:.3g}" for k in ("critic_loss", "score") if k in metrics}
        bar.set_postfix(
            shown | ({"best": f"{max(r['score'] for r in evals(rows)):.1f}"} if evals(rows) else {})
        )
        if "score" in metrics:  # an evaluation: save what we have
            write_metrics(rows, run_dir / "metrics.csv")
            checkpoint()

    try:
        trainer.train(cfg.updates, evaluate_now, log)
    except KeyboardInterrupt:
        bar.close()
        checkpoint()
        write_metrics(rows, run_dir / "metrics.csv")
        print(
            f"\ninterrupted at update {trainer.updates:,}; checkpoint saved. Continue with:\n"
            f"  python train_offline.py --resume {run_dir}"
        )
        sys.exit(130)
    except FloatingPointError as e:  # the last good checkpoint stays in place
        bar.close()
        raise FloatingPointError(f"{e} (last good checkpoint kept in {run_dir})") from None
    bar.close()
    times["rl"] = time.time() - start
    finish(run_dir, args, task, rows, times, model_info, trainer, dataset, data)


def evals(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "score" in r and r["score"] == r["score"]]  # skips NaN


def finish(
    run_dir: Path,
    args,
    task: Task,
    rows: list[dict],
    times: dict,
    model_info: dict,
    trainer: dydiff.DyDiffTrainer,
    dataset,
    data,
) -> None:
    """summary.json, pictures and the one-screen summary."""
    ev = evals(rows)
    final = ev[-1]["score"] if ev else None
    best = max(r["score"] for r in ev) if ev else None
    label = "normalised score" if ev else "return (no reference scores)"
    summary = {
        "env": args.env,
        "algo": args.algo,
        "seed": args.seed,
        "updates": trainer.updates,
        "final_score": final,
        "best_score": best,
        "final_return": rows[-1].get("return") if rows else None,
        "phase_seconds": {k: round(v, 1) for k, v in times.items()},
        "models": {k: {n: v for n, v in m.items() if n != "curve"} for k, m in model_info.items()},
        "smoke": args.smoke,
        "commit": git_commit(),
        "command": " ".join(sys.argv),
    }
    save_json(summary, run_dir / "summary.json")
    plot_learning_curve({args.algo: [rows]}, run_dir / "learning_curve.png", args.env)
    if task.maze is not None and trainer.models is not None:
        plot_maze_trajectories(trainer, dataset, task, data, run_dir / "trajectories.png")
    print("\n" + "=" * 64)
    print(f"{args.algo} on {args.env}, seed {args.seed}: {trainer.updates:,} updates")
    if args.smoke:
        print("SMOKE RUN: tiny sizes, the score below means nothing")
    print(f"  final {label}: {fmt(final)}   best: {fmt(best)}")
    print("  time: " + ", ".join(f"{k} {v:.0f}s" for k, v in times.items()))
    print(f"  files: {run_dir}/ (metrics.csv, summary.json, learning_curve.png, checkpoint.pt)")
    print("=" * 64)


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def git_commit() -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                cwd=Path(__file__).parent,
                timeout=5,
            ).stdout.strip()
            or None
        )
    except OSError:
        return None


# ---- Pictures ----
def plot_learning_curve(curves: dict[str, list[list[dict]]], path: Path, title: str) -> None:
    """Normalised score against updates; several seeds: mean line and a +-std band."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, runs in curves.items():
        runs = [evals(rows) for rows in runs if evals(rows)]
        if not runs:
            continue
        n = min(len(r) for r in runs)
        x = np.array([r["update"] for r in runs[0][:n]])
        y = np.array([[r["score"] for r in rows[:n]] for rows in runs])
        ax.plot(x, y.mean(0), label=f"{label} ({len(runs)} seed{'s' * (len(runs) > 1)})")
        if len(runs) > 1:
            ax.fill_between(x, y.mean(0) - y.std(0), y.mean(0) + y.std(0), alpha=0.2)
    ax.set(xlabel="updates", ylabel="normalised score", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def draw_maze(ax, maze: Maze) -> None:
    """Walls of a PointMaze as grey squares, in the env's x, y coordinates."""
    s = maze.maze_size_scaling
    for i, row in enumerate(maze.maze_map):
        for j, cell in enumerate(row):
            if cell == 1:
                x, y = maze.cell_rowcol_to_xy(np.array([i, j]))
                ax.add_patch(Rectangle((x - s / 2, y - s / 2), s, s, color="0.6"))
    ax.set_xlim(-maze.x_map_center, maze.x_map_center)
    ax.set_ylim(-maze.y_map_center, maze.y_map_center)
    ax.set_aspect("equal")


def plot_maze_trajectories(
    trainer: dydiff.DyDiffTrainer,
    dataset,
    task: Task,
    data: dict[str, np.ndarray],
    path: Path,
    n: int = 12,
) -> None:
    """Real windows of the data beside DyDiff trajectories of the final policy, over the walls."""
    cfg, m = trainer.cfg, trainer.models
    env = make_eval_env(dataset, task)
    maze = env.unwrapped.maze
    env.close()
    starts = dydiff.window_starts(data["episode_ids"], cfg.horizon)
    starts = np.random.default_rng(0).choice(starts, n, replace=False)
    real = data["observations"][starts[:, None] + np.arange(cfg.horizon)]
    s0 = torch.as_tensor(real[:, 0], device=cfg.device)
    synth, _ = dydiff.dydiff_rollout(
        s0, trainer.agent.act, m["dynamics"], m["diffusion"], cfg.horizon, cfg.iterations
    )
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
    for ax, trajs, title in (
        (axes[0], real, "real data windows"),
        (axes[1], synth.cpu().numpy(), f"DyDiff rollouts (M={cfg.iterations})"),
    ):
        draw_maze(ax, maze)
        for k, t in enumerate(trajs):
            ax.plot(t[:, 0], t[:, 1], "-", color=f"C{k % 10}", lw=1.2)
            ax.plot(t[0, 0], t[0, 1], "o", color=f"C{k % 10}", ms=4)
        ax.set_title(title)
    goal = maze.unique_goal_locations[0]
    for ax in axes:
        ax.plot(*goal, "*", color="gold", ms=14, mec="k")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


# ---- Experiment: rollout error (paper Fig. 3) ----
def expert_policy(maze: Maze, goal_xy: np.ndarray, device: str) -> Callable:
    """The data's expert as a pure function of the state (x, y, vx, vy), batched in torch:
    head for the centre of the next cell on the Q-iteration plan (the exact goal in the goal cell)
    with the PD law a = clip(10 (waypoint - pos) - vel). No jitter or waypoint memory, so the
    simulator, the dynamics model and DyDiff all roll out exactly the same policy."""
    goal_cell = tuple(int(v) for v in maze.cell_xy_to_rowcol(goal_xy))
    plan = WaypointController(maze, np.random.default_rng(0))._plan(goal_cell)
    grid = np.zeros((len(maze.maze_map), len(maze.maze_map[0]), 2), np.float32)
    for cell, nxt in plan.items():
        grid[cell] = goal_xy if goal_cell in (cell, nxt) else maze.cell_rowcol_to_xy(np.array(nxt))
    table = torch.as_tensor(grid, device=device)
    s = maze.maze_size_scaling

    def policy(states: torch.Tensor) -> torch.Tensor:
        i = ((maze.y_map_center - states[..., 1]) / s).floor().long().clamp(0, table.shape[0] - 1)
        j = ((states[..., 0] + maze.x_map_center) / s).floor().long().clamp(0, table.shape[1] - 1)
        return (10 * (table[i, j] - states[..., :2]) - states[..., 2:4]).clamp(-1, 1)

    return policy


def rollout_error(args: argparse.Namespace) -> None:
    """Per-step MSE against the simulator of (a) the dynamics ensemble rolled out step by step and
    (b) DyDiff (dynamics rollout + M injection rounds), for fixed policies, from data states."""
    task = resolve_task(args.env)
    if task.maze is None:
        raise UserError(
            "--experiment rollout-error needs a maze task (it sets the PointMaze state)"
        )
    device = resolve_device(args.device)
    cfg = make_config(args, task, device)
    torch.manual_seed(args.seed)
    dataset = load_dataset(task, args.dataset_size or smoke_size(args, task))
    data = load_arrays(dataset, task, Path(args.cache))
    models, _ = pretrain(data, dataset.spec.dataset_id, cfg, args.seed, Path(args.cache), {})
    env = make_eval_env(dataset, task)
    maze = env.unwrapped.maze
    policies = {"expert": expert_policy(maze, maze.unique_goal_locations[0], device)}
    if args.policy_run:
        ckpt = load_torch(Path(args.policy_run) / "checkpoint.pt", "checkpoint")
        s_dim, a_dim = data["observations"].shape[1], data["actions"].shape[1]
        agent = dydiff.TD3BC(s_dim, a_dim, dydiff.Normalizer(s_dim), cfg)
        agent.load_state_dict(ckpt["trainer"]["agent"])
        policies["trained TD3+BC policy (--policy-run)"] = agent.act
    n, h = (16 if args.smoke else 256), cfg.horizon
    rng = np.random.default_rng(args.seed)
    s0 = data["observations"][rng.choice(len(data["observations"]), n, replace=False)]
    results = {}
    for name, pi in policies.items():
        sim = np.zeros((n, h, s0.shape[1]), np.float32)
        for k in range(n):  # the simulator, one start state at a time
            env.reset(seed=k)
            env.unwrapped.point_env.set_state(
                s0[k, :2].astype(np.float64), s0[k, 2:].astype(np.float64)
            )
            sim[k, 0] = s0[k]
            for t in range(1, h):
                a = pi(torch.as_tensor(sim[k, t - 1][None], device=device))[0].cpu().numpy()
                sim[k, t] = _state(env.step(a)[0])
        start = torch.as_tensor(s0, device=device)
        results[name] = {"simulator": {"in_walls": float(in_walls(sim[:, 1:], maze).mean())}}
        for m_rounds in sorted({0, 1, cfg.iterations, 4}):
            label = "dynamics (single-step)" if m_rounds == 0 else f"DyDiff M={m_rounds}"
            states, _ = dydiff.dydiff_rollout(
                start, pi, models["dynamics"], models["diffusion"], h, m_rounds
            )
            states = states.cpu().numpy()
            results[name][label] = {
                "mse": ((states - sim) ** 2).mean((0, 2)).tolist(),
                "in_walls": float(in_walls(states[:, 1:], maze).mean()),
            }
    env.close()
    report_rollout_error(results, h, args, cfg)


def in_walls(states: np.ndarray, maze: Maze) -> np.ndarray:
    """Whether each state's (x, y) lies inside a wall cell: impossible in the simulator."""
    grid = np.asarray(maze.maze_map) == 1
    i = np.floor((maze.y_map_center - states[..., 1]) / maze.maze_size_scaling).astype(int)
    j = np.floor((states[..., 0] + maze.x_map_center) / maze.maze_size_scaling).astype(int)
    return grid[i.clip(0, grid.shape[0] - 1), j.clip(0, grid.shape[1] - 1)]


def report_rollout_error(results: dict, h: int, args, cfg: dydiff.Config) -> None:
    out = Path(args.out)  # the README's command passes --out results
    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (name, methods) in zip(axes[0], results.items()):
        for label, r in methods.items():
            if "mse" in r:
                ax.plot(range(1, h), r["mse"][1:], label=label)
        ax.set(yscale="log", xlabel="rollout step h", ylabel="MSE vs simulator", title=name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tag = "_smoke" if args.smoke else ""
    atomic_write(
        out / f"rollout_error{tag}.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110)
    )
    plt.close(fig)
    save_json(
        {
            "command": " ".join(sys.argv),
            "commit": git_commit(),
            "seed": args.seed,
            "horizon": h,
            "iterations": cfg.iterations,
            "per_method": results,
        },
        out / f"rollout_error{tag}.json",
    )
    for name, methods in results.items():
        dyn, dm = (
            methods["dynamics (single-step)"]["mse"],
            methods[f"DyDiff M={cfg.iterations}"]["mse"],
        )
        cross = next(
            (t for t in range(1, h) if dm[t] < dyn[t] and all(dm[u] < dyn[u] for u in range(t, h))),
            None,
        )
        labels = [k for k in methods if "mse" in methods[k]]
        print(f"\n{name}: per-step MSE against the simulator")
        print("  h    " + "".join(f"{k:>24}" for k in labels))
        for t in sorted({1, 2, 4, 8, 16, h - 1}):
            if t < h:
                print(f"  {t:<5d}" + "".join(f"{methods[k]['mse'][t]:>24.4g}" for k in labels))
        walls = ", ".join(f"{k} {r['in_walls']:.1%}" for k, r in methods.items())
        print(f"  states inside walls: {walls}")
        print(
            f"  DyDiff M={cfg.iterations} below the single-step model from h = {cross} on"
            if cross
            else f"  DyDiff M={cfg.iterations} does not stay below the single-step model"
        )
    print(f"\nwrote {out}/rollout_error{tag}.png and .json")


# ---- Entry point ----
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads > 0:  # (a negative value is reported by make_config)
        torch.set_num_threads(args.threads)
    try:
        if args.experiment == "rollout-error":
            rollout_error(args)
        else:
            train(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except FloatingPointError as e:  # a NaN/inf loss while pretraining (cached models are kept)
        print(f"error: stopped: {e}", file=sys.stderr)
        sys.exit(3)
    except KeyboardInterrupt:  # before the RL phase: nothing half-written to save
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
