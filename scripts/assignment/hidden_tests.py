"""Hidden tests of an assignment: the template scripts/make_assignment.py fills in. It keeps the
tests that grade an assigned function (`@grades(...)`), writes the teacher's --seed into SEED
(every input comes from SEED and the test's name: the same seed, the same marks; this file does
not tell the cases) and writes DIR/instructor/tests/test_hidden.py. Properties or small reference
computations, on other inputs than the visible tests'; each test stubs what its function calls.
"""

import copy
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

import dydiff as D

torch.set_num_threads(1)

SEED = 0  # the teacher's --seed, written in by make_assignment.py
CASES = 5  # random cases per parametrised test


def grades(*functions):
    """The dydiff.py functions a test grades (the builder keeps it when one is assigned)."""
    return lambda test: setattr(test, "grades", functions) or test


@pytest.fixture(autouse=True)
def seeded(request):
    """torch's and numpy's generators seeded from SEED and the test's name: the same marks."""
    seed = zlib.crc32(f"{SEED}:{request.node.name}".encode())
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def rng_for(*key) -> np.random.Generator:
    """A numpy generator for one case, from SEED and a key."""
    return np.random.default_rng(zlib.crc32(repr((SEED, *key)).encode()))


def far(x: torch.Tensor) -> torch.Tensor:
    """Values far from unit scale: x * 20 + 100."""
    return x * 20 + 100


def hand_limits(lo: torch.Tensor, hi: torch.Tensor) -> D.Normalizer:
    """A limits normaliser set by hand: [lo, hi] -> [-1, 1]."""
    return D.Normalizer(len(lo)).fit_limits(torch.stack([lo, hi]))


class Tagged(nn.Module):
    """A deterministic denoiser f(x, t) that records its inputs; x0 in [-1.4, 1.4] so the sampler's
    clamp matters."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.7))
        self.inputs, self.steps = [], []

    def forward(self, x, t):
        self.inputs.append(x.detach().clone())
        self.steps.append(t.detach().clone())
        return 1.4 * torch.tanh(self.w * 2 * x + 0.05 * t[:, None, None].float())


def transitions(values: torch.Tensor, s_dim: int, a_dim: int) -> dict:
    """Rows whose reward (and every entry, shifted) tells them apart: row i holds values[i]."""
    v = values.float()[:, None]
    return {"states": far(v.expand(-1, s_dim) + torch.arange(s_dim)),
            "actions": v.expand(-1, a_dim) / 1e4,
            "rewards": v,
            "next_states": -v.expand(-1, s_dim),
            "dones": (v % 2 == 1).float()}  # fmt: skip


class TestDataHidden:
    """window_starts, ReplayBuffer.add and sample_mixed on other sizes and seeds."""

    @grades("window_starts")
    @pytest.mark.parametrize("case", range(CASES))
    def test_window_starts_match_brute_force(self, case):
        rng = rng_for("window_starts", case)
        lengths = rng.integers(1, 25, size=rng.integers(5, 30))
        ids = np.repeat(rng.permutation(10_000)[: len(lengths)], lengths)  # any id values
        for horizon in (1, 2, int(rng.integers(3, 12)), int(lengths.max()), 30):
            got = D.window_starts(ids, horizon)
            want = [i for i in range(len(ids) - horizon + 1) if len(set(ids[i : i + horizon])) == 1]
            assert list(np.asarray(got)) == want, (
                f"horizon {horizon}, episode lengths {lengths.tolist()}: the starts of the windows "
                f"inside one episode, {len(want)} of them; got {len(got)}"
            )
            assert np.issubdtype(np.asarray(got).dtype, np.integer), "start rows are integers"

    @grades("window_starts")
    def test_window_starts_of_one_episode_and_of_too_few_rows(self):
        ids = np.full(17, 42)
        assert list(D.window_starts(ids, 5)) == list(range(13)), "one episode of 17 rows, H 5"
        assert len(D.window_starts(ids, 18)) == 0, "17 rows hold no window of 18"
        alternating = np.arange(12)  # every row its own episode
        assert list(D.window_starts(alternating, 1)) == list(range(12))
        assert len(D.window_starts(alternating, 2)) == 0, "episodes of one row: no window of 2"

    @grades("ReplayBuffer.add")
    @pytest.mark.parametrize("case", range(CASES))
    def test_ring_buffer_matches_a_reference(self, case):
        rng = rng_for("add", case)
        capacity, s_dim, a_dim = int(rng.integers(5, 40)), int(rng.integers(1, 6)), 3
        buf = D.ReplayBuffer(s_dim, a_dim, capacity, "cpu")
        ring, pos, start = [None] * capacity, 0, 0
        for size in rng.integers(1, 2 * capacity, size=6):
            buf.add(transitions(torch.arange(start, start + size), s_dim, a_dim))
            for i in range(max(start, start + size - capacity), start + size):  # by hand
                ring[pos], pos = i, (pos + 1) % capacity
            start += size
            filled = [i for i in ring if i is not None]
            assert buf.size == len(filled), f"size {buf.size}, expected {len(filled)}"
            got = buf.data["rewards"][: buf.size, 0].tolist()
            assert got == [float(i) for i in ring[: len(filled)]], (
                f"capacity {capacity}: the ring holds the newest rows, the oldest overwritten in "
                f"place; expected {ring[: len(filled)]}, got {got}"
            )
            rows = transitions(torch.tensor(ring[: len(filled)]), s_dim, a_dim)
            for key, value in rows.items():
                assert torch.allclose(buf.data[key][: buf.size], value.reshape(len(filled), -1)), (
                    f"{key}: each column is stored with its row"
                )

    @grades("ReplayBuffer.add")
    def test_add_keeps_float_rows_and_samples_only_filled_ones(self):
        buf = D.ReplayBuffer(4, 2, 1000, "cpu")
        rows = transitions(torch.arange(7.0) * 3, 4, 2)
        buf.add({k: v.double() for k, v in rows.items()})
        assert buf.size == 7 and buf.data["states"].dtype == torch.float32
        drawn = set(buf.sample(500)["rewards"][:, 0].tolist())
        assert drawn == {0.0, 3.0, 6.0, 9.0, 12.0, 15.0, 18.0}, f"only the 7 rows added: {drawn}"

    @grades("sample_mixed")
    @pytest.mark.parametrize("n,ratio", [(17, 0.3), (64, 0.75), (100, 0.5), (9, 0.0), (40, 1.0)])
    def test_mixed_batches_by_real_ratio(self, n, ratio):
        real, synthetic = D.ReplayBuffer(3, 2, 500, "cpu"), D.ReplayBuffer(3, 2, 500, "cpu")
        real.add(transitions(torch.full((300,), 1.0), 3, 2))
        synthetic.add(transitions(torch.full((n - 2,), 8.0), 3, 2))
        batch = D.sample_mixed(real, synthetic, n, ratio)
        assert set(batch) >= {"states", "actions", "rewards", "next_states", "dones"}
        assert len(batch["rewards"]) == n and (batch["rewards"] == 1).all(), (
            f"warm-up: the synthetic buffer holds {n - 2} < {n} rows, so the batch is all real"
        )
        synthetic.add(transitions(torch.full((5,), 8.0), 3, 2))
        batch = D.sample_mixed(real, synthetic, n, ratio)
        n_real = int((batch["rewards"] == 1).sum())
        assert len(batch["states"]) == n and n_real == round(n * ratio), (
            f"a batch of {n} with real_ratio {ratio}: {round(n * ratio)} real rows, got {n_real}"
        )
        same = batch["states"][:, 0] == far(batch["rewards"][:, 0])
        assert same.all(), "a batch's rows are whole rows of one buffer (keys drawn together)"


class TestDiffusionHidden:
    """The DDPM loss, ancestral sampling, the EMA and DyDiff's condition mask."""

    @staticmethod
    def model(h=5, d=4, n_steps=7, predict_epsilon=False, decay=0.9) -> D.GaussianDiffusion:
        return D.GaussianDiffusion(Tagged(), h, d, n_steps, predict_epsilon, decay)

    @grades("GaussianDiffusion.loss")
    @pytest.mark.parametrize("predict_epsilon", [False, True])
    def test_loss_value_from_the_recorded_input(self, predict_epsilon):
        """The loss recomputed from what the denoiser was given: x_t and t."""
        dm = self.model(predict_epsilon=predict_epsilon)
        x0 = torch.rand(1000, 5, 4) * 2 - 1
        mask = torch.rand(5, 4) < 0.4
        mask[0, 0], mask[1, 1] = True, False
        loss = dm.loss(x0, mask)
        (xt,), (t,) = dm.denoiser.inputs, dm.denoiser.steps
        assert loss.dim() == 0 and loss.requires_grad, "a scalar loss that trains the denoiser"
        assert t.shape == (1000,) and int(t.min()) >= 0 and int(t.max()) < dm.n_steps
        assert len(set(t.tolist())) == dm.n_steps, "t drawn over every step 0..K-1"
        assert torch.equal(xt[:, mask], x0[:, mask]), "fixed entries hold x0 in the input"
        a, b = dm.sqrt_ab[t][:, None, None], dm.sqrt_1m_ab[t][:, None, None]
        eps = (xt - a * x0) / b
        free = eps[:, ~mask]
        assert abs(free.mean()) < 0.06 and abs(free.std() - 1) < 0.05, (
            f"x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps: eps must be N(0, 1), mean "
            f"{free.mean():.3f}, std {free.std():.3f}"
        )
        with torch.no_grad():
            out = 1.4 * torch.tanh(dm.denoiser.w * 2 * xt + 0.05 * t[:, None, None].float())
        target = eps if predict_epsilon else x0
        want = ((out - target)[:, ~mask] ** 2).mean()
        assert abs(loss.item() - want.item()) < 1e-4 * (1 + want.item()), (
            f"mean squared error to the {'noise' if predict_epsilon else 'clean window'} over the "
            f"free entries: {want.item():.5f}, got {loss.item():.5f}"
        )

    @grades("GaussianDiffusion.sample")
    @pytest.mark.parametrize("predict_epsilon", [False, True])
    def test_each_step_draws_from_the_posterior(self, predict_epsilon):
        """x_{t-1} = c0 clamp(x0_hat) + ct x_t + std z, z ~ N(0, 1), from the recorded inputs."""
        dm = self.model(h=6, d=3, n_steps=6, predict_epsilon=predict_epsilon)
        dm.denoiser = None  # the sampler uses the EMA copy
        mask = torch.zeros(6, 3, dtype=torch.bool)
        mask[0, :2] = mask[:, 2] = True
        values = far(torch.randn(800, 6, 3)) / 100
        x = dm.sample(values, mask)
        xs, steps = dm.ema.inputs, [int(s[0]) for s in dm.ema.steps]
        assert steps == list(reversed(range(6))), f"one EMA call per step, t = K-1 .. 0: {steps}"
        assert all(torch.equal(xt[:, mask], values[:, mask]) for xt in xs), "inputs inpainted"
        assert torch.equal(x[:, mask], values[:, mask]), "the fixed entries end at their values"
        assert abs(xs[0][:, ~mask].std() - 1) < 0.05, "sampling starts from N(0, 1) noise"
        for i, t in enumerate(steps):
            xt = xs[i]
            out = 1.4 * torch.tanh(0.7 * 2 * xt + 0.05 * t)
            x0 = (xt - dm.sqrt_1m_ab[t] * out) / dm.sqrt_ab[t] if predict_epsilon else out
            mean = dm.post_c0[t] * x0.clamp(-1, 1) + dm.post_ct[t] * xt
            nxt = xs[i + 1] if i + 1 < len(xs) else x
            if t == 0:  # the last step returns the posterior mean, no noise
                assert (nxt - mean)[:, ~mask].abs().max() < 1e-5, "the last step adds no noise"
                continue
            z = ((nxt - mean) / dm.post_std[t])[:, ~mask]
            assert abs(z.mean()) < 0.06 and abs(z.std() - 1) < 0.06, (
                f"step t={t}: (x_t-1 - posterior mean) / posterior std must be N(0, 1): mean "
                f"{z.mean():.3f}, std {z.std():.3f}"
            )

    @grades("GaussianDiffusion.update_ema")
    @pytest.mark.parametrize("case", range(CASES))
    def test_ema_after_several_updates(self, case):
        rng = rng_for("ema", case)
        decay, k = float(rng.uniform(0.5, 0.99)), int(rng.integers(1, 5))
        net = D.MLPDenoiser(4, 3, width=16, n_blocks=1)
        dm = D.GaussianDiffusion(net, 4, 3, 5, ema_decay=decay)
        with torch.no_grad():
            for p in dm.denoiser.parameters():
                p.mul_(-3).add_(far(torch.randn_like(p)) / 50)
        start = [p.clone() for p in dm.ema.parameters()]
        online = [p.clone() for p in dm.denoiser.parameters()]
        for _ in range(k):
            dm.update_ema()
        for old, on, new, now in zip(start, online, dm.ema.parameters(), dm.denoiser.parameters()):
            want = on + decay**k * (old - on)
            assert torch.allclose(new, want, atol=1e-5, rtol=1e-5), (
                f"decay {decay:.3f}, {k} updates: ema = online + decay^{k} (ema_0 - online)"
            )
            assert torch.equal(now, on), "the online weights do not move"
            assert not new.requires_grad or new.grad is None

    @grades("GaussianDiffusion.condition_mask")
    @pytest.mark.parametrize("h,s_dim,a_dim", [(3, 4, 3), (1, 2, 1), (13, 1, 5), (6, 5, 2)])
    def test_mask_fixes_the_first_state_and_the_actions(self, h, s_dim, a_dim):
        dm = D.GaussianDiffusion(nn.Identity(), h, s_dim + a_dim, 3)
        mask = dm.condition_mask(s_dim)
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(s_dim + a_dim), indexing="ij")
        want = (rows == 0) | (cols >= s_dim)
        assert mask.dtype == torch.bool and torch.equal(mask, want), (
            f"H {h}, S {s_dim}, A {a_dim}: expected\n{want.int()}\ngot\n{mask.int()}"
        )
        assert mask.device == dm.sqrt_ab.device


class TestDynamicsAndRewardHidden:
    """The ensemble's Gaussian NLL and prediction with a random elite."""

    @grades("EnsembleDynamics.loss")
    def test_nll_scales_with_the_error_and_the_precision(self, monkeypatch):
        """With mean = target + e and a constant log-variance v, the NLL part is
        c (e^2 exp(-v) + v) + const for a c > 0: so the excess loss over e = 0 is proportional to
        e^2 and to exp(-v)."""
        model = D.EnsembleDynamics(3, 2, n_members=3, n_elites=2, hidden=8)
        sa, delta = far(torch.randn(3, 40, 5)), far(torch.randn(3, 40, 3))
        out = {}
        monkeypatch.setattr(model, "forward", lambda x: out["mv"])

        def loss(e, v):
            out["mv"] = (delta + e, torch.full_like(delta, v))
            return model.loss(sa, delta).item()

        for v in (-1.5, 0.0, 2.0):
            base = loss(0.0, v)
            ratio = (loss(3.0, v) - base) / (loss(1.0, v) - base)
            assert abs(ratio - 9) < 1e-2, f"logvar {v}: the error term grows as e^2, ratio {ratio}"
        ratio = (loss(2.0, 0.0) - loss(0.0, 0.0)) / (loss(2.0, 1.0) - loss(0.0, 1.0))
        assert abs(ratio - np.e) < 1e-2, f"the error is weighted by exp(-logvar): ratio {ratio}"
        grid = torch.linspace(-4, 4, 161)
        for e in (0.3, 2.5):
            best = grid[int(np.argmin([loss(e, float(v)) for v in grid]))].item()
            assert abs(best - 2 * np.log(e)) < 0.06, f"error {e}: lowest at log(e^2), got {best}"

    @grades("EnsembleDynamics.loss")
    def test_loss_trains_the_ensemble(self):
        model = D.EnsembleDynamics(3, 2, n_members=4, n_elites=2, hidden=8)
        sa, delta = torch.randn(4, 30, 5), torch.randn(4, 30, 3) * 0.1
        loss = model.loss(sa, delta)
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} gets a gradient"

    @grades("EnsembleDynamics.predict")
    @pytest.mark.parametrize("case", range(CASES))
    def test_each_row_is_one_elites_next_state(self, case):
        rng = rng_for("predict", case)
        n_members, n_elites = int(rng.integers(3, 8)), 2
        s_dim, a_dim = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        model = D.EnsembleDynamics(s_dim, a_dim, n_members, n_elites, hidden=8)
        elites = torch.as_tensor(rng.permutation(n_members)[:n_elites].copy())
        model.elites.copy_(elites)
        s, a = far(torch.randn(300, s_dim)), torch.rand(300, a_dim) * 2 - 1
        model.input_norm.fit_zscore(torch.cat([s, a], -1))
        with torch.no_grad():
            mean, _ = model(torch.cat([s, a], -1).expand(n_members, -1, -1))
        pred = model.predict(s, a)
        assert pred.shape == (300, s_dim) and not pred.requires_grad
        gap = ((s + mean) - pred).abs().amax(-1)  # [E, B]
        used = gap.argmin(0)
        assert (gap.min(0).values < 1e-3).all(), "each row: s + the mean change of one member"
        assert set(used.tolist()) == set(elites.tolist()), (
            f"rows drawn from the elites {sorted(elites.tolist())} only and all of them; used "
            f"{sorted(set(used.tolist()))}"
        )

    @grades("EnsembleDynamics.uncertainty")
    @pytest.mark.parametrize("case", range(CASES))
    def test_uncertainty_matches_a_reference(self, case):
        rng = rng_for("uncertainty", case)
        n_members, s_dim = int(rng.integers(3, 8)), int(rng.integers(1, 5))
        model = D.EnsembleDynamics(s_dim, 2, n_members, n_elites=3, hidden=8)
        model.elites.copy_(torch.as_tensor(rng.permutation(n_members)[:3].copy()))
        sa = torch.cat([far(torch.randn(40, s_dim)) * rng.uniform(0.5, 3), torch.rand(40, 2)], -1)
        model.input_norm.fit_zscore(sa)
        mean = model(sa.expand(n_members, -1, -1))[0][model.elites].detach()  # [3, 40, S]
        want = ((mean - mean.mean(0)) / model.input_norm.scale[:s_dim]).norm(dim=-1).amax(0)
        got = model.uncertainty(sa.reshape(8, 5, -1))
        assert got.shape == (8, 5) and torch.allclose(got.reshape(-1), want, 1e-4, 1e-6), (
            "u(s, a) keeps sa's leading shape: the elites' largest distance from their mean "
            "prediction, each state dimension in units of the data's std")

class TestTD3BCHidden:
    """TD3's critic target and the TD3+BC update against a reference step written here."""

    @staticmethod
    def agent(case, **changes):
        rng = rng_for("td3bc", case)
        cfg = D.Config(**{"hidden": 16, "batch_size": 24, "gamma": float(rng.uniform(0.8, 0.99)),
                          "tau": float(rng.uniform(0.01, 0.2)), "alpha": float(rng.uniform(1, 4)),
                          "policy_noise": 0.0, "lr": 1e-2, **changes})  # fmt: skip
        s_dim, a_dim = 3, 2
        norm = D.Normalizer(s_dim).fit_zscore(far(torch.randn(500, s_dim)))
        agent = D.TD3BC(s_dim, a_dim, norm, cfg)
        with torch.no_grad():  # targets unlike the online networks, twins unlike each other
            for net in (agent.actor_target, agent.q1_target, agent.q2_target):
                for p in net.parameters():
                    p.add_(torch.randn_like(p) * 0.5)
        n = 24
        batch = {"states": far(torch.randn(n, s_dim)), "actions": torch.rand(n, a_dim) * 2 - 1,
                 "rewards": torch.randn(n, 1) * 5, "next_states": far(torch.randn(n, s_dim)),
                 "dones": (torch.rand(n, 1) < 0.3).float()}  # fmt: skip
        return agent, batch

    @staticmethod
    def target(agent, batch):
        """y = r + gamma (1 - d) min over twins of Q'(s', clip(pi'(s'), -1, 1)), no noise."""
        with torch.no_grad():
            s2 = (batch["next_states"] - agent.state_norm.shift) / agent.state_norm.scale
            a2 = agent.actor_target(s2).clamp(-1, 1)
            qs = [q(torch.cat([s2, a2], 1)) for q in (agent.q1_target, agent.q2_target)]
            return batch["rewards"] + agent.cfg.gamma * (1 - batch["dones"]) * torch.minimum(*qs)

    @grades("TD3BC.update", "TD3BC.critic_target")
    @pytest.mark.parametrize("case", range(CASES))
    def test_critic_target_without_noise(self, case):
        agent, batch = self.agent(case)
        y = agent.critic_target(batch)
        want = self.target(agent, batch)
        assert y.shape == want.shape == (24, 1)
        err = (y - want).abs().max().item()
        assert err < 1e-4, (
            f"y = r + gamma (1 - done) min(Q1'(s', a'), Q2'(s', a')), a' = pi'(s'), with the "
            f"target networks, s' z-scored: max error {err:.3g}"
        )

    @grades("TD3BC.update", "TD3BC.critic_target")
    def test_smoothing_noise_is_clipped_and_the_action_too(self):
        agent, batch = self.agent(0, policy_noise=0.3, noise_clip=0.4, gamma=1.0)
        batch = {k: torch.zeros(6000, v.shape[1]) for k, v in batch.items()}
        for level in (0.0, 0.85):
            agent.actor_target = nn.Linear(3, 2)  # pi'(s') = level
            nn.init.zeros_(agent.actor_target.weight)
            nn.init.constant_(agent.actor_target.bias, level)
            agent.q1_target = agent.q2_target = lambda sa: sa[:, -2:-1]  # Q' = a'_0
            noise = agent.critic_target(batch)[:, 0] - level
            top, std = noise.max().item(), noise.std().item()
            if level == 0.0:
                assert noise.min() > -0.4 - 1e-5 and 0.4 - 1e-2 < top < 0.4 + 1e-5, (
                    f"noise N(0, 0.3^2) clipped to +-0.4: range [{noise.min():.3f}, {top:.3f}]"
                )
                assert 0.23 < std < 0.27, f"clipped N(0, 0.3^2) has std ~0.25: {std:.3f}"
            else:
                assert top <= 1 - level + 1e-5, f"a' is clipped to [-1, 1]: {top + level:.3f}"

    def reference_update(self, agent, batch):
        """One TD3+BC update by hand on a copy: critics; each policy_freq-th, actor and targets."""
        ref, cfg = copy.deepcopy(agent), agent.cfg
        y = self.target(ref, batch)
        s = (batch["states"] - ref.state_norm.shift) / ref.state_norm.scale
        sa = torch.cat([s, batch["actions"]], 1)
        critic_loss = ((ref.q1(sa) - y) ** 2).mean() + ((ref.q2(sa) - y) ** 2).mean()
        ref.critic_opt.zero_grad()
        critic_loss.backward()
        ref.critic_opt.step()
        ref.n_updates += 1
        out = {"critic_loss": critic_loss.item()}
        if ref.n_updates % cfg.policy_freq == 0:
            pi = ref.actor(s)
            q = ref.q1(torch.cat([s, pi], 1))
            lmbda = cfg.alpha / q.abs().mean().item()
            actor_loss = -lmbda * q.mean() + ((pi - batch["actions"]) ** 2).mean()
            ref.actor_opt.zero_grad()
            actor_loss.backward()
            ref.actor_opt.step()
            with torch.no_grad():
                for name in ("actor", "q1", "q2"):
                    for p, p_t in zip(getattr(ref, name).parameters(),
                                      getattr(ref, name + "_target").parameters()):  # fmt: skip
                        p_t.copy_(cfg.tau * p + (1 - cfg.tau) * p_t)
            out |= {"actor_loss": actor_loss.item(), "lambda": lmbda}
        return ref, out

    @grades("TD3BC.update", "TD3BC.critic_target")
    @pytest.mark.parametrize("case", range(CASES))
    def test_two_updates_match_a_reference(self, case):
        """policy_freq 2: update 1 trains the critics, update 2 the actor and the targets too."""
        agent, batch = self.agent(case, policy_freq=2)
        nets = ("actor", "q1", "q2", "actor_target", "q1_target", "q2_target")
        for step in (1, 2):
            part = {k: v[step - 1 :: 2] for k, v in batch.items()}
            ref, want = self.reference_update(agent, part)
            got = agent.update(part)
            assert agent.n_updates == step, f"n_updates counts the updates: {agent.n_updates}"
            assert ("actor_loss" in got) == (step == 2), "the actor learns every 2nd update"
            for key, value in want.items():
                assert key in got and abs(float(got[key]) - value) < 1e-4 * (1 + abs(value)), (
                    f"update {step}: {key} {value:.5f}, got {float(got.get(key, float('nan'))):.5f}"
                )
            for name in nets:
                for (pname, p), r in zip(getattr(agent, name).named_parameters(),
                                         getattr(ref, name).parameters()):  # fmt: skip
                    err = (p - r).abs().max().item()
                    assert err < 1e-4, (
                        f"update {step}: {name}.{pname} differs from the reference by {err:.3g} "
                        f"(critic step on mse(Q1, y) + mse(Q2, y); actor step on -lambda Q1 + BC "
                        f"with a detached lambda; targets moved tau of the way)"
                    )


# Stub dynamics s' = 0.9 s + 2 tanh(a) summed over actions (known, not linear in a)
AFFINE = SimpleNamespace(predict=lambda s, a: 0.9 * s + 2 * torch.tanh(a).sum(-1, keepdim=True))


class RecordingDM:
    """Stub DM: limits [lo, hi] on the states, sample_states a known function; records inputs."""

    def __init__(self, lo, hi, a_dim):
        ones = torch.ones(a_dim)
        self.norm = hand_limits(torch.cat([lo, -ones]), torch.cat([hi, ones]))
        self.calls = []

    def sample_states(self, s0, actions):
        self.calls.append((s0.clone(), actions.clone()))  # each round a fresh offset, 7 k
        return s0[:, None] + 15 * actions.sum(-1, keepdim=True).cumsum(1) + 7.0 * len(self.calls)


class TestRolloutAndFilterHidden:
    """dydiff_rollout, clip_to_data, the filter and synthesise against references, stub models."""

    @grades("dydiff_rollout")
    @pytest.mark.parametrize("iterations", [0, 1, 2, 4])
    def test_rollout_matches_a_reference(self, iterations):
        rng = rng_for("rollout", iterations)
        n, h, s_dim, a_dim = int(rng.integers(3, 12)), int(rng.integers(2, 11)), 3, 2
        w = torch.as_tensor(rng.normal(size=(s_dim, a_dim)), dtype=torch.float32)
        policy = lambda s: torch.tanh((s - 100) / 20 @ w + 0.2)  # noqa: E731
        s0 = far(torch.randn(n, s_dim))
        lo, hi = torch.full((s_dim,), 60.0), torch.full((s_dim,), 140.0)
        dm = RecordingDM(lo, hi, a_dim)
        states, actions = D.dydiff_rollout(s0, policy, AFFINE, dm, h, iterations)
        s, traj = s0, []
        for _ in range(h):  # the dynamics rollout, by hand
            traj.append(s)
            s = AFFINE.predict(s, policy(s))
        ref_s = torch.stack(traj, 1)
        ref_a = policy(ref_s)
        for k in range(iterations):  # policy injection, by hand
            given_s0, given_a = dm.calls[k]
            assert torch.equal(given_s0, s0), f"round {k + 1}: the DM gets the real s0"
            assert torch.allclose(given_a, ref_a, atol=1e-5), f"round {k + 1}: the current actions"
            dm_states = s0[:, None] + 15 * ref_a.sum(-1, keepdim=True).cumsum(1) + 7.0 * (k + 1)
            mixed = (ref_s + dm_states) / 2
            ref_s = torch.cat([s0[:, None], torch.maximum(torch.minimum(mixed[:, 1:], hi), lo)], 1)
            ref_a = policy(ref_s)
        assert len(dm.calls) == iterations, f"M = {iterations}: {len(dm.calls)} DM samples"
        assert states.shape == (n, h, s_dim) and actions.shape == (n, h, a_dim)
        err = (states - ref_s).abs().max().item()
        assert err < 1e-3, f"M = {iterations}, H = {h}: states off the reference by {err:.3g}"
        assert torch.allclose(actions, ref_a, atol=1e-5), "actions = pi(states), the last round's"

    @grades("clip_to_data")
    @pytest.mark.parametrize("case", range(CASES))
    def test_clip_matches_a_reference(self, case):
        rng = rng_for("clip", case)
        n, h, s_dim, a_dim = int(rng.integers(2, 9)), int(rng.integers(2, 12)), 4, 3
        lo = far(torch.as_tensor(rng.normal(size=s_dim + a_dim), dtype=torch.float32))
        hi = lo + torch.as_tensor(rng.uniform(1, 40, size=s_dim + a_dim), dtype=torch.float32)
        norm = hand_limits(lo, hi)
        states = lo[:s_dim] + (hi - lo)[:s_dim] * (torch.rand(n, h, s_dim) * 3 - 1)  # some outside
        s0 = far(torch.randn(n, s_dim))  # s0 may lie outside the limits: it stays as it is
        out = D.clip_to_data(states, s0, norm)
        assert out.shape == states.shape and torch.equal(out[:, 0], s0), "row 0 is exactly s0"
        want = torch.minimum(torch.maximum(states, lo[:s_dim]), hi[:s_dim])
        err = (out[:, 1:] - want[:, 1:]).abs().max().item()
        assert err < 1e-3, f"rows 1+: each state dim clipped to its [lo, hi]: max error {err:.3g}"

    @grades("filter_trajectories")
    @pytest.mark.parametrize("case", range(CASES))
    def test_hardmax_keeps_exactly_the_top(self, case):
        rng = rng_for("hardmax", case)
        n = int(rng.integers(3, 300))
        keep = [0.001, 0.1, 0.35, 0.6, 0.9][case % 5]  # 0.001: below one, so the floor of one
        returns = far(torch.as_tensor(rng.permutation(n), dtype=torch.float32))  # no ties
        idx = D.filter_trajectories(returns, keep, "hardmax")
        k = max(1, round(keep * n))
        want = set(np.argsort(-returns.numpy())[:k].tolist())
        assert set(idx.tolist()) == want and len(idx) == k, (
            f"hardmax, {n} returns, keep_ratio {keep}: the {k} best, got {len(idx)} "
            f"({len(set(idx.tolist()) & want)} of them among the best)"
        )

    @grades("filter_trajectories")
    def test_softmax_draws_by_the_floored_probabilities(self):
        """One kept of 6: i drawn w.p. softmax(z / T)_i (1 - 1e-6) + 1e-6 / N, z standardised."""
        returns = far(torch.tensor([0.0, 0.3, -0.2, 0.5, 0.1, -0.4]))
        z = (returns - returns.mean()) / returns.std(unbiased=False)
        p = torch.softmax(z / 0.8, 0) * (1 - 1e-6) + 1e-6 / 6
        counts = torch.zeros(6)
        for _ in range(3000):
            idx = D.filter_trajectories(returns, 0.1, "softmax", 0.8)
            assert len(idx) == 1
            counts[idx] += 1
        freq = counts / 3000
        assert (freq - p).abs().max() < 0.035, f"draw frequencies {freq.tolist()}, p {p.tolist()}"
        idx = D.filter_trajectories(far(torch.randn(50)), 0.5, "softmax", 0.05)
        assert len(idx) == 25 and len(set(idx.tolist())) == 25, "drawn without replacement"

    @grades("synthesise")
    @pytest.mark.parametrize("case", range(CASES))
    def test_synthesise_matches_a_reference(self, case):
        rng = rng_for("synthesise", case)
        n, h, keep = int(rng.integers(6, 20)), int(rng.integers(3, 10)), 0.5
        cfg = D.Config(horizon=h, iterations=0, keep_ratio=keep, filter="hardmax")
        start = torch.as_tensor(rng.permutation(40)[:n], dtype=torch.float32) * 0.5 - 10
        s0 = torch.stack([start, torch.arange(n, dtype=torch.float32)], 1)  # (position, id)
        step = SimpleNamespace(predict=lambda s, a: s + torch.tensor([1.5, 0.0]))  # s' = s + 1.5
        # r(s, a) = position^2 / 10 - a + id / 77 (no two returns tie)
        reward = SimpleNamespace(
            predict=lambda s, a: s[..., 0] ** 2 / 10 - a[..., 0] + s[..., 1] / 77)
        threshold = float(rng.uniform(-6, 4))
        out, stats = D.synthesise(s0, lambda s: torch.full((*s.shape[:-1], 1), -0.25), step, None,
                                  reward, cfg, lambda s: s[:, 0] > threshold)  # fmt: skip
        ref, returns, fallen = {}, [], []
        for j in range(n):  # by hand: transitions up to and including the first terminal
            rows, x = [], start[j].item()
            for i in range(h - 1):
                x2 = x + 1.5
                rows.append((j, x, (x**2) / 10 + 0.25 + j / 77, x2, float(x2 > threshold)))
                x = x2
                if x2 > threshold:
                    break
            ref[j] = rows
            returns.append(sum(r[2] for r in rows))
            fallen.append(rows[-1][4] == 1.0)
        k = max(1, round(keep * n))
        kept = sorted(range(n), key=lambda j: -returns[j])[:k]
        want = sorted(r for j in kept for r in ref[j])
        got = sorted(zip(out["states"][:, 1].tolist(), out["states"][:, 0].tolist(),
                         out["rewards"].reshape(-1).tolist(), out["next_states"][:, 0].tolist(),
                         out["dones"].reshape(-1).tolist()))  # fmt: skip
        assert len(got) == len(want) == stats["kept_transitions"], (
            f"{len(want)} kept transitions (the best {k} of {n} by return, each up to its first "
            f"terminal), got {len(got)} (stats: {stats.get('kept_transitions')})"
        )
        for g, w in zip(got, want):
            assert all(abs(a - b) < 1e-3 for a, b in zip(g, w)), (
                f"(trajectory, s, r(s, a), s', done): expected {w}, got {g}"
            )
        assert (out["actions"] == -0.25).all() and out["actions"].shape == (len(want), 1)
        assert stats["kept_trajectories"] == k
        assert abs(stats["return_all"] - np.mean(returns)) < 1e-3 * (1 + abs(np.mean(returns)))
        assert abs(stats["fallen_all"] - np.mean(fallen)) < 1e-6
        assert abs(stats["fallen_kept"] - np.mean([fallen[j] for j in kept])) < 1e-6
