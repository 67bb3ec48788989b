"""Tests of benchmarks/dm_fidelity.py (and of the study that chose the DM from its records,
benchmarks/studies/dm_choice.py) on a tiny maze dataset (2,000 steps): a perfect model has no
error, the one-step consistency sees a shifted tuple, held-out episodes stay out of training, bad
input is one line. Run: python -m pytest -q tests/test_dm_fidelity.py"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import dydiff  # noqa: E402
import train_offline as T  # noqa: E402
from benchmarks import dm_fidelity as F  # noqa: E402
from benchmarks import rollout_error as RE  # noqa: E402
from benchmarks.studies import dm_choice as DC  # noqa: E402
from scripts import pointmaze_dataset as P  # noqa: E402
from scripts.files import data_hash  # noqa: E402

TINY = ("--n-members 3 --n-elites 2 --dynamics-hidden 32 --reward-hidden 32 --mlp-blocks 1 "
        "--model-max-epochs 1 --model-epoch-steps 5 --dm-steps 10").split()


@pytest.fixture(scope="module")
def maze(tmp_path_factory):
    """(datasets folder, arrays, eval env) of a 2,000-step U-maze set, without slow references."""
    root = tmp_path_factory.mktemp("datasets")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        dataset = P.load_or_generate("umaze", 2_000, ref_episodes=2, log=lambda m: None)
        data = T.dataset_to_arrays(dataset, T.resolve_task("maze2d-umaze"))
        env = T.make_eval_env(dataset)
        yield root, data, env
        env.close()


class SimDynamics:
    """A perfect single-step model: the simulator itself."""

    def __init__(self, env):
        self.env = env

    def predict(self, states, actions):
        s, a = states.numpy(), actions.numpy()[:, None]
        return torch.as_tensor(RE.simulate(self.env, None, s, 2, "cpu", 0, actions=a)[:, 1])


class SimDiffusion(SimDynamics):
    """A perfect DM: the simulator under the inpainted actions; limits that clip nothing."""

    norm = dydiff.Normalizer(6)
    norm.scale.fill_(1e6)

    def sample_states(self, s0, actions):
        sim = RE.simulate(self.env, None, s0.numpy(), actions.shape[1], "cpu", 0, actions.numpy())
        return torch.as_tensor(sim)


class ZeroReward:
    def predict(self, states, actions):
        return torch.zeros(states.shape[:-1])


def test_perfect_models_have_no_error_in_any_condition(maze):
    """With the simulator as dynamics model and DM, every condition and model, (a)-(c), is ~0
    (the data's float32 states against float64 physics: rounding only)."""
    _, data, env = maze
    train, held = F.split_episodes(data, 0.2)
    models = {"dynamics": SimDynamics(env), "diffusion": SimDiffusion(env), "reward": ZeroReward()}
    goal = env.unwrapped.maze.unique_goal_locations[0]
    policies = {"maze expert": RE.expert_policy(env.unwrapped.maze, goal, "cpu")}
    cfg = dydiff.Config(horizon=8, rollout_batch_size=12)
    results, synth = F.fidelity(models, env, train, held, policies, cfg, n=6, seed=0)
    assert len(results) == 5 and all(k[0] in "abc" for k in results), f"conditions: {list(results)}"
    assert set(results["b: maze expert"]) == {F.DM, F.OPEN, *F.CLOSED.values()}
    assert set(synth["seconds"]) == {"M=0", "M=1", "M=2"}
    for cond, methods in results.items():
        for model, err in methods.items():
            worst = max(e for e in err["mean"] + err["median"] if e is not None)
            assert len(err["mean"]) == 8 and worst < 1e-8, f"perfect model: {cond}, {model}: {err}"


def test_biased_models_are_seen():
    """The error is the mean squared difference in std units: a shift of 0.1 std in one of 4
    dimensions is 0.0025 at every step the truth is defined; the undefined step counts nothing.
    The median ignores one start state far off; the mean does not."""
    truth = np.zeros((3, 4, 4), np.float32)
    truth[0, 3] = np.nan  # a hopper that fell: start state 0 does not count at h = 3
    std = np.array([2.0, 1.0, 1.0, 1.0])
    pred = np.zeros_like(truth)
    pred[:, 1:, 0] = 0.2
    err = F.per_step(pred, truth, std)
    assert np.allclose(err["mean"], [0, 0.0025, 0.0025, 0.0025]), err
    pred[2, 2, 1] = 2.0  # start state 2 off by 2 std in another dimension at h = 2: +1 / 3
    err = F.per_step(pred, truth, std)
    assert np.isclose(err["mean"][2], 0.0025 + 1 / 3) and np.isclose(err["median"][2], 0.0025)
    pred[1, 3, 0] = np.nan  # a NaN prediction is never hidden
    assert np.isnan(F.per_step(pred, truth, std)["mean"][3])


def test_one_step_consistency_of_exact_tuples_is_zero_and_of_shifted_ones_not(maze):
    """Two trajectories of 7 data tuples, stored as synthesise stores them: steps 1..7 each;
    the simulator from s_i with a_i gives the stored s_{i+1}; shifted by 0.1 std, 0.01."""
    _, data, env = maze
    starts = dydiff.window_starts(data["episode_ids"], 8)[[0, -1]]
    rows = (starts[:, None] + np.arange(7)).ravel()
    names = dict(states="observations", actions="actions", next_states="next_observations")
    tuples = {k: torch.as_tensor(data[v][rows]) for k, v in names.items()}
    steps = F.tuple_steps(tuples["states"].numpy(), tuples["next_states"].numpy())
    assert steps.tolist() == [*range(1, 8), *range(1, 8)], f"steps of two trajectories: {steps}"
    std = data["observations"].std(0)
    exact = F.tuple_errors(env, tuples, steps, std, 8, 100, 0)["mean"]
    assert len(exact) == 8 and max(exact[1:]) < 1e-8, f"simulator tuples are consistent: {exact}"
    tuples["next_states"] = tuples["next_states"] + 0.1 * torch.as_tensor(std)
    shifted = F.tuple_errors(env, tuples, steps, std, 8, 100, 0)["mean"]
    assert np.allclose(shifted[1:], 0.01, rtol=1e-3), f"0.1 std off in every dimension: {shifted}"


def test_held_out_episodes_never_reach_the_models(maze, monkeypatch, tmp_path):
    """pretrain gets the training episodes only, under a data key of their own (not a run's)."""
    _, data, _ = maze
    seen = {}
    spy = lambda d, cfg, args, key, times: seen.update(d=d, key=key) or ({}, [], {})  # noqa: E731
    monkeypatch.setattr(F.drv, "pretrain", spy)
    args = T.parse_args(["--out", str(tmp_path), "--cache", str(tmp_path)])
    _, _, train, held = F.pretrain_on_training_episodes(data, dydiff.Config(), args, 0.2, {})
    n_episodes = int(data["episode_ids"].max()) + 1
    trained, held_ids = set(seen["d"]["episode_ids"]), set(held["episode_ids"])
    assert not trained & held_ids, f"held-out episodes {sorted(trained & held_ids)} were trained on"
    assert len(held_ids) == round(0.2 * n_episodes) and max(held_ids) == n_episodes - 1
    assert len(seen["d"]["rewards"]) + len(held["rewards"]) == len(data["rewards"])
    assert seen["key"] == data_hash(train) != data_hash(data)
    one, _ = F.split_episodes(data, 1e-9)  # at least one episode held out, never all
    assert len(set(one["episode_ids"])) == n_episodes - 1
    assert len(set(F.split_episodes(data, 0.5)[1]["episode_ids"])) == round(0.5 * n_episodes)


BAD = [["--heldout", "0"], ["--heldout", "x"], ["--n-starts", "1"], ["--horizon", "1"],
       ["--no-such-flag"], ["--env", "hopper-medium"], ["--policy-run", "missing_run"]]


@pytest.mark.parametrize("argv", BAD)
def test_bad_input_is_one_line_and_exit_2(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        F.main([*argv, "--out", str(tmp_path), "--cache", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err


def test_smoke_run_from_the_command_line(maze, tmp_path):
    """Tiny models trained through the driver, a fresh actor as --policy-run: every condition,
    finite errors, one JSON without absolute paths and one picture."""
    root, _, _ = maze
    agent = dydiff.TD3BC(4, 2, dydiff.Normalizer(4), dydiff.Config())
    (tmp_path / "run").mkdir()
    settings = vars(T.parse_args(["--algo", "td3bc", "--smoke"]))
    checkpoint = {"args": settings, "trainer": {"agent": agent.state_dict(), "updates": 0},
                  "rng": None, "rows": [], "times": {}, "models": {}}  # fmt: skip
    torch.save(checkpoint, tmp_path / "run" / "checkpoint.pt")
    out = tmp_path / "out"
    argv = ["--smoke", "--dataset-size", "2000", "--heldout", "0.2", "--out", str(out),
            "--cache", str(tmp_path / "cache"), "--threads", "1",
            "--policy-run", str(tmp_path / "run")]  # fmt: skip
    env = dict(os.environ, MINARI_DATASETS_PATH=str(root))
    cmd = [sys.executable, "benchmarks/dm_fidelity.py", *argv, *TINY]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (path,) = out.glob("*.json")
    record = json.loads(path.read_text())
    assert {k.split(":")[0] for k in record["per_step"]} == {"a", "b", "c"}
    assert "b: trained actor" in record["per_step"] and record["policy_run"]["algo"] == "td3bc"
    for cond, methods in record["per_step"].items():
        for model, err in methods.items():
            finite = all(e is None or np.isfinite(e) for e in err["mean"] + err["median"])
            assert len(err["mean"]) == 8 and finite, f"{cond}, {model}: {err}"
    assert set(record["model_hashes"]) == {"dynamics", "reward", "diffusion"}
    assert "diffusion_training" in record["seconds"] and record["held_out"]["episodes"] >= 1
    texts = json.dumps(record)
    assert str(tmp_path) not in texts and str(ROOT) not in texts, "no absolute path in the JSON"
    assert path.with_suffix(".png").stat().st_size > 10_000
    assert "DyDiff M=2" in result.stdout
    assert "rule" not in record, "the choice rule is a study's: benchmarks/studies/dm_choice.py"
    assert set(DC.rule(record["per_step"])) == {"score_mean", "below_from_mean", "score_median",
                                                "below_from_median"}  # fmt: skip
    choice = [sys.executable, "benchmarks/studies/dm_choice.py", str(path.with_suffix(".png"))]
    bad = subprocess.run(choice, cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1


def test_choice_rule_scores_by_hand():
    """The choice rule (benchmarks/studies/dm_choice.py): mean log10 of M = 2's errors at h = 8 and
    H - 1 under the trained actor (b) and of its stored tuples (c); the first h from which M = 2
    stays below M = 0."""
    H = 12
    m0 = [0.0] + [1e-2] * (H - 1)
    m2 = [0.0] + [2e-2] * 4 + [1e-3] * (H - 5)  # above M = 0 up to h = 4, below from h = 5 on
    tuples = [0.0] + [1e-4] * (H - 1)
    res = {"b: trained actor": {F.CLOSED[0]: {"mean": m0, "median": m0},
                                F.CLOSED[2]: {"mean": m2, "median": m2}},
           "c: stored tuples (trained actor)": {"M=2": {"mean": tuples, "median": tuples}}}  # fmt: skip
    assert DC.rule(res) == {"score_mean": -3.5, "below_from_mean": 5,
                            "score_median": -3.5, "below_from_median": 5}  # (-3 - 3 - 4 - 4) / 4
    m2[-1] = 1.0  # above again at the last step: never below by the end
    assert DC.rule(res)["below_from_mean"] is None


def test_smoke_run_on_hopper(tmp_path):
    """Hopper: a tiny local medium-replay set (SAC stops at its first evaluation, 299 steps), its
    SAC policy as the controller; falls end a start state's truth, never the errors."""
    from scripts import mujoco_dataset as MJ

    root = tmp_path / "datasets"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        MJ.load_or_generate("medium-replay", target=-1e9, max_steps=1_000, eval_every=300,
                            learning_starts=200, log=lambda m: None)  # fmt: skip
    argv = ["--env", "hopper-medium-replay", "--smoke", "--heldout", "0.2", "--threads", "1",
            "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]  # fmt: skip
    env = dict(os.environ, MINARI_DATASETS_PATH=str(root))
    cmd = [sys.executable, "benchmarks/dm_fidelity.py", *argv, *TINY]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (path,) = (tmp_path / "out").glob("*.json")
    record = json.loads(path.read_text())
    assert record["policies"] == ["SAC policy's mean"]
    for cond, methods in record["per_step"].items():
        for model, err in methods.items():
            finite = all(e is None or np.isfinite(e) for e in err["mean"] + err["median"])
            assert len(err["mean"]) == 8 and finite, (cond, model)
