"""pytest fixtures shared by every suite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scanai.core.paths import shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public data folder (../shared/data); tests that need it skip with a reason when it is absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("real data folder ../shared/data is absent (set SCANAI_DATA to point at it)")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261120)
