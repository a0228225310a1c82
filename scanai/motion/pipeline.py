"""One call from a cine to everything the MotionCorrection module and ``scanai motion`` show.

:func:`estimate_motion` dispatches to a motion estimator (the multi-pair network, the same network run pair by
pair, or a classical SimpleITK registration); :func:`analyse_cine` adds the downstream tasks: Jacobian-
determinant maps and folding, a label map drawn on the reference frame carried through the cycle, and
myocardial strain; :func:`strain_rows` turns the result into the per-frame table (CSV / MRML table).

All fields follow the package's convention (see :mod:`scanai.motion.registration`): pull-back fields on the
reference grid, RAS mm, ``u = 0`` at the reference frame; with the reference at end-diastole ``u_t`` is the
Lagrangian displacement ED -> t.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from scanai.core.errors import GeometryError, InputError, ModelError
from scanai.core.image import Geometry, Volume, VolumeSequence
from scanai.core.progress import Progress
from scanai.motion.registration import MotionFields, _validate_sequence, register_to_reference

if TYPE_CHECKING:  # heavy or parallel modules are imported when used
    from scanai.motion.strain import StrainResult

#: Motion estimators, in the order the UI lists them.
METHODS = ("network", "network-pairwise", "demons", "bspline", "svf3d", "network-3d")
#: Human labels of :data:`METHODS` for menus and reports.
METHOD_LABELS = {
    "network": "Multi-pair network (joint)",
    "network-pairwise": "Network, pairs independently (ablation)",
    "demons": "Demons (SimpleITK)",
    "bspline": "B-spline (SimpleITK)",
    "svf3d": "Multi-pair SVF optimisation, 3-D (classical)",
    "network-3d": "Multi-pair network, 3-D (experimental)",
}
#: How a stack of slices is handled: "2d" = each slice on its own (in-plane motion), "3d" = one volume per frame.
DIMS = ("2d", "3d")
#: Methods per :data:`DIMS` (the 2-D networks run slice by slice; the SVF optimisation and the 3-D network, trained on
#: phantoms and real-texture volumes and behind svf3d on the real stack, so chosen explicitly, are 3-D only).
DIMS_METHODS = {"2d": ("network", "network-pairwise", "demons", "bspline"),
                "3d": ("svf3d", "network-3d", "demons", "bspline")}
#: Options the network estimators accept besides ``device`` (the classical ones take registration options).
NETWORK_OPTIONS = ("scheme", "refine_steps", "passes")


# ------------------------------------------------------------------------------------------------ estimation


def method_description(fields: MotionFields) -> str:
    """What estimated ``fields``: the method's label, and for the networks whether the fields were refined on the
    cine, e.g. "Multi-pair network (joint), refined on this cine (30 steps)" or "... alone (3 passes)"."""
    label = METHOD_LABELS.get(fields.method, fields.method)
    if "refine_steps" not in fields.options:
        return label
    steps = int(fields.options["refine_steps"])
    return f"{label}, refined on this cine ({steps} steps)" if steps > 0 else \
        f"{label} alone ({fields.options.get('passes', 1)} passes)"


def _device(device: str | None) -> str | None:
    """"auto" / "" / None -> None (let the library choose); "cpu" / "cuda" kept."""
    if device is None or str(device).strip().lower() in ("", "auto"):
        return None
    return str(device).strip().lower()


def checked_dims(sequence: VolumeSequence, method: str, dims: str | None) -> str:
    """The dimensionality a run uses: ``dims`` checked against the cine and the method, or, when None, the
    method's own (the networks per slice, "svf3d" in 3-D, the classical registrations 3-D on a stack of at least
    4 slices as they always were). Raises :class:`InputError` naming what to choose instead."""
    slices = sequence.frames.shape[1]
    if dims is None:
        dims = "3d" if method in ("svf3d", "network-3d") or (method in ("demons", "bspline") and slices >= 4) else "2d"
    if dims not in DIMS:
        raise InputError(f"Unknown motion dimensionality {dims!r}.", "Use '2d' (slice by slice) or '3d' (volumes).")
    if dims == "3d" and slices < 4:
        raise InputError(f"3-D motion needs one volume per frame (a multi-slice cine or a 3-D+t sequence, at least "
                         f"4 slices); this cine has {slices} slice(s).",
                         "Choose 2-D (slice by slice), or load the whole short-axis stack / 3-D cine.")
    if method not in DIMS_METHODS[dims]:
        other = "3d" if dims == "2d" else "2d"
        raise InputError(f"The {METHOD_LABELS[method]} does not run in {dims.upper()} (the SVF optimisation and the "
                         "3-D network are 3-D only, the other networks 2-D).",
                         f"In {dims.upper()} choose one of: {', '.join(DIMS_METHODS[dims])}; or choose "
                         f"{other.upper()}.")
    return dims


def _per_slice(sequence: VolumeSequence, reference_index: int, method: str, progress: Progress,
               **options: Any) -> MotionFields:
    """A classical registration run on every slice of a stack on its own (in-plane motion), fields stacked."""
    slices = sequence.frames.shape[1]
    geometry = sequence.geometry
    results = []
    for k in range(slices):
        plane = Geometry(geometry.spacing_mm, tuple(geometry.ras_of_ijk(np.array([0.0, 0.0, float(k)]))),
                         geometry.directions)
        single = VolumeSequence(sequence.frames[:, k:k + 1], plane, sequence.index_values, sequence.index_name,
                                sequence.index_unit)
        results.append(register_to_reference(single, reference_index, method,
                                             progress=progress.sub(k / slices, (k + 1) / slices), **options))
    warped = VolumeSequence(np.concatenate([r.warped.frames for r in results], axis=1), geometry,
                            sequence.index_values, sequence.index_name, sequence.index_unit)
    first = results[0]
    return MotionFields(np.concatenate([r.displacement_mm for r in results], axis=1), warped, first.reference_index,
                        first.method, sum(r.seconds_per_frame for r in results), first.options)


def _network_3d(sequence: VolumeSequence, reference_index: int, device: str | None, progress: Progress | None,
                scheme: str = "reference", refine_steps: int | None = None, passes: int | None = None) -> MotionFields:
    """The 3-D network (:func:`scanai.motion.network3d.estimate_with_network_3d`) with the network options that
    apply to it: reference pairs only, one pass, and ``refine_steps`` 0 for the network alone (any other value:
    its own refinement schedule)."""
    if scheme != "reference" or passes not in (None, 1):
        raise InputError("The 3-D network pairs every frame with the reference, in one pass.",
                         "Leave the pairing scheme and the number of passes at their defaults in 3-D.")
    from scanai.motion.network3d import estimate_with_network_3d

    return estimate_with_network_3d(sequence, reference_index, device=device, refine=refine_steps != 0,
                                    progress=progress)


def estimate_motion(sequence: VolumeSequence, reference_index: int = 0, method: str = "network",
                    progress: Progress | None = None, device: str | None = None, dims: str | None = None,
                    **options: Any) -> MotionFields:
    """Dense motion of every frame of ``sequence`` relative to frame ``reference_index``.

    sequence:        frames (T, K, J, I) on one grid (K == 1: a 2-D cine slice).
    reference_index: 0-based reference frame (end-diastole for Lagrangian strain).
    method:          one of :data:`METHODS`: "network" (the joint multi-pair network), "network-pairwise" (the
                     same network with every pair on its own: the ablation), "demons" or "bspline" (SimpleITK
                     registration to the reference, warm-started from the neighbouring frame).
                     "svf3d" is the joint multi-pair stationary-velocity-field optimisation in 3-D
                     (:mod:`scanai.motion.svf3d`, no training); "network-3d" the multi-pair network on volumes
                     (:mod:`scanai.motion.network3d`, experimental: reference pairs, ``refine_steps`` 0 = alone).
    device:          "cpu", "cuda" or "auto"/None for the networks and svf3d; ignored by the SimpleITK methods.
    dims:            "2d" (every slice on its own, in-plane motion), "3d" (one volume per frame: through-plane
                     motion; needs at least 4 slices) or None (the method's own, see :func:`checked_dims`).
    options:         ``scheme`` ("reference" or "consecutive"), ``refine_steps`` (instance optimisation after the
                     network, default 30; 0 = the network alone) and ``passes`` (network passes: the whole cine,
                     then the heart at full resolution; default 3 without the refinement, 1 with it) for the
                     networks; registration options of
                     :func:`~scanai.motion.registration.register_to_reference` for the classical methods.

    Returns :class:`MotionFields`: pull-back fields (T, K, J, I, 3) in RAS mm on the reference grid, zero at
    the reference frame, and the frames warped onto the reference. The input is never modified.
    """
    if method not in METHODS:
        raise InputError(f"Unknown motion estimation method {method!r}.",
                         f"Use one of: {', '.join(METHODS)}.")
    _validate_sequence(sequence, reference_index)
    dims = checked_dims(sequence, method, dims)
    if method == "svf3d":
        from scanai.motion.svf3d import estimate_svf_3d

        return estimate_svf_3d(sequence, int(reference_index), progress=progress, device=_device(device), **options)
    if method in ("demons", "bspline"):
        if dims == "2d" and sequence.frames.shape[1] > 1:
            return _per_slice(sequence, int(reference_index), method, Progress.ensure(progress), **options)
        return register_to_reference(sequence, int(reference_index), method, progress=progress, **options)
    unknown = sorted(set(options) - set(NETWORK_OPTIONS))
    if unknown:
        raise InputError(f"Unknown option(s) for the {METHOD_LABELS[method]}: {', '.join(unknown)}.",
                         f"Valid options: {', '.join(NETWORK_OPTIONS)}.")
    if method == "network-3d":
        return _network_3d(sequence, int(reference_index), _device(device), progress, **options)
    try:
        from scanai.motion.network import estimate_with_network
    except ModuleNotFoundError as error:
        if error.name and error.name.startswith("scanai"):
            raise ModelError("The motion network is not part of this installation.",
                             "Choose the demons or B-spline method.") from error
        raise
    return estimate_with_network(sequence, int(reference_index), joint=method == "network", device=_device(device),
                                 progress=progress, **options)


# ------------------------------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class CineMotion:
    """Result of :func:`analyse_cine`.

    fields:        the motion (pull-back fields RAS mm (T, K, J, I, 3), warped frames, method, reference).
    jacobian:      (T, K, J, I) float32 determinant of the deformation gradient of ``x -> x + u_t(x)``
                   (1 = volume kept, < 1 compression, <= 0 folding); 1 at the reference frame.
    fold_fraction: (T,) fraction of voxels with a Jacobian <= 0, inside the myocardium when a myocardium label
                   was given, else over the whole grid.
    labels:        (T, K, J, I) the label map carried to every frame (None when no label map was given); at the
                   frame it was drawn on it equals the input.
    strain:        myocardial strain (radial / circumferential, pixel maps, global and segmental curves,
                   relative to the reference frame) when a myocardium label was given, else None.
    seconds:       wall-clock time of the whole analysis.
    myocardium:    (K, J, I) bool myocardium on the reference frame (None without a myocardium label): the region
                   of ``fold_fraction`` and of the per-frame means of :func:`strain_rows`.
    reference_rule: how the reference frame was chosen ("given", or the end-diastole rule of
                   :mod:`scanai.motion.end_diastole`, frames 1-based).
    cavity_size:   (T,) LV cavity area (mm², one slice) or volume (mm³) in every frame, from the blood pool or the
                   myocardium's hole carried through the cycle (None without either).
    """

    fields: MotionFields
    jacobian: np.ndarray
    fold_fraction: np.ndarray
    labels: np.ndarray | None
    strain: StrainResult | None
    seconds: float
    myocardium: np.ndarray | None = None
    reference_rule: str = "given"
    cavity_size: np.ndarray | None = None


def _shape_text(shape: tuple[int, ...]) -> str:
    """(K, J, I) as "J x I pixels" (one slice) or "K x J x I voxels"."""
    return f"{shape[-2]} x {shape[-1]} pixels" if len(shape) < 3 or shape[0] == 1 else \
        f"{shape[0]} x {shape[1]} x {shape[2]} voxels (slices x rows x columns)"


def expected_grid(sequence: VolumeSequence) -> str:
    """The cine's grid in words, for messages: size, spacing and origin (RAS mm)."""
    geometry = sequence.geometry
    spacing = " x ".join(f"{v:.4g}" for v in geometry.spacing_mm[:2 if sequence.frames.shape[1] == 1 else 3])
    origin = ", ".join(f"{v:.4g}" for v in geometry.origin_mm)
    return (f"{_shape_text(sequence.frames.shape[1:])} (rows x columns) of {spacing} mm, first voxel at RAS "
            f"({origin}) mm")


def _grid_offsets(volume: Volume, sequence: VolumeSequence) -> str:
    """How far the label map's grid is from the cine's: origin distance (mm), spacing and direction changes."""
    mine, theirs = volume.geometry, sequence.geometry
    found = []
    offset = np.asarray(mine.origin_mm) - np.asarray(theirs.origin_mm)
    distance = float(np.linalg.norm(offset))
    if distance > 1e-4 * min(theirs.spacing_mm):
        pixels = np.abs(np.linalg.inv(theirs.ijk_to_ras()[:3, :3]) @ offset)
        found.append(f"its origin is {distance:.3g} mm away (RAS ({', '.join(f'{v:.4g}' for v in mine.origin_mm)}) "
                     f"mm, {pixels[0]:.3g} columns and {pixels[1]:.3g} rows off)")
    count = 2 if sequence.frames.shape[1] == 1 else 3
    if not np.allclose(mine.spacing_mm[:count], theirs.spacing_mm[:count], rtol=1e-4):
        found.append(f"its spacing is {' x '.join(f'{v:.4g}' for v in mine.spacing_mm[:count])} mm")
    directions = np.asarray(mine.directions)[:, :count], np.asarray(theirs.directions)[:, :count]
    if not np.allclose(*directions, atol=1e-4):
        cosine = np.clip(np.sum(directions[0] * directions[1], axis=0), -1.0, 1.0)
        found.append(f"its axes are turned by up to {np.degrees(np.arccos(cosine)).max():.1f} degrees")
    return "; ".join(found)


def _label_array(labels: Volume | np.ndarray, sequence: VolumeSequence) -> np.ndarray:
    """The label map as an integer (K, J, I) copy, checked to lie on the cine's grid.

    A plain array (a PNG, ``.npy`` or other file without geometry: see :func:`scanai.io.contours.read_label_map`)
    is on the cine's pixel grid when its size matches; (J, I) is taken as (1, J, I). A :class:`Volume` must also
    have the cine's spacing, origin and orientation (in-plane only for a single slice).
    """
    frame_shape = tuple(sequence.frames.shape[1:])
    array = np.asarray(labels.array if isinstance(labels, Volume) else labels)
    if array.ndim == 2 and frame_shape[0] == 1:
        array = array[None]
    action = ("Draw the segmentation on the cine (any frame, e.g. end-diastole), save it on the image's pixel grid "
              "(PNG, .npy, 2-D NRRD/NIfTI), or resample it onto that grid first.")
    expected = f"The cine's grid is {expected_grid(sequence)}"
    if array.shape != frame_shape:
        swapped = array.shape[-2:] == frame_shape[:0:-1] and array.shape[-2:] != frame_shape[1:]
        hint = " (rows and columns swapped? transpose it)" if swapped else ""
        raise GeometryError(f"The label map lies on another grid: it is {_shape_text(array.shape)}{hint}. "
                            f"{expected}.", action)
    if isinstance(labels, Volume) and not _same_grid(labels, sequence):
        raise GeometryError(f"The label map has the cine's size but lies on another grid: "
                            f"{_grid_offsets(labels, sequence)}. {expected}.", action)
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    if array.dtype.kind not in "iuf":
        raise InputError(f"The label map must hold whole numbers, got {array.dtype}.")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise InputError("The label map holds values that are not whole numbers.",
                             "Give a label map (0 = background, 1, 2, ... = structures).")
        array = array.astype(np.int32)
    if array.min() < 0:
        raise InputError("The label map holds negative labels.", "Use 0 for background and 1, 2, ... for structures.")
    return array.copy()


def _same_grid(volume: Volume, sequence: VolumeSequence) -> bool:
    """Same grid; for a single slice only the in-plane geometry counts (a 2-D file has no slice axis)."""
    if sequence.frames.shape[1] > 1:
        return volume.geometry.is_close(sequence.geometry)
    a, b = volume.geometry, sequence.geometry
    scale = 1e-4 * min(b.spacing_mm[:2])
    return (np.allclose(a.spacing_mm[:2], b.spacing_mm[:2], atol=scale)
            and np.allclose(a.origin_mm, b.origin_mm, atol=scale)
            and np.allclose(np.asarray(a.directions)[:, :2], np.asarray(b.directions)[:, :2], atol=1e-4))


def _label_mask(labels: np.ndarray | None, value: int | None, what: str) -> np.ndarray | None:
    """``labels == value`` (bool), or None when ``value`` is None; a missing label is an :class:`InputError`."""
    if value is None:
        return None
    if labels is None:
        raise InputError(f"A {what} label ({value}) was given without a label map.",
                         "Give the label map drawn on the cine as well.")
    if isinstance(value, bool) or int(value) != value or int(value) <= 0:
        raise InputError(f"The {what} label must be a whole number of at least 1, got {value!r}.")
    mask = labels == int(value)
    if not mask.any():
        present = ", ".join(str(int(v)) for v in np.unique(labels) if v != 0) or "none"
        raise InputError(f"The {what} label {int(value)} does not occur in the label map (labels present: {present}).",
                         f"Choose the label of the {what}.")
    return mask


def _cavity(myocardium: np.ndarray | None, blood_pool: np.ndarray | None) -> np.ndarray | None:
    """The LV cavity (K, J, I) bool: the blood pool, else the hole of the myocardium (per slice), else None."""
    if blood_pool is not None:
        return blood_pool
    if myocardium is None:
        return None
    from scipy import ndimage

    hole = np.stack([ndimage.binary_fill_holes(plane) & ~plane for plane in myocardium])
    return hole if hole.any() else None


def _checked_segments(rv_insertion_ras, level: str | None, has_myocardium: bool) -> np.ndarray | None:
    """Validate the AHA-segment inputs before the (long) estimation; returns the point as a (3,) array."""
    if (rv_insertion_ras is not None or level is not None) and not has_myocardium:
        raise InputError("AHA segments (RV insertion point, slice level) need strain, which needs a myocardium "
                         "label.", "Give the label map with the myocardium label, or leave the segment inputs out.")
    if level is not None and level not in ("basal", "mid", "apical"):
        raise InputError(f"Unknown short-axis level {level!r}.", "Use 'basal', 'mid' or 'apical'.")
    if rv_insertion_ras is None:
        return None
    point = np.asarray(rv_insertion_ras, dtype=float).reshape(-1)
    if point.shape != (3,) or not np.isfinite(point).all():
        raise InputError(f"The RV insertion point must be three RAS coordinates in mm, got {rv_insertion_ras!r}.")
    return point


def _checked_frame(index, count: int, what: str) -> int:
    """A 0-based frame index in range, else :class:`InputError` naming the frame 1-based."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise InputError(f"The {what} must be a whole number, got {index!r}.")
    if not 0 <= int(index) < count:
        raise InputError(f"The {what} (0-based index {index}) does not exist: the sequence has {count} frames.",
                         "Choose a frame within that range.")
    return int(index)


def analyse_cine(sequence: VolumeSequence, reference_index: int | None = None, method: str = "network",
                 labels: Volume | np.ndarray | None = None, myocardium_label: int | None = None,
                 blood_pool_label: int | None = None, rv_insertion_ras: np.ndarray | None = None,
                 level: str | None = None, progress: Progress | None = None, device: str | None = None,
                 propagate: bool = True, labels_index: int | None = None, dims: str | None = None,
                 **options: Any) -> CineMotion:
    """Motion over a cine plus its downstream tasks: Jacobian maps, label propagation and strain.

    sequence:         frames (T, K, J, I); never modified.
    reference_index:  0-based reference frame, or None: end-diastole found automatically
                      (:mod:`scanai.motion.end_diastole`: the largest LV cavity when the label map has a blood
                      pool or a myocardium, else the ECG trigger time nearest the R wave, else frame 0). Strain is
                      measured relative to this frame, so it should be end-diastole.
    method:           one of :data:`METHODS` (see :func:`estimate_motion`); ``device``, ``dims`` ("2d" slice by
                      slice, "3d" volumes, None the method's own) and ``options`` go to it.
    labels:           optional label map (K, J, I) drawn on frame ``labels_index`` (a :class:`Volume` is also
                      checked for spacing, origin and orientation; a plain array only for its size):
                      0 = background, 1, 2, ... = structures. Every label is carried through the cycle.
    labels_index:     0-based frame the label map was drawn on (default: the reference frame; needed when the
                      reference is found automatically). A label map drawn on another frame than the reference
                      is carried onto the reference by the motion to its frame.
    myocardium_label: label of the LV myocardium: enables strain; folding is then measured in it.
    blood_pool_label: label of the LV blood pool (its centroid is the LV centre for strain; its size finds ED).
    rv_insertion_ras: (3,) RAS mm anterior RV insertion point for AHA segments; ``level``: "basal", "mid" or
                      "apical" short-axis level (segments need both).
    progress:         optional :class:`Progress`; Cancel raises :class:`~scanai.core.errors.Cancelled`.
    propagate:        carry the label map through the cycle (False: labels only define the myocardium and
                      blood pool; ``CineMotion.labels`` is then None).

    Jacobians, label propagation (field inversion) and strain run on every frame at once. Raises
    :class:`InputError` for an unusable cine, reference or label, :class:`GeometryError` for a label map on
    another grid (the message states the cine's grid and how far off the label map is). Returns
    :class:`CineMotion`.
    """
    from scanai.motion import end_diastole
    from scanai.motion.fields import jacobian_determinants
    from scanai.motion.propagate import propagate_labels, pull_labels

    started = time.perf_counter()
    progress = Progress.ensure(progress)
    if method not in METHODS:
        raise InputError(f"Unknown motion estimation method {method!r}.", f"Use one of: {', '.join(METHODS)}.")
    count, geometry = len(sequence), sequence.geometry
    _validate_sequence(sequence, 0 if reference_index is None else reference_index)
    checked_dims(sequence, method, dims)  # before the long estimation
    label_array = _label_array(labels, sequence) if labels is not None else None
    if label_array is not None and not label_array.any():
        raise InputError("The label map is empty (every voxel is background).",
                         "Draw the structures to follow on a frame of the cine.")
    drawn = labels_index if labels_index is not None else reference_index
    if label_array is not None and drawn is None:
        raise InputError("The frame the label map was drawn on is not known (the reference frame is found "
                         "automatically).", "Say which frame the label map was drawn on, or give the reference frame.")
    if drawn is not None:
        drawn = _checked_frame(drawn, count, "frame the label map was drawn on")
    myocardium = _label_mask(label_array, myocardium_label, "myocardium")
    blood_pool = _label_mask(label_array, blood_pool_label, "blood-pool")
    if myocardium is not None and blood_pool is not None and int(myocardium_label) == int(blood_pool_label):
        raise InputError("The myocardium and the blood pool have the same label.", "Give two different labels.")
    rv_insertion_ras = _checked_segments(rv_insertion_ras, level, myocardium is not None)
    cavity = _cavity(myocardium, blood_pool)

    propagate = bool(propagate) and label_array is not None
    after_estimate = 0.75 if propagate else 0.9
    rule = "given"
    if reference_index is None and cavity is None:
        chosen = end_diastole.from_trigger_times(sequence)
        reference_index, rule = chosen.index, chosen.rule
    start = drawn if reference_index is None else reference_index
    fields = estimate_motion(sequence, start, method, progress=progress.sub(0.0, after_estimate), device=device,
                             dims=dims, **options)
    progress(after_estimate, "Jacobian maps of every frame")
    jacobian = jacobian_determinants(fields.displacement_mm, geometry)
    if reference_index is None:  # the largest cavity, measured with the motion relative to the drawn frame
        chosen = end_diastole.largest_cavity(end_diastole.cavity_sizes(jacobian, cavity, geometry), drawn,
                                             "mm²" if sequence.frames.shape[1] == 1 else "mm³")
        reference_index, rule = chosen.index, chosen.rule
        if reference_index != drawn:
            progress(after_estimate, f"End-diastole is frame {reference_index + 1}: estimating relative to it")
            fields = estimate_motion(sequence, reference_index, method, progress=progress.sub(0.0, after_estimate),
                                     device=device, dims=dims, **options)
            jacobian = jacobian_determinants(fields.displacement_mm, geometry)
    drawn_labels = label_array
    if label_array is not None and drawn != reference_index:  # onto the reference: labels(y + u_drawn(y))
        label_array = pull_labels(label_array, fields.displacement_mm[drawn:drawn + 1], geometry)[0]
        myocardium = _label_mask(label_array, myocardium_label, "myocardium")
        blood_pool = _label_mask(label_array, blood_pool_label, "blood-pool")
        cavity = _cavity(myocardium, blood_pool)
    inside = jacobian.reshape(count, -1) if myocardium is None else jacobian[:, myocardium]
    fold = np.count_nonzero(inside <= 0.0, axis=1) / inside.shape[1]  # as scanai.motion.fields.folding_fraction
    sizes = None if cavity is None else end_diastole.cavity_sizes(jacobian, cavity, geometry)

    propagated = None
    if propagate:
        part = progress.sub(after_estimate + 0.05, 0.95)
        part(0.0, "Carrying the segmentation through the cycle")
        propagated = np.asarray(propagate_labels(label_array, fields.displacement_mm, geometry, progress=part))
        propagated[drawn] = drawn_labels  # the drawn frame keeps the outline as drawn

    strain = None
    if myocardium is not None:
        from scanai.motion.strain import myocardial_strain

        progress(0.96, "Myocardial strain")
        strain = myocardial_strain(fields.displacement_mm, geometry, myocardium, blood_pool=blood_pool,
                                   rv_insertion_ras=rv_insertion_ras, level=level)
    progress(1.0, "Motion analysis done")
    return CineMotion(fields, jacobian, fold, propagated, strain, time.perf_counter() - started, myocardium, rule,
                      sizes)


# ---------------------------------------------------------------------------------------------------- table


def strain_rows(result: CineMotion, sequence: VolumeSequence) -> list[dict[str, float]]:
    """One row per frame of ``sequence`` (the cine ``result`` was computed from).

    Columns: ``frame`` (1-based, as in Slicer's sequence browser), ``time`` (the sequence index value, in the
    sequence's index unit), ``GCS_pct`` and ``GRS_pct`` (global circumferential / radial strain in %, NaN
    without strain), ``fold_fraction`` (voxels with det J <= 0), ``mean_displacement_mm`` (mean |u_t|) and
    ``mean_residual`` (mean |warped_t - reference|, in image units); the means run over the myocardium when one
    was given, else over the whole grid. With a cavity (blood pool or the myocardium's hole): ``LV_cavity_mm2``
    (one slice) or ``LV_cavity_mm3``, its size carried through the cycle. With AHA segments (an RV insertion
    point), two more columns per segment: ``"<segment> CS_pct"`` and ``"<segment> RS_pct"`` (segmental
    circumferential / radial strain).
    """
    fields = result.fields
    if len(sequence) != len(fields.displacement_mm):
        raise InputError(f"The result has {len(fields.displacement_mm)} frames but the sequence {len(sequence)}.",
                         "Give the sequence the motion was estimated on.")
    region = result.myocardium if result.myocardium is not None else np.ones(sequence.frames.shape[1:], bool)
    reference = np.asarray(sequence.frames[fields.reference_index], dtype=np.float64)
    magnitude = np.linalg.norm(fields.displacement_mm, axis=-1)
    strain = result.strain
    rows = []
    for t in range(len(sequence)):
        residual = np.abs(np.asarray(fields.warped.frames[t], dtype=np.float64) - reference)
        rows.append({
            "frame": t + 1,
            "time": float(sequence.index_values[t]),
            "GCS_pct": float(strain.global_circumferential_pct[t]) if strain is not None else float("nan"),
            "GRS_pct": float(strain.global_radial_pct[t]) if strain is not None else float("nan"),
            "fold_fraction": float(result.fold_fraction[t]),
            "mean_displacement_mm": float(magnitude[t][region].mean()),
            "mean_residual": float(residual[region].mean()),
        })
        if result.cavity_size is not None:
            rows[-1]["LV_cavity_mm2" if sequence.frames.shape[1] == 1 else "LV_cavity_mm3"] = \
                float(result.cavity_size[t])
        if strain is not None:
            for number, segment in enumerate(strain.segment_names):
                rows[-1][f"{segment} CS_pct"] = float(strain.segmental_circumferential_pct[t, number])
                rows[-1][f"{segment} RS_pct"] = float(strain.segmental_radial_pct[t, number])
    return rows


def peak_strain_rows(result: CineMotion) -> list[dict[str, float | str]]:
    """Peak strain relative to the reference (end-diastole), global and per AHA segment, one row each.

    Columns: ``region`` ("global", or the segment's name such as "7 mid anterior"), ``peak_CS_pct`` (the most
    negative circumferential strain), ``CS_frame`` (its frame, from 1), ``peak_RS_pct`` (the largest radial strain)
    and ``RS_frame``. A segment without myocardium gives NaN and frame 0. Raises InputError without strain.
    """
    strain = result.strain
    if strain is None:
        raise InputError("Peak strain needs strain, which needs a myocardium label.",
                         "Give the label map with the myocardium label.")
    curves = [("global", strain.global_circumferential_pct, strain.global_radial_pct)]
    curves += [(name, strain.segmental_circumferential_pct[:, s], strain.segmental_radial_pct[:, s])
               for s, name in enumerate(strain.segment_names)]
    rows: list[dict[str, float | str]] = []
    for region, circumferential, radial in curves:
        if np.isnan(circumferential).all():
            rows.append({"region": region, "peak_CS_pct": float("nan"), "CS_frame": 0,
                         "peak_RS_pct": float("nan"), "RS_frame": 0})
            continue
        cs, rs = int(np.nanargmin(circumferential)), int(np.nanargmax(radial))
        rows.append({"region": region, "peak_CS_pct": round(float(circumferential[cs]), 2), "CS_frame": cs + 1,
                     "peak_RS_pct": round(float(radial[rs]), 2), "RS_frame": rs + 1})
    return rows


def pack_label_layers(masks: list[np.ndarray]) -> list[tuple[np.ndarray, list[int]]]:
    """Pack possibly overlapping masks into as few non-overlapping label maps as needed.

    masks: boolean arrays of one shape (e.g. the segments of a segmentation, in order). Mask ``n`` gets label
    ``n + 1`` in the first layer where it overlaps nothing already placed. Returns ``[(labels, members)]``:
    each layer's integer label map (uint16) and the 0-based mask numbers it holds.
    """
    layers: list[tuple[np.ndarray, list[int]]] = []
    for number, mask in enumerate(masks):
        mask = np.asarray(mask, dtype=bool)
        for layer, members in layers:
            if layer.shape != mask.shape:
                raise GeometryError(f"Mask {number + 1} has shape {mask.shape}, the others {layer.shape}.")
            if not (layer[mask] != 0).any():
                layer[mask] = number + 1
                members.append(number)
                break
        else:
            layer = np.zeros(mask.shape, dtype=np.uint16)
            layer[mask] = number + 1
            layers.append((layer, [number]))
    return layers
