"""Tests of dydiff.py, one class per component; they run beside dydiff.py alone.

    python -m pytest -q test_dydiff.py                 # all of them
    python -m pytest -q test_dydiff.py -k TestTD3BC    # one component, in seconds

TestSettings (Config, validate), TestData (Normalizer, ReplayBuffer, sample_mixed, window_starts),
TestDiffusion (denoisers, the DDPM loss, sampling, inpainting, condition_mask, the EMA),
TestDynamicsAndReward (the ensemble, the reward model), TestTD3BC, TestRolloutAndFilter
(dydiff_rollout, clip_to_data, filter_trajectories, synthesise), TestTraining (train_*,
fit_with_holdout, DyDiffTrainer: the whole loop).

A component's tests stub what it calls, so a function left blank elsewhere fails only its own
component's tests and TestTraining's. Expected values come from properties or are worked out by
hand, never from a second implementation, so a teacher can blank a function
(scripts/make_assignment.py) and these tests grade a student's version. Where units matter the
data is far from unit scale (x 20 + 100); rules for all inputs are hypothesis properties, with
derandomize=True so every run tries the same examples. Imports: torch, numpy, pytest, hypothesis,
the standard library and dydiff only. The driver's, the scripts' and the benchmarks' tests are in
tests/. CPU only, tiny models and data.
"""

import copy
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import dydiff as D

torch.set_num_threads(1)

HERE = Path(__file__).resolve().parent
S_DIM, A_DIM = 2, 1
A_MAT = np.array([[0.9, 0.2], [-0.2, 0.9]], np.float32)  # contractive rotation: states stay bounded
B_MAT = np.array([[0.5], [0.3]], np.float32)


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)
    np.random.seed(0)


def tiny_cfg(**kw) -> D.Config:
    """Small settings for fast tests (TestSettings checks that validate() accepts them)."""
    base = dict(
        updates=10, eval_every=10, horizon=8, iterations=1, rollout_batch_size=16,
        rollout_every=4, synthetic_capacity=500, n_diffusion_steps=10, mlp_width=64,
        mlp_blocks=2, unet_dim=8, unet_dim_mults=(1, 2), dm_steps=5, dm_batch_size=16,
        ema_decay=0.9, n_members=3, n_elites=2, dynamics_hidden=32, reward_hidden=32,
        model_batch_size=32, model_epoch_steps=5, model_max_epochs=2, batch_size=32,
    )  # fmt: skip
    return D.Config(**(base | kw))


def linear_data(n_episodes=20, ep_len=40, noise=0.01, seed=0, terminal_every=None):
    """Episodes of s' = A s + B a + noise with uniform random actions; reward = -||s'||."""
    rng = np.random.default_rng(seed)
    obs, act, nxt, ids = [], [], [], []
    for e in range(n_episodes):
        s = rng.uniform(-1, 1, S_DIM).astype(np.float32)
        for _ in range(ep_len):
            a = rng.uniform(-1, 1, A_DIM).astype(np.float32)
            s2 = A_MAT @ s + B_MAT @ a + noise * rng.standard_normal(S_DIM).astype(np.float32)
            obs.append(s), act.append(a), nxt.append(s2), ids.append(e)
            s = s2
    obs, act, nxt = (np.asarray(x, np.float32) for x in (obs, act, nxt))
    return {
        "observations": obs,
        "actions": act,
        "next_observations": nxt,
        "rewards": -np.linalg.norm(nxt, axis=1).astype(np.float32),
        "terminals": np.zeros(len(obs), np.float32),
        "episode_ids": np.asarray(ids, np.int64),
    }


def limits(lo: list, hi: list) -> D.Normalizer:
    """A limits normaliser set by hand: [lo, hi] -> [-1, 1] per dimension."""
    norm = D.Normalizer(len(lo))
    lo, hi = torch.tensor(lo), torch.tensor(hi)
    norm.shift.copy_((hi + lo) / 2)
    norm.scale.copy_((hi - lo) / 2)
    return norm


class Recorder(nn.Module):
    """Wraps a denoiser and records every input (x, t) it is given."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.inputs, self.steps = net, [], []

    def forward(self, x, t):
        self.inputs.append(x.detach().clone())
        self.steps.append(t.detach().clone())
        return self.net(x, t)


def make_denoiser(kind: str, horizon: int, d: int) -> nn.Module:
    if kind == "mlp":
        return D.MLPDenoiser(horizon, d, width=32, n_blocks=1)
    return D.TemporalUnet(horizon, d, dim=8, dim_mults=(1, 2))


def random_mask(h: int, d: int) -> torch.Tensor:
    mask = torch.rand(h, d) < 0.5
    mask[0, 0], mask[-1, -1] = True, False  # both kinds present
    return mask


class Fn(nn.Module):
    """A stub network given by a function, plus one scalar parameter w added to its output (so
    optimisers, gradients and soft updates have something to act on)."""

    def __init__(self, fn, w: float = 0.0):
        super().__init__()
        self.fn, self.w = fn, nn.Parameter(torch.tensor(w))

    def forward(self, x):
        return self.fn(x) + self.w


def fit(model, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float = 3e-3, batch: int = 64):
    """A plain Adam loop for an ensemble's .loss on [E, B, .] (fit_with_holdout stays untouched)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(len(x), (model.net.n_members, batch))
        loss = model.loss(x[idx], y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


class TestSettings:
    """Config and validate(): every setting checked by its meaning, one line per refusal."""

    def test_default_config_is_valid(self):
        D.validate(D.Config())
        D.validate(D.Config(denoiser="unet"))

    def test_the_tests_small_settings_are_valid(self):
        for changes in ({}, dict(denoiser="unet"), dict(filter="softmax", iterations=0)):
            D.validate(tiny_cfg(**changes))

    @pytest.mark.parametrize(
        "changes, message",
        [
            (dict(denoiser="unet", horizon=30, unet_dim_mults=(1, 2, 4)),
             "horizon must be divisible"),
            (dict(denoiser="unet", horizon=6, unet_dim_mults=(1, 2, 4, 8)),
             "horizon must be divisible"),
            (dict(denoiser="unet", unet_dim=12), "unet_dim must be a multiple of 8"),
            (dict(keep_ratio=0.0), "keep_ratio must be in (0, 1]"),
            (dict(keep_ratio=1.5), "keep_ratio must be in (0, 1]"),
            (dict(tau=1.5), "tau must be in (0, 1]"),
            (dict(real_ratio=-0.1), "real_ratio must be in [0, 1]"),
            (dict(real_ratio=1.1), "real_ratio must be in [0, 1]"),
            (dict(holdout_ratio=0.0), "holdout_ratio must be in (0, 1)"),
            (dict(gamma=1.0), "gamma must be in [0, 1)"),
            (dict(gamma=1.2), "gamma must be in [0, 1)"),
            (dict(ema_decay=1.0), "ema_decay must be in [0, 1)"),
            (dict(lr=-3e-4), "lr must be > 0"),
            (dict(dm_lr=0.0), "dm_lr must be > 0"),
            (dict(temperature=0.0), "temperature must be > 0"),
            (dict(policy_noise=-0.1), "policy_noise must be >= 0"),
            (dict(alpha=-1.0), "alpha must be >= 0"),
            (dict(horizon=1), "horizon must be at least 2"),
            (dict(iterations=-1), "iterations must be >= 0"),
            (dict(n_elites=8, n_members=7), "n_elites must be at most n_members=7"),
            (dict(filter="topk"), "filter must be 'hardmax' or 'softmax'"),
            (dict(denoiser="transformer"), "denoiser must be 'mlp' or 'unet'"),
            (dict(unet_dim_mults=(1, 0)), "unet_dim_mults must be a non-empty tuple of positive"),
            (dict(unet_dim_mults=4), "unet_dim_mults must be a non-empty tuple of positive"),
            (dict(unet_dim_mults=()), "unet_dim_mults must be a non-empty tuple of positive"),
        ],
    )  # fmt: skip
    def test_config_validate_rejects(self, changes, message):
        with pytest.raises(ValueError) as e:
            D.validate(D.Config(**changes))
        assert message in str(e.value) and "\n" not in str(e.value), (
            f"validate({changes}) must raise one line containing {message!r}, got {e.value}"
        )

    @pytest.mark.parametrize(
        "name", [f.name for f in dataclasses.fields(D.Config) if type(f.default) in (int, float)]
    )
    def test_every_number_in_config_is_checked(self, name):
        """No numeric setting takes nonsense silently: a NaN and a negative value are refused."""
        for bad in (float("nan"), -1):
            with pytest.raises(ValueError, match=name):
                D.validate(D.Config(**{name: bad}))

    @pytest.mark.parametrize(
        "changes",
        [
            dict(keep_ratio=1.0),
            dict(real_ratio=0.0),
            dict(real_ratio=1.0),
            dict(iterations=0),
            dict(horizon=2),
            dict(gamma=0.0, ema_decay=0.0, tau=1.0, alpha=0.0, policy_noise=0.0),
            dict(denoiser="unet", horizon=8, unet_dim_mults=(1, 2, 4, 8)),
        ],
    )
    def test_config_validate_accepts_edges(self, changes):
        D.validate(D.Config(**changes))

    def test_imports_without_gymnasium_and_minari(self):
        code = """
import importlib.abc, sys
BLOCKED = ("gymnasium", "minari", "gymnasium_robotics")
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked: {name}")
        return None
for m in [m for m in sys.modules if m.split(".")[0] in BLOCKED]:
    del sys.modules[m]
sys.meta_path.insert(0, Blocker())
for name in BLOCKED:
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"the blocker did not block {name}")
import dydiff
assert not any(m.split(".")[0] in BLOCKED for m in sys.modules)
dydiff.validate(dydiff.Config())
print("ok")
"""
        env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-c", code]
        res = subprocess.run(command, cwd=HERE, capture_output=True, text=True, timeout=60, env=env)
        assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def rows_with_reward(values, s_dim=2, a_dim=1):
    r = torch.as_tensor(values, dtype=torch.float32)
    n = len(r)
    return {
        "states": torch.randn(n, s_dim),
        "actions": torch.randn(n, a_dim),
        "rewards": r,
        "next_states": torch.randn(n, s_dim),
        "dones": torch.zeros(n),
    }


def contract_data(n_episodes=3, ep_len=10, s_dim=3, a_dim=2, seed=0) -> dict:
    """Data that keeps the contract: episodes of consecutive rows, float32, actions in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = n_episodes * ep_len
    obs = rng.standard_normal((n, s_dim)).astype(np.float32)
    return {
        "observations": obs,
        "actions": rng.uniform(-1, 1, (n, a_dim)).astype(np.float32),
        "rewards": rng.standard_normal(n).astype(np.float32),
        "next_observations": obs + 0.1,
        "terminals": (np.arange(n) % ep_len == ep_len - 1).astype(np.float32),
        "episode_ids": np.repeat(np.arange(n_episodes), ep_len).astype(np.int64),
    }


def breakers():
    """(name, key the error must name, change to contract_data()) for each broken rule."""
    nan_obs = lambda d: d["observations"].__setitem__((4, 1), np.nan)  # noqa: E731
    return [
        ("rewards [N, 1]", "rewards", lambda d: d.update(rewards=d["rewards"][:, None])),
        ("missing terminals", "terminals", lambda d: d.pop("terminals")),
        ("missing episode_ids", "episode_ids", lambda d: d.pop("episode_ids")),
        ("observations [N]", "observations", lambda d: d.update(observations=d["rewards"])),
        ("next states of another size", "next_observations",
         lambda d: d.update(next_observations=d["next_observations"][:, :2])),
        ("one action short", "actions", lambda d: d.update(actions=d["actions"][:-1])),
        ("action 1.5", "actions", lambda d: d["actions"].__setitem__((2, 0), 1.5)),
        ("action -1.01", "actions", lambda d: d["actions"].__setitem__((7, 1), -1.01)),
        ("NaN observation", "observations", nan_obs),
        ("infinite reward", "rewards", lambda d: d["rewards"].__setitem__(3, np.inf)),
        ("terminal 0.5", "terminals", lambda d: d["terminals"].__setitem__(0, 0.5)),
        ("terminal 2", "terminals", lambda d: d["terminals"].__setitem__(0, 2)),
        ("integer actions", "actions", lambda d: d.update(actions=d["actions"].astype(np.int64))),
        ("float episode ids", "episode_ids",
         lambda d: d.update(episode_ids=d["episode_ids"].astype(np.float32))),
        ("episode 0 split in two", "episode_ids",
         lambda d: d["episode_ids"].__setitem__(slice(12, 14), 0)),
        ("no rows", "observations", lambda d: d.update({k: v[:0] for k, v in d.items()})),
    ]  # fmt: skip


class TestData:
    """Normalizer, ReplayBuffer, sample_mixed and window_starts."""

    @pytest.mark.parametrize("horizon", [1, 3, 8])
    def test_window_starts(self, horizon):
        rng = np.random.default_rng(3)
        lengths = rng.integers(1, 15, size=30)
        lengths[:3] = [horizon, horizon - 1 if horizon > 1 else 1, 1]
        ids = np.repeat(np.arange(len(lengths)), lengths)
        starts = D.window_starts(ids, horizon)
        brute = [i for i in range(len(ids) - horizon + 1) if len(set(ids[i : i + horizon])) == 1]
        assert list(starts) == brute, (
            f"a window of {horizon} rows starts at i when rows i..i+{horizon - 1} share an "
            f"episode: expected {len(brute)} starts, got {len(starts)}; first differing: "
            f"{next((a, b) for a, b in zip([*starts, None], [*brute, None]) if a != b)}"
        )
        expected = sum(max(0, n - horizon + 1) for n in lengths)
        assert len(starts) == expected, f"one window per start: {len(starts)} != {expected}"

    def test_window_starts_short_data(self):
        assert len(D.window_starts(np.zeros(3, np.int64), 4)) == 0, "3 rows hold no 4-row window"
        assert D.window_starts(np.zeros(4, np.int64), 4).tolist() == [0], "4 rows: one window"

    def test_replay_buffer_fifo(self):
        buf = D.ReplayBuffer(2, 1, capacity=10, device="cpu")
        first = rows_with_reward(range(7))
        buf.add(first)
        assert buf.size == 7, f"7 rows added: size {buf.size}"
        assert torch.equal(buf.data["states"][:7], first["states"])
        assert torch.equal(buf.data["actions"][:7], first["actions"])
        buf.add(rows_with_reward(range(7, 13)))
        kept = sorted(buf.data["rewards"][:, 0].tolist())
        assert buf.size == 10 and kept == list(range(3, 13)), (
            f"FIFO, capacity 10: after rows 0-12 the buffer holds rows 3-12, got {kept}"
        )
        buf.add(rows_with_reward(range(100, 125)))  # larger than the buffer: its newest rows stay
        kept = sorted(buf.data["rewards"][:, 0].tolist())
        assert kept == list(range(115, 125)), f"a batch of 25 into 10 rows keeps its last: {kept}"
        assert set(buf.sample(500)["rewards"][:, 0].tolist()) <= set(range(115, 125))
        # round trip
        other = D.ReplayBuffer(2, 1, capacity=10, device="cpu")
        other.load_state_dict(buf.state_dict())
        assert all(torch.equal(other.data[k], buf.data[k]) for k in buf.data)
        assert (other.size, other.pos) == (buf.size, buf.pos)

    def test_replay_buffer_sample_only_filled_rows(self):
        buf = D.ReplayBuffer(2, 1, capacity=100, device="cpu")
        buf.add(rows_with_reward([5.0, 6.0, 7.0]))
        drawn = set(buf.sample(300)["rewards"][:, 0].tolist())
        assert drawn == {5.0, 6.0, 7.0}, f"3 of 100 rows filled: samples only those, got {drawn}"

    @pytest.mark.parametrize("n,ratio", [(32, 0.6), (50, 0.25), (32, 1.0), (32, 0.0)])
    def test_sample_mixed(self, n, ratio):
        real = D.ReplayBuffer(2, 1, 1000, "cpu")
        real.add(rows_with_reward(np.ones(200)))
        synthetic = D.ReplayBuffer(2, 1, 1000, "cpu")
        synthetic.add(rows_with_reward(-np.ones(n - 1)))
        batch = D.sample_mixed(real, synthetic, n, ratio)  # warm-up: all real
        n_real = int((batch["rewards"] == 1).sum())
        assert len(batch["rewards"]) == n and n_real == n, (
            f"warm-up: all {n} rows real while the synthetic buffer holds less than a batch "
            f"({n - 1} rows), got {n_real} real"
        )
        synthetic.add(rows_with_reward(-np.ones(1)))  # now exactly one batch worth
        batch = D.sample_mixed(real, synthetic, n, ratio)
        n_real, n_syn = int((batch["rewards"] == 1).sum()), int((batch["rewards"] == -1).sum())
        assert (n_real, n_syn) == (round(n * ratio), n - round(n * ratio)), (
            f"real_ratio {ratio} of a batch of {n}: {round(n * ratio)} real rows and the rest "
            f"synthetic, got {n_real} real and {n_syn} synthetic"
        )

    def test_normalizers_round_trip(self):
        x = torch.randn(100, 3) * torch.tensor([1.0, 10.0, 0.1]) + 5
        lim = D.Normalizer(3).fit_limits(x)
        y = lim(x)
        assert torch.allclose(y.min(0).values, -torch.ones(3), atol=1e-5), "limits: min -> -1"
        assert torch.allclose(y.max(0).values, torch.ones(3), atol=1e-5), "limits: max -> +1"
        assert torch.allclose(lim.unnormalize(y), x, atol=1e-4), "unnormalize inverts"
        z = D.Normalizer(3).fit_zscore(x)(x)
        assert torch.allclose(z.mean(0), torch.zeros(3), atol=1e-4), "z-score: mean 0"
        assert torch.allclose(z.std(0), torch.ones(3), atol=2e-2), "z-score: std 1"


    @settings(derandomize=True, max_examples=40, deadline=None)
    @given(lengths=st.lists(st.integers(1, 12), min_size=1, max_size=8),
           horizon=st.integers(1, 9), first_id=st.integers(-5, 5))  # fmt: skip
    def test_window_starts_property(self, lengths, horizon, first_id):
        """For any episode lengths and horizon: the starts are exactly the rows i where rows
        i .. i + horizon - 1 lie in one episode, ascending, int64 (ids need not start at 0)."""
        ids = np.repeat(first_id + 3 * np.arange(len(lengths)), lengths)
        starts = D.window_starts(ids, horizon)
        brute = [i for i in range(len(ids) - horizon + 1) if len(set(ids[i : i + horizon])) == 1]
        assert starts.dtype == np.int64, f"window starts are int64 row indices: {starts.dtype}"
        assert starts.tolist() == brute, (
            f"window rule: episode lengths {lengths}, horizon {horizon}: starts {brute}, got "
            f"{starts.tolist()}"
        )

    @settings(derandomize=True, max_examples=30, deadline=None)
    @given(capacity=st.integers(1, 12), sizes=st.lists(st.integers(1, 15), min_size=1, max_size=5),
           column=st.booleans())  # fmt: skip
    def test_replay_buffer_fifo_property(self, capacity, sizes, column):
        """For any capacity and batch sizes: after each add the buffer holds the newest
        min(rows added, capacity) rows, each transition whole (its states, actions, rewards, next
        states and dones stay together); rewards may be [n] or [n, 1]."""
        buf, total = D.ReplayBuffer(2, 1, capacity=capacity, device="cpu"), 0
        for n in sizes:
            ids = torch.arange(total, total + n, dtype=torch.float32)
            buf.add(dict(states=torch.stack([ids, -ids], 1) * 20 + 100, actions=ids[:, None] / 100,
                         rewards=ids[:, None] if column else ids,
                         next_states=torch.stack([ids, ids], 1),
                         dones=(ids % 2)[:, None]))  # fmt: skip
            total += n
            held = buf.data["rewards"][: buf.size, 0]
            assert buf.size == min(total, capacity), (
                f"size = min(rows added, capacity) = {min(total, capacity)}, got {buf.size}"
            )
            assert sorted(held.tolist()) == list(range(max(0, total - capacity), total)), (
                f"FIFO: after {total} rows into {capacity}, the newest {min(total, capacity)} "
                f"stay; held {sorted(held.tolist())}"
            )
            rows, states = buf.data, torch.stack([held, -held], 1) * 20 + 100
            whole = torch.equal(rows["states"][: buf.size], states)
            whole &= torch.equal(rows["actions"][: buf.size, 0], held / 100)
            whole &= torch.equal(rows["next_states"][: buf.size, 0], held)
            whole &= torch.equal(rows["dones"][: buf.size, 0], held % 2)
            assert whole, "each row holds one transition: its keys are written to the same row"

    @settings(derandomize=True, max_examples=30, deadline=None)
    @given(n=st.integers(1, 40), ratio=st.floats(0, 1), synthetic_rows=st.integers(0, 80))
    def test_sample_mixed_property(self, n, ratio, synthetic_rows):
        """For any batch size, real_ratio and synthetic buffer size: round(n * real_ratio) real rows
        and the rest synthetic once the synthetic buffer holds n rows; all real before."""
        real = D.ReplayBuffer(2, 1, 100, "cpu")
        real.add(rows_with_reward(np.ones(50)))
        synthetic = D.ReplayBuffer(2, 1, 100, "cpu")
        if synthetic_rows:
            synthetic.add(rows_with_reward(-np.ones(synthetic_rows)))
        batch = D.sample_mixed(real, synthetic, n, ratio)
        assert all(len(v) == n for v in batch.values()), "every key holds n rows"
        n_real = int((batch["rewards"] == 1).sum())
        expected = n if synthetic_rows < n else round(n * ratio)
        assert n_real == expected, (
            f"n {n}, real_ratio {ratio}, {synthetic_rows} synthetic rows: {expected} real rows "
            f"(all real while the synthetic buffer holds fewer than n), got {n_real}"
        )

    def test_zscore_of_a_constant_dimension_is_finite(self):
        """A dimension that never moves (a wall's coordinate, a fixed joint) has std 0: the eps
        1e-3 keeps its z-score finite, 0."""
        x = torch.randn(50, 3) * 20 + 100
        x[:, 1] = 7.5
        z = D.Normalizer(3).fit_zscore(x)(x)
        assert torch.isfinite(z).all() and (z[:, 1] == 0).all(), (
            f"scale = std + 1e-3: a constant dimension gives z = 0, got {z[:3, 1].tolist()}"
        )

    @settings(derandomize=True, max_examples=30, deadline=None)
    @given(shift=st.lists(st.floats(-1000, 1000), min_size=3, max_size=3),
           log_scale=st.lists(st.floats(-2, 3), min_size=3, max_size=3))  # fmt: skip
    def test_normalizers_round_trip_at_any_scale(self, shift, log_scale):
        """For data of any offset and spread per dimension (1e-2 to 1e3): limits maps each
        dimension's [min, max] to [-1, 1], z-score to mean 0 and std std / (std + 1e-3) per
        dimension (the eps), and unnormalize inverts both."""
        gen = torch.Generator().manual_seed(0)
        spread = 10 ** torch.tensor(log_scale, dtype=torch.float64)
        x64 = torch.randn(64, 3, generator=gen, dtype=torch.float64) * spread + torch.tensor(shift)
        x = x64.float()
        tol = 4e-5 * (1 + torch.tensor(shift).abs() / spread).float()  # float32 rounding of x
        lim = D.Normalizer(3).fit_limits(x)
        y = lim(x)
        assert ((y.min(0).values + 1).abs() <= tol).all(), f"limits: min -> -1: {y.min(0).values}"
        assert ((y.max(0).values - 1).abs() <= tol).all(), f"limits: max -> +1: {y.max(0).values}"
        back = lim.unnormalize(y)
        assert ((back - x).abs() <= tol * spread.float()).all(), "limits: unnormalize inverts"
        zs = D.Normalizer(3).fit_zscore(x)
        z = zs(x)
        std = x64.std(0)
        want = (std / (std + 1e-3)).float()
        assert (z.mean(0).abs() <= tol).all(), f"z-score: mean 0 per dimension, got {z.mean(0)}"
        assert ((z.std(0) - want).abs() <= 1e-3).all(), (
            f"z-score: scale = std + 1e-3 per dimension, so z has std {want.tolist()}, got "
            f"{z.std(0).tolist()}"
        )
        back = zs.unnormalize(z)
        assert ((back - x).abs() <= tol * spread.float()).all(), "z-score: unnormalize inverts"

    def test_data_that_keeps_the_contract_passes(self):
        D.check_data(contract_data())  # no error
        D.check_data(contract_data() | {"extra": np.zeros(5)})  # other keys are ignored
        data = contract_data()
        data["actions"][0] = [-1.0, 1.0]  # the box's edges are inside it
        data = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in data.items()}
        D.check_data(data)  # float64 is floating point too

    @pytest.mark.parametrize("name, key, change", breakers(), ids=[b[0] for b in breakers()])
    def test_each_broken_rule_is_one_value_error_naming_the_key(self, name, key, change):
        data = contract_data()
        change(data)
        with pytest.raises(ValueError) as info:
            D.check_data(data)
        message = str(info.value)
        assert f"'{key}'" in message, f"the error for {name} must name '{key}': {message!r}"
        assert "expected" in message, f"the error for {name} must say what was expected: {message!r}"
        assert "\n" not in message, f"the error for {name} must be one line: {message!r}"


def diffusion(kind="mlp", h=8, d=3, n_steps=10, predict_epsilon=False, decay=0.995):
    """A GaussianDiffusion whose denoiser and EMA copy record their inputs."""
    return D.GaussianDiffusion(Recorder(make_denoiser(kind, h, d)), h, d, n_steps,
                               predict_epsilon, decay)  # fmt: skip


class Oracle(nn.Module):
    """A perfect denoiser for known clean windows x0: it returns x0, or with epsilon = True the
    noise that makes x_t from x0 (x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, DDPM eq. 4)."""

    def __init__(self, x0, dm, epsilon: bool):
        super().__init__()
        self.x0, self.epsilon, self.schedule = x0, epsilon, (dm.sqrt_ab, dm.sqrt_1m_ab)

    def forward(self, x, t):
        if not self.epsilon:
            return self.x0.clone()
        sqrt_ab, sqrt_1m_ab = (c[t, None, None] for c in self.schedule)
        return (x - sqrt_ab * self.x0) / sqrt_1m_ab


class Constant(nn.Module):
    """A denoiser that returns one value everywhere."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x, t):
        return torch.full_like(x, self.value)


class GaussianOracle(nn.Module):
    """The exact denoiser of data x0 ~ N(mu, sigma^2) per entry: E[x0 | x_t] (or its noise)."""

    def __init__(self, dm: D.GaussianDiffusion, mu: float, sigma: float):
        super().__init__()
        self.dm, self.mu, self.var = dm, mu, sigma**2

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, b = self.dm.sqrt_ab[t][:, None, None], self.dm.sqrt_1m_ab[t][:, None, None]
        x0 = self.mu + a * self.var / (a**2 * self.var + b**2) * (x - a * self.mu)
        return (x - a * x0) / b if self.dm.predict_epsilon else x0


def oracle_samples(n_steps: int, predict_epsilon: bool, mu=0.3, sigma=0.2) -> torch.Tensor:
    torch.manual_seed(0)
    dm = D.GaussianDiffusion(nn.Identity(), 4, 2, n_steps, predict_epsilon)
    dm.ema = dm.denoiser = GaussianOracle(dm, mu, sigma)  # (the sampler uses the EMA copy)
    mask = torch.zeros(4, 2, dtype=torch.bool)
    return dm.sample(torch.zeros(20_000, 4, 2), mask)


class TestDiffusion:
    """The denoisers and the DDPM: its loss, sampling with inpainting, condition_mask, the EMA."""

    @pytest.mark.parametrize("predict_epsilon", [False, True])
    def test_oracle_denoiser_samples_approach_the_data_as_steps_grow(self, predict_epsilon):
        """With the exact denoiser of Gaussian data N(0.3, 0.2^2), ancestral DDPM samples have the
        data's mean, and their spread approaches 0.2 from below as the steps grow (few steps shrink it:
        each step returns a posterior mean: 0.094, 0.153, 0.191 at 5, 20, 200 steps). A doubled noise
        term, no noise, or a dropped term of the posterior mean breaks one of these."""
        stds = {}
        for k in (5, 20, 200):
            x = oracle_samples(k, predict_epsilon)
            assert abs(x.mean().item() - 0.3) < 0.01, f"{k} steps: sample mean {x.mean():.3f}, data 0.3"
            stds[k] = x.std().item()
        assert stds[5] < stds[20] < stds[200] <= 0.2 * 1.02, f"spread must grow toward 0.2: {stds}"
        assert stds[200] > 0.2 * 0.9, f"200 steps: spread {stds[200]:.3f}, data 0.2"


    @pytest.mark.parametrize("kind", ["mlp", "unet"])
    @pytest.mark.parametrize("predict_epsilon", [False, True])
    def test_training_inputs_are_inpainted(self, kind, predict_epsilon):
        h, d = 8, 3
        dm = diffusion(kind, h, d, predict_epsilon=predict_epsilon)
        x0 = torch.rand(32, h, d) * 2 - 1
        for mask in (random_mask(h, d), dm.condition_mask(S_DIM)):
            dm.denoiser.inputs.clear()
            loss = dm.loss(x0, mask)
            (xt,) = dm.denoiser.inputs
            assert torch.equal(xt[:, mask], x0[:, mask]), (
                "inpainting at training time: the denoiser's input holds the fixed entries' clean "
                f"values; max difference {(xt[:, mask] - x0[:, mask]).abs().max():.3g}"
            )
            assert not torch.allclose(xt[:, ~mask], x0[:, ~mask]), "free entries must be noised"
            assert torch.isfinite(loss), f"loss {loss}"

    def test_noisy_input_is_the_forward_process(self):
        """x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps with eps ~ N(0, 1) and t uniform in [0, K)."""
        dm = diffusion(n_steps=10)
        x0 = torch.rand(4000, 8, 3) * 2 - 1
        mask = torch.zeros(8, 3, dtype=torch.bool)
        dm.loss(x0, mask)
        (xt,), (t,) = dm.denoiser.inputs, dm.denoiser.steps
        assert t.shape == (4000,) and t.min() == 0 and t.max() == dm.n_steps - 1, (
            f"t drawn from 0..{dm.n_steps - 1}, one per window: got {t.min()}..{t.max()}"
        )
        counts = torch.bincount(t, minlength=dm.n_steps).float() / len(t)
        assert counts.min() > 0.07, f"t uniform over {dm.n_steps} steps: shares {counts}"
        eps = (xt - dm.sqrt_ab[t, None, None] * x0) / dm.sqrt_1m_ab[t, None, None]
        mean, std = eps.mean().item(), eps.std().item()
        assert abs(mean) < 0.02 and abs(std - 1) < 0.02, (
            f"(x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t) must be N(0, 1): mean {mean:.3f}, "
            f"std {std:.3f}"
        )

    def test_loss_ignores_fixed_entries(self):
        """The denoiser's output on fixed entries carries no learning signal."""
        h, d = 8, 3

        class Garbage(nn.Module):  # perfect on free entries, nonsense on fixed ones
            def __init__(self, x0, mask):
                super().__init__()
                self.x0, self.mask = x0, mask

            def forward(self, x, t):
                return torch.where(self.mask, torch.full_like(x, 1e3), self.x0)

        x0, mask = torch.rand(4, h, d), random_mask(h, d)
        dm = D.GaussianDiffusion(Garbage(x0, mask), h, d, n_steps=5)
        loss = dm.loss(x0, mask).item()
        assert loss == 0.0, f"the loss covers the free entries only: {loss} from the fixed ones"

    @pytest.mark.parametrize("predict_epsilon", [False, True])
    def test_loss_targets_x0_or_the_noise(self, predict_epsilon):
        """A perfect denoiser has loss 0: it predicts x0 (predict_epsilon=False) or the noise."""
        x0, mask = torch.rand(64, 8, 3) * 2 - 1, random_mask(8, 3)
        dm = D.GaussianDiffusion(nn.Identity(), 8, 3, 10, predict_epsilon)
        for epsilon, perfect in ((predict_epsilon, True), (not predict_epsilon, False)):
            dm.denoiser = Oracle(x0, dm, epsilon)
            loss = dm.loss(x0, mask).item()
            rule = f"predict_epsilon={predict_epsilon}: the target is "
            rule += "the noise eps" if predict_epsilon else "x0"
            if perfect:
                assert loss < 1e-8, f"{rule}; a denoiser returning it exactly has loss {loss:.3g}"
            else:
                assert loss > 0.01, f"{rule}; a denoiser returning the other has loss {loss:.3g}"

    @pytest.mark.parametrize("kind", ["mlp", "unet"])
    @pytest.mark.parametrize("predict_epsilon", [False, True])
    def test_samples_are_inpainted(self, kind, predict_epsilon):
        h, d = 8, 3
        dm = diffusion(kind, h, d, predict_epsilon=predict_epsilon)
        values = torch.randn(16, h, d) * 0.7
        for mask in (random_mask(h, d), dm.condition_mask(S_DIM)):
            dm.ema.inputs.clear(), dm.ema.steps.clear()
            x = dm.sample(values, mask)
            assert x.shape == values.shape, f"sample keeps the shape {values.shape}: {x.shape}"
            assert torch.equal(x[:, mask], values[:, mask]), "fixed entries end at their values"
            assert len(dm.ema.inputs) == dm.n_steps, (
                f"ancestral sampling: one denoiser call per step, {dm.n_steps}, got "
                f"{len(dm.ema.inputs)} calls of the EMA copy"
            )
            for i, xt in enumerate(dm.ema.inputs):  # every denoiser input is inpainted too
                first = " (before the first call too, not only after steps)" if i == 0 else ""
                assert torch.equal(xt[:, mask], values[:, mask]), (
                    f"sampling call {i}: the fixed entries hold their values in the input{first}"
                )
            steps = [int(t[0]) for t in dm.ema.steps]
            assert steps == list(reversed(range(dm.n_steps))), f"t = K-1 down to 0: {steps}"
            assert torch.isfinite(x).all() and x[:, ~mask].abs().max() > 0

    def test_sampler_uses_only_the_ema_copy(self):
        dm = diffusion()

        class Forbidden(nn.Module):
            def forward(self, x, t):
                raise AssertionError("the sampler must use the EMA copy (dm.ema), not dm.denoiser")

        dm.denoiser = Forbidden()
        x = dm.sample(torch.zeros(4, 8, 3), dm.condition_mask(S_DIM))
        assert len(dm.ema.inputs) == dm.n_steps and torch.isfinite(x).all()

    @pytest.mark.parametrize("predict_epsilon", [False, True])
    def test_sampler_clamps_its_x0_prediction(self, predict_epsilon):
        """The x0 the denoiser predicts (or that follows from its eps) is clamped to [-1, 1], the
        data's range, before the posterior step; at t = 0 the step returns that x0 (post_c0 = 1,
        post_ct = 0), so a denoiser predicting far outside gives samples at the edge, +-1."""
        dm = D.GaussianDiffusion(nn.Identity(), 8, 3, n_steps=10, predict_epsilon=predict_epsilon)
        mask = dm.condition_mask(S_DIM)
        for sign in (1.0, -1.0):
            dm.ema = Constant(-50.0 * sign if predict_epsilon else 5.0 * sign)  # x0 beyond +-1
            x = dm.sample(torch.zeros(16, 8, 3), mask)
            free = x[:, ~mask]
            assert torch.allclose(free, torch.full_like(free, sign), atol=1e-4), (
                f"x0 clamped to [-1, 1]: a denoiser whose x0 is far beyond {sign:+.0f} gives "
                f"samples at {sign:+.0f}, got [{free.min():.3f}, {free.max():.3f}]"
            )

    def test_update_ema_moves_toward_the_online_weights(self):
        """ema <- ema + (1 - decay) (online - ema), parameter by parameter; online ones stay."""
        dm = diffusion(decay=0.9)
        with torch.no_grad():
            for p in dm.denoiser.parameters():
                p.add_(torch.randn_like(p))
        ema_before = [p.clone() for p in dm.ema.parameters()]
        online = [p.clone() for p in dm.denoiser.parameters()]
        dm.update_ema()
        for (name, new), old, on, now in zip(dm.ema.named_parameters(), ema_before, online,
                                             dm.denoiser.parameters()):  # fmt: skip
            expected = old + 0.1 * (on - old)
            moved = ((new - old).norm() / (on - old).norm()).item()
            assert torch.allclose(new, expected, atol=1e-6), (
                f"EMA with decay 0.9: {name} must move 1 - decay = 0.1 of the way to the online "
                f"weights, moved {moved:.3f}"
            )
            assert torch.equal(now, on), f"update_ema must not change the online {name}"

    @pytest.mark.parametrize("denoiser", ["mlp", "unet"])
    def test_sample_states_keeps_s0(self, denoiser):
        """sample_states normalises, samples with s0 and the actions inpainted, and unnormalises:
        s0 comes back up to rounding, in raw units."""
        cfg = tiny_cfg(denoiser=denoiser)
        dm = D.build_diffusion(cfg, S_DIM, A_DIM)
        dm.norm = limits([-5.0, -2.0, -1.0], [7.0, 4.0, 1.0])
        s0 = torch.randn(10, S_DIM) * 3 + 1 + 1e-3 * torch.rand(10, S_DIM)  # awkward floats
        actions = torch.rand(10, cfg.horizon, A_DIM) * 2 - 1
        sampled = dm.sample_states(s0, actions)
        assert sampled.shape == (10, cfg.horizon, S_DIM) and torch.isfinite(sampled).all()
        err = (sampled[:, 0] - s0).abs().max().item()
        assert err < 1e-4, f"row 0 of every sample is the given s0 (inpainted): max error {err}"

    def test_unet_builds_any_channel_multipliers(self):
        """The final block takes the first level's channels, dim * mults[0], not always dim."""
        for mults in ((2, 4), (1,), (3, 1, 2)):
            cfg = tiny_cfg(denoiser="unet", unet_dim_mults=mults, horizon=8)
            net = D.build_diffusion(cfg, S_DIM, A_DIM).denoiser
            x = torch.randn(5, 8, S_DIM + A_DIM)
            assert net(x, torch.zeros(5, dtype=torch.long)).shape == x.shape, mults

    def test_condition_mask_fixes_first_state_and_all_actions(self):
        dm = D.build_diffusion(tiny_cfg(), S_DIM, A_DIM)
        mask = dm.condition_mask(S_DIM)
        expected = torch.zeros(8, S_DIM + A_DIM, dtype=torch.bool)
        expected[0, :S_DIM] = True
        expected[:, S_DIM:] = True
        assert mask.dtype == torch.bool and torch.equal(mask, expected), (
            f"DyDiff fixes row 0's state and every action (columns {S_DIM}+):\n"
            f"expected\n{expected.int()}\ngot\n{mask.int()}"
        )

    # The sampler's exact-oracle test (Gaussian data, exact E[x0 | x_t]) goes here.


class TestDynamicsAndReward:
    """The dynamics ensemble (Gaussian NLL, log-variance bounds, elites, uncertainty) and the reward
    model."""

    def test_uncertainty_is_the_elites_largest_gap_in_state_stds(self):
        """u(s, a) = max over elites of |mean_e - average of the elites' means|, each state
        dimension divided by the data's state std (input_norm's, here ~20): of three elites, one
        3 above the other two in state 0 (average 1, gaps 2, 1, 1) gives u = 2 / std_0 for every
        input, whatever a non-elite predicts; identical elites give 0. Any leading shape of sa."""
        dyn = D.EnsembleDynamics(2, 1, n_members=4, n_elites=3, hidden=8)
        states = torch.randn(500, 2) * 20 + 100
        dyn.input_norm.fit_zscore(torch.cat([states, torch.rand(500, 1) * 2 - 1], 1))
        last = dyn.net[-1]  # its bias [E, 1, 2S]: the means (first S), then the log-variances
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
            last.bias[0, 0, 0] = 3.0  # member 0: +3 in state 0
            last.bias[3, 0, :2] = 100.0  # member 3: far off, but not an elite
        dyn.elites.copy_(torch.tensor([0, 1, 2]))
        sa = torch.cat([states[:6], torch.rand(6, 1)], 1).reshape(3, 2, 3)
        u = dyn.uncertainty(sa)
        assert u.shape == (3, 2), f"u has sa's leading shape: {tuple(u.shape)}"
        want = 2 / dyn.input_norm.scale[0]
        assert torch.allclose(u, want.expand(3, 2)), (
            f"u = the largest elite gap in state stds, {want:.4f}: got {u.flatten().tolist()}"
        )
        with torch.no_grad():
            last.bias[0, 0, 0] = 0.0
        assert (dyn.uncertainty(sa) == 0).all(), "elites that agree: u = 0"

    def test_gaussian_nll_is_lowest_at_the_mean_and_the_squared_error(self, monkeypatch):
        """The NLL term mean((mu - y)^2 exp(-logvar) + logvar) is lowest at mu = y and, for a
        fixed error e, at logvar = log(e^2); the bounds and weight decay do not depend on them."""
        model = D.EnsembleDynamics(S_DIM, A_DIM, n_members=2, n_elites=1, hidden=8)
        sa, delta = torch.randn(2, 50, S_DIM + A_DIM), torch.randn(2, 50, S_DIM)
        out = {}
        monkeypatch.setattr(model, "forward", lambda x: out["mean_logvar"])
        grid = torch.linspace(-6, 4, 201)

        def loss(mean, logvar):
            out["mean_logvar"] = (mean, torch.full_like(delta, logvar))
            return model.loss(sa, delta).item()

        for err in (0.1, 1.0, 3.0):
            best = grid[int(np.argmin([loss(delta + err, float(v)) for v in grid]))].item()
            assert abs(best - 2 * np.log(err)) < 0.06, (
                f"Gaussian NLL: with error {err} the loss is lowest at logvar = log(err^2) = "
                f"{2 * np.log(err):.2f}, got {best:.2f}"
            )
        shifted = [loss(delta + e, 0.0) for e in (-0.5, 0.0, 0.5)]
        assert shifted[1] < min(shifted[0], shifted[2]), f"lowest at mean = target: {shifted}"

    def test_loss_regularisers_have_their_coefficients(self, monkeypatch):
        """loss = NLL + 0.01 (sum max_logvar - sum min_logvar) + sum_i weight_decay[i] / 2
        ||W_i||^2 over the 5 layers' weights (not biases); the NLL sums the members' means."""
        model = D.EnsembleDynamics(S_DIM, A_DIM, n_members=2, n_elites=1, hidden=8)
        sa, delta = torch.randn(2, 50, S_DIM + A_DIM), torch.randn(2, 50, S_DIM)
        out = {}
        monkeypatch.setattr(model, "forward", lambda x: out["mean_logvar"])
        out["mean_logvar"] = (delta.clone(), torch.zeros_like(delta))  # NLL 0
        layers = list(model.net)[::2]  # EnsembleLinear, activation, ..., EnsembleLinear
        with torch.no_grad():
            model.max_logvar.fill_(0.5), model.min_logvar.fill_(-4.0)  # sum difference 2 x 4.5
            for i, layer in enumerate(layers):
                layer.weight.fill_(1.0), layer.bias.fill_(100.0)  # biases carry no decay
        decay = sum(c / 2 * layer.weight.numel() for c, layer in zip(model.weight_decay, layers))
        got = model.loss(sa, delta).item()
        assert got == pytest.approx(0.01 * 9 + decay, rel=1e-4), (
            f"with NLL 0: 0.01 x sum(max_logvar - min_logvar) = 0.09 plus weight decay "
            f"sum weight_decay[i] / 2 ||W_i||^2 = {decay:.5f}: {0.09 + decay:.5f}, got {got:.5f}"
        )
        out["mean_logvar"] = (delta + 1, torch.zeros_like(delta))  # error 1 per entry, 2 members
        nll = model.loss(sa, delta).item() - got
        assert nll == pytest.approx(2.0, rel=1e-4), (
            f"NLL: mean over batch and state of (mean - delta)^2 exp(-logvar) + logvar, summed "
            f"over the 2 members: 2.0 for error 1 and logvar 0, got {nll:.4f}"
        )

    def test_predict_uses_only_elites(self):
        dyn = D.EnsembleDynamics(S_DIM, A_DIM, n_members=4, n_elites=2, hidden=16)
        dyn.elites.copy_(torch.tensor([1, 3]))
        s, a = torch.randn(200, S_DIM), torch.randn(200, A_DIM)
        with torch.no_grad():
            mean, _ = dyn(torch.cat([s, a], -1).expand(4, -1, -1))
        pred = dyn.predict(s, a)
        diff = ((pred - s)[None] - mean).abs().amax(-1)  # [E, B]: 0 for the member that was used
        used = diff.argmin(0)
        assert torch.allclose(diff.min(0).values, torch.zeros(200), atol=1e-5), (
            "each predicted next state is s + the mean change of one member"
        )
        assert set(used.tolist()) == {1, 3}, f"only the elites 1 and 3, drawn at random: {used}"

    def test_predict_with_one_elite_is_that_members_mean(self):
        """Computed by hand for member 2: z-score, 4 SiLU layers, the mean half of the output."""
        dyn = D.EnsembleDynamics(S_DIM, A_DIM, n_members=3, n_elites=1, hidden=16)
        dyn.input_norm.fit_zscore(torch.randn(100, S_DIM + A_DIM))
        dyn.elites.copy_(torch.tensor([2]))
        s, a = torch.randn(12, S_DIM), torch.randn(12, A_DIM)
        with torch.no_grad():
            h = dyn.input_norm(torch.cat([s, a], -1))[None]
            for layer in dyn.net:
                if isinstance(layer, D.EnsembleLinear):
                    h = torch.baddbmm(layer.bias[2:3], h, layer.weight[2:3])
                else:
                    h = layer(h)
        pred = dyn.predict(s, a)
        err = (pred - (s + h[0, :, :S_DIM])).abs().max().item()
        assert err < 1e-6, f"one elite: predict is s + member 2's mean change (error {err:.2g})"

    def test_reward_model_predict_shapes(self):
        """predict takes states [..., S] and actions [..., A] of any leading shape, row by row."""
        model = D.RewardModel(S_DIM, A_DIM, hidden=16)
        s, a = torch.randn(5, 7, S_DIM), torch.randn(5, 7, A_DIM)
        r = model.predict(s, a)
        assert r.shape == (5, 7), f"rewards for [5, 7] transitions: shape {tuple(r.shape)}"
        flat = model.predict(s.reshape(35, S_DIM), a.reshape(35, A_DIM))
        assert flat.shape == (35,), f"rewards for [35] transitions: shape {tuple(flat.shape)}"
        assert torch.allclose(r.reshape(35), flat, atol=1e-6), "the same row, the same reward"
        one = model.predict(s[2, 3], a[2, 3])
        assert torch.allclose(one, r[2, 3], atol=1e-6), f"row (2, 3): {one} != {r[2, 3]}"
        assert not r.requires_grad, "predict is inference: no graph"

    @pytest.fixture(scope="class")
    def fitted_dynamics(self):
        torch.manual_seed(0)
        data = linear_data(n_episodes=20, ep_len=40, noise=0.01)
        s, s2 = torch.as_tensor(data["observations"]), torch.as_tensor(data["next_observations"])
        sa, delta = torch.cat([s, torch.as_tensor(data["actions"])], 1), s2 - s
        perm = torch.randperm(len(sa))
        hold, train = perm[:160], perm[160:]
        model = D.EnsembleDynamics(S_DIM, A_DIM, n_members=4, n_elites=2, hidden=32)
        model.input_norm.fit_zscore(sa)
        fit(model, sa[train], delta[train], steps=400)
        with torch.no_grad():
            errors = model.errors(sa[hold].expand(4, -1, -1), delta[hold].expand(4, -1, -1))
        return data, model, errors

    def test_dynamics_fits_linear_system(self, fitted_dynamics):
        data, model, errors = fitted_dynamics
        delta = data["next_observations"] - data["observations"]
        var = delta.var(0).mean()
        assert errors.shape == (4,), f"one holdout error per member: {errors.shape}"
        assert errors.max() < 0.02 * var, (
            f"the ensemble fits s' - s = (A - I) s + B a: holdout MSE per member {errors} must be "
            f"below 2% of the variance {var:.3f} (seen: 0.3%)"
        )
        test = linear_data(n_episodes=5, ep_len=20, noise=0.0, seed=7)
        s, a = torch.as_tensor(test["observations"]), torch.as_tensor(test["actions"])
        mse = ((model.predict(s, a) - torch.as_tensor(test["next_observations"])) ** 2).mean()
        assert mse < 0.02 * var, f"predict() returns s + the change: MSE {mse:.4f}, var {var:.3f}"

    def test_dynamics_logvar_within_bounds(self, fitted_dynamics):
        data, model, _ = fitted_dynamics
        sa = torch.as_tensor(np.concatenate([data["observations"], data["actions"]], 1))
        tol = 1e-4  # the soft clamp may overshoot max_logvar by log1p(exp(-(max - min))) ~ 3e-5
        with torch.no_grad():
            for scale in (1.0, 1e3, -1e3):  # far outside the data the raw log-variance runs off
                _, logvar = model(sa.expand(model.net.n_members, -1, -1) * scale)
                lo, hi = logvar.min().item(), logvar.max().item()
                assert (logvar >= model.min_logvar - tol).all(), f"min_logvar bound: {lo}"
                assert (logvar <= model.max_logvar + tol).all(), f"max_logvar bound: {hi}"
        assert (model.min_logvar < model.max_logvar).all()

    def test_reward_model_fits_a_known_function(self):
        def reward(s, a):
            return s[:, :1] - 0.5 * a**2 + 0.3 * s[:, 1:] * a

        s, a = torch.rand(3000, S_DIM) * 2 - 1, torch.rand(3000, A_DIM) * 2 - 1
        sa, r = torch.cat([s, a], 1), reward(s, a)
        model = D.RewardModel(S_DIM, A_DIM, hidden=64)
        model.input_norm.fit_zscore(sa)
        fit(model, sa, r, steps=600)
        test_s, test_a = torch.rand(500, S_DIM) * 2 - 1, torch.rand(500, A_DIM) * 2 - 1
        truth = reward(test_s, test_a)[:, 0]
        mse = ((model.predict(test_s, test_a) - truth) ** 2).mean().item()
        assert mse < 0.05 * truth.var().item(), (
            f"r(s, a) = s_0 - a^2 / 2 + 0.3 s_1 a: MSE on fresh points {mse:.4f} must be below 5% "
            f"of the variance {truth.var():.3f}"
        )


def one_step_batch(n=256):
    """Every state appears with a = +0.5 (reward 1) and a = -0.5 (reward 0); all steps terminal.
    States far from unit scale and zero mean (x 20 + 100): only state_norm makes them learnable."""
    s = torch.randn(n, 2) * 20 + 100
    a = torch.cat([torch.full((n, 1), 0.5), torch.full((n, 1), -0.5)])
    return {
        "states": torch.cat([s, s]),
        "actions": a,
        "rewards": torch.cat([torch.ones(n, 1), torch.zeros(n, 1)]),
        "next_states": torch.randn(2 * n, 2) * 20 + 100,
        "dones": torch.ones(2 * n, 1),
    }


def train_td3bc(alpha: float, updates: int = 300):
    data = one_step_batch()
    cfg = tiny_cfg(alpha=alpha, lr=1e-3, batch_size=128)
    agent = D.TD3BC(2, 1, D.Normalizer(2).fit_zscore(data["states"]), cfg)
    n = len(data["states"])
    for _ in range(updates):
        idx = torch.randint(n, (cfg.batch_size,))
        agent.update({k: v[idx] for k, v in data.items()})
    test_states = torch.randn(500, 2) * 20 + 100
    return agent, agent.act(test_states), test_states


def target_of(cfg, actor_target, q1_target, q2_target, rewards=0.0, dones=0.0, n=2000):
    """TD3BC.critic_target with stub target networks, and the x' of each row: next states are
    (0, x'), x' ~ U[-1, 1], z-scored by an identity state_norm. The online networks, which the
    target must not use, say pi = -0.9 and Q = -100 everywhere."""
    agent = D.TD3BC(2, 1, D.Normalizer(2), cfg)
    agent.actor = Fn(lambda s: torch.full((len(s), 1), -0.9))
    agent.q1 = agent.q2 = Fn(lambda sa: torch.full((len(sa), 1), -100.0))
    agent.actor_target, agent.q1_target, agent.q2_target = actor_target, q1_target, q2_target
    x2 = torch.rand(n) * 2 - 1
    batch = dict(states=torch.randn(n, 2), actions=torch.zeros(n, 1),
                 rewards=torch.as_tensor(rewards, dtype=torch.float32).expand(n)[:, None],
                 next_states=torch.stack([torch.zeros(n), x2], 1),
                 dones=torch.as_tensor(dones, dtype=torch.float32).expand(n)[:, None])  # fmt: skip
    y = agent.critic_target(batch)
    assert y.shape == (n, 1), f"critic_target returns y [B, 1]: shape {tuple(y.shape)}"
    assert not y.requires_grad, "critic_target is a regression target: no gradient"
    return y[:, 0], x2


def action_of(sa):
    """A stub target critic Q'(s', a') = a': the target then shows the action a'."""
    return sa[:, -1:]


def zero_actor(s):
    return torch.zeros(len(s), 1)


class TestTD3BC:
    """TD3+BC: the critic target, the actor's lambda-weighted Q plus behaviour cloning, delayed and
    soft target updates, state normalisation."""

    def test_td3bc_delayed_actor_and_target_updates(self):
        data = one_step_batch(64)
        cfg = tiny_cfg(policy_freq=2, batch_size=32)
        agent = D.TD3BC(2, 1, D.Normalizer(2).fit_zscore(data["states"]), cfg)
        nets = ("actor", "q1", "q2", "actor_target", "q1_target", "q2_target")
        before = {k: [p.clone() for p in getattr(agent, k).parameters()] for k in nets}

        def changed(k):
            now = getattr(agent, k).parameters()
            return [not torch.equal(a, b) for a, b in zip(before[k], now)]

        out = agent.update({k: v[:32] for k, v in data.items()})
        assert "actor_loss" not in out, "policy_freq 2: no actor step in the first update"
        assert agent.n_updates == 1, f"n_updates counts every update: {agent.n_updates} after 1"
        assert all(changed("q1")) and all(changed("q2")), "the critics learn every update"
        for k in ("actor", "actor_target", "q1_target", "q2_target"):
            assert not any(changed(k)), f"{k} changes only every policy_freq-th update"
        out = agent.update({k: v[32:] for k, v in data.items()})
        assert agent.n_updates == 2, f"n_updates counts every update: {agent.n_updates} after 2"
        assert set(out) == {"critic_loss", "actor_loss", "lambda"}, (
            f"an actor step returns critic_loss, actor_loss and lambda, got {sorted(out)}"
        )
        for k in ("actor", "actor_target", "q1_target", "q2_target"):
            assert all(changed(k)), f"{k} must change at the actor step"
        for net in ("actor", "q1", "q2"):  # soft update: target = old + tau (online - old)
            for old, online, new in zip(before[f"{net}_target"], getattr(agent, net).parameters(),
                                        getattr(agent, f"{net}_target").parameters()):  # fmt: skip
                expected = old + cfg.tau * (online - old)
                err = (new - expected).abs().max().item()
                assert err < 1e-7, f"{net}_target <- target + tau (online - target): {err:.2g}"

    def test_critics_regress_on_critic_target(self, monkeypatch):
        """update takes y from critic_target(batch) and regresses both critics on it:
        critic_loss = mse(Q1(s, a), y) + mse(Q2(s, a), y). With Q1 = Q2 = w = 0 (stubs),
        d critic_loss / dw = -2 mean(y) for each and critic_loss = 2 mean(y^2)."""
        batch = one_step_batch(32)
        agent = D.TD3BC(2, 1, D.Normalizer(2), tiny_cfg(policy_freq=1000))
        agent.q1, agent.q2 = (Fn(lambda sa: torch.zeros(len(sa), 1)) for _ in range(2))
        y = torch.linspace(-1, 3, 64)[:, None]
        calls = []
        monkeypatch.setattr(agent, "critic_target", lambda b: calls.append(b) or y.clone())
        out = agent.update(batch)
        assert calls and all(b is batch for b in calls), "update gets y from critic_target(batch)"
        for name in ("q1", "q2"):
            grad = getattr(agent, name).w.grad.item()
            assert abs(grad + 2 * y.mean().item()) < 1e-5, (
                f"{name} regresses on critic_target's y: d mse({name}, y) / d{name} must be "
                f"-2 mean(y) = {-2 * y.mean().item():.4f}, got {grad:.4f}"
            )
        loss = float(out["critic_loss"])
        assert abs(loss - 2 * (y**2).mean().item()) < 1e-4, (
            f"critic_loss = mse(Q1, y) + mse(Q2, y) = {2 * (y**2).mean().item():.4f} with Q = 0, "
            f"got {loss:.4f}"
        )

    def test_td3_target_takes_the_min_of_the_twin_target_critics(self):
        cfg = tiny_cfg(gamma=0.5, policy_noise=0.0)
        q1, q2 = Fn(lambda sa: 2 + sa[:, 1:2]), Fn(lambda sa: 2 - sa[:, 1:2])
        y, x2 = target_of(cfg, Fn(zero_actor), q1, q2)
        expected = 0.5 * (2 - x2.abs())
        err = (y - expected).abs().max().item()
        assert err < 1e-5, (
            f"y = r + gamma min(Q1'(s', a'), Q2'(s', a')): with Q1' = 2 + x', Q2' = 2 - x', gamma "
            f"0.5, r 0, y must be 0.5 (2 - |x'|); max error {err:.3f} (y {y[:3].tolist()}, "
            f"expected {expected[:3].tolist()}; the online critics say -100)"
        )

    def test_td3_target_uses_the_target_actor(self):
        cfg = tiny_cfg(gamma=0.5, policy_noise=0.0)
        y, _ = target_of(cfg, Fn(lambda s: torch.full((len(s), 1), 0.4)), Fn(action_of),
                         Fn(action_of))  # fmt: skip
        assert torch.allclose(y, torch.full_like(y, 0.2), atol=1e-5), (
            "a' = pi_target(s'): with pi_target = 0.4, the online pi = -0.9, Q' = a', gamma 0.5, "
            f"y must be 0.2; got {y.mean():.3f} (-0.45 means the online actor was used)"
        )

    def test_td3_target_is_discounted(self):
        for gamma in (0.9, 0.5):
            cfg = tiny_cfg(gamma=gamma, policy_noise=0.0)
            two = Fn(lambda sa: torch.full((len(sa), 1), 2.0))
            y, _ = target_of(cfg, Fn(zero_actor), two, two, rewards=1.0)
            assert torch.allclose(y, torch.full_like(y, 1 + 2 * gamma), atol=1e-5), (
                f"y = r + gamma Q': r 1, Q' 2, gamma {gamma}, done 0: y must be {1 + 2 * gamma}, "
                f"got {y.mean():.3f}"
            )

    def test_td3_target_stops_at_terminals(self):
        cfg = tiny_cfg(gamma=0.9, policy_noise=0.0)
        dones = (torch.rand(2000) < 0.5).float()
        two = Fn(lambda sa: torch.full((len(sa), 1), 2.0))
        y, _ = target_of(cfg, Fn(zero_actor), two, two, 1.0, dones)
        expected = 1 + 0.9 * 2 * (1 - dones)
        assert torch.allclose(y, expected, atol=1e-5), (
            f"y = r + gamma (1 - done) Q': a terminal row's target is r = 1, got "
            f"{y[dones == 1].mean():.3f}; other rows 2.8, got {y[dones == 0].mean():.3f}"
        )

    def test_td3_target_policy_smoothing(self):
        """a' = pi'(s') + clip(N(0, policy_noise^2), -noise_clip, noise_clip), fresh per row."""
        cfg = tiny_cfg(gamma=0.5, policy_noise=0.2, noise_clip=0.5)
        y, _ = target_of(cfg, Fn(zero_actor), Fn(action_of), Fn(action_of))
        noise = y / 0.5  # Q' = a' = 0 + noise
        mean, std = noise.mean().item(), noise.std().item()
        assert abs(mean) < 0.03 and 0.17 < std < 0.23, (
            f"target policy smoothing: a' - pi'(s') ~ N(0, 0.2^2) clipped at 0.5 must have mean "
            f"~0 and std ~0.2 over 2000 rows, got mean {mean:.3f} and std {std:.3f}"
        )

    def test_td3_target_smoothing_noise_is_clipped(self):
        cfg = tiny_cfg(gamma=0.5, policy_noise=1.0, noise_clip=0.3)
        y, _ = target_of(cfg, Fn(zero_actor), Fn(action_of), Fn(action_of))
        noise = y / 0.5
        top = noise.abs().max().item()
        assert 0.29 < top < 0.3 + 1e-5, (
            f"the smoothing noise N(0, 1.0^2) is clipped to +-noise_clip = 0.3: max |noise| must "
            f"be 0.3, got {top:.3f}"
        )

    def test_td3_target_action_stays_in_the_action_range(self):
        cfg = tiny_cfg(gamma=0.5, policy_noise=0.2, noise_clip=0.5)
        y, _ = target_of(cfg, Fn(lambda s: torch.full((len(s), 1), 0.9)), Fn(action_of),
                         Fn(action_of))  # fmt: skip
        a2 = y / 0.5
        assert a2.max() <= 1 + 1e-6 and a2.min() >= 0.4 - 1e-5, (
            f"a' = clip(pi'(s') + noise, -1, 1): pi' = 0.9 with noise in [-0.5, 0.5] gives a' in "
            f"[0.4, 1], got [{a2.min():.3f}, {a2.max():.3f}]"
        )
        assert (a2 == 1).float().mean() > 0.2, "a' = clip(.., -1, 1): a quarter of rows reach 1"

    def test_update_and_act_do_not_depend_on_the_units_of_states(self):
        """state_norm, fitted on the data, makes TD3+BC blind to the units of states: in units
        x 20 + 100, with the same normaliser in those units, the same networks give the same
        losses, lambda and actions after the updates. Both s and s' are z-scored: a TD3BC that
        leaves either raw (Fujimoto's code normalises the data beforehand) fails this."""
        data = {k: torch.as_tensor(v) for k, v in linear_data(n_episodes=4, ep_len=16).items()}
        batch = dict(states=data["observations"], actions=data["actions"],
                     rewards=data["rewards"][:, None], next_states=data["next_observations"],
                     dones=data["terminals"][:, None])  # fmt: skip
        scaled = batch | {k: batch[k] * 20 + 100 for k in ("states", "next_states")}
        agent = D.TD3BC(S_DIM, A_DIM, D.Normalizer(S_DIM).fit_zscore(batch["states"]),
                        tiny_cfg(policy_freq=2))  # fmt: skip
        other = copy.deepcopy(agent)  # the same networks and optimisers
        other.state_norm.shift.mul_(20).add_(100)  # fit_zscore(scaled states) but for its eps
        other.state_norm.scale.mul_(20)
        outs = []
        for who, b in ((agent, batch), (other, scaled)):
            torch.manual_seed(1)  # the same smoothing noise
            outs.append([{k: float(v) for k, v in who.update(b).items()} for _ in range(2)])
        for step, (one, two) in enumerate(zip(*outs)):
            assert one.keys() == two.keys()
            for k in one:
                assert two[k] == pytest.approx(one[k], rel=1e-4, abs=1e-5), (
                    f"update {step + 1}: {k} {one[k]:.5f} in raw units, {two[k]:.5f} in units x 20 "
                    "+ 100: update must z-score states and next states with state_norm"
                )
        a1, a2 = agent.act(batch["states"]), other.act(scaled["states"])
        err = (a1 - a2).abs().max().item()
        assert err < 1e-4, f"act z-scores raw states with state_norm: actions differ by {err:.3g}"

    def actor_step(self, alpha: float, data_action: float):
        """One update with stub networks: pi(s) = 0.3 (its parameter w), Q1(s, a) = 2 + a, batch
        actions data_action; returns dL_actor / dw."""
        agent = D.TD3BC(2, 1, D.Normalizer(2), tiny_cfg(alpha=alpha, policy_freq=1))
        agent.actor, agent.actor_target = Fn(lambda s: torch.zeros(len(s), 1), 0.3), Fn(action_of)
        q = [Fn(lambda sa: 2 + sa[:, -1:]) for _ in range(4)]
        agent.q1, agent.q2, agent.q1_target, agent.q2_target = q
        batch = dict(states=torch.randn(64, 2), actions=torch.full((64, 1), data_action),
                     rewards=torch.zeros(64, 1), next_states=torch.randn(64, 2),
                     dones=torch.zeros(64, 1))  # fmt: skip
        out = agent.update(batch)
        assert "actor_loss" in out, "policy_freq 1: every update is an actor step"
        return agent.actor.w.grad.item()

    def test_lambda_is_detached(self):
        """lambda = alpha / mean|Q1(s, pi(s))| is a weight, not part of the graph: with Q1 = 2 + a
        and pi = 0.3 = the data's action, dL/dpi = -lambda dQ1/da = -alpha / 2.3. Through lambda,
        -alpha mean(Q) / mean|Q| = -alpha for Q > 0, whose gradient is 0."""
        grad = self.actor_step(alpha=2.5, data_action=0.3)
        assert abs(grad - (-2.5 / 2.3)) < 1e-4, (
            f"lambda detached: dL_actor/dpi must be -alpha / |Q| = {-2.5 / 2.3:.4f}, got "
            f"{grad:.4f} (0 means the gradient flowed through lambda)"
        )

    def test_actor_loss_has_the_behaviour_cloning_term(self):
        """With alpha = 0 only BC is left: d mean((pi - a)^2) / dpi = 2 (pi - a) = 2 (0.3 + 0.5)."""
        grad = self.actor_step(alpha=0.0, data_action=-0.5)
        assert abs(grad - 1.6) < 1e-4, (
            f"the actor loss has ||pi(s) - a||^2 (mse): with pi 0.3, a -0.5, alpha 0, "
            f"dL_actor/dpi must be 1.6, got {grad:.4f}"
        )
        both = self.actor_step(alpha=2.5, data_action=-0.5)
        assert abs(both - (1.6 - 2.5 / 2.3)) < 1e-4, (
            f"-lambda Q + BC: dL/dpi = -alpha / 2.3 + 1.6 = {1.6 - 2.5 / 2.3:.4f}, got {both:.4f}"
        )

    def test_lambda_is_the_q_weight(self):
        """lambda = alpha / mean|Q1(s, pi(s))| at each actor step, in the losses: it doubles with
        alpha (the critic update before it does not depend on alpha) and equals alpha / |Q1| when
        Q1 is a stub."""
        batch = {k: torch.as_tensor(v) for k, v in linear_data(n_episodes=4, ep_len=8).items()}
        batch = dict(states=batch["observations"], actions=batch["actions"],
                     rewards=batch["rewards"][:, None], next_states=batch["next_observations"],
                     dones=batch["terminals"][:, None])  # fmt: skip
        out = {}
        for alpha in (2.5, 5.0):
            torch.manual_seed(0)
            agent = D.TD3BC(S_DIM, A_DIM, D.Normalizer(S_DIM), tiny_cfg(alpha=alpha))
            agent.update(batch)  # critic only
            out[alpha] = float(agent.update(batch)["lambda"])  # the first actor step
        assert out[2.5] > 0 and out[5.0] == pytest.approx(2 * out[2.5], rel=1e-6), (
            f"lambda = alpha / mean|Q|: doubling alpha doubles it; got {out}"
        )
        agent = D.TD3BC(S_DIM, A_DIM, D.Normalizer(S_DIM), tiny_cfg(alpha=2.5, policy_freq=1))
        agent.q1 = Fn(lambda sa: torch.full((len(sa), 1), -4.0))  # |Q1| = 4
        lam = float(agent.update(batch)["lambda"])
        assert lam == pytest.approx(2.5 / 4), f"alpha 2.5, Q1 = -4: lambda must be 0.625: {lam}"

    def test_td3bc_prefers_the_better_action(self):
        agent, actions, states = train_td3bc(alpha=2.5)
        share = (actions > 0).float().mean().item()
        assert actions.mean() > 0.3 and share > 0.95, (
            f"a = +0.5 pays 1, a = -0.5 pays 0: the actor must prefer +0.5; mean action "
            f"{actions.mean():.2f}, share positive {share:.2f}"
        )
        s = agent.state_norm(states)
        for name in ("q1", "q2"):  # the critic learned Q = r (dones = 1)
            q = getattr(agent, name)
            q_good = q(torch.cat([s, torch.full((500, 1), 0.5)], 1)).mean().item()
            q_bad = q(torch.cat([s, torch.full((500, 1), -0.5)], 1)).mean().item()
            assert abs(q_good - 1) < 0.2 and abs(q_bad) < 0.2, (
                f"every step terminal: {name}(s, a) = r, so ~1 for a = +0.5 and ~0 for -0.5; got "
                f"{q_good:.2f} and {q_bad:.2f}"
            )

    def test_td3bc_without_q_term_imitates_data(self):
        _, actions, _ = train_td3bc(alpha=0.0)
        mean, top = actions.mean().item(), actions.abs().max().item()
        assert abs(mean) < 0.15 and top < 0.45, (
            f"alpha = 0 is behaviour cloning of actions +-0.5 (mean 0): mean {mean:.2f}, max |a| "
            f"{top:.2f} (the Q term drives the mean to ~0.9)"
        )


CENTER, SPREAD = torch.tensor([100.0, -40.0]), torch.tensor([20.0, 5.0])  # states far from unit


def real_s0(n: int) -> torch.Tensor:
    return CENTER + SPREAD * torch.randn(n, S_DIM)


class LinearDynamics:
    """Stub dynamics in the tests' state units: z' = A z + B a for z = (s - CENTER) / SPREAD."""

    def predict(self, states, actions):
        z = (states - CENTER) / SPREAD
        z2 = z @ torch.as_tensor(A_MAT).T + actions @ torch.as_tensor(B_MAT).T
        return CENTER + SPREAD * z2


class StubDiffusion:
    """Stub DM: limits CENTER +- 2 SPREAD on states (and [-1, 1] on actions). sample_states
    returns states drawn at random, many outside the limits, row 0 not s0 (the real DM rounds
    it); round k of a rollout always draws the same, and each call is recorded."""

    def __init__(self):
        lo, hi = CENTER - 2 * SPREAD, CENTER + 2 * SPREAD
        self.norm, self.calls = limits([*lo.tolist(), -1.0], [*hi.tolist(), 1.0]), []

    def sample_states(self, s0, actions):
        gen = torch.Generator().manual_seed(len(self.calls))
        out = CENTER + 3 * SPREAD * torch.randn(*actions.shape[:2], S_DIM, generator=gen)
        self.calls.append(dict(s0=s0.clone(), actions=actions.clone(), sample=out.clone()))
        return out


def policy(s):
    return torch.tanh(((s - CENTER) / SPREAD) @ torch.tensor([[0.8], [-0.5]]) + 0.1)


class CounterDynamics:
    """s' = s + (1, 0): coordinate 0 counts steps, coordinate 1 is the trajectory's id."""

    def predict(self, states, actions, sample=False):
        return states + torch.tensor([1.0, 0.0])


class StateReward:
    def predict(self, states, actions):
        return states[..., 0] * 10 + 1


class UncertainCounter(CounterDynamics):
    """CounterDynamics with u(s, a) = coordinate 0 (the start plus the step) / 10."""

    def uncertainty(self, sa):
        return sa[..., 0] / 10


class CertainCounter(CounterDynamics):
    def uncertainty(self, sa):
        raise AssertionError("with the remedy off, u is never computed")


def counter_rows(out, j):
    """Trajectory j's transitions of synthesise's output, in step order."""
    rows = out["states"][:, 1] == j
    order = out["states"][rows, 0].argsort()
    return {k: v[rows][order] for k, v in out.items()}


class TestRolloutAndFilter:
    """dydiff_rollout (policy injection), clip_to_data, filter_trajectories and synthesise, with
    stub dynamics, diffusion and reward models."""

    @pytest.mark.parametrize("iterations", [0, 1, 3])
    def test_rollout_shapes_s0_and_policy_consistency(self, iterations):
        s0 = real_s0(12)
        states, actions = D.dydiff_rollout(s0, policy, LinearDynamics(), StubDiffusion(), 8,
                                           iterations)  # fmt: skip
        assert states.shape == (12, 8, S_DIM) and actions.shape == (12, 8, A_DIM), (
            f"states [N, H, S], actions [N, H, A]: {tuple(states.shape)}, {tuple(actions.shape)}"
        )
        assert torch.equal(states[:, 0], s0), "row 0 of every trajectory is exactly its real s0"
        err = (actions - policy(states)).abs().max().item()
        assert err < 1e-6, f"a_i = pi(s_i) for every row i, the last included: error {err:.3g}"

    def test_rollout_without_iterations_is_a_dynamics_rollout(self):
        """M = 0: s_{i+1} = f(s_i, a_i) and a_i = pi(s_i) at every step; the DM is not used."""
        s0 = real_s0(12)
        states, actions = D.dydiff_rollout(s0, policy, LinearDynamics(), None, 8, 0)
        for i in range(7):
            step = LinearDynamics().predict(states[:, i], actions[:, i])
            err = (states[:, i + 1] - step).abs().max().item()
            assert err < 1e-4, f"M = 0: s_{i + 1} = f(s_{i}, a_{i}), error {err:.3g}"
        assert torch.allclose(actions, policy(states), atol=1e-6), "M = 0: a_i = pi(s_i)"

    @pytest.mark.parametrize("rounds", [1, 2])
    def test_each_injection_round_averages_with_a_dm_sample_inside_the_limits(self, rounds):
        """Round m: one DM sample given the real s0 and the actions before the round; the new
        states are the average of the states before the round and that sample, clamped to the
        DM's limits per state dimension, except row 0, the real s0; then actions = pi(states)."""
        s0 = real_s0(12)
        before, before_actions = D.dydiff_rollout(s0, policy, LinearDynamics(), None, 8, 0)
        for m in range(1, rounds + 1):
            dm = StubDiffusion()
            states, actions = D.dydiff_rollout(s0, policy, LinearDynamics(), dm, 8, m)
            assert len(dm.calls) == m, f"M = {m}: one DM sample per round, got {len(dm.calls)}"
            call = dm.calls[-1]
            assert torch.equal(call["s0"], s0), f"round {m}: the DM is conditioned on the real s0"
            assert torch.allclose(call["actions"], before_actions, atol=1e-6), (
                f"round {m}: the DM is conditioned on the actions before the round, pi(states)"
            )
            average = (before + call["sample"]) / 2
            lo, hi = dm.norm.shift - dm.norm.scale, dm.norm.shift + dm.norm.scale
            inside = (average >= lo[:S_DIM]) & (average <= hi[:S_DIM])
            clamped = torch.minimum(torch.maximum(average, lo[:S_DIM]), hi[:S_DIM])
            assert torch.equal(states[:, 0], s0), f"round {m}: row 0 is exactly the real s0"
            rows = states[:, 1:]
            assert torch.allclose(rows[inside[:, 1:]], average[:, 1:][inside[:, 1:]], atol=1e-4), (
                f"round {m}: states = (states before the round + DM sample) / 2 where that lies "
                "inside the data's limits"
            )
            outside = ~inside[:, 1:]
            assert torch.allclose(rows[outside], clamped[:, 1:][outside], atol=1e-4), (
                f"round {m}: an average outside the data's limits is clamped to the nearest limit"
            )
            assert inside[:, 1:].any() and (~inside[:, 1:]).any(), "the test must see both cases"
            assert torch.allclose(actions, policy(states), atol=1e-6), f"round {m}: a = pi(s)"
            before, before_actions = states, actions

    def test_injected_states_stay_in_the_data_range(self):
        """As the authors' unnormaliser clips: after averaging, states lie in the data's [min, max]
        even where the dynamics rollout left it (here it is pushed far outside)."""
        s0, dm = real_s0(12), StubDiffusion()
        far = type("Far", (), {"predict": staticmethod(lambda s, a: s + 1e3)})()
        states, _ = D.dydiff_rollout(s0, policy, far, dm, 8, 1)
        lo, hi = dm.norm.shift - dm.norm.scale, dm.norm.shift + dm.norm.scale
        inside = ((states[:, 1:] >= lo[:S_DIM]) & (states[:, 1:] <= hi[:S_DIM])).all()
        assert inside, (
            f"injected states are clipped to the DM's limits {lo[:S_DIM].tolist()} .. "
            f"{hi[:S_DIM].tolist()}: got {states[:, 1:].amin((0, 1)).tolist()} .. "
            f"{states[:, 1:].amax((0, 1)).tolist()}"
        )
        assert torch.equal(states[:, 0], s0), "row 0 is the real s0"
        raw, _ = D.dydiff_rollout(s0, policy, far, dm, 8, 0)
        assert (raw[:, 1:] > hi[:S_DIM]).any(), "without injection nothing clips: the test can fail"

    @settings(derandomize=True, max_examples=30, deadline=None)
    @given(center=st.lists(st.floats(-1000, 1000), min_size=2, max_size=2),
           half=st.lists(st.floats(0.01, 100), min_size=2, max_size=2),
           spread=st.floats(0.1, 4), seed=st.integers(0, 100))  # fmt: skip
    def test_clip_to_data_property(self, center, half, spread, seed):
        """For any limits and states: row 0 becomes exactly s0; rows 1.. lie inside [shift - scale,
        shift + scale] of the normaliser's state dimensions (its action dimension, far wider here,
        is not used); a state inside is unchanged, one outside moves to the nearest limit."""
        gen = torch.Generator().manual_seed(seed)
        norm = limits([c - h for c, h in zip(center, half)] + [-1e4],
                      [c + h for c, h in zip(center, half)] + [1e4])  # fmt: skip
        c, h = torch.tensor(center), torch.tensor(half)
        states = c + spread * h * torch.randn(5, 6, S_DIM, generator=gen)
        s0 = c + 3 * h * torch.randn(5, S_DIM, generator=gen)
        out = D.clip_to_data(states, s0, norm)
        assert out.shape == states.shape, f"shape [N, H, S] kept: {tuple(out.shape)}"
        assert torch.equal(out[:, 0], s0), "row 0 is exactly the real s0 (even outside the limits)"
        ends = norm.unnormalize(torch.tensor([[-1.0] * 3, [1.0] * 3]))[:, :S_DIM]  # [-1, 1] back
        lo, hi = ends  # the normaliser's state limits
        rows, given_rows = out[:, 1:], states[:, 1:]
        assert ((rows >= lo) & (rows <= hi)).all(), (
            f"rows 1.. inside the state limits {lo.tolist()} .. {hi.tolist()}: got "
            f"{rows.amin((0, 1)).tolist()} .. {rows.amax((0, 1)).tolist()}"
        )
        inside = (given_rows >= lo) & (given_rows <= hi)
        assert torch.equal(rows[inside], given_rows[inside]), "a state inside stays unchanged"
        nearest = torch.where(given_rows < lo, lo, hi).expand_as(rows)
        assert torch.equal(rows[~inside], nearest[~inside]), "outside: moved to the nearest limit"

    @pytest.mark.parametrize("mode", ["hardmax", "softmax"])
    @pytest.mark.parametrize("n,keep", [(10, 0.6), (1000, 0.3), (1000, 1.0), (7, 0.01)])
    def test_filter_keeps_fraction(self, mode, n, keep):
        returns = torch.randn(n)
        idx = D.filter_trajectories(returns, keep, mode, 0.05)
        assert len(idx) == max(1, round(keep * n)), (
            f"{mode}: keeps max(1, round({keep} x {n})) = {max(1, round(keep * n))}, got {len(idx)}"
        )
        assert len(set(idx.tolist())) == len(idx), "no trajectory twice"
        assert idx.min() >= 0 and idx.max() < n, "indices of the given trajectories"

    def test_hardmax_keeps_the_best(self):
        returns = torch.randn(500)
        kept = torch.zeros(500, dtype=torch.bool)
        kept[D.filter_trajectories(returns, 0.4, "hardmax")] = True
        assert returns[kept].min() >= returns[~kept].max(), (
            f"hardmax keeps the top 40% by return: worst kept {returns[kept].min():.3f} < best "
            f"dropped {returns[~kept].max():.3f}"
        )

    @settings(derandomize=True, max_examples=40, deadline=None)
    @given(returns=st.lists(st.integers(-3, 3) | st.floats(-1e3, 1e3), min_size=1, max_size=40),
           keep=st.floats(0.01, 1.0))  # fmt: skip
    def test_hardmax_is_the_top_k_property(self, returns, keep):
        """For any returns (ties included) and keep_ratio: hardmax keeps k = max(1, round(keep_ratio
        N)) distinct trajectories, none worse than any it drops."""
        r = torch.tensor(returns, dtype=torch.float32)
        idx = D.filter_trajectories(r, keep, "hardmax")
        k = round(keep * len(r)) or 1  # at least one
        assert len(idx) == k and len(set(idx.tolist())) == k, (
            f"hardmax keeps k = max(1, round({keep:.3f} x {len(r)})) = {k} distinct, got "
            f"{idx.tolist()}"
        )
        kept = torch.zeros(len(r), dtype=torch.bool)
        kept[idx] = True
        if not kept.all():
            assert r[kept].min() >= r[~kept].max(), (
                f"hardmax keeps the top k: worst kept {r[kept].min():.3f} < best dropped "
                f"{r[~kept].max():.3f}"
            )

    def test_softmax_temperature_one_prefers_high_returns(self):
        returns = torch.randn(1000)
        warm = returns[D.filter_trajectories(returns, 0.3, "softmax", 1.0)].mean().item()
        hot = returns[D.filter_trajectories(returns, 0.3, "softmax", 100.0)].mean().item()
        assert abs(hot - returns.mean()) < 0.15, f"T = 100: about uniform, mean kept {hot:.3f}"
        assert warm > hot + 0.4, f"T = 1 keeps higher returns: mean {warm:.3f} vs {hot:.3f}"

    def test_softmax_is_the_authors_floored_filter(self):
        """The authors' p = softmax(z / 0.05) (1 - 1e-6) + 1e-6 / N: the few best (here ~6 above
        the floor) are kept, the rest of the kept share is drawn almost uniformly (hardmax overlap
        ~ 0.6)."""
        returns = torch.randn(2048)
        best = set(returns.topk(3).indices.tolist())
        hard = set(D.filter_trajectories(returns, 0.6, "hardmax").tolist())
        overlaps = []
        for _ in range(5):
            kept = set(D.filter_trajectories(returns, 0.6, "softmax", 0.05).tolist())
            assert best <= kept, "softmax at T = 0.05 keeps the 3 best"
            overlaps.append(len(kept & hard) / len(kept))
        assert abs(np.mean(overlaps) - 0.6) < 0.03, (
            f"past the best few the draw is near uniform: overlap with hardmax ~0.6, got "
            f"{np.mean(overlaps):.3f} (hardmax would give 1.0)"
        )

    @pytest.mark.filterwarnings("ignore:std\\(\\):UserWarning")
    def test_softmax_filter_single_trajectory(self):
        """rollout_batch_size=1 is accepted by dydiff.validate, so the softmax filter must cope."""
        idx = D.filter_trajectories(torch.tensor([2.0]), 0.6, "softmax", 0.05)
        assert idx.tolist() == [0], f"one trajectory: keep it, got {idx.tolist()}"

    def test_synthesise_stops_at_terminals(self):
        cfg = tiny_cfg(horizon=8, iterations=0, keep_ratio=1.0)
        n, threshold = 12, 5.0
        start = torch.arange(n, dtype=torch.float32) - 6  # first coordinate: -6 .. 5
        s0 = torch.stack([start, torch.arange(n, dtype=torch.float32)], 1)

        def terminal_fn(s):
            return s[:, 0] >= threshold

        out, stats = D.synthesise(s0, lambda s: torch.zeros(*s.shape[:-1], 1), CounterDynamics(),
                                  None, StateReward(), cfg, terminal_fn)  # fmt: skip
        returns, total = [], 0
        for j in range(n):
            expected_steps, expected_dones = [], []  # by hand: emit until (and incl.) a terminal
            for i in range(cfg.horizon - 1):
                done = start[j].item() + i + 1 >= threshold
                expected_steps.append(i), expected_dones.append(float(done))
                if done:
                    break
            rows = out["states"][:, 1] == j
            steps = (out["states"][rows, 0] - start[j]).tolist()
            assert steps == expected_steps, (
                f"trajectory {j}: transitions up to and including its first terminal, steps "
                f"{expected_steps}, got {steps}"
            )
            assert out["dones"][rows].tolist() == expected_dones, f"trajectory {j}: done flags"
            following = out["states"][rows] + torch.tensor([1.0, 0.0])
            assert torch.equal(out["next_states"][rows], following), "s' follows s"
            assert torch.equal(out["rewards"][rows], out["states"][rows, 0] * 10 + 1), (
                "the reward of a transition is r(s_i, a_i)"
            )
            returns.append(out["rewards"][rows].sum().item())
            total += len(expected_steps)
        assert int(out["dones"].sum()) == int((start + cfg.horizon - 1 >= threshold).sum())
        assert (out["next_states"][out["dones"] == 0, 0] < threshold).all()
        assert (out["next_states"][out["dones"] == 1, 0] >= threshold).all()
        assert len(out["states"]) == stats["kept_transitions"] == total, "kept_transitions"
        assert stats["kept_trajectories"] == n, "keep_ratio 1 keeps every trajectory"
        assert stats["return_all"] == pytest.approx(np.mean(returns), rel=1e-5), (
            "a trajectory's return counts only its steps up to the first terminal"
        )

    def test_synthesise_counts_the_fallen_among_all_and_among_the_kept(self):
        """fallen_all / fallen_kept: the share of trajectories that reach a terminal state, of all
        of them and of those the filter keeps. A fallen one's return stops at its fall, so with a
        reward of 1 per step the top 60% are exactly the six that never fall."""

        class One:
            def predict(self, states, actions):
                return torch.ones(states.shape[:-1])

        cfg = tiny_cfg(horizon=8, iterations=0, keep_ratio=0.6)
        start = torch.tensor([-10.0, -9, -8, -7, -6, -5, 0, 1, 2, 3])  # the last 4 reach 5
        s0 = torch.stack([start, torch.arange(10.0)], 1)
        _, stats = D.synthesise(s0, lambda s: torch.zeros(*s.shape[:-1], 1), CounterDynamics(),
                                None, One(), cfg, lambda s: s[:, 0] >= 5)  # fmt: skip
        assert stats["fallen_all"] == pytest.approx(0.4), f"4 of 10 fall: {stats['fallen_all']}"
        assert stats["fallen_kept"] == 0.0, f"none of the kept 6 falls: {stats['fallen_kept']}"

    def test_synthesise_without_terminal_fn_emits_all_and_filters(self):
        cfg = tiny_cfg(horizon=6, iterations=0, keep_ratio=0.5)
        n = 10
        s0 = torch.stack([torch.randn(n), torch.arange(n, dtype=torch.float32)], 1)
        out, stats = D.synthesise(s0, lambda s: torch.zeros(*s.shape[:-1], 1), CounterDynamics(),
                                  None, StateReward(), cfg)  # fmt: skip
        assert stats["kept_trajectories"] == 5, "keep_ratio 0.5 of 10"
        assert len(out["states"]) == 5 * (cfg.horizon - 1), "H - 1 transitions per trajectory"
        assert (out["dones"] == 0).all(), "no terminal_fn: no terminals"
        kept_ids = set(out["states"][:, 1].long().tolist())
        best = set(s0[:, 0].topk(5).indices.tolist())  # higher start -> higher return
        assert kept_ids == best, f"the filter keeps the best returns {best}, got {kept_ids}"

    def test_uncertainty_penalty_lowers_each_reward_by_penalty_times_u(self):
        """uncertainty_penalty L: every stored reward is r(s, a) - L u(s, a), for all L (sign and
        scale), the states and next states unchanged; off (L = 0, halt 0) u is never computed."""
        n, start = 6, torch.arange(6.0)
        s0 = torch.stack([start, torch.arange(6.0)], 1)
        zero = lambda s: torch.zeros(*s.shape[:-1], 1)  # noqa: E731
        plain, _ = D.synthesise(s0, zero, CertainCounter(), None, StateReward(),
                                tiny_cfg(horizon=6, iterations=0, keep_ratio=1.0))  # fmt: skip
        for penalty in (0.5, 2.0):
            cfg = tiny_cfg(horizon=6, iterations=0, keep_ratio=1.0, uncertainty_penalty=penalty)
            out, _ = D.synthesise(s0, zero, UncertainCounter(), None, StateReward(), cfg)
            for j in range(n):
                a, b = counter_rows(out, j), counter_rows(plain, j)
                assert torch.equal(a["states"], b["states"]), "the same transitions"
                want = b["rewards"] - penalty * b["states"][:, 0] / 10
                assert torch.allclose(a["rewards"], want), (
                    f"penalty {penalty}: reward r - penalty * u, trajectory {j}"
                )

    def test_uncertainty_penalty_acts_before_the_filter_ranks(self):
        """r = 10 s + 1 favours high starts; a penalty 20 u with u = s (in tenths: here u = s/10,
        so L = 200) makes high starts the worst: the filter keeps the low half."""
        s0 = torch.stack([torch.arange(10.0), torch.arange(10.0)], 1)
        cfg = tiny_cfg(horizon=5, iterations=0, keep_ratio=0.5, uncertainty_penalty=200.0)
        out, _ = D.synthesise(s0, lambda s: torch.zeros(*s.shape[:-1], 1), UncertainCounter(),
                              None, StateReward(), cfg)  # fmt: skip
        kept = sorted(set(out["states"][:, 1].long().tolist()))
        assert kept == [0, 1, 2, 3, 4], f"the penalised returns rank the trajectories: {kept}"

    def test_uncertainty_halt_ends_a_trajectory_before_its_first_crossing(self):
        """uncertainty_halt X: trajectory j (u = (start_j + i) / 10 at step i) keeps exactly its
        steps before the first i with u > X; one that starts above X gives no transition; the
        rewards are not penalised (penalty 0)."""
        start = torch.tensor([0.0, 2, 4, 6, 8])
        s0 = torch.stack([start, torch.arange(5.0)], 1)
        cfg = tiny_cfg(horizon=8, iterations=0, keep_ratio=1.0, uncertainty_halt=0.55)
        out, stats = D.synthesise(s0, lambda s: torch.zeros(*s.shape[:-1], 1), UncertainCounter(),
                                  None, StateReward(), cfg)  # fmt: skip
        for j, s in enumerate(start.tolist()):
            steps = (counter_rows(out, j)["states"][:, 0] - s).long().tolist()
            want = [i for i in range(cfg.horizon - 1) if s + i <= 5.5]
            assert steps == want, f"trajectory {j} (start {s}): steps {want}, got {steps}"
        assert torch.equal(out["rewards"], out["states"][:, 0] * 10 + 1), "no penalty"
        assert stats["kept_transitions"] == len(out["states"])

    def test_uncertainty_that_is_zero_changes_no_number(self):
        """With every member equal (u = 0 everywhere) the remedy switched on gives a seeded
        synthesis round bit for bit the one with it off: u draws no random number."""
        cfg = tiny_cfg(horizon=6, iterations=1)
        dyn = D.build_dynamics(cfg, S_DIM, A_DIM)
        with torch.no_grad():
            for p in dyn.net.parameters():
                p.copy_(p[:1].expand_as(p))
        dm, reward = D.build_diffusion(cfg, S_DIM, A_DIM), D.build_reward_model(cfg, S_DIM, A_DIM)
        s0 = torch.randn(16, S_DIM)
        results = []
        for changes in ({}, dict(uncertainty_penalty=3.0, uncertainty_halt=1e-6)):
            torch.manual_seed(5)
            results.append(D.synthesise(s0, policy, dyn, dm, reward, tiny_cfg(horizon=6,
                                        iterations=1, **changes)))  # fmt: skip
        (off, off_stats), (on, on_stats) = results
        for k in off:
            assert torch.equal(off[k], on[k]), f"{k}: the same with u = 0"
        assert off_stats == on_stats


def short_run(seed: int):
    torch.manual_seed(seed)
    np.random.seed(seed)
    data = linear_data(n_episodes=6, ep_len=20)
    data["terminals"][19::20] = 1  # episode ends are terminal
    cfg = tiny_cfg(rollout_every=3, rollout_batch_size=8, iterations=1, keep_ratio=0.5,
                   filter="softmax", batch_size=16, dm_steps=3, model_epoch_steps=3,
                   model_max_epochs=1)  # fmt: skip
    models = {
        "dynamics": D.train_dynamics(data, cfg),
        "reward": D.train_reward_model(data, cfg),
        "diffusion": D.train_diffusion(data, cfg),
    }
    trainer = D.DyDiffTrainer(cfg, data, models, terminal_fn=lambda s: s[:, 0].abs() > 1.5)
    logs = []
    trainer.train(7, log=lambda u, m: logs.append((u, m)), log_every=1)
    params = torch.cat(
        [p.flatten() for p in trainer.agent.actor.parameters()]
        + [p.flatten() for p in trainer.agent.q1.parameters()]
    )
    return logs, params, trainer.synthetic.state_dict()["data"]["states"]


def one_step_error(states: torch.Tensor, actions: torch.Tensor) -> float:
    a, b = torch.as_tensor(A_MAT), torch.as_tensor(B_MAT)
    pred = states[:, :-1] @ a.T + actions[:, :-1] @ b.T
    return (states[:, 1:] - pred).norm(dim=-1).mean().item()


class TestTraining:
    """The train_* functions, fit_with_holdout and the DyDiffTrainer loop: real models end to end,
    so a blank anywhere may fail these."""

    def test_diffusion_windows_stay_inside_episodes(self, monkeypatch):
        """train_diffusion trains on windows of H consecutive rows of one episode, drawn from
        every such window; observation = (episode, step), so a window shows where it came from."""
        lengths, h = [12, 5, 20, 9, 30], 8
        ids = np.repeat(np.arange(len(lengths)), lengths)
        steps = np.concatenate([np.arange(n) for n in lengths])
        obs = np.stack([ids, steps], 1).astype(np.float32)
        data = dict(observations=obs, next_observations=(obs + [0, 1]).astype(np.float32),
                    actions=(steps[:, None] / 40).astype(np.float32), episode_ids=ids,
                    rewards=np.zeros(len(ids), np.float32), terminals=np.zeros(len(ids), np.float32))  # fmt: skip
        seen = []

        def record(dm, x0, mask):  # the loss stub: keep the raw window, no learning signal
            seen.append(dm.norm.unnormalize(x0).round())
            return (dm.denoiser(x0, torch.zeros(len(x0), dtype=torch.long)) * 0).sum()

        monkeypatch.setattr(D.GaussianDiffusion, "loss", record)
        D.train_diffusion(data, tiny_cfg(horizon=h, dm_steps=20, dm_batch_size=64))
        windows = torch.cat(seen)
        assert windows.shape[1:] == (h, S_DIM + A_DIM), f"windows [B, H, S + A]: {windows.shape}"
        episode, step = windows[..., 0], windows[..., 1]
        crossing = int((episode != episode[:, :1]).any(1).sum())
        assert crossing == 0, f"no window crosses an episode end: {crossing} of {len(episode)} do"
        gaps = (step[:, 1:] - step[:, :-1] != 1).any(1).sum()
        assert gaps == 0, f"a window is {h} consecutive rows: {int(gaps)} are not"
        starts = {(int(e), int(s)) for e, s in zip(episode[:, 0], step[:, 0])}
        every = {(e, s) for e, n in enumerate(lengths) for s in range(n - h + 1)}
        assert starts == every, f"every window start is drawn: missing {sorted(every - starts)}"

    def test_injected_states_can_reach_a_terminal_state_of_the_data(self):
        """A terminal state is in the data as a next observation only, outside the observations'
        range (a fallen hopper is lower than any hopper still standing). The DM's limits cover it,
        so policy injection's clip leaves it as it is: a synthetic trajectory can end as the data's
        end."""
        data = linear_data(n_episodes=4, ep_len=10, noise=0.01)
        data["next_observations"][9, 0] = data["observations"][:, 0].min() - 5  # episode 0's end
        dm = D.train_diffusion(data, tiny_cfg(horizon=8, dm_steps=1))
        fallen = torch.as_tensor(data["next_observations"][9]).expand(2, 8, S_DIM)
        clipped = D.clip_to_data(fallen, torch.as_tensor(data["observations"][:2]), dm.norm)
        assert torch.allclose(clipped[:, 1:], fallen[:, 1:], atol=1e-5), (
            "the DM's limits cover the next observations, where terminal states are"
        )

    def test_trainer_holds_the_data_as_its_real_buffer(self):
        data = linear_data(n_episodes=2, ep_len=5)
        data["terminals"][3] = 1
        buf = D.DyDiffTrainer(tiny_cfg(), data).real
        got = buf.data
        assert buf.size == 10, f"10 rows of data: real buffer size {buf.size}"
        assert torch.equal(got["states"], torch.as_tensor(data["observations"]))
        assert torch.equal(got["next_states"], torch.as_tensor(data["next_observations"]))
        assert torch.equal(got["rewards"][:, 0], torch.as_tensor(data["rewards"]))
        assert got["dones"][:, 0].tolist() == data["terminals"].tolist(), "dones are the terminals"

    def test_empty_holdout_is_an_error_not_an_untrained_model(self):
        data = linear_data(n_episodes=1, ep_len=4)  # int(4 * 0.2) = 0 holdout rows
        cfg = tiny_cfg(model_epoch_steps=20, model_max_epochs=2)
        with pytest.raises(ValueError, match="too few"):
            D.train_dynamics(data, cfg)

    def test_holdout_rows_are_never_trained_on(self):
        """fit_with_holdout holds out min(int(N holdout_ratio), max_holdout) rows, chosen at
        random: every training batch of every member comes from the other rows, and the errors
        it returns are measured on the held-out ones. Row i's input carries i, so a row shows."""
        n = 200
        x = torch.cat([torch.arange(n, dtype=torch.float32)[:, None] * 20 + 100,
                       torch.randn(n, S_DIM + A_DIM - 1)], 1)  # fmt: skip
        y = torch.randn(n, S_DIM)
        model = D.EnsembleDynamics(S_DIM, A_DIM, n_members=3, n_elites=2, hidden=8)
        model.input_norm.fit_zscore(x)
        trained, held = set(), []
        loss, errors = model.loss, model.errors

        def record_loss(sa, delta):
            trained.update(sa[..., 0].sub(100).div(20).round().long().flatten().tolist())
            return loss(sa, delta)

        def record_errors(sa, delta):
            held.append(set(sa[..., 0].sub(100).div(20).round().long().flatten().tolist()))
            return errors(sa, delta)

        model.loss, model.errors = record_loss, record_errors
        for ratio, most in ((0.2, 5000), (0.3, 25)):
            trained.clear(), held.clear()
            cfg = tiny_cfg(holdout_ratio=ratio, max_holdout=most, model_epoch_steps=5,
                           model_max_epochs=2, model_batch_size=64)  # fmt: skip
            D.fit_with_holdout(model, x, y, cfg)
            want = min(int(n * ratio), most)
            assert held and all(h == held[0] for h in held), "one holdout set, checked every epoch"
            assert len(held[0]) == want, (
                f"holdout_ratio {ratio}, max_holdout {most}: {want} rows held out, got "
                f"{len(held[0])}"
            )
            assert not trained & held[0], (
                f"held-out rows are never trained on: {len(trained & held[0])} of them were in "
                "training batches"
            )
            assert held[0] != set(range(n - want, n)) and held[0] != set(range(want)), (
                "the holdout rows are drawn at random, not the first or last rows"
            )

    def test_holdout_early_stopping_restores_best_weights(self):
        """fit_with_holdout returns the holdout errors of the weights it leaves in the model."""
        data = linear_data(n_episodes=4, ep_len=25)
        cfg = tiny_cfg(model_epoch_steps=3, model_max_epochs=6, model_patience=2, model_lr=1e-1)
        sa, delta, _ = D._inputs(data, "cpu")
        model = D.EnsembleDynamics(S_DIM, A_DIM, 3, 2, 16)
        model.input_norm.fit_zscore(sa)
        logged = []
        torch.manual_seed(1)
        errors = D.fit_with_holdout(model, sa, delta, cfg,
                                    log=lambda e, m: logged.append(m["holdout_mse"]))  # fmt: skip
        assert 1 <= len(logged) <= cfg.model_max_epochs, f"one log per epoch: {len(logged)}"
        assert errors.mean().item() <= min(logged) + 1e-6, (
            f"the best epoch's weights return: holdout {errors.mean():.4f} > best logged "
            f"{min(logged):.4f}"
        )

    def test_baseline_trainer_uses_only_real_data(self):
        data = linear_data(n_episodes=2, ep_len=20)
        trainer = D.DyDiffTrainer(tiny_cfg(batch_size=16), data, models=None)
        before = [p.clone() for p in trainer.agent.q1.parameters()]
        trainer.train(3)
        assert trainer.updates == 3 and trainer.synthetic.size == 0, "no models: no synthetic rows"
        assert not all(torch.equal(a, b) for a, b in zip(before, trainer.agent.q1.parameters()))

    def test_lambda_is_logged_by_both_algorithms(self):
        trainer = D.DyDiffTrainer(tiny_cfg(), linear_data(n_episodes=4, ep_len=20))
        logs = []
        trainer.train(4, log=lambda u, m: logs.append(m), log_every=2)
        assert len(logs) == 2 and all(np.isfinite(m["lambda"]) for m in logs), "TD3+BC logs it"
        assert any("lambda" in m for _, m in short_run(0)[0]), "DyDiff (with models) logs it too"

    def test_same_seed_same_numbers(self):
        logs1, params1, rows1 = short_run(0)
        logs2, params2, rows2 = short_run(0)
        assert len(logs1) == 7 and logs1 == logs2, "same seed: the same logged numbers"
        assert torch.equal(params1, params2), "same seed: the same networks"
        assert len(rows1) > 0 and torch.equal(rows1, rows2), "same seed: the same synthetic rows"
        _, params3, _ = short_run(1)
        assert not torch.equal(params1, params3), "the seed does matter"

    def test_reward_training_fits_the_data_rewards(self):
        data = linear_data(n_episodes=20, ep_len=40)
        s, a = data["observations"], data["actions"]
        data["rewards"] = (s[:, 0] - a[:, 0] ** 2).astype(np.float32)
        cfg = tiny_cfg(reward_hidden=64, model_batch_size=64, model_epoch_steps=100,
                       model_max_epochs=4, model_lr=3e-3)  # fmt: skip
        model = D.train_reward_model(data, cfg)
        s, a = torch.as_tensor(data["observations"]), torch.as_tensor(data["actions"])
        r = torch.as_tensor(data["rewards"])
        mse = ((model.predict(s, a) - r) ** 2).mean().item()
        assert mse < 0.05 * r.var().item(), (
            f"r = s_0 - a^2 from the data's rewards: MSE {mse:.4f}, variance {r.var():.3f}"
        )

    def test_dynamics_training_picks_the_elites_by_holdout_error(self, monkeypatch):
        data = linear_data(n_episodes=20, ep_len=40, noise=0.01)
        cfg = tiny_cfg(n_members=4, n_elites=2, dynamics_hidden=32, model_batch_size=64,
                       model_epoch_steps=100, model_max_epochs=4, model_lr=3e-3)  # fmt: skip
        errors = []  # the holdout errors train_dynamics chose the elites by
        fit_real = D.fit_with_holdout
        def recording(*args):
            errors.append(fit_real(*args))
            return errors[-1]

        monkeypatch.setattr(D, "fit_with_holdout", recording)
        model = D.train_dynamics(data, cfg)
        var = (data["next_observations"] - data["observations"]).var(0).mean()
        assert errors[0].max() < 0.02 * var, f"holdout MSE {errors[0]} vs variance {var:.3f}"
        elites = model.elites.tolist()
        assert len(elites) == cfg.n_elites == len(set(elites)), f"2 distinct elites: {elites}"
        others = [i for i in range(cfg.n_members) if i not in elites]
        assert errors[0][elites].max() <= errors[0][others].min(), (
            f"the elites have the lowest holdout errors {errors[0]}: got {elites}"
        )
        fake = torch.tensor([0.3, 0.1, 0.5, 0.2, 0.05])  # with known errors the choice is exact
        monkeypatch.setattr(D, "fit_with_holdout", lambda *a, **k: fake.clone())
        cfg5 = tiny_cfg(n_members=5, n_elites=3)
        model5 = D.train_dynamics(linear_data(n_episodes=2, ep_len=10), cfg5)
        assert sorted(model5.elites.tolist()) == [1, 3, 4], f"errors {fake}: elites 1, 3, 4"

    def test_diffusion_learns_linear_dynamics(self):
        data = linear_data(n_episodes=16, ep_len=40, noise=0.01)
        cfg = tiny_cfg(horizon=8, mlp_width=128, mlp_blocks=2, n_diffusion_steps=10, dm_steps=300,
                       dm_batch_size=64, dm_lr=2e-3, ema_decay=0.9)  # fmt: skip
        trained = D.train_diffusion(data, cfg)
        untrained = D.build_diffusion(cfg, S_DIM, A_DIM)
        untrained.norm.load_state_dict(trained.norm.state_dict())  # same scale, no learning
        test = linear_data(n_episodes=8, ep_len=cfg.horizon, noise=0.0, seed=1)
        s0 = torch.as_tensor(test["observations"]).view(8, cfg.horizon, S_DIM)[:, 0]
        actions = torch.as_tensor(test["actions"]).view(8, cfg.horizon, A_DIM)
        s0, actions = s0.repeat(4, 1), actions.repeat(4, 1, 1)
        err_trained = one_step_error(trained.sample_states(s0, actions), actions)
        err_untrained = one_step_error(untrained.sample_states(s0, actions), actions)
        assert err_trained < 0.2 * err_untrained, (
            f"the DM learns s' = A s + B a: one-step error of its samples {err_trained:.3f} must "
            f"be below 0.2x an untrained one's {err_untrained:.3f} (seen: ~0.02x)"
        )

    @pytest.mark.parametrize("entry", ["trainer", "dynamics", "reward", "diffusion"])
    def test_every_entry_of_data_checks_it(self, entry):
        """Rewards shaped [N, 1] (a common slip) are named at the door, not deep in a matmul."""
        data = contract_data()
        data["rewards"] = data["rewards"][:, None]
        cfg = tiny_cfg(dm_steps=1, model_epoch_steps=1, model_max_epochs=1)
        call = dict(
            trainer=lambda: D.DyDiffTrainer(cfg, data),
            dynamics=lambda: D.train_dynamics(data, cfg),
            reward=lambda: D.train_reward_model(data, cfg),
            diffusion=lambda: D.train_diffusion(data, cfg),
        )[entry]
        with pytest.raises(ValueError, match=r"data\['rewards'\]: expected shape \[N\]"):
            call()

    def test_every_entry_accepts_contract_data(self):
        data = contract_data()
        cfg = tiny_cfg(horizon=4, dm_steps=1, model_epoch_steps=1, model_max_epochs=1)
        models = dict(dynamics=D.train_dynamics(data, cfg), reward=D.train_reward_model(data, cfg),
                      diffusion=D.train_diffusion(data, cfg))  # fmt: skip
        trainer = D.DyDiffTrainer(cfg, data, models)
        trainer.train(2)
        assert trainer.updates == 2, f"the trainer must run on contract data: {trainer.updates}"
