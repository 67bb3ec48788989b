"""Tests of the teachers' tools and of test_dydiff.py's promises: scripts/make_assignment.py (each
ready assignment's tests fail on its blank within 10 s and pass on the solution; the student's
folder holds no solution; bad input is one line), tests/mutants.py (a textbook bug is caught;
a mutation whose text is gone stops it), and test_dydiff.py's imports (it runs beside dydiff.py
alone). The instructor's kit and the grader: tests/test_grading.py."""

import ast
import os
import shutil
import sys

import pytest

from support import HERE, load_script

MA = load_script("make_assignment", "scripts/make_assignment.py")
MU = load_script("mutants", "tests/mutants.py")
SOURCE = (HERE / "dydiff.py").read_text()


def solution_lines(function: str) -> list[str]:
    """The statements of the function's body (after its docstring), and of the functions blanked
    with it, found nowhere else in dydiff.py, 20 characters or longer, not a header."""
    everywhere = [line.strip() for line in SOURCE.splitlines()]
    out = []
    for name in MA.with_companions([function]):
        node = MA.find_function(ast.parse(SOURCE), name)[0]
        first = node.body[1] if ast.get_docstring(node) is not None else node.body[0]
        lines = [line.strip() for line in SOURCE.splitlines()[first.lineno - 1 : node.end_lineno]]
        out += [line for line in lines if len(line) >= 20 and everywhere.count(line) == 1
                and not line.endswith(":")]  # fmt: skip
    return out


def imported_modules(path) -> set[str]:
    """The top-level modules a file imports anywhere (inside functions too)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[0])
    return names


ALLOWED = {"torch", "numpy", "pytest", "hypothesis", "dydiff"} | set(sys.stdlib_module_names)


def test_test_dydiff_imports_only_torch_numpy_pytest_hypothesis_the_stdlib_and_dydiff():
    extra = imported_modules(HERE / "test_dydiff.py") - ALLOWED
    assert extra == set(), f"test_dydiff.py must run beside dydiff.py alone; it imports {extra}"


@pytest.mark.slow
@pytest.mark.parametrize("function", list(MA.READY))
def test_a_ready_assignment_fails_on_its_blank_within_10_s_and_holds_no_solution(
    function, tmp_path, capsys
):
    assert MA.main([function, "--out", str(tmp_path / "hw")]) == 0
    out = tmp_path / "hw" / "student"
    component = MA.component(SOURCE, ast.parse(SOURCE), function)
    assert f"graded by {component}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "dydiff.py", "test_dydiff.py"]
    kit = sorted(str(p.relative_to(tmp_path / "hw" / "instructor"))
                 for p in (tmp_path / "hw" / "instructor").rglob("*") if p.is_file())  # fmt: skip
    assert kit == ["README.md", "grade.py", "points.json", "requirements.txt", "run_autograder",
                   "setup.sh", "solution/dydiff.py", "tests/test_dydiff.py",
                   "tests/test_hidden.py"], kit  # fmt: skip
    # the blank keeps the signature, the decorators and the docstring; its body is the TODO
    given = MA.find_function(ast.parse((out / "dydiff.py").read_text()), function)[0]
    solution = MA.find_function(ast.parse(SOURCE), function)[0]
    def signature(f):
        return [ast.dump(x) for x in (f.args, f.returns, *f.decorator_list) if x is not None]

    assert signature(given) == signature(solution), "signature and decorators kept"
    assert ast.get_docstring(given) == ast.get_docstring(solution), "docstring kept"
    n_doc = ast.get_docstring(solution) is not None
    assert isinstance(given.body[-1], ast.Raise) and len(given.body) == 1 + n_doc, "body: TODO"
    leaked = {name: [line for line in solution_lines(function) if line in (out / name).read_text()]
              for name in ("dydiff.py", "test_dydiff.py", "README.md")}  # fmt: skip
    assert all(v == [] for v in leaked.values()), f"the folder holds the solution: {leaked}"
    assert imported_modules(out / "test_dydiff.py") <= ALLOWED
    classes = [n.name for n in ast.parse((out / "test_dydiff.py").read_text()).body
               if isinstance(n, ast.ClassDef) and n.name.startswith("Test")]  # fmt: skip
    assert classes == [component], f"only {component}'s tests: {classes}"
    result = MU.run_tests(out, ["test_dydiff.py"], in_process=True)  # -x: to the first failure
    todo = f"NotImplementedError: TODO(student): {function}"
    first = result["failures"][0] if result["failures"] else {}
    assert first.get("message", "").startswith(todo), (
        f"the first failure must be the blank's TODO ({todo}), got {first}"
    )
    assert first["test"].startswith(component), f"a {component} test fails first: {first}"
    assert result["test_seconds"] < 10, (
        f"a blank fails its component's tests within 10 s: {result['test_seconds']:.1f} s in the "
        f"tests ({result['seconds']:.1f} s with Python's start and imports)"
    )


@pytest.mark.parametrize("in_process", [True, False])
def test_a_collection_error_is_reported_with_its_reason(tmp_path, capsys, in_process):
    """A student's test file that cannot be imported: the grade says why, pytest's own output
    stays out of ours, and (in process) this Python's modules, path and folder are put back."""
    shutil.copy(HERE / "dydiff.py", tmp_path / "dydiff.py")
    (tmp_path / "test_dydiff.py").write_text("import no_such_module\n\ndef test_a():\n    pass\n")
    path, cwd, modules = sys.path[:], os.getcwd(), sys.modules.get("dydiff")
    result = MU.run_tests(tmp_path, ["test_dydiff.py"], in_process=in_process)
    assert not result["passed"]
    assert result["failures"][0]["message"] == (
        "collection failure: ModuleNotFoundError: No module named 'no_such_module'"
    )
    assert "short test summary" not in capsys.readouterr().out
    assert (sys.path, os.getcwd(), sys.modules.get("dydiff")) == (path, cwd, modules)


@pytest.mark.slow
def test_the_assignments_tests_pass_on_the_solution(tmp_path):
    """Every ready function blanked at once; then, the solution put back, its tests pass."""
    assert MA.main([*MA.READY, "--out", str(tmp_path / "hw")]) == 0
    out = tmp_path / "hw" / "student"
    readme = (out / "README.md").read_text()
    assert all(f"`{f}`" in readme for f in MA.READY), "the README names every function to write"
    shutil.copy(HERE / "dydiff.py", out / "dydiff.py")  # the solution
    result = MU.run_tests(out, ["test_dydiff.py"], stop_first=False, in_process=True)
    assert result["passed"], result["failures"]


def test_with_training_adds_the_training_tests(tmp_path, capsys):
    assert MA.main(["filter_trajectories", "synthesise", "--out", str(tmp_path / "hw"),
                    "--with-training"]) == 0  # fmt: skip
    out = tmp_path / "hw" / "student"
    classes = [n.name for n in ast.parse((out / "test_dydiff.py").read_text()).body
               if isinstance(n, ast.ClassDef) and n.name.startswith("Test")]  # fmt: skip
    assert classes == ["TestRolloutAndFilter", "TestTraining"], classes
    assert "-k TestTraining" in (out / "README.md").read_text()
    assert "not a ready assignment" not in capsys.readouterr().out
    assert MA.main(["Normalizer.fit_zscore", "--out", str(tmp_path / "other")]) == 0
    assert "not a ready assignment" in capsys.readouterr().out


def test_assignment_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("a student's work")
    a_file = tmp_path / "file"
    a_file.write_text("")
    out = str(tmp_path / "hw")
    cases = [
        (["nope", "--out", out], "unknown function 'nope' in dydiff.py"),
        (["TD3BC", "--out", out], "TD3BC is a class: name one of its methods"),
        (["TD3BC.nope", "--out", out], "TD3BC has no method 'nope'"),
        (["TD3BC.update.x", "--out", out], "unknown function 'TD3BC.update.x'"),
        (["Config.device", "--out", out], "Config has no method 'device'"),
        (["TD3BC.update"], "give one FUNCTION or more and --out DIR"),
        (["--out", out], "give one FUNCTION or more and --out DIR"),
        (["TD3BC.update", "--out", str(full)], "is not empty (--force writes into it)"),
        (["TD3BC.update", "--out", str(a_file)], "is a file"),
        (["TD3BC.update", "--out", str(a_file / "sub")], "cannot write to"),
        (["TD3BC.update", "--out", out, "--bogus"], "unrecognized arguments: --bogus"),
        (["TD3BC.update", "--out", out, "--seed", "-1"], "--seed must be a non-negative integer"),
        (["TD3BC.update", "--out", out, "--seed", "x"], "invalid int value: 'x'"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            MA.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, (argv, err)
        assert message in err, (argv, err)
    assert not (tmp_path / "hw").exists() and [p.name for p in full.iterdir()] == ["mine.txt"]
    assert MA.main(["TD3BC.update", "--out", str(full), "--force"]) == 0
    assert sorted(p.name for p in full.iterdir()) == ["instructor", "mine.txt", "student"]
    assert MA.main(["--list"]) == 0 and "TD3BC.update" in capsys.readouterr().out


@pytest.mark.slow
def test_mutants_catch_a_bug_and_stop_on_a_mutation_gone_stale(tmp_path, monkeypatch, capsys):
    assert MU.main(["--only", "Filter: hardmax keeps the worst", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "caught" in out and "test_hardmax_keeps_the_best" in out and "1 of 1" in out, out
    assert not (tmp_path / "mutants.json").exists()  # --only: no table written
    gone = ("a bug whose code has changed", "TestData", "no such text in dydiff.py", "x")
    monkeypatch.setattr(MU, "MUTANTS", [*MU.MUTANTS, gone])
    with pytest.raises(SystemExit) as e:
        MU.main(["--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: mutation no longer applies: a bug whose")


def test_mutants_know_which_assignment_a_bug_is_in(capsys):
    """--hidden grades a bug with the hidden tests of the assignment whose blanked functions hold
    it: critic_target's bug belongs to TD3BC.update (blanked together), a Normalizer bug to no
    ready assignment; the table counts per assignment what each kind of test caught."""
    source = (HERE / "dydiff.py").read_text()
    text = {name: old for name, _, old, _ in MU.MUTANTS}
    owner = lambda name: MU.assignment_of(source, text[name], MA)  # noqa: E731
    assert owner("TD3 target: max of the twin critics") == "TD3BC.update"
    assert owner("Uncertainty: the mean gap, not the largest") == "EnsembleDynamics.uncertainty"
    assert owner("Filter: no floor of one trajectory") == "filter_trajectories"
    assert owner(next(n for n in text if n.startswith("Normalizer"))) is None
    rows = [dict(assignment="a", caught=True, caught_hidden=False),
            dict(assignment="a", caught=False, caught_hidden=True),
            dict(assignment="b", caught=False, caught_hidden=False), dict(caught=True)]
    assert MU.per_assignment(rows) == {
        "a": dict(mutations=2, visible=1, hidden=1, visible_and_hidden=2),
        "b": dict(mutations=1, visible=0, hidden=0, visible_and_hidden=0)}
