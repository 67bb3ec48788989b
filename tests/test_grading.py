"""Tests of the assignment kit: scripts/make_assignment.py's student folder and instructor kit, the
hidden tests (scripts/assignment/hidden_tests.py), the leak check and the grader (grade.py, run
as a teacher and as Gradescope's run_autograder would run it).

The grading runs use window_starts, the cheapest assignment: every submission is a fresh Python
that imports torch. Five submissions are graded in one command: the solution (full marks), a
realistic mistake from tests/mutants.py (loses points), the blank (at most a tenth), one that
does not import and one that hangs on some inputs (the per-test time limit)."""

import ast
import builtins
import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from support import HERE, load_script

MA = load_script("make_assignment", "scripts/make_assignment.py")
MU = load_script("mutants", "tests/mutants.py")
SOURCE = (HERE / "dydiff.py").read_text()
TESTS = (HERE / "test_dydiff.py").read_text()
# critic_target's body, its variables renamed and its lines laid out otherwise
RENAMED = '''
def target_of(me, b):
    c, act = me.cfg, b["actions"]
    nxt = me.state_norm(
        b["next_states"])
    eps = (torch.randn_like(act) * c.policy_noise).clamp(-c.noise_clip,
                                                         c.noise_clip)
    a_next = (me.actor_target(nxt) + eps).clamp(-1, 1)
    both = torch.cat([nxt, a_next], -1)
    q = torch.min(me.q1_target(both),
                  me.q2_target(both))
    return b["rewards"] + c.gamma * (1 - b["dones"]) * q
'''


def env_without_repo() -> dict:
    """The environment of a teacher's shell: nothing points at this repository."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYTEST"))}


def run(command, cwd, **env) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=env_without_repo() | env)  # fmt: skip


def test_the_library_raises_assignment_errors_not_exits(tmp_path):
    assert issubclass(MA.AssignmentError, ValueError)
    for call, message in [
        (lambda: MA.build(["nope"], tmp_path / "a"), "unknown function 'nope'"),
        (lambda: MA.build([], tmp_path / "a"), "give one FUNCTION or more"),
        (lambda: MA.blank(SOURCE, ["TD3BC"]), "TD3BC is a class"),
        (lambda: MA.hidden_tests(["window_starts"], -1), "--seed must be a non-negative integer"),
        (lambda: MA.hidden_tests(["TD3BC.nope"], 0), "TD3BC has no method 'nope'"),
    ]:
        with pytest.raises(MA.AssignmentError, match=message):
            call()
    assert not (tmp_path / "a").exists(), "nothing written on bad input"


def test_td3bc_update_is_blanked_with_critic_target():
    given = ast.parse(MA.blank(SOURCE, ["TD3BC.update"]))
    for name in ("TD3BC.update", "TD3BC.critic_target"):
        body = MA.find_function(given, name)[0].body
        assert isinstance(body[-1], ast.Raise) and name in ast.unparse(body[-1]), name


def test_the_seed_chooses_the_hidden_inputs_and_the_hidden_tests_copy_no_visible_one():
    a, b = MA.hidden_tests(["window_starts"], 0), MA.hidden_tests(["window_starts"], 7)
    assert "\nSEED = 0  #" in a and "\nSEED = 7  #" in b
    same = a.replace("SEED = 0  #", "SEED = 7  #").replace("(seed 0)", "(seed 7)")
    assert same == b, "only the seed differs"
    classes = [n.name for n in ast.parse(a).body if isinstance(n, ast.ClassDef)]
    assert classes == ["TestDataHidden"], classes
    graded = {m.name for c in ast.parse(a).body if isinstance(c, ast.ClassDef) for m in c.body
              if isinstance(m, ast.FunctionDef) and m.name.startswith("test")}  # fmt: skip
    assert graded and all("window" in name for name in graded), f"only window_starts': {graded}"
    # no hidden test repeats a visible one, whatever its names and layout
    keep = set(dir(builtins)) | {"torch", "np", "nn", "pytest"}

    def bodies(source):
        return {MA.canonical(m.body, keep, {"D"}, {}): m.name for c in ast.parse(source).body
                if isinstance(c, ast.ClassDef) for m in c.body
                if isinstance(m, ast.FunctionDef) and m.name.startswith("test")}  # fmt: skip

    hidden, visible = bodies(MA.hidden_tests(list(MA.READY), 0)), bodies(TESTS)
    assert len(hidden) >= 20, f"hidden tests of every ready assignment: {len(hidden)}"
    copied = [name for form, name in hidden.items() if form in visible]
    assert copied == [], f"hidden tests copied from the visible ones: {copied}"
    renamed = TESTS.replace("def test_", "def test_copy_").replace("horizon", "h")
    assert len(set(bodies(renamed)) & set(visible)) > 50, "a renamed copy is seen"


def test_the_leak_check_sees_through_renames_and_reformatting(tmp_path):
    found = MA.leaks(SOURCE, ["TD3BC.update"], {"student/test_dydiff.py": TESTS + RENAMED})
    assert len(found) >= 4 and all("TD3BC.critic_target's" in f for f in found), found
    assert MA.leaks(SOURCE, ["TD3BC.update"], {"student/test_dydiff.py": TESTS}) == []
    assert MA.leaks(SOURCE, ["window_starts"], {"x.py": TESTS + RENAMED}) == [], "not its body"
    with pytest.raises(MA.AssignmentError, match="the student's folder would hold the solution"):
        helper = f"{RENAMED}\n\nclass TestTD3BC:\n    ref = target_of\n"  # used by the class
        used = TESTS.replace("class TestTD3BC:\n", helper)
        MA.build(["TD3BC.update"], tmp_path / "hw", tests=used)
    assert not (tmp_path / "hw").exists(), "a leaking assignment is not written"


# In the folder of the hidden tests: each test runs with the functions it grades blanked, as the
# builder blanks them (the body raises the TODO), so all of them run in one pytest session.
BLANK_WHAT_IT_GRADES = """
import pytest

import dydiff


@pytest.fixture(autouse=True)
def blank_what_it_grades(request, monkeypatch):
    for name in getattr(request.function, "grades", ()):
        owner, _, attr = name.rpartition(".")

        def todo(*args, _name=name, **kwargs):
            raise NotImplementedError(f"TODO(student): {_name}")

        monkeypatch.setattr(getattr(dydiff, owner) if owner else dydiff, attr, todo)
"""


@pytest.mark.parametrize("blanked", [False, True])
def test_hidden_tests_pass_on_the_solution_and_fail_on_each_blank(tmp_path, blanked):
    """Every ready function's hidden tests, with another seed: all pass on the solution; each
    fails when the functions it grades are blanked (so a blank earns nothing from them)."""
    (tmp_path / "test_hidden.py").write_text(MA.hidden_tests(list(MA.READY), 3))
    (tmp_path / "dydiff.py").write_text(SOURCE)
    if blanked:
        (tmp_path / "conftest.py").write_text(BLANK_WHAT_IT_GRADES)
    saved = sys.modules.pop("test_hidden", None), sys.modules.pop("conftest", None)
    try:
        result = MU.run_tests(tmp_path, ["test_hidden.py"], stop_first=False, in_process=True)
    finally:
        for name, module in zip(("test_hidden", "conftest"), saved):
            sys.modules.pop(name, None)
            if module is not None:
                sys.modules[name] = module
    if not blanked:
        assert result["passed"], result["failures"]
        return
    failed = {f["test"] for f in result["failures"] if "TODO(student)" in f["message"]}
    ids = MA.test_ids(MA.hidden_tests(list(MA.READY), 3), "test_hidden.py")
    graded = {i.split("::", 1)[1] for i in ids}
    assert {t.split("[")[0] for t in failed} == graded, "every hidden test fails on the blank"
    assert len(failed) == len(result["failures"]), "each on the blank's TODO"
    names = set(MA.READY) | {"TD3BC.critic_target"}
    for test in ast.parse(MA.hidden_tests(list(MA.READY), 3)).body:
        for m in getattr(test, "body", []):
            if getattr(m, "name", "").startswith("test"):
                assert MA.grades_of(m) and MA.grades_of(m) <= names, (m.name, MA.grades_of(m))


def submissions(root, blank_module: str):
    """Five students' folders: solution, mistake, blank, broken (no import), hangs."""
    mistake = [m for m in MU.MUTANTS if m[0] == "Data: window_starts ignores episodes"][0]
    hang = MA.blank(SOURCE, ["window_starts"]).replace(
        'raise NotImplementedError("TODO(student): window_starts")',
        "if horizon == 8:  # an endless wait on one input\n        import time\n\n"
        "        time.sleep(600)\n    ids = np.asarray(episode_ids)\n"
        "    return np.asarray([i for i in range(len(ids) - horizon + 1)\n"
        "                       if (ids[i : i + horizon] == ids[i]).all()], dtype=np.int64)",
    )  # fmt: skip
    modules = {"solution": SOURCE, "mistake": MU.mutate(SOURCE, mistake[0], *mistake[2:]),
               "blank": blank_module, "broken": SOURCE.replace("import copy", "import copy,"),
               "hangs": hang}  # fmt: skip
    for name, text in modules.items():
        (root / name).mkdir(parents=True)
        (root / name / "dydiff.py").write_text(text)
    (root / "solution" / "dydiff.py").unlink()  # a zip unpacked with its folder
    (root / "solution" / "src").mkdir()
    (root / "solution" / "src" / "dydiff.py").write_text(SOURCE)


@pytest.mark.slow
def test_a_teacher_builds_hands_out_and_grades_in_one_command(tmp_path):
    build = tmp_path / "build"
    assert MA.main(["window_starts", "--out", str(build), "--seed", "5"]) == 0
    student, kit = build / "student", tmp_path / "elsewhere" / "kit"
    assert sorted(p.name for p in student.iterdir()) == ["README.md", "dydiff.py", "test_dydiff.py"]
    readme = (student / "README.md").read_text()
    for part in ("## What you learn", "## Before you start", "Expected time", "## What to submit",
                 "## Written questions", "1. "):  # fmt: skip
        assert part in readme, part
    assert not any("hidden" in p.name or "solution" in str(p) for p in student.rglob("*"))
    # the kit works copied anywhere alone: the build and this repository out of its reach
    shutil.copytree(build / "instructor", kit)
    blank_module = (student / "dydiff.py").read_text()
    shutil.rmtree(build)
    points = json.loads((kit / "points.json").read_text())
    assert points["seed"] == 5 and "\nSEED = 5  #" in (kit / "tests" / "test_hidden.py").read_text()
    hidden = [t for t in points["tests"] if t.startswith("test_hidden.py")]
    assert hidden and len(hidden) < len(points["tests"]), "visible and hidden tests are graded"
    subs, grades = tmp_path / "submissions", tmp_path / "grades"
    submissions(subs, blank_module)
    res = run([sys.executable, str(kit / "grade.py"), str(subs), "--out", str(grades),
               "--timeout", "3"], cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = {r["student"]: r for r in csv.DictReader(open(grades / "grades.csv"))}
    assert sorted(rows) == ["blank", "broken", "hangs", "mistake", "solution"]
    top = float(rows["solution"]["max"])
    score = {k: float(r["score"]) for k, r in rows.items()}
    assert top == sum(points["tests"].values()) and score["solution"] == top, rows["solution"]
    assert 0 < score["mistake"] < top, rows["mistake"]
    assert score["blank"] <= top / 10, rows["blank"]
    assert score["broken"] == 0 and rows["broken"]["note"].startswith("does not import: "), rows
    assert "SyntaxError" in rows["broken"]["note"] and "\n" not in rows["broken"]["note"]
    assert 0 < score["hangs"] < top, rows["hangs"]
    result = json.loads((grades / "hangs" / "results.json").read_text())
    assert result["score"] == score["hangs"] and set(result) >= {"score", "tests", "output"}
    for test in result["tests"]:
        assert set(test) >= {"name", "score", "max_score", "output"}, test
    assert any("Timeout" in t["output"] for t in result["tests"]), result["tests"]
    mistake = json.loads((grades / "mistake" / "results.json").read_text())
    lost = [t for t in mistake["tests"] if t["score"] < t["max_score"]]
    assert any("(hidden)" in t["name"] for t in lost), "the hidden tests catch it too"
    assert all(t["output"] != "passed" for t in lost), lost
    # Gradescope: run_autograder on one submission, locally; the same marks as above
    root = tmp_path / "autograder"
    shutil.copytree(kit, root / "source")
    shutil.copytree(subs / "mistake", root / "submission")
    res = run(["bash", str(root / "source" / "run_autograder")], cwd=tmp_path,
              AUTOGRADER_ROOT=str(root), PYTHON=sys.executable)  # fmt: skip
    assert res.returncode == 0, res.stderr + res.stdout
    assert json.loads((root / "results" / "results.json").read_text()) == mistake, "same marks"
    assert os.access(kit / "setup.sh", os.X_OK) and os.access(kit / "run_autograder", os.X_OK)


def test_a_run_stopped_at_the_total_limit_scores_the_tests_that_ran(tmp_path):
    """A kit of two tests, the second endless: the run is killed at --total-timeout, the first
    test's point stays (results are written as tests end), the second says why it has none."""
    kit, sub = tmp_path / "kit", tmp_path / "sub"
    (kit / "tests").mkdir(parents=True)
    shutil.copy(HERE / "scripts" / "assignment" / "grade.py", kit / "grade.py")
    (kit / "tests" / "test_two.py").write_text(
        "import time\n\n\nclass TestTwo:\n    def test_quick(self):\n        pass\n\n"
        "    def test_endless(self):\n        time.sleep(600)\n")  # fmt: skip
    tests = {"test_two.py::TestTwo::test_quick": 1, "test_two.py::TestTwo::test_endless": 2}
    (kit / "points.json").write_text(json.dumps({"tests": tests}))
    sub.mkdir()
    (sub / "dydiff.py").write_text("")
    res = run([sys.executable, str(kit / "grade.py"), "--submission", str(sub), "--results",
               str(tmp_path / "r.json"), "--total-timeout", "3"], cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["score"] == 1 and [t["score"] for t in result["tests"]] == [1, 0], result
    assert result["tests"][1]["output"] == (
        "not run: stopped at the time limit of the whole run (3 s)"), result  # fmt: skip


def test_grader_usage_errors_are_one_line_and_exit_2(tmp_path, capsys):
    MA.build(["sample_mixed"], tmp_path / "b")
    grade = load_script("grade", "scripts/assignment/grade.py")
    grade.HERE = tmp_path / "b" / "instructor"  # as if run from the kit
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv, message in [([], "give SUBMISSIONS and --out GRADES"),
                          ([str(tmp_path / "none"), "--out", "g"], "is not a folder"),
                          ([str(empty), "--out", str(tmp_path / "g")], "holds no folder"),
                          (["--submission", str(empty)], "--submission DIR goes with --results")]:
        assert grade.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (argv, err)
    grade.HERE = tmp_path
    assert grade.main([str(empty), "--out", "g"]) == 2
    assert "points.json is missing" in capsys.readouterr().err
