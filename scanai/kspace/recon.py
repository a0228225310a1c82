"""Cartesian reconstruction: coil noise pre-whitening, centred inverse FFT, readout-oversampling removal,
root-sum-of-squares.

Conventions: k-space and images share the trailing axes ``(..., ky, kx)`` / ``(..., y, x)``; k-space is centred
(DC at ``(ky // 2, kx // 2)``) and the image centre is at ``(ny // 2, nx // 2)``. The transforms are orthonormal
(``norm="ortho"``), so Parseval holds: ``sum |k|^2 == sum |image|^2``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from scanai.core.errors import InputError
from scanai.core.image import Geometry, Volume
from scanai.core.progress import Progress
from scanai.kspace.data import KSpaceData, noise_sigma  # noqa: F401  (re-exported)

_AXES = (-2, -1)


def _complex_precision(array: np.ndarray) -> np.ndarray:
    """``array`` as complex64 when it is single precision (or integer), complex128 when double."""
    array = np.asarray(array)
    if array.dtype in (np.float64, np.complex128, np.longdouble, np.clongdouble):
        return array.astype(np.complex128, copy=False)
    return array.astype(np.complex64, copy=False)


def _check_2d(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim < 2 or array.size == 0:
        raise InputError(f"{what} must have at least two axes (..., rows, columns), got shape {array.shape}.")
    return array


def to_image(kspace: np.ndarray) -> np.ndarray:
    """Centred, orthonormal 2-D inverse FFT over the last two axes.

    kspace: complex, shape (..., ky, kx), DC at (ky // 2, kx // 2).
    Returns the complex image, shape (..., ny, nx) = (..., ky, kx), same precision as the input.
    """
    kspace = _complex_precision(_check_2d(kspace, "k-space"))
    shifted = np.fft.ifftshift(kspace, axes=_AXES)
    image = np.fft.ifft2(shifted, axes=_AXES, norm="ortho")
    return np.fft.fftshift(image, axes=_AXES).astype(kspace.dtype, copy=False)


def to_kspace(image: np.ndarray) -> np.ndarray:
    """Centred, orthonormal 2-D forward FFT over the last two axes (the inverse of :func:`to_image`).

    image: shape (..., ny, nx), real or complex. Returns complex k-space (..., ky, kx), DC at (ky // 2, kx // 2).
    """
    image = _complex_precision(_check_2d(image, "The image"))
    shifted = np.fft.ifftshift(image, axes=_AXES)
    kspace = np.fft.fft2(shifted, axes=_AXES, norm="ortho")
    return np.fft.fftshift(kspace, axes=_AXES).astype(image.dtype, copy=False)


def centred_ifft_along(array: np.ndarray, axis: int) -> np.ndarray:
    """Centred, orthonormal 1-D inverse FFT along ``axis`` (e.g. the kz partition axis of a 3-D scan)."""
    array = _complex_precision(array)
    shifted = np.fft.ifftshift(array, axes=axis)
    return np.fft.fftshift(np.fft.ifft(shifted, axis=axis, norm="ortho"), axes=axis).astype(array.dtype, copy=False)


def remove_readout_oversampling(image: np.ndarray, factor: int) -> np.ndarray:
    """Keep the central ``nx / factor`` columns (readout axis, the last one) of an image; returns a copy.

    image:  shape (..., ny, nx), in image space (after :func:`to_image`).
    factor: readout oversampling factor (whole number >= 1 that divides nx). The image centre stays centred:
            the kept columns are ``[nx // 2 - m // 2, nx // 2 - m // 2 + m)`` with ``m = nx / factor``.
    """
    image = _check_2d(image, "The image")
    nx = image.shape[-1]
    if int(factor) != factor or factor < 1 or nx % int(factor):
        raise InputError(f"The readout oversampling factor must be a whole number >= 1 that divides the image "
                         f"width {nx}, got {factor}.")
    keep = nx // int(factor)
    start = nx // 2 - keep // 2
    return image[..., start:start + keep].copy()


def rss(coil_images: np.ndarray, axis: int = 0) -> np.ndarray:
    """Root-sum-of-squares magnitude over the coil axis.

    coil_images: complex or real, shape (coils, ...) (coil axis = ``axis``).
    Returns float32 (or float64 for double input) ``sqrt(sum_c |x_c|^2)``, shape (...).
    """
    coil_images = np.asarray(coil_images)
    if coil_images.ndim < 1 or coil_images.size == 0:
        raise InputError(f"Coil images must be a non-empty array (coils, ...), got shape {coil_images.shape}.")
    power = np.sum(np.abs(coil_images) ** 2, axis=axis)
    double = coil_images.dtype in (np.float64, np.complex128)
    return np.sqrt(power).astype(np.float64 if double else np.float32, copy=False)


def log_magnitude(kspace: np.ndarray, reference: float | None = None) -> np.ndarray:
    """Display map of multi-coil k-space: ``log1p(rss_c |k_c| / reference)``, float32.

    kspace:    complex, shape (coils, ..., ky, kx); the coils are combined by root-sum-of-squares, so a spike
               in any coil shows. Pass ``kspace[np.newaxis]`` for single-coil data.
    reference: magnitude scale; default: the median of the non-zero combined magnitudes (roughly the
               noise-plus-signal level of the k-space periphery). The map is therefore independent of the
               scanner's arbitrary scaling: a typical sample sits near log(2) ~ 0.69 and the centre of
               k-space several units higher. Zero-filled (not acquired) samples map to 0.
    Returns shape (..., ky, kx).
    """
    kspace = _check_2d(kspace, "k-space")
    if kspace.ndim < 3:
        raise InputError(f"log_magnitude expects (coils, ..., ky, kx), got shape {kspace.shape}; "
                         "add a coil axis with kspace[np.newaxis].")
    combined = rss(kspace, axis=0).astype(np.float64)
    if reference is None:
        nonzero = combined[combined > 0]
        reference = float(np.median(nonzero)) if nonzero.size else 1.0
    if not (np.isfinite(reference) and reference > 0):
        raise InputError(f"The reference magnitude must be a positive number, got {reference}.")
    return np.log1p(combined / reference).astype(np.float32)


# --------------------------------------------------------------------------------------------- noise pre-whitening


def noise_covariance(noise: np.ndarray, dwell_ratio: float = 1.0) -> np.ndarray:
    """Coil noise covariance from noise-only samples.

    noise:       complex, shape (coils, samples) or (coils, ...) (all trailing axes are samples): readouts taken
                 with no signal (noise adjustment scans, ISMRMRD noise acquisitions). More samples than coils are
                 needed; a few hundred per coil give a good estimate.
    dwell_ratio: noise dwell time / imaging dwell time. White receiver noise has a variance proportional to the
                 sampling bandwidth (1 / dwell time), so the covariance of the imaging data is the noise scans'
                 times this ratio; 1 when both were sampled alike.
    Returns Psi, complex128 (coils, coils), Hermitian: ``Psi[i, j] = dwell_ratio * mean_s n_i[s] conj(n_j[s])``
    (E|n|^2 convention: a coil whose real and imaginary parts each have variance s^2 has Psi[i, i] = 2 s^2).
    The receiver noise is taken to have zero mean (no mean is subtracted).
    """
    noise = np.asarray(noise)
    if noise.ndim < 2 or noise.size == 0:
        raise InputError(f"Noise samples must be an array (coils, samples), got shape {noise.shape}.")
    if not np.iscomplexobj(noise):
        raise InputError("The noise samples are real numbers; coil noise is complex.",
                         "Pass the complex noise-only readouts (real + 1j * imaginary).")
    samples = noise.reshape(noise.shape[0], -1).astype(np.complex128)
    n_coils, n_samples = samples.shape
    if n_samples <= n_coils:
        raise InputError(f"Only {n_samples} noise samples per coil for {n_coils} coils: the noise covariance "
                         "cannot be estimated from fewer samples than coils.",
                         "Use a file with a longer noise adjustment scan, or read it without pre-whitening.")
    if not np.isfinite(samples).all():
        raise InputError("The noise samples hold NaN or infinite values; the raw data are damaged.",
                         "Re-export the raw data, or read it without pre-whitening.")
    if not (np.isfinite(dwell_ratio) and dwell_ratio > 0):
        raise InputError(f"The dwell-time ratio must be a positive number, got {dwell_ratio}.")
    covariance = samples @ samples.conj().T / n_samples * float(dwell_ratio)
    return 0.5 * (covariance + covariance.conj().T)


def as_noise_covariance(array: np.ndarray) -> np.ndarray:
    """Coil noise covariance Psi (coils, coils), complex128, from a covariance matrix or from noise-only samples.

    array: a square (coils, coils) Hermitian matrix with a real, non-negative diagonal is taken as the covariance
           (E|n|^2 convention, :func:`noise_covariance`); any other array is noise samples, coils first: (coils,
           samples) or (coils, ...), or 1-D (samples,) of a single coil. Samples that are zero in every coil (not
           acquired: zero-filled lines) are left out. Complex noise samples never form a Hermitian square matrix
           (and :func:`noise_covariance` needs more samples than coils), so the two cannot be confused.
    Raises :class:`InputError` for unusable values (see :func:`noise_covariance` and :func:`whitening_matrix`).
    """
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.number) or array.size == 0:
        raise InputError(f"A noise covariance or noise scan must be a non-empty numeric array, got {array.dtype} "
                         f"with shape {array.shape}.", "Save the coils x coils covariance or the complex noise "
                                                       "samples (coils, samples) with numpy.save.")
    if array.ndim == 2 and array.shape[0] == array.shape[1] and np.isfinite(array).all():
        diagonal = np.diagonal(array)
        scale = float(np.abs(array).max())
        hermitian = np.allclose(array, np.conj(array.T), rtol=1e-6, atol=1e-9 * scale)
        if hermitian and np.all(diagonal.real >= 0) and np.allclose(diagonal.imag, 0, atol=1e-9 * scale):
            whitening_matrix(array)  # refuses one that is not positive definite, with the reason
            return np.array(array, dtype=np.complex128)
    samples = array.reshape(1, -1) if array.ndim == 1 else array.reshape(array.shape[0], -1)
    return noise_covariance(samples[:, np.any(samples != 0, axis=0)])


def whitening_matrix(covariance: np.ndarray) -> np.ndarray:
    """W = L^-1 with Psi = L L^H (Cholesky), complex128 (coils, coils), lower triangular.

    Applying W across coils (``W @ data``) turns noise of covariance Psi into uncorrelated noise with
    E|n|^2 = 1 per coil (covariance = identity). Raises :class:`InputError` when Psi is not a square, Hermitian,
    positive definite matrix (e.g. a dead channel that carries no noise).
    """
    covariance = np.asarray(covariance, dtype=np.complex128)
    if covariance.ndim != 2 or covariance.shape[0] != covariance.shape[1] or covariance.shape[0] == 0:
        raise InputError(f"A noise covariance must be a square (coils, coils) matrix, got shape {covariance.shape}.")
    scale = float(np.abs(covariance).max()) if covariance.size else 0.0
    if not np.isfinite(covariance).all() or scale == 0.0:
        raise InputError("The noise covariance is zero or holds NaN/infinite values: the noise samples are unusable.",
                         "Read the file without pre-whitening.")
    if not np.allclose(covariance, covariance.conj().T, rtol=1e-6, atol=1e-9 * scale):
        raise InputError("The noise covariance is not Hermitian (Psi != Psi^H), so it cannot describe coil noise.",
                         "Estimate it with noise_covariance() from noise-only samples.")
    try:
        lower = np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError as error:
        weak = int(np.argmin(np.real(np.diag(covariance))))
        raise InputError(f"The noise covariance is not positive definite: some coils' noise is (nearly) zero or "
                         f"fully correlated with other coils (weakest: coil {weak}).",
                         "Check the coil channels (a dead or duplicated channel), or read without pre-whitening."
                         ) from error
    import scipy.linalg

    return scipy.linalg.solve_triangular(lower, np.eye(covariance.shape[0]), lower=True)


def prewhiten(data: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    """Whitened copy of multi-coil data: ``out[c] = sum_d W[c, d] data[d]`` with W = :func:`whitening_matrix`.

    data:       complex, shape (coils, ...) (k-space (coils, slices, ky, kx), noise samples (coils, samples), ...).
    covariance: coil noise covariance Psi (coils, coils), e.g. from :func:`noise_covariance`.
    Returns an array of the same shape and precision (complex64 stays complex64); the input is not modified.
    Afterwards the coil noise is uncorrelated with unit variance (E|n|^2 = 1), so the data are in units of the
    noise standard deviation.
    """
    data = _complex_precision(np.asarray(data))
    if data.ndim < 1 or data.size == 0:
        raise InputError(f"Data to pre-whiten must be a non-empty array (coils, ...), got shape {data.shape}.")
    weights = whitening_matrix(covariance)
    if weights.shape[0] != data.shape[0]:
        raise InputError(f"The noise covariance describes {weights.shape[0]} coils but the data have "
                         f"{data.shape[0]}.", "Use the noise samples of the same acquisition.")
    flat = data.reshape(data.shape[0], -1)
    return (weights.astype(data.dtype) @ flat).reshape(data.shape)


def prewhiten_kspace(ks: KSpaceData, covariance: np.ndarray | None = None) -> KSpaceData:
    """A pre-whitened copy of ``ks`` (``data`` and ``frames``), using ``covariance`` or ``ks.noise_covariance``.

    The result keeps ``noise_covariance`` (the estimate that was used) and records ``metadata["prewhitened"] =
    True``. Raises :class:`InputError` when no covariance is known (the file had no noise-only samples) or the
    data were already pre-whitened.
    """
    if ks.metadata.get("prewhitened"):
        raise InputError(f"{ks.source or 'The k-space'} is already pre-whitened.", "Whiten it only once.")
    covariance = ks.noise_covariance if covariance is None else np.asarray(covariance, dtype=np.complex128)
    if covariance is None:
        raise InputError(f"{ks.source or 'The k-space'} carries no noise-only samples (no noise adjustment scan "
                         "or noise acquisition), so the coil noise covariance is unknown and the data cannot be "
                         "pre-whitened.",
                         "Give a noise scan or a noise covariance (coils x coils .npy) with --noise FILE (in Python: "
                         "read_kspace(path, noise=...)), or read the file without pre-whitening.")
    frames = None if ks.frames is None else np.ascontiguousarray(
        prewhiten(ks.frames.swapaxes(0, 2), covariance).swapaxes(0, 2))
    data = frames[0, 0] if frames is not None else prewhiten(ks.data, covariance)
    metadata = {**ks.metadata, "prewhitened": True}
    return replace(ks, data=data, frames=frames, noise_covariance=covariance, metadata=metadata)


@dataclass(frozen=True)
class KSpaceImages:
    """What :func:`reconstruct` makes from one :class:`KSpaceData`.

    rss:        root-sum-of-squares magnitude image, Volume array (slices, ny, nx), ny = ky, nx = kx / oversampling,
                float32, geometry spacing = ``KSpaceData.spacing_mm``, origin 0, identity directions
                (i = readout, j = phase encoding, k = slice; the scanner's patient orientation is not applied).
    log_kspace: :func:`log_magnitude` of the k-space, Volume array (slices, ky, kx) (full readout, oversampling
                included), float32, unit spacing (one voxel per k-space sample), origin 0, identity directions.
    """

    rss: Volume
    log_kspace: Volume


def reconstruct(ks: KSpaceData, progress: Progress | None = None) -> KSpaceImages:
    """Root-sum-of-squares image and log-magnitude k-space of ``ks``, slice by slice.

    Each slice: centred inverse FFT per coil (:func:`to_image`), central crop of the readout oversampling
    (:func:`remove_readout_oversampling`), root-sum-of-squares over coils (:func:`rss`). For 3-D data
    (``ks.slices_are_kz``) the partition axis is inverse-Fourier-transformed first. Zero-filled lines are
    reconstructed as zeros (no partial-Fourier or parallel-imaging reconstruction).
    """
    progress = Progress.ensure(progress)
    data = ks.data
    progress(0.0, "Preparing k-space")
    log_kspace = log_magnitude(data)
    if ks.slices_are_kz:
        data = centred_ifft_along(data, axis=1)
    images = []
    for index, _ in progress.sub(0.05, 1.0).iterate(range(ks.n_slices), "Reconstructing slice"):
        coil_images = remove_readout_oversampling(to_image(data[:, index]), ks.readout_oversampling)
        images.append(rss(coil_images, axis=0))
    image = np.stack(images).astype(np.float32)
    return KSpaceImages(rss=Volume(image, Geometry(spacing_mm=ks.spacing_mm)), log_kspace=Volume(log_kspace))


def otsu_threshold(image: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a magnitude image (the level that best splits it into two intensity classes)."""
    values = np.asarray(image, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0 or values.max() <= values.min():
        raise InputError("The image is empty or constant: no object can be separated from the background.")
    counts, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def image_stats(image: np.ndarray) -> dict[str, float]:
    """Simple quality numbers of a magnitude image (any shape), split at :func:`otsu_threshold`.

    Returns ``max``, ``object_mean``, ``background_mean``, ``object_fraction`` (share of pixels above the
    threshold) and ``object_background_ratio`` (object mean / background mean: high for a visible object on a
    dark, noise-only background).
    """
    values = np.asarray(image, dtype=np.float64)
    threshold = otsu_threshold(values)
    inside = values > threshold
    object_mean = float(values[inside].mean())
    background_mean = float(values[~inside].mean()) if (~inside).any() else 0.0
    return {
        "max": float(values.max()),
        "object_mean": object_mean,
        "background_mean": background_mean,
        "object_fraction": float(inside.mean()),
        "object_background_ratio": object_mean / background_mean if background_mean > 0 else float("inf"),
    }
