#!/usr/bin/env python3
"""Grade a folder of submissions with this assignment's visible and hidden tests.

    python grade.py SUBMISSIONS --out GRADES      # SUBMISSIONS/<student>/dydiff.py, one per student
    python grade.py --submission DIR --results results.json   # one submission (Gradescope)

Each submission runs in a fresh Python (`python -m pytest` in a temporary folder holding its
dydiff.py and this folder's tests/), with a time limit per test (pytest-timeout, --timeout) and
one for the whole run (--total-timeout). points.json beside this file gives each test's points
(a parametrised test's points are shared by its cases). Writes GRADES/grades.csv (student, score,
max, note) and GRADES/<student>/results.json in Gradescope's autograder format. A submission that
does not import, hangs or raises scores what it earns, with one line saying why; grading goes on.
Exit 0 once the folder is graded, whatever the scores; 2 for a usage error. Needs Python 3.9+,
pytest, pytest-timeout and what the tests import (torch, numpy). Standalone: it reads only this
folder and the submissions.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULE = "dydiff.py"
# A pytest plugin written beside the tests: one JSON line per report, flushed, so a run stopped
# by the total time limit still tells which tests ran.
PLUGIN = '''
import json, os, re

def _line(report, kind):
    message = ""
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        if crash is not None:  # the test's own message, without pytest's explanation
            message = crash.message.split("\\nassert ")[0]
        else:
            text = str(report.longrepr)
            errors = [l[1:].strip() for l in text.splitlines() if l.startswith("E ")]
            message = errors[-1] if errors else (text.strip().splitlines() or [""])[-1]
        message = re.sub(" at 0x[0-9a-fA-F]+", "", message)  # the same text in every run
    with open(os.environ["GRADE_REPORT"], "a") as f:
        f.write(json.dumps(dict(kind=kind, nodeid=report.nodeid, when=getattr(report, "when", ""),
                                outcome=report.outcome, message=message)) + "\\n")

def pytest_runtest_logreport(report):
    _line(report, "test")

def pytest_collectreport(report):
    if report.failed:
        _line(report, "collect")

def pytest_collection_modifyitems(items):
    with open(os.environ["GRADE_REPORT"], "a") as f:
        for item in items:
            f.write(json.dumps(dict(kind="collected", nodeid=item.nodeid)) + "\\n")
'''


class UsageError(Exception):
    pass


def load_config() -> dict:
    path = HERE / "points.json"
    if not path.is_file():
        raise UsageError(f"{path} is missing: grade.py reads its points table beside it")
    return json.loads(path.read_text())


def find_module(folder: Path) -> Path | None:
    """The submission's dydiff.py: in the folder, else the shallowest one below it."""
    found = sorted(folder.rglob(MODULE), key=lambda p: (len(p.parts), str(p)))
    found = [p for p in found if "__MACOSX" not in p.parts and p.is_file()]
    return found[0] if found else None


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_tests(module: Path, config: dict, timeout: float, total: float) -> tuple[dict, str]:
    """Run the graded tests on one dydiff.py in a fresh process: {nodeid: (outcome, message)}
    per test case, and a note on the whole run ("" when it ran to the end)."""
    with tempfile.TemporaryDirectory(prefix="grade_") as tmp:
        tmp = Path(tmp)
        for test in sorted((HERE / "tests").glob("*.py")):
            shutil.copy(test, tmp / test.name)
        shutil.copy(module, tmp / MODULE)
        (tmp / "grade_plugin.py").write_text(PLUGIN)
        report = tmp / "report.jsonl"
        ids = list(config["tests"])
        # only the plugins needed (no autoload: a second less per submission, no surprises)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                   "grade_plugin", "-p", "pytest_timeout", f"--timeout={timeout}",
                   "--timeout-method=signal", "--tb=short", "-rN", "--rootdir", str(tmp),
                   "-o", "addopts=", *ids]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PYTHON"))}
        env.update(GRADE_REPORT=str(report), OMP_NUM_THREADS="1", PYTHONHASHSEED="0",
                   PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(tmp),
                   PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")  # fmt: skip
        note = ""
        proc = subprocess.Popen(command, cwd=tmp, env=env, stdout=subprocess.PIPE, text=True,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=total)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            note = f"stopped at the time limit of the whole run ({total:g} s)"
        results, collect = {}, []
        lines = report.read_text().splitlines() if report.exists() else []
        for line in lines:
            rec = json.loads(line)
            if rec["kind"] == "collect":
                collect.append(rec["message"])
                continue
            if rec["kind"] == "collected":
                results.setdefault(rec["nodeid"], ("not run", ""))
                continue
            outcome, message = rec["outcome"], rec["message"]
            old = results.get(rec["nodeid"], ("not run", ""))
            if old[0] != "failed" and (rec["when"] == "call" or outcome != "passed"):
                results[rec["nodeid"]] = (outcome, message)  # a failed setup or teardown stays
        tail = [ln for ln in (output or "").strip().splitlines() if ln.strip()][-1:] or ["no output"]
        if collect:
            note = f"does not import: {one_line(collect[0])}"
        elif not lines and not note:
            note = f"the tests did not run (exit {proc.returncode}): {one_line(tail[0])}"
        elif not note and proc.returncode not in (0, 1):  # e.g. os._exit() in a test
            note = f"the run ended early (exit {proc.returncode})"
        return results, note


def case_key(nodeid: str) -> str:
    """file::Class::test[param] -> file::Class::test, the points table's key."""
    return nodeid.split("[", 1)[0]


def score(results: dict, config: dict, note: str) -> dict:
    """Gradescope's results.json for one submission."""
    tests, total = [], 0.0
    for key, points in config["tests"].items():
        cases = {k: v for k, v in results.items() if case_key(k) == key}
        passed = sum(1 for outcome, _ in cases.values() if outcome == "passed")
        earned = round(points * passed / len(cases), 4) if cases else 0.0
        failed = [(k, v) for k, v in cases.items() if v[0] not in ("passed", "not run")]
        if failed:
            name, (outcome, message) = failed[0]
            output = f"{name.split('::')[-1]}: {one_line(message) or outcome}"
            if len(failed) > 1:
                output += f" (and {len(failed) - 1} more case(s))"
        elif not cases or passed < len(cases):
            output = f"not run: {note or 'the run stopped before this test'}"
        else:
            output = "passed"
        hidden = key.startswith("test_hidden.py")
        tests.append(dict(name=key.split("::", 1)[1] + (" (hidden)" if hidden else ""),
                          score=earned, max_score=points, output=output,
                          visibility="after_due_date" if hidden else "visible"))  # fmt: skip
        total += earned
    top = round(total, 2)
    maximum = sum(config["tests"].values())
    summary = f"{top:g} of {maximum:g} points" + (f"; {note}" if note else "")
    return dict(score=top, output=summary, visibility="visible", stdout_visibility="hidden",
                tests=tests)  # fmt: skip


def grade_one(folder: Path, config: dict, timeout: float, total: float) -> dict:
    module = find_module(folder) if folder.is_dir() else None
    if not config["tests"]:
        results, note = {}, "points.json lists no test"
    elif module is None:
        results, note = {}, f"no {MODULE} in the submission"
    else:
        results, note = run_tests(module, config, timeout, total)
    return score(results, config, note)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", nargs="?", type=Path,
                        help="a folder holding one folder per student, each with its dydiff.py")
    parser.add_argument("--out", type=Path, help="where grades.csv and <student>/results.json go")
    parser.add_argument("--submission", type=Path, help="grade this one folder (Gradescope)")
    parser.add_argument("--results", type=Path, help="with --submission: the results.json to write")
    parser.add_argument("--timeout", type=float, help="seconds per test (points.json's default)")
    parser.add_argument("--total-timeout", type=float,
                        help="seconds per submission for the whole run (points.json's default)")
    args = parser.parse_args(argv)
    try:
        config = load_config()
        timeout = args.timeout or config.get("timeout", 60)
        total = args.total_timeout or config.get("total_timeout", 900)
        if args.submission is not None:
            if args.results is None or args.submissions is not None:
                raise UsageError("--submission DIR goes with --results FILE, and alone")
            if not args.submission.is_dir():
                raise UsageError(f"--submission {args.submission} is not a folder")
            result = grade_one(args.submission, config, timeout, total)
            args.results.parent.mkdir(parents=True, exist_ok=True)
            args.results.write_text(json.dumps(result, indent=1) + "\n")
            print(f"{result['score']:g} of {sum(config['tests'].values()):g}: {result['output']}")
            return 0
        if args.submissions is None or args.out is None:
            raise UsageError("give SUBMISSIONS and --out GRADES (or --submission and --results)")
        if not args.submissions.is_dir():
            raise UsageError(f"{args.submissions} is not a folder of submissions")
        students = sorted(p for p in args.submissions.iterdir()
                          if p.is_dir() and not p.name.startswith((".", "__")))  # fmt: skip
        if not students:
            raise UsageError(f"{args.submissions} holds no folder (one per student)")
        args.out.mkdir(parents=True, exist_ok=True)
    except (UsageError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    maximum = sum(config["tests"].values())
    rows = []
    for folder in students:
        result = grade_one(folder, config, timeout, total)
        (args.out / folder.name).mkdir(parents=True, exist_ok=True)
        (args.out / folder.name / "results.json").write_text(json.dumps(result, indent=1) + "\n")
        note = result["output"].split("; ", 1)[1] if "; " in result["output"] else ""
        rows.append((folder.name, result["score"], maximum, note))
        print(f"{folder.name}: {result['score']:g} of {maximum:g}" + (f" ({note})" if note else ""),
              flush=True)  # fmt: skip
    with open(args.out / "grades.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "score", "max", "note"])
        writer.writerows(rows)
    print(f"graded {len(rows)} submission(s): {args.out / 'grades.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
