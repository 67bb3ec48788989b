"""Tests of notebooks/dydiff_lab: the committed .ipynb is its jupytext source's, without outputs;
the first code cell finds dydiff.py and lab.py where it says; the notebook runs with tiny settings.

After editing notebooks/dydiff_lab.py: jupytext --update --to ipynb notebooks/dydiff_lab.py
"""

import math
import os
import re
import shutil
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
SOURCE, NOTEBOOK = ROOT / "notebooks" / "dydiff_lab.py", ROOT / "notebooks" / "dydiff_lab.ipynb"
NUM, DIFF = r"-?\d+\.\d", r"[+-]\d+\.\d"
SPREAD = rf"({NUM}) \+- (\d+\.\d)"
LINE = (rf"^lab: td3bc {SPREAD}, dydiff {SPREAD}, M=0 {SPREAD}, "
        rf"dydiff-td3bc ({DIFF}) \[({DIFF}), ({DIFF})\], M2-M0 ({DIFF}) \[({DIFF}), ({DIFF})\]$")


def cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def first_code_cell(nb) -> str:
    return next(c.source for c in nb.cells if c.cell_type == "code")


def test_committed_ipynb_is_made_from_its_source_and_has_no_outputs():
    from_py, from_ipynb = jupytext.read(SOURCE), jupytext.read(NOTEBOOK)
    want, got = cells(from_py), cells(from_ipynb)
    remake = "jupytext --update --to ipynb notebooks/dydiff_lab.py"
    assert len(got) == len(want), f"{len(got)} cells, the source {len(want)}: {remake}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"cell {i} differs from {SOURCE.name}'s: {remake}"
    raw = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(raw)
    assert raw.metadata.kernelspec.name == "python3", "Colab and nbclient need a python3 kernel"
    for i, c in enumerate(raw.cells):
        if c.cell_type == "code":
            assert not c.outputs and c.execution_count is None, f"cell {i}: commit without outputs"


@pytest.mark.parametrize("mode", ["beside", "path", "url"])
def test_first_cell_finds_the_code_beside_at_a_path_or_at_a_url(mode, tmp_path, monkeypatch):
    """The first code cell alone (standard library only), run here: the Colab upload (both files
    in the working folder), a local checkout, and a URL (file://: the real download code, no
    network) whose files land in the working folder."""
    work = tmp_path / "work"
    work.mkdir()
    if mode == "beside":
        shutil.copy(ROOT / "dydiff.py", work)
        shutil.copy(ROOT / "scripts" / "lab.py", work)
    source = {"beside": "", "path": str(ROOT), "url": ROOT.as_uri()}[mode]
    monkeypatch.chdir(work)
    monkeypatch.setenv("DYDIFF_SOURCE", source)
    monkeypatch.setattr(sys, "path", list(sys.path))
    namespace: dict = {}
    exec(first_code_cell(jupytext.read(SOURCE)), namespace)
    dirs = namespace["CODE_DIRS"]
    want = [ROOT, ROOT / "scripts"] if mode == "path" else [work, work]
    assert dirs == [p.resolve() for p in want], f"{mode}: code found in {dirs}"
    assert sys.path[: len(dirs)] == [str(d) for d in dirs], "the code's folders come first"
    if mode == "url":
        for name, path in (("dydiff.py", "dydiff.py"), ("lab.py", "scripts/lab.py")):
            got = (work / name).read_bytes()
            assert got == (ROOT / path).read_bytes(), f"{name}: not the repository's"


def test_first_cell_says_what_to_do_when_it_finds_no_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DYDIFF_SOURCE", "")
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(FileNotFoundError, match="upload both, or set DYDIFF_SOURCE"):
        exec(first_code_cell(jupytext.read(SOURCE)), {})


def test_notebook_runs_end_to_end_in_quick_mode_and_prints_the_labs_line(monkeypatch):
    """Every cell, in a python3 kernel started from notebooks/ as Jupyter does, with
    DYDIFF_NOTEBOOK_QUICK=1 (a few seconds of CPU): no error, a figure, the lab's line."""
    monkeypatch.setenv("DYDIFF_NOTEBOOK_QUICK", "1")
    monkeypatch.delenv("DYDIFF_SOURCE", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})  # fmt: skip
    client.execute()  # raises CellExecutionError, naming the cell, on the first failing one
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.outputs if o.output_type == "stream")  # fmt: skip
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]  # fmt: skip
    assert "quick: True" in text, "the test must run the tiny settings"
    assert f"dydiff: {ROOT / 'dydiff.py'}" in text, "the repository's dydiff.py, above notebooks/"
    assert len(images) == 1, f"one figure (policy injection) expected, got {len(images)}"
    errors = re.findall(r"^(.+), M = (\d): position error at h = 1 / 8 / 31: "
                        r"(\d+\.\d+) / (\d+\.\d+) / (\d+\.\d+)$", text, re.M)  # fmt: skip
    policies = ("goal controller", "full force to the top-right corner")
    assert [(p, int(m)) for p, m, *_ in errors] == [(p, m) for p in policies for m in range(3)]
    assert all(math.isfinite(float(x)) for *_, h1, h8, h31 in errors for x in (h1, h8, h31))
    runs = re.findall(r"^(td3bc|dydiff|m0) seed (\d+): final (-?\d+\.\d) \(\d+ s\)$", text, re.M)
    assert [(a, int(s)) for a, s, _ in runs] == [(a, s) for s in (0, 1) for a in
                                                  ("td3bc", "dydiff", "m0")], runs  # fmt: skip
    lines = re.findall(LINE, text, re.M)
    assert len(lines) == 1, f"the lab's line, once:\n{text[-600:]}"
    numbers = [float(x) for x in lines[0]]
    assert all(math.isfinite(x) for x in numbers), lines[0]
    finals = {a: [float(f) for b, _, f in runs if b == a] for a in ("td3bc", "dydiff", "m0")}
    for a, mean in zip(finals, numbers[0:6:2]):
        assert abs(sum(finals[a]) / 2 - mean) <= 0.101, f"{a}: the line's mean is its seeds' mean"
    for d, lo, hi in (numbers[6:9], numbers[9:12]):
        assert lo <= d + 0.1 and d <= hi + 0.1, "a mean difference lies inside its interval"
