"""Train DyDiff+TD3BC (or plain TD3+BC) offline on a Minari dataset: the driver of dydiff.py.

    python train_offline.py --env maze2d-umaze [--algo dydiff|td3bc] [--seed 0] [--smoke]

A run: (1) the dataset as arrays (scripts/ regenerates mazes and installs data/'s Hopper set);
(2) for DyDiff, the dynamics, reward and diffusion models, each from cache/ if the same code, data,
settings and --model-seed made it; (3) TD3+BC, evaluated every eval_every updates. Outputs in
runs/<env>__<algo>__<seed>__<time>_*/ (docs/details.md).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import matplotlib
import minari
import numpy as np
import torch
from minari.storage.datasets_root_dir import get_dataset_path
from tqdm import tqdm

import dydiff
from scripts import pointmaze_dataset as pointmaze  # also registers the PointMaze envs
from scripts.files import atomic_write, data_hash, file_lock, fingerprint, git_commit
from scripts.files import one_line_errors, read_cached, weights_hash, write_csv
from scripts.lab import config_flags  # Config as flags: the lab keeps it (imports dydiff alone)

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt  # noqa: E402


COMMIT = git_commit()  # which code made a run's numbers (-dirty: edited since that commit)


class UserError(Exception):
    """A user mistake: main() prints it as one line, "error: ...", and exits 1."""


# ---- Tasks: name -> Minari dataset and per-task defaults -----------------------------------------
@dataclasses.dataclass(frozen=True)
class Task:
    dataset_id: str  # official Minari id
    maze: str | None = None  # "umaze" / "medium" / "large" for PointMaze data
    dense: bool = False  # dense maze reward exp(-distance)
    eval_episodes: int = 10  # episodes per evaluation
    # the dydiff.Config fields it sets over Config's (Hopper: 5,000 DM steps were too few, docs)
    settings: dict = dataclasses.field(default_factory=lambda: dict(updates=100_000, dm_steps=20_000))


TASKS = {  # Minari's MuJoCo sets are Gymnasium v5 data, NOT D4RL's hopper-medium-v2 and so on
    **{f"maze2d-{m}{d}": f"D4RL/pointmaze/{m}{d}-v2" for m in pointmaze.MAZES for d in ("", "-dense")},
    **{f"{r}-{lv}": f"mujoco/{r}/{lv}-v0" for r in ("hopper", "halfcheetah", "walker2d")
       for lv in ("simple", "medium", "expert")},
    "hopper-medium-replay": "local/hopper/medium-replay-v0",  # D4RL's recipe, made here by
    "hopper-medium-local": "local/hopper/medium-v0",  # scripts/mujoco_dataset.py: NOT Minari's
}  # fmt: skip


def resolve_task(name: str) -> Task:
    """A task name of TASKS or any Minari dataset id; a pointmaze id gets the maze defaults."""
    if name not in TASKS and not re.fullmatch(r"(\w[\w.-]*/)+\w[\w.-]*-v\d+", name):
        raise UserError(f"unknown env '{name}'; known: {', '.join(TASKS)} (or a Minari dataset id)")
    dataset_id = TASKS.get(name, name)
    maze = dataset_id.rsplit("/", 1)[-1].split("-")[0]
    if "pointmaze/" not in dataset_id or maze not in pointmaze.MAZES:
        return Task(dataset_id)
    updates = 50_000 if maze == "umaze" else 125_000  # larger mazes: docs/history.md
    return Task(dataset_id, maze, "-dense" in dataset_id, 50, dict(updates=updates, dm_steps=5_000))


# ---- Data ----------------------------------------------------------------------------------------
def load_dataset(task: Task, n_steps: int | None, log=print, regenerate=False):
    """The official Minari dataset if local; for mazes a local regeneration made before; else a
    download of the official one; else (mazes) a new local regeneration. -> MinariDataset"""
    local = task.maze and pointmaze.local_dataset_id(task.maze, task.dense, n_steps or 1_000_000)
    if n_steps is None and not regenerate:
        with contextlib.suppress(FileNotFoundError):
            return minari.load_dataset(task.dataset_id)
        if task.dataset_id.startswith("local/hopper/"):  # ours: data/ has medium-replay's file
            from scripts.mujoco_dataset import install  # (imports Stable-Baselines3)
            return install(task.dataset_id, log)  # never a 40-minute SAC run from here
        folder = Path(get_dataset_path(task.dataset_id))
        if not (local and get_dataset_path(local).exists() or folder.exists()):
            log(f"{task.dataset_id} is not local; trying to download it")
            try:
                minari.download_dataset(task.dataset_id)
                return minari.load_dataset(task.dataset_id)
            except Exception as e:  # no network (~30 s of retries), unknown id, ...
                log(f"download failed: {type(e).__name__}")
                shutil.rmtree(folder, ignore_errors=True)  # only what this download began
    if not local:  # only maze data can be made here
        raise UserError("--dataset-size only applies to maze tasks" if n_steps else f"dataset "
                        f"{task.dataset_id} is not local; `minari download` it where there is a network")  # fmt: skip
    return pointmaze.load_or_generate(task.maze, n_steps or 1_000_000, task.dense, log, regenerate)


def dataset_to_arrays(dataset: minari.MinariDataset, task: Task) -> dict[str, np.ndarray]:
    """Flat float32 transitions plus int64 episode_ids (an episode's rows are consecutive). Maze
    states are (x, y, vx, vy); the data's goal changes every episode but the state has no goal and
    evaluation one, so maze rewards are relabelled with what evaluation pays for the NEXT position,
    in expectation over its goal noise (pointmaze.maze_reward); departure 9: D4RL relabelled the
    current position, radius 0.5, a fixed goal, with goal-arrival terminals. Here terminals =
    terminations (truncations are time-outs)."""
    eps = list(dataset.iterate_episodes())
    obs = [np.asarray(e.observations["observation"] if task.maze else e.observations) for e in eps]
    data = {
        "observations": np.concatenate([o[:-1] for o in obs]),
        "actions": np.concatenate([e.actions for e in eps]),
        "rewards": np.concatenate([e.rewards for e in eps]),
        "next_observations": np.concatenate([o[1:] for o in obs]),
        "terminals": np.concatenate([e.terminations for e in eps]),
    }
    data = {k: v.astype(np.float32) for k, v in data.items()}
    data["episode_ids"] = np.repeat(np.arange(len(eps)), [len(e.rewards) for e in eps])
    if task.maze:
        env = make_eval_env(dataset)
        data["rewards"] = pointmaze.maze_reward(data["next_observations"][:, :2], env)
        env.close()
    return data


def load_data(task: Task, args, log=print) -> tuple[dict, str, minari.MinariDataset]:
    """The dataset, its arrays (cached as .npz under a key of the dataset's files and the code that
    reads them) and a hash of their content. Runs needing the same data take turns."""
    n_steps = args.dataset_size or (20_000 if args.smoke and task.maze else None)
    with file_lock(Path(args.cache) / f"{task.dataset_id.replace('/', '_')}.lock"):
        for again in (False, True):  # again: regenerate a local set that could not be read
            dataset = load_dataset(task, n_steps, log, regenerate=again)
            name = dataset.spec.dataset_id
            if not task.maze and len(getattr(dataset.observation_space, "shape", None) or ()) != 1:
                raise UserError(f"{name}: observations {dataset.observation_space} are not flat "
                                f"vectors (of dict observations only the 3 PointMaze mazes)")  # fmt: skip
            files = [(p.name, p.stat().st_size, p.stat().st_mtime_ns)
                     for p in sorted(Path(get_dataset_path(name)).rglob("*"))]  # fmt: skip
            key = fingerprint([dataset_to_arrays], None, name, files)
            path = Path(args.cache) / f"{name.replace('/', '_')}__{key}.npz"
            data = read_cached(path, lambda p: dict(np.load(p)), log)
            if data is None:
                try:
                    data = dataset_to_arrays(dataset, task)
                except (OSError, KeyError, ValueError) as e:  # e.g. a truncated HDF5 file
                    if not name.startswith("local/") or again:  # only the user can replace it
                        raise UserError(f"dataset {name} is unreadable ({type(e).__name__}: {e}); "
                                        f"delete it (`minari delete {name}`), get it again") from None  # fmt: skip
                    log(f"{name} is unreadable ({type(e).__name__}); regenerating it")
                    continue
                atomic_write(path, lambda tmp: np.savez(tmp.open("wb"), **data))
            return data, data_hash(data), dataset


def termination_fn(task: Task):
    """Done flags of synthetic next states [B, S] -> bool [B], MBPO's rules on (height, angle, ...);
    its hopper rule `np.abs(s[:, 1:] < 100)` misplaces a parenthesis. Mazes, halfcheetah: None."""
    if "hopper" in task.dataset_id:
        return lambda s: ~(torch.isfinite(s).all(-1) & (s[:, 1:].abs() < 100).all(-1)
                           & (s[:, 0] > 0.7) & (s[:, 1].abs() < 0.2))  # fmt: skip
    if "walker2d" in task.dataset_id:
        return lambda s: ~((s[:, 0] > 0.8) & (s[:, 0] < 2.0) & (s[:, 1] > -1) & (s[:, 1] < 1))
    return None


# ---- Evaluation ----------------------------------------------------------------------------------
EVAL_SEED = 10_000  # episode k of every evaluation is reset with EVAL_SEED + k


def make_eval_env(dataset: minari.MinariDataset):  # mazes: one goal cell, Minari's time limit
    return pointmaze.make_env(dataset.recover_environment(eval_env=True))


def evaluate(policy, dataset: minari.MinariDataset, n_episodes: int, seed: int) -> dict:
    """Mean return and normalised score over n_episodes of the dataset's eval env (episode k reset
    with seed + k); policy maps states [1, S] to actions [1, A]."""
    env, returns = make_eval_env(dataset), np.zeros(n_episodes)
    for k in range(n_episodes):
        obs, done = env.reset(seed=seed + k)[0], False
        while not done:
            state = obs["observation"] if isinstance(obs, dict) else obs  # mazes: (x, y, vx, vy)
            obs, reward, terminated, truncated, _ = env.step(policy(np.float32(state)[None])[0])
            returns[k] += reward
            done = terminated or truncated
    env.close()
    try:  # D4RL's score x100 (0: random policy, 100: expert) from the dataset's reference returns
        score = 100 * minari.get_normalized_score(dataset, returns).mean()
    except ValueError:  # no reference returns stored: the raw return is all there is
        score = np.nan
    return {"return": returns.mean(), "score": score}


# ---- Command line: fixed flags plus one flag per dydiff.Config field ------------------------------
THREADS = max(1, (os.cpu_count() or 2) // 2)  # half the cores: two runs share a machine (docs)
SMOKE = dict(updates=300, eval_every=150, horizon=8, rollout_batch_size=64, rollout_every=100,
             dm_steps=50, mlp_width=64, model_epoch_steps=20, model_max_epochs=2, unet_dim=8)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train DyDiff+TD3BC (or TD3+BC) on a Minari dataset.",
                                add_help=False)  # fmt: skip
    task_sets = {}
    one_line_errors(p, " (see --help)")  # one line, no usage
    p.add_argument("--env", default="maze2d-umaze", help="task (docs/details.md) or Minari dataset id")
    env = p.parse_known_args(argv)[0].env  # (--help is answered below, with this task's values)
    with contextlib.suppress(UserError):  # an unknown env is reported by train()
        task_sets = resolve_task(env).settings
    p.add_argument("-h", "--help", action="help", help="show this help (with --env X: X's values)")
    p.add_argument("--algo", choices=("dydiff", "td3bc"), default="dydiff")
    p.add_argument("--seed", type=int, default=0, help="seed of the RL phase")
    p.add_argument("--model-seed", type=int, default=0, help="seed of the pretrained models")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=THREADS, help="torch CPU threads (0: all cores)")
    p.add_argument("--dataset-size", type=int, help="generate a maze dataset of this many steps")
    p.add_argument("--eval-episodes", type=int, help="episodes per evaluation (default: task's)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes to check an install")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--out", default="runs", help="folder for run folders")
    p.add_argument("--cache", default="cache", help="folder for cached arrays and models")
    g = p.add_argument_group("DyDiff settings (dydiff.Config; defaults from the task table)")
    config_flags(g, lambda name, default: f"{task_sets[name]} for {env}; Config: {default}"
                 if name in task_sets else default, skip=("device",))  # (--device above)
    return p.parse_args(argv)


def make_config(args: argparse.Namespace, task: Task) -> dydiff.Config:
    """Config defaults <- task's row <- --smoke <- flags; all checked, folders tried, before work."""
    for flag, low in dict(dataset_size=1, eval_episodes=1, seed=0, model_seed=0, threads=0).items():
        if getattr(args, flag) is not None and not low <= getattr(args, flag) < 2**32:
            raise UserError(f"invalid setting: --{flag.replace('_', '-')} must be in [{low}, 2^32)")
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(dydiff.Config)[1:]}
    task_sets = {k: v for k, v in task.settings.items() if given[k] is None}
    values = task_sets | (SMOKE if args.smoke else {}) | {k: v for k, v in given.items() if v is not None}
    if over := [f"{k}={v:,} (Config: {getattr(dydiff.Config, k):,})" for k, v in task_sets.items()
                if v != getattr(dydiff.Config, k) and not (args.smoke and k in SMOKE)]:  # fmt: skip
        print(f"{args.env} sets {', '.join(over)}; its flag sets it again")
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = dydiff.Config(device=auto if args.device == "auto" else args.device, **values)
    try:
        torch.empty(0, device=cfg.device)
        dydiff.validate(cfg)
    except (RuntimeError, AssertionError) as e:  # no such device here
        raise UserError(f"--device {cfg.device}: {str(e).splitlines()[0]}") from None
    except ValueError as e:
        raise UserError(f"invalid setting: {e}") from None
    if args.dataset_size is not None and not cfg.horizon <= args.dataset_size <= 10_000_000:
        raise UserError(f"invalid setting: --dataset-size must be in [horizon={cfg.horizon}, "
                        f"10,000,000] (10x the official sets)")  # fmt: skip
    for folder in (args.out, args.cache):
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as e:
            raise UserError(f"cannot write to {folder}: {e.strerror or e}") from None
    return cfg


# ---- Pretraining: dynamics ensemble, reward model, diffusion model --------------------------------
MODELS = {  # name: (training function, builder of an untrained model of the same shape)
    "dynamics": (dydiff.train_dynamics, dydiff.build_dynamics),
    "reward": (dydiff.train_reward_model, dydiff.build_reward_model),
    "diffusion": (dydiff.train_diffusion, dydiff.build_diffusion),
}


def pretrain(data: dict, cfg: dydiff.Config, args, data_key: str, times: dict, names=tuple(MODELS)):
    """Each of `names` from cache/models/ if the same code, data, settings, --model-seed and threads
    (float sums) made it, else trained and cached (one run trains, others wait). -> models, curves, files"""
    models, curves, files = {}, [], {}
    for name, (fit, _) in ((name, MODELS[name]) for name in names):
        if name == "diffusion" and cfg.iterations == 0:  # M = 0: single-step rollouts only
            print("--iterations 0: no diffusion model is trained or used")
            continue
        start, curve = time.time(), []
        key = fingerprint([fit], cfg, data_key, args.model_seed, torch.__version__)
        path = Path(args.cache, "models", f"{name}__{key}__{torch.get_num_threads()}threads.pt")
        with file_lock(path.with_suffix(".lock")):
            if saved := load_model(name, path, cfg, data):
                models[name], curve = saved
                print(f"{name} model: loaded from {path}")
            else:
                if other := [p.name for p in path.parent.glob(f"{name}__{key}__*threads.pt")]:
                    print(f"{name} model: {', '.join(other)} has other threads: training anew")
                torch.manual_seed(args.model_seed)  # each model its own random stream
                total = cfg.dm_steps if name == "diffusion" else cfg.model_max_epochs
                with tqdm(total=total, desc=f"{name} model") as bar:

                    def log(step: int, metrics: dict) -> None:
                        bar.update(step - bar.n)
                        bar.set_postfix(metrics)
                        curve.append({"update": step, "phase": name} | metrics)

                    try:
                        models[name] = fit(data, cfg, log)
                    except ValueError as e:  # settings that do not fit the data
                        raise UserError(f"{name} model: {e}") from None
                state = {"state": models[name].state_dict(), "curve": curve}
                atomic_write(path, lambda tmp: torch.save(state, tmp))
                print(f"{name} model: trained, saved to {path}")
                times[name] = time.time() - start
        curves += curve
        files[name] = str(path)
    return models, curves, files


def load_model(name: str, path, cfg: dydiff.Config, data: dict):
    """(model, training curve) from a file of pretrain's, or None if it is missing or corrupt."""
    if (saved := read_cached(Path(path), lambda p: torch.load(p, map_location=cfg.device))) is None:
        return None
    model = MODELS[name][1](cfg, data["observations"].shape[1], data["actions"].shape[1])
    model.load_state_dict(saved["state"])
    return model, saved["curve"]


def read_run(run_dir) -> dict:
    """A run's checkpoint (--resume, benchmarks), settings it predates default ("defaulted")."""
    load = lambda p: torch.load(p, map_location="cpu", weights_only=False)  # noqa: E731
    ckpt = read_cached(Path(run_dir, "checkpoint.pt"), load, log=lambda m: None)
    if not isinstance(ckpt, dict) or {"args", "trainer", "rng", "rows", "times", "models"} - set(ckpt):
        raise UserError(f"{run_dir}: no checkpoint.pt of this version there")
    defaults = vars(parse_args([]))
    ckpt["defaulted"] = [k for k in defaults if k not in ckpt["args"]]
    ckpt["args"] = defaults | ckpt["args"]
    return ckpt


def run_models(ckpt: dict, cfg: dydiff.Config, data: dict) -> dict | None:
    """The very models a run used (the files its checkpoint names), or None for TD3+BC."""
    models = {}
    for name, path in ckpt["models"].items():
        if (saved := load_model(name, path, cfg, data)) is None:
            raise UserError(f"the {name} model this run used, {path}, is gone")
        models[name] = saved[0]
    return models or None


# ---- The run ---------------------------------------------------------------------------------------
def train(args: argparse.Namespace) -> None:
    ckpt = None
    if args.resume:  # every setting comes from the checkpoint (the device may change)
        ckpt = read_run(args.resume)
        defaults, ignored = vars(parse_args([])), ("resume", "device", "out", "cache")
        if given := [k for k, v in vars(args).items() if v != defaults[k] and k not in ignored]:
            flag = "--" + given[0].replace("_", "-")
            raise UserError(f"--resume takes every setting from the checkpoint: drop {flag}")
        if ckpt["defaulted"]:  # settings added to the code after the run started
            print(f"resume: the run predates --{', --'.join(ckpt['defaulted'])}: default used")
        device = ckpt["args"]["device"] if args.device == "auto" else args.device
        args = argparse.Namespace(**ckpt["args"] | {"resume": args.resume, "device": device})
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    task = resolve_task(args.env)
    cfg = make_config(args, task)
    times, start = {}, time.time()
    data, data_key, dataset = load_data(task, args)
    times["data"] = time.time() - start
    print(f"data: {dataset.spec.dataset_id}, {len(data['rewards']):,} transitions")
    try:  # dydiff.py's data contract: keys, shapes, finite values, actions in [-1, 1], ...
        dydiff.check_data(data)
    except ValueError as e:
        raise UserError(f"{dataset.spec.dataset_id}: {e}") from None
    models, rows, files = None, [], {}
    if args.algo == "dydiff" and cfg.real_ratio == 1:
        print("--real-ratio 1: every batch is real data, so no model is trained or used")
    elif args.algo == "dydiff" and ckpt is None:
        if len(dydiff.window_starts(data["episode_ids"], cfg.horizon)) == 0:
            raise UserError(f"invalid setting: no episode is at least {cfg.horizon} steps long")
        models, rows, files = pretrain(data, cfg, args, data_key, times)
    elif ckpt is not None:  # exactly the models the run started with
        models, files = run_models(ckpt, cfg, data), ckpt["models"]
    name = f"{args.env.replace('/', '_')}__{args.algo}__{args.seed}__{time.strftime('%m%d-%H%M')}_"
    run_dir = Path(args.resume or tempfile.mkdtemp(prefix=name, dir=args.out))  # a new folder
    # The RL phase's random stream depends on --seed alone: with cached or new models, DyDiff and
    # TD3+BC start from the same networks (a paired comparison).
    torch.manual_seed(args.seed)  # (the RL phase draws from torch's generators only)
    trainer = dydiff.DyDiffTrainer(cfg, data, models, termination_fn(task))
    if ckpt is not None:
        try:
            trainer.load_state_dict(ckpt["trainer"])
        except (KeyError, RuntimeError, ValueError) as e:  # a part missing or of another shape
            raise UserError(f"--resume {args.resume}: the checkpoint does not fit this code "
                            f"({type(e).__name__}: {str(e).splitlines()[0]})") from None  # fmt: skip
        torch.set_rng_state(ckpt["rng"]["torch"])
        if ckpt["rng"]["cuda"] is not None:  # every generator the RL phase draws from
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        rows, times = ckpt["rows"], ckpt["times"]
        print(f"resumed {run_dir} at update {trainer.updates:,}")
    else:
        config = json.dumps({"args": vars(args), "config": dataclasses.asdict(cfg),
                             "command": " ".join(sys.argv)}, indent=1)  # fmt: skip
        atomic_write(run_dir / "config.json", lambda tmp: tmp.write_text(config))

    n_eval = args.eval_episodes or (2 if args.smoke else task.eval_episodes)
    policy = lambda s: trainer.agent.act(torch.as_tensor(s, device=cfg.device)).cpu().numpy()  # noqa: E731
    bar = tqdm(total=cfg.updates, initial=trainer.updates, desc=f"{args.algo} updates")
    start = time.time() - times.get("rl", 0.0)

    def checkpoint() -> None:  # at evaluations only: a state from which a resumed run is exact
        times["rl"] = time.time() - start
        cuda = torch.cuda.get_rng_state_all() if cfg.device.startswith("cuda") else None
        rng = {"torch": torch.get_rng_state(), "cuda": cuda}
        state = {"args": vars(args), "trainer": trainer.state_dict(), "rng": rng, "rows": rows,
                 "times": times, "models": files}  # fmt: skip
        atomic_write(run_dir / "checkpoint.pt", lambda tmp: torch.save(state, tmp))
        actors = {k: getattr(trainer.agent, k).state_dict() for k in ("actor", "actor_target")}
        atomic_write(run_dir / "actors" / f"{trainer.updates}.pt", lambda t: torch.save(actors, t))
        write_csv(run_dir / "metrics.csv", rows)

    def log(update: int, metrics: dict) -> None:
        rows.append({"update": update, "phase": "rl", "time": round(time.time() - start)} | metrics)
        bar.update(update - bar.n)
        bar.set_postfix({k: f"{metrics[k]:.3g}" for k in ("critic_loss", "score") if k in metrics})
        if "score" in metrics:  # an evaluation: save what we have
            checkpoint()

    try:
        trainer.train(cfg.updates, lambda update: evaluate(policy, dataset, n_eval, EVAL_SEED), log)
    except KeyboardInterrupt:  # the checkpoint of the last evaluation stays as it is
        saved = (run_dir / "checkpoint.pt").exists()
        then = f"python train_offline.py --resume {run_dir}" if saved else "no evaluation yet"
        print(f"\ninterrupted at update {trainer.updates:,}; from the last evaluation: {then}")
        sys.exit(130)
    except FloatingPointError as e:  # the last good checkpoint stays in place
        raise FloatingPointError(f"{e} (last good checkpoint kept in {run_dir})") from None
    finally:
        bar.close()
    times["rl"] = time.time() - start
    finish(run_dir, args, task, rows, times, trainer, dataset, data, files, data_key)


def finish(run_dir, args, task, rows, times, trainer, dataset, data, files, data_key) -> None:
    """summary.json (with every setting, the original command of a resumed run, and hashes of the
    data and of each model's weights), the pictures and a one-screen summary."""
    evals = [r for r in rows if "score" in r]
    command = json.loads((run_dir / "config.json").read_text())["command"]  # resumed: the first
    hashes = {k: weights_hash(m) for k, m in (trainer.models or {}).items()} | {"data": data_key}
    scores = [r["score"] for r in evals if np.isfinite(r["score"])]  # NaN: no reference scores
    summary = {
        "env": args.env, "algo": args.algo, "seed": args.seed, "model_seed": args.model_seed,
        "updates": trainer.updates, "final_score": scores[-1] if scores else None,
        "best_score": max(scores, default=None), "final_return": evals[-1]["return"],
        "phase_seconds": {k: round(v, 1) for k, v in times.items()}, "smoke": args.smoke,
        "commit": COMMIT, "command": command, "resumed_by": args.resume and " ".join(sys.argv),
        "model_files": files, "hashes": hashes, "config": dataclasses.asdict(trainer.cfg),
    }  # fmt: skip
    atomic_write(run_dir / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
    fig, ax = plt.subplots(figsize=(6, 4))
    finals = sorted(Path(__file__).parent.glob(f"results/dm_earns_its_place_{args.env}.json"))
    for path in finals if scores else []:  # behind the run: our final runs of the task, if any
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):  # never fatal
            for algo, row in json.loads(path.read_text()).items():
                ax.plot(*zip(*row["mean_curve"]), lw=3, alpha=0.5, label=f"{algo}: mean of "
                        f"{len(row['seeds'])} seeds, results/{path.name}")  # fmt: skip
    ax.plot([r["update"] for r in evals], [r["score" if scores else "return"] for r in evals], "ko-",
            label=f"this run ({args.algo})")  # fmt: skip
    ax.set(xlabel="updates", ylabel="normalised score" if scores else "return", title=run_dir.name)
    ax.legend(fontsize=7)
    save_figure(fig, run_dir / "learning_curve.png")
    if task.maze and trainer.models:  # real windows beside DyDiff rollouts of the final policy
        save_figure(pointmaze.draw_rollouts(dataset, data, trainer), run_dir / "trajectories.png")
    result = f"final {scores[-1]:.1f}, best {max(scores):.1f}" if scores else "no reference scores"
    print(f"\n{args.algo} on {args.env}, seed {args.seed}, {trainer.updates:,} updates: normalised "
          f"score {result}" + ("\nSMOKE RUN: tiny sizes, this score means nothing" * args.smoke)
          + "\ntime: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
          + f"\nfiles: {run_dir}/ (metrics.csv, summary.json, learning_curve.png, checkpoint.pt)")  # fmt: skip


def save_figure(fig, path: Path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        train(args)
    except (UserError, FloatingPointError, OSError) as e:  # bad input, NaN loss, full disk...
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # before the RL phase: nothing half-written to save
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
