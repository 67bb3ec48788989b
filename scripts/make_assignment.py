"""Build a course assignment from dydiff.py: functions blanked, the tests that grade them, a README.

    python scripts/make_assignment.py TD3BC.update --out hw/td3bc
    python scripts/make_assignment.py filter_trajectories synthesise --out hw/filter --with-training
    python scripts/make_assignment.py --list          # the ready assignments

DIR/dydiff.py is the module with each FUNCTION's body replaced by
`raise NotImplementedError("TODO(student): ...")`; its signature, decorators and docstring stay.
DIR/test_dydiff.py holds the test classes of those functions' components (a function's component
is the section of dydiff.py it is in) and the helpers they use; --with-training adds TestTraining,
which runs the whole loop. DIR/README.md gives the commands. The tests' expected values come from
properties or are worked out by hand, so DIR holds no solution. Bad input: one line, exit 2.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        fail(message)


def fail(message: str):
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def sections(source: str) -> list[tuple[int, int]]:
    """(first line, section number) of each "# ---- N. Title" banner."""
    return [(i + 1, int(m.group(1))) for i, line in enumerate(source.splitlines())
            if (m := re.match(r"# -+ (\d+)\. ", line))]  # fmt: skip


def find_function(tree: ast.Module, name: str) -> tuple[ast.FunctionDef, ast.stmt]:
    """The function `f` or the method `Class.f`, and the top-level statement holding it."""
    top, _, method = name.partition(".")
    found = [node for node in tree.body if getattr(node, "name", None) == top]
    if not found or "." in method:
        fail(f"unknown function {name!r} in dydiff.py (e.g. TD3BC.update, filter_trajectories)")
    node = found[0]
    if isinstance(node, ast.ClassDef):
        methods = {m.name: m for m in node.body if isinstance(m, ast.FunctionDef)}
        if not method:
            example = next((m for m in methods if m != "__init__"), "method")
            fail(f"{name} is a class: name one of its methods, e.g. {name}.{example}")
        if method not in methods:
            fail(f"unknown function {name!r}: {top} has no method {method!r}")
        return methods[method], node
    if method or not isinstance(node, ast.FunctionDef):
        fail(f"unknown function {name!r} in dydiff.py (e.g. TD3BC.update, filter_trajectories)")
    return node, node


def component(source: str, tree: ast.Module, name: str) -> str:
    """The test class of the section `name` is in."""
    line = find_function(tree, name)[1].lineno
    return SECTION_TESTS[max((first, n) for first, n in sections(source) if first < line)[1]]


def blank(source: str, names: list[str]) -> str:
    """The module with the bodies of `names` replaced by a TODO (signature and docstring kept)."""
    tree, lines = ast.parse(source), source.splitlines()
    cuts = []
    for name in names:
        node = find_function(tree, name)[0]
        body = node.body
        if ast.get_docstring(node) is not None:
            start = body[0].end_lineno + 1  # the line after the docstring
        else:  # the line after the signature's closing ":"
            start = header_end(lines, node) + 1
        if body[0].lineno == node.lineno:
            fail(f"{name} is written on one line: it cannot be blanked")
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


def select_tests(source: str, classes: list[str], functions: list[str]) -> str:
    """test_dydiff.py with only the Test classes named, and the module-level code they use."""
    tree, lines = ast.parse(source), source.splitlines()
    body = tree.body[1:] if ast.get_docstring(tree) is not None else tree.body  # (rewritten)
    roots = [n for n in body if getattr(n, "name", "") in classes or not bound_names(n)
             or "autouse" in ast.unparse(n).split("\n")[0]]  # fmt: skip
    keep, todo = set(map(id, roots)), list(roots)
    while todo:  # and every module-level statement they use, transitively
        wanted = used_names(todo.pop())
        for n in body:
            if id(n) not in keep and bound_names(n) & wanted:
                keep.add(id(n))
                todo.append(n)
    kept = [n for n in body if id(n) in keep]
    imports, rest, last_plain = [], [], False
    for n in kept:
        first, last = node_lines(n)
        text = "\n".join(lines[first - 1 : last])
        if isinstance(n, ast.Import | ast.ImportFrom):
            imports.append(text)
            continue
        plain = isinstance(n, ast.Assign) or not bound_names(n)  # not a definition
        if rest:  # definitions two blank lines apart, plain statements none
            rest.append("\n" if plain and last_plain else "\n\n\n")
        rest.append(text)
        last_plain = plain
    doc = (f'"""Tests that grade {", ".join(functions)}: {", ".join(classes)}.\n\n'
           f"    python -m pytest -q test_dydiff.py              # every test given\n"
           f"    python -m pytest -q test_dydiff.py -x -k {classes[0]}   # to the first failure\n"
           f'"""')  # fmt: skip
    return doc + "\n\n" + "\n".join(imports) + "\n\n" + "".join(rest) + "\n"


def readme(functions: list[str], classes: dict[str, str], with_training: bool) -> str:
    lines = ["# Assignment: " + ", ".join(functions), "",
             "Write the body of each function marked `TODO(student)` in `dydiff.py`. Its",
             "docstring says what it must do; the module's docstring and the paper (Zhao et al.,",
             '"Long-Horizon Rollout via Dynamics Diffusion for Offline Reinforcement Learning",',
             "arXiv 2405.19189) give the context.", ""]  # fmt: skip
    for f in functions:
        lesson = READY.get(f, "")
        lines.append(f"- `{f}`, graded by `{classes[f]}`" + (f": {lesson}" if lesson else ""))
    components = sorted(set(classes.values()) | ({"TestTraining"} if with_training else set()))
    lines += ["", "Needs Python 3.10+ and `pip install torch numpy pytest` (a CPU is enough).", "",
              "Run the tests (each test's name and message state the rule it checks):", "", "```",
              "python -m pytest -q test_dydiff.py            # every test given"]  # fmt: skip
    for c in components:
        lines.append(f"python -m pytest -q test_dydiff.py -x -k {c}   # stop at the first failure")
    lines += ["```", ""]
    if with_training:
        lines += ["`TestTraining` runs the whole DyDiff loop with small models: it passes only "
                  "when every function works together.", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("functions", nargs="*", metavar="FUNCTION",
                        help="a function or method of dydiff.py, e.g. TD3BC.update")  # fmt: skip
    parser.add_argument("--out", type=Path, help="the assignment's folder")
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out")
    parser.add_argument("--with-training", action="store_true", help="add TestTraining's tests")
    parser.add_argument("--list", action="store_true", help="list the ready assignments")
    args = parser.parse_args(argv)
    if args.list:
        for name, lesson in READY.items():
            print(f"{name:34} {lesson}")
        return 0
    if not args.functions or args.out is None:
        fail("give one FUNCTION or more and --out DIR (--list names the ready ones)")
    source = (ROOT / "dydiff.py").read_text()
    tests = (ROOT / "test_dydiff.py").read_text()
    functions = list(dict.fromkeys(args.functions))
    tree = ast.parse(source)
    classes = {f: component(source, tree, f) for f in functions}  # (fails on an unknown name)
    out = args.out
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is a file")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        fail(f"--out {out} is not empty (--force writes into it)")
    chosen = sorted(set(classes.values()) | ({"TestTraining"} if args.with_training else set()))
    files = {"dydiff.py": blank(source, functions),
             "test_dydiff.py": select_tests(tests, chosen, functions),
             "README.md": readme(functions, classes, args.with_training)}  # fmt: skip
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (out / name).write_text(text)
    except OSError as e:
        fail(f"cannot write to {out}: {e.strerror or e}")
    for f in functions:
        note = "" if f in READY else "  (not a ready assignment: check that its tests grade it)"
        if ast.get_docstring(find_function(tree, f)[0]) is None:
            note += "  (no docstring: the student sees only its signature)"
        print(f"blanked {f}; graded by {classes[f]}{note}")
    print(f"wrote {out}/dydiff.py, test_dydiff.py, README.md; try: cd {out} && python -m pytest "
          f"-q test_dydiff.py")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
