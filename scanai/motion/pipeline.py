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
from scanai.core.image import Volume, VolumeSequence
from scanai.core.progress import Progress
from scanai.motion.registration import MotionFields, _validate_sequence, register_to_reference

if TYPE_CHECKING:  # heavy or parallel modules are imported when used
    from scanai.motion.strain import StrainResult

#: Motion estimators, in the order the UI lists them.
METHODS = ("network", "network-pairwise", "demons", "bspline")
#: Human labels of :data:`METHODS` for menus and reports.
METHOD_LABELS = {
    "network": "Multi-pair network (joint)",
    "network-pairwise": "Network, pairs independently (ablation)",
    "demons": "Demons (SimpleITK)",
    "bspline": "B-spline (SimpleITK)",
}
#: Options the network estimators accept besides ``device`` (the classical ones take registration options).
NETWORK_OPTIONS = ("scheme", "refine_steps")


# ------------------------------------------------------------------------------------------------ estimation


def _device(device: str | None) -> str | None:
    """"auto" / "" / None -> None (let the library choose); "cpu" / "cuda" kept."""
    if device is None or str(device).strip().lower() in ("", "auto"):
        return None
    return str(device).strip().lower()


def estimate_motion(sequence: VolumeSequence, reference_index: int = 0, method: str = "network",
                    progress: Progress | None = None, device: str | None = None, **options: Any) -> MotionFields:
    """Dense motion of every frame of ``sequence`` relative to frame ``reference_index``.

    sequence:        frames (T, K, J, I) on one grid (K == 1: a 2-D cine slice).
    reference_index: 0-based reference frame (end-diastole for Lagrangian strain).
    method:          one of :data:`METHODS`: "network" (the joint multi-pair network), "network-pairwise" (the
                     same network with every pair on its own: the ablation), "demons" or "bspline" (SimpleITK
                     registration to the reference, warm-started from the neighbouring frame).
    device:          "cpu", "cuda" or "auto"/None for the networks; ignored by the classical methods.
    options:         ``scheme`` ("reference" or "consecutive") and ``refine_steps`` (instance optimisation after the
                     network, default 30; 0 = the network alone) for the networks; registration options of
                     :func:`~scanai.motion.registration.register_to_reference` for the classical methods.

    Returns :class:`MotionFields`: pull-back fields (T, K, J, I, 3) in RAS mm on the reference grid, zero at
    the reference frame, and the frames warped onto the reference. The input is never modified.
    """
    if method not in METHODS:
        raise InputError(f"Unknown motion estimation method {method!r}.",
                         f"Use one of: {', '.join(METHODS)}.")
    _validate_sequence(sequence, reference_index)
    if method in ("demons", "bspline"):
        return register_to_reference(sequence, int(reference_index), method, progress=progress, **options)
    unknown = sorted(set(options) - set(NETWORK_OPTIONS))
    if unknown:
        raise InputError(f"Unknown option(s) for the {METHOD_LABELS[method]}: {', '.join(unknown)}.",
                         f"Valid options: {', '.join(NETWORK_OPTIONS)}.")
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
    labels:        (T, K, J, I) the label map drawn on the reference frame carried to every frame (None when no
                   label map was given); equal to the input at the reference frame.
    strain:        myocardial strain (radial / circumferential, pixel maps, global and segmental curves,
                   relative to the reference frame) when a myocardium label was given, else None.
    seconds:       wall-clock time of the whole analysis.
    myocardium:    (K, J, I) bool myocardium on the reference frame (None without a myocardium label): the region
                   of ``fold_fraction`` and of the per-frame means of :func:`strain_rows`.
    """

    fields: MotionFields
    jacobian: np.ndarray
    fold_fraction: np.ndarray
    labels: np.ndarray | None
    strain: StrainResult | None
    seconds: float
    myocardium: np.ndarray | None = None


def _label_array(labels: Volume | np.ndarray, sequence: VolumeSequence) -> np.ndarray:
    """The label map as an integer (K, J, I) copy, checked to lie on the cine's grid."""
    frame_shape = tuple(sequence.frames.shape[1:])
    array = np.asarray(labels.array if isinstance(labels, Volume) else labels)
    action = ("Draw the segmentation on the cine's grid (e.g. on the reference frame), or resample it onto that "
              "grid first.")
    if array.shape != frame_shape:
        raise GeometryError(f"The label map has shape {array.shape} but the cine's frames have shape {frame_shape} "
                            "(slices, rows, columns): it lies on another grid.", action)
    if isinstance(labels, Volume) and not _same_grid(labels, sequence):
        raise GeometryError("The label map has the cine's size but another spacing, origin or orientation.", action)
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
                         "Give the label map drawn on the reference frame as well.")
    if isinstance(value, bool) or int(value) != value or int(value) <= 0:
        raise InputError(f"The {what} label must be a whole number of at least 1, got {value!r}.")
    mask = labels == int(value)
    if not mask.any():
        present = ", ".join(str(int(v)) for v in np.unique(labels) if v != 0) or "none"
        raise InputError(f"The {what} label {int(value)} does not occur in the label map (labels present: {present}).",
                         f"Choose the label of the {what}.")
    return mask


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


def analyse_cine(sequence: VolumeSequence, reference_index: int = 0, method: str = "network",
                 labels: Volume | np.ndarray | None = None, myocardium_label: int | None = None,
                 blood_pool_label: int | None = None, rv_insertion_ras: np.ndarray | None = None,
                 level: str | None = None, progress: Progress | None = None, device: str | None = None,
                 propagate: bool = True, **options: Any) -> CineMotion:
    """Motion over a cine plus its downstream tasks: Jacobian maps, label propagation and strain.

    sequence:         frames (T, K, J, I); never modified.
    reference_index:  0-based reference frame. Strain is measured relative to this frame, so it should be
                      end-diastole (the frame where the ventricle is largest) for the usual Lagrangian strain.
    method:           one of :data:`METHODS` (see :func:`estimate_motion`); ``device`` and ``options`` go to it.
    labels:           optional label map (K, J, I) drawn on the reference frame (a :class:`Volume` is also
                      checked for spacing, origin and orientation): 0 = background, 1, 2, ... = structures.
                      Every label is carried through the cycle.
    myocardium_label: label of the LV myocardium: enables strain; folding is then measured in it.
    blood_pool_label: label of the LV blood pool (its centroid is the LV centre for strain).
    rv_insertion_ras: (3,) RAS mm anterior RV insertion point for AHA segments; ``level``: "basal", "mid" or
                      "apical" short-axis level (segments need both).
    progress:         optional :class:`Progress`; Cancel raises :class:`~scanai.core.errors.Cancelled`.
    propagate:        carry the label map through the cycle (False: labels only define the myocardium and
                      blood pool; ``CineMotion.labels`` is then None).

    Raises :class:`InputError` for an unusable cine, reference or label, :class:`GeometryError` for a label
    map on another grid. Returns :class:`CineMotion`.
    """
    started = time.perf_counter()
    progress = Progress.ensure(progress)
    if method not in METHODS:
        raise InputError(f"Unknown motion estimation method {method!r}.", f"Use one of: {', '.join(METHODS)}.")
    _validate_sequence(sequence, reference_index)
    label_array = _label_array(labels, sequence) if labels is not None else None
    if label_array is not None and not label_array.any():
        raise InputError("The label map is empty (every voxel is background).",
                         "Draw the structures to follow on the reference frame.")
    myocardium = _label_mask(label_array, myocardium_label, "myocardium")
    blood_pool = _label_mask(label_array, blood_pool_label, "blood-pool")
    if myocardium is not None and blood_pool is not None and int(myocardium_label) == int(blood_pool_label):
        raise InputError("The myocardium and the blood pool have the same label.", "Give two different labels.")
    rv_insertion_ras = _checked_segments(rv_insertion_ras, level, myocardium is not None)
    geometry = sequence.geometry

    propagate = bool(propagate) and label_array is not None
    after_estimate = 0.75 if propagate else 0.9
    fields = estimate_motion(sequence, reference_index, method, progress=progress.sub(0.0, after_estimate),
                             device=device, **options)

    from scanai.motion.fields import jacobian_determinant

    count = len(sequence)
    after_jacobian = after_estimate + 0.05
    jacobian = np.empty(sequence.frames.shape, dtype=np.float32)
    fold = np.empty(count, dtype=np.float64)
    part = progress.sub(after_estimate, after_jacobian)
    for t in range(count):
        part(t / count, f"Jacobian of frame {t + 1} of {count}")
        jacobian[t] = jacobian_determinant(fields.displacement_mm[t], geometry)
        inside = jacobian[t] if myocardium is None else jacobian[t][myocardium]
        fold[t] = np.count_nonzero(inside <= 0.0) / inside.size  # as scanai.motion.fields.folding_fraction

    propagated = None
    if propagate:
        from scanai.motion.propagate import propagate_labels

        part = progress.sub(after_jacobian, 0.95)
        part(0.0, "Carrying the segmentation through the cycle")
        propagated = np.asarray(propagate_labels(label_array, fields.displacement_mm, geometry, progress=part))

    strain = None
    if myocardium is not None:
        from scanai.motion.strain import myocardial_strain

        progress(0.96, "Myocardial strain")
        strain = myocardial_strain(fields.displacement_mm, geometry, myocardium, blood_pool=blood_pool,
                                   rv_insertion_ras=rv_insertion_ras, level=level)
    progress(1.0, "Motion analysis done")
    return CineMotion(fields, jacobian, fold, propagated, strain, time.perf_counter() - started, myocardium)


# ---------------------------------------------------------------------------------------------------- table


def strain_rows(result: CineMotion, sequence: VolumeSequence) -> list[dict[str, float]]:
    """One row per frame of ``sequence`` (the cine ``result`` was computed from).

    Columns: ``frame`` (1-based, as in Slicer's sequence browser), ``time`` (the sequence index value, in the
    sequence's index unit), ``GCS_pct`` and ``GRS_pct`` (global circumferential / radial strain in %, NaN
    without strain), ``fold_fraction`` (voxels with det J <= 0), ``mean_displacement_mm`` (mean |u_t|) and
    ``mean_residual`` (mean |warped_t - reference|, in image units); the means run over the myocardium when one
    was given, else over the whole grid. With AHA segments (an RV insertion point), two more columns per segment:
    ``"<segment> CS_pct"`` and ``"<segment> RS_pct"`` (segmental circumferential / radial strain).
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
        if strain is not None:
            for number, segment in enumerate(strain.segment_names):
                rows[-1][f"{segment} CS_pct"] = float(strain.segmental_circumferential_pct[t, number])
                rows[-1][f"{segment} RS_pct"] = float(strain.segmental_radial_pct[t, number])
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
