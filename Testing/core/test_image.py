"""A grid mismatch names the field that differs with both values (scanai.core.image.grid_differences)."""

from __future__ import annotations

import numpy as np
import pytest

from scanai.core.errors import GeometryError
from scanai.core.image import Geometry, Volume, VolumeSequence, grid_differences, mask_on_grid

GRID = Geometry((0.7, 0.7, 2.5), (10.0, -5.0, 0.0))


@pytest.mark.parametrize(("other", "words"), [
    (Geometry((0.7, 0.7, 2.5), (11.5, -5.0, 0.0)), "origin (10, -5, 0) mm vs (11.5, -5, 0) mm"),
    (Geometry((0.8, 0.7, 2.5), (10.0, -5.0, 0.0)), "spacing (0.7, 0.7, 2.5) mm vs (0.8, 0.7, 2.5) mm"),
    (Geometry((0.7, 0.7, 2.5), (10.0, -5.0, 0.0), ((0, 1, 0), (1, 0, 0), (0, 0, 1))), "direction ((1, 0, 0),"),
])
def test_the_field_that_differs_is_named_with_both_values(other, words):
    assert words in grid_differences((4, 16, 16), GRID, (4, 16, 16), other)
    assert "size" not in grid_differences((4, 16, 16), GRID, (4, 16, 16), other)
    with pytest.raises(GeometryError, match=words.replace("(", r"\(").replace(")", r"\)")):
        VolumeSequence.from_volumes([Volume(np.zeros((4, 16, 16)), other), Volume(np.zeros((4, 16, 16)), GRID)])


def test_size_and_same_grid():
    assert grid_differences((4, 16, 16), GRID, (4, 16, 16), GRID) == ""
    assert grid_differences((4, 16, 18), None, (4, 16, 16), GRID) == "size (4, 16, 18) vs (4, 16, 16)"
    with pytest.raises(GeometryError, match=r"ROI vs image: size \(4, 16, 18\) vs \(4, 16, 16\)"):
        mask_on_grid(np.ones((4, 16, 18)), (4, 16, 16), GRID, "ROI")
