"""Tests of dydiff.py and train_offline.py.

dydiff.py: inpainting, learning on known linear systems, TD3+BC, policy injection,
reward filtering, termination, data plumbing, config validation, determinism, optional imports.
train_offline.py: generated maze data, the MuJoCo path, termination rules, evaluation, the command
line end to end (--smoke), bad input, Ctrl-C and --resume, atomic writes.

CPU only and tiny models: the whole file is meant to run in well under a minute on a busy 2-core box.
"""

import csv
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import minari
import numpy as np
import pytest
import torch
import torch.nn as nn

import dydiff as D
import train_offline as T

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
    base = dict(
        updates=10,
        eval_every=10,
        horizon=8,
        iterations=1,
        rollout_batch_size=16,
        rollout_every=4,
        synthetic_capacity=500,
        n_diffusion_steps=10,
        mlp_width=64,
        mlp_blocks=2,
        unet_dim=8,
        unet_dim_mults=(1, 2),
        dm_steps=5,
        dm_batch_size=16,
        ema_decay=0.9,
        n_members=3,
        n_elites=2,
        dynamics_hidden=32,
        reward_hidden=32,
        model_batch_size=32,
        model_epoch_steps=5,
        model_max_epochs=2,
        batch_size=32,
    )
    base.update(kw)
    cfg = D.Config(**base)
    cfg.validate()
    return cfg


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


class Recorder(nn.Module):
    """Wraps a denoiser and records every input it is given."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.inputs = net, []

    def forward(self, x, t):
        self.inputs.append(x.detach().clone())
        return self.net(x, t)


def make_denoiser(kind: str, horizon: int, d: int) -> nn.Module:
    if kind == "mlp":
        return D.MLPDenoiser(horizon, d, width=32, n_blocks=1)
    return D.TemporalUnet(horizon, d, dim=8, dim_mults=(1, 2))


def random_mask(h: int, d: int) -> torch.Tensor:
    mask = torch.rand(h, d) < 0.5
    mask[0, 0], mask[-1, -1] = True, False  # both kinds present
    return mask


# ------------------------------------------------------------------------------------------------
# Inpainting
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlp", "unet"])
@pytest.mark.parametrize("predict_epsilon", [False, True])
def test_training_inputs_are_inpainted(kind, predict_epsilon):
    h, d = 8, 3
    dm = D.GaussianDiffusion(
        Recorder(make_denoiser(kind, h, d)), h, d, n_steps=10, predict_epsilon=predict_epsilon
    )
    x0 = torch.rand(32, h, d) * 2 - 1
    for mask in (random_mask(h, d), dm.condition_mask(S_DIM)):
        dm.denoiser.inputs.clear()
        loss = dm.loss(x0, mask)
        (xt,) = dm.denoiser.inputs
        assert torch.equal(xt[:, mask], x0[:, mask])  # fixed entries: exactly their values
        assert not torch.allclose(xt[:, ~mask], x0[:, ~mask])  # free entries: noised
        assert torch.isfinite(loss)


def test_loss_ignores_fixed_entries():
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
    assert dm.loss(x0, mask).item() == 0.0


@pytest.mark.parametrize("kind", ["mlp", "unet"])
@pytest.mark.parametrize("predict_epsilon", [False, True])
def test_samples_are_inpainted(kind, predict_epsilon):
    h, d = 8, 3
    dm = D.GaussianDiffusion(
        Recorder(make_denoiser(kind, h, d)), h, d, n_steps=10, predict_epsilon=predict_epsilon
    )
    values = torch.randn(16, h, d) * 0.7
    for mask in (random_mask(h, d), dm.condition_mask(S_DIM)):
        dm.ema.inputs.clear()
        x = dm.sample(values, mask)
        assert x.shape == values.shape
        assert torch.equal(x[:, mask], values[:, mask])
        assert len(dm.ema.inputs) == dm.n_steps  # the sampler uses the EMA copy, once per step
        for xt in dm.ema.inputs:  # every denoiser input during sampling is inpainted too
            assert torch.equal(xt[:, mask], values[:, mask])
        assert torch.isfinite(x).all() and x[:, ~mask].abs().max() > 0


@pytest.mark.parametrize("denoiser", ["mlp", "unet"])
def test_sample_states_keeps_s0_exactly(denoiser):
    cfg = tiny_cfg(denoiser=denoiser)
    dm = D.build_diffusion(cfg, S_DIM, A_DIM)
    dm.norm.fit_limits(torch.randn(200, S_DIM + A_DIM) * 3 + 1)
    s0 = torch.randn(10, S_DIM) * 3 + 1 + 1e-3 * torch.rand(10, S_DIM)  # awkward floats
    actions = torch.rand(10, cfg.horizon, A_DIM) * 2 - 1
    states = dm.sample_states(s0, actions)
    assert states.shape == (10, cfg.horizon, S_DIM)
    assert torch.equal(states[:, 0], s0)
    assert torch.isfinite(states).all()


def test_condition_mask_fixes_first_state_and_all_actions():
    dm = D.build_diffusion(tiny_cfg(), S_DIM, A_DIM)
    mask = dm.condition_mask(S_DIM)
    expected = torch.zeros(8, S_DIM + A_DIM, dtype=torch.bool)
    expected[0, :S_DIM] = True
    expected[:, S_DIM:] = True
    assert torch.equal(mask, expected)


# ------------------------------------------------------------------------------------------------
# The DDPM learns a known system
# ------------------------------------------------------------------------------------------------


def one_step_error(states: torch.Tensor, actions: torch.Tensor) -> float:
    a, b = torch.as_tensor(A_MAT), torch.as_tensor(B_MAT)
    pred = states[:, :-1] @ a.T + actions[:, :-1] @ b.T
    return (states[:, 1:] - pred).norm(dim=-1).mean().item()


def test_diffusion_learns_linear_dynamics():
    data = linear_data(n_episodes=16, ep_len=40, noise=0.01)
    cfg = tiny_cfg(
        horizon=8,
        mlp_width=128,
        mlp_blocks=2,
        n_diffusion_steps=10,
        dm_steps=300,
        dm_batch_size=64,
        dm_lr=2e-3,
        ema_decay=0.9,
    )
    trained = D.train_diffusion(data, cfg)
    untrained = D.build_diffusion(cfg, S_DIM, A_DIM)
    untrained.norm.load_state_dict(trained.norm.state_dict())  # same scale, no learning
    test = linear_data(n_episodes=8, ep_len=cfg.horizon, noise=0.0, seed=1)
    s0 = torch.as_tensor(test["observations"]).view(8, cfg.horizon, S_DIM)[:, 0]
    actions = torch.as_tensor(test["actions"]).view(8, cfg.horizon, A_DIM)
    s0, actions = s0.repeat(4, 1), actions.repeat(4, 1, 1)
    err_trained = one_step_error(trained.sample_states(s0, actions), actions)
    err_untrained = one_step_error(untrained.sample_states(s0, actions), actions)
    assert err_trained < 0.2 * err_untrained, (err_trained, err_untrained)  # seen: ~0.02x


# ------------------------------------------------------------------------------------------------
# Dynamics ensemble
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def fitted_dynamics():
    data = linear_data(n_episodes=20, ep_len=40, noise=0.01)
    cfg = tiny_cfg(
        n_members=4,
        n_elites=2,
        dynamics_hidden=32,
        model_batch_size=64,
        model_epoch_steps=100,
        model_max_epochs=4,
        model_lr=3e-3,
    )
    model, errors = D.train_dynamics(data, cfg)
    return data, cfg, model, errors


def test_dynamics_fits_linear_system(fitted_dynamics):
    data, cfg, model, errors = fitted_dynamics
    delta = data["next_observations"] - data["observations"]
    var = delta.var(0).mean()
    assert errors.shape == (cfg.n_members,)
    assert errors.max() < 0.02 * var, (errors, var)  # explains > 98% of the variance (seen: 99.7%)
    # and on fresh data from the same system, through predict()
    test = linear_data(n_episodes=5, ep_len=20, noise=0.0, seed=7)
    s, a = torch.as_tensor(test["observations"]), torch.as_tensor(test["actions"])
    pred = model.predict(s, a)
    mse = ((pred - torch.as_tensor(test["next_observations"])) ** 2).mean()
    assert mse < 0.02 * var


def test_elites_are_lowest_holdout_errors(fitted_dynamics, monkeypatch):
    _, cfg, model, errors = fitted_dynamics
    elites = model.elites.tolist()
    assert len(elites) == cfg.n_elites == len(set(elites))
    others = [i for i in range(cfg.n_members) if i not in elites]
    assert errors[elites].max() <= errors[others].min()
    # with known holdout errors the choice is exact
    fake = torch.tensor([0.3, 0.1, 0.5, 0.2, 0.05])
    monkeypatch.setattr(D, "fit_with_holdout", lambda *a, **k: fake.clone())
    cfg5 = tiny_cfg(n_members=5, n_elites=3)
    model5, _ = D.train_dynamics(linear_data(n_episodes=2, ep_len=10), cfg5)
    assert sorted(model5.elites.tolist()) == [1, 3, 4]


def test_dynamics_logvar_within_bounds(fitted_dynamics):
    data, _, model, _ = fitted_dynamics
    sa = torch.as_tensor(np.concatenate([data["observations"], data["actions"]], 1))
    tol = 1e-4  # the soft clamp may overshoot max_logvar by log1p(exp(-(max - min))) ~ 3e-5
    with torch.no_grad():
        for scale in (1.0, 1e3, -1e3):  # far outside the data the raw log-variance runs off
            _, logvar = model(sa.expand(model.net.n_members, -1, -1) * scale)
            assert (logvar >= model.min_logvar - tol).all()
            assert (logvar <= model.max_logvar + tol).all()
    assert (model.min_logvar < model.max_logvar).all()


def test_holdout_early_stopping_restores_best_weights():
    """fit_with_holdout returns the holdout errors of the weights it leaves in the model."""
    data = linear_data(n_episodes=4, ep_len=25)
    cfg = tiny_cfg(model_epoch_steps=3, model_max_epochs=6, model_patience=2, model_lr=1e-1)
    sa, delta, _ = D._inputs(data, "cpu")
    model = D.EnsembleDynamics(S_DIM, A_DIM, 3, 2, 16)
    model.input_norm.fit_zscore(sa)
    logged = []
    torch.manual_seed(1)
    errors = D.fit_with_holdout(
        model, sa, delta, cfg, log=lambda e, m: logged.append(m["holdout_mse"])
    )
    assert 1 <= len(logged) <= cfg.model_max_epochs
    # the restored weights are the best epoch's (or the initial ones): never worse than every epoch
    assert errors.mean().item() <= min(logged) + 1e-6


# ------------------------------------------------------------------------------------------------
# TD3+BC
# ------------------------------------------------------------------------------------------------


def one_step_batch(n=256):
    """Every state appears with a = +0.5 (reward 1) and a = -0.5 (reward 0); every step is terminal."""
    s = torch.randn(n, 2)
    a = torch.cat([torch.full((n, 1), 0.5), torch.full((n, 1), -0.5)])
    return {
        "states": torch.cat([s, s]),
        "actions": a,
        "rewards": torch.cat([torch.ones(n, 1), torch.zeros(n, 1)]),
        "next_states": torch.randn(2 * n, 2),
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
    test_states = torch.randn(500, 2)
    return agent, agent.act(test_states), test_states


def test_td3bc_prefers_the_better_action():
    agent, actions, states = train_td3bc(alpha=2.5)
    assert actions.mean() > 0.3, actions.mean()
    assert (actions > 0).float().mean() > 0.95
    # the critic learned Q = r (dones = 1): Q(s, +0.5) ~ 1 and Q(s, -0.5) ~ 0
    s = agent.state_norm(states)
    q_good = agent.q(agent.critic, s, torch.full((500, 1), 0.5)).mean()
    q_bad = agent.q(agent.critic, s, torch.full((500, 1), -0.5)).mean()
    assert abs(q_good - 1) < 0.2 and abs(q_bad) < 0.2, (q_good, q_bad)


def test_td3bc_without_q_term_imitates_data():
    _, actions, _ = train_td3bc(alpha=0.0)
    assert abs(actions.mean()) < 0.15, actions.mean()  # data mean 0 (the Q term drives it to ~0.9)
    assert actions.abs().max() < 0.45


def test_td3bc_delayed_actor_and_target_updates():
    data = one_step_batch(64)
    cfg = tiny_cfg(policy_freq=2, batch_size=32)
    agent = D.TD3BC(2, 1, D.Normalizer(2), cfg)
    actor0 = [p.clone() for p in agent.actor.parameters()]
    target0 = [p.clone() for p in agent.critic_target.parameters()]
    out = agent.update({k: v[:32] for k, v in data.items()})
    assert "actor_loss" not in out
    assert all(torch.equal(a, b) for a, b in zip(actor0, agent.actor.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(target0, agent.critic_target.parameters()))
    out = agent.update({k: v[32:] for k, v in data.items()})
    assert "actor_loss" in out
    assert not all(torch.equal(a, b) for a, b in zip(actor0, agent.actor.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(target0, agent.critic_target.parameters()))


# ------------------------------------------------------------------------------------------------
# Policy injection
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def rollout_parts():
    cfg = tiny_cfg()
    dyn = D.EnsembleDynamics(S_DIM, A_DIM, n_members=3, n_elites=1, hidden=16)
    dyn.input_norm.fit_zscore(torch.randn(100, S_DIM + A_DIM))
    dm = D.build_diffusion(cfg, S_DIM, A_DIM)
    dm.norm.fit_limits(torch.randn(100, S_DIM + A_DIM) * 2)
    w = torch.randn(S_DIM, A_DIM)

    def policy(s):
        return torch.tanh(s @ w + 0.1)

    s0 = torch.randn(12, S_DIM)
    return cfg, dyn, dm, policy, s0


@pytest.mark.parametrize("iterations", [0, 1, 3])
def test_rollout_shapes_s0_and_policy_consistency(rollout_parts, iterations):
    cfg, dyn, dm, policy, s0 = rollout_parts
    states, actions = D.dydiff_rollout(s0, policy, dyn, dm, cfg.horizon, iterations)
    assert states.shape == (12, cfg.horizon, S_DIM)
    assert actions.shape == (12, cfg.horizon, A_DIM)
    assert torch.equal(states[:, 0], s0)
    assert torch.equal(actions, policy(states))


def test_rollout_without_iterations_is_a_dynamics_rollout(rollout_parts):
    cfg, dyn, _, policy, s0 = rollout_parts
    dyn.elites.copy_(torch.tensor([2]))  # one elite: predict() is deterministic
    states, actions = D.dydiff_rollout(s0, policy, dyn, None, cfg.horizon, 0)
    s = s0
    with torch.no_grad():
        for i in range(cfg.horizon):
            a = policy(s)
            assert torch.allclose(states[:, i], s, atol=1e-6)
            assert torch.allclose(actions[:, i], a, atol=1e-6)
            sa = torch.cat([s, a], -1)[None]
            # member 2 alone, computed by hand: z-score, 4 SiLU layers, mean half of the output
            h = dyn.input_norm(sa)
            for layer in dyn.net:
                if isinstance(layer, D.EnsembleLinear):
                    h = torch.baddbmm(layer.bias[2:3], h, layer.weight[2:3])
                else:
                    h = layer(h)
            s = s + h[0, :, :S_DIM]


def test_rollout_averages_diffusion_states(rollout_parts):
    """One injection round: states = (dynamics rollout + DM sample) / 2, actions = pi(states)."""
    cfg, dyn, dm, policy, s0 = rollout_parts
    torch.manual_seed(5)
    states, actions = D.dydiff_rollout(s0, policy, dyn, dm, cfg.horizon, 1)
    torch.manual_seed(5)
    states0, actions0 = D.dydiff_rollout(s0, policy, dyn, dm, cfg.horizon, 0)
    sampled = dm.sample_states(s0, actions0)
    expected = (states0 + sampled) / 2
    assert torch.allclose(states, expected, atol=1e-6)
    assert torch.equal(actions, policy(states))
    assert not torch.allclose(states, states0)  # the DM did change the states


def test_predict_uses_only_elites():
    dyn = D.EnsembleDynamics(S_DIM, A_DIM, n_members=4, n_elites=2, hidden=16)
    dyn.elites.copy_(torch.tensor([1, 3]))
    s, a = torch.randn(200, S_DIM), torch.randn(200, A_DIM)
    with torch.no_grad():
        mean, _ = dyn(torch.cat([s, a], -1).expand(4, -1, -1))
    pred = dyn.predict(s, a)
    diff = ((pred - s)[None] - mean).abs().amax(-1)  # [E, B]: 0 for the member that was used
    used = diff.argmin(0)
    assert torch.allclose(diff.min(0).values, torch.zeros(200), atol=1e-5)
    assert set(used.tolist()) == {1, 3}


# ------------------------------------------------------------------------------------------------
# Reward filtering
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["hardmax", "softmax"])
@pytest.mark.parametrize("n,keep", [(10, 0.6), (1000, 0.3), (1000, 1.0), (7, 0.01)])
def test_filter_keeps_fraction(mode, n, keep):
    returns = torch.randn(n)
    idx = D.filter_trajectories(returns, keep, mode, 0.05)
    assert len(idx) == max(1, round(keep * n))
    assert len(set(idx.tolist())) == len(idx)  # no trajectory twice
    assert idx.min() >= 0 and idx.max() < n


def test_hardmax_keeps_the_best():
    returns = torch.randn(500)
    idx = D.filter_trajectories(returns, 0.4, "hardmax")
    kept = torch.zeros(500, dtype=torch.bool)
    kept[idx] = True
    assert returns[kept].min() >= returns[~kept].max()


def test_softmax_temperature_one_prefers_high_returns():
    returns = torch.randn(1000)
    warm = returns[D.filter_trajectories(returns, 0.3, "softmax", 1.0)].mean()
    hot = returns[D.filter_trajectories(returns, 0.3, "softmax", 100.0)].mean()
    assert abs(hot - returns.mean()) < 0.15  # very high temperature: about uniform
    assert warm > hot + 0.4


@pytest.mark.parametrize("temperature", [0.05, 0.01])
def test_softmax_low_temperature_prefers_high_returns(temperature):
    returns = torch.randn(1000)
    top = returns.topk(300).values.mean()
    cold = returns[D.filter_trajectories(returns, 0.3, "softmax", temperature)].mean()
    # as temperature -> 0, sampling proportional to exp(z / T) without replacement -> hardmax
    assert cold > returns.mean() + 0.9 * (top - returns.mean()), (cold, top)


@pytest.mark.filterwarnings("ignore:std\\(\\):UserWarning")
def test_softmax_filter_single_trajectory():
    """rollout_batch_size=1 is accepted by Config.validate, so the softmax filter must cope."""
    idx = D.filter_trajectories(torch.tensor([2.0]), 0.6, "softmax", 0.05)
    assert idx.tolist() == [0]


# ------------------------------------------------------------------------------------------------
# Termination in synthesise
# ------------------------------------------------------------------------------------------------


class CounterDynamics:
    """s' = s + (1, 0): coordinate 0 counts steps, coordinate 1 is the trajectory's id."""

    def predict(self, states, actions, sample=False):
        return states + torch.tensor([1.0, 0.0])


class StateReward:
    def predict(self, states, actions):
        return states[..., 0] * 10 + 1


def test_synthesise_stops_at_terminals():
    cfg = tiny_cfg(horizon=8, iterations=0, keep_ratio=1.0)
    n, threshold = 12, 5.0
    start = torch.arange(n, dtype=torch.float32) - 6  # first coordinate: -6 .. 5
    s0 = torch.stack([start, torch.arange(n, dtype=torch.float32)], 1)

    def terminal_fn(s):
        return s[:, 0] >= threshold

    out, stats = D.synthesise(
        s0,
        lambda s: torch.zeros(*s.shape[:-1], 1),
        CounterDynamics(),
        None,
        StateReward(),
        cfg,
        terminal_fn,
    )
    returns, total = [], 0
    for j in range(n):
        expected_steps, expected_dones = [], []  # by hand: emit until (and including) a terminal
        for i in range(cfg.horizon - 1):
            done = start[j].item() + i + 1 >= threshold
            expected_steps.append(i), expected_dones.append(float(done))
            if done:
                break
        rows = out["states"][:, 1] == j
        assert (out["states"][rows, 0] - start[j]).tolist() == expected_steps
        assert out["dones"][rows].tolist() == expected_dones
        assert torch.equal(out["next_states"][rows], out["states"][rows] + torch.tensor([1.0, 0.0]))
        assert torch.equal(out["rewards"][rows], out["states"][rows, 0] * 10 + 1)
        returns.append(out["rewards"][rows].sum().item())
        total += len(expected_steps)
    # a terminal step is emitted with done = 1, nothing after it
    assert int(out["dones"].sum()) == int((start + cfg.horizon - 1 >= threshold).sum())
    assert (out["next_states"][out["dones"] == 0, 0] < threshold).all()
    assert (out["next_states"][out["dones"] == 1, 0] >= threshold).all()
    assert len(out["states"]) == stats["kept_transitions"] == total
    assert stats["kept_trajectories"] == n
    assert stats["return_all"] == pytest.approx(np.mean(returns), rel=1e-5)


def test_synthesise_without_terminal_fn_emits_all_and_filters():
    cfg = tiny_cfg(horizon=6, iterations=0, keep_ratio=0.5)
    n = 10
    s0 = torch.stack([torch.randn(n), torch.arange(n, dtype=torch.float32)], 1)
    out, stats = D.synthesise(
        s0, lambda s: torch.zeros(*s.shape[:-1], 1), CounterDynamics(), None, StateReward(), cfg
    )
    assert stats["kept_trajectories"] == 5
    assert len(out["states"]) == 5 * (cfg.horizon - 1)
    assert (out["dones"] == 0).all()
    kept_ids = set(out["states"][:, 1].long().tolist())
    best = set(s0[:, 0].topk(5).indices.tolist())  # higher start -> higher return
    assert kept_ids == best


# ------------------------------------------------------------------------------------------------
# Data: windows, replay buffer, mixed batches
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("horizon", [1, 3, 8])
def test_window_starts(horizon):
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 15, size=30)
    lengths[:3] = [horizon, horizon - 1 if horizon > 1 else 1, 1]
    ids = np.repeat(np.arange(len(lengths)), lengths)
    starts = D.window_starts(ids, horizon)
    assert len(starts) == sum(max(0, l - horizon + 1) for l in lengths)
    for s in starts:
        assert len(set(ids[s : s + horizon])) == 1 and s + horizon <= len(ids)
    brute = [i for i in range(len(ids) - horizon + 1) if len(set(ids[i : i + horizon])) == 1]
    assert starts.tolist() == brute


def test_window_starts_short_data():
    assert len(D.window_starts(np.zeros(3, np.int64), 4)) == 0
    assert D.window_starts(np.zeros(4, np.int64), 4).tolist() == [0]


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


def test_replay_buffer_fifo():
    buf = D.ReplayBuffer(2, 1, capacity=10, device="cpu")
    first = rows_with_reward(range(7))
    buf.add(first)
    assert buf.size == 7
    got = buf.split(buf.rows[: buf.size])
    assert torch.equal(got["states"], first["states"]) and torch.equal(
        got["actions"], first["actions"]
    )
    buf.add(rows_with_reward(range(7, 13)))
    assert buf.size == 10
    assert sorted(buf.split(buf.rows)["rewards"][:, 0].tolist()) == list(range(3, 13))
    buf.add(rows_with_reward(range(100, 125)))  # larger than the buffer: its newest rows stay
    assert sorted(buf.split(buf.rows)["rewards"][:, 0].tolist()) == list(range(115, 125))
    sampled = buf.split(buf.sample(500))["rewards"]
    assert set(sampled[:, 0].tolist()) <= set(range(115, 125))
    # round trip
    other = D.ReplayBuffer(2, 1, capacity=10, device="cpu")
    other.load_state_dict(buf.state_dict())
    assert torch.equal(other.rows, buf.rows) and (other.size, other.pos) == (buf.size, buf.pos)


def test_replay_buffer_sample_only_filled_rows():
    buf = D.ReplayBuffer(2, 1, capacity=100, device="cpu")
    buf.add(rows_with_reward([5.0, 6.0, 7.0]))
    assert set(buf.split(buf.sample(300))["rewards"][:, 0].tolist()) == {5.0, 6.0, 7.0}


@pytest.mark.parametrize("n,ratio", [(32, 0.6), (50, 0.25), (32, 1.0), (32, 0.0)])
def test_sample_mixed(n, ratio):
    real = D.ReplayBuffer(2, 1, 1000, "cpu")
    real.add(rows_with_reward(np.ones(200)))
    synthetic = D.ReplayBuffer(2, 1, 1000, "cpu")
    synthetic.add(rows_with_reward(-np.ones(n - 1)))
    batch = D.sample_mixed(real, synthetic, n, ratio)  # warm-up: all real
    assert len(batch["rewards"]) == n and (batch["rewards"] == 1).all()
    synthetic.add(rows_with_reward(-np.ones(1)))  # now exactly one batch worth
    batch = D.sample_mixed(real, synthetic, n, ratio)
    assert len(batch["rewards"]) == n
    assert int((batch["rewards"] == 1).sum()) == round(n * ratio)
    assert int((batch["rewards"] == -1).sum()) == n - round(n * ratio)


def test_data_to_buffer():
    data = linear_data(n_episodes=2, ep_len=5)
    data["terminals"][3] = 1
    buf = D.data_to_buffer(data, "cpu")
    got = buf.split(buf.rows)
    assert buf.size == 10
    assert torch.equal(got["states"], torch.as_tensor(data["observations"]))
    assert torch.equal(got["next_states"], torch.as_tensor(data["next_observations"]))
    assert torch.equal(got["rewards"][:, 0], torch.as_tensor(data["rewards"]))
    assert got["dones"][:, 0].tolist() == data["terminals"].tolist()


def test_normalizers_round_trip():
    x = torch.randn(100, 3) * torch.tensor([1.0, 10.0, 0.1]) + 5
    lim = D.Normalizer(3).fit_limits(x)
    y = lim(x)
    assert torch.allclose(y.min(0).values, -torch.ones(3), atol=1e-5)
    assert torch.allclose(y.max(0).values, torch.ones(3), atol=1e-5)
    assert torch.allclose(lim.unnormalize(y), x, atol=1e-4)
    z = D.Normalizer(3).fit_zscore(x)(x)
    assert torch.allclose(z.mean(0), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z.std(0), torch.ones(3), atol=2e-2)


# ------------------------------------------------------------------------------------------------
# Config.validate
# ------------------------------------------------------------------------------------------------


def test_default_config_is_valid():
    D.Config().validate()
    D.Config(denoiser="unet").validate()


@pytest.mark.parametrize(
    "changes",
    [
        dict(denoiser="unet", horizon=30, unet_dim_mults=(1, 2, 4)),  # 30 % 4
        dict(denoiser="unet", horizon=6, unet_dim_mults=(1, 2, 4, 8)),
        dict(keep_ratio=0.0),
        dict(keep_ratio=1.5),
        dict(keep_ratio=-0.2),
        dict(real_ratio=-0.1),
        dict(real_ratio=1.1),
        dict(horizon=1),
        dict(iterations=-1),
        dict(n_elites=8, n_members=7),
        dict(filter="topk"),
        dict(denoiser="transformer"),
        dict(denoiser="unet", unet_dim=12),
    ]
    + [
        {name: value}
        for name in (
            "updates",
            "eval_every",
            "horizon",
            "rollout_batch_size",
            "rollout_every",
            "synthetic_capacity",
            "n_diffusion_steps",
            "dm_steps",
            "dm_batch_size",
            "n_members",
            "n_elites",
            "model_batch_size",
            "model_epoch_steps",
            "model_max_epochs",
            "batch_size",
            "policy_freq",
            "mlp_width",
            "unet_dim",
        )
        for value in (0, -3)
    ],
)
def test_config_validate_rejects(changes):
    with pytest.raises(ValueError):
        D.Config(**changes).validate()


@pytest.mark.parametrize(
    "changes",
    [
        dict(keep_ratio=1.0),
        dict(real_ratio=0.0),
        dict(real_ratio=1.0),
        dict(iterations=0),
        dict(horizon=2),
        dict(denoiser="unet", horizon=8, unet_dim_mults=(1, 2, 4, 8)),
    ],
)
def test_config_validate_accepts_edges(changes):
    D.Config(**changes).validate()


@pytest.mark.parametrize(
    "changes",
    [dict(dynamics_hidden=0), dict(reward_hidden=0), dict(max_holdout=0), dict(holdout_ratio=0.0)],
)
def test_config_validate_rejects_model_sizes(changes):
    with pytest.raises(ValueError):
        D.Config(**changes).validate()


def test_empty_holdout_is_an_error_not_an_untrained_model():
    data = linear_data(n_episodes=1, ep_len=4)  # int(4 * 0.2) = 0 holdout rows
    cfg = tiny_cfg(model_epoch_steps=20, model_max_epochs=2)
    with pytest.raises(ValueError, match="too few"):
        D.train_dynamics(data, cfg)


# ------------------------------------------------------------------------------------------------
# Determinism of the training loop
# ------------------------------------------------------------------------------------------------


def short_run(seed: int):
    torch.manual_seed(seed)
    np.random.seed(seed)
    data = linear_data(n_episodes=6, ep_len=20)
    data["terminals"][19::20] = 1  # episode ends are terminal
    cfg = tiny_cfg(
        rollout_every=3,
        rollout_batch_size=8,
        iterations=1,
        keep_ratio=0.5,
        filter="softmax",
        batch_size=16,
        dm_steps=3,
        model_epoch_steps=3,
        model_max_epochs=1,
    )
    models = {
        "dynamics": D.train_dynamics(data, cfg)[0],
        "reward": D.train_reward_model(data, cfg)[0],
        "diffusion": D.train_diffusion(data, cfg),
    }
    trainer = D.DyDiffTrainer(cfg, data, models, terminal_fn=lambda s: s[:, 0].abs() > 1.5)
    logs = []
    trainer.train(7, log=lambda u, m: logs.append((u, m)), log_every=1)
    params = torch.cat(
        [p.flatten() for p in trainer.agent.actor.parameters()]
        + [p.flatten() for p in trainer.agent.critic.parameters()]
    )
    return logs, params, trainer.synthetic.state_dict()["rows"]


def test_same_seed_same_numbers():
    logs1, params1, rows1 = short_run(0)
    logs2, params2, rows2 = short_run(0)
    assert len(logs1) == 7 and logs1 == logs2
    assert torch.equal(params1, params2)
    assert len(rows1) > 0 and torch.equal(rows1, rows2)
    _, params3, _ = short_run(1)
    assert not torch.equal(params1, params3)  # the seed does matter


def test_baseline_trainer_uses_only_real_data():
    data = linear_data(n_episodes=2, ep_len=20)
    trainer = D.DyDiffTrainer(tiny_cfg(batch_size=16), data, models=None)
    before = [p.clone() for p in trainer.agent.critic.parameters()]
    trainer.train(3)
    assert trainer.updates == 3 and trainer.synthetic.size == 0
    assert not all(torch.equal(a, b) for a, b in zip(before, trainer.agent.critic.parameters()))


# ------------------------------------------------------------------------------------------------
# Optional dependencies
# ------------------------------------------------------------------------------------------------


def test_imports_without_gymnasium_and_minari():
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
dydiff.Config().validate()
print("ok")
"""
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


# ------------------------------------------------------------------------------------------------
# train_offline.py: tasks, datasets, termination rules, evaluation (MINARI_DATASETS_PATH is
# set per test: minari reads it on each call)
# ------------------------------------------------------------------------------------------------

N_STEPS = 3000


@pytest.fixture
def datasets_path(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    return tmp_path / "datasets"


@pytest.fixture
def umaze(datasets_path):
    """A small generated umaze dataset, loaded back from disk as a user would."""
    T.generate_maze_dataset("umaze", "local/pointmaze/umaze-test-v2", N_STEPS, ref_episodes=5)
    return minari.load_dataset("local/pointmaze/umaze-test-v2")


def test_generated_maze_dataset_is_consistent(umaze):
    episodes = list(umaze.iterate_episodes())
    assert umaze.total_steps == N_STEPS == sum(len(ep.rewards) for ep in episodes)
    assert umaze.total_episodes == len(episodes) > 10
    for prev, ep in zip(episodes, episodes[1:]):  # one continuing stream, cut at each success
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
    assert all(ep.rewards[-1] == 1 for ep in episodes[:-1])  # (the last one may be unfinished)
    meta = umaze.storage.metadata
    assert meta["ref_max_score"] > meta["ref_min_score"] + 50


def test_maze_arrays_are_relabelled_against_the_eval_goal(umaze):
    arrays = T.dataset_to_arrays(umaze, T.TASKS["maze2d-umaze"])
    n = N_STEPS
    assert arrays["observations"].shape == arrays["next_observations"].shape == (n, 4)
    assert arrays["actions"].shape == (n, 2) and arrays["episode_ids"].dtype == np.int64
    assert all(v.dtype == np.float32 for k, v in arrays.items() if k != "episode_ids")
    same = arrays["episode_ids"][1:] == arrays["episode_ids"][:-1]
    assert np.array_equal(arrays["next_observations"][:-1][same], arrays["observations"][1:][same])
    assert np.all(np.diff(arrays["episode_ids"]) >= 0) and not arrays["terminals"].any()
    goal = np.array([-1.0, 1.0])  # centre of cell (1, 1): the 5x5 umaze is centred at (0, 0)
    dist = np.linalg.norm(arrays["next_observations"][:, :2] - goal, axis=1)
    assert np.array_equal(arrays["rewards"], (dist <= 0.45).astype(np.float32))
    assert 0 < arrays["rewards"].mean() < 0.5


def test_load_dataset_reuses_generated_maze_data(datasets_path):
    task = T.TASKS["maze2d-umaze"]
    logs: list[str] = []
    dataset = T.load_dataset(task, dataset_size=500, log=logs.append)
    assert T.local_dataset_id(task, 500) == "local/pointmaze/umaze-500steps-v2"
    assert dataset.spec.dataset_id == "local/pointmaze/umaze-500steps-v2"
    assert dataset.total_steps == 500 and any("generating" in m for m in logs)
    logs.clear()
    assert T.load_dataset(task, dataset_size=500, log=logs.append).total_steps == 500
    assert any("using locally generated" in m for m in logs)
    assert T.local_dataset_id(T.TASKS["maze2d-large-dense"]) == "local/pointmaze/large-dense-v2"


def test_mujoco_random_dataset_to_arrays(datasets_path):
    dataset = T.collect_random_dataset("Hopper-v5", "local/hopper/random-test-v0", 300, seed=0)
    task = T.resolve_task("local/hopper/random-test-v0")
    assert task.maze is None and T.termination_fn(task) is not None
    arrays = T.dataset_to_arrays(minari.load_dataset("local/hopper/random-test-v0"), task)
    assert arrays["observations"].shape == arrays["next_observations"].shape == (300, 11)
    assert arrays["actions"].shape == (300, 3) and arrays["rewards"].shape == (300,)
    assert arrays["terminals"].sum() == dataset.total_episodes - 1  # random hoppers fall


def test_termination_functions():
    hopper = T.termination_fn(T.TASKS["hopper-medium"])
    healthy = torch.zeros(4, 11)
    healthy[:, 0] = 1.25
    fallen, tilted, exploded = healthy.clone(), healthy.clone(), healthy.clone()
    fallen[0, 0] = 0.5
    tilted[0, 1] = 0.3
    exploded[0, 5] = 150.0
    assert not hopper(healthy).any()
    for s in (fallen, tilted, exploded):
        assert hopper(s).tolist() == [True, False, False, False]
    walker = T.termination_fn(T.TASKS["walker2d-medium"])
    states = torch.zeros(4, 17)
    states[:, 0] = torch.tensor([1.2, 0.5, 2.5, 1.2])
    states[3, 1] = -1.5
    assert walker(states).tolist() == [False, True, True, True]
    assert T.termination_fn(T.TASKS["halfcheetah-medium"]) is None
    assert T.termination_fn(T.TASKS["maze2d-umaze"]) is None


def test_normalized_score_and_evaluate(umaze, datasets_path):
    meta = umaze.storage.metadata
    lo, hi = meta["ref_min_score"], meta["ref_max_score"]
    assert np.allclose(T.normalized_score(umaze, np.array([lo, hi, (lo + hi) / 2])), [0, 100, 50])
    rng = np.random.default_rng(0)
    random_policy = lambda s: rng.uniform(-1, 1, (len(s), 2))  # noqa: E731
    result = T.evaluate(random_policy, umaze, T.TASKS["maze2d-umaze"], 3, 0)
    assert all(np.isfinite(v) for v in result.values())
    assert np.isclose(result["score_mean"], T.normalized_score(umaze, result["return_mean"]))
    hopper = T.collect_random_dataset("Hopper-v5", "local/hopper/random-test-v0", 50, seed=0)
    assert T.normalized_score(hopper, np.array([1.0])) is None  # no reference scores stored
    result = T.evaluate(lambda s: np.zeros((len(s), 3)), hopper, T.resolve_task("x/y-v0"), 2, 0)
    assert result["score_mean"] is None and np.isfinite(result["return_mean"])


def test_resolve_task():
    assert T.resolve_task("maze2d-medium").dataset_id == "D4RL/pointmaze/medium-v2"
    assert T.resolve_task("D4RL/pointmaze/large-dense-v2").maze == "large"
    assert T.resolve_task("mujoco/hopper/medium-v0").maze is None
    with pytest.raises(T.UserError, match="unknown env 'nope'; known: .*maze2d-umaze"):
        T.resolve_task("nope")


def test_missing_mujoco_dataset_is_a_user_error(datasets_path, monkeypatch):
    monkeypatch.setattr(T, "_hub_reachable", lambda: False)  # as on the offline build machine
    start = time.time()
    with pytest.raises(T.UserError, match="minari download mujoco/hopper/medium-v0"):
        T.load_dataset(T.TASKS["hopper-medium"], log=lambda m: None)
    assert time.time() - start < 5


# ------------------------------------------------------------------------------------------------
# train_offline.py: the command line end to end, bad input, resume, atomic writes
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A private Minari folder, cache and runs folder shared by the driver tests."""
    root = tmp_path_factory.mktemp("driver")
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root / "datasets")
    yield root
    if old is None:
        os.environ.pop("MINARI_DATASETS_PATH")
    else:
        os.environ["MINARI_DATASETS_PATH"] = old


def run_main(workdir, *argv):
    """train_offline.main in this process; returns the exit code (0 when it returns)."""
    import train_offline

    try:
        train_offline.main(
            [*argv, "--out", str(workdir / "runs"), "--cache", str(workdir / "cache")]
        )
    except SystemExit as e:
        return e.code
    return 0


def run_dirs(workdir, algo):
    return sorted((workdir / "runs").glob(f"*__{algo}__*"))


def read_metrics(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_smoke_cli_end_to_end(workdir):
    """The real command line, in a subprocess: every phase, every file, a score in the metrics."""
    env = dict(os.environ, MINARI_DATASETS_PATH=str(workdir / "datasets"))
    out = subprocess.run(
        [
            sys.executable,
            "train_offline.py",
            "--smoke",
            "--out",
            str(workdir / "runs"),
            "--cache",
            str(workdir / "cache"),
        ],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "SMOKE RUN" in out.stdout and "final normalised score" in out.stdout
    (run,) = run_dirs(workdir, "dydiff")
    for name in (
        "config.json",
        "metrics.csv",
        "summary.json",
        "checkpoint.pt",
        "learning_curve.png",
        "trajectories.png",
    ):
        assert (run / name).stat().st_size > 0, name
    rows = read_metrics(run)
    assert [r["phase"] for r in rows][:3] == ["dynamics", "dynamics", "reward"]  # 2 epochs each
    assert {r["phase"] for r in rows} == {"dynamics", "reward", "diffusion", "rl"}
    assert all(float(r["holdout_mse"]) > 0 for r in rows if r["phase"] in ("dynamics", "reward"))
    scored = [r for r in rows if r["score"]]
    assert [int(r["update"]) for r in scored] == [150, 300]
    assert all(float(r["kept_trajectories"]) == round(0.6 * 64) for r in scored)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["updates"] == 300 and summary["final_score"] == float(scored[-1]["score"])


def test_td3bc_baseline_skips_models(workdir, capsys):
    assert run_main(workdir, "--smoke", "--algo", "td3bc") == 0
    out = capsys.readouterr().out
    assert "dynamics" not in out and "diffusion" not in out
    (run,) = run_dirs(workdir, "td3bc")
    rows = read_metrics(run)
    assert rows[-1]["update"] == "300" and rows[-1]["synthetic_rows"] == "0"


def test_second_run_reuses_cached_models(workdir, capsys):
    assert run_main(workdir, "--smoke", "--updates", "150", "--seed", "5") == 0
    assert "loaded from cache" not in capsys.readouterr().out  # a new seed trains its models
    assert run_main(workdir, "--smoke", "--updates", "150", "--seed", "5") == 0
    out = capsys.readouterr().out
    for name in ("dynamics", "reward", "diffusion"):
        assert f"{name}: loaded from cache" in out


def test_help_lists_every_config_flag(workdir, capsys):
    assert run_main(workdir, "--help") == 0
    out = capsys.readouterr().out
    assert "--keep-ratio" in out and "fraction of trajectories kept by the reward filter" in out
    assert "--unet-dim-mults" in out and "--predict-epsilon" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--env", "nope"], "unknown env 'nope'; known: maze2d-umaze"),
        (["--denoiser", "unet", "--horizon", "30"], "horizon 30 must be divisible by 4"),
        (["--keep-ratio", "0"], "keep_ratio must be in (0, 1]"),
        (["--keep-ratio", "1.5"], "keep_ratio must be in (0, 1]"),
        (["--real-ratio", "-0.1"], "real_ratio must be in [0, 1]"),
        (["--updates", "0"], "updates must be positive"),
        (["--rollout-batch-size", "-4"], "rollout_batch_size must be positive"),
        (["--dataset-size", "0"], "--dataset-size must be positive"),
        (["--horizon", "400"], "no episode is at least horizon=400 steps long"),
        (["--eval-episodes", "-1"], "--eval-episodes must be positive"),
    ],
)
def test_bad_settings_one_line_error(workdir, capsys, argv, message):
    assert run_main(workdir, "--smoke", *argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(workdir, capsys):
    assert run_main(workdir, "--smoke", "--device", "cuda") == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_dataset_not_available(workdir, capsys, monkeypatch):
    import train_offline

    monkeypatch.setattr(train_offline, "_hub_reachable", lambda timeout=3.0: False)
    assert run_main(workdir, "--env", "hopper-medium", "--smoke") == 2
    assert "minari download mujoco/hopper/medium-v0" in capsys.readouterr().err


def test_interrupt_then_resume(workdir, capsys, monkeypatch):
    """Ctrl-C saves a checkpoint and exits 130; --resume continues from the saved update."""
    import train_offline

    real_evaluate = train_offline.evaluate

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_offline, "evaluate", interrupted)
    assert run_main(workdir, "--smoke", "--seed", "7") == 130
    (run,) = run_dirs(workdir, "dydiff__7")
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["trainer"]["updates"] == 150
    assert "--resume" in capsys.readouterr().out

    monkeypatch.setattr(train_offline, "evaluate", real_evaluate)
    assert run_main(workdir, "--resume", str(run)) == 0
    assert "resumed" in capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["updates"] == 300
    assert [int(r["update"]) for r in read_metrics(run) if r["score"]] == [300]


def test_resume_rejects_other_config_and_corrupt_checkpoint(workdir, capsys):
    assert run_main(workdir, "--smoke", "--algo", "td3bc", "--seed", "6", "--updates", "150") == 0
    (run,) = run_dirs(workdir, "td3bc__6")
    assert run_main(workdir, "--resume", str(run), "--keep-ratio", "0.3") == 2
    assert "another configuration" in capsys.readouterr().err
    bad = workdir / "runs" / "corrupt"
    bad.mkdir()
    (bad / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert run_main(workdir, "--resume", str(bad)) == 2
    err = capsys.readouterr().err
    assert "unreadable" in err and "Traceback" not in err


def test_nan_loss_stops_naming_the_phase(workdir, capsys, monkeypatch):
    import dydiff

    monkeypatch.setattr(
        dydiff.TD3BC, "update", lambda self, b: {"critic_loss": torch.tensor(float("nan"))}
    )
    assert run_main(workdir, "--smoke", "--algo", "td3bc", "--seed", "3") == 3
    err = capsys.readouterr().err
    assert "critic loss became nan" in err and "Traceback" not in err


def test_nan_in_pretraining_stops_naming_the_phase(workdir, capsys, monkeypatch):
    loss = D.GaussianDiffusion.loss
    monkeypatch.setattr(D.GaussianDiffusion, "loss", lambda *a: loss(*a) * float("nan"))
    assert run_main(workdir, "--smoke", "--seed", "4") == 3
    err = capsys.readouterr().err
    assert "diffusion training loss became nan" in err and "Traceback" not in err


class Explodes:
    def __reduce__(self):
        raise RuntimeError("disk full")


def test_interrupted_write_keeps_previous_checkpoint(tmp_path):
    import train_offline

    path = tmp_path / "checkpoint.pt"
    train_offline.save_torch({"updates": 1, "weights": torch.arange(1000)}, path)
    with pytest.raises((RuntimeError, pickle.PicklingError)):
        train_offline.save_torch(
            {"updates": 2, "weights": torch.arange(1000), "x": Explodes()}, path
        )
    assert torch.load(path, weights_only=False)["updates"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left behind


def test_in_walls_marks_wall_cells_only():
    env = T._make_env("PointMaze_UMaze-v3")
    maze = env.unwrapped.maze
    cells = [(i, j) for i in range(len(maze.maze_map)) for j in range(len(maze.maze_map[0]))]
    xy = np.array([maze.cell_rowcol_to_xy(np.array(c)) for c in cells])
    states = np.concatenate([xy, np.zeros_like(xy)], 1)  # (x, y, vx, vy)
    expected = [maze.maze_map[i][j] == 1 for i, j in cells]
    assert T.in_walls(states, maze).tolist() == expected
    env.close()


def test_rollout_error_experiment(workdir):
    """The Fig. 3 experiment end to end on smoke sizes: per-step errors for every method, and the
    simulator (the PointMaze state set from x, y, vx, vy) never puts the ball inside a wall."""
    assert run_main(workdir, "--experiment", "rollout-error", "--smoke") == 0
    result = json.loads((workdir / "runs" / "rollout_error_smoke.json").read_text())
    methods = result["per_method"]["expert"]
    assert methods["simulator"]["in_walls"] == 0.0
    for label in ("dynamics (single-step)", "DyDiff M=1", "DyDiff M=2", "DyDiff M=4"):
        mse = methods[label]["mse"]
        assert len(mse) == result["horizon"] == 8 and mse[0] == 0.0  # s0 is the data's state
        assert all(m >= 0 for m in mse) and 0 <= methods[label]["in_walls"] <= 1
    assert (workdir / "runs" / "rollout_error_smoke.png").stat().st_size > 0
