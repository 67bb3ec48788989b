"""A plain, straightforward TD3+BC update loop: the yardstick of benchmarks/speed.py.

Standard TD3+BC (Fujimoto & Gu 2021) written the obvious way: three nn.Sequential networks per role,
default Adam, a Python loop for the target update. It trains on random data, so only its speed means
anything. Prints one line: updates per second. speed.py runs it in a subprocess with the threads and
batch of its own measurement and compares our TD3+BC update (with DyDiff's batch mixing) with it.

    python benchmarks/td3bc_plain.py [--state-dim 4] [--action-dim 2] [--batch 256] [--updates 2000]
        [--threads N]
"""

import argparse
import copy
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def mlp(inp: int, out: int, hidden: int = 256) -> nn.Module:
    return nn.Sequential(
        nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out)
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--state-dim", type=int, default=4)
    p.add_argument("--action-dim", type=int, default=2)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--updates", type=int, default=2000)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    s_dim, a_dim, n = args.state_dim, args.action_dim, 100_000
    actor, q1, q2 = mlp(s_dim, a_dim), mlp(s_dim + a_dim, 1), mlp(s_dim + a_dim, 1)
    actor_t, q1_t, q2_t = copy.deepcopy(actor), copy.deepcopy(q1), copy.deepcopy(q2)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=3e-4)
    critic_opt = torch.optim.Adam(list(q1.parameters()) + list(q2.parameters()), lr=3e-4)
    data = dict(
        s=torch.randn(n, s_dim), a=torch.rand(n, a_dim) * 2 - 1, r=torch.randn(n, 1),
        s2=torch.randn(n, s_dim), d=torch.zeros(n, 1),
    )

    def update(it: int) -> None:
        idx = torch.randint(0, n, (args.batch,))
        s, a, r, s2, d = (data[k][idx] for k in ("s", "a", "r", "s2", "d"))
        with torch.no_grad():
            noise = (torch.randn_like(a) * 0.2).clamp(-0.5, 0.5)
            a2 = (torch.tanh(actor_t(s2)) + noise).clamp(-1, 1)
            sa2 = torch.cat([s2, a2], 1)
            y = r + 0.99 * (1 - d) * torch.min(q1_t(sa2), q2_t(sa2))
        sa = torch.cat([s, a], 1)
        critic_loss = F.mse_loss(q1(sa), y) + F.mse_loss(q2(sa), y)
        critic_opt.zero_grad()
        critic_loss.backward()
        critic_opt.step()
        if it % 2 == 0:
            pi = torch.tanh(actor(s))
            q = q1(torch.cat([s, pi], 1))
            actor_loss = -2.5 / q.abs().mean().detach() * q.mean() + F.mse_loss(pi, a)
            actor_opt.zero_grad()
            actor_loss.backward()
            actor_opt.step()
            with torch.no_grad():
                for net, tgt in ((actor, actor_t), (q1, q1_t), (q2, q2_t)):
                    for w, wt in zip(net.parameters(), tgt.parameters()):
                        wt.mul_(0.995).add_(0.005 * w)

    for it in range(200):  # warm-up
        update(it)
    start = time.perf_counter()
    for it in range(args.updates):
        update(it)
    rate = args.updates / (time.perf_counter() - start)
    print(f"td3bc_plain: {rate:.1f} updates/s (batch {args.batch}, threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
