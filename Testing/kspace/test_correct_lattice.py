"""The correction of accelerated acquisitions: samples on the lattice of acquired lines are re-estimated on it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from scanai.kspace import make_phantom, reconstruct
from scanai.kspace.correct import correct, line_stride
from scanai.kspace.metrics import psnr
from scanai.kspace.prediction import fill_in_place, fit_kernel
from scanai.kspace.simulate import inject_spikes


def accelerated(data: np.ndarray, stride: int, calibration: int) -> np.ndarray:
    """A copy of (coils, slices, ky, kx) k-space with only every ``stride``-th line (DC's among them) and a block of
    ``calibration`` lines about DC acquired."""
    lines = data.shape[2]
    kept = np.arange(lines) % stride == (lines // 2) % stride
    kept[lines // 2 - calibration // 2:lines // 2 + calibration // 2] = True
    out = data.copy()
    out[:, :, ~kept] = 0
    return out


def test_the_line_stride_is_the_acquisitions():
    full = np.ones((64, 32), dtype=bool)
    assert line_stride(full) == 1
    partial_fourier = full.copy()
    partial_fourier[44:] = False
    assert line_stride(partial_fourier) == 1
    for stride, calibration in ((2, 16), (3, 12), (4, 8)):
        mask = accelerated(np.ones((1, 1, 64, 32), dtype=np.complex64), stride, calibration)[0, 0] != 0
        assert line_stride(mask) == stride


def test_accelerated_spikes_are_corrected_on_the_lattice_of_acquired_lines():
    """On a 2x accelerated 8-coil phantom the lattice re-estimation beats the same fill on the whole plane, where a
    sample's neighbours above and below were never acquired, and changes nothing but the flagged samples."""
    case = make_phantom(128, 8, readout_oversampling=1, noise_std=0.002, seed=4).kspace
    clean = accelerated(case.data, 2, 16)
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
