"""DyDiff: long-horizon rollout via dynamics diffusion for offline RL, in one readable module.

Zhao et al., arXiv 2405.19189. A diffusion model (DM) learns windows of H consecutive (state,
action) rows of the data: alone, it imagines the data's behaviour policy. DyDiff injects the
learning policy: a one-step dynamics model makes a first rollout, then M times the DM resamples the
states with the first state and all actions fixed (inpainting), and each action is recomputed as
pi(state). A reward model keeps the best trajectories; TD3+BC learns from real and synthetic
transitions. Sections follow the algorithm; "departure N" marks a change from the authors' code.
torch and numpy only: environments, datasets and files live in train_offline.py.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ---- 1. Config ------------------------------------------------------------------------------------
@dataclass
class Config:
    device: str = "cpu"  # torch device for every tensor and model (the run's settings follow)
    updates: int = 100_000  # TD3+BC gradient updates
    eval_every: int = 2_500  # updates between evaluations
    # --- DyDiff rollouts (departure 4: sizes for a CPU; "authors:" gives theirs)
    horizon: int = 32  # H: steps per synthetic trajectory and DM window length (authors: 100)
    iterations: int = 2  # M: policy-injection rounds (2 in every published config)
    rollout_batch_size: int = 1024  # trajectories synthesised per round (authors: 2048)
    rollout_every: int = 1_000  # updates between synthesis rounds (authors: 500)
    keep_ratio: float = 0.6  # fraction of trajectories kept by the reward filter
    filter: str = "hardmax"  # "hardmax" (top keep_ratio) or "softmax" (sampled)
    temperature: float = 0.05  # softmax filter temperature on standardised returns
    real_ratio: float = 0.6  # fraction of each batch drawn from the real data
    synthetic_capacity: int = 200_000  # FIFO size of the synthetic buffer (authors: 2M)
    # --- pessimism by model uncertainty u(s, a) (departure 11: ours, MOPO / TATU style; 0 = off)
    uncertainty_penalty: float = 0.0  # reward r - penalty * u(s, a) before the filter ranks
    uncertainty_halt: float = 0.0  # a trajectory ends before its first step with u(s, a) > halt
    # --- diffusion model (DDPM; the authors use EDM)
    denoiser: str = "mlp"  # "mlp" (fast on a CPU) or "unet" (Diffuser's temporal U-Net)
    n_diffusion_steps: int = 20  # DDPM steps K for training and ancestral sampling
    predict_epsilon: bool = False  # predict the noise (True) or the clean window x0 (False)
    mlp_width: int = 512  # MLP denoiser: hidden width
    mlp_blocks: int = 4  # MLP denoiser: residual blocks
    unet_dim: int = 32  # U-Net: channels of the first level (authors: 128)
    unet_dim_mults: tuple = (1, 2, 4)  # U-Net: channel multipliers per level (authors: 1, 4, 8)
    dm_steps: int = 5_000  # DM training steps
    dm_batch_size: int = 256  # DM training batch
    dm_lr: float = 3e-4  # DM Adam learning rate
    ema_decay: float = 0.995  # decay of the EMA copy of the denoiser used for sampling
    # --- dynamics ensemble and reward model (MBPO / MOPO recipe)
    n_members: int = 7  # ensemble members
    n_elites: int = 5  # members used for prediction, lowest holdout MSE
    dynamics_hidden: int = 200  # width of the 4 hidden layers
    reward_hidden: int = 256  # width of the reward model's 2 hidden layers
    model_lr: float = 1e-3  # Adam rate, dynamics and reward models (departure 6; authors 1e-4)
    model_batch_size: int = 256  # batch per member
    model_epoch_steps: int = 500  # gradient steps between holdout checks ("epoch")
    model_max_epochs: int = 20  # upper bound on epochs
    model_patience: int = 5  # epochs without 1% holdout improvement before stopping
    holdout_ratio: float = 0.2  # fraction of rows held out...
    max_holdout: int = 5_000  # ...but at most this many
    # --- TD3+BC (canonical settings)
    hidden: int = 256  # width of the actor's and critics' 2 hidden layers
    batch_size: int = 256  # RL batch
    lr: float = 3e-4  # actor and critic Adam learning rate
    gamma: float = 0.99  # discount
    tau: float = 0.005  # target network soft-update rate
    policy_noise: float = 0.2  # target policy smoothing noise...
    noise_clip: float = 0.5  # ...clipped at this
    policy_freq: int = 2  # actor and target update every policy_freq critic updates
    alpha: float = 2.5  # weight of the Q term against behaviour cloning


# ---- 2. Data --------------------------------------------------------------------------------------
class Normalizer(nn.Module):
    """x -> (x - shift) / scale per dimension, and back (buffers: a state_dict carries them).
    fit_zscore(x [N, D]), for the learner and the model inputs: shift = each dimension's mean over
    the rows, scale = its std (unbiased) + 1e-3, TD3+BC's eps. fit_limits: [min, max] to [-1, 1]."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def fit_zscore(self, x: torch.Tensor) -> Normalizer:
        self.shift.copy_(x.mean(0))
        self.scale.copy_(x.std(0) + 1e-3)
        return self

    def fit_limits(self, x: torch.Tensor) -> Normalizer:
        lo, hi = x.min(0).values, x.max(0).values
        self.shift.copy_((hi + lo) / 2)
        self.scale.copy_((hi - lo).clamp(min=1e-6) / 2)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class ReplayBuffer:
    """Transitions in tensors on the device: the real data (filled once) and the synthetic data."""

    def __init__(self, state_dim: int, action_dim: int, capacity: int, device: str):
        dims = dict(states=state_dim, actions=action_dim, rewards=1, next_states=state_dim, dones=1)
        self.data = {k: torch.zeros(capacity, d, device=device) for k, d in dims.items()}
        self.capacity, self.size, self.pos = capacity, 0, 0

    def add(self, batch: dict[str, torch.Tensor]) -> None:
        """Write a batch {states [n, S], actions [n, A], rewards [n] or [n, 1], next_states, dones}
        at index pos on, wrapping round (FIFO: the oldest rows are overwritten; of a batch larger
        than the buffer only its newest rows stay); pos moves on, size grows up to capacity."""
        n = min(len(batch["states"]), self.capacity)  # (of a larger batch, the newest rows)
        idx = (self.pos + torch.arange(n)) % self.capacity
        for k, v in self.data.items():
            v[idx.to(v.device)] = batch[k][-n:].reshape(n, -1).float().to(v.device)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, self.size, (n,), device=self.data["states"].device)
        return {k: v[idx] for k, v in self.data.items()}

    def state_dict(self) -> dict:
        return {"data": {k: v[: self.size].clone() for k, v in self.data.items()}, "pos": self.pos}

    def load_state_dict(self, d: dict) -> None:
        self.size, self.pos = len(d["data"]["states"]), d["pos"]
        for k, v in d["data"].items():
            self.data[k][: self.size] = v.to(self.data[k].device)


def sample_mixed(real: ReplayBuffer, synthetic: ReplayBuffer, n: int, real_ratio: float):
    """A batch {key: [n, .]}: round(n * real_ratio) rows drawn at random from `real`, the rest from
    `synthetic`. All n are real while the synthetic buffer holds fewer than n rows
    (departure 8: the authors' warm-up ends at one batch's synthetic share, 102 rows)."""
    if synthetic.size < n or real_ratio == 1:
        return real.sample(n)
    n_real = round(n * real_ratio)
    real_rows, synthetic_rows = real.sample(n_real), synthetic.sample(n - n_real)
    return {k: torch.cat([real_rows[k], synthetic_rows[k]]) for k in real_rows}


def window_starts(episode_ids: np.ndarray, horizon: int) -> np.ndarray:
    """Start rows i (int64, ascending) of every window of `horizon` consecutive rows inside one
    episode, stride 1: as episode_ids [N] keeps each episode's rows together, the rows i and
    i + horizon - 1 share an id. A shorter episode gives none (departure 5: the authors pad it)."""
    ids = np.asarray(episode_ids)
    if len(ids) < horizon:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(ids[: len(ids) - horizon + 1] == ids[horizon - 1 :]).astype(np.int64)


def check_data(data: dict) -> None:
    """The data this module takes, numpy arrays over N > 0 transitions: observations [N, S],
    actions [N, A], rewards [N], next_observations [N, S], terminals [N], floats, all finite;
    actions in [-1, 1] (TD3+BC's tanh actor); terminals 0 or 1 (1: the episode ends at
    next_observations; a time limit is not one); episode_ids [N], integers, an episode's rows
    consecutive and in time order. Anything else: one ValueError naming the key."""
    shapes = dict(observations="NS", actions="NA", rewards="N", next_observations="NS",
                  terminals="N", episode_ids="N")  # fmt: skip
    if missing := [k for k in shapes if k not in data]:
        raise ValueError(f"data: missing key '{missing[0]}' (expected keys {', '.join(shapes)})")
    x = {k: np.atleast_1d(data[k]) for k in shapes}
    sizes = dict(N=len(x["observations"]), S=x["observations"].shape[-1], A=x["actions"].shape[-1])
    for k, dims in shapes.items():
        want, kind = [sizes[d] for d in dims], np.integer if k == "episode_ids" else np.floating
        if not sizes["N"] or list(x[k].shape) != want or not np.issubdtype(x[k].dtype, kind):
            raise ValueError(f"data['{k}']: expected shape [{', '.join(dims)}] = {want}, N > 0, "
                             f"{kind.__name__} values; got {list(x[k].shape)} {x[k].dtype}")
        if kind is np.floating and not np.isfinite(x[k]).all():
            raise ValueError(f"data['{k}']: expected finite values, got NaN or infinity")
    if (top := np.abs(x["actions"]).max()) > 1:
        raise ValueError(f"data['actions']: expected values in [-1, 1], got |a| up to {top:.3g}")
    if not np.isin(x["terminals"], (0, 1)).all():
        raise ValueError("data['terminals']: expected 0 or 1 only")
    if np.count_nonzero(np.diff(x["episode_ids"])) + 1 != len(np.unique(x["episode_ids"])):
        raise ValueError("data['episode_ids']: expected each episode's rows to be consecutive")


# ---- 3. Diffusion model ---------------------------------------------------------------------------
class SinusoidalEmbedding(nn.Module):
    """Diffusion step t -> [B, dim] sin/cos features (Transformer positional encoding)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / (half - 1))
        args = t.float()[:, None] * freqs[None]
        return torch.cat([args.sin(), args.cos()], dim=-1)


class MLPDenoiser(nn.Module):
    """Residual MLP over the flattened window [B, H*D], ~5x faster on a CPU (departure 2)."""

    def __init__(self, horizon: int, transition_dim: int, width: int = 512, n_blocks: int = 4):
        super().__init__()
        w, d = width, horizon * transition_dim
        self.time_mlp = nn.Sequential(SinusoidalEmbedding(128), nn.Linear(128, w), nn.Mish(),
                                      nn.Linear(w, w))  # fmt: skip
        self.inp = nn.Linear(d, w)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(w), nn.Linear(w, w), nn.Mish(), nn.Linear(w, w))
            for _ in range(n_blocks)
        )
        self.out = nn.Sequential(nn.LayerNorm(w), nn.Mish(), nn.Linear(w, d))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: [B, H, D], t: [B] -> [B, H, D]."""
        temb = self.time_mlp(t)
        h = self.inp(x.flatten(1))
        for block in self.blocks:
            h = h + block(h + temb)
        return self.out(h).view_as(x)


class Conv1dBlock(nn.Sequential):
    """Conv1d over time -> GroupNorm(8) -> Mish (Diffuser's building block)."""

    def __init__(self, cin: int, cout: int, kernel: int = 5):
        super().__init__(
            nn.Conv1d(cin, cout, kernel, padding=kernel // 2), nn.GroupNorm(8, cout), nn.Mish()
        )


class ResidualTemporalBlock(nn.Module):
    """Two conv blocks with the time embedding added between them, plus a residual connection."""

    def __init__(self, cin: int, cout: int, embed_dim: int):
        super().__init__()
        self.block1, self.block2 = Conv1dBlock(cin, cout), Conv1dBlock(cout, cout)
        self.time_mlp = nn.Sequential(nn.Mish(), nn.Linear(embed_dim, cout))
        self.residual = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x) + self.time_mlp(temb)[:, :, None]
        return self.block2(h) + self.residual(x)


class TemporalUnet(nn.Module):
    """Diffuser's temporal U-Net (Janner et al. 2022), the authors': dim 128, dim_mults (1, 4, 8).
    Each level but the last halves the horizon, which 2 ** (levels - 1) must divide."""

    def __init__(self, horizon: int, transition_dim: int, dim: int = 32, dim_mults=(1, 2, 4)):
        super().__init__()
        dims = [transition_dim] + [dim * m for m in dim_mults]
        in_out = list(zip(dims[:-1], dims[1:]))
        self.time_mlp = nn.Sequential(SinusoidalEmbedding(dim), nn.Linear(dim, dim * 4), nn.Mish(),
                                      nn.Linear(dim * 4, dim))  # fmt: skip
        self.downs, self.ups = nn.ModuleList(), nn.ModuleList()
        for i, (cin, cout) in enumerate(in_out):  # two residual blocks, then halve the horizon
            last = i == len(in_out) - 1
            down = nn.Identity() if last else nn.Conv1d(cout, cout, 3, stride=2, padding=1)
            blocks = [ResidualTemporalBlock(cin, cout, dim), ResidualTemporalBlock(cout, cout, dim)]
            self.downs.append(nn.ModuleList([*blocks, down]))
        self.mid1 = ResidualTemporalBlock(dims[-1], dims[-1], dim)
        self.mid2 = ResidualTemporalBlock(dims[-1], dims[-1], dim)
        for cin, cout in reversed(in_out[1:]):  # back up; the skip connection doubles the input
            up = nn.ConvTranspose1d(cin, cin, 4, stride=2, padding=1)
            blocks = [ResidualTemporalBlock(2 * cout, cin, dim), ResidualTemporalBlock(cin, cin, dim)]
            self.ups.append(nn.ModuleList([*blocks, up]))
        out = dims[1]  # channels of the first level, where the way up ends
        self.final = nn.Sequential(Conv1dBlock(out, out), nn.Conv1d(out, transition_dim, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: [B, H, D], t: [B] -> [B, H, D]."""
        x = x.transpose(1, 2)  # convolutions run over time: [B, D, H]
        temb = self.time_mlp(t)
        skips = []
        for res1, res2, down in self.downs:
            x = res2(res1(x, temb), temb)
            skips.append(x)
            x = down(x)
        x = self.mid2(self.mid1(x, temb), temb)
        for res1, res2, up in self.ups:
            x = res2(res1(torch.cat([x, skips.pop()], dim=1), temb), temb)
            x = up(x)
        return self.final(x).transpose(1, 2)


def cosine_betas(n_steps: int, s: float = 0.008) -> torch.Tensor:
    """Cosine noise schedule (Nichol & Dhariwal 2021), as in Diffuser."""
    t = torch.linspace(0, 1, n_steps + 1, dtype=torch.float64)
    alphas_cumprod = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(0, 0.999).float()


class GaussianDiffusion(nn.Module):
    """DDPM over windows x: [B, H, D] in [-1, 1], conditioned by inpainting as the authors' code is.
    Departure 1: they use EDM with a 34-step stochastic Heun sampler; DDPM is cheap on a CPU."""

    def __init__(self, denoiser: nn.Module, horizon: int, transition_dim: int, n_steps: int = 20,
                 predict_epsilon: bool = False, ema_decay: float = 0.995):  # fmt: skip
        super().__init__()
        self.denoiser = denoiser
        self.ema = copy.deepcopy(denoiser).requires_grad_(False)  # the sampler uses this copy
        self.norm = Normalizer(transition_dim)  # limits to [-1, 1]; fitted by train_diffusion
        self.horizon, self.transition_dim, self.n_steps = horizon, transition_dim, n_steps
        self.predict_epsilon, self.ema_decay = predict_epsilon, ema_decay
        betas = cosine_betas(n_steps)
        ab = torch.cumprod(1 - betas, 0)  # alpha-bar_t
        ab_prev = torch.cat([torch.ones(1), ab[:-1]])
        self.register_buffer("sqrt_ab", ab.sqrt())
        self.register_buffer("sqrt_1m_ab", (1 - ab).sqrt())
        # posterior q(x_{t-1} | x_t, x0) = N(c0 * x0 + ct * x_t, var)  (DDPM eq. 7)
        self.register_buffer("post_c0", betas * ab_prev.sqrt() / (1 - ab))
        self.register_buffer("post_ct", (1 - ab_prev) * (1 - betas).sqrt() / (1 - ab))
        self.register_buffer("post_std", (betas * (1 - ab_prev) / (1 - ab)).sqrt())

    def loss(self, x0: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Scalar loss for clean windows x0 [B, H, D] (normalised), mask [H, D] (True: fixed). Per
        window t ~ U{0, .., K-1}; x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, eps ~ N(0, 1), with the
        fixed entries set to x0 (inpainting); one call denoiser(x_t, t); the target is eps if
        predict_epsilon, else x0; the squared error is averaged over the free entries only."""
        t = torch.randint(0, self.n_steps, (len(x0),), device=x0.device)
        noise = torch.randn_like(x0)
        xt = self.sqrt_ab[t, None, None] * x0 + self.sqrt_1m_ab[t, None, None] * noise
        xt = torch.where(mask, x0, xt)  # inpainting at training time
        target = noise if self.predict_epsilon else x0
        err = (self.denoiser(xt, t) - target) ** 2
        return err[:, ~mask].mean()  # fixed entries carry no signal (departure 1: theirs all)

    @torch.no_grad()
    def update_ema(self) -> None:
        """Each EMA parameter <- ema + (1 - ema_decay) (online - ema); the online denoiser stays."""
        for p_ema, p in zip(self.ema.parameters(), self.denoiser.parameters()):
            p_ema.lerp_(p, 1 - self.ema_decay)

    @torch.no_grad()
    def sample(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Ancestral sampling with the EMA copy -> x [B, H, D]. x starts as N(0, 1) noise; for t =
        K-1, .., 0: ema(x, t [B]) predicts x0 (or eps, then x0 from it), clamped to [-1, 1]; then
        x = post_c0 x0 + post_ct x, plus post_std N(0, 1) noise if t > 0 (DDPM eq. 7). Where mask
        [H, D] is True, x is values [B, H, D] (normalised) before the first call and after each."""
        x = torch.where(mask, values, torch.randn_like(values))
        for t in reversed(range(self.n_steps)):
            tt = torch.full((len(x),), t, device=x.device)
            out = self.ema(x, tt)
            x0 = (x - self.sqrt_1m_ab[t] * out) / self.sqrt_ab[t] if self.predict_epsilon else out
            x = self.post_c0[t] * x0.clamp(-1, 1) + self.post_ct[t] * x
            if t > 0:
                x = x + self.post_std[t] * torch.randn_like(x)
            x = torch.where(mask, values, x)
        return x

    def condition_mask(self, state_dim: int) -> torch.Tensor:
        """Boolean [H, D], True where DyDiff fixes x: row 0's state (:state_dim), every action."""
        mask = torch.zeros(self.horizon, self.transition_dim, dtype=torch.bool)
        mask[0, :state_dim] = mask[:, state_dim:] = True
        return mask.to(self.sqrt_ab.device)

    def sample_states(self, s0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """States [N, H, S] (unnormalised) given s0: [N, S] and actions: [N, H, A]."""
        n, s_dim = s0.shape
        values = torch.zeros(n, self.horizon, self.transition_dim, device=s0.device)
        values[:, 0, :s_dim] = s0
        values[:, :, s_dim:] = actions
        x = self.sample(self.norm(values), self.condition_mask(s_dim))
        return self.norm.unnormalize(x)[..., :s_dim]


def build_diffusion(cfg: Config, state_dim: int, action_dim: int) -> GaussianDiffusion:
    d = state_dim + action_dim
    if cfg.denoiser == "mlp":
        net = MLPDenoiser(cfg.horizon, d, cfg.mlp_width, cfg.mlp_blocks)
    else:
        net = TemporalUnet(cfg.horizon, d, cfg.unet_dim, cfg.unet_dim_mults)
    schedule = (cfg.n_diffusion_steps, cfg.predict_epsilon, cfg.ema_decay)
    return GaussianDiffusion(net, cfg.horizon, d, *schedule).to(cfg.device)


# ---- 4. Dynamics and reward models ----------------------------------------------------------------
class EnsembleLinear(nn.Module):
    """n_members independent linear layers run as one batched matmul: x [E, B, in] -> [E, B, out]."""

    def __init__(self, n_members: int, d_in: int, d_out: int):
        super().__init__()
        bound = 1 / math.sqrt(d_in)  # nn.Linear's default initialisation, per member
        self.weight = nn.Parameter(torch.empty(n_members, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_members, 1, d_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleMLP(nn.Sequential):
    """An ensemble of MLPs, `n_layers` hidden layers (the reward model is an ensemble of one)."""

    def __init__(self, n_members: int, d_in: int, d_out: int, hidden: int, n_layers: int, act):
        layers, width = [], d_in
        for _ in range(n_layers):  # hidden layers, each followed by the activation
            layers += [EnsembleLinear(n_members, width, hidden), act()]
            width = hidden
        super().__init__(*layers, EnsembleLinear(n_members, width, d_out))
        self.n_members = n_members


class EnsembleDynamics(nn.Module):
    """MBPO's probabilistic ensemble: z-scored (s, a) -> N(mean, var) of s' - s in raw units; the
    log-variance is soft-clamped into learnable bounds (departure 6: the authors' are fixed)."""

    weight_decay = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)  # per layer, MBPO's values

    def __init__(self, state_dim: int, action_dim: int, n_members=7, n_elites=5, hidden=200):
        super().__init__()
        self.input_norm = Normalizer(state_dim + action_dim)
        self.net = EnsembleMLP(n_members, state_dim + action_dim, 2 * state_dim, hidden, 4, nn.SiLU)
        self.max_logvar = nn.Parameter(torch.full((state_dim,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((state_dim,), -10.0))
        self.register_buffer("elites", torch.arange(n_elites))

    def forward(self, sa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sa: [E, B, S + A] raw -> mean, logvar of the state change, each [E, B, S]."""
        mean, logvar = self.net(self.input_norm(sa)).chunk(2, dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    def loss(self, sa: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Scalar loss for raw sa [E, B, S + A], delta = s' - s [E, B, S]: Gaussian NLL, the mean
        over B and S of (mean - delta)^2 exp(-logvar) + logvar, summed over members; + 0.01
        sum(max_logvar - min_logvar); + sum over the 5 layers of weight_decay[i] / 2 ||W_i||^2."""
        mean, logvar = self(sa)
        nll = (((mean - delta) ** 2) * torch.exp(-logvar) + logvar).mean((1, 2)).sum()
        bounds = 0.01 * (self.max_logvar.sum() - self.min_logvar.sum())
        linears = [m for m in self.net if isinstance(m, EnsembleLinear)]
        decay = sum(c * 0.5 * (m.weight**2).sum() for c, m in zip(self.weight_decay, linears))
        return nll + bounds + decay

    def errors(self, sa: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Holdout MSE of each member's mean: [E]."""
        return ((self(sa)[0] - delta) ** 2).mean((1, 2))

    @torch.no_grad()
    def uncertainty(self, sa: torch.Tensor) -> torch.Tensor:
        """u(s, a) for raw sa [..., S + A] -> [...]: the elites' disagreement, the largest distance
        of an elite's mean from the elites' average, in units of the data's state std."""
        mean = self(sa.reshape(1, -1, sa.shape[-1]).expand(self.net.n_members, -1, -1))[0]
        mean = mean[self.elites]  # [elites, B, S]
        gap = (mean - mean.mean(0)) / self.input_norm.scale[: mean.shape[-1]]
        return gap.norm(dim=-1).max(0).values.reshape(sa.shape[:-1])

    @torch.no_grad()
    def predict(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Next states [B, S] for raw states [B, S], actions [B, A]: each row is s + the mean change
        of one elite (self.elites) drawn at random per row; the variance serves training only."""
        sa = torch.cat([states, actions], -1)
        mean, _ = self(sa.expand(self.net.n_members, *sa.shape))  # all members, one matmul
        pick = self.elites[torch.randint(len(self.elites), (len(sa),), device=sa.device)]
        return states + mean[pick, torch.arange(len(sa), device=sa.device)]


class RewardModel(nn.Module):
    """r(s, a): MLP 2x256 ReLU on z-scored inputs, trained with MSE (the authors' reward model)."""

    def __init__(self, state_dim: int, action_dim: int, hidden: int = 256):
        super().__init__()
        self.input_norm = Normalizer(state_dim + action_dim)
        self.net = EnsembleMLP(1, state_dim + action_dim, 1, hidden, 2, nn.ReLU)

    def forward(self, sa: torch.Tensor) -> torch.Tensor:
        """sa: [E=1, B, S + A] -> [1, B, 1]."""
        return self.net(self.input_norm(sa))

    def loss(self, sa: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self(sa), r)

    def errors(self, sa: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return ((self(sa) - r) ** 2).mean((1, 2))

    @torch.no_grad()
    def predict(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Rewards [...] for states [..., S] and actions [..., A] of any leading shape."""
        sa = torch.cat([states, actions], -1)
        return self(sa.reshape(1, -1, sa.shape[-1])).reshape(sa.shape[:-1])


def build_dynamics(cfg: Config, state_dim: int, action_dim: int) -> EnsembleDynamics:
    args = (cfg.n_members, cfg.n_elites, cfg.dynamics_hidden)
    return EnsembleDynamics(state_dim, action_dim, *args).to(cfg.device)


def build_reward_model(cfg: Config, state_dim: int, action_dim: int) -> RewardModel:
    return RewardModel(state_dim, action_dim, cfg.reward_hidden).to(cfg.device)


# ---- 5. TD3+BC ------------------------------------------------------------------------------------
class Saved:
    """A checkpoint (for --resume) of the attributes named in `saved`, by state_dict where any."""

    def state_dict(self) -> dict:
        values = {name: getattr(self, name) for name in self.saved}
        return {k: v.state_dict() if hasattr(v, "state_dict") else v for k, v in values.items()}

    def load_state_dict(self, d: dict) -> None:
        for name in self.saved:
            if hasattr(getattr(self, name), "load_state_dict"):
                getattr(self, name).load_state_dict(d[name])
            else:
                setattr(self, name, d[name])


def mlp(d_in: int, d_out: int, hidden: int = 256) -> nn.Sequential:
    """Two hidden ReLU layers: TD3+BC's actor and critic networks."""
    layers = [nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden, d_out))


class TD3BC(Saved):
    """TD3+BC (Fujimoto & Gu 2021), laid out like their code; state_norm z-scores raw states.
    Departure 3: the authors' actor is tanh-Gaussian, and they halve the critic and BC losses."""

    saved = ("actor", "q1", "q2", "actor_target", "q1_target", "q2_target", "actor_opt",
             "critic_opt", "state_norm", "n_updates")  # fmt: skip

    def __init__(self, state_dim: int, action_dim: int, state_norm: Normalizer, cfg: Config):
        self.cfg, self.state_norm = cfg, state_norm.to(cfg.device)
        self.actor = nn.Sequential(mlp(state_dim, action_dim, cfg.hidden), nn.Tanh()).to(cfg.device)
        self.q1 = mlp(state_dim + action_dim, 1, cfg.hidden).to(cfg.device)
        self.q2 = mlp(state_dim + action_dim, 1, cfg.hidden).to(cfg.device)
        self.actor_target = copy.deepcopy(self.actor)
        self.q1_target, self.q2_target = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        critic_params = [*self.q1.parameters(), *self.q2.parameters()]
        self.critic_opt = torch.optim.Adam(critic_params, lr=cfg.lr)
        self.n_updates = 0

    @torch.no_grad()
    def critic_target(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """TD3's target y [B, 1], no gradient, for a raw batch (rewards, dones [B, 1], next_states):
        y = r + gamma (1 - done) min(Q1'(s', a'), Q2'(s', a')), s' = state_norm(next_states), and
        a' = clip(pi'(s') + clip(policy_noise N(0, 1), +-noise_clip), -1, 1), with pi', Q1', Q2'
        the target networks. Its one random draw is the noise, randn_like(batch["actions"])."""
        cfg, a = self.cfg, batch["actions"]
        s2 = self.state_norm(batch["next_states"])
        noise = (torch.randn_like(a) * cfg.policy_noise).clamp(-cfg.noise_clip, cfg.noise_clip)
        a2 = (self.actor_target(s2) + noise).clamp(-1, 1)
        sa2 = torch.cat([s2, a2], -1)
        q2 = torch.min(self.q1_target(sa2), self.q2_target(sa2))
        return batch["rewards"] + cfg.gamma * (1 - batch["dones"]) * q2

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One update on a raw batch: critic_target's keys, states [B, S], actions [B, A]. With
        s = state_norm(states), y = critic_target(batch) first: a critic step on mse(Q1(s, a), y) +
        mse(Q2(s, a), y); n_updates += 1; if it is a multiple of policy_freq, an actor step on
        -lambda mean Q1(s, pi(s)) + mse(pi(s), a), lambda = alpha / mean|Q1(s, pi(s))| detached,
        then targets += tau (online - target). -> {"critic_loss"} (+ "actor_loss", "lambda")."""
        cfg, y = self.cfg, self.critic_target(batch)
        s, a = self.state_norm(batch["states"]), batch["actions"]
        sa = torch.cat([s, a], -1)
        critic_loss = F.mse_loss(self.q1(sa), y) + F.mse_loss(self.q2(sa), y)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        out = {"critic_loss": critic_loss.detach()}
        self.n_updates += 1
        if self.n_updates % cfg.policy_freq == 0:
            pi = self.actor(s)
            q = self.q1(torch.cat([s, pi], -1))
            lmbda = cfg.alpha / q.abs().mean().detach()
            actor_loss = -lmbda * q.mean() + F.mse_loss(pi, a)
            self.actor_opt.zero_grad()
            actor_loss.backward()
            self.actor_opt.step()
            with torch.no_grad():  # target <- target + tau * (online - target)
                for net in ("actor", "q1", "q2"):
                    online, target = getattr(self, net), getattr(self, f"{net}_target")
                    for p, p_target in zip(online.parameters(), target.parameters()):
                        p_target.lerp_(p, cfg.tau)
            out |= {"actor_loss": actor_loss.detach(), "lambda": lmbda}
        return out

    @torch.no_grad()
    def act(self, states: torch.Tensor) -> torch.Tensor:
        """Deterministic actions pi(state_norm(states)) [..., A] for raw states [..., S]."""
        return self.actor(self.state_norm(states))


# ---- 6. DyDiff rollout: policy injection and reward filtering -------------------------------------
@torch.no_grad()
def dydiff_rollout(s0, policy, dynamics, diffusion, horizon: int, iterations: int):
    """Raw s0 [N, S] -> states [N, H, S], actions [N, H, A]; policy: states [..., S] -> [..., A].
    First a rollout of dynamics.predict: a_i = pi(s_i), s_{i+1} = f(s_i, a_i). Then M = iterations
    rounds of policy injection (no DM if M = 0), as the authors' code does them: the states are
    AVERAGED with one diffusion.sample_states(s0, actions) [N, H, S], then clip_to_data(., s0,
    diffusion.norm), and every action is pi(state) again. So s_{i+1} was sampled under the PREVIOUS
    round's actions and averaged with another path (it may cut a wall's corner): not a real step."""
    states, actions = [s0], []
    for _ in range(horizon - 1):
        actions.append(policy(states[-1]))
        states.append(dynamics.predict(states[-1], actions[-1]))
    actions.append(policy(states[-1]))
    states, actions = torch.stack(states, 1), torch.stack(actions, 1)
    for _ in range(iterations):
        average = (states + diffusion.sample_states(s0, actions)) / 2
        states = clip_to_data(average, s0, diffusion.norm)
        actions = policy(states)  # the policy acts on every row of every trajectory at once
    return states, actions


def clip_to_data(states: torch.Tensor, s0: torch.Tensor, norm: Normalizer) -> torch.Tensor:
    """States [N, H, S] with row 0 set to the real s0 [N, S] and rows 1.. clamped per state
    dimension to [shift - scale, shift + scale] of norm, the DM's limits of (s, a): the data's
    [min, max], next observations included, as terminal states are only there (departure 10)."""
    n_s = states.shape[-1]
    lo, hi = (norm.shift - norm.scale)[:n_s], (norm.shift + norm.scale)[:n_s]
    return torch.cat([s0[:, None], states[:, 1:].clamp(lo, hi)], 1)


def filter_trajectories(returns: torch.Tensor, keep_ratio: float, mode: str = "hardmax",
                        temperature: float = 0.05) -> torch.Tensor:  # fmt: skip
    """Indices [k] of the kept trajectories, k = max(1, round(keep_ratio * N)), of returns [N].
    hardmax: the k highest. softmax, the authors': k drawn without replacement with probability
    softmax(z / T) (1 - eps) + eps / N, z the returns standardised (population std), eps = 1e-6. At
    T = 0.05 few are above the floor eps / N; the rest is near uniform (docs/details.md)."""
    k = max(1, round(keep_ratio * len(returns)))
    if mode == "hardmax":  # exactly k (departure 7: theirs keeps ties at the quantile too)
        return returns.topk(k).indices
    z = (returns - returns.mean()) / (returns.std(unbiased=False) + 1e-6)
    p = torch.softmax(z / temperature, 0) * (1 - 1e-6) + 1e-6 / len(z)
    return torch.multinomial(p, k, replacement=False)


@torch.no_grad()
def synthesise(s0, policy, dynamics, diffusion, reward_model, cfg: Config, terminal_fn=None):
    """One round: dydiff_rollout from s0 [N, S], rewards, terminals, filter_trajectories. Each
    trajectory gives H - 1 transitions (s_i, a_i, r_i = reward_model.predict(s_i, a_i), s_{i+1},
    done_i), done_i = terminal_fn(next states [M, S]) or False; those after its first terminal are
    dropped and left out of its return, sum r_i (departure 7). Departure 11, off at 0: with
    uncertainty_penalty L, r_i - L u(s_i, a_i) (dynamics.uncertainty); with uncertainty_halt X, a
    trajectory also ends before its first step with u > X. -> the kept ones in step order
    {states [T, S], actions, rewards [T], next_states, dones [T] (float)} and stats: counts
    kept_trajectories, kept_transitions; means return_kept, return_all, fallen_kept, fallen_all."""
    states, actions = dydiff_rollout(s0, policy, dynamics, diffusion, cfg.horizon, cfg.iterations)
    s, a, s2 = states[:, :-1], actions[:, :-1], states[:, 1:]
    rewards = reward_model.predict(s, a)  # [N, H-1]
    dones = torch.zeros_like(rewards, dtype=torch.bool)
    if terminal_fn is not None:
        dones = terminal_fn(s2.reshape(-1, s2.shape[-1])).reshape(rewards.shape)
    valid = (torch.cumsum(dones.int(), 1) - dones.int()) == 0  # no EARLIER step was terminal
    if cfg.uncertainty_penalty or cfg.uncertainty_halt:  # departure 11
        u = dynamics.uncertainty(torch.cat([s, a], -1))  # [N, H-1], at the final (s_i, a_i)
        rewards = rewards - cfg.uncertainty_penalty * u
        if cfg.uncertainty_halt:  # this step and the later ones are dropped
            valid &= (u > cfg.uncertainty_halt).cumsum(1) == 0
    returns = (rewards * valid).sum(1)
    keep = filter_trajectories(returns, cfg.keep_ratio, cfg.filter, cfg.temperature)
    v = valid[keep]
    parts = dict(states=s, actions=a, rewards=rewards, next_states=s2, dones=dones.float())
    fallen = dones.any(1).float()  # trajectories that reached a terminal state
    stats = dict(kept_trajectories=len(keep), kept_transitions=int(v.sum()),
                 return_kept=returns[keep].mean().item(), return_all=returns.mean().item(),
                 fallen_all=fallen.mean().item(), fallen_kept=fallen[keep].mean().item())  # fmt: skip
    return {k: x[keep][v] for k, x in parts.items()}, stats


# ---- 7. Training ----------------------------------------------------------------------------------
def _inputs(data: dict[str, np.ndarray], device: str) -> tuple[torch.Tensor, ...]:
    """Model inputs (s, a), dynamics targets s' - s and reward targets r, as tensors."""
    check_data(data)
    s, a, r, s2 = (torch.as_tensor(data[k], dtype=torch.float32, device=device)
                   for k in ("observations", "actions", "rewards", "next_observations"))  # fmt: skip
    return torch.cat([s, a], 1), s2 - s, r[:, None]


def fit_with_holdout(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: Config,
                     log: Callable | None = None) -> torch.Tensor:  # fmt: skip
    """Train `model` (an ensemble with .loss and .errors on [E, B, .]) with holdout early stopping:
    a random holdout_ratio of the rows (at most max_holdout) is held out, never trained on; each
    member trains on its own bootstrap resample of the rest; after each epoch of model_epoch_steps,
    training stops once model_patience epochs bring no 1% gain in mean holdout MSE; the best weights
    return (MBPO keeps one snapshot per member: departure 6). -> the holdout MSE per member, [E]."""
    n_members = model.net.n_members
    perm = torch.randperm(len(x), device=x.device)
    n_hold = min(int(len(x) * cfg.holdout_ratio), cfg.max_holdout)
    if n_hold == 0:
        raise ValueError(f"{len(x)} rows are too few for a holdout set")
    hold, train = perm[:n_hold], perm[n_hold:]
    x_hold, y_hold = x[hold].expand(n_members, -1, -1), y[hold].expand(n_members, -1, -1)
    if n_members == 1:  # a single model (the reward model) sees the training rows as they are
        boot = train[None]
    else:  # each member its own bootstrap resample
        boot = train[torch.randint(len(train), (n_members, len(train)), device=x.device)]
    opt = torch.optim.Adam(model.parameters(), lr=cfg.model_lr)
    best, best_state, bad = math.inf, copy.deepcopy(model.state_dict()), 0
    for epoch in range(cfg.model_max_epochs):
        for _ in range(cfg.model_epoch_steps):
            pick = torch.randint(boot.shape[1], (n_members, cfg.model_batch_size), device=x.device)
            idx = boot.gather(1, pick)  # [E, B]: each member its own batch
            loss = model.loss(x[idx], y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        check_finite(loss.item(), "model training loss")
        with torch.no_grad():
            errors = model.errors(x_hold, y_hold)
        if errors.mean() < best * 0.99:
            best, best_state, bad = errors.mean().item(), copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
        if log:
            log(epoch + 1, {"loss": loss.item(), "holdout_mse": errors.mean().item()})
        if bad >= cfg.model_patience:
            break
    model.load_state_dict(best_state)
    with torch.no_grad():
        return model.errors(x_hold, y_hold)


def train_dynamics(data: dict[str, np.ndarray], cfg: Config, log: Callable | None = None):
    """The dynamics ensemble fitted on (s, a) -> s' - s; elites: the lowest holdout MSE."""
    sa, delta, _ = _inputs(data, cfg.device)
    model = build_dynamics(cfg, delta.shape[1], sa.shape[1] - delta.shape[1])
    model.input_norm.fit_zscore(sa)
    errors = fit_with_holdout(model, sa, delta, cfg, log)
    model.elites.copy_(errors.argsort()[: cfg.n_elites])
    return model


def train_reward_model(data: dict[str, np.ndarray], cfg: Config, log: Callable | None = None):
    """The reward model r(s, a) fitted with MSE on the dataset's rewards."""
    sa, _, r = _inputs(data, cfg.device)
    s_dim = data["observations"].shape[1]
    model = build_reward_model(cfg, s_dim, sa.shape[1] - s_dim)
    model.input_norm.fit_zscore(sa)
    fit_with_holdout(model, sa, r, cfg, log)
    return model


def train_diffusion(data: dict, cfg: Config, log: Callable | None = None, log_every: int = 100):
    """The DM trained on every H-step window of [state, action] rows inside an episode."""
    check_data(data)
    s_dim, a_dim = data["observations"].shape[1], data["actions"].shape[1]
    f32 = dict(dtype=torch.float32, device=cfg.device)  # rows [N, S + A]: a state, its action
    rows = torch.as_tensor(np.concatenate([data["observations"], data["actions"]], 1), **f32)
    ends = torch.as_tensor(np.concatenate([data["next_observations"], data["actions"]], 1), **f32)
    starts = torch.as_tensor(window_starts(data["episode_ids"], cfg.horizon), device=cfg.device)
    if len(starts) == 0:
        raise ValueError(f"no episode is at least horizon={cfg.horizon} steps long")
    dm = build_diffusion(cfg, s_dim, a_dim)
    dm.norm.fit_limits(torch.cat([rows, ends]))  # all states: terminal ones are only in ends
    mask = dm.condition_mask(s_dim)
    offsets = torch.arange(cfg.horizon, device=cfg.device)
    opt = torch.optim.Adam(dm.denoiser.parameters(), lr=cfg.dm_lr)
    for step in range(1, cfg.dm_steps + 1):
        pick = starts[torch.randint(len(starts), (cfg.dm_batch_size,), device=cfg.device)]
        x0 = dm.norm(rows[pick[:, None] + offsets])  # [B, H, S + A]
        loss = dm.loss(x0, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        dm.update_ema()
        if step % log_every == 0 or step == cfg.dm_steps:
            check_finite(loss.item(), "diffusion training loss")
            if log:
                log(step, {"loss": loss.item()})
    return dm


def check_finite(value: float, what: str) -> None:
    """Stop a run whose loss has become NaN or infinite, naming it."""
    if not math.isfinite(value):
        raise FloatingPointError(f"the {what} became {value}")


class DyDiffTrainer(Saved):
    """The DyDiff+TD3BC loop (without models: TD3+BC). Every rollout_every updates, from the first,
    synthesise() adds rows to the synthetic buffer; each batch mixes them in by real_ratio."""

    saved = ("agent", "synthetic", "updates", "last_rollout")  # models and real data never change

    def __init__(self, cfg: Config, data: dict, models: dict | None = None, terminal_fn=None):
        check_data(data)
        self.cfg, self.models, self.terminal_fn = cfg, models, terminal_fn
        (n, s_dim), a_dim = data["observations"].shape, data["actions"].shape[1]
        self.real = ReplayBuffer(s_dim, a_dim, n, cfg.device)  # the offline data, filled once
        names = dict(states="observations", actions="actions", rewards="rewards",
                     next_states="next_observations", dones="terminals")  # fmt: skip
        self.real.add({k: torch.as_tensor(data[v]) for k, v in names.items()})
        self.synthetic = ReplayBuffer(s_dim, a_dim, cfg.synthetic_capacity, cfg.device)
        norm = Normalizer(s_dim).fit_zscore(torch.as_tensor(data["observations"]))
        self.agent = TD3BC(s_dim, a_dim, norm, cfg)
        self.updates = 0
        self.last_rollout: dict = {}

    def step(self) -> dict:
        """One TD3+BC update, preceded by a synthesis round into the synthetic buffer when due."""
        due = self.updates % self.cfg.rollout_every == 0 and self.cfg.real_ratio < 1
        if self.models is not None and due:  # (all-real batches would never use the rollouts)
            s0 = self.real.sample(self.cfg.rollout_batch_size)["states"]
            models = [self.models.get(k) for k in ("dynamics", "diffusion", "reward")]  # M = 0: no DM
            new, self.last_rollout = synthesise(s0, self.agent.act, *models, self.cfg,
                                                self.terminal_fn)  # fmt: skip
            self.synthetic.add(new)
        batch = sample_mixed(self.real, self.synthetic, self.cfg.batch_size, self.cfg.real_ratio)
        losses = self.agent.update(batch)
        self.updates += 1
        return losses

    def train(self, until: int, evaluate=None, log=None, log_every: int = 1_000) -> None:
        """Update until `until` updates are done; evaluate(update) every eval_every updates and at
        the end; log(update, metrics) with losses, synthetic data statistics and evaluation."""
        while self.updates < until:
            losses = self.step()
            due_eval = self.updates % self.cfg.eval_every == 0 or self.updates == until
            if self.updates % log_every == 0 or due_eval:
                metrics = {k: v.item() for k, v in losses.items()}
                for k, v in metrics.items():
                    check_finite(v, k.replace("_", " "))
                metrics |= self.last_rollout | {"synthetic_rows": self.synthetic.size}
                metrics |= self.q_values()
                if due_eval and evaluate:
                    metrics |= evaluate(self.updates)
                if log:
                    log(self.updates, metrics)

    @torch.no_grad()
    def q_values(self, n: int = 1024) -> dict:
        """Mean Q1(s, pi(s)) on n real and n synthetic states spread evenly over each buffer."""
        out = {}
        for name, buf in (("q_real", self.real), ("q_synthetic", self.synthetic)):
            if buf.size:
                idx = torch.linspace(0, buf.size - 1, n).long()
                s = self.agent.state_norm(buf.data["states"][idx.to(buf.data["states"].device)])
                out[name] = self.agent.q1(torch.cat([s, self.agent.actor(s)], -1)).mean().item()
        return out


# ---- 8. Checking a Config -------------------------------------------------------------------------
def validate(cfg: Config) -> None:
    """Raise ValueError, one line, for the first setting of cfg outside its meaning."""

    def check(ok: bool, name: str, rule: str) -> None:
        if not ok:
            raise ValueError(f"{name} must be {rule}, got {getattr(cfg, name)!r}")

    counts = """updates eval_every horizon rollout_batch_size rollout_every synthetic_capacity
        n_diffusion_steps mlp_width mlp_blocks unet_dim dm_steps dm_batch_size n_members n_elites
        dynamics_hidden reward_hidden model_batch_size model_epoch_steps model_max_epochs
        model_patience max_holdout hidden batch_size policy_freq"""
    for name in counts.split():
        check(getattr(cfg, name) >= 1, name, "positive")
    for name in ("lr", "dm_lr", "model_lr", "temperature"):
        check(getattr(cfg, name) > 0, name, "> 0")
    for name in ("iterations", "policy_noise", "noise_clip", "alpha", "uncertainty_penalty",
                 "uncertainty_halt"):
        check(getattr(cfg, name) >= 0, name, ">= 0")
    for name in ("gamma", "ema_decay"):  # a discount or decay of 1 never forgets
        check(0 <= getattr(cfg, name) < 1, name, "in [0, 1)")
    for name in ("keep_ratio", "tau"):
        check(0 < getattr(cfg, name) <= 1, name, "in (0, 1]")
    check(0 <= cfg.real_ratio <= 1, "real_ratio", "in [0, 1]")
    check(0 < cfg.holdout_ratio < 1, "holdout_ratio", "in (0, 1)")
    check(cfg.horizon >= 2, "horizon", "at least 2")
    check(cfg.n_elites <= cfg.n_members, "n_elites", f"at most n_members={cfg.n_members}")
    check(cfg.filter in ("hardmax", "softmax"), "filter", "'hardmax' or 'softmax'")
    check(cfg.denoiser in ("mlp", "unet"), "denoiser", "'mlp' or 'unet'")
    check(cfg.predict_epsilon in (True, False), "predict_epsilon", "True or False")
    mults = cfg.unet_dim_mults
    ok = isinstance(mults, tuple) and len(mults) > 0
    ok = ok and all(isinstance(m, int) and m >= 1 for m in mults)
    check(ok, "unet_dim_mults", "a non-empty tuple of positive integers")
    if cfg.denoiser == "unet":  # GroupNorm(8), and each level halves the horizon
        check(cfg.unet_dim % 8 == 0, "unet_dim", "a multiple of 8")
        down = 2 ** (len(cfg.unet_dim_mults) - 1)
        check(cfg.horizon % down == 0, "horizon", f"divisible by {down} for this U-Net")
