"""Make Hopper datasets locally with D4RL's recipe, as real Minari datasets.

Minari's own mujoco/hopper sets cannot be downloaded without a network, and they could not be
remade here in reasonable time (SAC trained for 1M-25M steps; their "medium" returns about 3,480,
far above D4RL's). D4RL's recipe can: train SAC online until the policy reaches the medium level,
then keep
* medium-replay: every transition that training saw, the random warm-up included (D4RL: "all
  samples in the replay buffer observed during training until the policy reaches the medium level");
* medium: N steps of that medium policy, its actions sampled as SAC samples them (D4RL: 1M samples
  of the medium policy).
SAC is Stable-Baselines3's (the library Minari's MuJoCo data was made with), with its defaults and
Minari's 10k random warm-up steps, on Gymnasium's Hopper-v5 (1,000 steps per episode).

The medium level: training stops at the first evaluation (every 5,000 steps, 10 episodes of the
deterministic policy) whose mean return reaches --target, 1,400 by default: D4RL's hopper-medium data
scores about 44 normalised, a return near 1,400. Reference returns: random = mean return of a
uniform policy over 100 episodes (as Minari measures it), expert = D4RL's Hopper expert, 3,234.3
(we train no expert).

SAC's path depends on the CPU (float sums differ, and the stop fires on one noisy evaluation), so
the medium-replay data of the results is to ship in data/ with its content hash (--export writes
it, with the SAC policy); where that file exists, this script and the driver install it, and
--remake trains SAC anew instead (other data on another CPU).

Saved under our own ids, never an official one: local/hopper/medium-replay-v0 and
local/hopper/medium-v0 (the SAC policy is kept beside the medium-replay data, so medium can be made
again from it). Safe when two runs start at once (the second waits, then uses the data) and when one
is interrupted (a dataset without its reference scores, written last, is made again).

    python scripts/mujoco_dataset.py [--level medium-replay] [--remake] [--seed 0] [--target 1400] [--medium-steps 1000000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import torch
from minari.data_collector import EpisodeBuffer
from minari.storage.datasets_root_dir import get_dataset_path
from minari.utils import RandomPolicy, get_average_reference_score
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script, too
from scripts.files import file_lock, one_line_errors  # noqa: E402
from scripts.pointmaze_dataset import check_local, save_dataset  # noqa: E402

ENV_ID = "Hopper-v5"
EXPERT_RETURN = 3234.3  # D4RL's Hopper reference (its expert policy); random is measured here
POLICY_FILE = "sac_policy.zip"  # in the medium-replay dataset's folder
SHIPPED = Path(__file__).resolve().parent.parent / "data" / "hopper-medium-replay-v0.npz"
# sha256 of that file: the data every Hopper result used (scripts/mujoco_dataset.py --export)
SHIPPED_SHA256 = "3f5443221b9649699ceeae56ba8236c074e616c1e56d6876795d657ee30ba408"
TASK_NAMES = {"medium-replay": "hopper-medium-replay", "medium": "hopper-medium-local"}  # driver's


def local_dataset_id(level: str) -> str:
    """local/hopper/medium-replay-v0 or local/hopper/medium-v0."""
    return f"local/hopper/{level}-v0"


def episodes_from(obs, actions, rewards, next_obs, terminated, truncated) -> list[EpisodeBuffer]:
    """Cut a stream of transitions into Minari episodes at each termination or truncation; an
    unfinished last episode ends in a truncation. Episode k has T actions and T + 1 observations."""
    ends = list(np.flatnonzero(terminated | truncated))
    if not ends or ends[-1] != len(actions) - 1:
        ends.append(len(actions) - 1)
    episodes, start = [], 0
    for end in ends:
        steps = slice(start, end + 1)
        cut = truncated[steps] | (np.arange(start, end + 1) == len(actions) - 1) & ~terminated[steps]
        episodes.append(EpisodeBuffer(
            observations=np.concatenate([obs[steps], next_obs[end : end + 1]]),
            actions=actions[steps].astype(np.float32), rewards=rewards[steps],
            terminations=terminated[steps], truncations=cut,
        ))  # fmt: skip
        start = end + 1
    return episodes


class StopAtTarget(BaseCallback):
    """Every eval_every steps: mean return of the deterministic policy over 10 episodes; stops the
    training when it reaches the target. Shows progress."""

    def __init__(self, target: float, eval_every: int, max_steps: int, seed: int):
        super().__init__()
        self.target, self.eval_every, self.seed = target, eval_every, seed
        self.env = gym.make(ENV_ID)
        self.bar = tqdm(total=max_steps, desc="SAC on Hopper-v5", mininterval=2, unit="step")
        self.returns: list[tuple[int, float]] = []  # (step, mean return)

    def _on_step(self) -> bool:
        self.bar.update(1)
        if self.num_timesteps % self.eval_every:
            return True
        returns = np.zeros(10)
        for k in range(10):
            obs, done = self.env.reset(seed=self.seed + 10_000 + k)[0], False
            while not done:
                action = self.model.predict(obs, deterministic=True)[0]
                obs, reward, terminated, truncated, _ = self.env.step(action)
                returns[k] += reward
                done = terminated or truncated
        self.returns.append((self.num_timesteps, returns.mean()))
        self.bar.set_postfix(eval_return=f"{returns.mean():.0f}")
        return returns.mean() < self.target


def make_medium_replay(dataset_id, seed, target, max_steps, eval_every, learning_starts, log=print):
    """Train SAC until its evaluation return reaches target (or max_steps), and save every
    transition it saw, and the policy. -> MinariDataset"""
    env = gym.make(ENV_ID)
    model = SAC("MlpPolicy", env, learning_starts=learning_starts, buffer_size=max_steps,
                seed=seed, device="cpu", verbose=0)  # fmt: skip
    stop = StopAtTarget(target, eval_every, max_steps, seed)
    model.learn(total_timesteps=max_steps, callback=stop)
    stop.bar.close()
    step, reached = stop.returns[-1] if stop.returns else (0, float("nan"))
    log(f"SAC stopped after {model.num_timesteps:,} steps; evaluation return {reached:.0f} at "
        f"{step:,} (target {target:.0f}{'' if reached >= target else ', NOT reached'})")  # fmt: skip
    buf, n = model.replay_buffer, model.replay_buffer.size()  # one env: rows are in time order
    done, timeout = buf.dones[:n, 0] > 0, buf.timeouts[:n, 0] > 0
    episodes = episodes_from(buf.observations[:n, 0], buf.actions[:n, 0], buf.rewards[:n, 0],
                             buf.next_observations[:n, 0], done & ~timeout, timeout)  # fmt: skip
    random = get_average_reference_score(gym.make(ENV_ID), RandomPolicy(env), 100)
    return save_with_scores(
        dataset_id, episodes, env, random, policy=model,
        algorithm_name="SB3 SAC, every transition until the medium level (local, D4RL's recipe)",
        description=f"Replay of SAC on {ENV_ID} until its evaluation return reached {target:.0f} "
        f"(reached {reached:.0f} at {step:,} steps) (seed {seed}, target {target:g}).",
    )


def make_medium(dataset_id, replay, n_steps, seed, log=print):
    """n_steps of the medium policy kept beside the medium-replay dataset `replay`, its actions
    sampled; the same reference returns. -> MinariDataset"""
    env = gym.make(ENV_ID)
    model = SAC.load(Path(get_dataset_path(replay.spec.dataset_id)) / POLICY_FILE, device="cpu")
    torch.manual_seed(seed)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    obs, next_obs = np.empty((n_steps, obs_dim)), np.empty((n_steps, obs_dim))
    actions, rewards = np.empty((n_steps, act_dim), np.float32), np.empty(n_steps)
    terminated, truncated = np.zeros(n_steps, bool), np.zeros(n_steps, bool)
    o = env.reset(seed=seed)[0]
    for t in tqdm(range(n_steps), desc=f"generating {dataset_id}", mininterval=2, unit="step"):
        obs[t], actions[t] = o, model.predict(o, deterministic=False)[0]
        o, rewards[t], terminated[t], truncated[t], _ = env.step(actions[t])
        next_obs[t] = o
        if terminated[t] or truncated[t]:
            o = env.reset()[0]
    episodes = episodes_from(obs, actions, rewards, next_obs, terminated, truncated)
    returns = [ep.rewards.sum() for ep in episodes]
    log(f"{len(episodes):,} episodes, mean return {np.mean(returns):.0f}")
    return save_with_scores(
        dataset_id, episodes, env, replay.storage.metadata["ref_min_score"], algorithm_name="SB3 SAC medium policy, sampled actions "
        "(local, D4RL's recipe)", description=f"{n_steps:,} steps of the policy at the end of "
        f"{local_dataset_id('medium-replay')} (seed {seed}).",
    )  # fmt: skip


def save_with_scores(dataset_id, episodes, env, random: float, policy=None, **meta):
    """Save with the reference returns (random: measured over 100 episodes by the caller; expert:
    D4RL's), and the policy in the dataset's folder before the reference returns, which mark a
    complete dataset."""
    here = "scripts/mujoco_dataset.py"
    dataset = save_dataset(dataset_id, episodes, env, env, author=here, code_permalink=here, **meta)
    if policy is not None:
        policy.save(Path(get_dataset_path(dataset_id)) / POLICY_FILE)
    dataset.storage.update_metadata({"ref_min_score": random, "ref_max_score": EXPERT_RETURN,
                                     "num_episodes_average_score": 100})  # fmt: skip
    return dataset


def export(dataset: minari.MinariDataset, path: Path) -> None:
    """Write a Hopper dataset's episodes, reference returns and description to a compressed .npz
    (never over an existing file), and its SAC policy beside it."""
    eps, meta = list(dataset.iterate_episodes()), dataset.storage.metadata
    arrays = {k: np.concatenate([getattr(e, k) for e in eps])
              for k in ("observations", "actions", "rewards", "terminations", "truncations")}  # fmt: skip
    arrays |= {"lengths": np.array([len(e.actions) for e in eps]),
               "ref_scores": np.array([meta["ref_min_score"], meta["ref_max_score"]]),
               "description": np.array(meta["description"])}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)  # data/ is not in a clone until it ships
    with open(path, "xb") as f:
        np.savez_compressed(f, **arrays)
    shutil.copyfile(Path(get_dataset_path(dataset.spec.dataset_id)) / POLICY_FILE,
                    path.with_suffix(".sac_policy.zip"))  # fmt: skip


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def import_shipped(dataset_id: str, path: Path) -> minari.MinariDataset:
    """The shipped file, checked against its content hash, saved as the Minari dataset dataset_id."""
    if (found := sha256(path)) != SHIPPED_SHA256:  # an OSError, as gzip's BadGzipFile
        raise OSError(f"{path.name} has sha256 {found[:12]}..., not the shipped data's")
    z = np.load(path)
    ends, obs_ends = np.cumsum(z["lengths"]), np.cumsum(z["lengths"] + 1)  # T + 1 observations
    episodes = [EpisodeBuffer(observations=o, actions=a, rewards=r, terminations=te, truncations=tr)
                for o, a, r, te, tr in zip(np.split(z["observations"], obs_ends[:-1]),
                                           *(np.split(z[k], ends[:-1]) for k in
                                             ("actions", "rewards", "terminations", "truncations")))]  # fmt: skip
    policy = SAC.load(path.with_suffix(".sac_policy.zip"), device="cpu")  # saved beside the data
    return save_with_scores(dataset_id, episodes, gym.make(ENV_ID), float(z["ref_scores"][0]),
                            policy, description=str(z["description"]), algorithm_name="SB3 SAC, "
                            "every transition until the medium level (local, D4RL's recipe)")  # fmt: skip


def install(dataset_id: str, log=print) -> minari.MinariDataset:
    """For the driver: a local Hopper set, medium-replay installed from data/ if it is missing;
    never made by SAC or rollouts here (an OSError says what to do, in one line)."""
    level = dataset_id.rsplit("/", 1)[1].removesuffix("-v0")  # medium-replay or medium
    try:
        return load_or_generate(level, make=False, log=log)
    except OSError as e:  # missing, or data/'s file changed
        raise OSError(f"{e}: python scripts/mujoco_dataset.py [--level medium]") from None


def load_or_generate(level: str, seed: int = 0, target: float = 1400.0, max_steps: int = 1_000_000,
                     eval_every: int = 5_000, learning_starts: int = 10_000,
                     medium_steps: int = 1_000_000, remake: bool = False, make: bool = True,
                     log=print) -> minari.MinariDataset:  # fmt: skip
    """The local dataset of `level` ("medium-replay" or "medium"), made first if it is missing or
    incomplete (medium needs medium-replay's policy, so medium-replay is made first): medium-replay
    from the shipped file unless `remake`; with make=False nothing is made but that import (else
    FileNotFoundError). One lock for both: a second process waits, then uses what the first made."""
    if level == "medium" and not make and check_local(local_dataset_id("medium"))[0] is None:
        raise FileNotFoundError(f"{local_dataset_id('medium')} is not made yet")
    replay_id, folder = local_dataset_id("medium-replay"), Path(get_dataset_path("local/hopper"))
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / "hopper.lock"):
        replay = check_local(replay_id)[0]
        if replay is None:
            shutil.rmtree(get_dataset_path(replay_id), ignore_errors=True)
            if SHIPPED.exists() and not remake:
                log(f"making {replay_id} from data/{SHIPPED.name} (the data of our results)")
                replay = import_shipped(replay_id, SHIPPED)
        if replay is None and not make:
            raise FileNotFoundError(f"{replay_id} is neither local nor in data/")
        if replay is None:
            log(f"making {replay_id}: SAC on {ENV_ID} until its evaluation return reaches {target:g}")
            replay = make_medium_replay(replay_id, seed, target, max_steps, eval_every,
                                        learning_starts, log)  # fmt: skip
        if level == "medium-replay":
            return replay
        medium_id = local_dataset_id("medium")
        medium = check_local(medium_id)[0]
        if medium is None:
            shutil.rmtree(get_dataset_path(medium_id), ignore_errors=True)
            log(f"making {medium_id}: {medium_steps:,} steps of the medium policy")
            medium = make_medium(medium_id, replay, medium_steps, seed, log)
        return medium


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    one_line_errors(parser)
    parser.add_argument("--level", choices=("medium-replay", "medium"), default="medium-replay",
                        help="medium-replay (what the results use) or also medium (+22 min)")
    parser.add_argument("--remake", action="store_true", help="train SAC anew, not data/'s file")
    parser.add_argument("--export", action="store_true", help="write medium-replay to data/")
    parser.add_argument("--seed", type=int, default=0, help="seed of SAC, the envs and the sampling")
    parser.add_argument("--target", type=float, default=1400.0, help="medium level: eval return")
    parser.add_argument("--max-steps", type=int, default=1_000_000, help="SAC steps at most")
    parser.add_argument("--eval-every", type=int, default=5_000, help="SAC steps per evaluation")
    parser.add_argument("--learning-starts", type=int, default=10_000, help="random warm-up steps")
    parser.add_argument("--medium-steps", type=int, default=1_000_000, help="steps of medium data")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    args = parser.parse_args(argv)
    for flag in ("seed", "max_steps", "eval_every", "learning_starts", "medium_steps", "threads"):
        low = 0 if flag == "seed" else 1
        if getattr(args, flag) < low:
            parser.error(f"--{flag.replace('_', '-')} must be at least {low}")
    torch.set_num_threads(args.threads)
    try:
        dataset = load_or_generate(args.level, args.seed, args.target, args.max_steps, args.eval_every,
                                   args.learning_starts, args.medium_steps, args.remake)  # fmt: skip
        if args.export:
            export(minari.load_dataset(local_dataset_id("medium-replay")), SHIPPED)
            print(f"wrote data/{SHIPPED.name}: sha256 {sha256(SHIPPED)}")
    except FileExistsError:
        parser.error(f"data/{SHIPPED.name} exists: delete it first to export another")
    except OSError as e:  # data/'s file changed, or a folder that cannot be written
        parser.error(f"{e}; git checkout data/, or --remake" if "sha256" in str(e) else
                     f"cannot write the datasets ({e}); set MINARI_DATASETS_PATH")  # fmt: skip

    except KeyboardInterrupt:
        print("interrupted: a dataset without its reference scores is made again next time",
              file=sys.stderr)  # fmt: skip
        return 130
    for level in ("medium-replay", "medium")[: 1 + (args.level == "medium")]:
        d = dataset if level == args.level else minari.load_dataset(local_dataset_id(level))
        meta = d.storage.metadata
        made = f"(seed {args.seed}" in meta["description"]
        print(f"{d.spec.dataset_id}: {d.total_episodes:,} episodes, {d.total_steps:,} steps; "
              f"{meta['description']}{'' if made else ' (made before, with other settings)'}")  # fmt: skip
        print(f"  train on it: python train_offline.py --env {TASK_NAMES[level]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
