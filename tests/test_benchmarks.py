"""Tests of the benchmarks: rollout error and policy injection (Fig. 3), the score aggregation,
speed, the synthetic-data study, the layout (no reusable benchmark imports a past study; each study
runs from a clone), and the past studies in benchmarks/studies/ (critic, goal, DM cost)."""

import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import minari
import numpy as np
import pytest
import torch
import torch.nn as nn

import dydiff as D
import train_offline as T
from scripts import mujoco_dataset as MJ
from scripts import pointmaze_dataset as P
from support import HERE, load_script, run_dirs, run_main

RE = load_script("rollout_error", "benchmarks/rollout_error.py")
CS = load_script("critic", "benchmarks/studies/critic_study.py")
SP = load_script("speed", "benchmarks/speed.py")
GS = load_script("goal_study", "benchmarks/studies/goal_study.py")
DC = load_script("dm_cost", "benchmarks/studies/dm_cost.py")
SC = load_script("scores", "benchmarks/scores.py")
SS = load_script("synthetic_study", "benchmarks/synthetic_study.py")
ST = load_script("synthetic_table", "benchmarks/studies/synthetic_table.py")

def test_in_walls_marks_wall_cells_only():
    """On the eval env's map, whose goal cell is "g" (not 0): every point of a wall cell, no point
    of a free cell."""
    name, grid, goal = P.MAZES["umaze"]
    eval_map = [[P.GOAL if (i, j) == goal else c for j, c in enumerate(row)]
                for i, row in enumerate(grid)]  # fmt: skip
    env = P.make_env(f"{name}-v3", maze_map=eval_map)
    maze = env.unwrapped.maze
    cells = [(i, j) for i in range(len(eval_map)) for j in range(len(eval_map[0]))]
    for offset in ([0, 0], [0.45, 0.45], [-0.45, 0.3]):  # centres and points near the corners
        xy = np.array([maze.cell_rowcol_to_xy(np.array(c)) + offset for c in cells])
        states = np.concatenate([xy, np.zeros_like(xy)], 1)  # (x, y, vx, vy)
        assert RE.in_walls(states, maze).tolist() == [eval_map[i][j] == 1 for i, j in cells]
    env.close()


def test_each_injection_round_extends_the_previous_one():
    """With the same seed, dydiff_rollout with m rounds = the m - 1 round result plus one more DM
    sample averaged in (the random stream continuing), so injection_rounds gets every round."""
    cfg = D.Config(horizon=8, n_diffusion_steps=5, mlp_width=32, mlp_blocks=1, n_members=3,
                   n_elites=2, dynamics_hidden=16)  # fmt: skip
    dynamics, dm = D.build_dynamics(cfg, 4, 2), D.build_diffusion(cfg, 4, 2)
    policy = lambda s: torch.tanh(s[..., :2] - s[..., 2:])  # noqa: E731
    s0 = torch.rand(5, 4) * 2 - 1
    results = {}
    for m in (0, 1, 2):
        torch.manual_seed(3)
        results[m] = D.dydiff_rollout(s0, policy, dynamics, dm, cfg.horizon, m)
    for m in (1, 2):
        torch.manual_seed(3)
        states, actions = D.dydiff_rollout(s0, policy, dynamics, dm, cfg.horizon, m - 1)
        average = (states + dm.sample_states(s0, actions)) / 2  # RNG continues
        one_more = D.clip_to_data(average, s0, dm.norm)
        assert torch.equal(results[m][0], one_more)
        assert not torch.equal(results[m][0], results[m - 1][0])  # each round changes the states
    rounds = RE.injection_rounds(s0, policy, {"dynamics": dynamics, "diffusion": dm}, 8, 2, 3)
    assert all(np.array_equal(rounds[m], results[m][0].numpy()) for m in (0, 1, 2))


def strings(x):
    """Every string inside a JSON value."""
    if isinstance(x, dict):
        return [s for k, v in x.items() for s in [k, *strings(v)]]
    if isinstance(x, list):
        return [s for v in x for s in strings(v)]
    return [x] if isinstance(x, str) else []


def run_script(tmp_path, *argv):
    env = dict(os.environ, MINARI_DATASETS_PATH=str(tmp_path / "datasets"))
    cmd = [sys.executable, "benchmarks/rollout_error.py", *argv]
    return subprocess.run(cmd, cwd=HERE, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_rollout_error_smoke_end_to_end(tmp_path):
    """Both policies (a fresh agent stands in for a trained M = 0 run, which has no DM: the models
    are pretrained with its settings, with DyDiff's M = 2): per-step errors of every method, the
    simulator never inside a wall, both pictures, and no absolute path in the JSON."""
    cfg = D.Config()
    agent = D.TD3BC(4, 2, D.Normalizer(4), cfg)
    (tmp_path / "run").mkdir()
    tiny = "--n-members 3 --n-elites 2 --dynamics-hidden 32 --reward-hidden 32 --mlp-blocks 1"
    settings = vars(T.parse_args(["--iterations", "0", "--smoke", *tiny.split()]))
    checkpoint = {"args": settings, "trainer": {"agent": agent.state_dict()}, "rng": None,
                  "rows": [], "times": {}, "models": {}}  # fmt: skip
    torch.save(checkpoint, tmp_path / "run" / "checkpoint.pt")
    # the data without its slow reference scores; Config flags pass through to the driver
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
        P.load_or_generate("umaze", 20_000, ref_episodes=2, log=lambda m: None)
    out, run_dir = tmp_path / "out", str(tmp_path / "run")
    argv = ["--smoke", "--out", str(out), "--cache", str(tmp_path / "cache"), "--threads", "1"]
    result = run_script(tmp_path, *argv, *tiny.split(), "--policy-run", run_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    text = (out / "rollout_error_smoke.json").read_text()
    record = json.loads(text)
    assert record["horizon"] == 8 and record["iterations"] == 2 and record["seed"] == 0
    assert set(record["per_method"]) == {RE.EXPERT, RE.TRAINED}
    for methods in record["per_method"].values():
        assert methods["simulator"]["in_walls"] == 0.0
        for m in (0, 1, 2, 4):
            r = methods[RE.label(m)]
            assert len(r["mse"]) == 8 and r["mse"][0] == 0.0  # s0 is the data's state
            assert all(np.isfinite(r["mse"])) and 0 <= r["in_walls"] <= 1
    assert not any(os.path.isabs(s) or str(tmp_path) in s for s in strings(record))
    for name in ("rollout_error_smoke.png", "policy_injection_smoke.png"):
        assert (out / name).stat().st_size > 10_000
    assert "per-step MSE against the simulator" in result.stdout


@pytest.mark.slow
def test_other_envs_are_a_one_line_error(tmp_path):
    result = run_script(tmp_path, "--env", "hopper-medium", "--smoke", "--out", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: hopper-medium: this experiment sets the state of a PointMaze or of the local "
        "Hopper data's simulator only"
    ]


@pytest.mark.slow
@pytest.mark.xdist_group("hopper")  # one worker builds the fixture (--dist loadgroup)
def test_hopper_simulator_is_set_to_the_data_state(hopper_root, monkeypatch):
    """From stored states, the stored actions give the stored next states in RE.simulate."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(hopper_root))
    dataset = minari.load_dataset(MJ.local_dataset_id("medium"))
    episode = next(dataset.iterate_episodes())
    s, a = episode.observations[:-1], episode.actions
    table = {tuple(np.float32(row)): act for row, act in zip(s, a)}
    replay = lambda x: torch.as_tensor(table[tuple(x[0].numpy())])[None]  # noqa: E731
    sim = RE.simulate(T.make_eval_env(dataset), replay, s.astype(np.float32), 2, "cpu", 0)
    unclipped = np.abs(s[:, 5:]).max(1) < 10  # velocities the observation does not clip
    assert np.abs(sim[unclipped, 1] - episode.observations[1:][unclipped]).max() < 1e-5


def test_one_step_repeats_the_mazes_transitions(umaze):
    """synthetic_study.one_step: the simulator set to a stored state and stepped with the stored
    action gives the stored next state (float32 rounding), and the reward of that position."""
    episode = next(umaze.iterate_episodes())
    s, a = episode.observations["observation"][:-1][:40], episode.actions[:40]
    env = T.make_eval_env(umaze)
    nxt, rewards, ended = SS.one_step(env, s, a, 0, env.unwrapped.maze)
    assert np.abs(nxt - episode.observations["observation"][1:41]).max() < 1e-5
    assert (rewards == P.maze_reward(nxt[:, :2], env)).all() and not ended.any()
    env.close()


def test_step_agreement_per_dimension_and_step_ratio():
    """Stored next states equal to the simulator's: no error, ratio 1; stored steps half as long:
    ratio 0.5; an error in one dimension only shows in that dimension, in data stds."""
    rng = np.random.default_rng(0)
    s, sim = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    std = np.array([1.0, 2.0, 4.0])
    per_dim, ratio = SS.step_agreement(s, sim.copy(), sim, std)
    assert np.allclose(per_dim, 0) and ratio == pytest.approx(1.0)
    assert SS.step_agreement(s, s + 0.5 * (sim - s), sim, std)[1] == pytest.approx(0.5)
    off = sim.copy()
    off[:, 2] += 2.0  # half a std of the third dimension
    assert np.allclose(SS.step_agreement(s, off, sim, std)[0], [0, 0, 0.5])


@pytest.mark.slow
@pytest.mark.xdist_group("hopper")  # one worker builds the fixture (--dist loadgroup)
def test_one_step_gives_hoppers_reward(hopper_root, monkeypatch):
    """On the Hopper data, one_step's reward is the one the data stored for that (s, a)."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(hopper_root))
    dataset = minari.load_dataset(MJ.local_dataset_id("medium"))
    episode = next(dataset.iterate_episodes())
    env = T.make_eval_env(dataset)
    s, a = episode.observations[:-1], episode.actions  # (an episode of the small set: ~20 steps)
    _, rewards, ended = SS.one_step(env, s, a, 0, None)
    assert np.abs(rewards - episode.rewards).max() < 1e-4
    assert (ended == episode.terminations).all()
    env.close()


@pytest.mark.slow
@pytest.mark.xdist_group("dydiff_run")  # one worker builds the fixture (--dist loadgroup)
def test_synthetic_study_of_a_run(dydiff_run, workdir, tmp_path):
    """Both arms measured on the same start states: per-step inconsistency over H - 1 steps, the
    filter's kept return at least its dropped one in the reward model's eyes, dydiff's functions
    put back after the watch, the JSON and the picture written."""
    SS.main(["--policy-run", str(dydiff_run), "--n", "32", "--out", str(tmp_path), "--threads",
             "1", "--cache", str(workdir / "cache_run21")])  # fmt: skip
    record = json.loads((tmp_path / "synthetic_study.json").read_text())
    h = json.loads((dydiff_run / "config.json").read_text())["config"]["horizon"]
    for m in ("0", "2", "2 relabelled"):
        arm = record["per_M"][m]
        assert len(arm["kept"]["inconsistency_per_step"]) == h - 1
        assert np.isfinite(arm["kept"]["inconsistency"]) and arm["coverage_data"] > 0
        assert arm["kept"]["reward_predicted"] >= arm["all"]["reward_predicted"] - 1e-6
        assert len(arm["kept"]["inconsistency_per_dim"]) == 4 and 0 < arm["kept"]["step_ratio"] < 2
    same = ("true_return_kept", "q_synthetic", "coverage_synthetic")  # s and a are M = 2's
    assert all(record["per_M"]["2 relabelled"][k] == record["per_M"]["2"][k] for k in same)
    assert record["per_M"]["2 relabelled"]["kept"] != record["per_M"]["2"]["kept"]  # s' is not
    assert D.dydiff_rollout is SS.dydiff.dydiff_rollout and "watched" not in D.dydiff_rollout.__name__
    assert (tmp_path / "synthetic_study.png").exists()


@pytest.mark.slow
@pytest.mark.xdist_group("hopper")  # one worker builds the fixture (--dist loadgroup)
def test_rollout_error_on_hopper(hopper_root, tmp_path, monkeypatch):
    """The data's SAC policy in the simulator and the models: an error per step, over the hoppers
    still up, which never rise again."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(hopper_root))
    argv = ["--env", "hopper-medium-replay", "--smoke", "--out", str(tmp_path), "--cache",
            str(hopper_root / "cache"), "--threads", "1"]  # fmt: skip (the driver test's models)
    RE.main(argv)
    record = json.loads((tmp_path / "rollout_error_smoke.json").read_text())
    methods = record["per_method"][RE.SAC_POLICY]
    alive = methods["simulator"]["alive"]
    assert alive[0] == 1 and all(b <= a for a, b in zip(alive, alive[1:]))
    for m in (0, 1, 2, 4):
        mse = methods[RE.label(m)]["mse"]
        assert len(mse) == 8 and mse[0] == 0.0 and all(np.isfinite(mse)) and max(mse) > 0
    assert not (tmp_path / "policy_injection_smoke.png").exists()  # a maze picture


def test_rollout_error_counts_the_hoppers_that_fell():
    """Per method, the share of trajectories that ended (a state the termination rule calls
    fallen) by step H - 1, whatever they do after; the simulator's: those that stopped (NaN)."""
    standing = np.zeros((2, 5, 11), np.float32)
    standing[:, :, 0] = 1.25  # height
    fell = standing.copy()
    fell[0, 2, 0] = 0.6  # trajectory 0 falls at step 2 (then stands again: still fallen)
    sim = standing.copy()
    sim[1, 3:] = np.nan
    done_fn = T.termination_fn(T.Task("local/hopper/medium-replay-v0"))
    out = RE.measure(sim, [standing, fell, fell, fell, fell], None, 2, done_fn)
    assert out["simulator"]["fallen"] == 0.5 and out[RE.label(0)]["fallen"] == 0.0
    assert out[RE.label(2)]["fallen"] == 0.5
    assert "fallen" not in RE.measure(sim, [fell] * 5, None, 2)[RE.label(2)]  # mazes: no rule


def reward_around(goal):
    """maze_reward's sparse rule against another goal."""
    return lambda xy, env: (np.linalg.norm(xy - goal, axis=-1) <= 0.45).astype(np.float32)


def test_critic_study_q_against_the_true_discounted_return(tmp_path, monkeypatch):
    """A still policy (actor output 0) started on the goal collects gamma^t every step; one started
    far from it nothing. The critic's value at the start state is read, not trained. The reward is
    pointmaze_dataset.maze_reward (here around the test's goal); episode 0 is reset at EVAL_SEED."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    dataset = P.load_or_generate("umaze", 20_000, ref_episodes=2, log=lambda m: None)
    cfg = D.Config()
    agent = D.TD3BC(4, 2, D.Normalizer(4), cfg)
    for net, bias in ((agent.actor[0], 0.0), (agent.q1, 3.0)):  # pi(s) = tanh(0), Q1 = 3
        nn.init.zeros_(net[-1].weight)
        nn.init.constant_(net[-1].bias, bias)
    env = T.make_eval_env(dataset)
    start = env.reset(seed=T.EVAL_SEED)[0]["observation"][:2]
    monkeypatch.setattr(P, "maze_reward", reward_around(start))
    on_goal = CS.q_against_return(agent, env, cfg.gamma, episodes=1, steps=20)
    assert on_goal["q_start"] == pytest.approx(3.0)
    assert on_goal["return_start"] == pytest.approx((1 - 0.99**20) / 0.01, rel=1e-6)
    monkeypatch.setattr(P, "maze_reward", reward_around(start + 10))
    far = CS.q_against_return(agent, env, cfg.gamma, episodes=1, steps=20)
    assert far["return_start"] == 0.0
    env.close()


def test_scores_collects_the_run_folder_its_run_added(tmp_path, monkeypatch):
    """The run folder is the one folder the run added to its --out (scores.py's --out comes last,
    so it wins), even when an older run there looks newer by date; no new folder is an error,
    never another run's folder; a run stopped before its end is resumed, not started again."""
    monkeypatch.setattr(SC, "ROOT", tmp_path)
    out = Path("runs") / "g" / "maze2d-umaze" / "td3bc_seed0"
    older = tmp_path / out / "maze2d-umaze__td3bc__0__0101-0000_old"
    older.mkdir(parents=True)
    made = []

    def train(cmd, cwd, **kw):  # train_offline.py: a new folder in the last --out given
        last = max(i for i, word in enumerate(cmd) if word == "--out")
        made.append(Path(cwd) / cmd[last + 1] / f"maze2d-umaze__td3bc__0__0101-0001_{len(made)}")
        made[-1].mkdir()
        os.utime(older, (time.time() + 60,) * 2)  # the older folder: the newest date
        return types.SimpleNamespace(returncode=0)

    monkeypatch.setattr(SC, "subprocess", types.SimpleNamespace(run=train))
    assert SC.run_one("maze2d-umaze", "td3bc", 0, 1, ["--smoke"], out) == made[0]
    assert SC.run_one("maze2d-umaze", "td3bc", 0, 1, ["--smoke"], out) == made[1]
    nothing = lambda cmd, cwd, **kw: types.SimpleNamespace(returncode=0)  # noqa: E731
    monkeypatch.setattr(SC, "subprocess", types.SimpleNamespace(run=nothing))
    with pytest.raises(RuntimeError, match="expected one new run folder, found 0"):
        SC.run_one("maze2d-umaze", "td3bc", 0, 1, [], out)
    (made[1] / "checkpoint.pt").touch()  # stopped before its end: the same command continues it
    ran = []
    monkeypatch.setattr(SC, "subprocess", types.SimpleNamespace(run=lambda cmd, cwd, **kw: ran.append(
        cmd) or types.SimpleNamespace(returncode=0)))
    assert SC.run_one("maze2d-umaze", "td3bc", 0, 1, ["--smoke"], out) == made[1]
    assert ran[0][1:] == ["train_offline.py", "--resume", str(out / made[1].name)]


@pytest.mark.slow
def test_speed_refuses_negative_threads_and_its_yardstick_is_in_the_repository():
    """A fresh clone has everything speed.py runs; --threads -1 is one line, exit 2."""
    assert SP.PLAIN.is_file() and SP.PLAIN.resolve().is_relative_to(HERE)
    cmd = [sys.executable, "benchmarks/speed.py", "--threads", "-1"]
    result = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --threads must be >= 0"]


def test_speed_reads_the_phase_times_of_several_runs(tmp_path, capsys):
    """Each finished run by its folder's name, its --threads and its phase times; --run-dir takes
    several folders and can be given again; an unfinished one is one line, exit 2, before any
    measuring."""
    runs = []
    for name, threads in (("default", 0), ("shared_a", 1), ("shared_b", 1)):
        (run := tmp_path / name).mkdir()
        (run / "config.json").write_text(json.dumps({"args": {"threads": threads}}))
        (run / "summary.json").write_text(json.dumps({"phase_seconds": {"rl": 60 + threads}}))
        runs.append(run)
    assert SP.finished_runs(runs) == [
        {"run": "default", "threads": 0, "phase_seconds": {"rl": 60}},
        {"run": "shared_a", "threads": 1, "phase_seconds": {"rl": 61}},
        {"run": "shared_b", "threads": 1, "phase_seconds": {"rl": 61}},
    ]
    with pytest.raises(SystemExit) as e:
        SP.main(["--run-dir", *map(str, runs), "--run-dir", str(tmp_path / "unfinished")])
    assert e.value.code == 2
    assert capsys.readouterr().err == (f"error: --run-dir {tmp_path / 'unfinished'}: no finished "
                                       "run there (summary.json, config.json)\n")  # fmt: skip


@pytest.mark.slow
@pytest.mark.xdist_group("dydiff_run")  # one worker builds the fixture (--dist loadgroup)
def test_rollout_error_rolls_out_a_dydiff_run_with_its_own_models(dydiff_run, tmp_path):
    """--policy-run of a DyDiff run: the run's settings (smoke: H = 8) and the very model files it
    used, none pretrained again (another --cache stays without models); a flag other than the
    run's is refused; once the files are gone, one line says so instead of retraining."""
    files = json.loads((dydiff_run / "summary.json").read_text())["model_files"]
    assert sorted(files) == ["diffusion", "dynamics", "reward"]
    argv = ["--policy-run", str(dydiff_run), "--out", str(tmp_path), "--threads", "1",
            "--cache", str(tmp_path / "cache")]  # fmt: skip
    RE.main(argv)
    assert not (tmp_path / "cache" / "models").exists()
    record = json.loads((tmp_path / "rollout_error_smoke.json").read_text())
    assert record["horizon"] == 8 and RE.TRAINED in record["per_method"]
    for flag in (["--horizon", "16"], ["--env", "maze2d-medium"]):
        with pytest.raises(SystemExit) as e:
            RE.main([*argv, *flag])
        message = f"error: --policy-run takes every setting from the run: drop {flag[0]}"
        assert e.value.code == message
    for path in files.values():
        Path(path).unlink()
    with pytest.raises(SystemExit) as e:
        RE.main(argv)
    assert e.value.code == f"error: the dynamics model this run used, {files['dynamics']}, is gone"


@pytest.mark.slow
def test_rollout_error_on_an_m0_run_trains_only_the_dm(workdir, tmp_path):
    """An M = 0 run used no DM: rollout_error trains the DM of its settings (M = 2) into the cache
    it is given, and takes the run's own dynamics and reward models (none trained again)."""
    argv = ("--smoke", "--seed", "22", "--updates", "10", "--eval-every", "10", "--iterations", "0")
    assert run_main(workdir, *argv, cache="cache_run22") == 0
    (run,) = run_dirs(workdir, "dydiff__22")
    RE.main(["--policy-run", str(run), "--out", str(tmp_path), "--threads", "1",
             "--cache", str(tmp_path / "cache")])  # fmt: skip
    trained = sorted(p.name.split("__")[0] for p in (tmp_path / "cache" / "models").glob("*.pt"))
    assert trained == ["diffusion"]
    assert RE.label(2) in json.loads((tmp_path / "rollout_error_smoke.json").read_text())[
        "per_method"][RE.TRAINED]  # fmt: skip


@pytest.mark.slow
@pytest.mark.xdist_group("dydiff_run")  # one worker builds the fixture (--dist loadgroup)
def test_critic_study_reads_a_run_through_the_driver(dydiff_run, tmp_path, monkeypatch):
    """study() of a smoke DyDiff run: its checkpoint through read_run (an older one: a UserError),
    its data through load_data, the true reward of its synthetic rows and of the simulator by
    pointmaze_dataset.maze_reward (here 1 everywhere)."""
    short = CS.q_against_return
    few = lambda agent, env, gamma: short(agent, env, gamma, episodes=1, steps=5)  # noqa: E731
    monkeypatch.setattr(CS, "q_against_return", few)
    monkeypatch.setattr(P, "maze_reward", lambda xy, env: np.ones(xy.shape[:-1], np.float32))
    row = CS.study(dydiff_run)
    assert (row["algo"], row["seed"]) == ("dydiff", 21) and row["reward_true_mean"] == 1.0
    assert 0.0 <= row["in_walls_synthetic"] <= 1.0
    assert row["lambda_last_10k"] > 0.0  # alpha / mean|Q|
    assert row["return_start"] == pytest.approx((1 - 0.99**5) / 0.01)
    old = tmp_path / dydiff_run.name
    old.mkdir()
    ckpt = torch.load(dydiff_run / "checkpoint.pt", weights_only=False)
    del ckpt["models"]  # as the runs saved it before they recorded their model files
    torch.save(ckpt, old / "checkpoint.pt")
    (old / "config.json").write_bytes((dydiff_run / "config.json").read_bytes())
    with pytest.raises(T.UserError, match="no checkpoint.pt of this version"):
        CS.study(old)


@pytest.mark.slow
@pytest.mark.xdist_group("dydiff_run")  # one worker builds the fixture (--dist loadgroup)
def test_goal_study_scores_the_saved_actors_as_evaluation_did(dydiff_run, tmp_path):
    """A run keeps the actor of each evaluation; the goal study, on the evaluation's episodes with
    its goal noise, gives that evaluation's score again (here the smoke run's 2 episodes)."""
    ckpt = T.read_run(dydiff_run)
    (row,) = [r for r in ckpt["rows"] if "score" in r]
    assert sorted(p.name for p in (dydiff_run / "actors").iterdir()) == [f"{row['update']}.pt"]
    GS.main([str(dydiff_run), "--episodes", "2", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "goal_study.json").read_text())
    assert len(rows) == 8  # peak and final (one evaluation here) x 2 actors x 2 goals
    (same,) = [r for r in rows if (r["eval"], r["actor"], r["goal"]) == ("final", "actor", "noisy")]
    assert same["score"] == pytest.approx(row["score"]) and 0 <= same["reached"] <= 1
    assert all(r["final_dist"] >= 0 and r["entries"] >= 0 for r in rows)


def test_episode_stats_count_visits_to_the_goal(umaze):
    """A policy that heads for the goal and stops there: one entry, never leaves, ends near the
    centre; pushed away from the goal cell: no entry."""
    env = T.make_eval_env(umaze)
    env.unwrapped.position_noise_range = 0.0  # the goal on the centre
    (centre,) = env.unwrapped.maze.unique_goal_locations
    settle = lambda s: np.clip(10 * (centre - s[:, :2]) - s[:, 2:], -1, 1)  # noqa: E731
    # reset cell (1, 2) beside the goal cell (1, 1): a straight way in
    options = {"goal_cell": np.array([1, 1]), "reset_cell": np.array([1, 2])}
    env.reset = (lambda reset: lambda seed: reset(seed=seed, options=options))(env.reset)
    stats = GS.episode_stats(settle, env, seed=0)
    assert stats["entries"] == 1 and stats["final_dist"] < 0.05 and stats["first_entry"] < 50
    away = GS.episode_stats(lambda s: np.array([[1.0, 0.0]]), env, seed=0)
    assert away["entries"] == 0 and np.isnan(away["first_entry"]) and away["return"] == 0


def test_physics_rms_separates_simulator_steps_from_impossible_ones(umaze):
    """On the data, xy' - xy is about dt v' (small residual); the same transitions with the next
    positions of other rows (teleports) are far from it."""
    arrays = T.dataset_to_arrays(umaze, T.resolve_task("maze2d-umaze"))
    s, s2 = arrays["observations"], arrays["next_observations"]
    dt = CS.data_dt(arrays)
    assert 0.005 < dt < 0.05  # PointMaze: 0.01 s per step
    teleports = s2.copy()
    teleports[:, :2] = np.roll(s2[:, :2], 7, axis=0)
    assert CS.physics_rms(s, teleports, dt) > 20 * CS.physics_rms(s, s2, dt)


def test_dm_cost_arithmetic_by_hand():
    """Cached run = RL + rounds x (round - default round); first = cached + before RL + DM time."""
    rows = {"default": {"round_seconds": 3.0, "dm_seconds": 250.0},
            "slower": {"round_seconds": 5.0, "dm_seconds": 1000.0}}  # fmt: skip
    DC.costs(rows, rounds=50, before_rl=300.0, rl=700.0)
    assert rows["default"]["cached"] == 700 and rows["default"]["first"] == 1250
    assert rows["slower"]["cached"] == 800 and rows["slower"]["first"] == 2100


def test_dm_cost_bad_candidate_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        DC.main(["--base", "1", "1", "--candidate", "--no-such-flag 3"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err


def test_dm_cost_refuses_a_candidate_that_changes_the_rl_budget(capsys):
    """RL time and rounds come from the default run: a candidate may not change them."""
    for flags in ("--updates 1000", "--dm-steps 10 --rollout-every 500"):
        with pytest.raises(SystemExit) as e:
            DC.main(["--base", "1", "1", "--candidate", flags])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "--rollout-every" in err and err.count("\n") == 1, err


def test_no_reusable_benchmark_imports_a_study_and_each_study_runs_from_a_clone(tmp_path):
    """benchmarks/*.py never import benchmarks/studies/ (a study may import a benchmark, not the
    reverse); every study answers --help from any working folder (its imports resolve)."""
    import ast

    for path in sorted((HERE / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []  # fmt: skip
            assert not any("studies" in n for n in names), f"{path.name} imports a study: {names}"
    studies = sorted(str(p) for p in (HERE / "benchmarks" / "studies").glob("*.py"))
    assert len(studies) >= 6
    code = ("import runpy, sys\nfor f in sys.argv[1:]:\n    sys.argv = [f, '--help']\n    try:\n"
            "        runpy.run_path(f, run_name='__main__')\n    except SystemExit as e:\n"
            "        assert e.code in (0, None), (f, e.code)\n    print('STUDY-OK', f)")  # fmt: skip
    res = subprocess.run([sys.executable, "-c", code, *studies], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0 and res.stdout.count("STUDY-OK ") == len(studies), res.stderr[-2000:]


def test_synthetic_table_means_and_ranges_over_records(tmp_path, capsys):
    """Each cell is the mean over a group's records (range in brackets), read from the synthesis of
    its row; a missing value (no dropped trajectory) is left out, not counted as 0."""
    def record(x: float, dropped):
        side = {"inconsistency": x, "inconsistency_per_step": [x, 2 * x], "reward_predicted": x,
                "reward_true": x, "reached_goal": x}  # fmt: skip
        per = {"kept": side, "all": side, "true_return_kept": x, "true_return_dropped": dropped,
               "q_synthetic": x, "q_data": x, "coverage_synthetic": x, "coverage_data": x}  # fmt: skip
        return {"per_M": {"0": per, "2": {**per, "q_synthetic": 10 * x}}}

    files = []
    for i, (x, dropped) in enumerate(((1.0, None), (3.0, 5.0))):
        files.append(tmp_path / f"r{i}.json")
        files[-1].write_text(json.dumps(record(x, dropped)))
    ST.main(["--group", "umaze", *map(str, files), "--plot", str(tmp_path / "p.png")])
    rows = {r.split(" | ")[1]: r.split(" | ") for r in capsys.readouterr().out.splitlines()[2:]}
    header = ["", "synthesis", "n", *ST.COLUMNS]
    m0, m2 = (dict(zip(header, rows[f"M = {m}"])) for m in (0, 2))
    assert m0["n"] == "2" and m0["inconsistency"] == "2 (1-3)"
    assert m0["dropped"] == "5 (5-5)"  # the record without a dropped trajectory left out
    assert m2["Q synthetic"] == "20 (10-30)" and m0["Q synthetic"] == "2 (1-3)"
    assert m0["step ratio"] == "-"  # records from before the step ratio: no number made up
    assert (tmp_path / "p.png").stat().st_size > 0
