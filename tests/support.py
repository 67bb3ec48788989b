"""Helpers shared by the tests in tests/ (the driver, the data scripts, the benchmarks)."""

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from minari.data_collector import EpisodeBuffer
from minari.storage.datasets_root_dir import get_dataset_path

import train_offline as T
from scripts import pointmaze_dataset as P

HERE = Path(__file__).resolve().parent.parent  # the repository
N_STEPS = 3000  # the small generated umaze set
HOPPER_SMALL = dict(target=-1e9, max_steps=1_000, eval_every=300, learning_starts=200,
                    medium_steps=400)  # fmt: skip


def load_script(name: str, path: str):
    """A script of the repository (benchmarks/*.py) as a module."""
    spec = importlib.util.spec_from_file_location(name, HERE / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def collect_random_dataset(env_id: str, dataset_id: str, n_steps: int, seed: int):
    """A tiny local dataset of uniform random actions (for tests of the MuJoCo path)."""
    env = P.make_env(env_id)
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
    return P.save_dataset(dataset_id, episodes, env, env, algorithm_name="random")


def data_path(dataset_id: str) -> Path:
    return get_dataset_path(dataset_id) / "data"


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """scripts/pointmaze_dataset.py in a subprocess."""
    command = [sys.executable, str(HERE / "scripts" / "pointmaze_dataset.py"), *args]
    env = {**os.environ, **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, cwd=HERE, env=env, check=False)


def run_main(workdir, *argv, cache="cache"):
    """train_offline.main in this process; returns the exit code (0 when it returns)."""
    try:
        T.main([*argv, "--out", str(workdir / "runs"), "--cache", str(workdir / cache)])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0


def run_dirs(workdir, pattern):
    return sorted((workdir / "runs").glob(f"*__{pattern}__*"), key=lambda p: p.stat().st_mtime)


def rl_rows(run_dir):
    """The RL rows of metrics.csv without the wall-clock column."""
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k != "time"} for r in csv.DictReader(f)
                if r["phase"] == "rl"]  # fmt: skip


def subprocess_env(workdir, **extra):
    env = dict(
        MINARI_DATASETS_PATH=str(workdir / "datasets"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"
    )
    return os.environ | env | extra
