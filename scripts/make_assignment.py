"""Build a course assignment from dydiff.py: a student's folder and an instructor's kit.

    python scripts/make_assignment.py TD3BC.update --out hw/td3bc [--seed 7]
    python scripts/make_assignment.py filter_trajectories synthesise --out hw/filter --with-training
    python scripts/make_assignment.py --list          # the ready assignments

DIR/student/ is what students get: dydiff.py with each FUNCTION's body replaced by
`raise NotImplementedError("TODO(student): ...")` (signature, decorators and docstring kept), the
visible tests (test_dydiff.py: the test classes of those functions' components and the helpers
they use; --with-training adds TestTraining) and a README (goals, prerequisites, expected time,
what to submit, written questions). DIR/instructor/ is the kit, self-contained: the solution,
the hidden tests (scripts/assignment/hidden_tests.py with --seed written in: other inputs, more
cases), points.json, grade.py, and Gradescope's setup.sh and run_autograder. The builder refuses
when a statement of the solution would reach DIR/student/ (the leak check). As a library:
build(), hidden_tests(), leaks(), blank(), select_tests() raise AssignmentError; the command line
prints it as one line `error: ...` and exits 2.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import copy
import json
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script, too
from scripts.files import fail, one_line_errors  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KIT = Path(__file__).resolve().parent / "assignment"  # hidden-tests template, grader, Gradescope
# dydiff.py's sections ("# ---- N. Title") and the test class of each
SECTION_TESTS = {
    1: "TestSettings", 2: "TestData", 3: "TestDiffusion", 4: "TestDynamicsAndReward",
    5: "TestTD3BC", 6: "TestRolloutAndFilter", 7: "TestTraining", 8: "TestSettings",
}  # fmt: skip
# Ready assignments (tests/test_teaching.py checks each): function -> what the student learns
READY = {
    "window_starts": "which H-step windows of a dataset lie inside one episode (vectorised)",
    "ReplayBuffer.add": "a FIFO ring buffer on tensors, including a batch larger than the buffer",
    "sample_mixed": "mixing real and synthetic rows by real_ratio, with a warm-up",
    "GaussianDiffusion.loss": "the DDPM training loss with inpainting: forward noising, x0 or "
    "epsilon target, loss on the free entries only",
    "GaussianDiffusion.sample": "ancestral DDPM sampling from the posterior, with inpainting after "
    "every step and the EMA copy of the denoiser",
    "GaussianDiffusion.update_ema": "an exponential moving average of network weights",
    "GaussianDiffusion.condition_mask": "what DyDiff conditions its DM on: s0 and every action",
    "EnsembleDynamics.loss": "the Gaussian negative log-likelihood of a probabilistic ensemble",
    "EnsembleDynamics.predict": "prediction with a random elite member of an ensemble",
    "EnsembleDynamics.uncertainty": "a model's uncertainty from its ensemble's disagreement, in the "
    "data's units (our remedy for model exploitation: departure 11)",
    "TD3BC.update": "TD3's critic target (smoothing, twin minimum, discount, terminals), "
    "TD3+BC's actor loss with lambda, delayed and soft target updates",
    "dydiff_rollout": "DyDiff's policy injection: a model rollout, then M rounds of DM inpainting, "
    "averaging and recomputed actions",
    "clip_to_data": "keeping synthetic states inside the data's range, s0 exact",
    "filter_trajectories": "keeping the best rollouts by predicted return: hardmax and the "
    "authors' floored softmax",
    "synthesise": "from rollouts to transitions: rewards, terminals, returns up to the first "
    "terminal, filtering",
}


# Blanked together: a student who writes TD3BC.update writes TD3's target too.
COMPANIONS = {"TD3BC.update": ("TD3BC.critic_target",)}
# Hours a student needs (the README says so), and per component what to know first and what to
# answer in writing.
HOURS = {"window_starts": 1, "ReplayBuffer.add": 1, "sample_mixed": 1, "GaussianDiffusion.loss": 2,
         "GaussianDiffusion.sample": 3, "GaussianDiffusion.update_ema": 0.5,
         "GaussianDiffusion.condition_mask": 0.5, "EnsembleDynamics.loss": 1.5,
         "EnsembleDynamics.predict": 1, "EnsembleDynamics.uncertainty": 1, "TD3BC.update": 3, "dydiff_rollout": 3, "clip_to_data": 0.5,
         "filter_trajectories": 1.5, "synthesise": 2}  # fmt: skip
GUIDE = {
    "TestData": ("numpy and torch indexing; what an episode and a transition are in offline RL", [
        "Why must a training window of the diffusion model never cross an episode's end?",
        "A synthetic buffer is a FIFO: what does the agent lose, and gain, by forgetting the "
        "oldest synthetic rows?"]),
    "TestDiffusion": ("DDPM (Ho et al. 2020): the forward process, the posterior "
                      "q(x_t-1 | x_t, x0), ancestral sampling; inpainting", [
        "Inpainting fixes s0 and every action: which distribution does the DM then sample, and why "
        "does that let DyDiff inject its policy?",
        "Why does the sampler use the EMA copy of the denoiser rather than the trained one?",
        "With very few sampling steps the samples are less spread than the data: why?"]),
    "TestDynamicsAndReward": ("maximum likelihood for a Gaussian; ensembles (MBPO, MOPO)", [
        "Why does the NLL have a log-variance term, and what does a model do without it?",
        "Why predict with a random elite rather than the ensemble's mean?",
        "Where should an ensemble's members disagree most, and why is that a reason to distrust a "
        "synthetic transition there (MOPO's penalty)?"]),
    "TestTD3BC": ("TD3 (Fujimoto et al. 2018) and TD3+BC (Fujimoto & Gu 2021); target networks", [
        "What does the minimum of the twin target critics guard against, and at what cost?",
        "Why is lambda = alpha / mean|Q| detached, and what would its gradient do?",
        "What goes wrong if the target uses the online actor instead of the target actor?"]),
    "TestRolloutAndFilter": ("model-based offline RL (MOPO, MBPO rollouts); the DyDiff paper's "
                             "Algorithm 1", [
        "Policy injection averages the DM's states with the previous ones: is the result a path "
        "the dynamics allow? What could it cut through?",
        "Why clip the injected states to the data's range, and why must the terminal states be "
        "inside that range?",
        "Why stop a trajectory's return at its first terminal state?"]),
}  # fmt: skip
# The leak check compares statements of at least MIN_NODES AST nodes besides names and operators:
# `r = model.predict(s, a)` (3: assignment, call, attribute) says nothing a test may not say.
MIN_NODES = 4


class AssignmentError(ValueError):
    """Bad input for the builder or a leak: one line, for main() to print."""


def sections(source: str) -> list[tuple[int, int]]:
    """(first line, section number) of each "# ---- N. Title" banner."""
    return [(i + 1, int(m.group(1))) for i, line in enumerate(source.splitlines())
            if (m := re.match(r"# -+ (\d+)\. ", line))]  # fmt: skip


def find_function(tree: ast.Module, name: str) -> tuple[ast.FunctionDef, ast.stmt]:
    """The function `f` or the method `Class.f`, and the top-level statement holding it."""
    top, _, method = name.partition(".")
    found = [node for node in tree.body if getattr(node, "name", None) == top]
    if not found or "." in method:
        raise AssignmentError(f"unknown function {name!r} in dydiff.py "
                              "(e.g. TD3BC.update, filter_trajectories)")
    node = found[0]
    if isinstance(node, ast.ClassDef):
        methods = {m.name: m for m in node.body if isinstance(m, ast.FunctionDef)}
        if not method:
            example = next((m for m in methods if m != "__init__"), "method")
            raise AssignmentError(f"{name} is a class: name one of its methods, "
                                  f"e.g. {name}.{example}")
        if method not in methods:
            raise AssignmentError(f"unknown function {name!r}: {top} has no method {method!r}")
        return methods[method], node
    if method or not isinstance(node, ast.FunctionDef):
        raise AssignmentError(f"unknown function {name!r} in dydiff.py "
                              "(e.g. TD3BC.update, filter_trajectories)")
    return node, node


def component(source: str, tree: ast.Module, name: str) -> str:
    """The test class of the section `name` is in."""
    line = find_function(tree, name)[1].lineno
    return SECTION_TESTS[max((first, n) for first, n in sections(source) if first < line)[1]]


def with_companions(names: list[str]) -> list[str]:
    """The functions to blank: each name and those blanked with it (COMPANIONS), once each."""
    return list(dict.fromkeys(n for name in names for n in (name, *COMPANIONS.get(name, ()))))


def blank(source: str, names: list[str]) -> str:
    """The module with the bodies of `names` (and their COMPANIONS) replaced by a TODO; signature
    and docstring kept."""
    tree, lines = ast.parse(source), source.splitlines()
    cuts = []
    for name in with_companions(names):
        node = find_function(tree, name)[0]
        body = node.body
        if ast.get_docstring(node) is not None:
            start = body[0].end_lineno + 1  # the line after the docstring
        else:  # the line after the signature's closing ":"
            start = header_end(lines, node) + 1
        if body[0].lineno == node.lineno:
            raise AssignmentError(f"{name} is written on one line: it cannot be blanked")
        todo = f'{" " * body[0].col_offset}raise NotImplementedError("TODO(student): {name}")'
        cuts.append((start, node.end_lineno, todo))
    for start, end, todo in sorted(cuts, reverse=True):
        lines[start - 1 : end] = [todo]
    out = "\n".join(lines) + "\n"
    ast.parse(out)  # still a module
    return out


def header_end(lines: list[str], node: ast.FunctionDef) -> int:
    """The line of a def's closing ":" (the signature may span several lines)."""
    parts = [*ast.walk(node.args)] + ([node.returns] if node.returns else [])
    line = max([node.lineno] + [p.end_lineno for p in parts if hasattr(p, "end_lineno")])
    while not lines[line - 1].split("#")[0].rstrip().endswith(":"):
        line += 1
    return line


def node_lines(node: ast.stmt) -> tuple[int, int]:
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return first, node.end_lineno


def bound_names(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    if isinstance(node, ast.Assign):
        return {n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return set()


def used_names(node: ast.AST) -> set[str]:
    """Names a statement reads, and its arguments' names (pytest passes fixtures by name)."""
    return {n.id if isinstance(n, ast.Name) else n.arg for n in ast.walk(node)
            if isinstance(n, ast.Name) or isinstance(n, ast.arg)}  # fmt: skip


def idents(node: ast.AST) -> set[str]:
    """Every identifier in a node: names, attributes, arguments."""
    out = used_names(node)
    return out | {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}


def grades_of(node: ast.AST) -> set[str]:
    """The functions a hidden test grades: the arguments of its @grades(...) decorator."""
    return {a.value for d in getattr(node, "decorator_list", []) if isinstance(d, ast.Call)
            and getattr(d.func, "id", "") == "grades" for a in d.args
            if isinstance(a, ast.Constant)}  # fmt: skip


def select_tests(source: str, classes: list[str], functions: list[str], keep=None,
                 doc: str | None = None) -> str:  # fmt: skip
    """A test file cut down to the Test classes named and the module-level code they use.

    A module-level statement is kept when it belongs to a named class, binds no name (e.g.
    `torch.set_num_threads(1)`) or is an autouse fixture; then, transitively, every statement
    that binds a name a kept one reads (helpers, constants, imports), in the file's order. keep
    (class name, method node) -> bool drops a class's methods (the hidden tests keep those that
    grade an assigned function); a dropped method's helpers go too unless used elsewhere."""
    tree, lines = ast.parse(source), source.splitlines()
    body = tree.body[1:] if ast.get_docstring(tree) is not None else tree.body  # (rewritten)
    dropped: dict[int, list[ast.stmt]] = {}
    reads: dict[int, ast.AST] = {}  # what each statement reads, without its dropped methods
    for n in body:
        reads[id(n)] = n
        if isinstance(n, ast.ClassDef) and n.name in classes and keep is not None:
            gone = [m for m in n.body if isinstance(m, ast.FunctionDef) and not keep(n.name, m)]
            dropped[id(n)] = gone
            reads[id(n)] = copy.copy(n)
            reads[id(n)].body = [m for m in n.body if m not in gone]
    roots = [n for n in body if getattr(n, "name", "") in classes or not bound_names(n)
             or "autouse" in ast.unparse(n).split("\n")[0]]  # fmt: skip
    keep_ids, todo = set(map(id, roots)), list(roots)
    while todo:  # and every module-level statement they use, transitively
        wanted = used_names(reads[id(todo.pop())])
        for n in body:
            if id(n) not in keep_ids and bound_names(n) & wanted:
                keep_ids.add(id(n))
                todo.append(n)
    kept = [n for n in body if id(n) in keep_ids]
    imports, rest, last_plain = [], [], False
    for n in kept:
        first, last = node_lines(n)
        chunk = lines[first - 1 : last]
        for m in sorted(dropped.get(id(n), []), key=lambda m: -m.lineno):  # cut dropped methods
            a, b = node_lines(m)
            while b < last and not lines[b].strip():  # and the blank lines after them
                b += 1
            del chunk[a - first : b - first + 1]
        text = "\n".join(chunk).rstrip()
        if isinstance(n, ast.Import | ast.ImportFrom):
            imports.append(text)
            continue
        plain = isinstance(n, ast.Assign) or not bound_names(n)  # not a definition
        if rest:  # definitions two blank lines apart, plain statements none
            rest.append("\n" if plain and last_plain else "\n\n\n")
        rest.append(text)
        last_plain = plain
    if doc is None:
        doc = (f'"""Tests that grade {", ".join(functions)}: {", ".join(classes)}.\n\n'
               f"    python -m pytest -q test_dydiff.py              # every test given\n"
               f"    python -m pytest -q test_dydiff.py -x -k {classes[0]}   # to the first "
               f"failure\n"
               f'"""')  # fmt: skip
    return doc + "\n\n" + "\n".join(imports) + "\n\n" + "".join(rest) + "\n"


def test_ids(source: str, filename: str) -> list[str]:
    """file::Class::test of every test method of a test file's Test classes."""
    return [f"{filename}::{c.name}::{m.name}" for c in ast.parse(source).body
            if isinstance(c, ast.ClassDef) and c.name.startswith("Test") for m in c.body
            if isinstance(m, ast.FunctionDef) and m.name.startswith("test")]  # fmt: skip


def graded_tests(tests: str, functions: list[str], source: str) -> list[str]:
    """The visible tests that exercise the functions, the ones the grader counts (a test that
    passes on the blank would reward nothing): those whose code reaches, through the module-level
    helpers and the class's fixtures it uses, the function's name and, for a method, its class (or
    a dydiff function that returns one, e.g. build_diffusion). A static reading: a test that calls
    the function only through another one is left out."""
    module = ast.parse(source)
    makers: dict[str, set[str]] = {}
    for n in module.body:
        if isinstance(n, ast.FunctionDef) and isinstance(n.returns, ast.Name):
            makers.setdefault(n.returns.id, set()).add(n.name)
    wanted = []
    for f in with_companions(functions):
        cls, _, name = f.rpartition(".")
        wanted.append((name, {cls} | makers.get(cls, set()) if cls else set()))
    tree = ast.parse(tests)
    top = [n for n in tree.body if bound_names(n)]
    out = []
    for c in tree.body:
        if not (isinstance(c, ast.ClassDef) and c.name.startswith("Test")):
            continue
        members = [m for m in c.body if isinstance(m, ast.FunctionDef)]
        for test in members:
            if not test.name.startswith("test"):
                continue
            seen, todo, names = {id(test)}, [test], set()
            while todo:
                node = todo.pop()
                new = idents(node) - names
                names |= new
                for n in [*top, *members]:
                    if id(n) not in seen and bound_names(n) & new:
                        seen.add(id(n))
                        todo.append(n)
            if any(name in names and (not owners or owners & names) for name, owners in wanted):
                out.append(f"test_dydiff.py::{c.name}::{test.name}")
    return out


def hidden_tests(functions: list[str], seed: int = 0, source: str | None = None) -> str:
    """The hidden tests of an assignment: scripts/assignment/hidden_tests.py cut down to the
    classes of the functions' components and the tests that grade them, SEED = seed."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise AssignmentError(f"--seed must be a non-negative integer, got {seed!r}")
    source = source if source is not None else (ROOT / "dydiff.py").read_text()
    tree = ast.parse(source)
    names = set(with_companions(functions))
    classes = sorted({component(source, tree, f) + "Hidden" for f in names})
    template = (KIT / "hidden_tests.py").read_text()
    template, count = re.subn(r"(?m)^SEED = \d+", f"SEED = {seed}", template)
    if count != 1:
        raise AssignmentError("scripts/assignment/hidden_tests.py has no line `SEED = <number>`")
    doc = (f'"""Hidden tests of {", ".join(functions)} (seed {seed}): other inputs and more cases '
           f'than the\nvisible ones. For the instructor: not to be handed out.\n"""')  # fmt: skip
    return select_tests(template, classes, functions, doc=doc,
                        keep=lambda cls, m: not m.name.startswith("test") or grades_of(m) & names)


def canonical(node, keep: set[str], aliases: set[str], names: dict) -> str:
    """A statement's AST as text, its local names numbered in order of appearance (v0, v1, ...):
    module names of dydiff.py and builtins stay, `D.f` (dydiff imported as D) becomes `f`;
    contexts and annotations are left out."""
    if isinstance(node, list):
        return "[" + ",".join(canonical(n, keep, aliases, names) for n in node) + "]"
    if not isinstance(node, ast.AST):
        return repr(node)
    if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) in aliases:
        return f"Name({node.attr})"
    if isinstance(node, (ast.Name, ast.arg)):
        name = node.id if isinstance(node, ast.Name) else node.arg
        name = name if name in keep else names.setdefault(name, f"v{len(names)}")
        return f"{type(node).__name__}({name})"
    fields = [f for f in node._fields if f not in ("ctx", "annotation", "type_comment")]
    return type(node).__name__ + "(" + ",".join(
        canonical(getattr(node, f, None), keep, aliases, names) for f in fields) + ")"


def statement_forms(code: str | ast.AST, keep: set[str]) -> dict[str, ast.stmt]:
    """Every simple statement (nested ones too; not a compound one such as `for`, whose simple
    statements count) of MIN_NODES AST nodes or more (names and operators not counted), by its
    canonical form."""
    tree = ast.parse(code) if isinstance(code, str) else code
    aliases = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
               for a in n.names if a.name == "dydiff"}  # fmt: skip
    small = (ast.expr_context, ast.operator, ast.boolop, ast.cmpop, ast.unaryop, ast.Name)
    out = {}
    for stmt in ast.walk(tree):
        if not isinstance(stmt, ast.stmt) or isinstance(stmt, (ast.Import, ast.ImportFrom)):
            continue
        if hasattr(stmt, "body"):  # compound
            continue
        if sum(not isinstance(n, small) for n in ast.walk(stmt)) < MIN_NODES:
            continue
        out.setdefault(canonical(stmt, keep, aliases, {}), stmt)
    return out


def leaks(source: str, functions: list[str], files: dict[str, str]) -> list[str]:
    """Where a statement of the functions' solution bodies appears in the given files (name ->
    Python text), compared as canonical statements, so renamed variables and reformatting are
    seen through. Statements that also stay in the blanked module are not secret."""
    tree = ast.parse(source)
    keep = set(dir(builtins)) | {name for n in tree.body for name in bound_names(n)}
    secret = {}
    for f in with_companions(functions):
        node = find_function(tree, f)[0]
        body = node.body[1:] if ast.get_docstring(node) is not None else node.body
        for stmt in body:
            for form, s in statement_forms(ast.Module(body=[stmt], type_ignores=[]), keep).items():
                secret.setdefault(form, (f, s))
    public = statement_forms(blank(source, functions), keep)
    found = []
    for name, text in files.items():
        for form, stmt in statement_forms(text, keep).items():
            if form in secret and form not in public:
                f, s = secret[form]
                found.append(f"{name} line {stmt.lineno} holds {f}'s `{ast.unparse(s)[:70]}`")
    return found


def readme(functions: list[str], classes: dict[str, str], with_training: bool) -> str:
    """The student's README: goals, prerequisites, expected time, commands, what to submit and
    the written questions."""
    comps = list(dict.fromkeys(classes[f] for f in functions))
    hours = sum(HOURS.get(f, 2) for f in functions)
    lines = ["# Assignment: " + ", ".join(functions), "",
             "Write the body of each function marked `TODO(student)` in `dydiff.py`. Its",
             "docstring says what it must do; the module's docstring and the paper (Zhao et al.,",
             '"Long-Horizon Rollout via Dynamics Diffusion for Offline Reinforcement Learning",',
             "arXiv 2405.19189) give the context.", "", "## What you learn", ""]  # fmt: skip
    for f in functions:
        lesson = READY.get(f, "")
        extra = [c for c in COMPANIONS.get(f, ()) if c not in functions]
        also = f" (with `{'`, `'.join(extra)}`, also marked TODO)" if extra else ""
        lines.append(f"- `{f}`{also}, graded by `{classes[f]}`" + (f": {lesson}" if lesson else ""))
    lines += ["", "## Before you start", ""]
    lines += [f"- {GUIDE[c][0]}" for c in comps if c in GUIDE]
    lines += ["- Python 3.10+ and `pip install torch numpy pytest hypothesis` (a CPU is enough).", "",
              f"Expected time: about {hours:g} hour(s), reading included.", "",
              "## Run the tests", "",
              "Each test's name and message state the rule it checks:", "", "```",
              "python -m pytest -q test_dydiff.py            # every test given"]  # fmt: skip
    components = sorted(set(comps) | ({"TestTraining"} if with_training else set()))
    for c in components:
        lines.append(f"python -m pytest -q test_dydiff.py -x -k {c}   # stop at the first failure")
    lines += ["```", ""]
    if with_training:
        lines += ["`TestTraining` runs the whole DyDiff loop with small models: it passes only "
                  "when every function works together.", ""]  # fmt: skip
    lines += ["## What to submit", "",
              "Your `dydiff.py` (one file, its name unchanged) and your answers to the questions "
              "below (`answers.md`). Change only the bodies marked `TODO(student)`. Your module is "
              "graded with the tests given here and with hidden tests of the same rules on other "
              "inputs: passing the given tests is necessary, not sufficient. Do not change "
              "`test_dydiff.py`; the grader uses its own copy.", "",
              "## Written questions", ""]  # fmt: skip
    questions = [q for c in comps for q in GUIDE.get(c, ("", []))[1]]
    lines += [f"{i}. {q}" for i, q in enumerate(questions, 1)] or ["(none for this assignment)"]
    return "\n".join(lines) + "\n"


def instructor_readme(functions: list[str], seed: int, points: dict, hidden: int) -> str:
    total = sum(points["tests"].values())
    return "\n".join([
        f"# Instructor's kit: {', '.join(functions)} (seed {seed})", "",
        "Not for students: `solution/dydiff.py` is the solution and `tests/test_hidden.py` the "
        "hidden tests.", "",
        "```",
        "python grade.py SUBMISSIONS --out GRADES   # SUBMISSIONS/<student>/dydiff.py",
        "python grade.py --submission DIR --results results.json   # one submission",
        "python grade.py --submission solution --results /tmp/check.json  # full marks: check",
        "```", "",
        f"{len(points['tests'])} graded tests, {total:g} points ({hidden} hidden tests); "
        "`points.json` gives each test's points (edit it to weigh them; a parametrised test's "
        "points are shared by its cases) and the time limits "
        f"({points['timeout']:g} s per test, {points['total_timeout']:g} s per submission). "
        "Every submission runs in a fresh Python; the same submission and seed always get the "
        "same marks. Needs Python 3.9+ with torch, numpy, pytest and pytest-timeout "
        "(`requirements.txt`).", "",
        "Gradescope: zip this folder's contents (`cd instructor && zip -r ../autograder.zip .`) "
        "and upload it as a programming assignment's autograder; students submit `dydiff.py`. "
        "`setup.sh` installs the requirements, `run_autograder` grades /autograder/submission "
        "into /autograder/results/results.json (AUTOGRADER_ROOT moves /autograder, PYTHON "
        "chooses the interpreter: that is how it is run locally). Hidden tests are shown to "
        "students after the due date.", ""])  # fmt: skip


def build(functions: list[str], out, seed: int = 0, with_training: bool = False,
          force: bool = False, source: str | None = None, tests: str | None = None,
          timeout: float = 60, total_timeout: float = 900) -> dict[str, Path]:  # fmt: skip
    """Write DIR/student/ and DIR/instructor/ (see the module's docstring) for the functions;
    source and tests replace dydiff.py and test_dydiff.py (e.g. a mutated module). Returns
    {path relative to out: path}. Raises AssignmentError on bad input or a leak."""
    source = source if source is not None else (ROOT / "dydiff.py").read_text()
    tests = tests if tests is not None else (ROOT / "test_dydiff.py").read_text()
    functions = list(dict.fromkeys(functions))
    if not functions:
        raise AssignmentError("give one FUNCTION or more and --out DIR "
                              "(--list names the ready ones)")
    tree = ast.parse(source)
    classes = {f: component(source, tree, f) for f in functions}  # (fails on an unknown name)
    hidden = hidden_tests(functions, seed, source)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AssignmentError(f"--out {out} is a file")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise AssignmentError(f"--out {out} is not empty (--force writes into it)")
    chosen = sorted(set(classes.values()) | ({"TestTraining"} if with_training else set()))
    student = {"dydiff.py": blank(source, functions),
               "test_dydiff.py": select_tests(tests, chosen, functions),
               "README.md": readme(functions, classes, with_training)}  # fmt: skip
    found = leaks(source, functions, {f"student/{k}": v for k, v in student.items()
                                      if k.endswith(".py")})  # fmt: skip
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise AssignmentError(f"the student's folder would hold the solution: {found[0]}{more}")
    graded = graded_tests(student["test_dydiff.py"], functions, source)
    hidden_ids = test_ids(hidden, "test_hidden.py")
    points = dict(functions=functions, seed=seed, timeout=timeout, total_timeout=total_timeout,
                  tests={t: 1 for t in graded + hidden_ids})  # fmt: skip
    kit = KIT
    instructor = {
        "solution/dydiff.py": source, "tests/test_dydiff.py": student["test_dydiff.py"],
        "tests/test_hidden.py": hidden, "points.json": json.dumps(points, indent=1) + "\n",
        "grade.py": (kit / "grade.py").read_text(), "setup.sh": (kit / "setup.sh").read_text(),
        "run_autograder": (kit / "run_autograder").read_text(),
        "requirements.txt": (kit / "requirements.txt").read_text(),
        "README.md": instructor_readme(functions, seed, points, len(hidden_ids)),
    }  # fmt: skip
    files = {**{f"student/{k}": v for k, v in student.items()},
             **{f"instructor/{k}": v for k, v in instructor.items()}}  # fmt: skip
    written = {}
    try:
        for rel, text in files.items():
            path = out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            if rel.endswith(("grade.py", "setup.sh", "run_autograder")):
                shutil.copymode(kit / Path(rel).name, path)
            written[rel] = path
    except OSError as e:
        raise AssignmentError(f"cannot write to {out}: {e.strerror or e}")
    return written


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except AssignmentError as e:
        fail(str(e))


def run(argv: list[str] | None) -> int:
    parser = one_line_errors(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("functions", nargs="*", metavar="FUNCTION",
                        help="a function or method of dydiff.py, e.g. TD3BC.update")  # fmt: skip
    parser.add_argument("--out", type=Path, help="the assignment's folder")
    parser.add_argument("--seed", type=int, default=0, help="the hidden tests' inputs (default 0)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out")
    parser.add_argument("--with-training", action="store_true", help="add TestTraining's tests")
    parser.add_argument("--list", action="store_true", help="list the ready assignments")
    args = parser.parse_args(argv)
    if args.list:
        for name, lesson in READY.items():
            print(f"{name:34} {lesson}")
        return 0
    if not args.functions or args.out is None:
        raise AssignmentError("give one FUNCTION or more and --out DIR "
                              "(--list names the ready ones)")
    paths = build(args.functions, args.out, args.seed, args.with_training, args.force)
    source = (ROOT / "dydiff.py").read_text()
    tree = ast.parse(source)
    points = json.loads(paths["instructor/points.json"].read_text())["tests"]
    for f in dict.fromkeys(args.functions):
        note = "" if f in READY else "  (not a ready assignment: check that its tests grade it)"
        if ast.get_docstring(find_function(tree, f)[0]) is None:
            note += "  (no docstring: the student sees only its signature)"
        if COMPANIONS.get(f):
            note += f"  (blanked with {', '.join(COMPANIONS[f])})"
        print(f"blanked {f}; graded by {component(source, tree, f)}{note}")
    n_hidden = sum(t.startswith("test_hidden.py") for t in points)
    print(f"wrote {args.out}/student/ (hand it out) and {args.out}/instructor/ (the solution, "
          f"{n_hidden} hidden and {len(points) - n_hidden} visible graded tests, grade.py); try: "
          f"cd {args.out}/student && python -m pytest -q test_dydiff.py")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
