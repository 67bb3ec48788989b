"""Tests of the score aggregation (benchmarks/scores.py), its statistics (benchmarks/stats.py,
cases worked by hand) and the relabelled-rollouts intervention (benchmarks/studies/relabelled_rollouts.py)."""

import json

import numpy as np
import pytest
import torch

import dydiff as D
from support import load_script

SC = load_script("scores", "benchmarks/scores.py")
ST = load_script("stats", "benchmarks/stats.py")


def test_paired_bootstrap_interval():
    d = np.array([3.0, 5.0, 4.0, 6.0, 2.0])
    lo, hi = SC.bootstrap_interval(d)
    assert lo < d.mean() < hi and d.min() <= lo and hi <= d.max()
    assert SC.bootstrap_interval(np.full(5, 2.0)) == [2.0, 2.0]
    wide = np.diff(SC.bootstrap_interval(np.random.default_rng(0).normal(0, 1, 5)))
    narrow = np.diff(SC.bootstrap_interval(np.random.default_rng(0).normal(0, 1, 50)))
    assert narrow < wide



def test_scores_aggregate_sample_std_and_paired_difference(tmp_path, monkeypatch):
    """results/<group>/<env>/*.json -> mean, SAMPLE std, mean of the last five evaluations, best, and
    the paired difference over the seeds both algorithms have; run folders stored relative to the repo;
    the minutes of the RL phase alone (not the data's)."""
    monkeypatch.setattr(SC, "ROOT", tmp_path)
    folder = tmp_path / "results" / "g" / "maze2d-umaze"
    for algo, finals in (("td3bc", [10.0, 20.0, 30.0]), ("dydiff", [15.0, 26.0, 30.0, 99.0])):
        for seed, final in enumerate(finals):
            run = tmp_path / "runs" / f"{algo}{seed}"
            run.mkdir(parents=True)
            (run / "summary.json").write_text(
                json.dumps(
                    {"algo": algo, "seed": seed, "final_score": final, "best_score": 2 * final,
                     "phase_seconds": {"data": 600, "rl": 60}}  # fmt: skip
                )
            )
            curve = [(u, final - 6 + u) for u in range(1, 7)]  # last five: final - 4 ... final
            with open(run / "metrics.csv", "w") as f:
                f.write("update,score\n" + "".join(f"{u},{s}\n" for u, s in curve))
            SC.collect(run, folder / f"{algo}_seed{seed}.json", algo)
    table = SC.aggregate("maze2d-umaze", "g", "td3bc")
    assert table["td3bc"]["final_std"] == pytest.approx(10.0)  # ddof=1 (population std: 8.16)
    assert table["td3bc"]["last5_mean"] == pytest.approx(18.0)
    assert table["td3bc"]["rl_minutes_per_run"] == 1.0  # 60 s of RL; the data's 600 s left out
    diff = table["dydiff"]["final_minus_td3bc"]
    assert diff["seeds"] == [0, 1, 2] and diff["mean"] == pytest.approx(11 / 3)  # seed 3 unpaired
    assert table["dydiff"]["best_minus_td3bc"]["mean"] == pytest.approx(22 / 3)  # best: 2 x final
    assert table["td3bc"]["mean_curve"] == [[u, pytest.approx(14 + u)] for u in range(1, 7)]
    record = json.loads((folder / "dydiff_seed0.json").read_text())
    assert record["run_dir"] == "runs/dydiff0"  # relative to the repository
    assert (tmp_path / "results" / "g_maze2d-umaze.json").exists()
    # runs of another group join a table under a new name, paired by seed, files left where they are
    other = SC.aggregate("maze2d-umaze", "empty", "td3bc", ("g/td3bc=td3bc", "g/dydiff=M=2"))
    assert set(other) == {"td3bc", "M=2"} and other["M=2"]["final_minus_td3bc"]["seeds"] == [0, 1, 2]
    assert other["M=2"]["final_per_seed"] == [15.0, 26.0, 30.0, 99.0]
    # a group with runs of its own takes another group's runs on its own seeds only (one table,
    # one set of seeds): a group of seeds 0 and 1 gets dydiff's seeds 0 and 1, not 2 and 3
    sub = tmp_path / "results" / "sub" / "maze2d-umaze"
    sub.mkdir(parents=True)
    for seed in (0, 1):
        (sub / f"td3bc_seed{seed}.json").write_text((folder / f"td3bc_seed{seed}.json").read_text())
    mixed = SC.aggregate("maze2d-umaze", "sub", "td3bc", ("g/dydiff=M=2",))
    assert mixed["M=2"]["seeds"] == [0, 1], mixed["M=2"]["seeds"]
    assert not (tmp_path / "results" / "empty" / "maze2d-umaze").exists()



def test_t_quantiles_match_the_printed_table():
    """Student's t(0.975, df) as in any table: 12.706 (df 1), 4.303 (2), 2.262 (9), 2.093 (19)."""
    for df, q in ((1, 12.706), (2, 4.303), (9, 2.262), (19, 2.093), (100, 1.984)):
        assert ST.t_quantile(0.975, df) == pytest.approx(q, abs=1e-3), df



def test_paired_statistics_worked_by_hand():
    """d = 1, 2, 3: mean 2, std 1, t-interval 2 +- 4.303 / sqrt(3) = [-0.484, 4.484]; of the 8 sign
    patterns only +++ and --- reach |sum| = 6, so p = 2/8; all three ahead. Five equal positive
    differences: p = 2/32, the least 5 seeds allow, so no verdict though both intervals are > 0.
    Ten: p = 2/1024 and both intervals > 0: '+'; the same negated: '-'. Past 20 seeds p is drawn."""
    s = ST.paired([1.0, 2.0, 3.0])
    assert s["mean"] == 2 and s["std"] == 1 and s["ahead"] == 3 and s["n"] == 3
    assert s["t_95"] == pytest.approx([2 - 4.3027 / 3**0.5, 2 + 4.3027 / 3**0.5], abs=1e-3)
    assert s["sign_flip_p"] == 0.25 and s["verdict"] is None
    assert ST.sign_flip_p([1.0, -1.0]) == 1.0  # every pattern reaches |sum| = 0
    assert ST.sign_flip_p([3.0, -1.0, 1.0]) == 0.75  # |+-3 +-1 +-1| is 5, 3, 3 or 1: 6 of 8 reach 3
    five = ST.paired([1.0, 1.1, 0.9, 1.2, 1.0])
    assert five["sign_flip_p"] == 0.0625 and five["bootstrap_95"][0] > 0 and five["t_95"][0] > 0
    assert five["verdict"] is None, "p < 0.05 is needed as well as both intervals"
    ten = np.arange(1.0, 11.0)
    assert ST.paired(ten)["sign_flip_p"] == pytest.approx(2 / 1024)
    assert ST.paired(ten)["verdict"] == "+" and ST.paired(-ten)["verdict"] == "-"
    assert ST.sign_flip_p(np.ones(25)) < 1e-3  # 100,000 random patterns



def test_verdict_follows_the_weakest_statistic():
    """The bootstrap interval excludes zero but the t-interval does not: not decided (the umaze
    seeds 0-9 case: bootstrap [-33.9, -3.8], t [-36.6, +0.3], p 0.066)."""
    base = {"bootstrap_95": [-33.9, -3.8], "t_95": [-36.6, 0.3], "sign_flip_p": 0.01}
    assert ST.verdict(base) is None
    assert ST.verdict(base | {"t_95": [-36.6, -0.3]}) == "-"
    assert ST.verdict(base | {"t_95": [-36.6, -0.3], "sign_flip_p": 0.066}) is None
    assert ST.verdict(base | {"bootstrap_95": [-33.9, 0.1], "t_95": [-36.6, -0.3]}) is None



def test_scores_aggregate_on_the_seeds_asked_for(tmp_path, monkeypatch, capsys):
    """--aggregate-only --seeds S...: every row on exactly those seeds, this group's runs and other
    groups' alike (seeds 0-1 from one group and 2-3 from another make one row of 4); the paired
    statistics and the verdict word printed."""
    monkeypatch.setattr(SC, "ROOT", tmp_path)
    for group, seeds in (("old", (0, 1)), ("new", (2, 3))):
        folder = tmp_path / "results" / group / "maze2d-umaze"
        folder.mkdir(parents=True)
        for label, base in (("a", 10.0), ("b", 20.0)):
            for seed in seeds:
                final = base + seed
                record = {"label": label, "seed": seed, "final_score": final, "best_score": final,
                          "curve": [[1, final]], "phase_seconds": {"rl": 60}}  # fmt: skip
                (folder / f"{label}_seed{seed}.json").write_text(json.dumps(record))
    SC.main(["--group", "new", "--baseline", "a", "--with-runs", "old/a", "old/b=b",
             "--seeds", "0", "1", "2", "3", "--aggregate-only"])  # fmt: skip (old/a: its own name)
    table = json.loads((tmp_path / "results" / "new_maze2d-umaze.json").read_text())
    assert table["a"]["seeds"] == table["b"]["seeds"] == [0, 1, 2, 3]
    d = table["b"]["final_minus_a"]
    assert d["mean"] == 10 and d["ahead"] == 4 and d["sign_flip_p"] == 0.125
    assert "b - a, final: +10.0, bootstrap [+10.0, +10.0], t [+10.0, +10.0], p 0.125, 4/4 ahead: " \
           "not decided" in capsys.readouterr().out
    SC.main(["--group", "new", "--baseline", "a", "--with-runs", "old/b=b", "--aggregate-only"])
    assert json.loads((tmp_path / "results" / "new_maze2d-umaze.json").read_text())["b"]["seeds"] \
        == [2, 3], "without --seeds: this group's seeds"
    SC.main(["--group", "new", "--baseline", "a", "--with-runs", "old/b=M=9", "--seeds", "0", "1",
             "--aggregate-only"])  # fmt: skip
    renamed = json.loads((tmp_path / "results" / "new_maze2d-umaze.json").read_text())
    assert renamed["M=9"]["seeds"] == [0, 1], "LABEL=NAME: old's b under a name holding '='"
    (tmp_path / "results" / "old" / "maze2d-umaze" / "M=2_seed0.json").write_text(json.dumps(
        {"label": "M=2", "seed": 0, "final_score": 7.0, "best_score": 7.0, "curve": [[1, 7.0]],
         "phase_seconds": {"rl": 60}}))  # fmt: skip
    SC.main(["--group", "new", "--baseline", "a", "--with-runs", "old/M=2=N", "--seeds", "0",
             "--aggregate-only"])  # fmt: skip
    row = json.loads((tmp_path / "results" / "new_maze2d-umaze.json").read_text())["N"]
    assert row["final_per_seed"] == [7.0], "LABEL=NAME, LABEL holding '=': old's M=2 as N"
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # a typo: one line, not a table without that row
        SC.main(["--group", "new", "--baseline", "a", "--with-runs", "old/bb", "--aggregate-only"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: --with-runs old/bb: no such label in results/old/maze2d-umaze/")



def test_scores_refuses_the_flags_it_sets_itself(monkeypatch, capsys):
    """--out, --resume, --seed and --algo (also abbreviated or with "=") would put a run where
    scores.py does not collect it, or give it another seed or algo than its table says: one line,
    exit 2, no run started. So do a flag train_offline.py does not know and --label for 2 algos."""
    started = []
    monkeypatch.setattr(SC, "run_one", lambda *a: started.append(a))
    cases = {("--out", "x"): "--out", ("--out=x",): "--out", ("--ou", "x"): "--out",
             ("--resume", "r"): "--resume", ("--seed", "3"): "--seed",
             ("--algo", "td3bc"): "--algo", ("--bogus",): "unrecognized arguments: --bogus",
             ("--label", "x"): "--label names"}  # fmt: skip
    for argv, start in cases.items():
        with pytest.raises(SystemExit) as e:
            SC.main(["--seeds", "0", *argv])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith(f"error: {start}") and err.count("\n") == 1
    assert started == []



def test_relabelled_rollouts_store_single_step_next_states():
    """The intervention keeps synthesise's states and actions (same seed) and replaces each next
    state by the single-step model's f(s, a) (one elite: deterministic), terminals following it."""
    RR = load_script("relabelled", "benchmarks/studies/relabelled_rollouts.py")
    cfg = D.Config(horizon=6, n_diffusion_steps=3, mlp_width=16, mlp_blocks=1, n_members=2,
                   n_elites=1, dynamics_hidden=8, reward_hidden=8, keep_ratio=0.5)  # fmt: skip
    dynamics, dm = D.build_dynamics(cfg, 3, 2), D.build_diffusion(cfg, 3, 2)
    reward = D.build_reward_model(cfg, 3, 2)
    policy = lambda s: torch.tanh(s[..., :2])  # noqa: E731
    fell = lambda s: s[:, 0] > 0.3  # noqa: E731
    s0 = torch.rand(8, 3) * 20 + 100
    torch.manual_seed(1)
    plain, _ = D.synthesise(s0, policy, dynamics, dm, reward, cfg, fell)
    torch.manual_seed(1)
    new, _ = RR.relabelled(D.synthesise)(s0, policy, dynamics, dm, reward, cfg, fell)
    for k in ("states", "actions", "rewards"):
        assert torch.equal(new[k], plain[k]), f"{k}: the rollout's, unchanged"
    assert torch.equal(new["next_states"], dynamics.predict(new["states"], new["actions"]))
    assert not torch.equal(new["next_states"], plain["next_states"])
    assert torch.equal(new["dones"], fell(new["next_states"]).float())



def test_scores_refuses_a_driver_that_is_not_there(capsys):
    with pytest.raises(SystemExit) as e:
        SC.main(["--seeds", "0", "--driver", "benchmarks/nothing.py"])
    assert e.value.code == 2 and capsys.readouterr().err == \
        "error: --driver benchmarks/nothing.py: no such script in the repository\n"
