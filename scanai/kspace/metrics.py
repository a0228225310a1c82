"""Evaluation of spike detection and correction against a known ground truth (NumPy/SciPy only).

Point level: a detection counts when it is exactly the corrupted sample (slice, ky, kx); negatives are all
other *acquired* samples. Image level: PSNR and SSIM of root-sum-of-squares images against the clean reference.
"""

from __future__ import annotations

import numpy as np

from scanai.core.errors import InputError

# Amplitude bins relative to the slice's max RSS |k| (as in scanai.kspace.simulate): weak, medium, strong.
AMPLITUDE_BINS: tuple[tuple[float, float], ...] = ((0.005, 0.02), (0.02, 0.1), (0.1, 1.0))


def _same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise InputError(f"{what}: shapes {a.shape} and {b.shape} differ.")


def matthews(tp: float, fp: float, fn: float, tn: float) -> float:
    """Matthews correlation coefficient of confusion counts (they may be expectations); NaN when a margin is 0."""
    denominator = float(np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    return float((tp * tn - fp * fn) / denominator) if denominator > 0 else float("nan")


def point_metrics(truth: np.ndarray, detected: np.ndarray, acquired: np.ndarray | None = None) -> dict[str, float]:
    """Per-sample confusion counts and rates of a detection mask against the ground-truth mask.

    truth, detected: bool arrays of one shape (e.g. (slices, ky, kx)). acquired: bool, same shape; samples
    outside it are ignored (default: all). Returns tp, fp, fn, tn, sensitivity (recall), specificity,
    precision and the Matthews correlation coefficient (mcc); a rate with an empty denominator is NaN.
    """
    truth, detected = np.asarray(truth, bool), np.asarray(detected, bool)
    _same_shape(truth, detected, "Ground truth and detection")
    keep = np.ones(truth.shape, bool) if acquired is None else np.asarray(acquired, bool)
    t, d = truth[keep], detected[keep]
    tp = float(np.count_nonzero(t & d))
    fp = float(np.count_nonzero(~t & d))
    fn = float(np.count_nonzero(t & ~d))
    tn = float(np.count_nonzero(~t & ~d))

    def ratio(numerator: float, denominator: float) -> float:
        return numerator / denominator if denominator > 0 else float("nan")

    return {
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "precision": ratio(tp, tp + fp),
        "mcc": matthews(tp, fp, fn, tn),
    }


def amplitude_bin(amplitude: np.ndarray, bins: tuple[tuple[float, float], ...] = AMPLITUDE_BINS) -> np.ndarray:
    """Index of the bin of each relative amplitude (-1 outside every bin); bins are [low, high)."""
    amplitude = np.asarray(amplitude, dtype=float)
    index = np.full(amplitude.shape, -1, dtype=int)
    for number, (low, high) in enumerate(bins):
        index[(amplitude >= low) & ((amplitude < high) | ((high == bins[-1][1]) & (amplitude <= high)))] = number
    return index


def sensitivity_by_bin(truth_slice: np.ndarray, truth_ky: np.ndarray, truth_kx: np.ndarray,
                       truth_amplitude: np.ndarray, detected: np.ndarray,
                       bins: tuple[tuple[float, float], ...] = AMPLITUDE_BINS) -> list[tuple[int, int]]:
    """(detected, total) spike samples per amplitude bin; ``detected`` is the (slices, ky, kx) mask."""
    hit = np.asarray(detected, bool)[truth_slice, truth_ky, truth_kx]
    index = amplitude_bin(truth_amplitude, bins)
    return [(int(np.count_nonzero(hit & (index == b))), int(np.count_nonzero(index == b))) for b in range(len(bins))]


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB: ``20 log10(max(reference) / RMSE)`` (inf for identical images)."""
    reference, image = np.asarray(reference, np.float64), np.asarray(image, np.float64)
    _same_shape(reference, image, "PSNR images")
    rmse = float(np.sqrt(np.mean((reference - image) ** 2)))
    peak = float(reference.max())
    if rmse == 0:
        return float("inf")
    return 20.0 * np.log10(peak / rmse) if peak > 0 else float("-inf")


def ssim(reference: np.ndarray, image: np.ndarray, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> float:
    """Mean structural similarity of two images (2-D, or stacks of 2-D slices (..., ny, nx)).

    Gaussian window of standard deviation ``sigma`` pixels over the last two axes, constants ``(k1 L)^2`` and
    ``(k2 L)^2`` with ``L = max(reference)`` (Wang et al. 2004).
    """
    from scipy.ndimage import gaussian_filter

    reference, image = np.asarray(reference, np.float64), np.asarray(image, np.float64)
    _same_shape(reference, image, "SSIM images")
    if reference.ndim < 2:
        raise InputError(f"SSIM needs images of at least 2 dimensions, got shape {reference.shape}.")
    sigmas = (0.0,) * (reference.ndim - 2) + (sigma, sigma)
    level = float(reference.max()) or 1.0
    c1, c2 = (k1 * level) ** 2, (k2 * level) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return gaussian_filter(x, sigmas, mode="reflect", truncate=3.5)

    mu_x, mu_y = blur(reference), blur(image)
    var_x = blur(reference * reference) - mu_x ** 2
    var_y = blur(image * image) - mu_y ** 2
    cov = blur(reference * image) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)
    return float(np.mean(numerator / denominator))


def ideal_sensitivity(kspace: np.ndarray, amplitude_range: tuple[float, float], specificity: float = 0.9995
                      ) -> float:
    """Sensitivity an oracle detector would reach on spikes of log-uniform size in ``amplitude_range``.

    kspace: clean complex (coils, slices, ky, kx). Amplitudes are relative to each slice's max RSS |k|, as in
    :func:`scanai.kspace.simulate.inject_spikes`. The oracle knows the clean signal and each coil's noise power,
    so a spike's only disguise is the noise at its own sample: it tests ``2 sum_c |s_c + n_c|^2 / sigma_c^2``
    against the chi-square law of ``2 coils`` degrees of freedom at the false-positive rate ``1 - specificity``
    (a non-central chi-square once a spike is present). ``sigma_c^2`` is the power the cross-coil prediction
    leaves in coil ``c`` divided by the prediction's white-noise gain ``1 + ||w_c||^2``: the thermal noise if all
    of the signal were predicted and the noise white. The figure estimates the ceiling of any detector that
    judges sample by sample (it is optimistic where the prediction leaves signal behind).
    Returns the mean over slices and over 400 amplitudes.
    """
    from scipy.stats import chi2, ncx2

    from scanai.kspace.prediction import acquired_mask, fit_kernel, predict

    data = np.asarray(kspace)
    coils = data.shape[0]
    amplitudes = np.exp(np.linspace(np.log(amplitude_range[0]), np.log(amplitude_range[1]), 400))
    level = chi2.isf(1.0 - specificity, 2 * coils)
    values = []
    for index in range(data.shape[1]):
        plane = data[:, index]
        acquired = acquired_mask(plane)
        kernel = fit_kernel(plane, acquired)
        power = np.abs(plane - predict(plane, kernel)) ** 2
        noise = np.median(power[:, acquired], axis=1) / np.log(2.0) / (1.0 + np.sum(np.abs(kernel) ** 2, axis=0))
        peak = np.sqrt(np.sum(np.abs(plane) ** 2, axis=0)).max()
        centrality = 2.0 * (amplitudes * peak) ** 2 * np.mean(1.0 / noise)
        values.append(float(np.mean(ncx2.sf(level, 2 * coils, centrality))))
    return float(np.mean(values))


#: Per-coil signal-to-noise bins of spikes (|spike| / sigma of the coil's noise, median over coils): the targets.
SNR_BINS: tuple[tuple[float, float], ...] = ((0.0, 3.0), (3.0, 5.0), (5.0, float("inf")))


def coil_noise_sigma(kspace: np.ndarray, noise_covariance: np.ndarray | None = None, outer: float = 0.8
                     ) -> np.ndarray:
    """(coils, slices) noise standard deviation of each coil (complex: ``sqrt(E|n|^2)``), in the data's units.

    From ``noise_covariance`` (coils, coils) when the file has noise scans (the same for every slice), else from
    the outer k-space: acquired samples beyond ``outer`` of the elliptical radius (1 at the middle of each
    border), where the signal has died away, as ``sqrt(median |k|^2 / ln 2)`` (the median of an exponential law).
    """
    data = np.asarray(kspace)
    coils, slices, ky, kx = data.shape
    if noise_covariance is not None:
        sigma = np.sqrt(np.abs(np.diag(np.asarray(noise_covariance))))
        return np.repeat(sigma[:, None], slices, axis=1)
    yy, xx = np.ogrid[:ky, :kx]
    radius = np.hypot((yy - ky // 2) / (ky / 2), (xx - kx // 2) / (kx / 2))
    sigma = np.zeros((coils, slices))
    for index in range(slices):
        plane = data[:, index]
        region = (radius > outer) & np.any(plane != 0, axis=0)
        if region.sum() < 16:  # small or zero-filled periphery: the outermost quarter of what was acquired
            acquired = np.any(plane != 0, axis=0)
            region = acquired & (radius >= np.quantile(radius[acquired], 0.75))
        power = np.abs(plane[:, region]) ** 2
        sigma[:, index] = np.sqrt(np.median(power, axis=1) / np.log(2.0))
    return sigma


def spike_values(kspace: np.ndarray, truth) -> np.ndarray:  # noqa: ANN001 - a SpikeSet
    """(n, coils) complex value added to each coil at each injected spike sample, in the data's units.

    kspace: the *clean* (coils, slices, ky, kx) array the spikes were added to (its slice maxima scale them, as
    in :func:`scanai.kspace.simulate.inject_spikes`); truth: the :class:`~scanai.kspace.simulate.SpikeSet`.
    """
    data = np.asarray(kspace)
    slice_max = np.sqrt((np.abs(data) ** 2).sum(axis=0)).reshape(data.shape[1], -1).max(axis=1)
    return truth.gains * (truth.amplitude * slice_max[truth.slice])[:, None]


def spike_snr(kspace: np.ndarray, truth, sigma: np.ndarray) -> np.ndarray:  # noqa: ANN001 - a SpikeSet
    """(n,) per-coil SNR of each injected spike sample: ``median_c |added_c| / sigma_c``.

    kspace, truth: as in :func:`spike_values`; sigma: (coils, slices) from :func:`coil_noise_sigma`.
    """
    added = np.abs(spike_values(kspace, truth))
    return np.median(added / np.maximum(sigma[:, truth.slice].T, 1e-30), axis=1)


def oracle_detection_probability(added: np.ndarray, sigma: np.ndarray, false_rate: float) -> np.ndarray:
    """(n,) probability that an oracle finds each spike sample, at ``false_rate`` false detections per clean sample.

    added: (n, coils) complex spike values (:func:`spike_values`); sigma: (n, coils) each coil's noise standard
    deviation at the sample (complex, ``sqrt(E|n|^2)``, white and independent across coils). The oracle knows the
    noise-free signal, so it tests ``sum_c 2 |a_c + n_c|^2 / sigma_c^2`` against the chi-square law of ``2 coils``
    degrees of freedom: the most powerful test of one sample that knows nothing of the spike's coil pattern.
    What no detector can exceed sample by sample; a real one must also predict the signal from its neighbours.
    """
    from scipy.stats import chi2, ncx2

    added = np.asarray(added)
    dof = 2 * added.shape[1]
    centrality = np.sum(2.0 * np.abs(added) ** 2 / np.maximum(np.asarray(sigma), 1e-30) ** 2, axis=1)
    return ncx2.sf(chi2.isf(false_rate, dof), dof, centrality)
