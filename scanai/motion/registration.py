"""Classical registration of every frame of a volume sequence to one reference frame (SimpleITK).

Field convention (used throughout :mod:`scanai.motion`): a motion field is the **pull-back (resampling)
field** on the reference grid. For a point ``x`` (RAS mm) of the reference frame, the corresponding point of
frame ``t`` is ``x + u_t(x)``, so the frame warped onto the reference is ``warped_t(x) = frame_t(x + u_t(x))``
and ``u`` of the reference frame is exactly zero. With the reference at end-diastole, ``u_t`` is the
Lagrangian displacement ED -> t that strain needs. It is ITK's fixed -> moving transform with
fixed = reference (converted from LPS to RAS), i.e. what Slicer calls a grid transform's *FromParent*
direction: placing frame ``t`` under it shows it warped onto the reference.

Registration runs in the grid's own axis frame (voxel axes scaled by the spacing, in mm): for an
orthonormal direction matrix this is an exact rigid change of coordinates, so the result does not depend
on how the patient lies in RAS. Single-slice volumes (K = 1, e.g. a cine MR slice) are registered in 2-D and
the in-plane field is embedded with a zero through-plane component.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from scanai.core.errors import InputError, with_defaults
from scanai.core.image import Geometry, Volume, VolumeSequence
from scanai.core.progress import Progress

Method = Literal["demons", "bspline"]

DEMONS_DEFAULTS: dict[str, Any] = {
    "variant": "fast_symmetric",  # or "diffeomorphic"
    "iterations": 100,  # per resolution level
    "shrink_factors": (4, 2, 1),  # pyramid, coarse to fine
    "field_sigma_px": 1.5,  # Gaussian smoothing of the displacement field (elastic regularisation), pixels
    "update_sigma_px": 0.0,  # Gaussian smoothing of each update (fluid regularisation), 0 = off
    "warm_start": True,  # start each frame from its neighbour's field (frames visited outward from the reference)
    "histogram_matching": False,  # match each frame's histogram to the reference (else sequence-wide scaling)
}

BSPLINE_DEFAULTS: dict[str, Any] = {
    "mesh_size": None,  # control-point mesh cells per axis; None = one cell per ~8 pixels, 4 to 16 cells
    "sampling_fraction": None,  # voxels used by the metric (fixed seeded random set); None = at most ~16k voxels
    "metric": "mean_squares",  # or "mattes" (Mattes mutual information, 32 bins)
    "iterations": 100,  # LBFGSB iterations per level
    "shrink_factors": (4, 2, 1),
    "smoothing_sigmas_px": (2.0, 1.0, 0.0),
    "histogram_matching": False,
}


@dataclass(frozen=True)
class MotionFields:
    """Result of :func:`register_to_reference`.

    displacement_mm: (T, K, J, I, 3) float64, RAS displacement vectors in mm on the sequence's grid
                     (pull-back convention, see the module docstring); all zero at ``reference_index``.
    warped:          every frame resampled onto the reference (same geometry, index values, name and unit as
                     the input sequence).
    reference_index: the reference frame (0-based).
    method:          the estimator (:data:`scanai.motion.pipeline.METHODS`: "demons", "bspline", "svf3d", ...).
    seconds_per_frame: wall-clock registration time per registered (non-reference) frame.
    options:         the options actually used (defaults merged with the caller's).
    """

    displacement_mm: np.ndarray
    warped: VolumeSequence
    reference_index: int
    method: str
    seconds_per_frame: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_voxels(cls, sequence: VolumeSequence, voxels: np.ndarray, reference_index: int, method: str,
                    seconds: float, options: dict[str, Any], progress: Progress | None = None) -> MotionFields:
        """The result of an estimator that works in voxels: ``voxels`` (T, K, J, I, 3) pull-back displacements in
        array order (k, j, i), zero at the reference, turned into RAS mm on ``sequence``'s grid, and every frame
        warped onto the reference; ``seconds`` the estimate's wall-clock time (spread over the registered frames)."""
        progress = Progress.ensure(progress)
        displacement = voxels[..., ::-1] @ sequence.geometry.ijk_to_ras()[:3, :3].T
        progress(0.9, "Warping frames onto the reference")
        warped = np.empty(sequence.frames.shape, dtype=np.float32)
        for frame in range(len(sequence)):
            warped[frame] = sequence.frames[frame] if frame == reference_index else warp(
                sequence.frame(frame), displacement[frame]).array
        progress(1.0, "Motion estimated")
        warped_sequence = VolumeSequence(warped, sequence.geometry, sequence.index_values, sequence.index_name,
                                         sequence.index_unit)
        return cls(displacement, warped_sequence, int(reference_index), method,
                   seconds / max(len(sequence) - 1, 1), options)

    def mean_magnitude_mm(self) -> np.ndarray:
        """Mean displacement length per frame, shape (T,), in mm."""
        return np.linalg.norm(self.displacement_mm, axis=-1).reshape(len(self.displacement_mm), -1).mean(axis=1)


# ----------------------------------------------------------------------------------------------- validation


def _validate_sequence(sequence: VolumeSequence, reference_index: int) -> None:
    """Raise :class:`InputError` for sequences that cannot be registered."""
    count = len(sequence)
    if count < 2:
        raise InputError(f"Motion estimation needs at least 2 frames; the sequence has {count}.",
                         "Select a volume sequence (cine) with several time points.")
    if isinstance(reference_index, bool) or not isinstance(reference_index, (int, np.integer)):
        raise InputError(f"The reference frame must be a whole number, got {reference_index!r}.")
    if not 0 <= int(reference_index) < count:
        raise InputError(f"Reference frame {reference_index} does not exist: the sequence has {count} frames "
                         f"(0 to {count - 1}).", "Choose a reference frame within that range.")
    k_size, j_size, i_size = sequence.frames.shape[1:]
    if min(j_size, i_size) < 8 or 1 < k_size < 4:
        raise InputError(f"Frames of {i_size} x {j_size} x {k_size} voxels are too small to register: at least "
                         "8 x 8 pixels per slice and either 1 or at least 4 slices are needed.",
                         "Register thin stacks slice by slice.")
    frames = np.asarray(sequence.frames)
    if not np.issubdtype(frames.dtype, np.number) or np.iscomplexobj(frames):
        raise InputError("The sequence's voxels are not real numbers.")
    finite = np.isfinite(frames.reshape(count, -1)).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise InputError(f"Frame {bad} contains missing values (NaN or infinity).",
                         "Fill or mask them before estimating motion.")
    flat = frames.reshape(count, -1)
    constant = flat.max(axis=1) == flat.min(axis=1)
    if constant.any():
        bad = int(np.flatnonzero(constant)[0])
        raise InputError(f"Frame {bad} is blank (all voxels have the same value), so there is nothing to align.",
                         "Remove blank frames from the sequence.")


def _merged_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """Defaults of ``method`` updated with ``options``; unknown names raise :class:`InputError`."""
    if method == "demons":
        defaults = DEMONS_DEFAULTS
    elif method == "bspline":
        defaults = BSPLINE_DEFAULTS
    else:
        raise InputError(f"Unknown registration method {method!r}.", "Use 'demons' or 'bspline'.")
    merged = with_defaults(options, defaults, f"Unknown option(s) for {method} registration")
    if len(merged["shrink_factors"]) == 0 or min(merged["shrink_factors"]) < 1:
        raise InputError("Shrink factors must be whole numbers of at least 1, e.g. (4, 2, 1).")
    return merged


# ------------------------------------------------------------------------------------------ SimpleITK glue


def axis_image(array: np.ndarray, spacing: tuple[float, ...]):
    """A float32 SimpleITK image in the grid's own axis frame (origin 0, identity direction, spacing in mm).

    ``array`` is (J, I) for 2-D or (K, J, I) for 3-D; ``spacing`` is (si, sj) or (si, sj, sk) in mm.
    """
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing(tuple(float(s) for s in spacing))
    return image


def _normalised_frames(frames: np.ndarray) -> np.ndarray:
    """Frames scaled by sequence-wide robust percentiles (1st -> 0, 99th -> 1), float32, same shape.

    One scaling for the whole sequence keeps genuine intensity changes between frames (e.g. inflow)."""
    low, high = np.percentile(frames, [1.0, 99.0])
    if high <= low:
        low, high = float(frames.min()), float(frames.max())
    return ((frames - low) / (high - low)).astype(np.float32)


def _shrink_for(size: tuple[int, ...], factor: int) -> list[int]:
    """Per-axis shrink factor: ``factor`` but never leaving fewer than 8 voxels along an axis."""
    return [int(max(1, min(factor, n // 8))) for n in size]


def pyramid_level(image, factor: int):
    """Gaussian-smoothed (sigma 0.5 * factor pixels) and shrunk copy of ``image`` (unchanged for factor 1)."""
    import SimpleITK as sitk

    factors = _shrink_for(image.GetSize(), factor)
    if max(factors) == 1:
        return image
    sigmas = [0.5 * f * s for f, s in zip(factors, image.GetSpacing(), strict=True)]
    return sitk.Shrink(sitk.SmoothingRecursiveGaussian(image, sigmas), factors)


def resample_field(field, reference):
    """A displacement field (physical vectors) linearly resampled onto ``reference``'s grid (float64)."""
    import SimpleITK as sitk

    return sitk.Resample(field, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64)


@contextmanager
def stop_on_cancel(process, progress: Progress) -> Iterator[None]:
    """Within the ``with`` block, ``process`` (a SimpleITK filter or registration method) stops early when the user
    cancels. The command is removed on leaving: it refers to ``process``, a reference cycle through SimpleITK that
    Python's garbage collector cannot see, so every filter stayed alive with its image buffers (fusion of a large
    volume grew by about 0.36 GB per 4-million-voxel registration)."""
    import SimpleITK as sitk

    def check() -> None:
        if progress.token.cancelled:
            process.StopRegistration()

    process.AddCommand(sitk.sitkIterationEvent, check)
    try:
        yield
    finally:
        process.RemoveAllCommands()


def demons_pair(fixed, moving, initial_field, options: dict[str, Any], progress: Progress):
    """Multi-resolution demons: returns the displacement field (SimpleITK vector image on ``fixed``'s grid).

    options: variant, iterations, shrink_factors, field_sigma_px, update_sigma_px, and optionally
    intensity_threshold and max_step_px (SimpleITK's defaults when absent)."""
    import SimpleITK as sitk

    factors = list(options["shrink_factors"])
    field = initial_field
    for level, factor in enumerate(factors):
        progress(level / len(factors), f"demons level {level + 1}/{len(factors)}")
        fixed_level = pyramid_level(fixed, factor)
        moving_level = pyramid_level(moving, factor)
        if options["variant"] == "diffeomorphic":
            demons = sitk.DiffeomorphicDemonsRegistrationFilter()
        elif options["variant"] == "fast_symmetric":
            demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
        else:
            raise InputError(f"Unknown demons variant {options['variant']!r}.",
                             "Use 'fast_symmetric' or 'diffeomorphic'.")
        demons.SetNumberOfIterations(int(options["iterations"]))
        if "intensity_threshold" in options:  # differences below it exert no force (default 0.001)
            demons.SetIntensityDifferenceThreshold(float(options["intensity_threshold"]))
        if "max_step_px" in options:
            demons.SetMaximumUpdateStepLength(float(options["max_step_px"]))
        demons.SetSmoothDisplacementField(options["field_sigma_px"] > 0)
        if options["field_sigma_px"] > 0:
            demons.SetStandardDeviations(float(options["field_sigma_px"]))
        if options["update_sigma_px"] > 0:
            demons.SetSmoothUpdateField(True)
            demons.SetUpdateFieldStandardDeviations(float(options["update_sigma_px"]))
        with stop_on_cancel(demons, progress):
            if field is None:
                field = demons.Execute(fixed_level, moving_level)
            else:
                field = demons.Execute(fixed_level, moving_level, resample_field(field, fixed_level))
    progress(1.0, "demons done")
    return resample_field(field, fixed)


def _bspline_pair(fixed, moving, options: dict[str, Any], progress: Progress):
    """Multi-resolution B-spline registration (LBFGSB); returns the displacement field on ``fixed``'s grid."""
    import SimpleITK as sitk

    factors = list(options["shrink_factors"])
    sigmas = list(options["smoothing_sigmas_px"])
    if len(sigmas) != len(factors):
        raise InputError("B-spline registration needs one smoothing sigma per shrink factor.")
    mesh = options["mesh_size"]
    if mesh is None:
        mesh = [min(16, max(4, int(round(n / 8)))) for n in fixed.GetSize()]
    else:
        mesh = [int(mesh)] * fixed.GetDimension()
    transform = sitk.BSplineTransformInitializer(fixed, mesh)
    method = sitk.ImageRegistrationMethod()
    if options["metric"] == "mean_squares":
        method.SetMetricAsMeanSquares()
    elif options["metric"] == "mattes":
        method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    else:
        raise InputError(f"Unknown similarity metric {options['metric']!r}.", "Use 'mean_squares' or 'mattes'.")
    fraction = options["sampling_fraction"]
    if fraction is None:
        fraction = min(1.0, 16384 / float(np.prod(fixed.GetSize())))
    if not 0.0 < fraction <= 1.0:
        raise InputError(f"The sampling fraction must lie in (0, 1], got {fraction}.")
    if fraction < 1.0:
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(float(fraction), seed=20261120)
    else:
        method.SetMetricSamplingStrategy(method.NONE)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-6, numberOfIterations=int(options["iterations"]),
                                maximumNumberOfCorrections=7, maximumNumberOfFunctionEvaluations=4 * int(
                                    options["iterations"]), costFunctionConvergenceFactor=1e5)
    method.SetInitialTransform(transform, inPlace=True)
    method.SetShrinkFactorsPerLevel([int(f) for f in factors])
    method.SetSmoothingSigmasPerLevel([float(s) for s in sigmas])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    progress(0.0, "B-spline optimisation")
    with stop_on_cancel(method, progress):
        result = method.Execute(fixed, moving)
    progress(1.0, "B-spline done")
    return sitk.TransformToDisplacementField(result, sitk.sitkVectorFloat64, fixed.GetSize(), fixed.GetOrigin(),
                                             fixed.GetSpacing(), fixed.GetDirection())


# ------------------------------------------------------------------------------------------- field <-> RAS


def _axis_field_to_ras(field_array: np.ndarray, geometry: Geometry, two_d: bool) -> np.ndarray:
    """SimpleITK axis-frame field array -> RAS vectors (K, J, I, 3) mm.

    ``field_array`` is (J, I, 2) for 2-D or (K, J, I, 3) for 3-D, holding mm along the voxel axes i, j(, k).
    The axis frame differs from RAS by the direction matrix: ``u_ras = D @ u_axes``.
    """
    if two_d:
        axes = np.zeros((1, *field_array.shape[:2], 3))
        axes[0, ..., :2] = field_array
    else:
        axes = np.asarray(field_array, dtype=float)
    return axes @ np.asarray(geometry.directions).T


def _ras_field_to_voxels(displacement_mm: np.ndarray, geometry: Geometry) -> np.ndarray:
    """RAS displacement (..., 3) mm -> continuous voxel-index displacement (..., 3) in (i, j, k) order."""
    linear = geometry.ijk_to_ras()[:3, :3]
    return np.asarray(displacement_mm, dtype=float) @ np.linalg.inv(linear).T


def _check_field(volume: Volume, displacement_mm: np.ndarray) -> np.ndarray:
    field_array = np.asarray(displacement_mm)
    if field_array.shape != (*volume.array.shape, 3):
        raise InputError(f"The displacement field has shape {field_array.shape} but the image needs "
                         f"{(*volume.array.shape, 3)} (one RAS vector in mm per voxel).")
    if not np.isfinite(field_array).all():
        raise InputError("The displacement field contains missing values (NaN or infinity).")
    return field_array


def warp(volume: Volume, displacement_mm: np.ndarray, order: int = 1) -> Volume:
    """Resample ``volume`` through a pull-back field: ``out(x) = volume(x + u(x))``.

    volume:          the image to deform, array (K, J, I).
    displacement_mm: (K, J, I, 3) RAS vectors in mm on the same grid (convention of this module).
    order:           spline order, 1 = linear (default), 0 = nearest (labels), 3 = cubic.
    Samples outside the grid take the nearest edge value. Returns a new volume with the input's geometry;
    float inputs keep their dtype, integer inputs give float32 (nearest-neighbour keeps the dtype).
    """
    from scipy import ndimage

    field_array = _check_field(volume, displacement_mm)
    shift = _ras_field_to_voxels(field_array, volume.geometry)[..., ::-1]  # (K, J, I, 3) in (k, j, i) order
    source = np.asarray(volume.array)
    # An axis of one voxel takes the edge value wherever it is sampled, so it is left out (a 2-D slice is
    # interpolated in 2-D: the same values at half the cost).
    kept = [axis for axis, size in enumerate(source.shape) if size > 1] or [0]
    shape = tuple(source.shape[axis] for axis in kept)
    offsets = shift.reshape(*shape, 3)[..., kept]
    coordinates = np.indices(shape, dtype=np.float64) + np.moveaxis(offsets, -1, 0)
    if order == 0:
        dtype = source.dtype
    else:
        dtype = source.dtype if np.issubdtype(source.dtype, np.floating) else np.float32
    warped = ndimage.map_coordinates(source.reshape(shape).astype(np.float64), coordinates, order=order,
                                     mode="nearest")
    return Volume(warped.reshape(source.shape).astype(dtype), volume.geometry)


# ----------------------------------------------------------------------------------------------- main entry


def visiting_order(count: int, reference_index: int) -> list[tuple[int, int]]:
    """(frame, neighbour-towards-reference) pairs, visiting frames outward from the reference on both sides."""
    order = []
    for offset in range(1, count):
        for frame, neighbour in ((reference_index + offset, reference_index + offset - 1),
                                 (reference_index - offset, reference_index - offset + 1)):
            if 0 <= frame < count:
                order.append((frame, neighbour))
    return order


def register_to_reference(sequence: VolumeSequence, reference_index: int, method: Method = "demons",
                          progress: Progress | None = None, **options: Any) -> MotionFields:
    """Register every frame of ``sequence`` to frame ``reference_index``.

    sequence:        frames (T, K, J, I) on one grid; K == 1 is registered in 2-D, K >= 4 in 3-D.
    reference_index: the frame every other frame is aligned to (0-based), e.g. end-diastole.
    method:          "demons" (multi-resolution fast symmetric-forces demons, SimpleITK) or "bspline"
                     (multi-resolution B-spline registration, LBFGSB).
    progress:        optional :class:`Progress`; cancelling raises :class:`~scanai.core.errors.Cancelled`.
    options:         override :data:`DEMONS_DEFAULTS` or :data:`BSPLINE_DEFAULTS` (e.g. ``iterations=50``).

    Intensities are scaled once for the whole sequence (1st/99th percentiles), optionally histogram-matched
    to the reference. Returns :class:`MotionFields` (pull-back fields in RAS mm, warped frames).
    """
    import SimpleITK as sitk

    progress = Progress.ensure(progress)
    _validate_sequence(sequence, reference_index)
    reference_index = int(reference_index)
    settings = _merged_options(method, options)
    geometry = sequence.geometry
    count = len(sequence)
    two_d = sequence.frames.shape[1] == 1
    spacing = geometry.spacing_mm[:2] if two_d else geometry.spacing_mm
    frames = _normalised_frames(np.asarray(sequence.frames, dtype=np.float64))
    as_image = (lambda a: axis_image(a[0], spacing)) if two_d else (lambda a: axis_image(a, spacing))
    fixed = as_image(frames[reference_index])

    displacement = np.zeros((*sequence.frames.shape, 3), dtype=np.float64)
    axis_fields: dict[int, Any] = {}
    order = visiting_order(count, reference_index)
    started = time.perf_counter()
    for step, (frame, neighbour) in enumerate(order):
        progress(step / len(order), f"Registering frame {frame + 1} of {count} to frame {reference_index + 1}")
        part = progress.sub(step / len(order), (step + 1) / len(order))
        moving = as_image(frames[frame])
        if settings["histogram_matching"]:
            moving = sitk.HistogramMatching(moving, fixed, numberOfHistogramLevels=128, numberOfMatchPoints=15)
        if method == "demons":
            initial = axis_fields.get(neighbour) if settings["warm_start"] else None
            field_image = demons_pair(fixed, moving, initial, settings, part)
        else:
            field_image = _bspline_pair(fixed, moving, settings, part)
        axis_fields[frame] = field_image
        displacement[frame] = _axis_field_to_ras(sitk.GetArrayFromImage(field_image), geometry, two_d)
    seconds_per_frame = (time.perf_counter() - started) / max(len(order), 1)

    progress(1.0, "Warping frames onto the reference")
    warped = np.empty(sequence.frames.shape, dtype=np.float32 if not np.issubdtype(
        sequence.frames.dtype, np.floating) else sequence.frames.dtype)
    for frame in range(count):
        if frame == reference_index:
            warped[frame] = sequence.frames[frame]
        else:
            warped[frame] = warp(sequence.frame(frame), displacement[frame]).array
    warped_sequence = VolumeSequence(warped, geometry, sequence.index_values, sequence.index_name,
                                     sequence.index_unit)
    return MotionFields(displacement, warped_sequence, reference_index, method, seconds_per_frame, settings)
