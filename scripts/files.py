"""What the driver, the data scripts, the benchmarks and the course tools share: files that are
never half-written, read while being written, or stale; a run's provenance; one-line errors.

- file_lock: one process at a time makes a dataset, an array cache or a model; others wait.
- atomic_write: write to a temporary name, then rename (write_csv: a table of rows so).
- read_cached: a cached file, or None when it is missing or corrupt (the caller rebuilds it).
- content_hash: a short hash of arrays' bytes (a dataset, a model's weights).
- fingerprint: the key of a cached artefact, a hash of the code that makes it (every function or
  class of this repository it names, transitively), the settings that code reads, and its data.
- git_commit, cpu_name: which code and which CPU made a record's numbers.
- fail, one_line_errors: bad input as one line "error: ..." and exit code 2, no usage block.

scripts/lab.py keeps its own copies of git_commit and cpu_name: it imports dydiff alone.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import dataclasses
import hashlib
import inspect
import json
import os
import platform
import subprocess
import sys
import textwrap
import time
from pathlib import Path

if os.name == "nt":
    import msvcrt
else:
    import fcntl

ROOT = Path(__file__).resolve().parent.parent  # the repository


@contextlib.contextmanager
def file_lock(path: str | os.PathLike):
    """Hold an exclusive lock on the file `path` (created if missing, and left in place).

    A second process asking for the same lock waits until the first one releases it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        if os.name == "nt":
            f.seek(0)
            while True:  # LK_LOCK would give up after 10 s
                try:
                    msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
                    break
                except OSError:
                    time.sleep(0.1)
        else:
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if os.name == "nt":
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
            else:
                fcntl.flock(f, fcntl.LOCK_UN)


def atomic_write(path: Path, write) -> None:
    """write(tmp), then rename: a crash never leaves a half-written file where a good one was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_csv(path: Path, rows: list[dict]) -> None:
    """The dicts `rows` as a CSV table, written atomically; columns in order of first use."""

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            (w := csv.DictWriter(f, list(dict.fromkeys(k for row in rows for k in row)))).writeheader()
            w.writerows(rows)

    atomic_write(path, write)


def read_cached(path: Path, read, log=print):
    """read(path), or None when it is missing or corrupt (then the caller rebuilds it)."""
    try:
        return read(path) if path.exists() else None
    except Exception as e:  # truncated, not ours, an older format...
        log(f"{path} is corrupt ({type(e).__name__}); rebuilding it")  # and return None


def content_hash(arrays) -> str:
    """sha1 (12 hex digits) of the bytes of numpy arrays, in order: the same hash, the same content."""
    return hashlib.sha1(b"".join(a.tobytes() for a in arrays)).hexdigest()[:12]


def data_hash(data: dict) -> str:
    """content_hash of a dict of arrays in key order: what the models learn from (the driver's key)."""
    return content_hash(data[k] for k in sorted(data))


def weights_hash(model) -> str:
    """content_hash of a model's weights and buffers, in state_dict order."""
    return content_hash(t.detach().cpu().numpy() for t in model.state_dict().values())


def fingerprint(code: list, cfg=None, *extra) -> str:
    """A hash of the code of `code` and of all our code it names (syntax trees: comments and
    layout do not count), of the fields of the settings dataclass cfg that code reads, and of extra
    (data, seeds...): a cached artefact is reused only if the same code, settings and data made it."""
    trees = code_of(code)
    used = {n.attr for t in trees.values() for n in ast.walk(t) if isinstance(n, ast.Attribute)}
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k in used} if cfg else {}
    code = sorted((k, ast.dump(t)) for k, t in trees.items())
    return hashlib.sha1(json.dumps([code, settings, extra], default=str).encode()).hexdigest()[:12]


def code_of(objs: list) -> dict:
    """Syntax trees of objs and, transitively, of every function or class of this repository they
    name as x or module.x. Dataclasses (settings) count by their values, not their code."""
    trees, todo = {}, list(objs)
    while todo:
        if (obj := todo.pop()).__qualname__ in trees:
            continue
        trees[obj.__qualname__] = tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
        names = vars(sys.modules[obj.__module__])
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                ref = names.get(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                ref = getattr(names.get(node.value.id), node.attr, None)  # module.x
            else:
                continue
            if callable(ref) and not dataclasses.is_dataclass(ref) and _ours(ref):
                todo.append(ref)
    return trees


def _ours(obj) -> bool:
    """Whether obj is defined in this repository's own code (not in a library)."""
    try:
        path = Path(inspect.getsourcefile(obj)).resolve()
    except TypeError:  # built-in
        return False
    return path.is_relative_to(ROOT) and "site-packages" not in path.parts


def git_commit(folder: str | os.PathLike = ROOT) -> str | None:
    """`git describe --always --dirty` of the repository (-dirty: edited since that commit), or None
    where there is no git or no repository."""
    git = ["git", "-C", str(folder), "describe", "--always", "--dirty"]
    try:
        return subprocess.run(git, capture_output=True, text=True).stdout.strip() or None
    except OSError:  # no git here
        return None


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what the platform module knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(x.split(":", 1)[1].strip() for x in lines if x.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine() or "?"


def fail(message: str):
    """Bad input: "error: message" as one line on stderr, then exit code 2 (no traceback)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def one_line_errors(parser: argparse.ArgumentParser, hint: str = "") -> argparse.ArgumentParser:
    """parser, its errors (and parser.error's callers') one line by fail, not argparse's usage
    block; hint ends each message (the driver's: " (see --help)")."""
    parser.error = lambda message: fail(message + hint)
    return parser
