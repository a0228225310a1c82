"""Spikes near DC, judged in the k-space of the image's background.

Near DC the cross-coil prediction of a sample from its 3 x 3 (or 5 x 5) neighbours (:mod:`scanai.kspace.prediction`)
leaves tens to hundreds of times the noise power on 1-2-coil files (the object's k-space changes faster there than the
neighbours can follow), so a spike of 8-125 sigma per coil is lost in the residual. Here the object is removed
another way: it fills only part of the field of view, and outside it (the *background*) the image holds only noise,
while a spike at ``k0`` (a plane wave) is everywhere. The image of every coil is masked to its background and
transformed back:

    ``B_c = F(bg . F^-1 y_c)``, a spike ``a_c`` at ``k0`` gives ``a_c M(k - k0)`` with ``M = F(bg) / sqrt(N)``,
    ``M(0) = f`` the background's fraction of the field of view, and white noise of power ``sigma_c^2`` gives
    noise of power ``f sigma_c^2``.

``S(k0) = mean_c |B_c(k0)|^2 / (f sigma_c^2)`` is the likelihood-ratio statistic of one spike at ``k0`` when the
object lies inside its mask (signal-to-noise ``|a| sqrt(f) / sigma``); under noise alone it is Gamma(C, 1/C).
What the mask misses of the object (faint tissue, truncation ringing) leaves a smooth or line-shaped residue near
DC: ``S`` is judged against its local level (the largest of three median filters with a hollow centre -- a 9 x 9
square, a 1 x 21 readout line, a 13 x 1 phase-encoding line -- so that a spike's own spread over its closest
neighbours does not raise it, and every strong peak's whole spread is taken out before the level is measured).
Spikes are taken one at a time, strongest first (after any found before, ``known``), and the contributions
``a_c M(k - k0)`` of all found so far, their amplitudes fitted together by least squares, are removed from ``B``
before the next is judged (``M``'s sidelobes would otherwise be flagged); samples within 1.5 of DC (the core) are
removed the same way when they stand out, but flagged only when they tower (``towering``: the core of a clean file
stands out a little, a strong spike there by far). :func:`scanai.kspace.classical.detect_plane` runs it where the
prediction leaves much of the central signal (``NEAR_DC_GATE``, ``NEAR_DC_MAX_COILS`` there), with the spikes its
peeling found near DC as ``known``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: (rows, columns) of the hollow median footprints: full extent and the hole left out around the sample.
_HOLLOW = (((9, 9), (5, 5)), ((1, 21), (1, 5)), ((13, 1), (5, 1)))
_MARGIN = (6, 10)  # half extents of the largest footprint


def _hollow(shape: tuple[int, int], hole: tuple[int, int]) -> np.ndarray:
    footprint = np.ones(shape, dtype=bool)
    top, left = (shape[0] - hole[0]) // 2, (shape[1] - hole[1]) // 2
    footprint[top:top + hole[0], left:left + hole[1]] = False
    return footprint


def object_mask(images: np.ndarray, noise_power: np.ndarray, threshold: float = 2.0, smooth: float = 2.0,
                grow: int = 3, relative: float = 0.05) -> np.ndarray:
    """(ny, nx) bool: where the object is, from complex coil images (coils, ny, nx).

    The root-sum-of-squares image, smoothed by a Gaussian of ``smooth`` pixels, above ``threshold`` times the
    noise's RSS level ``sqrt(sum noise_power)`` and above ``relative`` times its 99th percentile (a strong spike's
    plane wave does not turn the background into object), grown by ``grow`` pixels, holes filled.
    """
    from scipy import ndimage

    rss = np.sqrt(np.sum(images.real ** 2 + images.imag ** 2, axis=0))
    smoothed = ndimage.gaussian_filter(rss, smooth, mode="wrap")
    level = max(threshold * float(np.sqrt(np.sum(noise_power))), relative * float(np.quantile(smoothed, 0.99)))
    inside = ndimage.binary_dilation(smoothed > level, iterations=grow)
    return ndimage.binary_fill_holes(inside)


def _centred_fft(array: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Centred orthonormal 2-D FFT over the last two axes (:func:`scanai.kspace.recon.to_kspace` /
    :func:`~scanai.kspace.recon.to_image`), on two threads: the test runs inside the detector's time budget."""
    import scipy.fft

    transform = scipy.fft.ifft2 if inverse else scipy.fft.fft2
    shifted = scipy.fft.ifftshift(array, axes=(-2, -1))
    return scipy.fft.fftshift(transform(shifted, axes=(-2, -1), norm="ortho", workers=2), axes=(-2, -1))


def _local_level(values: np.ndarray) -> np.ndarray:
    """Largest of the hollow median filters of a (rows, cols) crop (edges repeated: the crop carries a margin)."""
    from scipy.ndimage import median_filter

    level = None
    for shape, hole in _HOLLOW:
        median = median_filter(values, footprint=_hollow(shape, hole), mode="nearest")
        level = median if level is None else np.maximum(level, median)
    return level


class _Background:
    """The background's k-space ``B`` over a crop of a plane, the spread ``M`` of a spike in it, and the statistic.

    rows, cols: the crop's plane indices (periodic); values: (coils, rows, cols) complex128 ``B`` over the crop;
    fraction: ``f``; weights: (coils,) ``1 / (f sigma_c^2)``.
    """

    def __init__(self, images: np.ndarray, background: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                 noise_power: np.ndarray) -> None:
        self.shape = background.shape
        self.rows, self.cols = rows, cols
        self.fraction = float(background.mean())
        self.spread = _centred_fft(background.astype(images.dtype)) / np.sqrt(background.size)  # M, DC centred
        self.values = _centred_fft(images * background)[(slice(None), *np.ix_(rows, cols))].astype(np.complex128)
        self.weights = 1.0 / (self.fraction * noise_power)

    def statistic(self, values: np.ndarray) -> np.ndarray:
        """``S = mean_c |B_c|^2 / (f sigma_c^2)`` of (coils, ...) values."""
        return np.einsum("c...,c->...", values.real ** 2 + values.imag ** 2, self.weights) / len(self.weights)

    def response(self, r: int, c: int) -> np.ndarray:
        """(rows, cols) ``M(k - k0)`` over the crop for a unit spike at crop position (r, c)."""
        ky, kx = self.shape
        return self.spread[np.ix_((self.rows - self.rows[r] + ky // 2) % ky, (self.cols - self.cols[c] + kx // 2) % kx)]

    def amplitudes(self, spikes: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """((n, coils) values ``a_c`` of the spikes at crop positions ``spikes`` in k-space units, fitted together
        by least squares (one spike's spread at another's position would otherwise be left behind as a sidelobe),
        (n, rows, cols) their spreads ``M(k - k0)``)."""
        shapes = np.stack([self.response(r, c) for r, c in spikes])  # (n, rows, cols)
        coupling = np.array([[shape[r, c] for shape in shapes] for r, c in spikes])  # (n, n): M(k_i - k_j)
        observed = np.stack([self.values[:, r, c] for r, c in spikes])  # (n, coils)
        return np.linalg.lstsq(coupling, observed, rcond=None)[0], shapes

    def without(self, spikes: list[tuple[int, int]]) -> np.ndarray:
        """``B`` less the spikes at crop positions ``spikes`` (:meth:`amplitudes`)."""
        amplitudes, shapes = self.amplitudes(spikes)
        return self.values - np.einsum("nc,nhw->chw", amplitudes, shapes)

    def local_level(self, values: np.ndarray, peaks: np.ndarray, strong: float, noise: float) -> np.ndarray:
        """Local level of ``S`` (at least ``noise``, the noise-only median of ``S``) with every peak above
        ``strong`` taken out with its spread (each alone, set to ``noise``): a spike's spread would hide it, most
        where the background is a thin strip and ``M`` is wide."""
        energy = self.statistic(values)
        towering = np.argwhere(peaks & (energy > strong))
        cleaned = values.copy()
        for r, c in towering:
            cleaned -= (cleaned[:, r, c] / self.fraction)[:, None, None] * self.response(r, c)[None]
        rest = self.statistic(cleaned)
        rest[towering[:, 0], towering[:, 1]] = noise
        return np.maximum(_local_level(rest), noise)


def _significance(coils: int, energy: np.ndarray, local: np.ndarray, half: float) -> np.ndarray:
    """-log10 p of ``S`` against its local level under the Gamma(C, 1/C) law (median ``half``)."""
    from scipy.special import gammaincc

    return -np.log10(np.maximum(gammaincc(coils, coils * half * np.asarray(energy) / local), 1e-300))


class CentreSpikes(NamedTuple):
    """What the background test finds: flags (ky, kx) bool; significance (ky, kx) float32 of each flagged sample, 0
    elsewhere; amplitudes {(ky, kx): (coils,) complex128} each flagged spike's estimated value (what it added to
    every coil's sample)."""

    flags: np.ndarray
    significance: np.ndarray
    amplitudes: dict[tuple[int, int], np.ndarray]


def near_centre_spikes(plane: np.ndarray, region: np.ndarray, allowed: np.ndarray, level: float,
                       noise_power: np.ndarray | None = None, min_background: float = 0.05, max_rounds: int = 6,
                       tentative: float = 20.0, towering: float = np.inf, known: np.ndarray | None = None
                       ) -> CentreSpikes:
    """Spikes near DC of a (coils, ky, kx) plane, judged in its background's k-space (see the module docstring).

    region:      (ky, kx) bool, the samples judged (near DC, acquired; DC itself included).
    allowed:     (ky, kx) bool, the samples that may be flagged (``region`` less the core about DC).
    level:       significance (-log10 p of the Gamma(C, 1/C) law) a sample must exceed.
    noise_power: (coils,) noise power ``E|n|^2`` of each coil in the data's units (a file's noise scans), or None:
                 estimated from the outer k-space (:func:`scanai.kspace.metrics.coil_noise_sigma`).
    min_background: below this background fraction of the field of view nothing is judged (no background).
    max_rounds:  rounds of judging and removing; tentative: peaks above this many times the noise level are left
                 out (with their spread) of the local level.
    towering:    significance above which a sample of ``region`` outside ``allowed`` (the core) is flagged all the
                 same (infinite: never); DC itself never is (the one sample the correction never changes).
    known:       (ky, kx) bool or None, spikes already found (by the prediction's peeling): their spread is removed,
                 jointly with every spike found here, before anything is judged, and they are not judged again.
                 Left in, a strong one's residue beside it was flagged (gre.dat, three spikes of 200-320 sigma near
                 DC: 8 false detections).
    The input is not modified.
    """
    from scipy.ndimage import maximum_filter
    from scipy.special import gammaincinv

    from scanai.kspace.metrics import coil_noise_sigma

    coils, ky, kx = plane.shape
    flags = np.zeros((ky, kx), dtype=bool)
    significance = np.zeros((ky, kx), dtype=np.float32)
    if not region.any():
        return CentreSpikes(flags, significance, {})
    if noise_power is None:
        noise_power = coil_noise_sigma(plane[:, np.newaxis, ::4, ::4])[:, 0] ** 2  # every 16th sample is plenty
    noise_power = np.maximum(np.asarray(noise_power, dtype=np.float64), 1e-30)
    images = _centred_fft(plane, inverse=True)
    background = ~object_mask(images, noise_power)
    if background.mean() < min_background:
        return CentreSpikes(flags, significance, {})
    ys, xs = np.nonzero(region)  # a crop around the region, with the footprints' margin (periodic, like k-space)
    rows = np.arange(ys.min() - _MARGIN[0], ys.max() + _MARGIN[0] + 1) % ky
    cols = np.arange(xs.min() - _MARGIN[1], xs.max() + _MARGIN[1] + 1) % kx
    found = _Background(images, background, rows, cols, noise_power)
    half = float(gammaincinv(coils, 0.5) / coils)
    judged, may_flag = region[np.ix_(rows, cols)], allowed[np.ix_(rows, cols)]
    values, spikes, taken = found.values, [], np.zeros(judged.shape, dtype=bool)
    if known is not None and known[np.ix_(rows, cols)].any():
        taken = known[np.ix_(rows, cols)].copy()
        spikes = [(int(r), int(c)) for r, c in np.argwhere(taken)]
        values = found.without(spikes)
    for _ in range(max_rounds):
        energy = found.statistic(values)
        peaks = (energy >= maximum_filter(energy, size=3, mode="nearest")) & judged & ~taken
        local = found.local_level(values, peaks, tentative * half, half)
        candidates = peaks & (_significance(coils, energy, local, half) > level)
        before = len(spikes)
        for r, c in sorted(zip(*np.nonzero(candidates), strict=True), key=lambda rc: -energy[rc]):
            # judged again after the stronger ones were removed: a sidelobe of their spread is no spike
            score = float(_significance(coils, found.statistic(values[:, r, c][:, None]), local[r, c], half)[0])
            if score <= level:
                continue
            spikes.append((int(r), int(c)))
            taken[r, c] = True
            values = found.without(spikes)
            if may_flag[r, c] or (score > towering and (rows[r], cols[c]) != (ky // 2, kx // 2)):
                flags[rows[r], cols[c]] = True
                significance[rows[r], cols[c]] = score
        if len(spikes) == before:
            break
    if not flags.any():
        return CentreSpikes(flags, significance, {})
    estimates = found.amplitudes(spikes)[0]
    return CentreSpikes(flags, significance, {(int(rows[r]), int(cols[c])): estimate
                                              for (r, c), estimate in zip(spikes, estimates, strict=True)
                                              if flags[rows[r], cols[c]]})
