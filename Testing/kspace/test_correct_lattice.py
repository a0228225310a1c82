"""Accelerated acquisitions: the correction re-estimates samples on the lattice of acquired lines on it, and the
detector does not flag the clean readout neighbours of runs on lines whose neighbours were never acquired."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from scanai.kspace import detect, make_phantom, read_kspace, reconstruct
from scanai.kspace.correct import correct, line_stride
from scanai.kspace.metrics import coil_noise_sigma, psnr
from scanai.kspace.prediction import fill_in_place, fit_kernel
from scanai.kspace.simulate import accelerate, inject_spikes


def test_the_line_stride_is_the_acquisitions():
    full = np.ones((64, 32), dtype=bool)
    assert line_stride(full) == 1
    partial_fourier = full.copy()
    partial_fourier[44:] = False
    assert line_stride(partial_fourier) == 1
    for stride, calibration in ((2, 16), (3, 12), (4, 8)):
        mask = accelerate(np.ones((1, 1, 64, 32), dtype=np.complex64), stride, calibration)[0, 0] != 0
        assert line_stride(mask) == stride


def test_accelerated_spikes_are_corrected_on_the_lattice_of_acquired_lines():
    """On a 2x accelerated 8-coil phantom the lattice re-estimation beats the same fill on the whole plane, where a
    sample's neighbours above and below were never acquired, and changes nothing but the flagged samples."""
    case = make_phantom(128, 8, readout_oversampling=1, noise_std=0.002, seed=4).kspace
    clean = accelerate(case.data, 2, 16)
    reference = reconstruct(replace(case, data=clean)).rss.array
    corrupted, truth = inject_spikes(clean, 20, (0.01, 1.0), seed=5)
    mask = truth.mask(clean.shape[1:])
    assert line_stride(np.any(clean[:, 0] != 0, axis=0)) == 2
    fixed = correct(corrupted, mask)
    changed = np.any(fixed != corrupted, axis=0)
    assert not (changed & ~mask).any()
    whole = corrupted.copy()
    plane, flagged = whole[:, 0], mask[0].copy()
    flagged[64, 64] = False
    acquired = np.any(plane != 0, axis=0)
    fill_in_place(plane, flagged, fit_kernel(plane, acquired & ~flagged))
    gains = [psnr(reference, reconstruct(replace(case, data=data)).rss.array) for data in (fixed, whole)]
    assert gains[0] > gains[1] + 3.0, gains


def test_readout_runs_on_lone_lines_are_flagged_without_their_clean_neighbours(shared_data):
    """On the 32-coil file at R = 2, 20 two-sample readout runs of 30-500 sigma on lines whose neighbours were never
    acquired are found whole, and their clean readout neighbours stay unflagged (at most 2 of 40): the final check
    judges a neighbour with the run re-estimated around its value (5 of 40 were flagged when the run was re-estimated
    together with it)."""
    ks = read_kspace(shared_data / "kspace" / "meas_MID00243_FID33257_pulseq.dat")
    data = accelerate(ks.data, 2, 16)
    coils = data.shape[0]
    sigma = float(np.median(coil_noise_sigma(data)))
    rng = np.random.default_rng(0)
    found = neighbours = 0
    for _ in range(10):
        spiked = data.copy()
        runs = []
        for line in rng.choice(np.arange(2, 22, 2), 2, replace=False):  # lone lines, below the calibration block
            column = int(rng.integers(5, 55))
            for dx in (0, 1):
                gains = rng.normal(size=coils) + 1j * rng.normal(size=coils)
                size = rng.uniform(30, 500) * sigma * np.sqrt(coils)
                spiked[:, 0, line, column + dx] += (size * gains / np.linalg.norm(gains)).astype(np.complex64)
            runs.append((line, column))
        mask = detect(replace(ks, data=spiked)).mask[0]
        for line, column in runs:
            found += int(mask[line, column] and mask[line, column + 1])
            neighbours += int(mask[line, column - 1]) + int(mask[line, column + 2])
    assert found == 20 and neighbours <= 2, (found, neighbours)


def test_a_kernel_fitted_on_few_targets_gets_a_load_of_fixed_strength():
    """Below MIN_TARGETS_PER_COEFFICIENT targets per kernel coefficient (the calibration block of a 32-coil plane
    at R = 2) the detector's Tikhonov load stays that of that many targets; a fully sampled plane, and the
    correction's fit, keep the plain one."""
    from scanai.kspace.prediction import MIN_TARGETS_PER_COEFFICIENT, _normal_equations, stencil

    plane = make_phantom(64, 32, readout_oversampling=1, noise_std=0.002, seed=5).kspace.data[:, 0]
    offsets = stencil(1)
    full = np.ones(plane.shape[1:], dtype=bool)
    rule = MIN_TARGETS_PER_COEFFICIENT
    assert _normal_equations(plane, full, None, 1e-3, 0.98, offsets, rule)[2] == 1e-3  # 62^2 targets, 288 coefficients
    thinned = accelerate(plane[:, None], 2, 16)[:, 0]
    acquired = np.any(thinned != 0, axis=0)
    from scipy.ndimage import binary_erosion

    targets = int(binary_erosion(acquired, np.ones((3, 3), bool), border_value=0).sum())  # every neighbour acquired
    assert targets < MIN_TARGETS_PER_COEFFICIENT * len(offsets) * 32
    expected = 1e-3 * MIN_TARGETS_PER_COEFFICIENT * len(offsets) * 32 / targets
    assert _normal_equations(thinned, acquired, None, 1e-3, 0.98, offsets, rule)[2] == pytest.approx(expected, rel=0.02)
    assert _normal_equations(thinned, acquired, None, 1e-3, 0.98, offsets)[2] == 1e-3  # the correction's fit
