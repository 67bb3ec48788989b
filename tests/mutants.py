"""Mutation benchmark: do the tests of dydiff.py catch textbook bugs, and isolate a blank?

    python tests/mutants.py                  # every mutation; writes results/mutants.json
    python tests/mutants.py --only "TD3 target: max of the twin critics"
    python tests/mutants.py --blanks         # also blank each ready assignment
    python tests/mutants.py --hidden         # also the assignment's hidden tests (seed 0)
    python tests/mutants.py --list

A mutation is one small source edit of dydiff.py (a string replaced), a bug from the textbook or
from our own history. Each is applied to a copy of dydiff.py in a temporary folder beside
test_dydiff.py, and the tests of its component (one test class) run with -x, as a student would:
the mutation is caught when they fail. The table gives the time to the first failure (wall clock,
the Python start included) and the test that failed. The unmutated copy must pass each class.
--blanks does the same for each ready assignment of scripts/make_assignment.py (the function's
body replaced by its TODO) and also runs every other class but TestTraining, which must pass:
a student's blank fails only its own component's tests. --hidden also runs, for a mutation inside
a ready assignment's function (or a function blanked with it), that assignment's hidden tests
(scripts/make_assignment.py's hidden_tests, seed 0) and reports per assignment how many
mutations the visible tests catch, and the visible and hidden ones together (the grader's view).

Every listed mutation must be caught. When dydiff.py changes, a mutation whose text is gone (or
is there twice) stops the benchmark: "mutation no longer applies: <name>"; update its text.
The tests run with one thread (OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # (the mutated dydiff.py goes first: pytest_here)
from scripts.files import cpu_name, fail, git_commit  # noqa: E402

# (name, test class of its component, text in dydiff.py, replacement)
MUTANTS = [
    ("TD3 target: no target policy smoothing", "TestTD3BC",
     "a2 = (self.actor_target(s2) + noise).clamp(-1, 1)",
     "a2 = self.actor_target(s2).clamp(-1, 1)"),
    ("TD3 target: the online actor instead of the target actor", "TestTD3BC",
     "(self.actor_target(s2) + noise)", "(self.actor(s2) + noise)"),
    ("TD3 target: max of the twin critics", "TestTD3BC",
     "torch.min(self.q1_target(sa2), self.q2_target(sa2))",
     "torch.max(self.q1_target(sa2), self.q2_target(sa2))"),
    ("TD3 target: Q1' only, no twin", "TestTD3BC",
     "torch.min(self.q1_target(sa2), self.q2_target(sa2))", "self.q1_target(sa2)"),
    ("TD3 target: no discount", "TestTD3BC",
     'batch["rewards"] + cfg.gamma * (1 - batch["dones"]) * q2',
     'batch["rewards"] + (1 - batch["dones"]) * q2'),
    ("TD3 target: unclipped smoothing noise", "TestTD3BC",
     "(torch.randn_like(a) * cfg.policy_noise).clamp(-cfg.noise_clip, cfg.noise_clip)",
     "torch.randn_like(a) * cfg.policy_noise"),
    ("TD3 target: terminals ignored", "TestTD3BC",
     'cfg.gamma * (1 - batch["dones"]) * q2', "cfg.gamma * q2"),
    ("TD3 target: next action not clipped to [-1, 1]", "TestTD3BC",
     "(self.actor_target(s2) + noise).clamp(-1, 1)", "(self.actor_target(s2) + noise)"),
    ("TD3+BC: BC term removed", "TestTD3BC",
     "-lmbda * q.mean() + F.mse_loss(pi, a)", "-lmbda * q.mean()"),
    ("TD3+BC: lambda not detached", "TestTD3BC",
     "q.abs().mean().detach()", "q.abs().mean()"),
    ("TD3+BC: actor and targets updated every step", "TestTD3BC",
     "self.n_updates % cfg.policy_freq == 0", "True"),
    ("TD3+BC: soft update rate inverted (1 - tau)", "TestTD3BC",
     "p_target.lerp_(p, cfg.tau)", "p_target.lerp_(p, 1 - cfg.tau)"),
    ("DM: EMA decay inverted", "TestDiffusion",
     "p_ema.lerp_(p, 1 - self.ema_decay)", "p_ema.lerp_(p, self.ema_decay)"),
    ("DM: sampler uses the online denoiser, not the EMA", "TestDiffusion",
     "out = self.ema(x, tt)", "out = self.denoiser(x, tt)"),
    ("DM: loss on the fixed entries too", "TestDiffusion", "err[:, ~mask].mean()", "err.mean()"),
    ("DM: no inpainting at training time", "TestDiffusion",
     "xt = torch.where(mask, x0, xt)", "xt = xt"),
    ("DM: noise scaled by 1 - ab, not its square root", "TestDiffusion",
     "self.sqrt_1m_ab[t, None, None] * noise", "(1 - self.sqrt_ab[t, None, None] ** 2) * noise"),
    ("DM: epsilon and x0 targets swapped", "TestDiffusion",
     "target = noise if self.predict_epsilon else x0",
     "target = x0 if self.predict_epsilon else noise"),
    ("DM: no inpainting after sampling steps", "TestDiffusion",
     "            x = torch.where(mask, values, x)\n", ""),
    ("DM: condition mask misses the first state", "TestDiffusion",
     "mask[0, :state_dim] = mask[:, state_dim:] = True", "mask[:, state_dim:] = True"),
    ("Dynamics: predict returns the change, not the next state", "TestDynamicsAndReward",
     "return states + mean[pick, torch.arange(len(sa), device=sa.device)]",
     "return mean[pick, torch.arange(len(sa), device=sa.device)]"),
    ("Dynamics: predict draws any member, not an elite", "TestDynamicsAndReward",
     "pick = self.elites[torch.randint(len(self.elites), (len(sa),), device=sa.device)]",
     "pick = torch.randint(self.net.n_members, (len(sa),), device=sa.device)"),
    ("Dynamics: NLL without the log-variance term", "TestDynamicsAndReward",
     "* torch.exp(-logvar) + logvar)", "* torch.exp(-logvar))"),
    ("Dynamics: NLL with exp(+logvar)", "TestDynamicsAndReward",
     "* torch.exp(-logvar) + logvar)", "* torch.exp(logvar) + logvar)"),
    ("Reward model: the action ignored", "TestDynamicsAndReward",
     "return self(sa.reshape(1, -1, sa.shape[-1])).reshape(sa.shape[:-1])",
     "sa = torch.cat([states, 0 * actions], -1)\n"
     "        return self(sa.reshape(1, -1, sa.shape[-1])).reshape(sa.shape[:-1])"),
    ("Rollout: no /2 when averaging", "TestRolloutAndFilter",
     "(states + diffusion.sample_states(s0, actions)) / 2",
     "(states + diffusion.sample_states(s0, actions))"),
    ("Rollout: the DM sample replaces the states (no averaging)", "TestRolloutAndFilter",
     "(states + diffusion.sample_states(s0, actions)) / 2", "diffusion.sample_states(s0, actions)"),
    ("Rollout: actions not recomputed after injection", "TestRolloutAndFilter",
     "actions = policy(states)  # the policy acts", "pass  # the policy acts"),
    ("Rollout: injected states not clipped to the data", "TestRolloutAndFilter",
     "states = clip_to_data(average, s0, diffusion.norm)", "states = average"),
    ("Filter: hardmax keeps the worst", "TestRolloutAndFilter",
     "returns.topk(k).indices", "(-returns).topk(k).indices"),
    ("Synthesise: steps after a terminal kept", "TestRolloutAndFilter",
     "valid = (torch.cumsum(dones.int(), 1) - dones.int()) == 0",
     "valid = torch.ones_like(dones)"),
    ("Synthesise: the reward of the next state", "TestRolloutAndFilter",
     "rewards = reward_model.predict(s, a)", "rewards = reward_model.predict(s2, a)"),
    ("Data: window_starts ignores episodes", "TestData",
     "np.flatnonzero(ids[: len(ids) - horizon + 1] == ids[horizon - 1 :])",
     "np.arange(len(ids) - horizon + 1)"),
    ("Data: sample_mixed real share flipped", "TestData",
     "n_real = round(n * real_ratio)", "n_real = round(n * (1 - real_ratio))"),
    ("Training: DM windows cross episodes", "TestTraining",
     'window_starts(data["episode_ids"], cfg.horizon)',
     'np.arange(len(data["episode_ids"]) - cfg.horizon + 1)'),
    ("Training: EMA never updated", "TestTraining", "        dm.update_ema()\n", ""),
    ("Training: DM limits without the next observations", "TestTraining",
     "dm.norm.fit_limits(torch.cat([rows, ends]))", "dm.norm.fit_limits(rows)"),
    ("Training: elites have the highest holdout error", "TestTraining",
     "errors.argsort()[: cfg.n_elites]", "errors.argsort(descending=True)[: cfg.n_elites]"),
    ("DM: posterior noise doubled (post_std)", "TestDiffusion",
     "x = x + self.post_std[t] * torch.randn_like(x)",
     "x = x + 2 * self.post_std[t] * torch.randn_like(x)"),
    ("DM: the x_t term of the posterior mean dropped", "TestDiffusion",
     "x = self.post_c0[t] * x0.clamp(-1, 1) + self.post_ct[t] * x",
     "x = self.post_c0[t] * x0.clamp(-1, 1)"),
    # state normalisation, scales and splits
    ("TD3+BC: update and its target without state_norm, as in Fujimoto's code (act keeps it)",
     "TestTD3BC",
     'cfg, y = self.cfg, self.critic_target(batch)\n'
     '        s, a = self.state_norm(batch["states"]), batch["actions"]',
     "cfg, norm, self.state_norm = self.cfg, self.state_norm, nn.Identity()  # raw s and s'\n"
     "        y = self.critic_target(batch)\n"
     '        s, a, self.state_norm = batch["states"], batch["actions"], norm'),
    ("TD3+BC: state_norm on the next states only (s raw in the critic and actor)", "TestTD3BC",
     's, a = self.state_norm(batch["states"]), batch["actions"]',
     's, a = batch["states"], batch["actions"]'),
    ("TD3+BC: state_norm on the states only (s' raw in the target)", "TestTD3BC",
     's2 = self.state_norm(batch["next_states"])', 's2 = batch["next_states"]'),
    ("TD3+BC: act without state_norm", "TestTD3BC",
     "return self.actor(self.state_norm(states))", "return self.actor(states)"),
    ("Normalizer: z-score without its eps", "TestData",
     "self.scale.copy_(x.std(0) + 1e-3)", "self.scale.copy_(x.std(0))"),
    ("Normalizer: z-score std of all entries, not per dimension", "TestData",
     "self.scale.copy_(x.std(0) + 1e-3)", "self.scale.copy_(x.std() + 1e-3)"),
    ("Normalizer: z-score mean of all entries, not per dimension", "TestData",
     "self.shift.copy_(x.mean(0))", "self.shift.copy_(x.mean())"),
    ("Normalizer: limits scale is the whole range, not half of it", "TestData",
     "self.scale.copy_((hi - lo).clamp(min=1e-6) / 2)", "self.scale.copy_((hi - lo).clamp(min=1e-6))"),
    ("Training: the model is also fitted on its holdout rows", "TestTraining",
     "hold, train = perm[:n_hold], perm[n_hold:]", "hold, train = perm[:n_hold], perm"),
    ("Training: holdout of holdout_ratio rows, max_holdout ignored", "TestTraining",
     "n_hold = min(int(len(x) * cfg.holdout_ratio), cfg.max_holdout)",
     "n_hold = int(len(x) * cfg.holdout_ratio)"),
    # the TD3 target and the TD3+BC update
    ("TD3 target: the online critics instead of the target critics", "TestTD3BC",
     "torch.min(self.q1_target(sa2), self.q2_target(sa2))", "torch.min(self.q1(sa2), self.q2(sa2))"),
    ("TD3+BC: first update is an actor step (counter tested before it moves)", "TestTD3BC",
     "self.n_updates += 1\n        if self.n_updates % cfg.policy_freq == 0:",
     "self.n_updates += 1\n        if (self.n_updates - 1) % cfg.policy_freq == 0:"),
    ("TD3+BC: the actor's Q term on the data's actions, not pi(s)", "TestTD3BC",
     "q = self.q1(torch.cat([s, pi], -1))", "q = self.q1(torch.cat([s, a], -1))"),
    ("TD3+BC: lambda not returned", "TestTD3BC",
     'out |= {"actor_loss": actor_loss.detach(), "lambda": lmbda}',
     'out |= {"actor_loss": actor_loss.detach()}'),
    ("TD3+BC: one critic regresses on the other's output, not y", "TestTD3BC",
     "F.mse_loss(self.q1(sa), y) + F.mse_loss(self.q2(sa), y)",
     "F.mse_loss(self.q1(sa), y) + F.mse_loss(self.q2(sa), self.q1(sa).detach())"),
    # the diffusion model
    ("DM: x0 prediction not clipped to [-1, 1]", "TestDiffusion",
     "x = self.post_c0[t] * x0.clamp(-1, 1) + self.post_ct[t] * x",
     "x = self.post_c0[t] * x0 + self.post_ct[t] * x"),
    ("DM: no inpainting before the first denoiser call (only after steps)", "TestDiffusion",
     "x = torch.where(mask, values, torch.randn_like(values))", "x = torch.randn_like(values)"),
    # dynamics ensemble
    ("Dynamics: predict averages the elites' means", "TestDynamicsAndReward",
     "return states + mean[pick, torch.arange(len(sa), device=sa.device)]",
     "return states + mean[self.elites].mean(0)"),
    ("Dynamics: bound regulariser with the wrong sign", "TestDynamicsAndReward",
     "0.01 * (self.max_logvar.sum() - self.min_logvar.sum())",
     "0.01 * (self.min_logvar.sum() - self.max_logvar.sum())"),
    ("Dynamics: weight decay without its 1/2", "TestDynamicsAndReward",
     "c * 0.5 * (m.weight**2).sum()", "c * (m.weight**2).sum()"),
    ("Dynamics: NLL averaged over members, not summed", "TestDynamicsAndReward",
     ".mean((1, 2)).sum()", ".mean()"),
    # data
    ("Data: a batch larger than the buffer keeps its oldest rows", "TestData",
     "batch[k][-n:]", "batch[k][:n]"),
    ("Data: buffer size grows past capacity", "TestData",
     "self.size = min(self.size + n, self.capacity)", "self.size = self.size + n"),
    ("Data: sample_mixed without the warm-up", "TestData",
     "if synthetic.size < n or real_ratio == 1:", "if synthetic.size == 0 or real_ratio == 1:"),
    ("Data: window_starts windows one row too long", "TestData",
     "ids[: len(ids) - horizon + 1] == ids[horizon - 1 :]", "ids[: len(ids) - horizon] == ids[horizon:]"),
    # rollout, clip, filter, synthesise
    ("Rollout: clip_to_data clamps row 0 instead of restoring s0", "TestRolloutAndFilter",
     "torch.cat([s0[:, None], states[:, 1:].clamp(lo, hi)], 1)", "states.clamp(lo, hi)"),
    ("Rollout: clip_to_data clamps raw states to [-1, 1] (normalised limits)",
     "TestRolloutAndFilter",
     "torch.cat([s0[:, None], states[:, 1:].clamp(lo, hi)], 1)",
     "torch.cat([s0[:, None], states[:, 1:].clamp(-1, 1)], 1)"),
    ("Rollout: clip_to_data takes the limits of the last dimensions (actions')",
     "TestRolloutAndFilter",
     "(norm.shift - norm.scale)[:n_s], (norm.shift + norm.scale)[:n_s]",
     "(norm.shift - norm.scale)[-n_s:], (norm.shift + norm.scale)[-n_s:]"),
    ("Filter: no floor of one trajectory", "TestRolloutAndFilter",
     "k = max(1, round(keep_ratio * len(returns)))", "k = round(keep_ratio * len(returns))"),
    ("Synthesise: rewards after a terminal counted in the return", "TestRolloutAndFilter",
     "returns = (rewards * valid).sum(1)", "returns = rewards.sum(1)"),
    ("Synthesise: the terminal transition itself dropped", "TestRolloutAndFilter",
     "valid = (torch.cumsum(dones.int(), 1) - dones.int()) == 0",
     "valid = torch.cumsum(dones.int(), 1) == 0"),
    ("Uncertainty: the penalty added to the reward", "TestRolloutAndFilter",
     "rewards = rewards - cfg.uncertainty_penalty * u",
     "rewards = rewards + cfg.uncertainty_penalty * u"),
    ("Uncertainty: the halt keeps the step that crosses", "TestRolloutAndFilter",
     "valid &= (u > cfg.uncertainty_halt).cumsum(1) == 0",
     "valid &= ((u > cfg.uncertainty_halt).cumsum(1) - (u > cfg.uncertainty_halt).int()) == 0"),
    ("Uncertainty: computed with the remedy off too", "TestRolloutAndFilter",
     "if cfg.uncertainty_penalty or cfg.uncertainty_halt:  # departure 11", "if True:"),
    ("Uncertainty: in raw units, not the data's state stds", "TestDynamicsAndReward",
     "gap = (mean - mean.mean(0)) / self.input_norm.scale[: mean.shape[-1]]",
     "gap = mean - mean.mean(0)"),
    ("Uncertainty: every member, not the elites", "TestDynamicsAndReward",
     "mean = mean[self.elites]  # [elites, B, S]", "mean = mean  # [elites, B, S]"),
    ("Uncertainty: the mean gap, not the largest", "TestDynamicsAndReward",
     "return gap.norm(dim=-1).max(0).values.reshape(sa.shape[:-1])",
     "return gap.norm(dim=-1).mean(0).reshape(sa.shape[:-1])"),
]  # fmt: skip


def mutate(source: str, name: str, old: str, new: str) -> str:
    if source.count(old) != 1:
        fail(f"mutation no longer applies: {name} (its text is in dydiff.py {source.count(old)} "
             f"times, not once)")  # fmt: skip
    out = source.replace(old, new)
    try:
        compile(out, "dydiff.py", "exec")
    except SyntaxError as e:
        fail(f"mutation breaks the syntax: {name} ({e.msg}, line {e.lineno})")
    return out


def run_tests(folder: Path, select: list[str], stop_first: bool = True, timeout: int = 900,
              in_process: bool = False) -> dict:
    """pytest on folder/test_dydiff.py, with one thread: passed?, seconds, the first failure.
    in_process (for our own tests): in this Python, without its start and imports (no timeout)."""
    report = folder / "report.xml"
    args = ["-q", "-p", "no:cacheprovider", "--tb=no", f"--junitxml={report}",
            *(["-x"] if stop_first else []), *select]  # fmt: skip
    start = time.perf_counter()
    if in_process:
        returncode, output = pytest_here(folder, args)
    else:
        res = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=folder,
                             capture_output=True, text=True, timeout=timeout,
                             env=os.environ | {"OMP_NUM_THREADS": "1"})  # fmt: skip
        returncode, output = res.returncode, res.stdout
    seconds = round(time.perf_counter() - start, 1)
    failures, in_tests = [], 0.0  # (in_tests: the tests' own time, no start-up or imports)
    if report.exists():
        for case in ET.parse(report).iter("testcase"):
            in_tests += float(case.get("time") or 0)
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            if bad is not None:
                message = (bad.get("message") or "").strip().splitlines()
                if message == ["collection failure"] and (bad.text or "").strip():  # say why
                    why = bad.text.strip().splitlines()[-1].removeprefix("E").strip()
                    message = [f"collection failure: {why}"]
                failures.append(dict(test=f"{case.get('classname').split('.')[-1]}::"
                                          f"{case.get('name')}",
                                     message=message[0][:300] if message else ""))  # fmt: skip
        report.unlink()
    if returncode not in (0, 1):  # collection error, interrupted, no tests
        failures = failures or [dict(test="(collection)", message=output.strip()[-300:])]
    return dict(passed=returncode == 0, seconds=seconds, test_seconds=round(in_tests, 2),
                failures=failures)


def pytest_here(folder: Path, args: list[str]) -> tuple[int, str]:
    """pytest.main in folder, importing folder's dydiff and test_dydiff: its exit code and output.
    This Python's modules of those names, its sys.path and its working folder are put back."""
    import pytest

    names = ("dydiff", "test_dydiff")
    saved = {n: sys.modules.pop(n) for n in names if n in sys.modules}
    path, cwd = sys.path[:], os.getcwd()
    try:
        os.chdir(folder)
        sys.path.insert(0, str(folder))
        with contextlib.redirect_stdout(io.StringIO()) as output:
            return int(pytest.main(args)), output.getvalue()
    finally:
        for n in names:
            sys.modules.pop(n, None)
        sys.modules.update(saved)
        sys.path[:] = path
        os.chdir(cwd)


def folder_with(source: str, tmp: Path, name: str) -> Path:
    folder = tmp / name
    folder.mkdir()
    (folder / "dydiff.py").write_text(source)
    shutil.copy(ROOT / "test_dydiff.py", folder / "test_dydiff.py")
    return folder


def assignment_tool():
    path = ROOT / "scripts" / "make_assignment.py"
    spec = importlib.util.spec_from_file_location("make_assignment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assignment_of(source: str, old: str, tool) -> str | None:
    """The ready assignment whose blanked functions hold the mutated text, or None."""
    line, tree = source[: source.index(old)].count("\n") + 1, ast.parse(source)
    owner = {}
    for name in tool.READY:  # a function and those blanked with it (TD3BC.update: critic_target)
        for f in tool.with_companions([name]):
            node = tool.find_function(tree, f)[0]
            owner[(node.lineno, node.end_lineno)] = name
    return next((a for (lo, hi), a in owner.items() if lo <= line <= hi), None)


def per_assignment(rows: list[dict]) -> dict:
    """Per ready assignment: its mutations, caught by the visible tests, by visible + hidden."""
    table = {}
    for r in rows:
        if a := r.get("assignment"):
            t = table.setdefault(a, dict(mutations=0, visible=0, hidden=0, visible_and_hidden=0))
            t["mutations"] += 1
            t["visible"] += r["caught"]
            t["hidden"] += r["caught_hidden"]
            t["visible_and_hidden"] += r["caught"] or r["caught_hidden"]
    for a, t in table.items():
        print(f"{a:34} {t['mutations']:3} mutations: visible {t['visible']}, hidden alone "
              f"{t['hidden']}, visible + hidden {t['visible_and_hidden']}")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run this mutation only (may be given again)")  # fmt: skip
    parser.add_argument("--blanks", action="store_true", help="also blank each ready assignment")
    parser.add_argument("--hidden", action="store_true", help="also the hidden tests (seed 0)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--out", type=Path, default=ROOT / "results", help="folder of mutants.json")
    args = parser.parse_args(argv)
    if args.list:
        for name, component, *_ in MUTANTS:
            print(f"{component:22} {name}")
        return 0
    unknown = set(args.only) - {m[0] for m in MUTANTS}
    if unknown:
        fail(f"--only {sorted(unknown)[0]!r}: no such mutation (--list names them)")
    source = (ROOT / "dydiff.py").read_text()
    chosen = [m for m in MUTANTS if not args.only or m[0] in args.only]
    mutated = [(name, comp, mutate(source, name, old, new)) for name, comp, old, new in chosen]
    rows, baseline, blanks = [], {}, []
    tool = assignment_tool() if args.hidden or args.blanks else None
    owners = {m[0]: assignment_of(source, m[2], tool) for m in chosen} if args.hidden else {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for comp in sorted({c for _, c, _ in mutated}):  # the tests pass on the real module
            baseline[comp] = run_tests(folder_with(source, tmp, f"base_{comp}"),
                                       [f"test_dydiff.py::{comp}"], stop_first=False)  # fmt: skip
            print(f"unmutated {comp}: {'passed' if baseline[comp]['passed'] else 'FAILED'} "
                  f"in {baseline[comp]['seconds']} s", flush=True)  # fmt: skip
        for i, (name, comp, text) in enumerate(mutated):
            result = run_tests(folder_with(text, tmp, f"m{i}"), [f"test_dydiff.py::{comp}"])
            first = result["failures"][0] if result["failures"] else {}
            rows.append(dict(mutation=name, component=comp, caught=not result["passed"],
                             seconds=result["seconds"], test_seconds=result["test_seconds"],
                             first_failure=first.get("test"), message=first.get("message")))
            if owners.get(name):  # the assignment's hidden tests, beside the mutated module
                folder = tmp / f"m{i}"
                (folder / "test_hidden.py").write_text(tool.hidden_tests([owners[name]], 0))
                hidden = run_tests(folder, ["test_hidden.py"])
                rows[-1] |= dict(assignment=owners[name], caught_hidden=not hidden["passed"])
            print(f"{'caught' if rows[-1]['caught'] else 'MISSED'} {result['seconds']:6.1f} s  "
                  f"{name}  <- {first.get('test', '-')}"
                  + (f"  (hidden: {'caught' if rows[-1]['caught_hidden'] else 'missed'})"
                     if "caught_hidden" in rows[-1] else ""), flush=True)  # fmt: skip
        if args.blanks:
            classes = sorted(set(tool.SECTION_TESTS.values()) - {"TestTraining"})
            for i, function in enumerate(tool.READY):
                comp = tool.component(source, tool.ast.parse(source), function)
                folder = folder_with(tool.blank(source, [function]), tmp, f"b{i}")
                own = run_tests(folder, [f"test_dydiff.py::{comp}"])
                others = run_tests(folder, [f"test_dydiff.py::{c}" for c in classes if c != comp],
                                   stop_first=False)  # fmt: skip
                first = own["failures"][0] if own["failures"] else {}
                leaks = [f["test"] for f in others["failures"]]
                blanks.append(dict(function=function, component=comp, fails=not own["passed"],
                                   seconds=own["seconds"], test_seconds=own["test_seconds"],
                                   first_failure=first.get("test"),
                                   other_classes_pass=others["passed"], other_failures=leaks))
                verdict = "pass" if others["passed"] else f"FAIL: {leaks}"
                print(f"blank {function}: own {'fails' if not own['passed'] else 'PASSES'} "
                      f"({own['seconds']} s), other classes {verdict}", flush=True)  # fmt: skip
    record = dict(
        command="python tests/mutants.py" + (" --blanks" if args.blanks else "")
        + (" --hidden" if args.hidden else ""),
        commit=git_commit() or "?",
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        cpu=f"{cpu_name()}, {os.cpu_count()} cores", threads=1, load_average=[round(x, 2) for x in os.getloadavg()],
        note="seconds: wall clock to the first failure, Python start and imports included; "
             "test_seconds: the tests' own time; other work ran on this machine at the time, so "
             "times are not speed measurements",
        unmutated={c: dict(passed=b["passed"], seconds=b["seconds"]) for c, b in baseline.items()},
        mutants=rows, **({"blanks": blanks} if args.blanks else {}),
        **({"per_assignment": per_assignment(rows)} if args.hidden else {}),
    )  # fmt: skip
    if not args.only:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "mutants.json").write_text(json.dumps(record, indent=1) + "\n")
    missed = [r["mutation"] for r in rows if not r["caught"]]
    broken = [c for c, b in baseline.items() if not b["passed"]]
    leaky = [b["function"] for b in blanks if not (b["fails"] and b["other_classes_pass"])]
    print(f"{len(rows) - len(missed)} of {len(rows)} mutations caught" + (
        f"; missed: {missed}" if missed else "") + (f"; unmutated failing: {broken}" if broken
        else "") + (f"; blanks not isolated: {leaky}" if leaky else ""))  # fmt: skip
    return 1 if missed or broken or leaky else 0


if __name__ == "__main__":
    sys.exit(main())
