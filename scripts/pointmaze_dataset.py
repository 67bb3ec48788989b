"""Regenerate the D4RL/pointmaze datasets locally, as real Minari datasets.

The official D4RL/pointmaze-v2 sets cannot be downloaded without network. This file makes them
again with the recipe of Minari's generation script (minari-dataset-generation-scripts,
scripts/pointmaze): a scripted expert plans a path of waypoints over the maze cells (depth-first
search, the official default) and follows it with a PD controller, a = 10 (waypoint - pos) - vel,
plus Gaussian action noise N(0, 0.5^2), clipped to [-1, 1]. The task is continuing: on every success
the env draws a new goal and the episode is cut there (a truncation). 1M steps. The dataset also
stores its evaluation env (one fixed goal cell) and reference scores (a random policy and the
noise-free expert), like the official sets. It is saved under its own id, local/pointmaze/<maze>-v2,
never under the official one.

Used two ways:
* automatically by train_offline.py (load_or_generate) when the official dataset is neither local
  nor downloadable;
* standalone: python scripts/pointmaze_dataset.py --maze medium --steps 1000000 [--dense] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector import EpisodeBuffer
from minari.storage.datasets_root_dir import get_dataset_path
from minari.utils import RandomPolicy, get_average_reference_score
from tqdm import tqdm

with contextlib.redirect_stderr(io.StringIO()):  # its import prints a notice about Adroit envs
    import gymnasium_robotics
from gymnasium_robotics.envs.maze.maps import GOAL, LARGE_MAZE, MEDIUM_MAZE, U_MAZE
from gymnasium_robotics.envs.maze.maze_v4 import Maze
from matplotlib.patches import Rectangle

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script, too
from scripts.files import file_lock, one_line_errors  # noqa: E402

gym.register_envs(gymnasium_robotics)  # registers the PointMaze_* environments

# Env name, map and the fixed goal cell (row, col) of each maze's evaluation env, as in Minari's
# pointmaze generation script (its EVAL_ENV_MAPS).
MAZES = {
    "umaze": ("PointMaze_UMaze", U_MAZE, (1, 1)),
    "medium": ("PointMaze_Medium", MEDIUM_MAZE, (6, 6)),
    "large": ("PointMaze_Large", LARGE_MAZE, (7, 9)),
}


def local_dataset_id(maze: str, dense: bool = False, n_steps: int = 1_000_000) -> str:
    """Our own id, so local data is never mistaken for the official set:
    local/pointmaze/umaze-v2 (1M steps), umaze-<N>steps-v2 otherwise, umaze-dense-v2 if dense."""
    size = "" if n_steps == 1_000_000 else f"-{n_steps}steps"
    return f"local/pointmaze/{maze}{'-dense' if dense else ''}{size}-v2"


def maze_reward(next_xy: np.ndarray, env, grid: int = 32) -> np.ndarray:
    """The reward the learner sees for next positions [..., 2]: what the maze evaluation env `env`
    pays, in expectation over its goal. At every reset that env puts the goal at its goal cell's
    centre c plus u, uniform in [-r, r]^2 (r = position_noise_range), and pays 1[||xy' - goal|| <=
    0.45] (dense: exp(-||xy' - goal||)); the state does not show u, so the learner's reward is
    E_u of that, here the mean over a grid x grid of u. The one copy of the rule: the driver and
    every benchmark call it. (D4RL's maze2d evaluated with u = 0, where this is its own rule.)"""
    maze = env.unwrapped
    (centre,) = maze.maze.unique_goal_locations  # the eval env has one goal cell
    r = maze.position_noise_range * maze.maze.maze_size_scaling
    u = (np.arange(grid) + 0.5) / grid * 2 * r - r  # midpoints of the grid's cells
    goals = centre + np.stack(np.meshgrid(u, u), -1).reshape(-1, 2)  # [grid^2, 2]
    dense = maze.reward_type == "dense"
    xy = np.asarray(next_xy, np.float64).reshape(-1, 2)
    out = np.zeros(len(xy), np.float32)
    reach = np.inf if dense else 0.45 + r * np.sqrt(2)  # sparse: 0 farther than this from c
    (rows,) = np.nonzero(np.linalg.norm(xy - centre, axis=1) <= reach)
    for chunk in np.array_split(rows, len(rows) // 10_000 + 1):  # [10k, grid^2] at a time
        dist = np.linalg.norm(xy[chunk, None] - goals, axis=-1)
        out[chunk] = (np.exp(-dist) if dense else dist <= 0.45).mean(1)
    return out.reshape(np.shape(next_xy)[:-1])


def make_env(env: gym.Env | str | gym.envs.registration.EnvSpec, **kwargs) -> gym.Env:
    """gym.make, then delete the XML file each maze env leaves in $TMPDIR (the model is loaded)."""
    env = env if isinstance(env, gym.Env) else gym.make(env, **kwargs)
    xml = getattr(env.unwrapped, "tmp_xml_file_path", None)
    if xml and os.path.exists(xml):
        os.remove(xml)
    return env


def save_dataset(
    dataset_id: str,
    episodes: list[EpisodeBuffer],
    env: gym.Env,
    eval_env: gym.Env,
    ref_scores: dict[str, float] | None = None,
    **meta,
) -> minari.MinariDataset:
    """Write episodes as a real Minari dataset; never leave a half-written one behind.

    Reference scores go in last (so their presence marks a complete dataset). Given to
    create_dataset_from_buffers, they would make Minari gym.make the eval env once more (and a
    maze env leaks its XML file)."""
    here = "scripts/pointmaze_dataset.py"
    meta = {"author": here, "author_email": "n/a", "code_permalink": here, **meta}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # missing author e-mail etc.
            dataset = minari.create_dataset_from_buffers(
                dataset_id, episodes, env=env, eval_env=eval_env.spec, **meta
            )
        if ref_scores:
            dataset.storage.update_metadata(ref_scores)
        return dataset
    except BaseException:  # also KeyboardInterrupt
        shutil.rmtree(get_dataset_path(dataset_id), ignore_errors=True)
        raise


# ---- The scripted expert ----
ALGORITHMS = {"dfs": "DFS", "qiteration": "QIteration"}  # solver -> the name Minari's scripts use


class WaypointController:
    """The scripted expert of the official PointMaze data: plan over maze cells, follow with PD.

    Planner (solver): "dfs", the official default, is the depth-first search of Minari's
    maze_solver.py; in mazes with loops its paths are often longer than the shortest. "qiteration"
    is Q-value iteration on the grid of cells (50 iterations, gamma 0.99, reward 1 for entering the
    goal cell): shortest paths. Waypoints are cell centres jittered by up to 0.2 (the last one is
    the exact goal); switch to the next one within 0.1. PD control a = 10 (waypoint - pos) - 1 vel,
    unclipped: the caller adds noise first, then clips, so noise barely matters far from a
    waypoint. It replans when the goal changes. Unlike the official controller it also jitters the
    first waypoint after a replan, aims at the exact goal (not the goal cell's centre) when that is
    the first waypoint, and checks for a waypoint switch only from the step after a replan."""

    MOVES = ((0, 1), (0, -1), (-1, 0), (1, 0))  # Minari's maze_solver order (ties -> first)

    def __init__(self, maze: Maze, rng: np.random.Generator, solver: str = "dfs"):
        if solver not in ALGORITHMS:
            raise ValueError(f"unknown solver {solver!r}; known: {', '.join(ALGORITHMS)}")
        self.maze, self.rng, self.solver = maze, rng, solver
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

    def _dfs_path(self, start: tuple[int, int], goal: tuple[int, int]) -> dict:
        """Next cell for each cell on the official DFS path from start to goal; {} if equal.

        As in Minari's maze_solver.DFS: a stack; a cell is marked visited, and remembers where it
        came from, when it is pushed; neighbours are pushed in MOVES order, so the last one
        (row + 1) is expanded first; the search stops when the goal is popped."""
        grid = self.maze.maze_map
        came_from, stack = {start: start}, [start]
        while stack:
            cell = stack.pop()
            if cell == goal:
                break
            for di, dj in self.MOVES:
                i, j = cell[0] + di, cell[1] + dj
                free = 0 <= i < len(grid) and 0 <= j < len(grid[0]) and grid[i][j] != 1
                if free and (i, j) not in came_from:
                    came_from[(i, j)] = cell
                    stack.append((i, j))
        path, cell = {}, goal
        while cell != start:
            path[came_from[cell]] = cell
            cell = came_from[cell]
        return path

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
            cell = tuple(int(v) for v in self.maze.cell_xy_to_rowcol(pos))
            if self.solver == "dfs":
                self.plan = self._dfs_path(cell, self.goal_cell)
            else:
                self.plan = self._plan(self.goal_cell)
            self._set_waypoint(cell)
        elif self.cell != self.goal_cell and np.linalg.norm(self.waypoint - pos) <= 0.1:
            self._set_waypoint(self.cell)
        return 10.0 * (self.waypoint - pos) - 1.0 * obs["observation"][2:]  # not yet clipped


def draw_maze(ax, maze: Maze) -> None:
    """Walls of a PointMaze as grey squares on a matplotlib axis, in the env's x, y coordinates."""
    s = maze.maze_size_scaling
    for i, row in enumerate(maze.maze_map):
        for j, cell in enumerate(row):
            if cell == 1:
                x, y = maze.cell_rowcol_to_xy(np.array([i, j]))
                ax.add_patch(Rectangle((x - s / 2, y - s / 2), s, s, color="0.6"))
    ax.set_xlim(-maze.x_map_center, maze.x_map_center)
    ax.set_ylim(-maze.y_map_center, maze.y_map_center)
    ax.set_aspect("equal")


def draw_trajectories(maze: Maze, panels: dict[str, np.ndarray]):
    """A figure with one panel per title: the walls, the goal (star) and each trajectory [H, >= 2]
    of the panel's array [N, H, >= 2] as a line from its start (dot)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.5), squeeze=False)
    for ax, (title, trajectories) in zip(axes[0], panels.items()):
        draw_maze(ax, maze)
        ax.plot(*maze.unique_goal_locations[0], "*", color="gold", ms=14, mec="k")
        for k, t in enumerate(trajectories):
            ax.plot(t[:, 0], t[:, 1], "-", color=f"C{k % 10}", lw=1.2)
            ax.plot(t[0, 0], t[0, 1], "o", color=f"C{k % 10}", ms=4)
        ax.set_title(title)
    fig.tight_layout()
    return fig


# ---- Generation ----
def draw_rollouts(dataset: minari.MinariDataset, data: dict, trainer, n: int = 12):
    """n real windows of the data (its arrays) beside DyDiff rollouts (dydiff.py) of the trainer's
    policy from the same start states, over the walls of the dataset's evaluation maze."""
    import torch

    import dydiff

    cfg, models = trainer.cfg, (trainer.models["dynamics"], trainer.models.get("diffusion"))
    starts = dydiff.window_starts(data["episode_ids"], cfg.horizon)
    starts = np.random.default_rng(0).choice(starts, min(n, len(starts)), replace=False)
    real = data["observations"][starts[:, None] + np.arange(cfg.horizon)]
    s0 = torch.as_tensor(real[:, 0], device=cfg.device)
    synth, _ = dydiff.dydiff_rollout(s0, trainer.agent.act, *models, cfg.horizon, cfg.iterations)
    panels = {"real data windows": real, f"DyDiff rollouts (M={cfg.iterations})": synth.cpu()}
    env = make_env(dataset.recover_environment(eval_env=True))
    figure = draw_trajectories(env.unwrapped.maze, panels)
    env.close()
    return figure


def _make_maze_envs(maze: str, dense: bool, n_steps: int) -> tuple[gym.Env, gym.Env]:
    """Collection env (random goals, never resets) and evaluation env (one fixed goal cell).

    Both are continuing tasks: reaching the goal never terminates. The eval env keeps its goal
    (reset_target=False) and the registered time limit, 300 / 600 / 800 steps (Minari's spec)."""
    env_name, grid, (gi, gj) = MAZES[maze]
    env_id = f"{env_name}{'Dense' if dense else ''}-v3"
    env = make_env(env_id, continuing_task=True, reset_target=True, max_episode_steps=n_steps)
    eval_map = [[GOAL if (i, j) == (gi, gj) else c for j, c in enumerate(row)]
                for i, row in enumerate(grid)]  # fmt: skip
    eval_env = make_env(env_id, maze_map=eval_map, continuing_task=True, reset_target=False)
    return env, eval_env


def generate(
    maze: str,
    dataset_id: str,
    n_steps: int = 1_000_000,
    seed: int = 0,
    dense: bool = False,
    log: Callable[[str], Any] = print,
    ref_episodes: int = 100,
    solver: str = "dfs",
) -> minari.MinariDataset:
    """Regenerate a D4RL/pointmaze dataset: one long noisy expert stream cut at each success.

    Recipe of the official sets (Minari's create_pointmaze_dataset.py): continuing task with a
    new random goal on every success, actions = expert + N(0, 0.5^2) clipped to [-1, 1], and an
    episode ends (truncation) when its goal is reached. As there, the next episode starts from
    the same observation, which still shows the old desired_goal. No infos are stored.
    solver: the controller's planner, "dfs" (as the official data) or "qiteration"."""
    rng = np.random.default_rng(seed)
    env, eval_env = _make_maze_envs(maze, dense, n_steps)
    controller = WaypointController(env.unwrapped.maze, rng, solver)
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
    expert = WaypointController(eval_env.unwrapped.maze, np.random.default_rng(seed), solver)
    ref_max = get_average_reference_score(
        eval_env, lambda obs: np.clip(expert(obs), -1.0, 1.0).astype(np.float32), ref_episodes
    )
    log(f"reference returns: random {ref_min:.1f}, expert {ref_max:.1f}")
    return save_dataset(
        dataset_id, episodes, env, eval_env,
        algorithm_name=f"{ALGORITHMS[solver]} waypoints + PD (local regeneration)",
        ref_scores={"ref_min_score": ref_min, "ref_max_score": ref_max,
                    "num_episodes_average_score": ref_episodes},
        description=f"Local regeneration of D4RL/pointmaze/{maze}{'-dense' * dense} (seed {seed}).",
    )  # fmt: skip


def check_local(
    dataset_id: str, n_steps: int | None = None
) -> tuple[minari.MinariDataset | None, str]:
    """(the local dataset, "") if it is complete, else (None, what is wrong with it). Complete:
    readable to its last episode, n_steps steps (if given), reference scores (written last)."""
    try:
        dataset = minari.load_dataset(dataset_id)
        list(dataset.storage.get_episodes([dataset.total_episodes - 1]))  # a truncated file fails
    except Exception as e:  # noqa: BLE001 (whatever the failure, the cure is to make it again)
        return None, f"unreadable ({type(e).__name__}: {e})"
    if n_steps is not None and dataset.total_steps != n_steps:
        return None, f"of the wrong size ({dataset.total_steps:,} steps)"
    if "ref_max_score" not in dataset.storage.metadata:
        return None, "incomplete (no reference scores: its generation was killed)"
    return dataset, ""


def load_or_generate(
    maze: str,
    n_steps: int = 1_000_000,
    dense: bool = False,
    log: Callable[[str], Any] = print,
    regenerate: bool = False,
    **generate_kwargs,
) -> minari.MinariDataset:
    """The local dataset local_dataset_id(maze, dense, n_steps), generated first if needed.

    An existing one is used if it is readable, has n_steps steps and its reference scores (they
    are written last: without them its generation was killed half-way); otherwise it is deleted
    and generated again. regenerate=True always regenerates (e.g. after a failed read). A lock
    file next to the dataset folder makes a second process wait and then use the same data.
    generate_kwargs (seed, solver, ...) go to generate()."""
    dataset_id = local_dataset_id(maze, dense, n_steps)
    path = get_dataset_path(dataset_id)
    with file_lock(path.with_name(path.name + ".lock")):
        if path.exists():
            problem = "to be regenerated"
            if not regenerate:
                dataset, problem = check_local(dataset_id, n_steps)
                if dataset is not None:
                    log(f"using locally generated {dataset_id}")
                    return dataset
            log(f"deleting {dataset_id}: it is {problem}")
            shutil.rmtree(path)
        log(f"generating {dataset_id} ({n_steps:,} steps) with the official D4RL/pointmaze recipe")
        return generate(maze, dataset_id, n_steps, dense=dense, log=log, **generate_kwargs)


# ---- Command line ----
def _report(dataset: minari.MinariDataset, path: Path, args: argparse.Namespace) -> None:
    """What the dataset is, where it is, and how to train on it."""
    meta = dataset.storage.metadata
    reached = [  # the last position of each episode is within the success radius of its goal
        np.linalg.norm(ep.observations["achieved_goal"][-1] - ep.observations["desired_goal"][-1])
        <= 0.45
        for ep in dataset.iterate_episodes()
    ]
    env_name = f"maze2d-{args.maze}{'-dense' if args.dense else ''}"
    size = "" if args.steps == 1_000_000 else f" --dataset-size {args.steps}"
    print(f"{dataset.spec.dataset_id} at {path}")
    print(f"  {meta['algorithm_name']}. {meta.get('description', '')}")
    print(
        f"  {dataset.total_episodes:,} episodes, {dataset.total_steps:,} steps, "
        f"{np.mean(reached):.2%} reach their goal"
    )
    print(
        f"  reference returns: random {meta['ref_min_score']:.2f}, "
        f"expert {meta['ref_max_score']:.2f}"
    )
    print(f"Train on it: python train_offline.py --env {env_name}{size} (it is used automatically)")


def main(argv: list[str] | None = None) -> int:
    parser = one_line_errors(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--maze", required=True, choices=MAZES, help="which maze")
    parser.add_argument("--steps", type=int, default=1_000_000, help="environment steps")
    parser.add_argument("--dense", action="store_true", help="dense reward exp(-distance)")
    parser.add_argument("--seed", type=int, default=0, help="seed of env, noise and jitter")
    parser.add_argument("--solver", choices=tuple(ALGORITHMS), default="dfs", help="planner")
    args = parser.parse_args(argv)
    if args.steps <= 0:
        parser.error(f"--steps must be positive, not {args.steps}")
    dataset_id = local_dataset_id(args.maze, args.dense, args.steps)
    try:  # fail early, in one line, if the datasets folder cannot be written
        path = get_dataset_path(dataset_id)
        with file_lock(path.with_name(path.name + ".lock")):
            pass
    except OSError as e:
        root = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
        parser.error(f"cannot write to the datasets folder {root} ({e}); set MINARI_DATASETS_PATH")
    dataset = None
    try:
        dataset = load_or_generate(
            args.maze, args.steps, args.dense, seed=args.seed, solver=args.solver
        )
        meta = dataset.storage.metadata
        made = f"(seed {args.seed})" in meta.get("description", "") and meta.get(
            "algorithm_name", ""
        ).startswith(ALGORITHMS[args.solver])
        if not made:  # an existing set made with another seed or planner: never replaced silently
            parser.error(f"{dataset_id} exists, made otherwise ({meta.get('algorithm_name')}, "
                         f"{meta.get('description')}); `minari delete {dataset_id}` to remake it")  # fmt: skip
        _report(dataset, path, args)
    except KeyboardInterrupt:
        done = (
            f"{dataset_id} is complete"
            if dataset is not None
            else f"no dataset {dataset_id} was written"
        )
        print(f"interrupted: {done}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
