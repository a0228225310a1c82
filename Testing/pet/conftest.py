"""Fixtures the PET suites share."""

from __future__ import annotations

import pytest

from scanai.pet.input_function import InputFunction


@pytest.fixture(scope="module")
def feng() -> InputFunction:
    """Feng's plasma input function sampled every second for an hour (the reference input of the PET tests)."""
    return InputFunction.feng(end_s=3601.0, step_s=1.0)
