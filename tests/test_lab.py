"""Tests of scripts/lab.py: the task, its data, the command line. Tiny sizes; no score is asserted."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import dydiff  # noqa: E402
from scripts import lab  # noqa: E402

torch.set_num_threads(1)

TINY = ["--updates", "4", "--eval-every", "2", "--rollout-every", "2", "--rollout-batch-size", "8",
        "--horizon", "8", "--dm-steps", "2", "--dm-batch-size", "8", "--mlp-width", "16",
        "--mlp-blocks", "1", "--n-members", "2", "--n-elites", "1", "--model-epoch-steps", "2",
        "--model-max-epochs", "1", "--batch-size", "16", "--hidden", "8"]  # fmt: skip
NUM, DIFF = r"-?\d+\.\d", r"[+-]\d+\.\d"
SPREAD = rf"{NUM} \+- \d+\.\d"
LINE = (rf"lab: td3bc {SPREAD}, dydiff {SPREAD}, M=0 {SPREAD}, "
        rf"dydiff-td3bc {DIFF} \[{DIFF}, {DIFF}\], M2-M0 {DIFF} \[{DIFF}, {DIFF}\]")  # fmt: skip


def run_lab(capsys, *flags: str) -> list[str]:
    lab.main(["--seeds", "0,1", *TINY, *flags])
    return capsys.readouterr().out.strip().splitlines()


def test_data_is_the_exact_dynamics_and_the_reward_evaluation_pays():
    data = lab.make_data()
    s2 = lab.step(data["observations"], data["actions"])
    assert np.array_equal(s2, data["next_observations"]), "next states: the exact dynamics' step"
    got, want = data["rewards"], lab.reward(data["next_observations"])
    assert np.array_equal(got, want), "rewards: what evaluation pays for the next state"
    same = data["episode_ids"][1:] == data["episode_ids"][:-1]
    gap = np.abs(data["observations"][1:][same] - data["next_observations"][:-1][same]).max()
    assert gap == 0, f"inside an episode, row i + 1 starts where row i ends (gap {gap})"


def test_data_keeps_dydiffs_contract_and_episodes_fit_the_horizons():
    data = lab.make_data()
    dydiff.check_data(data)  # raises on a broken rule
    lengths = np.bincount(data["episode_ids"])
    assert lengths.min() >= 64, f"episodes must hold H = 64 windows (exercise 7): {lengths.min()}"
    assert np.abs(data["observations"][:, :2]).max() <= 1, "positions stay inside the walls"


def test_same_data_seed_same_data_other_seed_other_data():
    a, b, c = lab.make_data(0), lab.make_data(0), lab.make_data(1)
    assert all(np.array_equal(a[k], b[k]) for k in a), "the data must be a function of its seed"
    assert not np.array_equal(a["actions"], c["actions"]), "another seed must give other data"


def test_walls_stop_the_mass_and_speed_is_bounded():
    s = np.array([[0.99, 0.0, 1.0, 0.0], [0.0, -0.99, 0.0, -1.0]], np.float32)
    a = np.array([[1.0, 0.0], [0.0, -1.0]], np.float32)
    s2 = lab.step(s, a)
    assert np.abs(s2[:, :2]).max() <= 1, f"a wall keeps the mass in the box: {s2[:, :2]}"
    assert s2[0, 2] == 0 and s2[1, 3] == 0, f"hitting a wall stops that component: {s2[:, 2:]}"
    free = np.zeros((1, 4), np.float32)
    for _ in range(100):
        free = lab.step(free, np.array([[1.0, 0.0]], np.float32))
        free[0, 0] = 0  # never reach the wall
    assert free[0, 2] <= 1 + 1e-6, f"top speed GAIN / (1 - DRAG) = 1, got {free[0, 2]}"


def test_the_goal_controller_reaches_the_goal_from_every_start():
    s = np.zeros((lab.EVAL_EPISODES, 4), np.float32)
    s[:, :2] = np.random.default_rng(10_000).uniform(-1, 1, (lab.EVAL_EPISODES, 2))
    for _ in range(lab.EPISODE):
        s = lab.step(s, lab.controller(s, lab.GOAL))
    far = np.linalg.norm(s[:, :2] - lab.GOAL, axis=1).max()
    assert far < 0.05, f"the expert (score 100) must end at the goal, worst distance {far:.3f}"
    assert lab.EXPERT_RETURN.mean() > 5 * lab.RANDOM_RETURN.mean(), "100 and 0 must be far apart"


def test_random_baseline_draws_new_actions_at_every_step_from_one_seeded_generator(monkeypatch):
    actions = []
    real_step = lab.step
    monkeypatch.setattr(lab, "step", lambda s, a: actions.append(np.array(a)) or real_step(s, a))
    returns = lab.episode_returns(lab.random_actions())
    monkeypatch.undo()
    a = np.stack(actions)  # [steps, episodes, 2]
    assert len(a) == lab.EPISODE
    same = np.all(a[1:] == a[:-1], axis=2)  # [steps - 1, episodes]: the action did not change
    assert not same.any(), f"random actions must change at every step ({same.sum()} repeats)"
    assert np.abs(a).max() <= 1 and a.min() < -0.9 and a.max() > 0.9, "uniform in [-1, 1]"
    assert np.array_equal(returns, lab.RANDOM_RETURN), "the 0 point is this policy's return"
    again = lab.episode_returns(lab.random_actions())
    assert np.array_equal(again, returns), "seeded: the baseline repeats"
    rng = np.random.default_rng(1)  # one generator, as the lab's own docstring says
    want = lab.episode_returns(lambda s: rng.uniform(-1, 1, (len(s), 2)))
    assert np.array_equal(lab.RANDOM_RETURN, want), "RANDOM_RETURN: one generator, seed 1"


def test_renormalised_record_is_the_stored_scores_on_the_new_0_point():
    """results/lab/renormalised.json against the formula, recomputed here from main.json and the
    two baselines; the README and docs/lab.md show its line."""
    new_file = json.loads((ROOT / "results" / "lab" / "renormalised.json").read_text())
    stored = json.loads((ROOT / "results" / "lab" / "main.json").read_text())
    old = lab.episode_returns(lambda s: np.random.default_rng(1).uniform(-1, 1, (len(s), 2))).mean()
    new, expert = lab.RANDOM_RETURN.mean(), lab.EXPERT_RETURN.mean()
    assert new_file["random_return"] == pytest.approx({"old": old, "new": new}, rel=1e-12)
    assert new_file["expert_return"] == pytest.approx(expert, rel=1e-12)
    record = new_file["records"]["main.json"]
    assert record["line_old"] == stored["line"], "the old line is the stored record's"
    for algo, finals in stored["final"].items():
        for seed, score in finals.items():
            ret = old + score * (expert - old) / 100  # the raw return behind the stored score
            want = 100 * (ret - new) / (expert - new)
            assert record["final"][algo][seed] == pytest.approx(want, abs=1e-9), (algo, seed)
    finals = {a: list(f.values()) for a, f in record["final"].items()}
    assert record["line"] == lab.summary_line(finals, 2), "the line of the renormalised scores"
    for doc in ("README.md", "docs/lab.md"):
        assert record["line"] in (ROOT / doc).read_text(), f"{doc} must show the renormalised line"


def test_tiny_run_ends_with_the_line_in_its_exact_format(capsys):
    lines = run_lab(capsys)
    assert re.fullmatch(LINE, lines[-1]), f"the last line must be the lab line: {lines[-1]!r}"
    assert sum(x.startswith("lab:") for x in lines) == 1, "exactly one lab line"


def test_same_seeds_same_line_and_the_seed_matters(capsys):
    first, again = run_lab(capsys)[-1], run_lab(capsys)[-1]
    assert first == again, f"same seeds, same numbers: {first!r} vs {again!r}"
    lab.main(["--seeds", "2,3", *TINY])
    other = capsys.readouterr().out.strip().splitlines()[-1]
    assert other != first, "other seeds must give other numbers"


def test_algos_choose_the_runs_and_the_line_has_only_their_parts(capsys):
    line = run_lab(capsys, "--algos", "td3bc")[-1]
    assert re.fullmatch(rf"lab: td3bc {SPREAD}", line), f"TD3+BC alone: {line!r}"
    line = run_lab(capsys, "--algos", "m0,dydiff", "--iterations", "1")[-1]
    want = rf"lab: dydiff {SPREAD}, M=0 {SPREAD}, M1-M0 {DIFF} \[{DIFF}, {DIFF}\]"
    assert re.fullmatch(want, line), f"M = 1 against M = 0, the difference named M1-M0: {line!r}"


def test_results_file_has_the_line_scores_and_no_absolute_path(tmp_path, capsys):
    out = tmp_path / "lab.json"
    line = run_lab(capsys, "--out", str(out))[-1]
    record = json.loads(out.read_text())
    assert record["line"] == line, "the file holds the printed line"
    assert set(record["final"]) == {"td3bc", "dydiff", "m0"}, record["final"].keys()
    assert all(len(v) == 2 for v in record["final"].values()), "one final score per seed"
    for key in ("command", "commit", "seconds", "cpu", "config", "random_return", "expert_return"):
        assert key in record, f"results must record {key}"
    text = json.dumps({k: v for k, v in record.items() if k != "command"})
    assert not re.search(r"/(work|tmp|root|home)/", text), "no absolute path of this machine"


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--seeds", "x"], "--seeds"),
        (["--seeds", "3-1"], "--seeds"),
        (["--seeds", "0,0"], "--seeds"),
        (["--algos", "sac"], "--algos"),
        (["--keep-ratio", "0"], "keep_ratio"),
        (["--horizon", "101"], "horizon"),
        (["--denoiser", "unet", "--horizon", "30"], "horizon"),
        (["--iterations", "two"], "--iterations"),
        (["--threads", "0"], "--threads"),
        (["--no-such-flag"], "--no-such-flag"),
        (["--device", "nosuch"], "nosuch"),
        (["--out", "/proc/no/lab.json"], "/proc/no"),  # found before minutes of work
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(flags, words, capsys):
    with pytest.raises(SystemExit) as info:
        lab.main(flags)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert info.value.code == 2, f"exit code for {flags}: {info.value.code}"
    assert err.startswith("error: ") and "\n" not in err, f"one line for {flags}: {err!r}"
    assert words in err and captured.out == "", f"the error must name {words}: {err!r}"


def test_bad_input_from_the_command_line_has_no_traceback():
    cmd = [sys.executable, str(ROOT / "scripts" / "lab.py"), "--keep-ratio", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, f"exit code {done.returncode}: {done.stderr}"
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
