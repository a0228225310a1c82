"""Myocardial strain from Lagrangian motion fields (short-axis, in-plane radial and circumferential).

Input: Lagrangian pull-back fields u_t (T, K, J, I, 3), RAS mm, on the end-diastolic (ED) grid (reference =
ED, so u_ED = 0); each slice k is a short-axis slice. Per slice, in the grid's own axis frame (i, j) in mm:

- F = I + grad u, the in-plane 2x2 deformation gradient (central differences, np.gradient with the spacing);
- c = the slice's LV centre at ED (centroid of the blood pool if given, else of the filled myocardium mask);
- e_r = (X - c) / |X - c| at each ED myocardial pixel X, e_c = e_r rotated by 90 degrees;
- engineering (Lagrangian) strain = |F e| - 1, reported in percent (Err radial, Ecc circumferential).

Strain is evaluated on the ED myocardium mask eroded by ``erode_px`` pixels in-plane (4-connected cross): a
field that is smooth in the wall but kinked at the blood/myocardium border would otherwise bias the border
pixels' central differences (the cross is exactly the stencil of the central differences). For 2-D cine the
strain is *in-plane* strain: through-plane motion is not seen. On a stack whose fields move through the plane
(3-D motion, K > 1) the stretch takes the through-plane displacement's in-plane gradient too: F e is then the
3-D vector (I + grad u) e with e in the slice plane (cylindrical strain about the long axis, the convention of
:mod:`scanai.motion.phantom3d`); in-plane fields give the 2-D result.

AHA segments (optional, needs the anterior right-ventricular insertion point): the standard bull's-eye is a
short-axis slice viewed from the apex towards the base, anterior up, septum left (the same picture as a
short-axis slice in radiological display). Segments run counter-clockwise in that view: basal/mid anterior,
anteroseptal, inferoseptal, inferior, inferolateral, anterolateral (60 degrees each, numbers 1-6 / 7-12);
apical anterior, septal, inferior, lateral (90 degrees each, 13-16). The anterior insertion point lies on the
anterior/anteroseptal border (at 120 degrees, counter-clockwise from the viewer's right), so the anteroseptal
segment spans 0..60 degrees counter-clockwise from it and the apical septal segment 15..105 degrees.
The viewing direction (apex -> base) is taken as the slice normal +-k whose sign points towards the patient's
right, posterior and superior (RAS (1, -1, 1)): the LV long axis points that way from apex to base in a
normal heart, and for an axial-like slice this is the radiological view from the feet.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from scanai.core.errors import InputError
from scanai.core.image import Geometry

Level = Literal["basal", "mid", "apical"]

_SIX = ("anterior", "anteroseptal", "inferoseptal", "inferior", "inferolateral", "anterolateral")
_FOUR = ("anterior", "septal", "inferior", "lateral")
_FIRST_NUMBER = {"basal": 1, "mid": 7, "apical": 13}
_INSERTION_DEG = 120.0  # bull's-eye angle of the anterior RV insertion point (counter-clockwise from the right)
_BASE_DIRECTION_RAS = np.array([1.0, -1.0, 1.0]) / np.sqrt(3.0)  # apex -> base, roughly, in a normal heart


@dataclass(frozen=True, eq=False)
class StrainResult:
    """Strain of every frame relative to the reference (ED) frame, in percent.

    radial_pct, circumferential_pct: (T, K, J, I) float32 maps, NaN outside ``mask``.
    global_radial_pct, global_circumferential_pct: (T,) means over ``mask`` (all slices), GRS and GCS.
    mask: (K, J, I) bool, the eroded ED myocardium mask the strain was evaluated on.
    centre_ras: (K, 3) LV centre per slice in RAS mm (NaN for slices without myocardium).
    segment_names: AHA segment names (empty without an RV insertion point).
    segmental_radial_pct, segmental_circumferential_pct: (T, S) means per segment (NaN for an empty segment).
    """

    radial_pct: np.ndarray
    circumferential_pct: np.ndarray
    global_radial_pct: np.ndarray
    global_circumferential_pct: np.ndarray
    mask: np.ndarray
    centre_ras: np.ndarray
    segment_names: tuple[str, ...]
    segmental_radial_pct: np.ndarray
    segmental_circumferential_pct: np.ndarray

    def peak_circumferential(self) -> tuple[float, int]:
        """(most negative GCS in %, its frame index)."""
        frame = int(np.nanargmin(self.global_circumferential_pct))
        return float(self.global_circumferential_pct[frame]), frame

    def peak_radial(self) -> tuple[float, int]:
        """(largest GRS in %, its frame index)."""
        frame = int(np.nanargmax(self.global_radial_pct))
        return float(self.global_radial_pct[frame]), frame


# ----------------------------------------------------------------------------------------------- helpers


def _checked_mask(mask: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.shape != shape:
        raise InputError(f"The {what} has shape {array.shape} but the motion field's grid is {shape}.",
                         "Use a mask drawn on the reference (end-diastolic) frame of the same image.")
    if array.dtype.kind not in "biuf":
        raise InputError(f"The {what} must hold numbers or booleans, got {array.dtype}.")
    return np.nan_to_num(array.astype(np.float64)) != 0


def _eroded(myocardium: np.ndarray, erode_px: int) -> np.ndarray:
    """Per-slice in-plane erosion (4-connected cross, ``erode_px`` times); a slice that would vanish keeps its
    un-eroded mask (with a warning)."""
    from scipy import ndimage

    if erode_px == 0:
        return myocardium.copy()
    out = np.zeros_like(myocardium)
    cross = ndimage.generate_binary_structure(2, 1)
    for k, plane in enumerate(myocardium):
        if not plane.any():
            continue
        eroded = ndimage.binary_erosion(plane, cross, iterations=erode_px, border_value=0)
        if not eroded.any():
            warnings.warn(f"Eroding the myocardium mask of slice {k} by {erode_px} px leaves nothing; strain in "
                          "that slice uses the un-eroded mask (border pixels may be biased).", stacklevel=3)
            eroded = plane
        out[k] = eroded
    return out


def _centres_axis_mm(myocardium: np.ndarray, blood_pool: np.ndarray | None, spacing: np.ndarray) -> np.ndarray:
    """LV centre per slice, (K, 2) in axis-frame mm (i, j); NaN for slices without myocardium."""
    from scipy import ndimage

    centres = np.full((myocardium.shape[0], 2), np.nan)
    for k, plane in enumerate(myocardium):
        if not plane.any():
            continue
        region = blood_pool[k] if blood_pool is not None and blood_pool[k].any() else ndimage.binary_fill_holes(plane)
        jj, ii = np.nonzero(region)
        centres[k] = (ii.mean() * spacing[0], jj.mean() * spacing[1])
    return centres


def _viewing_sign(geometry: Geometry) -> float:
    """+1 when the bull's-eye's counter-clockwise sense is the rotation from +i towards +j, else -1."""
    directions = np.asarray(geometry.directions)
    i_to_j_axis = np.cross(directions[:, 0], directions[:, 1])  # right-hand axis of the i -> j rotation
    normal = directions[:, 2] / np.linalg.norm(directions[:, 2])
    towards_base = normal if normal @ _BASE_DIRECTION_RAS >= 0 else -normal  # viewing direction apex -> base
    # counter-clockwise as seen looking along ``towards_base`` is a right-hand rotation about -towards_base
    return 1.0 if i_to_j_axis @ -towards_base > 0 else -1.0


def segment_names_for(level: Level | None) -> tuple[str, ...]:
    """AHA segment names: 6 for basal/mid/None, 4 for apical; numbered ("7 mid anterior") when ``level`` is set."""
    if level is None:
        return _SIX
    if level not in _FIRST_NUMBER:
        raise InputError(f"Unknown short-axis level {level!r}.", "Use 'basal', 'mid' or 'apical'.")
    names = _FOUR if level == "apical" else _SIX
    return tuple(f"{_FIRST_NUMBER[level] + n} {level} {name}" for n, name in enumerate(names))


def aha_segment_map(mask: np.ndarray, geometry: Geometry, centre_ras: np.ndarray, rv_insertion_ras: Sequence[float],
                    level: Level | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """AHA segment of every pixel of ``mask`` (K, J, I) bool, by angle about each slice's centre.

    centre_ras: (K, 3) LV centre per slice, RAS mm. rv_insertion_ras: the anterior RV insertion point, RAS mm
    (projected onto each slice along k). Returns (segments (K, J, I) int16: index into the names, -1 outside
    the mask, names). Orientation: see the module docstring (counter-clockwise in the apex-to-base view).
    """
    names = segment_names_for(level)
    insertion = np.asarray(rv_insertion_ras, dtype=np.float64).reshape(-1)
    if insertion.shape != (3,) or not np.isfinite(insertion).all():
        raise InputError(f"The RV insertion point must be one RAS point (3 numbers in mm), got {rv_insertion_ras}.")
    spacing = np.asarray(geometry.spacing_mm)
    inverse_directions = np.linalg.inv(np.asarray(geometry.directions))
    sign = _viewing_sign(geometry)
    width = 2.0 * np.pi / len(names)
    start = np.deg2rad(45.0 if len(names) == 4 else 60.0)  # bull's-eye angle where the first segment begins
    segments = np.full(mask.shape, -1, dtype=np.int16)
    jj, ii = np.meshgrid(np.arange(mask.shape[1]), np.arange(mask.shape[2]), indexing="ij")
    for k in range(mask.shape[0]):
        if not mask[k].any() or not np.isfinite(centre_ras[k]).all():
            continue
        reference = (inverse_directions @ (insertion - centre_ras[k]))[:2]  # axis-frame (i, j) mm
        if np.hypot(*reference) < 1e-6:
            raise InputError(f"The RV insertion point lies on the LV centre of slice {k}.",
                             "Place the point where the right ventricle's anterior wall joins the septum.")
        centre_axes = inverse_directions @ (centre_ras[k] - np.asarray(geometry.origin_mm))
        dx, dy = ii * spacing[0] - centre_axes[0], jj * spacing[1] - centre_axes[1]
        angle = sign * np.arctan2(reference[0] * dy - reference[1] * dx, reference[0] * dx + reference[1] * dy)
        bullseye = np.deg2rad(_INSERTION_DEG) + angle  # counter-clockwise angle in the bull's-eye picture
        index = np.floor(np.mod(bullseye - start, 2.0 * np.pi) / width).astype(np.int16) % len(names)
        segments[k][mask[k]] = index[mask[k]]
    return segments, names


def _stretch_minus_one(gradient: tuple[np.ndarray, ...], e_i: np.ndarray, e_j: np.ndarray) -> np.ndarray:
    """|F e| - 1 for unit vectors e = (e_i, e_j), F = I + G, G = (dui/di, dui/dj, duj/di, duj/dj) in-plane,
    optionally followed by (duk/di, duk/dj): the through-plane component's change along e.

    Written as (2 e.Ge + |Ge|^2) / (|F e| + 1): no cancellation for small strain, exactly 0 for a zero field.
    """
    g_i = gradient[0] * e_i + gradient[1] * e_j
    g_j = gradient[2] * e_i + gradient[3] * e_j
    squared_change = 2.0 * (e_i * g_i + e_j * g_j) + g_i**2 + g_j**2
    if len(gradient) == 6:
        squared_change = squared_change + (gradient[4] * e_i + gradient[5] * e_j) ** 2
    return squared_change / (np.sqrt(np.maximum(1.0 + squared_change, 0.0)) + 1.0)


# ------------------------------------------------------------------------------------------- main entry


def myocardial_strain(displacement_mm: np.ndarray, geometry: Geometry, myocardium: np.ndarray,
                      blood_pool: np.ndarray | None = None, erode_px: int = 1,
                      rv_insertion_ras: Sequence[float] | None = None, level: Level | None = None) -> StrainResult:
    """In-plane radial and circumferential strain of short-axis slices (see the module docstring).

    displacement_mm:  (T, K, J, I, 3) Lagrangian fields (reference = ED), RAS mm, on the ED grid.
    myocardium:       (K, J, I) bool ED myocardium mask. blood_pool: optional (K, J, I) bool ED LV cavity.
    erode_px:         in-plane erosion of the mask before averaging (never to nothing: falls back to 0).
    rv_insertion_ras: anterior RV insertion point (RAS mm) for AHA segments; level picks basal/mid (6
                      segments) or apical (4); None with a point gives 6 unnumbered segments.
    Raises :class:`InputError` for a wrong field shape, NaNs, a mask on another grid or an empty mask.
    """
    field = np.asarray(displacement_mm, dtype=np.float64)
    if field.ndim != 5 or field.shape[-1] != 3 or 0 in field.shape:
        raise InputError(f"Strain needs Lagrangian fields of shape (T, K, J, I, 3), got {field.shape}.",
                         "Pass the motion fields of every frame relative to end-diastole.")
    if not np.isfinite(field).all():
        raise InputError("The motion fields contain missing values (NaN or infinity).",
                         "Recompute or fill the motion fields before computing strain.")
    grid_shape = field.shape[1:4]
    if min(grid_shape[1:]) < 3:
        raise InputError(f"The slices ({grid_shape[1]} x {grid_shape[2]} pixels) are too small for strain.")
    myocardium = _checked_mask(myocardium, grid_shape, "myocardium mask")
    if not myocardium.any():
        raise InputError("The myocardium mask is empty.", "Draw the left-ventricular myocardium at end-diastole.")
    blood = None if blood_pool is None else _checked_mask(blood_pool, grid_shape, "blood-pool mask")
    if int(erode_px) != erode_px or erode_px < 0:
        raise InputError(f"The erosion must be a whole number of pixels >= 0, got {erode_px}.")
    if level is not None:
        segment_names_for(level)  # validates

    spacing = np.asarray(geometry.spacing_mm)
    directions = np.asarray(geometry.directions)
    mask = _eroded(myocardium, int(erode_px))
    centres = _centres_axis_mm(myocardium, blood, spacing)
    centre_ras = np.full((grid_shape[0], 3), np.nan)
    for k in range(grid_shape[0]):
        if np.isfinite(centres[k]).all():
            centre_ras[k] = geometry.ras_of_ijk(np.array([centres[k][0] / spacing[0], centres[k][1] / spacing[1], k]))

    # radial unit vectors in the axis frame (i, j); pixels exactly at the centre have no direction
    jj, ii = np.meshgrid(np.arange(grid_shape[1]), np.arange(grid_shape[2]), indexing="ij")
    dx = ii[None] * spacing[0] - centres[:, 0, None, None]
    dy = jj[None] * spacing[1] - centres[:, 1, None, None]
    length = np.hypot(dx, dy)
    mask &= np.nan_to_num(length) > 1e-9
    if not mask.any():
        raise InputError("No myocardial pixel is left to compute strain on.", "Check the myocardium mask.")
    safe = np.where(mask, length, 1.0)
    er_i, er_j = np.where(mask, dx / safe, 0.0), np.where(mask, dy / safe, 0.0)
    ec_i, ec_j = -er_j, er_i

    axes = field @ np.linalg.inv(directions).T  # (T, K, J, I, 3) in the axis frame (i, j, k), mm
    count = field.shape[0]
    # every frame at once: in-plane gradients of the axis-frame components along j (axis 2) and i (axis 3)
    dui_dj, dui_di = np.gradient(axes[..., 0], spacing[1], spacing[0], axis=(2, 3))
    duj_dj, duj_di = np.gradient(axes[..., 1], spacing[1], spacing[0], axis=(2, 3))
    gradient = (dui_di, dui_dj, duj_di, duj_dj)
    if grid_shape[0] > 1 and np.abs(axes[..., 2]).max() > 0:  # through-plane motion of a 3-D field
        duk_dj, duk_di = np.gradient(axes[..., 2], spacing[1], spacing[0], axis=(2, 3))
        gradient = (*gradient, duk_di, duk_dj)
    radial = np.where(mask, 100.0 * _stretch_minus_one(gradient, er_i, er_j), np.nan)
    circumferential = np.where(mask, 100.0 * _stretch_minus_one(gradient, ec_i, ec_j), np.nan)
    global_radial = radial[:, mask].mean(axis=1)
    global_circumferential = circumferential[:, mask].mean(axis=1)

    names: tuple[str, ...] = ()
    segmental_radial = np.zeros((count, 0))
    segmental_circumferential = np.zeros((count, 0))
    if rv_insertion_ras is not None:
        segments, names = aha_segment_map(mask, geometry, centre_ras, rv_insertion_ras, level)
        segmental_radial = np.full((count, len(names)), np.nan)
        segmental_circumferential = np.full((count, len(names)), np.nan)
        for s in range(len(names)):
            inside = segments == s
            if inside.any():
                segmental_radial[:, s] = radial[:, inside].mean(axis=1)
                segmental_circumferential[:, s] = circumferential[:, inside].mean(axis=1)
    return StrainResult(radial.astype(np.float32), circumferential.astype(np.float32), global_radial,
                        global_circumferential, mask, centre_ras, names, segmental_radial, segmental_circumferential)
