"""Full-size radiographs: the shortcuts that keep a 2048² image fast give what the plain full-grid computations give
(anti-aliased network input, bilinear resampling, mask upsampling, hole filling, regions found on a work grid and
traced at full size, the lung closing under a foreign object). Timings are in test_bench.py (``make bench``)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from scanai.chest.detection import (
    Box,
    Found,
    detections_from_masks,
    fill_mask_holes,
    objects_from_probability,
    resample_linear,
    upsample_mask,
)
from scanai.chest.measurements import lungs_under_object
from scanai.chest.network import objects_from_logits, resize_antialiased, work_stride


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale: float = 6.0) -> np.ndarray:
    """A smooth random (rows, cols) field with values of a few units either side of 0 (logit-like)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    return scale * field / field.std()


@pytest.mark.parametrize("shape", [(2048, 1536), (1024, 1024), (300, 200), (100, 1500), (256, 256)])
def test_resize_antialiased_is_the_gaussian_then_linear_zoom(rng, shape):
    image = ndimage.gaussian_filter(rng.uniform(0, 4000, shape), 1.0)
    factors = (256 / shape[0], 256 / shape[1])
    smooth = image
    if min(factors) < 1.0:
        smooth = ndimage.gaussian_filter(image, [max(0.0, 0.5 / f - 0.5) for f in factors])
    reference = ndimage.zoom(smooth, factors, order=1, grid_mode=True, mode="nearest")
    np.testing.assert_allclose(resize_antialiased(image, 256), reference, rtol=0, atol=1e-9 * float(image.max()))


def test_resample_linear_matches_torch_bilinear_and_any_box_of_it(rng):
    torch = pytest.importorskip("torch")
    grid = rng.standard_normal((3, 16, 20)).astype(np.float32)
    shape = (70, 93)
    full = resample_linear(grid, shape, np.arange(shape[0]), np.arange(shape[1]))
    reference = torch.nn.functional.interpolate(torch.from_numpy(grid)[None], size=shape, mode="bilinear",
                                                align_corners=False)[0].numpy()
    np.testing.assert_allclose(full, reference, atol=1e-5)
    rows, cols = np.arange(11, 40), np.arange(0, 93, 3)
    np.testing.assert_array_equal(resample_linear(grid, shape, rows, cols), full[:, rows][:, :, cols])


@pytest.mark.parametrize(("coarse", "fine"), [((256, 256), (2048, 2048)), ((257, 300), (2050, 2400)),
                                              ((50, 60), (333, 777)), ((64, 64), (64, 64))])
def test_upsample_mask_is_the_thresholded_linear_zoom(rng, coarse, fine):
    mask = ndimage.gaussian_filter(rng.random(coarse), 3.0) > 0.5
    zoomed = ndimage.zoom(mask.astype(np.float32), (fine[0] / coarse[0], fine[1] / coarse[1]), order=1,
                          mode="nearest", grid_mode=True)
    np.testing.assert_array_equal(upsample_mask(mask, fine), zoomed[: fine[0], : fine[1]] > 0.5)


def test_fill_mask_holes_is_scipy_fill_holes(rng):
    for _ in range(50):
        shape = tuple(int(n) for n in rng.integers(3, 90, 2))
        mask = ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.5
        np.testing.assert_array_equal(fill_mask_holes(mask), ndimage.binary_fill_holes(mask))
    np.testing.assert_array_equal(fill_mask_holes(np.ones((5, 5), bool)), np.ones((5, 5), bool))


def _same(found: list[Found], expected: list[Found]) -> None:
    assert [f.box for f in found] == [e.box for e in expected]
    for f, e in zip(found, expected, strict=True):
        np.testing.assert_array_equal(f.mask, e.mask)
        assert f.confidence == pytest.approx(e.confidence, abs=1e-5)


@pytest.mark.parametrize("shape", [(1100, 900), (2048, 2048), (300, 200)])
def test_regions_from_logits_are_those_of_the_full_size_probability(rng, shape):
    logits = _smooth_field(rng, (64, 64)) - 1.0
    probability = 1.0 / (1.0 + np.exp(-resample_linear(logits, shape, np.arange(shape[0]), np.arange(shape[1]))))
    assert work_stride(shape) == (1 if max(shape) <= 512 else -(-max(shape) // 512))
    for threshold, min_pixels, keep, fill in ((0.5, 1, 1, True), (0.3, 20, None, False), (0.5, 2000, None, False)):
        found = objects_from_logits("x", logits, shape, threshold, min_pixels, keep, fill)
        assert found
        _same(found, objects_from_probability("x", probability, threshold, min_pixels, keep, fill))


def test_lung_closing_over_an_object_box_is_the_full_closing_there(rng):
    shape = (300, 260)
    right = ndimage.gaussian_filter(rng.random(shape), 6.0) > 0.5
    right[:, 130:] = False
    left = np.zeros(shape, bool)
    left[40:260, 150:250] = True
    left[100:130, 150:190] = False  # a dent
    detections = detections_from_masks({"lung_right": right, "lung_left": left})
    for top, left_col, size in ((100, 150, 30), (0, 0, 12), (280, 240, 20), (150, 100, 45)):
        box = Box(top, left_col, min(shape[0], top + size), min(shape[1], left_col + size))
        found = Found("foreign_object", np.zeros(shape, bool), box, 0.9)
        window = (slice(box.top, box.bottom), slice(box.left, box.right))
        full = lungs_under_object(detections, found)
        only = lungs_under_object(detections, found, box)
        np.testing.assert_array_equal(only[window], full[window])
        assert not only.any() or only[window].sum() == only.sum()
