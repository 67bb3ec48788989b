"""Tests of train_offline.py's command line end to end: every phase and file, same seed same
numbers with cached or rebuilt models, caches that follow the code, two runs at once, bad input
in one line, resume. They share one work folder (conftest.workdir) and are marked slow."""

import csv
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dydiff as D
import train_offline as T
from minari.storage.datasets_root_dir import get_dataset_path
from scripts import pointmaze_dataset as P
from scripts.files import content_hash
from support import HERE, rl_rows, run_dirs, run_main, subprocess_env

pytestmark = pytest.mark.slow

def test_smoke_cli_end_to_end(workdir):
    """The real command line, in a subprocess: every phase, every file, a score in the metrics."""
    cmd = [sys.executable, "train_offline.py", "--smoke", "--threads", "1",
           "--out", str(workdir / "runs"), "--cache", str(workdir / "cache")]  # fmt: skip
    out = subprocess.run(cmd, cwd=HERE, env=subprocess_env(workdir), capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "SMOKE RUN" in out.stdout and "normalised score final" in out.stdout
    for name in ("dynamics", "reward", "diffusion"):
        assert f"{name} model: trained" in out.stdout
    (run,) = run_dirs(workdir, "dydiff__0")
    for name in ("config.json", "metrics.csv", "summary.json", "checkpoint.pt",
                 "learning_curve.png", "trajectories.png"):  # fmt: skip
        assert (run / name).stat().st_size > 0, name
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["phase"] for r in rows][:3] == ["dynamics", "dynamics", "reward"]  # 2 epochs each
    assert {r["phase"] for r in rows} == {"dynamics", "reward", "diffusion", "rl"}
    assert all(float(r["holdout_mse"]) > 0 for r in rows if r["phase"] in ("dynamics", "reward"))
    scored = [r for r in rows if r["score"]]
    assert [int(r["update"]) for r in scored] == [150, 300]
    assert all(float(r["kept_trajectories"]) == round(0.6 * 64) for r in scored)
    assert all(
        np.isfinite(float(r["q_real"])) and np.isfinite(float(r["q_synthetic"])) for r in scored
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["updates"] == 300 and summary["final_score"] == float(scored[-1]["score"])
    assert summary["commit"] and not Path(summary["commit"].split("-")[0]).is_absolute()


def test_same_seed_same_numbers_with_cached_or_rebuilt_models(workdir, capsys):
    """Pretraining has its own random stream and the RL phase is reseeded: a run whose models come
    from the cache gives exactly the metrics of the run that trained them; so does a run whose
    cached arrays and diffusion model were corrupt (truncated) and are rebuilt, saying so."""
    assert run_main(workdir, "--smoke", "--seed", "11", cache="cache_fresh") == 0
    assert "diffusion model: trained" in capsys.readouterr().out
    assert run_main(workdir, "--smoke", "--seed", "11", cache="cache_fresh") == 0
    out = capsys.readouterr().out
    for name in ("dynamics", "reward", "diffusion"):
        assert f"{name} model: loaded from" in out
    cache = workdir / "cache_fresh"
    for path in [*cache.glob("*.npz"), *(cache / "models").glob("diffusion__*.pt")]:
        path.write_bytes(path.read_bytes()[:100])  # truncated
    assert run_main(workdir, "--smoke", "--seed", "11", cache="cache_fresh") == 0
    out = capsys.readouterr().out
    assert out.count("is corrupt") == 2 and "diffusion model: trained" in out
    first, cached, rebuilt = run_dirs(workdir, "dydiff__11")
    assert len(rl_rows(first)) > 0 and rl_rows(first) == rl_rows(cached) == rl_rows(rebuilt)


def test_learning_curve_shows_the_final_comparison_behind_the_run(workdir, monkeypatch, tmp_path):
    """learning_curve.png: the run's scores, and behind them the mean curves of every row of the
    task's final runs in results/ (scores.py's aggregate of the group dm_earns_its_place: M = 0,
    M = 2 and TD3+BC); an unreadable one is left out."""
    drawn = []
    monkeypatch.setattr(T, "save_figure", lambda fig, path: drawn.append(
        {line.get_label(): line.get_xydata().tolist() for line in fig.axes[0].lines}))
    assert run_main(workdir, "--smoke", "--algo", "td3bc", "--seed", "5") == 0
    final = HERE / "results" / "dm_earns_its_place_maze2d-umaze.json"
    table = json.loads(final.read_text())
    means = {k.split(":")[0]: v for k, v in drawn[0].items() if k.endswith(final.name)}
    assert means == {algo: row["mean_curve"] for algo, row in table.items()} and len(means) >= 2
    scores = [[float(r["update"]), float(r["score"])] for r in rl_rows(run_dirs(workdir, "td3bc__5")[-1])
              if r["score"]]  # fmt: skip
    assert drawn[0]["this run (td3bc)"] == scores
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / final.name).write_text('{"td3bc": {"mean_cu')
    monkeypatch.setattr(T, "__file__", str(tmp_path / "train_offline.py"))
    assert run_main(workdir, "--smoke", "--algo", "td3bc", "--seed", "5") == 0
    assert list(drawn[1]) == ["this run (td3bc)"]


def test_dydiff_and_td3bc_start_from_the_same_networks(workdir, monkeypatch):
    """A paired comparison: with the same --seed both algorithms build the same initial actor and
    critics, whatever pretraining drew from the random generator before."""
    made = []
    init = D.TD3BC.__init__

    def record(self, *a, **k):
        init(self, *a, **k)
        made.append(torch.cat([p.detach().flatten().clone() for p in
                               [*self.actor.parameters(), *self.q1.parameters()]]))  # fmt: skip

    monkeypatch.setattr(D.TD3BC, "__init__", record)
    for algo, seed in (("dydiff", "12"), ("td3bc", "12"), ("td3bc", "13")):
        argv = ("--smoke", "--algo", algo, "--seed", seed, "--updates", "10", "--eval-every", "10")
        assert run_main(workdir, *argv) == 0
    assert torch.equal(made[0], made[1]) and not torch.equal(made[1], made[2])


def copy_repo(dest: Path) -> Path:
    dest.mkdir()
    for name in ("dydiff.py", "train_offline.py"):
        (dest / name).write_text((HERE / name).read_text())
    (dest / "scripts").mkdir()
    for f in (HERE / "scripts").glob("*.py"):
        (dest / "scripts" / f.name).write_text(f.read_text())
    return dest


def test_cached_models_follow_the_code(workdir, tmp_path):
    """In a copy of the code: edit nothing and every model is loaded; edit the MLP denoiser and the
    diffusion model alone is retrained. (The smoke test's models, same code and settings, seed the
    cache; run alone, a first run trains them.)"""
    repo = copy_repo(tmp_path / "repo")
    (tmp_path / "cache").mkdir()
    if (workdir / "cache" / "models").exists():
        shutil.copytree(workdir / "cache" / "models", tmp_path / "cache" / "models")
    cmd = [sys.executable, "train_offline.py", "--smoke", "--updates", "10", "--eval-every", "10",
           "--threads", "1", "--out", str(tmp_path / "runs"), "--cache", str(tmp_path / "cache")]  # fmt: skip

    def run() -> str:
        out = subprocess.run(cmd, cwd=repo, env=subprocess_env(workdir), capture_output=True,
                             text=True, timeout=300)  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    if not (out := run()).count("model: loaded") == 3:
        assert "diffusion model: trained" in out
        out = run()
    assert all(f"{m} model: loaded" in out for m in ("dynamics", "reward", "diffusion"))
    source = (repo / "dydiff.py").read_text()
    edit = "        h = self.inp(x.flatten(1))\n"
    assert source.count(edit) == 1
    (repo / "dydiff.py").write_text(source.replace(edit, edit + "        h = h * 1.0  # an edit\n"))
    out = run()
    assert "diffusion model: trained" in out
    assert "dynamics model: loaded" in out and "reward model: loaded" in out


def test_two_runs_at_once_share_data_and_models(workdir, tmp_path):
    """Two first runs started together on an empty machine: one generates the dataset and trains
    each model, the other waits and reuses them; neither crashes."""
    env = subprocess_env(workdir, MINARI_DATASETS_PATH=str(tmp_path / "datasets"))
    cmd = [sys.executable, "train_offline.py", "--smoke", "--updates", "10", "--eval-every", "10",
           "--threads", "1", "--out", str(tmp_path / "runs"), "--cache", str(tmp_path / "cache")]  # fmt: skip
    procs = [subprocess.Popen(cmd + ["--seed", str(s)], cwd=HERE, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for s in (0, 1)]  # fmt: skip
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    both = "".join(outs)
    assert both.count("generating local/pointmaze/umaze-20000steps-v2 (20,000 steps)") == 1
    assert both.count("using locally generated") == 1
    for name in ("dynamics", "reward", "diffusion"):
        assert (
            both.count(f"{name} model: trained") == 1 and both.count(f"{name} model: loaded") == 1
        )
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--env", "nope"], "unknown env 'nope'; known: maze2d-umaze"),
        (["--denoiser", "unet", "--horizon", "30"], "horizon must be divisible by 4"),
        (["--keep-ratio", "0"], "keep_ratio must be in (0, 1]"),
        (["--real-ratio", "-0.1"], "real_ratio must be in [0, 1]"),
        (["--lr", "-0.001"], "lr must be > 0"),
        (["--gamma", "1.5"], "gamma must be in [0, 1)"),
        (["--tau", "2"], "tau must be in (0, 1]"),
        (["--ema-decay", "1"], "ema_decay must be in [0, 1)"),
        (["--temperature", "0"], "temperature must be > 0"),
        (["--updates", "0"], "updates must be positive"),
        (["--rollout-batch-size", "-4"], "rollout_batch_size must be positive"),
        (["--seed", "-1"], "--seed must be in [0, 2^32)"),
        (["--seed", "5000000000"], "--seed must be in [0, 2^32)"),
        (["--model-seed", "-2"], "--model-seed must be in [0, 2^32)"),
        (["--dataset-size", "0"], "--dataset-size must be in [1, 2^32)"),
        (
            ["--holdout-ratio", "0.00001"],
            "dynamics model: 20000 rows are too few for a holdout set",
        ),
        (["--env", "mujoco/hopper"], "unknown env 'mujoco/hopper'"),
        (["--env", "../victim-v0"], "unknown env '../victim-v0'"),
        (["--dataset-size", "5"], "--dataset-size must be in [horizon=8, 10,000,000]"),
        (["--eval-episodes", "-1"], "--eval-episodes must be in [1, 2^32)"),
        (["--horizon", "400"], "no episode is at least 400 steps long"),
        (["--device", "cuda:7"], "--device cuda:7"),
        (["--device", "tpu"], "--device tpu"),
        (["--resume", "/nonexistent/run"], "no checkpoint.pt of this version"),
        (["--predict-epsilon", "maybe"], "argument --predict-epsilon: invalid literal_eval value"),
        (["--unet-dim-mults", "1,x"], "argument --unet-dim-mults: invalid literal_eval value"),
        (["--updates", "1.5"], "argument --updates: invalid int value: '1.5'"),
        (["--unet-dim-mults", "4"], "unet_dim_mults must be a non-empty tuple of positive"),
        (["--dataset-size", "4000000000"], "--dataset-size must be in [horizon=8, 10,000,000]"),
    ],
)
def test_bad_input_gets_one_line_and_writes_nothing(workdir, capsys, argv, message):
    before = set((workdir / "runs").glob("*")) if (workdir / "runs").exists() else set()
    assert run_main(workdir, "--smoke", *argv) != 0
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert set((workdir / "runs").glob("*")) == before  # no run folder: nothing written


@pytest.mark.parametrize("flag", ["--out", "--cache"])
def test_unwritable_folder_is_one_line(workdir, capsys, tmp_path, flag):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    argv = ["--smoke", "--out", str(workdir / "runs"), "--cache", str(workdir / "cache")]
    argv[argv.index(flag) + 1] = str(blocker / "sub")
    with pytest.raises(SystemExit) as e:
        T.main(argv)
    err = capsys.readouterr().err
    assert (
        e.value.code != 0 and f"cannot write to {blocker / 'sub'}" in err and "Traceback" not in err
    )
    assert blocker.read_text() == "not a folder"


def test_truncated_local_dataset_is_regenerated(workdir, capsys):
    """A locally generated dataset whose HDF5 file was cut short is regenerated, and the run goes on."""
    argv = (
        "--smoke",
        "--algo",
        "td3bc",
        "--dataset-size",
        "3000",
        "--updates",
        "10",
        "--eval-every",
        "10",
    )
    assert run_main(workdir, *argv) == 0
    (h5,) = (get_dataset_path("local/pointmaze/umaze-3000steps-v2") / "data").glob("*.hdf5")
    h5.write_bytes(h5.read_bytes()[: h5.stat().st_size // 2])
    capsys.readouterr()
    assert run_main(workdir, *argv) == 0
    out = capsys.readouterr().out
    assert "unreadable" in out and "generating local/pointmaze/umaze-3000steps-v2" in out


def test_truncated_official_dataset_tells_what_to_do(workdir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    P.generate("umaze", "D4RL/pointmaze/umaze-v2", 2000, ref_episodes=2, log=lambda m: None)
    (h5,) = (get_dataset_path("D4RL/pointmaze/umaze-v2") / "data").glob("*.hdf5")
    h5.write_bytes(h5.read_bytes()[: h5.stat().st_size // 2])
    argv = ("--algo", "td3bc", "--updates", "10", "--eval-every", "10", "--eval-episodes", "1")
    assert run_main(workdir, *argv, cache="cache_official") != 0
    err = capsys.readouterr().err
    assert "error: dataset D4RL/pointmaze/umaze-v2 is unreadable" in err
    assert "minari delete D4RL/pointmaze/umaze-v2" in err and "Traceback" not in err
    assert h5.exists()  # the user's file is left for the user


def test_interrupt_then_resume_gives_the_uninterrupted_numbers(workdir, capsys, monkeypatch):
    """Ctrl-C keeps the checkpoint of the last evaluation (with every random generator) and exits
    130; --resume continues from it to exactly the metrics of a run never interrupted."""
    assert run_main(workdir, "--smoke", "--seed", "7") == 0
    (straight,) = run_dirs(workdir, "dydiff__7")
    real_evaluate, calls = T.evaluate, []

    def interrupted(*a, **k):  # Ctrl-C during the second evaluation (update 300)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*a, **k)

    monkeypatch.setattr(T, "evaluate", interrupted)
    assert run_main(workdir, "--smoke", "--seed", "7") == 130
    run = run_dirs(workdir, "dydiff__7")[-1]
    assert torch.load(run / "checkpoint.pt", weights_only=False)["trainer"]["updates"] == 150
    assert "--resume" in capsys.readouterr().out
    monkeypatch.setattr(T, "evaluate", real_evaluate)
    assert (
        run_main(workdir, "--resume", str(run), "--updates", "400") == 1
    )  # settings: checkpoint's
    assert "drop --updates" in capsys.readouterr().err
    assert run_main(workdir, "--resume", str(run)) == 0
    assert "resumed" in capsys.readouterr().out
    assert json.loads((run / "summary.json").read_text())["updates"] == 300
    assert rl_rows(run) == rl_rows(straight)  # every row, both evaluations included


def test_corrupt_checkpoint_is_one_line(workdir, capsys, tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert run_main(workdir, "--resume", str(tmp_path)) != 0
    err = capsys.readouterr().err
    assert "no checkpoint.pt of this version" in err and "Traceback" not in err


def test_a_run_names_its_model_files_and_resume_loads_exactly_those(workdir, capsys):
    """summary.json and the checkpoint name the model files; --resume (and every reader of runs)
    loads those, and says in one line when one is gone instead of training another."""
    argv = ("--smoke", "--seed", "24", "--updates", "20", "--eval-every", "10")
    assert run_main(workdir, *argv, cache="cache_files") == 0
    (run,) = run_dirs(workdir, "dydiff__24")
    files = json.loads((run / "summary.json").read_text())["model_files"]
    assert set(files) == {"dynamics", "reward", "diffusion"}
    assert all(Path(f).is_file() and Path(f).parent.parent == workdir / "cache_files"
               for f in files.values())  # fmt: skip
    assert T.read_run(run)["models"] == files
    capsys.readouterr()
    assert run_main(workdir, "--resume", str(run)) == 0  # a finished run: nothing left to do
    out = capsys.readouterr().out
    assert "model: trained" not in out and "model: loaded" not in out  # the run's own files
    Path(files["diffusion"]).unlink()
    assert run_main(workdir, "--resume", str(run)) == 1
    err = capsys.readouterr().err
    assert f"the diffusion model this run used, {files['diffusion']}, is gone" in err
    assert "Traceback" not in err and not Path(files["diffusion"]).exists()  # none trained


def test_resume_a_run_older_than_a_config_field_or_missing_a_part(workdir, capsys):
    """A student adds a Config field, then resumes an older run: the field takes its default and
    the run says so. A checkpoint that loads but lacks a part is one line, not a KeyError."""
    argv = ("--smoke", "--algo", "td3bc", "--seed", "22", "--updates", "20", "--eval-every", "10")
    assert run_main(workdir, *argv) == 0
    (run,) = run_dirs(workdir, "td3bc__22")
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    del ckpt["args"]["temperature"]  # the run predates the field
    torch.save(ckpt, run / "checkpoint.pt")
    capsys.readouterr()
    assert run_main(workdir, "--resume", str(run)) == 0
    assert "the run predates --temperature: default used" in capsys.readouterr().out
    del ckpt["trainer"]["synthetic"]
    torch.save(ckpt, run / "checkpoint.pt")
    assert run_main(workdir, "--resume", str(run)) == 1
    err = capsys.readouterr().err
    assert "the checkpoint does not fit this code (KeyError" in err and "Traceback" not in err


def test_real_ratio_one_trains_and_loads_no_model(workdir, capsys):
    """All-real batches never use a synthetic row: no model is trained, loaded or recorded."""
    argv = ("--smoke", "--seed", "23", "--real-ratio", "1", "--updates", "20", "--eval-every", "10")
    assert run_main(workdir, *argv, cache="cache_real") == 0
    out = capsys.readouterr().out
    assert "--real-ratio 1: every batch is real data, so no model is trained or used" in out
    assert "model:" not in out and not (workdir / "cache_real" / "models").exists()
    (run,) = run_dirs(workdir, "dydiff__23")
    assert json.loads((run / "summary.json").read_text())["model_files"] == {}


def test_observations_it_cannot_read_are_one_line(workdir, capsys, monkeypatch):
    """A Minari id whose observations are dicts (but not one of the three mazes) is refused in
    one line before any model is trained; here the maze data under a non-maze task."""
    argv = ("--smoke", "--algo", "td3bc", "--updates", "10", "--eval-every", "10")
    assert run_main(workdir, *argv) == 0  # makes the smoke maze set
    monkeypatch.setattr(T, "resolve_task", lambda name: T.Task("local/pointmaze/umaze-20000steps-v2"))
    capsys.readouterr()
    assert run_main(workdir, "--env", "some/dict-obs-v0", *argv) == 1
    err = capsys.readouterr().err
    assert "observations Dict(" in err and "are not flat vectors" in err and "Traceback" not in err


def test_nan_loss_stops_naming_the_phase(workdir, capsys, monkeypatch):
    monkeypatch.setattr(
        D.TD3BC, "update", lambda self, b: {"critic_loss": torch.tensor(float("nan"))}
    )
    assert run_main(workdir, "--smoke", "--algo", "td3bc", "--seed", "3") != 0
    err = capsys.readouterr().err
    assert "critic loss became nan" in err and "Traceback" not in err


def test_nan_in_pretraining_stops_naming_the_phase(workdir, capsys, monkeypatch):
    loss = D.GaussianDiffusion.loss
    monkeypatch.setattr(D.GaussianDiffusion, "loss", lambda *a: loss(*a) * float("nan"))
    assert run_main(workdir, "--smoke", "--seed", "4", "--dm-steps", "100") != 0
    err = capsys.readouterr().err
    assert "diffusion training loss became nan" in err and "Traceback" not in err


def test_help_lists_every_config_flag(workdir, capsys):
    assert run_main(workdir, "--help") == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(D.Config)[1:]:
        assert f"--{f.name.replace('_', '-')}" in out
    assert "fraction of trajectories kept by the reward filter" in out


def test_models_trained_with_other_threads_are_not_reused(workdir, capsys):
    """Thread counts change float sums: a model made with 2 threads is not one made with 1."""
    argv = ("--smoke", "--seed", "15", "--updates", "10", "--eval-every", "10")
    assert run_main(workdir, *argv, "--threads", "1", cache="cache_threads") == 0
    assert run_main(workdir, *argv, "--threads", "2", cache="cache_threads") == 0
    out = capsys.readouterr().out
    assert out.count("diffusion model: trained") == 2 and "1threads.pt has other threads" in out
    torch.set_num_threads(1)


def test_mistyped_env_deletes_nothing(workdir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    kept = tmp_path / "datasets" / "mujoco" / "hopper" / "medium-v0" / "data.txt"
    kept.parent.mkdir(parents=True)
    kept.write_text("a dataset")
    for env in ("mujoco/hopper", "mujoco/hopper/other-v0"):
        assert run_main(workdir, "--env", env, "--smoke", cache="cache_typo") != 0
    assert kept.read_text() == "a dataset" and "Traceback" not in capsys.readouterr().err


def test_a_failed_cache_write_is_one_line_and_keeps_the_dataset(workdir, tmp_path, capsys):
    argv = ("--smoke", "--algo", "td3bc", "--dataset-size", "3000", "--updates", "10",
            "--eval-every", "10")  # fmt: skip
    assert run_main(workdir, *argv, cache="cache_full") == 0
    (npz,) = (workdir / "cache_full").glob("*.npz")
    npz.unlink()
    npz.mkdir()  # the cache file cannot be written (as on a full disk)
    folder = get_dataset_path("local/pointmaze/umaze-3000steps-v2")
    before = sorted(p.stat().st_mtime_ns for p in folder.rglob("*"))
    capsys.readouterr()
    assert run_main(workdir, *argv, cache="cache_full") == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err and len(err.splitlines()) == 1
    assert sorted(p.stat().st_mtime_ns for p in folder.rglob("*")) == before  # not regenerated


def test_summary_records_every_setting_hashes_and_a_resumed_runs_first_command(
    workdir, capsys, monkeypatch
):
    """summary.json holds every Config value (M included), content hashes of the data and of each
    model's weights (equal files, equal hashes), and for a resumed run the command that started it."""
    real_evaluate, calls = T.evaluate, []

    def interrupted(*a, **k):  # Ctrl-C at the second evaluation
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*a, **k)

    monkeypatch.setattr(T, "evaluate", interrupted)
    argv = ("--smoke", "--seed", "25", "--iterations", "1", "--updates", "20", "--eval-every", "10")
    assert run_main(workdir, *argv, cache="cache_hashes") == 130
    (run,) = run_dirs(workdir, "dydiff__25")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(config | {"command": "the first command"}))
    monkeypatch.setattr(T, "evaluate", real_evaluate)
    assert run_main(workdir, "--resume", str(run)) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["command"] == "the first command" and summary["resumed_by"], summary["command"]
    assert summary["config"] == config["config"], "summary.json must hold every Config value"
    assert summary["config"]["iterations"] == 1
    assert set(summary["hashes"]) == {"data", "dynamics", "reward", "diffusion"}
    state = torch.load(summary["model_files"]["reward"], weights_only=False)["state"]
    assert summary["hashes"]["reward"] == content_hash(t.numpy() for t in state.values())
    capsys.readouterr()


def test_iterations_zero_trains_and_loads_no_diffusion_model(workdir, capsys):
    """M = 0 (the single-step model's rollouts only) never trains, loads or names a DM."""
    argv = ("--smoke", "--seed", "26", "--iterations", "0", "--updates", "10", "--eval-every", "10")
    assert run_main(workdir, *argv, cache="cache_m0") == 0
    out = capsys.readouterr().out
    assert "diffusion model: trained" not in out and "diffusion model: loaded" not in out, out
    assert not list((workdir / "cache_m0" / "models").glob("diffusion__*")), "a DM was cached"
    (run,) = run_dirs(workdir, "dydiff__26")
    summary = json.loads((run / "summary.json").read_text())
    assert "diffusion" not in summary["model_files"] and "diffusion" not in summary["hashes"]
