"""train_offline.py with one change, an intervention for docs/results.md ("Why the DM helps on
Hopper and not on umaze"): every synthetic transition's next state is relabelled by the single-step
dynamics model, s' = f(s, a), after DyDiff's rollout, filter and rewards. The states s and actions
a stay DyDiff's (with M = 2: the DM's injected states and pi's actions), so the learner gets the
same state distribution, but each stored tuple is a step the single-step model would make; the
terminal flags follow the new s'. Same flags as train_offline.py; run it through scores.py:

    python benchmarks/scores.py --driver benchmarks/studies/relabelled_rollouts.py --algos dydiff \\
        --seeds 100 101 --label M=2_relabelled --group why_umaze --threads 1
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import dydiff  # noqa: E402
import train_offline  # noqa: E402


def relabelled(synthesise):
    """synthesise, with each kept transition's next state set to dynamics.predict(s, a)."""

    @torch.no_grad()
    def wrapped(s0, policy, dynamics, diffusion, reward_model, cfg, terminal_fn=None):
        new, stats = synthesise(s0, policy, dynamics, diffusion, reward_model, cfg, terminal_fn)
        new["next_states"] = dynamics.predict(new["states"], new["actions"])
        if terminal_fn is not None:
            new["dones"] = terminal_fn(new["next_states"]).float()
        return new, stats

    return wrapped


if __name__ == "__main__":
    dydiff.synthesise = relabelled(dydiff.synthesise)  # DyDiffTrainer.step calls it by this name
    train_offline.main()
