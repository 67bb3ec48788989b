"""Tests of the data scripts: scripts/pointmaze_dataset.py (generated maze data, reuse and
regeneration, the lock, the DFS planner against the official algorithm, the command line) and
scripts/mujoco_dataset.py (Hopper data of D4RL's recipe, at tiny sizes)."""

import itertools
import json
import os
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import minari
import numpy as np
import pytest
import torch
from minari.data_collector import EpisodeBuffer
from minari.storage.datasets_root_dir import get_dataset_path

import train_offline as T
from scripts import mujoco_dataset as MJ
from scripts import pointmaze_dataset as P
from support import HERE, HOPPER_SMALL, N_STEPS, collect_random_dataset, data_path, run_cli

# ---- Generated data ----
def test_local_dataset_id():
    assert P.local_dataset_id("umaze") == "local/pointmaze/umaze-v2"
    assert P.local_dataset_id("umaze", n_steps=500) == "local/pointmaze/umaze-500steps-v2"
    assert P.local_dataset_id("large", dense=True) == "local/pointmaze/large-dense-v2"
    assert (
        P.local_dataset_id("medium", True, 20_000) == "local/pointmaze/medium-dense-20000steps-v2"
    )


def test_generated_maze_dataset_is_consistent(umaze):
    episodes = list(umaze.iterate_episodes())
    assert umaze.total_steps == N_STEPS == sum(len(ep.rewards) for ep in episodes)
    assert umaze.total_episodes == len(episodes) > 10
    for prev, ep in itertools.pairwise(episodes):  # one continuing stream, cut at each success
        last, first = prev.observations["observation"][-1], ep.observations["observation"][0]
        assert np.array_equal(last, first)
    for ep in episodes:
        obs = ep.observations
        # The reward of step t uses the goal the env had during that step; it is the desired_goal
        # of the observation after it (the first observation still shows the previous goal).
        goal = obs["desired_goal"][1:]
        assert np.allclose(goal, goal[0])
        dist = np.linalg.norm(obs["achieved_goal"][1:] - goal, axis=1)
        assert np.array_equal(ep.rewards, (dist <= 0.45).astype(float))
        assert np.array_equal(obs["achieved_goal"], obs["observation"][:, :2])
        assert ep.truncations[-1] and not ep.truncations[:-1].any() and not ep.terminations.any()
        assert not ep.rewards[:-1].any()  # the episode is cut at its first success
        assert np.abs(ep.actions).max() <= 1.0 and ep.actions.dtype == np.float32
    assert all(ep.rewards[-1] == 1 for ep in episodes[:-1])  # (the last one may be unfinished)
    meta = umaze.storage.metadata
    assert meta["ref_max_score"] > meta["ref_min_score"] + 50
    assert meta["algorithm_name"].startswith("DFS")  # the official default planner
    eval_env = P.make_env(umaze.recover_environment(eval_env=True))
    assert eval_env.spec.max_episode_steps == 300
    assert len(eval_env.unwrapped.maze.unique_goal_locations) == 1  # one fixed goal cell


def test_dfs_and_qiteration_give_the_same_umaze_data(datasets_path):
    """U-maze is a tree, so both planners make the same paths and the same data, bit for bit."""
    data = {}
    for solver in ("dfs", "qiteration"):
        dataset = P.generate("umaze", f"local/pointmaze/{solver}-v0", 1500, ref_episodes=2,
                             solver=solver, log=lambda m: None)  # fmt: skip
        data[solver] = [(ep.observations["observation"], ep.actions, ep.truncations)
                        for ep in dataset.iterate_episodes()]  # fmt: skip
    assert len(data["dfs"]) == len(data["qiteration"]) > 10
    for a, b in zip(data["dfs"], data["qiteration"]):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_make_env_deletes_the_maze_xml_file():
    env = P.make_env("PointMaze_UMaze-v3")
    assert env.unwrapped.tmp_xml_file_path and not os.path.exists(env.unwrapped.tmp_xml_file_path)


def test_save_dataset_leaves_nothing_behind_on_failure(datasets_path):
    env = P.make_env("PointMaze_UMaze-v3")
    obs = env.reset(seed=0)[0]
    episode = EpisodeBuffer(
        observations={k: np.stack([v, v]) for k, v in obs.items()},
        actions=np.zeros((1, 2), np.float32), rewards=np.zeros(1),
        terminations=np.zeros(1, bool), truncations=np.ones(1, bool),
    )  # fmt: skip
    with pytest.raises(TypeError):  # the reference scores (written last) cannot be stored
        P.save_dataset("local/test/broken-v0", [episode], env, env, ref_scores={"x": object()})
    assert not get_dataset_path("local/test/broken-v0").exists()


def test_mujoco_random_dataset(datasets_path):
    dataset = collect_random_dataset("Hopper-v5", "local/hopper/random-test-v0", 300, seed=0)
    loaded = minari.load_dataset("local/hopper/random-test-v0")
    episodes = list(loaded.iterate_episodes())
    assert loaded.total_steps == 300 == sum(len(ep.actions) for ep in episodes)
    assert loaded.total_episodes == dataset.total_episodes == len(episodes) > 1  # hoppers fall
    assert all(ep.observations.shape == (len(ep.actions) + 1, 11) for ep in episodes)
    assert sum(ep.terminations[-1] for ep in episodes) == len(episodes) - 1  # the last: budget
    assert episodes[-1].truncations[-1] and "ref_min_score" not in loaded.storage.metadata


# ---- Reuse, repair and regeneration ----
def test_load_or_generate_reuses_generated_data(datasets_path):
    logs: list[str] = []
    dataset = P.load_or_generate("umaze", 500, log=logs.append, ref_episodes=2)
    assert dataset.spec.dataset_id == "local/pointmaze/umaze-500steps-v2"
    assert dataset.total_steps == 500 and any("generating" in m for m in logs)
    hdf5 = data_path("local/pointmaze/umaze-500steps-v2") / "main_data.hdf5"
    written = hdf5.stat().st_mtime_ns
    logs.clear()
    again = P.load_or_generate("umaze", 500, log=logs.append, ref_episodes=2)
    assert again.total_steps == 500 and again.total_episodes == dataset.total_episodes
    assert any("using locally generated" in m for m in logs)
    assert not any("generating" in m for m in logs) and hdf5.stat().st_mtime_ns == written


def test_half_made_dataset_is_regenerated(datasets_path):
    dataset_id = "local/pointmaze/umaze-500steps-v2"
    P.load_or_generate("umaze", 500, log=lambda m: None, ref_episodes=2)
    meta_file = data_path(dataset_id) / "metadata.json"
    meta = json.loads(meta_file.read_text())
    for key in ("ref_min_score", "ref_max_score", "num_episodes_average_score"):
        del meta[key]  # as if killed after the data but before the reference scores
    meta_file.write_text(json.dumps(meta))
    logs: list[str] = []
    dataset = P.load_or_generate("umaze", 500, log=logs.append, ref_episodes=2)
    assert any("deleting" in m and "incomplete" in m for m in logs)
    assert any("generating" in m for m in logs)
    assert "ref_max_score" in dataset.storage.metadata and dataset.total_steps == 500


def test_truncated_file_is_regenerated(datasets_path):
    dataset_id = "local/pointmaze/umaze-500steps-v2"
    P.load_or_generate("umaze", 500, log=lambda m: None, ref_episodes=2)
    hdf5 = data_path(dataset_id) / "main_data.hdf5"
    hdf5.write_bytes(hdf5.read_bytes()[: hdf5.stat().st_size // 2])
    logs: list[str] = []
    dataset = P.load_or_generate("umaze", 500, log=logs.append, ref_episodes=2)
    assert any("unreadable" in m for m in logs) and any("generating" in m for m in logs)
    assert sum(len(ep.rewards) for ep in dataset.iterate_episodes()) == 500


def test_regenerate_rebuilds(datasets_path):
    first = P.load_or_generate("umaze", 500, log=lambda m: None, ref_episodes=2)
    actions = [ep.actions for ep in first.iterate_episodes()]
    hdf5 = data_path("local/pointmaze/umaze-500steps-v2") / "main_data.hdf5"
    written = hdf5.stat().st_mtime_ns
    logs: list[str] = []
    again = P.load_or_generate("umaze", 500, log=logs.append, regenerate=True, ref_episodes=2)
    assert any("deleting" in m for m in logs) and any("generating" in m for m in logs)
    assert hdf5.stat().st_mtime_ns != written
    assert all(np.array_equal(a, e.actions) for a, e in zip(actions, again.iterate_episodes()))


@pytest.mark.slow
def test_two_processes_share_one_generation(datasets_path):
    code = textwrap.dedent("""
        import hashlib, sys, time
        import numpy as np
        from scripts.pointmaze_dataset import load_or_generate
        time.sleep(max(0.0, float(sys.argv[1]) - time.time()))  # both start at the same moment
        d = load_or_generate("umaze", 2000, log=lambda m: print("LOG", m), ref_episodes=5)
        actions = np.concatenate([ep.actions for ep in d.iterate_episodes()])
        print("RESULT", d.total_episodes, d.total_steps, d.storage.metadata["ref_max_score"],
              hashlib.sha256(actions.tobytes()).hexdigest())
    """)
    start_at = str(time.time() + 4)  # after both have imported
    procs = [subprocess.Popen([sys.executable, "-c", code, start_at], cwd=HERE, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    logs = [[line for line in out.splitlines() if line.startswith("LOG")] for out, _ in outs]
    assert sum(any("generating" in m for m in log) for log in logs) == 1
    assert sum(any("using locally generated" in m for m in log) for log in logs) == 1
    results = [[line for line in out.splitlines() if line.startswith("RESULT")] for out, _ in outs]
    assert results[0] == results[1] and results[0][0].split()[2] == "2000"


@pytest.mark.slow
def test_file_lock_excludes_a_second_process(tmp_path):
    lock, stamp = tmp_path / "sub" / "x.lock", tmp_path / "acquired"
    code = textwrap.dedent(f"""
        import time
        from scripts.pointmaze_dataset import file_lock
        with file_lock({str(lock)!r}):
            open({str(stamp)!r}, "w").write(repr(time.time()))
    """)
    with P.file_lock(lock):
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=HERE)
        time.sleep(3)  # time to import and reach the lock
        assert proc.poll() is None and not stamp.exists()  # still waiting
        released = time.time()
    assert proc.wait(timeout=30) == 0
    assert float(stamp.read_text()) >= released and lock.exists()  # the lock file stays


# ---- The DFS planner ----
RING = [  # a loop around one wall: two ways from (1, 1) to (1, 3)
    [1, 1, 1, 1, 1],
    [1, 0, 0, 0, 1],
    [1, 0, 1, 0, 1],
    [1, 0, 0, 0, 1],
    [1, 1, 1, 1, 1],
]


def test_dfs_returns_the_official_path():
    """Hand-checked against Minari's maze_solver.DFS: neighbours are pushed in the order
    (0, 1), (0, -1), (-1, 0), (1, 0), so (2, 1) is expanded before (1, 2); a cell is marked
    visited when pushed; the goal ends the search when popped."""
    c = P.WaypointController(types.SimpleNamespace(maze_map=RING), np.random.default_rng(0))
    # Goes the long way round (6 moves, not 2), as the official DFS does.
    assert c._dfs_path((1, 1), (1, 3)) == {
        (1, 1): (2, 1), (2, 1): (3, 1), (3, 1): (3, 2),
        (3, 2): (3, 3), (3, 3): (2, 3), (2, 3): (1, 3),
    }  # fmt: skip
    # (1, 2) was pushed first from (1, 1) and never re-parented from (1, 3): a direct path.
    assert c._dfs_path((1, 1), (1, 2)) == {(1, 1): (1, 2)}
    assert c._dfs_path((3, 3), (3, 3)) == {}  # goal in the agent's own cell: no plan
    # Q-iteration takes the shortest way instead.
    assert c._plan((1, 3))[(1, 1)] == (1, 2)


def test_controller_follows_the_dfs_path():
    maze = P.make_env("PointMaze_UMaze-v3", maze_map=RING).unwrapped.maze
    c = P.WaypointController(maze, np.random.default_rng(0))

    def xy(cell):
        return maze.cell_rowcol_to_xy(np.array(cell))

    obs = {"achieved_goal": xy((1, 1)), "desired_goal": xy((1, 3)) + 0.1,
           "observation": np.r_[xy((1, 1)), 0.0, 0.0]}  # fmt: skip
    c(obs)
    assert c.cell == (2, 1) and np.all(np.abs(c.waypoint - xy((2, 1))) <= 0.2)
    same_cell = dict(obs, desired_goal=xy((1, 1)) + 0.2)  # a new goal in the agent's own cell
    assert np.allclose(c(same_cell), 10 * 0.2)  # heads straight for it


# ---- Command line ----

@pytest.mark.slow
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    cases = [
        (["--maze", "nope"], {}, "invalid choice: 'nope'"),
        (["--maze", "umaze", "--steps", "0"], {}, "--steps must be positive"),
        (["--maze", "umaze"], {"MINARI_DATASETS_PATH": str(not_a_dir / "d")}, "cannot write"),
    ]
    for args, env, message in cases:
        res = run_cli(*args, env=env)
        assert res.returncode == 2 and res.stdout == "", res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and message in res.stderr


def test_cli_generates_then_reports_existing(datasets_path, capsys):
    assert P.main(["--maze", "umaze", "--steps", "1000"]) == 0
    out = capsys.readouterr().out
    assert "generating local/pointmaze/umaze-1000steps-v2" in out
    assert "reach their goal" in out and "reference returns: random" in out
    assert "python train_offline.py --env maze2d-umaze --dataset-size 1000" in out
    assert P.main(["--maze", "umaze", "--steps", "1000"]) == 0
    out = capsys.readouterr().out
    assert "using locally generated" in out and "generating" not in out
    assert str(get_dataset_path("local/pointmaze/umaze-1000steps-v2")) in out


def test_cli_ctrl_c_leaves_no_dataset(datasets_path, monkeypatch, capsys):
    def killed_while_writing(dataset_id, *args, **kwargs):
        get_dataset_path(dataset_id).joinpath("data").mkdir(parents=True)  # a half-made folder
        raise KeyboardInterrupt

    monkeypatch.setattr(P.minari, "create_dataset_from_buffers", killed_while_writing)
    monkeypatch.setattr(P, "get_average_reference_score", lambda *args: 0.0)
    assert P.main(["--maze", "umaze", "--steps", "1000"]) == 130
    err = capsys.readouterr().err.replace("\r", "\n")  # (tqdm's progress bar uses \r)
    assert [line for line in err.splitlines() if "interrupted" in line] == [
        "interrupted: no dataset local/pointmaze/umaze-1000steps-v2 was written"
    ]
    assert not get_dataset_path("local/pointmaze/umaze-1000steps-v2").exists()


def test_draw_maze_draws_every_wall():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maze = P.make_env("PointMaze_Medium-v3").unwrapped.maze
    fig, ax = plt.subplots()
    P.draw_maze(ax, maze)
    assert len(ax.patches) == sum(cell == 1 for row in maze.maze_map for cell in row)
    assert ax.get_xlim() == (-maze.x_map_center, maze.x_map_center)
    plt.close(fig)


@pytest.mark.slow
def test_cli_never_passes_off_a_set_made_with_other_settings(datasets_path):
    assert run_cli("--maze", "umaze", "--steps", "2000").returncode == 0
    folder = get_dataset_path("local/pointmaze/umaze-2000steps-v2")
    files = sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*"))
    out = run_cli("--maze", "umaze", "--steps", "2000", "--seed", "5")
    assert out.returncode == 2 and "made otherwise" in out.stderr and "minari delete" in out.stderr
    assert sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*")) == files


# ------------------------------------------------------------------------------------------------
# scripts/mujoco_dataset.py: Hopper data of D4RL's recipe, at tiny sizes
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.xdist_group("hopper")  # one worker builds the fixture (--dist loadgroup)
def test_hopper_data_is_what_hopper_v5_gives(hopper_root, monkeypatch):
    """Every stored transition is the simulator's: from the stored state (x = 0: the observation
    omits it, and nothing depends on it) the stored action gives the stored next observation,
    reward and termination; time-outs only at 1,000 steps or where the data stops."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(hopper_root))
    env = P.make_env("Hopper-v5").unwrapped
    env.reset(seed=0)
    for level, steps in (("medium-replay", 299), ("medium", 400)):  # replay: warm-up included
        dataset = minari.load_dataset(MJ.local_dataset_id(level))
        meta = dataset.storage.metadata
        assert dataset.total_steps == steps and meta["ref_max_score"] == 3234.3
        assert -50 < meta["ref_min_score"] < 100  # a uniform policy falls at once
        checked = 0
        for ep in dataset.iterate_episodes():
            assert ep.truncations[:-1].sum() == ep.terminations[:-1].sum() == 0
            assert ep.truncations[-1] != ep.terminations[-1] or len(ep.actions) == 1_000
            for t in range(len(ep.actions)):
                s = ep.observations[t]
                if np.abs(s[5:]).max() >= 10:  # velocities are clipped in the observation
                    continue
                env.set_state(np.r_[0.0, s[:5]], s[5:])
                obs, reward, terminated, _, _ = env.step(ep.actions[t])
                assert np.abs(obs - ep.observations[t + 1]).max() < 1e-9
                assert abs(reward - ep.rewards[t]) < 1e-5 and terminated == ep.terminations[t]
                checked += 1
        assert checked > 0.9 * steps and dataset.total_episodes > 3  # early hoppers fall


@pytest.mark.slow
@pytest.mark.xdist_group("hopper")  # one worker builds the fixture (--dist loadgroup)
def test_hopper_termination_rule_is_hopper_v5_is_healthy(hopper_root, monkeypatch):
    """The driver's rule for synthetic states agrees with Hopper-v5's is_healthy on every state of
    the data, fallen ones included, and on data states moved to either side of each threshold."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(hopper_root))
    dataset = minari.load_dataset(MJ.local_dataset_id("medium-replay"))
    states = np.concatenate([ep.observations for ep in dataset.iterate_episodes()])
    rng = np.random.default_rng(0)
    near = states[rng.choice(len(states), 600)]  # copies, moved to each threshold
    near[:200, 0] = rng.uniform(0.6, 0.8, 200)  # heights around 0.7
    near[200:400, 1] = rng.uniform(-0.3, 0.3, 200)  # angles around +-0.2
    near[np.arange(400, 600), rng.integers(2, 11, 200)] = rng.uniform(-200, 200, 200)  # |s| < 100
    states = np.concatenate([states, near]).astype(np.float32)  # the driver's precision
    env = P.make_env("Hopper-v5").unwrapped
    healthy = []
    for s in states.astype(np.float64):
        env.set_state(np.r_[0.0, s[:5]], s[5:])
        healthy.append(env.is_healthy)
    rule = T.termination_fn(T.resolve_task("hopper-medium-replay"))
    done = rule(torch.as_tensor(states)).numpy()
    assert 0.1 < np.mean(healthy) < 0.9 and (done == ~np.array(healthy)).all()


@pytest.mark.slow
@pytest.mark.xdist_group("hopper")  # one worker builds the fixture (--dist loadgroup)
def test_hopper_data_is_reused_and_an_incomplete_set_made_again(hopper_root, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(hopper_root))
    logs: list[str] = []
    replay = Path(get_dataset_path(MJ.local_dataset_id("medium-replay")))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in replay.rglob("*"))
    MJ.load_or_generate("medium", log=logs.append, **HOPPER_SMALL)
    assert logs == []  # complete: nothing made
    meta_file = Path(get_dataset_path(MJ.local_dataset_id("medium"))) / "data" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    del meta["ref_max_score"]  # as if its generation was killed before the end
    meta_file.write_text(json.dumps(meta))
    dataset = MJ.load_or_generate("medium", log=logs.append, **HOPPER_SMALL)
    assert logs[0].startswith("making local/hopper/medium-v0") and len(logs) == 2
    assert dataset.storage.metadata["ref_max_score"] == 3234.3
    assert sorted((p.name, p.stat().st_mtime_ns) for p in replay.rglob("*")) == before


@pytest.mark.slow
@pytest.mark.xdist_group("hopper")  # one worker builds the fixture (--dist loadgroup)
def test_driver_trains_on_local_hopper_data(hopper_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(hopper_root))
    T.main(["--env", "hopper-medium-replay", "--smoke", "--threads", "1", "--out", str(tmp_path),
            "--cache", str(hopper_root / "cache")])  # fmt: skip (models shared with rollout_error)
    (run,) = tmp_path.glob("hopper-medium-replay__dydiff__0__*")
    summary = json.loads((run / "summary.json").read_text())
    assert np.isfinite(summary["final_score"])  # normalised with the data's reference returns
    assert "data: local/hopper/medium-replay-v0, 299 transitions" in capsys.readouterr().out


def test_missing_hopper_data_says_how_to_make_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    with pytest.raises(SystemExit) as e:
        T.main(["--env", "hopper-medium-local", "--out", str(tmp_path), "--cache", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1
    assert "local/hopper/medium-v0 is not made yet: python scripts/mujoco_dataset.py" in err


@pytest.mark.parametrize("flag", ["--max-steps", "--medium-steps", "--eval-every", "--seed"])
def test_mujoco_script_bad_input_is_one_line(flag, capsys):
    with pytest.raises(SystemExit) as e:
        MJ.main([flag, "-1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1


def test_shipped_hopper_file_installs_the_same_arrays_and_a_changed_file_is_one_line(
    hopper_root, tmp_path, monkeypatch, capsys
):
    """data/'s file is the results' Hopper data: exported, then installed where the set is missing,
    it gives the driver the very arrays (so the same content hash) and the SAC policy beside them;
    a file whose sha256 is not the recorded one is refused in one line, and nothing is trained."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(hopper_root))
    replay = minari.load_dataset(MJ.local_dataset_id("medium-replay"))
    shipped = tmp_path / "shipped.npz"
    MJ.export(replay, shipped)
    monkeypatch.setattr(MJ, "SHIPPED", shipped)
    monkeypatch.setattr(MJ, "SHIPPED_SHA256", MJ.sha256(shipped))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "fresh"))  # the set is missing here
    task = T.resolve_task("hopper-medium-replay")
    installed = T.load_dataset(task, None, log=lambda m: None)
    mine, theirs = T.dataset_to_arrays(installed, task), T.dataset_to_arrays(replay, task)
    assert all(np.array_equal(mine[k], theirs[k]) for k in theirs), "installed arrays differ"
    assert installed.storage.metadata["ref_min_score"] == replay.storage.metadata["ref_min_score"]
    assert (Path(get_dataset_path(installed.spec.dataset_id)) / MJ.POLICY_FILE).is_file()
    monkeypatch.setattr(MJ, "SHIPPED_SHA256", "0" * 64)  # the file is not the recorded one
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "fresh2"))
    with pytest.raises(SystemExit) as e:
        T.main(["--env", "hopper-medium-replay", "--out", str(tmp_path), "--cache", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1 and "sha256" in err, err
    assert not (tmp_path / "fresh2" / "local" / "hopper" / "medium-replay-v0" / "data").exists()
