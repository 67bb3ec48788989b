"""The docs a reader follows still hold: in README.md, docs/*.md, benchmarks/README.md and
results/README.md every relative link reaches its file (and its heading, for #anchors), every file
cited in backticks (results/..., benchmarks/..., scripts/..., docs/..., tests/..., notebooks/...,
data/...) exists, and every `python X.py` names a script of the repository. Fast: no run, no import.
Run: python -m pytest -q tests/test_docs.py"""

import glob
import itertools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md",
         ROOT / "results" / "README.md"]  # fmt: skip
KIT = ROOT / "scripts" / "assignment"  # a built assignment's grade.py comes from here
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")
FOLDERS = "results|benchmarks|scripts|docs|tests|notebooks|data"
CITED = re.compile(rf"(?<![\w/.~-])((?:{FOLDERS})/(?:[^\s`'\"(),;|{{]|\{{[^\s{{}}]*\}})*)")
SCRIPT = re.compile(r"\bpython3?\s+([\w./-]+\.py)\b")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        if m := re.match(r"#{1,6}\s+(.*)", line):
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def expand(path: str) -> list[str]:
    """a.{json,png} -> a.json, a.png"""
    parts = re.split(r"\{([^{}]*,[^{}]*)\}", path)
    options = [p.split(",") if i % 2 else [p] for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*options)]


def exists(cited: str) -> bool:
    """A cited path: as it is, a glob (*) with a match, or a template (<env>, RUN_DIR, ALGO_seedS)
    whose fixed start names something that exists."""
    for path in expand(cited.rstrip(".:")):
        fixed = re.split(r"<|\[|(?<![a-z])(?!README)[A-Z]{2,}", path)[0]  # <env>, [.], RUN_DIR
        if fixed != path:
            found = glob.glob(str(ROOT / fixed) + "*")
        else:
            found = glob.glob(str(ROOT / path)) if "*" in path else (ROOT / path).exists()
        if not found:
            return False
    return True


def problems(page: Path) -> list[str]:
    text = page.read_text()
    prose = FENCE.sub("", text)
    found = []
    for target in LINK.findall(prose):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            found.append(f"link to a missing file: {target}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            found.append(f"link to a missing heading: {target}")
    for span in re.findall(r"`([^`]+)`", prose):  # inline code; code blocks may name outputs
        found += [f"cited file missing: {c}" for c in CITED.findall(span) if not exists(c)]
    for script in SCRIPT.findall(text):
        if not (ROOT / script).exists() and not (KIT / Path(script).name).exists():
            found.append(f"python {script}: no such script")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_cited_files_and_scripts_exist(page):
    assert page.exists(), f"{page.relative_to(ROOT)} is missing"
    assert problems(page) == []


def test_the_check_fails_on_a_broken_link_a_missing_file_and_a_missing_script(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A title\n\n[ok](#a-title) [gone](nowhere.md) [bad](#no-such-heading)\n"
                    "`results/no_such_folder/x.json` `results/dm_verdict_*.json`\n"
                    "```bash\npython benchmarks/no_such_script.py\n```\n")  # fmt: skip
    assert problems(page) == ["link to a missing file: nowhere.md",
                              "link to a missing heading: #no-such-heading",
                              "cited file missing: results/no_such_folder/x.json",
                              "python benchmarks/no_such_script.py: no such script"]  # fmt: skip
    page.write_text("`results/mazes_dev_maze2d-umaze.{json,pdf}` `results/none_<env>/x` `results/<env>/x`"
                    " `results/dm_*/ALGO_seedS`")  # fmt: skip
    assert problems(page) == ["cited file missing: results/mazes_dev_maze2d-umaze.{json,pdf}",
                              "cited file missing: results/none_<env>/x"]  # fmt: skip


def test_readme_lists_every_top_level_folder_and_stays_short():
    readme = (ROOT / "README.md").read_text()
    folders = [p.name for p in ROOT.iterdir() if p.is_dir() and p.name in
               {".ci", "tests", "benchmarks", "results", "docs", "scripts", "notebooks", "data"}]  # fmt: skip
    assert len(folders) == 8 and all(f"`{f}/`" in readme for f in folders), folders
    assert len(readme.splitlines()) <= 200
