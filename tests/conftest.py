"""Fixtures shared by tests/: private Minari folders, small generated data, a driver work folder.

The driver's work folder and the small Hopper sets are made once per session (they take the
longest) and shared by the files that need them. The `slow` marker names the tests that run the
command line or make data; they run by default (`-m "not slow"` leaves them out).
"""

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # dydiff, train_offline, scripts
sys.path.insert(0, str(Path(__file__).resolve().parent))  # support

import minari  # noqa: E402

from scripts import mujoco_dataset as MJ  # noqa: E402
from scripts import pointmaze_dataset as P  # noqa: E402
from support import HOPPER_SMALL, N_STEPS, run_dirs, run_main  # noqa: E402

torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs the command line or makes data (run by default)")


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)
    import numpy as np

    np.random.seed(0)


@pytest.fixture
def datasets_path(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    return tmp_path / "datasets"


@pytest.fixture
def umaze(datasets_path):
    """A small generated umaze dataset, loaded back from disk as a user would."""
    P.generate("umaze", "local/pointmaze/umaze-test-v2", N_STEPS, ref_episodes=5, log=print)
    return minari.load_dataset("local/pointmaze/umaze-test-v2")


@pytest.fixture(scope="session")
def hopper_root(tmp_path_factory):
    """Both local Hopper sets in a private Minari folder: SAC stops at its first evaluation (the
    target is below any return) after 300 steps, 200 of them random warm-up; medium: 400 steps."""
    root = tmp_path_factory.mktemp("hopper")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        MJ.load_or_generate("medium", remake=True, log=lambda m: None, **HOPPER_SMALL)  # not data/
    return root


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    """A private Minari folder, cache and runs folder shared by the driver and benchmark tests."""
    root = tmp_path_factory.mktemp("driver")
    saved = {k: os.environ.get(k) for k in ("MINARI_DATASETS_PATH", "HF_HUB_OFFLINE")}
    os.environ.update(MINARI_DATASETS_PATH=str(root / "datasets"), HF_HUB_OFFLINE="1")
    yield root
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="session")
def dydiff_run(workdir):
    """A smoke DyDiff run of 10 updates whose models are in a cache folder of its own."""
    argv = ("--smoke", "--seed", "21", "--updates", "10", "--eval-every", "10")
    assert run_main(workdir, *argv, cache="cache_run21") == 0
    (run,) = run_dirs(workdir, "dydiff__21")
    return run
