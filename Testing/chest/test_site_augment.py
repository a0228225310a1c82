"""Site augmentation (scanai.chest.site_augment): shapes, ranges, seeds, collimated masks, markers in background."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from scanai.chest import generator
from scanai.chest.site_augment import (
    SITE_TRANSFORMS,
    burn_in_markers,
    collimate,
    field_of_view,
    marker_stencil,
    portable_ap,
    quantise,
    site_augment,
)
from scanai.chest.train import draw_sample, parse_args

TRANSFORMS = [pytest.param(transform, id=name) for name, transform, _ in SITE_TRANSFORMS]


@pytest.fixture(scope="module")
def chest():
    """A generated chest at 256 x 256: (image, masks of lungs, heart and spine)."""
    phantom = generator.generate_chest(np.random.default_rng(5), 256)
    masks = {name: phantom.masks[name] for name in ("lung_right", "lung_left", "heart", "spine")}
    return phantom.image, masks


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_shapes_ranges_and_inputs_untouched(chest, transform):
    image, masks = chest
    before = image.copy()
    for seed in range(4):
        out, out_masks = transform(image, masks, np.random.default_rng(seed))
        assert out.shape == image.shape and out.dtype == np.float64
        assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
        assert set(out_masks) == set(masks)
        assert all(m.shape == image.shape and m.dtype == bool for m in out_masks.values())
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_same_seed_same_result(chest, transform):
    image, masks = chest
    first = transform(image, masks, np.random.default_rng(11))
    second = transform(image, masks, np.random.default_rng(11))
    np.testing.assert_array_equal(first[0], second[0])
    for name in masks:
        np.testing.assert_array_equal(first[1][name], second[1][name])


def test_site_augment_seeded_and_changes_the_image(chest):
    image, masks = chest
    a = site_augment(image, masks, np.random.default_rng(3), probability=1.0)
    b = site_augment(image, masks, np.random.default_rng(3), probability=1.0)
    np.testing.assert_array_equal(a[0], b[0])
    changed = [not np.allclose(site_augment(image, masks, np.random.default_rng(s), 1.0)[0], image)
               for s in range(6)]
    assert sum(changed) >= 5
    same, same_masks = site_augment(image, masks, np.random.default_rng(3), probability=0.0)
    np.testing.assert_array_equal(same, np.clip(image, 0, 1))
    assert all((same_masks[n] == masks[n]).all() for n in masks)


def test_collimation_cuts_masks_to_the_field(chest):
    image, masks = chest
    for seed in range(8):
        field = field_of_view(image.shape, np.random.default_rng(seed))
        out, cut = collimate(image, masks, np.random.default_rng(seed))
        assert 0.4 < field.mean() < 0.95  # something is cut, most is kept
        for name, mask in masks.items():
            np.testing.assert_array_equal(cut[name], mask & field)
        deep_outside = ~ndimage.binary_dilation(field, iterations=4)
        if deep_outside.any():  # a flat border: dark or bright, barely noisy
            assert out[deep_outside].std() < 0.03


def test_markers_stay_out_of_labelled_objects(chest):
    image, masks = chest
    forbidden = np.logical_or.reduce(list(masks.values()))
    placed = 0
    for seed in range(10):
        stencil = marker_stencil(image.shape, forbidden, np.random.default_rng(seed))
        assert not (stencil & forbidden).any()
        placed += int(stencil.any())
        out, out_masks = burn_in_markers(image, masks, np.random.default_rng(seed))
        changed = out != np.clip(image, 0, 1)
        assert not (changed & forbidden).any()
        assert (out[changed] >= 0.85).all()  # bright burnt-in pixels
        assert all((out_masks[n] == masks[n]).all() for n in masks)  # background: masks unchanged
    assert placed >= 8


def test_markers_not_placed_where_everything_is_labelled():
    forbidden = np.ones((64, 64), dtype=bool)
    assert not marker_stencil((64, 64), forbidden, np.random.default_rng(0)).any()


def test_portable_ap_magnifies_the_heart(chest):
    image, masks = chest
    grown = [portable_ap(image, masks, np.random.default_rng(s))[1]["heart"].sum() / masks["heart"].sum()
             for s in range(5)]
    assert min(grown) > 1.05 and max(grown) < 1.8


def test_quantise_levels(chest):
    image, masks = chest
    counts = [np.unique(quantise(image, masks, np.random.default_rng(s))[0]).size for s in range(8)]
    assert max(counts) <= 4096  # at most 12 bits
    assert min(counts) <= 256  # some draws are coarse (few used codes or a palette)


def test_training_default_is_unchanged():
    """Without --site-augment the draws (and so the shipped weights' training) are exactly as before."""
    assert not parse_args([]).site_augment
    assert parse_args(["--site-augment"]).site_augment
    plain = draw_sample([], np.random.default_rng(4), real_fraction=0.0)
    zero = draw_sample([], np.random.default_rng(4), real_fraction=0.0, site_probability=0.0)
    np.testing.assert_array_equal(plain.image, zero.image)
    site = draw_sample([], np.random.default_rng(4), real_fraction=0.0, site_probability=1.0)
    assert site.image.shape == plain.image.shape and 0.0 <= site.image.min() <= site.image.max() <= 1.0
