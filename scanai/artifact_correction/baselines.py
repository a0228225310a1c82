"""Classical (non-learnt) baselines for multi-phase cardiac motion-artifact correction (digest §7.2).

All functions take **phase volumes** in HU: ``phases_hu`` is an array (N, K, J, I) of N phase volumes ranked in
chronological (ascending-phase) order on one grid, or (N, H, W) for single slices; one phase volume is (K, J, I)
(or (H, W)). ``K == 1`` is a 2-D slice. ``spacing_mm`` is the voxel size along (i, j, k) (or (i, j)) in mm.
Results have the shape of one phase volume and are new arrays (inputs are never modified).

* :func:`best_phase` — the ¶51 "traditional" approach 1: the phase volume with the least image-based motion
  amplitude (¶56, :func:`scanai.artifact_correction.windows.image_motion_amplitude`), unchanged.
* :func:`plain_mean` — the trivial reference: the mean of the two inner phase volumes (the middle one for odd N),
  no registration. The lower bound that any correction must beat.
* :func:`halfway_warp` — the between-phase output (claims 11/16): register one phase volume to the other
  (symmetric-forces demons), move each of them half way along the correspondence and average.
* :func:`registration_fusion` — motion-compensated fusion (the ¶51/¶78 "trajectory" approach): every phase volume
  is registered to an estimate at the centre time (the half-way image of the two inner phases for even N, the
  middle phase for odd N), warped onto it and averaged, which also averages down noise.

Registration is noise-aware multi-resolution symmetric-forces demons (SimpleITK) in the grid's own axis frame
(voxel axes scaled by the spacing): 2-D for one slice, 3-D for at least 4 slices, slice by slice for 2-3 slices;
phase volumes of more than :data:`SLAB_VOXELS` voxels in overlapping slabs of slices (bounded memory).
Plain demons fits noise: in flat regions its update does not shrink with the noise amplitude, so a noisy CT
phase volume pulls spurious sub-pixel deformations everywhere. Here voxels whose phase volumes differ by less
than a multiple of the noise level (estimated from the phase volumes themselves, robustly) exert no force, so
only real structure moves the field. Displacements are pull-back fields (convention of
:mod:`scanai.motion.registration`): ``fixed(x) ~ moving(x + u(x))``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from scanai.core.errors import InputError, with_defaults
from scanai.core.progress import Progress
from scanai.motion.registration import axis_image, demons_pair, visiting_order

#: Demons settings of the baselines; callers may override any of them through ``**registration_options``.
BASELINE_DEMONS: dict[str, Any] = {
    "iterations": 100,  # per resolution level
    "shrink_factors": (4, 2, 1),  # pyramid, coarse to fine (never below 8 voxels along an axis)
    "field_sigma_px": 1.5,  # Gaussian smoothing of the displacement field (elastic regularisation), pixels
    "noise_threshold": 2.5,  # voxels differing by less than this many noise standard deviations exert no force
    "max_step_px": 0.5,  # largest update per iteration, pixels
}

#: Fixed-point iterations used to invert the half-way map (converges when the field's gradient is below 2).
_HALFWAY_ITERATIONS = 8

#: Most voxels per phase volume registered in one piece: demons and the warps take about 400 bytes per voxel (a
#: 512 x 512 x 250 cardiac CT in one piece would need about 25 GB), so larger phase volumes are registered in slabs
#: of slices (about 3 GB of working memory at this size).
SLAB_VOXELS = 8_000_000
#: Slices a slab shares with each neighbour: registered with it, then cut off (only the slab's own slices are kept).
SLAB_MARGIN = 4


# ----------------------------------------------------------------------------------------------- validation


def _as_phases(phases_hu: np.ndarray, what: str = "phase volumes") -> tuple[np.ndarray, bool]:
    """Checked float64 copy (N, K, J, I) of the phase volumes and whether the input was (N, H, W)."""
    array = np.asarray(phases_hu)
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array) or array.dtype == bool:
        raise InputError(f"The {what} must hold real numbers (HU), got data of type {array.dtype}.",
                         "Pass the phase volumes as a numeric array.")
    if array.ndim not in (3, 4):
        raise InputError(f"The {what} must be an array (N, K, J, I) (or (N, H, W) for single slices), got "
                         f"{array.ndim} dimension(s) {array.shape}.",
                         "Stack the phase volumes of one phase sequence along the first axis.")
    single_slice = array.ndim == 3
    array = array[:, None] if single_slice else array
    count = array.shape[0]
    if count < 2:
        raise InputError(f"Motion-artifact correction needs at least 2 phase volumes; got {count}.",
                         "Select two or more phase volumes of the phase sequence.")
    if min(array.shape[1:]) < 1:
        raise InputError(f"The {what} are empty (shape {array.shape}).")
    finite = np.isfinite(array.reshape(count, -1)).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise InputError(f"Phase volume {bad + 1} of {count} contains missing values (NaN or infinity).",
                         "Fill or crop them before correcting motion artifacts.")
    return np.array(array, dtype=np.float64), single_slice


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, bool]:
    """Stack two phase volumes (K, J, I) or (H, W) after checking they match."""
    first, second = np.asarray(a), np.asarray(b)
    if first.shape != second.shape:
        raise InputError(f"The two phase volumes have different shapes {first.shape} and {second.shape}.",
                         "Use phase volumes of one phase sequence (one grid).")
    if first.ndim not in (2, 3):
        raise InputError(f"A phase volume must be an array (K, J, I) or (H, W), got shape {first.shape}.")
    return _as_phases(np.stack([first, second]))


def _spacing(spacing_mm: Any, two_d: bool) -> tuple[float, float, float]:
    """(si, sj, sk) mm from a 2- or 3-sequence of positive numbers (sk = 1 for a 2-D pair)."""
    try:
        values = tuple(float(s) for s in spacing_mm)
    except (TypeError, ValueError):
        raise InputError(f"The voxel spacing must be 2 or 3 numbers in mm (i, j[, k]), got {spacing_mm!r}.",
                         "Pass the phase volumes' spacing, e.g. (0.7, 0.7, 1.0).") from None
    if len(values) == 2 and two_d:
        values = (*values, 1.0)
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise InputError(f"The voxel spacing must be {'2 or ' if two_d else ''}3 positive numbers in mm "
                         f"(i, j, k), got {spacing_mm!r}.", "Pass the phase volumes' spacing, e.g. (0.7, 0.7, 1.0).")
    return values  # type: ignore[return-value]


def _check_order(order: int) -> None:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 0 <= int(order) <= 5:
        raise InputError(f"The interpolation order must be a whole number from 0 to 5, got {order!r}.",
                         "Use 1 (linear) or 3 (cubic).")


def _shape_back(volume: np.ndarray, single_slice: bool) -> np.ndarray:
    """(K, J, I) -> (H, W) when the caller passed single slices."""
    return volume[0] if single_slice else volume


# ------------------------------------------------------------------------------------------- registration


def _is_blank(array: np.ndarray) -> bool:
    return bool(array.max() == array.min())


def _checked_options(options: dict[str, Any]) -> dict[str, Any]:
    """:data:`BASELINE_DEMONS` updated with ``options``; unknown or impossible settings raise :class:`InputError`."""
    settings = with_defaults(options, BASELINE_DEMONS, "Unknown registration option(s)")
    factors = tuple(int(f) for f in settings["shrink_factors"])
    if not factors or min(factors) < 1 or int(settings["iterations"]) < 1:
        raise InputError("Registration needs at least 1 iteration and shrink factors of at least 1, e.g. (4, 2, 1).")
    if settings["field_sigma_px"] < 0 or settings["noise_threshold"] < 0 or settings["max_step_px"] <= 0:
        raise InputError("The field smoothing and noise threshold must be at least 0 and the step above 0.")
    return {**settings, "shrink_factors": factors}


def noise_sigma_hu(volume: np.ndarray) -> float:
    """Robust noise standard deviation of a phase volume (K, J, I) or (H, W), in its units (HU).

    Median absolute deviation of the in-plane high-pass residual ``v - mean3x3(v)``, scaled for white noise
    (1.4826 * sqrt(9/8)); edges barely move the median. Correlated (e.g. filtered back-projection) noise reads a
    little low.
    """
    from scipy import ndimage

    array = np.asarray(volume, dtype=np.float64)
    size = (3, 3) if array.ndim == 2 else (1, 3, 3)
    residual = array - ndimage.uniform_filter(array, size=size, mode="nearest")
    return float(1.4826 * np.sqrt(9.0 / 8.0) * np.median(np.abs(residual - np.median(residual))))


def _demons(fixed, moving, initial, threshold_hu: float, settings: dict[str, Any], progress: Progress):
    """Multi-resolution fast symmetric-forces demons (:func:`~scanai.motion.registration.demons_pair` with a
    noise threshold); the pull-back field (vector image, mm) on ``fixed``'s grid."""
    options = {**settings, "variant": "fast_symmetric", "update_sigma_px": 0.0,
               "intensity_threshold": max(threshold_hu, 1e-6)}
    field = demons_pair(fixed, moving, initial, options, progress)
    progress.token.raise_if_cancelled()
    return field


def _register_block(frames: np.ndarray, reference_index: int, spacing: tuple[float, float, float],
                    progress: Progress, options: dict[str, Any]) -> np.ndarray:
    """Pull-back fields of every frame to ``frames[reference_index]``, in voxels.

    frames: (T, K, J, I) with K == 1 or K >= 4. Returns (T, K, J, I, 3) float32 voxel displacements ordered
    (dk, dj, di) (the array axes), zero at the reference; ``frames[reference_index](x) ~ frames[t](x + u_t(x))``.
    Frames are visited outward from the reference, each starting from its neighbour's field (towards the
    reference); a field is let go once the next frame out has started from it.
    """
    import SimpleITK as sitk

    settings = _checked_options(options)
    count = len(frames)
    fields = np.zeros((*frames.shape, 3), dtype=np.float32)
    if all(np.array_equal(frames[t], frames[reference_index]) for t in range(count)):
        return fields  # nothing moves: skip the registration (exact identity)
    two_d = frames.shape[1] == 1
    axis_spacing = spacing[:2] if two_d else spacing
    as_image = (lambda a: axis_image(a[0], axis_spacing)) if two_d else (lambda a: axis_image(a, axis_spacing))
    # noise of a difference of two phase volumes: sqrt(2) times one volume's
    threshold = settings["noise_threshold"] * np.sqrt(2.0) * float(np.median([noise_sigma_hu(f) for f in frames]))
    fixed = as_image(frames[reference_index])
    order = visiting_order(count, reference_index)
    computed: dict[int, Any] = {}
    for step, (frame, neighbour) in enumerate(order):
        progress(step / len(order), f"Registering phase volume {frame + 1} of {count}")
        part = progress.sub(step / len(order), (step + 1) / len(order))
        field = _demons(fixed, as_image(frames[frame]), computed.pop(neighbour, None), threshold, settings, part)
        computed[frame] = field
        axes = sitk.GetArrayFromImage(field) / np.asarray(axis_spacing)  # (..., 2|3) voxels in (i, j[, k]) order
        if two_d:
            fields[frame, 0, ..., 1], fields[frame, 0, ..., 2] = axes[..., 1], axes[..., 0]
        else:
            fields[frame] = axes[..., ::-1]
    progress(1.0, "Registration done")
    return fields


def _register(frames: np.ndarray, reference_index: int, spacing: tuple[float, float, float], progress: Progress,
              options: dict[str, Any]) -> np.ndarray:
    """:func:`_register_block` for any slice count: whole grid for K == 1 or K >= 4, slice by slice for K = 2-3.

    Slice by slice, a slice that is blank (constant) in any frame keeps a zero field. In the whole-grid case a
    blank frame among moving ones is an :class:`InputError`.
    """
    slices = frames.shape[1]
    if slices == 1 or slices >= 4:
        flat = [t for t in range(len(frames)) if _is_blank(frames[t])]
        moving = not all(np.array_equal(frames[t], frames[reference_index]) for t in range(len(frames)))
        if flat and moving:
            raise InputError(f"Phase volume {flat[0] + 1} is blank (all voxels have the same value), so it cannot be "
                             "aligned with the others.", "Remove blank phase volumes before correcting motion.")
        return _register_block(frames, reference_index, spacing, progress, options)
    fields = np.zeros((*frames.shape, 3), dtype=np.float32)
    for k in range(slices):
        part = progress.sub(k / slices, (k + 1) / slices)
        block = frames[:, k:k + 1]
        if any(_is_blank(block[t]) for t in range(len(block))):
            continue
        fields[:, k:k + 1] = _register_block(block, reference_index, spacing, part, options)  # in-plane only
    return fields


def _sample(volume: np.ndarray, points: np.ndarray, order: int) -> np.ndarray:
    """``volume`` (K, J, I) sampled at continuous voxel points (3, K, J, I) in (k, j, i) order (edge: nearest)."""
    from scipy import ndimage

    return ndimage.map_coordinates(volume, points, order=order, mode="nearest")


def _grid(shape: tuple[int, int, int]) -> np.ndarray:
    """Voxel index grid (3, K, J, I) in (k, j, i) order."""
    return np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij"))


def _warp(volume: np.ndarray, field: np.ndarray, order: int) -> np.ndarray:
    """Pull-back warp ``out(x) = volume(x + u(x))``; ``field`` (K, J, I, 3) voxels in (k, j, i) order."""
    if not field.any():
        return volume.copy()
    return _sample(volume, _grid(volume.shape) + np.moveaxis(field, -1, 0), order)


def _halfway_points(field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sampling points in ``a`` and ``b`` for the image half way between them.

    ``field`` (K, J, I, 3) voxels, (k, j, i) order, with ``a(x) ~ b(x + u(x))``. The half-way image at ``y`` takes
    ``a`` at the point ``p`` with ``p + u(p) / 2 = y`` (solved by fixed-point iteration) and ``b`` at ``p + u(p)``.
    Returns two (3, K, J, I) point arrays.
    """
    grid = _grid(field.shape[:3])
    components = np.moveaxis(field, -1, 0)
    point = grid - 0.5 * components
    for _ in range(_HALFWAY_ITERATIONS):
        at_point = np.stack([_sample(c, point, 1) for c in components])
        point = grid - 0.5 * at_point
    at_point = np.stack([_sample(c, point, 1) for c in components])
    return point, grid + 0.5 * at_point


def slab_bounds(slices: int, slice_voxels: int, budget: int | None = None, margin: int | None = None
                ) -> list[tuple[int, int, int, int]]:
    """How a stack of ``slices`` slices of ``slice_voxels`` voxels is cut into slabs of at most about ``budget``
    voxels (default :data:`SLAB_VOXELS`): (first, stop) of each slab's slices with ``margin`` (default
    :data:`SLAB_MARGIN`) shared slices on either side (clipped to the stack), and (keep_first, keep_stop) of its own
    slices. One slab when the whole stack fits; a slab holds at least ``2 * margin + 4`` slices, however large the
    slices."""
    budget = SLAB_VOXELS if budget is None else budget
    margin = SLAB_MARGIN if margin is None else margin
    if slices * slice_voxels <= budget or slices < 4:
        return [(0, slices, 0, slices)]
    own = max(budget // max(slice_voxels, 1) - 2 * margin, 4)
    return [(max(start - margin, 0), min(start + own + margin, slices), start, min(start + own, slices))
            for start in range(0, slices, own)]


def _by_slabs(volumes: np.ndarray, progress: Progress, combine_slab) -> np.ndarray:
    """``combine_slab(volumes_of_slab, progress)`` -> (k, J, I) run slab by slab over (N, K, J, I) ``volumes`` (see
    :func:`slab_bounds`) and the slabs' own slices put together: (K, J, I) float64."""
    bounds = slab_bounds(volumes.shape[1], volumes.shape[2] * volumes.shape[3])
    if len(bounds) == 1:
        return combine_slab(volumes, progress)
    result = np.empty(volumes.shape[1:], dtype=np.float64)
    for index, (first, stop, keep_first, keep_stop) in enumerate(bounds):
        part = progress.sub(index / len(bounds), (index + 1) / len(bounds))
        part(0.0, f"Slices {keep_first + 1}-{keep_stop} of {volumes.shape[1]}")
        result[keep_first:keep_stop] = combine_slab(volumes[:, first:stop], part)[keep_first - first:keep_stop - first]
    return result


def _halfway(pair: np.ndarray, spacing: tuple[float, float, float], progress: Progress, options: dict[str, Any],
             order: int) -> np.ndarray:
    """Half-way image (K, J, I) of ``pair`` (2, K, J, I)."""
    if np.array_equal(pair[0], pair[1]):
        progress(1.0, "The two phase volumes are identical")
        return pair[0].copy()
    field = _register(pair, 0, spacing, progress.sub(0.0, 0.9), options)[1]
    progress(0.9, "Warping both phase volumes half way")
    if not field.any():
        return 0.5 * (pair[0] + pair[1])
    in_a, in_b = _halfway_points(field)
    return 0.5 * (_sample(pair[0], in_a, order) + _sample(pair[1], in_b, order))


# ------------------------------------------------------------------------------------------------ baselines


def best_phase(phases_hu: np.ndarray, mask: np.ndarray | None = None) -> tuple[int, np.ndarray]:
    """The phase volume with the least image-based motion amplitude (¶51 approach 1, ¶56), unchanged.

    phases_hu: (N, K, J, I) (or (N, H, W)) HU, chronological order, N >= 2.
    mask:      optional (K, J, I) (or (H, W)) region (e.g. the heart) where the amplitude is measured.
    Returns (index of that phase volume (0-based), a copy of it (K, J, I) or (H, W)). Ties go to the earliest.
    """
    from scanai.artifact_correction.windows import image_motion_amplitude

    phases, single_slice = _as_phases(phases_hu)
    volumes = phases[:, 0] if single_slice else phases
    amplitudes = np.asarray(image_motion_amplitude(volumes, mask=mask), dtype=np.float64)
    index = int(np.argmin(amplitudes))
    return index, _shape_back(phases[index], single_slice).astype(np.asarray(phases_hu).dtype, copy=True)


def plain_mean(phases_hu: np.ndarray) -> np.ndarray:
    """Mean of the two inner phase volumes (even N) or the middle one (odd N), without registration.

    phases_hu: (N, K, J, I) (or (N, H, W)) HU, chronological order, N >= 2. Returns (K, J, I) (or (H, W)) float64
    HU at the centre time of the phase sequence (the ¶68-¶70 output window for M = 1).
    """
    phases, single_slice = _as_phases(phases_hu)
    count = len(phases)
    middle = count // 2
    result = phases[middle].copy() if count % 2 else 0.5 * (phases[middle - 1] + phases[middle])
    return _shape_back(result, single_slice)


def halfway_warp(a: np.ndarray, b: np.ndarray, spacing_mm: Any, progress: Progress | None = None, order: int = 1,
                 **registration_options: Any) -> np.ndarray:
    """The phase volume half way in time between ``a`` and ``b`` (claims 11/16, digest §7.2 item 3).

    a, b:       two phase volumes (K, J, I) (or (H, W)) HU on one grid, ``a`` the earlier.
    spacing_mm: voxel size (i, j, k) (or (i, j)) in mm.
    progress:   optional :class:`Progress` (Cancel raises :class:`~scanai.core.errors.Cancelled`).
    order:      interpolation spline order of the warps (1 linear, 3 cubic).
    registration_options: overrides of :data:`BASELINE_DEMONS`.

    ``b`` is registered to ``a`` (noise-aware symmetric-forces demons, pull-back field ``u``:
    ``a(x) ~ b(x + u(x))``); each point moves half way along its correspondence (the half-way map is inverted by
    fixed-point iteration), both images are resampled onto that mid-way configuration and averaged. Returns
    float64 HU, shape of ``a``. Identical inputs come back unchanged. Large volumes go in slabs (as
    :func:`registration_fusion`).
    """
    progress = Progress.ensure(progress)
    _checked_options(registration_options)
    _check_order(order)
    pair, single_slice = _pair(a, b)
    spacing = _spacing(spacing_mm, pair.shape[1] == 1)
    progress(0.0, "Registering the two phase volumes")
    result = _by_slabs(pair, progress, lambda slab, part: _halfway(slab, spacing, part, registration_options, order))
    progress(1.0, "Half-way image done")
    return _shape_back(result, single_slice)


def _fuse(phases: np.ndarray, spacing: tuple[float, float, float], progress: Progress, combine: str, order: int,
          options: dict[str, Any]) -> np.ndarray:
    """:func:`registration_fusion` of checked (N, K, J, I) float64 phase volumes in one piece: (K, J, I)."""
    count = len(phases)
    middle = count // 2
    if count % 2:
        frames, reference = phases, middle
    else:
        progress(0.0, "Centre estimate: half way between the two inner phase volumes")
        centre = _halfway(phases[middle - 1:middle + 1], spacing, progress.sub(0.0, 1.0 / (count + 1)), options, order)
        frames = np.concatenate([phases[:middle], centre[None], phases[middle:]])
        reference = middle
    start = 0.0 if count % 2 else 1.0 / (count + 1)
    progress(start, "Registering every phase volume to the centre estimate")
    fields = _register(frames, reference, spacing, progress.sub(start, 0.95), options)
    progress(0.95, "Warping the phase volumes onto the centre time")
    warped = np.stack([_warp(frames[t], fields[t], order) for t in range(len(frames)) if t != reference or count % 2])
    return warped.mean(axis=0) if combine == "mean" else np.median(warped, axis=0)


def registration_fusion(phases_hu: np.ndarray, spacing_mm: Any, progress: Progress | None = None,
                        combine: Literal["mean", "median"] = "mean", order: int = 1,
                        **registration_options: Any) -> np.ndarray:
    """Registration-based motion-compensated fusion at the centre time (digest §7.2 item 2).

    phases_hu:  (N, K, J, I) (or (N, H, W)) HU, N >= 2 phase volumes in chronological (ascending-phase) order.
    spacing_mm: voxel size (i, j, k) (or (i, j)) in mm.
    progress:   optional :class:`Progress` (Cancel raises :class:`~scanai.core.errors.Cancelled`).
    combine:    "mean" (averages noise down the most) or "median" (robust to inconsistent streaks).
    order:      interpolation spline order of the warps (1 linear, 3 cubic).
    registration_options: overrides of :data:`BASELINE_DEMONS`.

    The centre estimate is the half-way image of the two inner phase volumes (even N) or the middle phase volume
    (odd N), i.e. the image at the ¶68-¶70 centre output window. Every phase volume is deformably registered to
    it (demons, each warm-started from its neighbour towards the centre), warped onto it and the warped phase
    volumes are combined. Returns float64 HU with the shape of one phase volume. Zero motion returns the input.
    Phase volumes of more than :data:`SLAB_VOXELS` voxels are fused in overlapping slabs of slices
    (:func:`slab_bounds`), so that working memory stays near 3 GB whatever the volume's size.
    """
    progress = Progress.ensure(progress)
    if combine not in ("mean", "median"):
        raise InputError(f"Unknown way to combine the warped phase volumes: {combine!r}.", "Use 'mean' or 'median'.")
    _checked_options(registration_options)
    _check_order(order)
    phases, single_slice = _as_phases(phases_hu)
    spacing = _spacing(spacing_mm, phases.shape[1] == 1)
    result = _by_slabs(phases, progress, lambda slab, part: _fuse(slab, spacing, part, combine, order,
                                                                  registration_options))
    progress(1.0, "Motion-compensated fusion done")
    return _shape_back(result, single_slice)
