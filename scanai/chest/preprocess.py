"""Intensity normalisation of a radiograph, as the patent describes it (¶0092–0094, Eq. 1 and Eq. 2).

Eq. (1), robust min-max: ``x' = (x - x1) / (x2 - x1)`` with ``x1`` and ``x2`` the 5th and 95th percentiles of
all pixels (¶0093; ``numpy.percentile`` with linear interpolation). The patent does **not** clip, so values
outside [0, 1] survive; ``clip=True`` (our option, not the patent's) clips x' to [0, 1] first.

Eq. (2), standardisation: ``x* = (x' - mu) / sigma`` with the mean and the (population) standard deviation of
x' over all pixels.

Note: without clipping, Eq. (1) is an affine map, so Eq. (1) then Eq. (2) equals a plain z-score of the raw
image; the percentiles change the result only with ``clip=True`` or when Eq. (1) is used alone
(:func:`percentile_rescale`). Every function returns a new float32 volume on the input's grid.
"""

from __future__ import annotations

import numpy as np

from scanai.core.errors import InputError
from scanai.core.image import Volume


def _finite_values(image: Volume) -> np.ndarray:
    """The voxels as float64; InputError when any is NaN or infinite."""
    values = np.asarray(image.array, dtype=np.float64)
    if not np.isfinite(values).all():
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        raise InputError(f"The image has {bad} pixels that are not numbers (NaN or infinite).",
                         "Check the source file; reload or re-export the radiograph.")
    return values


def percentile_window(image: Volume, low_percentile: float = 5.0, high_percentile: float = 95.0
                      ) -> tuple[float, float]:
    """(x1, x2): the ``low_percentile`` and ``high_percentile`` grey values of all pixels (image units).

    Raises InputError for percentiles outside 0 <= low < high <= 100, NaNs, or x1 == x2 (no contrast).
    """
    if not (0.0 <= float(low_percentile) < float(high_percentile) <= 100.0):
        raise InputError(f"The percentiles must satisfy 0 <= low < high <= 100, got {low_percentile} and "
                         f"{high_percentile}.", "Use the defaults 5 and 95 unless you have a reason not to.")
    values = _finite_values(image)
    if float(values.max()) == float(values.min()):
        raise InputError("The image is completely uniform (every pixel has the same value), so it cannot be "
                         "normalised.", "Check that the right file was loaded and that it is not blank.")
    low, high = np.percentile(values, [float(low_percentile), float(high_percentile)])
    if not high > low:
        raise InputError(f"The image has almost no contrast: its {low_percentile}th and {high_percentile}th "
                         f"percentiles are both {low:g}.",
                         "Check that the right file was loaded; a radiograph that is mostly blank cannot be "
                         "assessed.")
    return float(low), float(high)


def percentile_rescale(image: Volume, low_percentile: float = 5.0, high_percentile: float = 95.0,
                       clip: bool = False) -> Volume:
    """Eq. (1): (x - x1) / (x2 - x1) with x1, x2 the given percentiles; dimensionless float32, same grid.

    ``clip=True`` clips the result to [0, 1] (not in the patent).
    """
    low, high = percentile_window(image, low_percentile, high_percentile)
    rescaled = (np.asarray(image.array, dtype=np.float64) - low) / (high - low)
    if clip:
        rescaled = np.clip(rescaled, 0.0, 1.0)
    return image.with_array(rescaled.astype(np.float32))


def standardise(image: Volume) -> Volume:
    """Eq. (2): (x - mean) / std over all pixels (population std); float32, same grid.

    Raises InputError for NaNs or a uniform image.
    """
    values = _finite_values(image)
    sigma = float(values.std())
    if not sigma > 0:
        raise InputError("The image is completely uniform (every pixel has the same value), so it cannot be "
                         "standardised.", "Check that the right file was loaded and that it is not blank.")
    return image.with_array(((values - values.mean()) / sigma).astype(np.float32))


def normalise(image: Volume, low_percentile: float = 5.0, high_percentile: float = 95.0,
              clip: bool = False) -> Volume:
    """The patent's normalisation: Eq. (1) with the given percentiles, then Eq. (2).

    image: (1, rows, cols) or any (k, j, i) volume of raw intensities. Returns a new float32 volume with mean 0
    and standard deviation 1 on the same grid (geometry unchanged). The input is not modified.
    Raises InputError for NaN/infinite pixels, a uniform image or invalid percentiles.
    """
    return standardise(percentile_rescale(image, low_percentile, high_percentile, clip=clip))
