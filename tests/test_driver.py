"""Tests of train_offline.py's parts: arrays and relabelling, termination rules, evaluation,
tasks and their defaults, the model cache's key, atomic writes; and of the README's departures
list against the code. (MINARI_DATASETS_PATH is set per test: minari reads it on each call;
HF_HUB_OFFLINE makes a missing download fail at once.)"""

import dataclasses
import pickle
import re

import minari
import numpy as np
import pytest
import torch

import dydiff as D
import train_offline as T
from scripts import pointmaze_dataset as P
from support import HERE, N_STEPS, collect_random_dataset

def test_maze_arrays_are_relabelled_against_the_eval_goal(umaze):
    arrays = T.dataset_to_arrays(umaze, T.resolve_task("maze2d-umaze"))
    n = N_STEPS
    assert arrays["observations"].shape == arrays["next_observations"].shape == (n, 4)
    assert arrays["actions"].shape == (n, 2) and arrays["episode_ids"].dtype == np.int64
    assert all(v.dtype == np.float32 for k, v in arrays.items() if k != "episode_ids")
    same = arrays["episode_ids"][1:] == arrays["episode_ids"][:-1]
    assert np.array_equal(arrays["next_observations"][:-1][same], arrays["observations"][1:][same])
    assert np.all(np.diff(arrays["episode_ids"]) >= 0) and not arrays["terminals"].any()
    env = T.make_eval_env(umaze)
    assert np.array_equal(arrays["rewards"], P.maze_reward(arrays["next_observations"][:, :2], env))
    goal = np.array([-1.0, 1.0])  # centre of cell (1, 1): the 5x5 umaze is centred at (0, 0)
    dist = np.linalg.norm(arrays["next_observations"][:, :2] - goal, axis=1)
    assert (arrays["rewards"][dist > 0.81] == 0).all() and (arrays["rewards"][dist < 0.1] == 1).all()
    assert 0 < arrays["rewards"].mean() < 0.5


@pytest.mark.parametrize("dense", [False, True])
def test_maze_reward_is_what_evaluation_pays_averaged_over_its_goal_noise(umaze, dense):
    """The relabelled reward at a position is the eval env's own reward there, averaged over the
    goal noise of its resets (2,000 resets: Monte Carlo error about 0.01)."""
    env = T.make_eval_env(umaze)
    env.unwrapped.reward_type = "dense" if dense else "sparse"
    (centre,) = env.unwrapped.maze.unique_goal_locations
    xy = centre + np.array([[0, 0], [0.3, 0], [0.4, 0.1], [0.45, 0], [0.6, 0], [0.9, 0]])
    paid = np.zeros(len(xy))
    for k in range(2_000):
        env.reset(seed=k)  # a new goal: the centre plus uniform noise of +-0.25 per axis
        paid += env.unwrapped.compute_reward(xy, env.unwrapped.goal, {}) / 2_000
    assert np.abs(P.maze_reward(xy, env) - paid).max() < 0.03
    if not dense:  # far from a fixed-goal rule: 0.75 at 0.3 from the centre, not 1
        assert paid[0] > 0.999 and 0.7 < paid[1] < 0.8 and paid[-1] == 0


def test_mujoco_random_dataset_to_arrays(datasets_path):
    dataset = collect_random_dataset("Hopper-v5", "local/hopper/random-test-v0", 300, seed=0)
    task = T.resolve_task("local/hopper/random-test-v0")
    assert task.maze is None and T.termination_fn(task) is not None
    arrays = T.dataset_to_arrays(minari.load_dataset("local/hopper/random-test-v0"), task)
    assert arrays["observations"].shape == arrays["next_observations"].shape == (300, 11)
    assert arrays["actions"].shape == (300, 3) and arrays["rewards"].shape == (300,)
    assert arrays["terminals"].sum() == dataset.total_episodes - 1  # random hoppers fall


def test_termination_functions():
    hopper = T.termination_fn(T.resolve_task("hopper-medium"))
    healthy = torch.zeros(4, 11)
    healthy[:, 0] = 1.25
    fallen, tilted, exploded = healthy.clone(), healthy.clone(), healthy.clone()
    fallen[0, 0] = 0.5
    tilted[0, 1] = 0.3
    exploded[0, 5] = 150.0
    assert not hopper(healthy).any()
    for s in (fallen, tilted, exploded):
        assert hopper(s).tolist() == [True, False, False, False]
    walker = T.termination_fn(T.resolve_task("walker2d-medium"))
    states = torch.zeros(4, 17)
    states[:, 0] = torch.tensor([1.2, 0.5, 2.5, 1.2])
    states[3, 1] = -1.5
    assert walker(states).tolist() == [False, True, True, True]
    assert T.termination_fn(T.resolve_task("halfcheetah-medium")) is None
    assert T.termination_fn(T.resolve_task("maze2d-umaze")) is None


def test_evaluate_scores_and_seeds(umaze, datasets_path):
    meta = umaze.storage.metadata
    lo, hi = meta["ref_min_score"], meta["ref_max_score"]
    rng = np.random.default_rng(0)
    random_policy = lambda s: rng.uniform(-1, 1, (len(s), 2))  # noqa: E731
    result = T.evaluate(random_policy, umaze, 3, seed=0)
    assert np.isclose(result["score"], 100 * (result["return"] - lo) / (hi - lo))
    to_goal = lambda s: np.clip(5 * (np.array([[-1.0, 1.0]]) - s[:, :2]) - s[:, 2:], -1, 1)  # noqa: E731
    first = T.evaluate(to_goal, umaze, 4, seed=5)
    assert first == T.evaluate(to_goal, umaze, 4, seed=5)  # episode k is reset with seed + k
    assert first != T.evaluate(to_goal, umaze, 4, seed=6) and first["return"] > 0
    hopper = collect_random_dataset("Hopper-v5", "local/hopper/random-test-v0", 50, seed=0)
    result = T.evaluate(lambda s: np.zeros((len(s), 3)), hopper, 2, seed=0)
    assert np.isnan(result["score"]) and np.isfinite(result["return"])  # no reference scores


def test_resolve_task():
    assert T.resolve_task("maze2d-medium").dataset_id == "D4RL/pointmaze/medium-v2"
    assert T.resolve_task("maze2d-large-dense").dense
    assert T.resolve_task("D4RL/pointmaze/large-dense-v2").maze == "large"
    assert T.resolve_task("mujoco/hopper/medium-v0").maze is None
    with pytest.raises(T.UserError, match="unknown env 'nope'; known: .*maze2d-umaze"):
        T.resolve_task("nope")


def test_task_defaults_then_flags(tmp_path):
    """Per task: umaze 50,000 updates, the larger mazes 125,000, a DM of 5,000 steps; MuJoCo 100,000
    and 20,000 (Hopper's DM was the weak link at 5,000); a flag wins over the task, --smoke over both
    but flags."""
    def cfg(*flags):
        args = T.parse_args([*flags, "--out", str(tmp_path), "--cache", str(tmp_path)])
        return T.make_config(args, T.resolve_task(args.env))

    assert (cfg().updates, cfg().dm_steps) == (50_000, 5_000)
    medium = cfg("--env", "maze2d-medium")
    assert (medium.updates, medium.dm_steps) == (125_000, 5_000)
    hopper = cfg("--env", "hopper-medium-replay")
    assert (hopper.updates, hopper.dm_steps) == (100_000, 20_000)
    assert cfg("--env", "hopper-medium-replay", "--dm-steps", "7").dm_steps == 7
    assert cfg("--env", "hopper-medium-replay", "--smoke").dm_steps == T.SMOKE["dm_steps"]


def test_missing_mujoco_dataset_is_a_user_error(datasets_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without network, but at once
    with pytest.raises(
        T.UserError, match="dataset mujoco/hopper/medium-v0 is not local; `minari download` it"
    ):
        T.load_dataset(T.resolve_task("hopper-medium"), None, log=lambda m: None)


def test_fingerprint_follows_the_settings_the_code_uses():
    cfg = D.Config()
    key = T.fingerprint([D.train_diffusion], cfg, "data")
    rl_only = dataclasses.replace(cfg, lr=1e-3, alpha=1.0, updates=7)
    assert key == T.fingerprint([D.train_diffusion], rl_only, "data")
    assert key != T.fingerprint([D.train_diffusion], dataclasses.replace(cfg, dm_steps=10), "data")
    assert key != T.fingerprint([D.train_diffusion], cfg, "other data")
    dyn = T.fingerprint([D.train_dynamics], cfg, "data")
    assert dyn == T.fingerprint([D.train_dynamics], dataclasses.replace(cfg, dm_steps=10), "data")
    assert dyn != T.fingerprint([D.train_dynamics], dataclasses.replace(cfg, n_elites=3), "data")


class Explodes:
    def __reduce__(self):
        raise RuntimeError("disk full")


def test_interrupted_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    T.atomic_write(path, lambda tmp: torch.save({"updates": 1}, tmp))
    with pytest.raises((RuntimeError, pickle.PicklingError)):
        T.atomic_write(path, lambda tmp: torch.save({"updates": 2, "x": Explodes()}, tmp))
    assert torch.load(path, weights_only=False)["updates"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left behind


def test_model_code_reaches_only_what_the_model_uses():
    """The diffusion model's key covers the denoisers and DDPM, not TD3+BC or the rollout; a
    string like "mlp" in the code does not pull in the function mlp()."""
    from scripts.files import code_of

    diffusion, dynamics = code_of([D.train_diffusion]), code_of([D.train_dynamics])
    assert {"MLPDenoiser", "TemporalUnet", "GaussianDiffusion", "window_starts"} <= set(diffusion)
    assert not {"TD3BC", "mlp", "dydiff_rollout", "EnsembleDynamics"} & set(diffusion)
    assert {"EnsembleDynamics", "fit_with_holdout", "EnsembleMLP"} <= set(dynamics)
    assert not {"MLPDenoiser", "TD3BC"} & set(dynamics)


def test_each_departure_in_the_readme_is_marked_in_the_code():
    """The README numbers the departures from the authors' code; a "departure N" comment marks
    each in the code, and no comment calls one of ours "the authors'"."""
    readme = (HERE / "README.md").read_text()
    section = readme.split("### Departures from the authors' code")[1].split("\n#")[0]
    numbers = [int(n) for n in re.findall(r"^(\d+)\. \*\*", section, re.M)]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 8
    code = (HERE / "dydiff.py").read_text() + (HERE / "train_offline.py").read_text()
    assert [n for n in numbers if not re.search(rf"departure {n}\b", code, re.I)] == []
    assert "the authors' warm-up" not in code.replace("departure 8: the authors' warm-up", "")


def test_a_run_says_which_config_default_its_task_overrides_and_help_shows_the_tasks_values(tmp_path, capsys):
    """Config says updates=100,000; maze2d-umaze runs 50,000: the run says so in one line, a flag
    silences it, and `--env X --help` shows X's value beside Config's."""
    T.make_config(T.parse_args(["--env", "maze2d-umaze", "--out", str(tmp_path / "runs"),
                                "--cache", str(tmp_path / "cache")]), T.resolve_task("maze2d-umaze"))  # fmt: skip
    out = capsys.readouterr().out
    line = [x for x in out.splitlines() if "sets" in x]
    assert len(line) == 1 and "updates=50,000 (Config: 100,000)" in line[0], out
    args = T.parse_args(["--env", "maze2d-umaze", "--updates", "7", "--out", str(tmp_path / "runs"),
                         "--cache", str(tmp_path / "cache")])  # fmt: skip
    assert T.make_config(args, T.resolve_task("maze2d-umaze")).updates == 7
    assert "updates=" not in capsys.readouterr().out, "a flag overrides the task: nothing to say"
    for env, steps in (("hopper-medium-replay", "20000"), ("maze2d-umaze", "5000")):
        with pytest.raises(SystemExit):
            T.parse_args(["--env", env, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert f"DM training steps [{steps} for {env}; Config: 5000]" in text, text
