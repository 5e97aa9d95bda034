"""Shared set-up of the test suite: the tests folder on sys.path (for ``import reference``) and a seed per test."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import reference` under any --import-mode


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same global RNG state, so a failure reproduces when run alone."""
    torch.manual_seed(0)
    yield
