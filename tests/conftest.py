"""Shared set-up of the test suite: the tests folder on sys.path (for ``import reference``), a seed per test, and a
session-wide temp dir for processed data (hermetic: nothing is written to ~/.cache, and IMDB / News20 are processed
once per session whichever test needs them first)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from datamodules import files

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import reference` under any --import-mode


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same global RNG state, so a failure reproduces when run alone."""
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session", autouse=True)
def _processed_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GATEZOO_CACHE", os.environ.get("GATEZOO_TEST_CACHE") or str(tmp_path_factory.mktemp("processed")))
        yield


@pytest.fixture(scope="session")
def data() -> Path:
    """The shared data directory (``$GATEZOO_DATA``, else ../shared/data); missing, the tests fail (never skip)."""
    env = os.environ.get(files.ENV_DATA)
    path = Path(env).expanduser().absolute() if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (path / "MANIFEST.md").is_file():
        pytest.fail(f"no shared data at {path}: set ${files.ENV_DATA} to the directory of shared/data/MANIFEST.md")
    return path


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A run's results, checkpoints and W&B files in tmp_path (the current directory there too); the data from
    ``$GATEZOO_DATA``, else ../shared/data."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEZOO_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("GATEZOO_RUNS", str(tmp_path / "runs"))
    if "GATEZOO_DATA" not in os.environ:
        monkeypatch.setenv("GATEZOO_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    return tmp_path
