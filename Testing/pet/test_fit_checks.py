"""A fit that looks wrong is said so (scanai.pet.analysis.fit_warning), and the medians leave skipped voxels out."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from scanai.core.image import Volume
from scanai.pet.analysis import _unit_mix_up, compute_maps, fit_warning, fitted_voxels, map_medians
from scanai.pet.input_function import InputFunction
from scanai.pet.phantom import pet_phantom


@pytest.fixture(scope="module")
def fitted():
    """A 2-slice phantom and its Patlak maps with the right input function (air voxels are skipped)."""
    phantom = pet_phantom((2, 12, 12))
    result = compute_maps(phantom.sequence, phantom.timing, phantom.input_function, "patlak", t_star_min=30.0)
    return phantom, result


def _with(result, maps=None, bound_hit=None):
    quality = dict(result.quality)
    if bound_hit is not None:
        quality["bound_hit"] = Volume(bound_hit, result.quality["bound_hit"].geometry)
    return dataclasses.replace(result, maps=maps or result.maps, quality=quality)


def test_a_sound_fit_gets_no_warning_and_medians_over_fitted_voxels(fitted):
    phantom, result = fitted
    assert fit_warning(result, phantom.sequence, phantom.timing, phantom.input_function, "kBq/mL", "kBq/mL") == ""
    body = phantom.labels.array > 0
    np.testing.assert_array_equal(fitted_voxels(result), body)  # air (bound_hit 2) is not fitted
    assert (~body).sum() > 0.3 * body.size
    assert map_medians(result)["Ki"] == pytest.approx(float(np.median(result.maps["Ki"].array[body])))
    assert map_medians(result)["Ki"] > 2 * float(np.median(result.maps["Ki"].array))  # what counting air as 0 gives


def test_most_fitted_voxels_on_a_bound_is_warned(fitted):
    phantom, result = fitted
    flags = np.asarray(result.quality["bound_hit"].array).copy()
    body = np.flatnonzero(flags.reshape(-1) == 0)
    flags.reshape(-1)[body[: int(0.6 * body.size)]] = 1
    text = fit_warning(_with(result, bound_hit=flags), phantom.sequence, phantom.timing, phantom.input_function)
    assert text.startswith("The Patlak fit looks wrong: 60 % of the") and "sit on a fit bound" in text
    flags.reshape(-1)[body] = 0
    flags.reshape(-1)[body[: int(0.4 * body.size)]] = 1
    assert fit_warning(_with(result, bound_hit=flags), phantom.sequence, phantom.timing, phantom.input_function) == ""


def test_a_main_map_zero_almost_everywhere_is_warned(fitted):
    phantom, result = fitted
    maps = dict(result.maps)
    ki = np.asarray(maps["Ki"].array).copy()
    inside = np.flatnonzero(fitted_voxels(result).reshape(-1))
    ki.reshape(-1)[inside[: int(0.95 * inside.size)]] = 0.0
    ki.reshape(-1)[inside[int(0.95 * inside.size):]] = np.nan
    maps["Ki"] = Volume(ki, maps["Ki"].geometry)
    text = fit_warning(_with(result, maps=maps), phantom.sequence, phantom.timing, phantom.input_function)
    assert "the Ki map is zero or undefined in 100 % of the" in text
    assert map_medians(_with(result, maps=maps))["Ki"] == 0.0  # NaN voxels are left out of the median


def test_an_input_in_bq_against_an_image_in_kbq_names_both_units_and_the_factor(fitted):
    phantom, _result = fitted
    blood = InputFunction(phantom.input_function.t_s, phantom.input_function.activity * 1000.0, "Bq/mL")
    result = compute_maps(phantom.sequence, phantom.timing, blood, "patlak", t_star_min=30.0)
    assert not fitted_voxels(result).any() and np.isnan(map_medians(result)["Ki"])
    text = fit_warning(result, phantom.sequence, phantom.timing, blood, "kBq/mL", "")
    assert "none of the 288 voxels inside the mask was fitted" in text
    assert "the image is in kBq/mL and the input function in no stated unit (taken as the image's)" in text
    assert "suggests an input function in Bq/mL against an image in kBq/mL (x1000)" in text


@pytest.mark.parametrize(("ratio", "words"), [(700.0, "in Bq/mL against an image in kBq/mL (x1000)"),
                                              (1 / 800.0, "in kBq/mL against an image in Bq/mL (x1/1000)"),
                                              (2e6, "in Bq/mL against an image in MBq/mL (x1e+06)"),
                                              (3.0, ""), (float("nan"), "")])
def test_unit_mix_up_words(ratio, words):
    assert _unit_mix_up(ratio).endswith(words) if words else _unit_mix_up(ratio) == ""
