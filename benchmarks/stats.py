"""Statistics of a paired comparison over seeds, and the verdict rule the README's words follow.

d holds one difference per seed (A - B, both run with that seed). paired(d) reports:
- the mean difference and its sample std;
- a 95% percentile bootstrap interval of the mean (seeds resampled; known to be too narrow for
  few seeds);
- a 95% paired t-interval, mean +- t(0.975, n - 1) * std / sqrt(n);
- a two-sided sign-flip permutation p-value: under "no difference" each d_i is as likely to be
  -d_i, so p is the share of the 2^n sign patterns whose |sum| reaches |sum(d)| (exact for n <= 20,
  10^5 random patterns above; with 5 seeds it cannot go below 2/32 = 0.0625);
- the number of seeds ahead (d_i > 0), reported, not a criterion.
verdict(): "+" (A ahead) or "-" (A behind) only where the bootstrap interval and the t-interval both
lie on that side of zero and p < 0.05; otherwise None, "not decided".
"""

from __future__ import annotations

import math

import numpy as np


def bootstrap_interval(d, n: int = 10_000, seed: int = 0) -> list[float]:
    """95% percentile interval of the mean of d, resampling the seeds with replacement."""
    d = np.asarray(d, dtype=float)
    means = d[np.random.default_rng(seed).integers(0, len(d), (n, len(d)))].mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def t_quantile(p: float, df: int) -> float:
    """The p-quantile (p > 0.5) of Student's t with df degrees of freedom, by integrating its
    density on a fine grid (no scipy): t(0.975, 9) = 2.262."""
    x = np.linspace(0, 400, 2_000_001)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    pdf = np.exp(log_c - (df + 1) / 2 * np.log1p(x**2 / df))
    cdf = 0.5 + np.concatenate([[0], np.cumsum((pdf[1:] + pdf[:-1]) / 2 * np.diff(x))])
    return float(np.interp(p, cdf, x))


def t_interval(d) -> list[float]:
    """95% paired t-interval of the mean of d (n >= 2)."""
    d = np.asarray(d, dtype=float)
    half = t_quantile(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return [float(d.mean() - half), float(d.mean() + half)]


def sign_flip_p(d, n_random: int = 100_000, seed: int = 0) -> float:
    """Two-sided sign-flip p-value of mean(d) = 0: the share of sign patterns s with
    |sum(s * d)| >= |sum(d)|, all 2^n of them for n <= 20 (the observed one included)."""
    d = np.asarray(d, dtype=float)
    if len(d) <= 20:
        sums = np.zeros(1)
        for x in d:  # every sum of +-d_1 ... +-d_i
            sums = np.concatenate([sums + x, sums - x])
    else:
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], (n_random, len(d)))
        sums = signs @ d
    return float(np.mean(np.abs(sums) >= abs(d.sum()) - 1e-9))


def paired(d) -> dict:
    """Every statistic of the paired differences d (one per seed, n >= 2)."""
    d = np.asarray(d, dtype=float)
    out = {"n": len(d), "mean": float(d.mean()), "std": float(d.std(ddof=1)),
           "bootstrap_95": bootstrap_interval(d), "t_95": t_interval(d),
           "sign_flip_p": sign_flip_p(d), "ahead": int((d > 0).sum())}  # fmt: skip
    out["verdict"] = verdict(out)
    return out


def verdict(s: dict) -> str | None:
    """'+' or '-' where both intervals lie on that side of zero and p < 0.05, else None."""
    (b_lo, b_hi), (t_lo, t_hi) = s["bootstrap_95"], s["t_95"]
    if s["sign_flip_p"] >= 0.05:
        return None
    if b_lo > 0 and t_lo > 0:
        return "+"
    if b_hi < 0 and t_hi < 0:
        return "-"
    return None


def describe(s: dict) -> str:
    """One line: -18.2, bootstrap [-33.9, -3.8], t [-36.6, +0.3], p 0.066, 4/10 ahead."""
    (b_lo, b_hi), (t_lo, t_hi) = s["bootstrap_95"], s["t_95"]
    return (f"{s['mean']:+.1f}, bootstrap [{b_lo:+.1f}, {b_hi:+.1f}], t [{t_lo:+.1f}, {t_hi:+.1f}], "
            f"p {s['sign_flip_p']:.3f}, {s['ahead']}/{s['n']} ahead")
