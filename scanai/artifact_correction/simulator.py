"""A CT motion simulator: a beating digital cardiac phantom scanned while it moves (digest §7.3).

The phantom is a small "mini thorax" in Hounsfield units (air -1000, lung -800, soft tissue 40, bone 700) around a
left ventricle: an elliptical myocardial shell (100 HU) around a contrast-filled blood pool (350 HU), with 2-3
coronary arteries (Ø 3 mm, 400 HU, optional 800 HU calcium) on the epicardium. Over the R-R interval the LV
contracts with :func:`scanai.artifact_correction.cardiac_cycle.contraction` ``c(phase)``: the endocardial radii scale by
``1 - amplitude * c``, the myocardium thickens so its area is conserved, and the whole heart (so its coronaries,
which ride on the epicardium) translates rigidly by ``coronary_shift_mm * c`` along a fixed direction. Optional
breathing (Lujan ``z(t) = b cos^4(pi t / tau)``) shifts the thorax superior-inferior, so an axial slice cuts the
LV ellipsoid and the obliquely running coronaries at another height, and moves the heart slightly anteriorly.

Every part of the phantom is an ellipse (a disk for a vessel), nested so that none overlaps another, which gives
exact analytic parallel-beam line integrals. A window of ``views`` projections over a half-scan is acquired
while the phantom moves (view ``k`` at time ``t_k`` and angle ``pi k / views``, the phantom frozen at
``phase(t_k)`` for that view), Gaussian noise is added in the sinogram domain (scaled so that the image noise is
``protocol.noise_hu``) and the window is reconstructed by filtered back-projection with
:func:`skimage.transform.iradon`. The ground truth is the phantom frozen at the output time, projected and
reconstructed the same way without noise, so the only difference from a phase volume is the motion (and noise).

Image axes: ``x`` runs along image columns, ``y`` along image rows (downwards = posterior), both in mm from the
rotation centre, which is pixel ``(pixels // 2, pixels // 2)`` as in scikit-image. The volumes of
:func:`simulate_phase_sequence` carry a DICOM-like axial geometry (columns towards the patient's left, rows
towards posterior). Vocabulary: one reconstructed window is a **phase volume** (2-D here, or a thin stack of
slices); the set of them is a **phase sequence**.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from scanai.artifact_correction.cardiac_cycle import contraction
from scanai.artifact_correction.reconstruction import (
    AIR_HU,
    MU_WATER_PER_MM,
    ScanProtocol,
    _check_protocol,
    _fbp,
    _noise_gain,
)
from scanai.artifact_correction.timing import PhaseWindow, RPeaks
from scanai.artifact_correction.windows import assign_phases, output_windows
from scanai.core.errors import InputError
from scanai.core.image import Geometry, VolumeSequence
from scanai.core.progress import Progress

LUNG_HU = -800.0
SOFT_TISSUE_HU = 40.0
BONE_HU = 700.0
MYOCARDIUM_HU = 100.0
BLOOD_POOL_HU = 350.0
CORONARY_HU = 400.0
CALCIUM_HU = 800.0


FAT_HU = -95.0
RV_BLOOD_HU = 250.0
STENT_HU = 1500.0


@dataclass(frozen=True)
class Thorax:
    """The still anatomy around the heart: ellipses (centre x, centre y, semi-axis along x, semi-axis along y, HU,
    HU of the part it lies in), in mm from the rotation centre, y towards the image bottom (posterior), each lying
    wholly inside one earlier part (or in air) and overlapping no other; ``heart_in_hu`` is the HU of the part the
    heart lies in. ``extent_mm`` is the largest distance of any part from the centre."""

    parts: tuple[tuple[float, float, float, float, float, float], ...]
    heart_in_hu: float = SOFT_TISSUE_HU

    @property
    def extent_mm(self) -> float:
        return max(float(np.hypot(cx, cy)) + max(a, b) for cx, cy, a, b, _hu, _in in self.parts)


# The mini thorax of the digest's simulator: the heart stays inside |x| < 38 mm, -44.5 < y < 35 mm, clear of all
# of these.
MINI_THORAX = Thorax((
    (0.0, 0.0, 61.0, 52.0, SOFT_TISSUE_HU, AIR_HU),  # body
    (-47.0, -2.0, 9.0, 26.0, LUNG_HU, SOFT_TISSUE_HU), (47.0, -2.0, 9.0, 26.0, LUNG_HU, SOFT_TISSUE_HU),  # lungs
    (0.0, 42.0, 7.0, 7.0, BONE_HU, SOFT_TISSUE_HU), (0.0, -47.0, 6.0, 2.5, BONE_HU, SOFT_TISSUE_HU),  # spine, sternum
))

_CORONARY_GAP_MM = 0.5  # gap between the epicardium and the vessel wall
_CORONARY_TWIST_RAD_PER_MM = 0.012  # the vessels run obliquely: their angle on the epicardium changes with z
_BREATHING_ANTERIOR = 0.15  # anterior in-plane heart shift per mm of superior-inferior breathing shift
_CALCIUM_RADIUS_MM = 0.8


@dataclass(frozen=True)
class HeartPhantom:
    """One simulated subject; lengths in mm, angles in degrees, positions from the image centre.

    centre_mm: LV centre (x, y) at end-diastole (c = 0), x along image columns, y along image rows.
    lv_radii_mm: endocardial semi-axes (a, b) at c = 0, mid-ventricle; ``rotation_deg`` turns axis a from +x.
    wall_mm: myocardial thickness at c = 0 (the epicardium has semi-axes a + wall, b + wall).
    contraction_amplitude: fraction by which the endocardial radii shrink at c = 1 (digest 0.25; 0 = no motion).
    coronary_angles_deg: where the vessels sit on the epicardium (ellipse parameter angle, in the LV frame).
    coronary_shift_mm / coronary_direction_deg: rigid heart translation at c = 1 and its direction (from +x
        towards +y); the coronaries ride on the epicardium, so they move by the epicardial motion plus the shift.
    calcium: an 800 HU plaque inside the first coronary.
    breathing_mm: Lujan amplitude b of the superior-inferior shift ``b cos^4(pi (t - offset) / period)``
        (0 = breath-hold).
    long_axis_mm: LV half-length along z; an axial slice at height z cuts the LV at ``sqrt(1 - (z / L)^2)``
        times its mid-ventricular radii.
    twist_deg: the heart turns by ``twist_deg * c`` about the LV centre.
    pericardial_fat_mm: a fat layer (-95 HU) this thick around the epicardium and its coronaries (0 = none).
    rv_mm: semi-axes (along the LV's axis a, across) of a right ventricle beside the LV, outside the fat, on the
        LV's -a side (3 mm wall of myocardium around 250 HU blood; it contracts half as much); None = no RV.
    papillary: a papillary muscle (myocardium) inside the blood pool.
    stent: a metal stent (1500 HU ring) in the second coronary.
    thorax: the still anatomy (:data:`MINI_THORAX` by default); the heart must lie inside its ``heart_in_hu`` part.
    """

    centre_mm: tuple[float, float] = (1.0, -1.0)
    lv_radii_mm: tuple[float, float] = (15.0, 13.0)
    wall_mm: float = 7.0
    rotation_deg: float = 20.0
    contraction_amplitude: float = 0.25
    coronary_angles_deg: tuple[float, ...] = (60.0, 170.0, 290.0)
    coronary_shift_mm: float = 9.0
    coronary_direction_deg: float = -80.0
    calcium: bool = False
    breathing_mm: float = 0.0
    breathing_period_s: float = 4.0
    breathing_offset_s: float = 0.0
    long_axis_mm: float = 45.0
    coronary_diameter_mm: float = 3.0
    twist_deg: float = 0.0
    pericardial_fat_mm: float = 0.0
    rv_mm: tuple[float, float] | None = None
    papillary: bool = False
    stent: bool = False
    thorax: Thorax = MINI_THORAX

    def __post_init__(self) -> None:
        a, b = (float(r) for r in self.lv_radii_mm)
        if not (a > 0 and b > 0 and self.wall_mm > 0):
            raise InputError(f"The LV radii {self.lv_radii_mm} mm and wall {self.wall_mm} mm must be positive.")
        if not 0.0 <= self.contraction_amplitude < 0.6:
            raise InputError(f"The contraction amplitude must lie in [0, 0.6), got {self.contraction_amplitude}.")
        if not 1 <= len(self.coronary_angles_deg) <= 4:
            raise InputError(f"The phantom needs 1-4 coronaries, got {len(self.coronary_angles_deg)}.")
        if self.breathing_period_s <= 0 or self.long_axis_mm <= 0 or self.coronary_diameter_mm <= 0:
            raise InputError("The breathing period, LV long axis and coronary diameter must be positive.")
        object.__setattr__(self, "centre_mm", (float(self.centre_mm[0]), float(self.centre_mm[1])))
        object.__setattr__(self, "lv_radii_mm", (a, b))
        object.__setattr__(self, "coronary_angles_deg", tuple(float(v) for v in self.coronary_angles_deg))

    def frozen(self) -> HeartPhantom:
        """The same subject without any motion (no contraction, shift, twist or breathing)."""
        return replace(self, contraction_amplitude=0.0, coronary_shift_mm=0.0, breathing_mm=0.0, twist_deg=0.0)


def random_phantom(rng: np.random.Generator, static: bool = False, breathing_probability: float = 0.25) -> HeartPhantom:
    """A random subject inside the safe ranges of the mini thorax.

    Varies the LV size, shape, orientation and position, the wall, the contraction amplitude (0.15-0.30), the
    rigid shift (8-10 mm, within 35 degrees of anterior), 2-3 coronaries, calcium (one in three) and breathing
    (``breathing_probability``, b = 10-15 mm, random start in the breathing cycle). ``static`` gives the same
    draw without motion (``HeartPhantom.frozen``).
    """
    a = rng.uniform(13.0, 17.0)
    b = a * rng.uniform(0.8, 1.0)
    n_coronaries = int(rng.integers(2, 4))
    first = rng.uniform(0.0, 360.0)
    angles = tuple(float((first + i * 360.0 / n_coronaries + rng.uniform(-25, 25)) % 360) for i in range(n_coronaries))
    breathing = rng.random() < breathing_probability
    phantom = HeartPhantom(
        centre_mm=(float(rng.uniform(-2.0, 2.0)), float(rng.uniform(-2.5, 2.5))),
        lv_radii_mm=(float(a), float(b)),
        wall_mm=float(rng.uniform(6.0, 8.0)),
        rotation_deg=float(rng.uniform(0.0, 180.0)),
        contraction_amplitude=float(rng.uniform(0.15, 0.30)),
        coronary_angles_deg=angles,
        coronary_shift_mm=float(rng.uniform(8.0, 10.0)),
        coronary_direction_deg=float(-90.0 + rng.uniform(-35.0, 35.0)),
        calcium=bool(rng.random() < 1.0 / 3.0),
        breathing_mm=float(rng.uniform(10.0, 15.0)) if breathing else 0.0,
        breathing_offset_s=float(rng.uniform(0.0, 4.0)),
        long_axis_mm=float(rng.uniform(40.0, 50.0)),
    )
    return phantom.frozen() if static else phantom




# ----------------------------------------------------------------------------------------------------------------
# phantom state: every part as an ellipse


@dataclass(frozen=True)
class _Ellipses:
    """Ellipses at K time points: arrays (K, E) of centre x/y, semi-axes a/b (mm), angle (rad) of axis a, and per
    part (E,) the absolute HU (painted in order) and the increment over the part it lies in (summed)."""

    cx: np.ndarray
    cy: np.ndarray
    a: np.ndarray
    b: np.ndarray
    angle: np.ndarray
    hu: np.ndarray
    increment: np.ndarray
    coronaries: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 2)))  # (K, n_coronaries, 2) x, y mm


def _phase_fractions(r_peaks: RPeaks, times_s: np.ndarray) -> np.ndarray:
    """Phase fraction in [0, 1) of each time (array of any shape) within its R-R interval."""
    return r_peaks.locate(np.asarray(times_s, dtype=np.float64))[1]


def _breathing_mm(phantom: HeartPhantom, times_s: np.ndarray) -> np.ndarray:
    """Superior-inferior thorax shift (mm) at the times, Lujan ``b cos^4(pi (t - offset) / period)``."""
    times = np.asarray(times_s, dtype=np.float64)
    if phantom.breathing_mm == 0.0:
        return np.zeros_like(times)
    return phantom.breathing_mm * np.cos(np.pi * (times - phantom.breathing_offset_s) / phantom.breathing_period_s) ** 4


def _heart_state(phantom: HeartPhantom, times_s: np.ndarray, r_peaks: RPeaks | None, z_mm: float) -> _Ellipses:
    """The phantom's ellipses at the times (K,); ``r_peaks`` may be None only for a motionless phantom."""
    times = np.atleast_1d(np.asarray(times_s, dtype=np.float64))
    moving = phantom.contraction_amplitude > 0 or phantom.coronary_shift_mm != 0 or phantom.twist_deg != 0
    if moving:
        if r_peaks is None:
            raise InputError("A moving phantom needs R-peak times to know its cardiac phase.")
        c = contraction(_phase_fractions(r_peaks, times))
    else:
        c = np.zeros_like(times)
    k = times.size
    breathing = _breathing_mm(phantom, times)
    z_eff = z_mm - breathing  # the anatomy seen at slice z after the thorax moved by `breathing`
    cut = np.sqrt(np.clip(1.0 - (z_eff / phantom.long_axis_mm) ** 2, 0.05, 1.0))

    a0, b0 = phantom.lv_radii_mm
    a0e, b0e = a0 + phantom.wall_mm, b0 + phantom.wall_mm
    shrink = 1.0 - phantom.contraction_amplitude * c
    endo_a, endo_b = a0 * shrink * cut, b0 * shrink * cut
    # the epicardium scales uniformly so that the myocardial area is conserved
    epi_scale = np.sqrt((a0e * b0e - a0 * b0 + a0 * b0 * shrink**2) / (a0e * b0e))
    epi_a, epi_b = a0e * epi_scale * cut, b0e * epi_scale * cut

    direction = np.deg2rad(phantom.coronary_direction_deg)
    hx = phantom.centre_mm[0] + phantom.coronary_shift_mm * c * np.cos(direction)
    hy = phantom.centre_mm[1] + phantom.coronary_shift_mm * c * np.sin(direction) - _BREATHING_ANTERIOR * breathing
    rotation = np.deg2rad(phantom.rotation_deg + phantom.twist_deg * c)
    cos_r, sin_r = np.cos(rotation), np.sin(rotation)

    def at(u: np.ndarray | float, v: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Image (x, y) of the LV-frame point (u along axis a, v along axis b)."""
        return hx + cos_r * u - sin_r * v, hy + sin_r * u + cos_r * v

    parts: list[tuple] = []  # (cx, cy, a, b, angle, hu, increment), arrays (K,) or scalars

    def add(cx, cy, a, b, angle, hu: float, inside_hu: float) -> None:
        parts.append((cx, cy, a, b, angle, hu, hu - inside_hu))

    for cx, cy, a, b, hu, inside_hu in phantom.thorax.parts:
        add(cx, cy, a, b, 0.0, hu, inside_hu)
    around = phantom.thorax.heart_in_hu
    radius_v = phantom.coronary_diameter_mm / 2.0
    vessel_reach = radius_v * 2.0 + _CORONARY_GAP_MM
    fat = phantom.pericardial_fat_mm
    if fat > 0:
        add(hx, hy, epi_a + vessel_reach + fat, epi_b + vessel_reach + fat, rotation, FAT_HU, around)
        around = FAT_HU
    if phantom.rv_mm is not None:
        rv_shrink = 1.0 - 0.5 * phantom.contraction_amplitude * c
        rv_a, rv_b = phantom.rv_mm[0] * rv_shrink * cut, phantom.rv_mm[1] * rv_shrink * cut
        # beyond the LV's fat (or vessels) on its -a side, with a 1.5 mm gap: the two never overlap
        distance = epi_a + vessel_reach + fat + 1.5 + rv_a
        rx, ry = at(-distance, 0.0)
        add(rx, ry, rv_a, rv_b, rotation, MYOCARDIUM_HU, phantom.thorax.heart_in_hu)
        add(rx, ry, np.maximum(rv_a - 3.0, 0.5), np.maximum(rv_b - 3.0, 0.5), rotation, RV_BLOOD_HU, MYOCARDIUM_HU)
    add(hx, hy, epi_a, epi_b, rotation, MYOCARDIUM_HU, around)
    add(hx, hy, endo_a, endo_b, rotation, BLOOD_POOL_HU, MYOCARDIUM_HU)
    if phantom.papillary:
        px, py = at(0.45 * endo_a, 0.45 * endo_b)
        size = np.minimum(3.0, 0.35 * np.minimum(endo_a, endo_b))
        add(px, py, size, size * 0.8, rotation, MYOCARDIUM_HU, BLOOD_POOL_HU)

    vessels = []
    for angle_deg in phantom.coronary_angles_deg:
        theta = np.deg2rad(angle_deg) + _CORONARY_TWIST_RAD_PER_MM * z_eff
        x, y = at((epi_a + radius_v + _CORONARY_GAP_MM) * np.cos(theta),
                  (epi_b + radius_v + _CORONARY_GAP_MM) * np.sin(theta))
        vessels.append((x, y, theta))
        add(x, y, radius_v, radius_v, 0.0, CORONARY_HU, around)
    if phantom.calcium:
        x, y, theta = vessels[0]
        offset = radius_v - _CALCIUM_RADIUS_MM - 0.1  # an eccentric plaque against the outer vessel wall
        normal = np.arctan2(np.sin(theta) * (epi_a + 1e-9), np.cos(theta) * (epi_b + 1e-9)) + rotation
        add(x + offset * np.cos(normal), y + offset * np.sin(normal), _CALCIUM_RADIUS_MM, _CALCIUM_RADIUS_MM, 0.0,
            CALCIUM_HU, CORONARY_HU)
    if phantom.stent:
        x, y, _theta = vessels[1 % len(vessels)]
        add(x, y, radius_v - 0.2, radius_v - 0.2, 0.0, STENT_HU, CORONARY_HU)
        add(x, y, radius_v - 0.6, radius_v - 0.6, 0.0, CORONARY_HU, STENT_HU)
    coronaries = np.stack([np.stack([x, y], axis=-1) for x, y, _ in vessels], axis=1)

    def column(index: int) -> np.ndarray:
        return np.stack([np.broadcast_to(np.asarray(part[index], dtype=np.float64), (k,)) for part in parts], 1)

    return _Ellipses(column(0), column(1), column(2), column(3), column(4),
                     np.array([part[5] for part in parts]), np.array([part[6] for part in parts]), coronaries)


def _pixel_axis_mm(protocol: ScanProtocol) -> np.ndarray:
    """(pixels,) mm coordinate of each pixel centre (and detector bin) along one axis, 0 at ``pixels // 2``."""
    return (np.arange(protocol.pixels) - protocol.pixels // 2) * protocol.pixel_mm


def _inside(state: _Ellipses, index: int, part: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean mask of the points (x, y) inside ellipse ``part`` at time ``index``."""
    dx, dy = x - state.cx[index, part], y - state.cy[index, part]
    cos_p, sin_p = np.cos(state.angle[index, part]), np.sin(state.angle[index, part])
    u, v = cos_p * dx + sin_p * dy, -sin_p * dx + cos_p * dy
    return (u / state.a[index, part]) ** 2 + (v / state.b[index, part]) ** 2 <= 1.0


def _render(state: _Ellipses, index: int, x: np.ndarray, y: np.ndarray, additive: bool = False) -> np.ndarray:
    """HU at points (x, y) mm at time ``index``: parts painted in order (or their increments summed)."""
    image = np.full(np.broadcast(x, y).shape, AIR_HU)
    for part in range(state.hu.size):
        inside = _inside(state, index, part, x, y)
        if additive:
            image = image + inside * state.increment[part]
        else:
            image = np.where(inside, state.hu[part], image)
    return image


def _detector_samples_mm(protocol: ScanProtocol) -> np.ndarray:
    """(2 * pixels,) detector positions (mm) sampled per view: two per bin, a quarter bin either side of its centre
    (all the first samples, then all the second ones)."""
    offsets = np.array([-0.25, 0.25]) * protocol.pixel_mm
    return (_pixel_axis_mm(protocol)[None, :] + offsets[:, None]).ravel()


def _sinogram(state: _Ellipses, protocol: ScanProtocol) -> np.ndarray:
    """Analytic parallel-beam sinogram (pixels, views) of attenuation ``HU + 1000`` in pixel units. The phantom is
    taken at one time index per ray (K = views * 2 * pixels, ordered as ``(view, detector sample)`` of
    :func:`_detector_samples_mm`: a fan beam), per view (K = views) or the same for all (K = 1). Detector bin p
    sits at ``(p - pixels // 2) * pixel_mm`` and view k at ``theta = pi k / views`` integrates along the lines
    ``x cos(theta) - y sin(theta) = s``, as :func:`skimage.transform.radon` does; each bin averages two samples."""
    samples = _detector_samples_mm(protocol)
    views, count = protocol.views, samples.size
    times = state.cx.shape[0]
    shape = (views, count, -1) if times == views * count else (views, 1, -1) if times == views else (1, 1, -1)
    cx, cy, a, b, angle = (getattr(state, name).reshape(shape) for name in ("cx", "cy", "a", "b", "angle"))
    theta = np.deg2rad(protocol.view_angles_deg())[:, None, None]  # (V, 1, 1)
    centre = cx * np.cos(theta) - cy * np.sin(theta)
    r2 = (a * np.cos(theta + angle)) ** 2 + (b * np.sin(theta + angle)) ** 2
    weight = 2.0 * a * b / r2 * state.increment / protocol.pixel_mm  # (V, 1 or S, E)
    t = samples[None, :, None] - centre  # (V, S, E)
    chord = np.sqrt(np.maximum(r2 - t * t, 0.0))
    projection = np.sum(weight * chord, axis=2)  # (V, S)
    projection = projection.reshape(views, 2, protocol.pixels).mean(axis=1)
    return projection.T.copy()


def _add_noise(sinogram: np.ndarray, protocol: ScanProtocol, rng: np.random.Generator) -> np.ndarray:
    """The sinogram with noise of image standard deviation ``protocol.noise_hu``: the same on every ray ("white"),
    or ("photon") with variance ``exp(p - p_median)`` times that, ``p`` the ray's line integral in attenuation units
    (water 0.0192 / mm) and ``p_median`` its median over the rays through the object."""
    sigma = protocol.noise_hu / _noise_gain(protocol.pixels, protocol.views, protocol.filter_name)
    if protocol.noise_model == "photon":
        p = MU_WATER_PER_MM * protocol.pixel_mm * sinogram / 1000.0
        through = p > 0.1 * p.max()
        sigma = sigma * np.exp((p - np.median(p[through])) / 2.0) if through.any() else sigma
    return sinogram + rng.normal(0.0, 1.0, size=sinogram.shape) * sigma


# ----------------------------------------------------------------------------------------------------------------
# public API


def phantom_hu(phantom: HeartPhantom, time_s: float, r_peaks: RPeaks | None, protocol: ScanProtocol = ScanProtocol(),
               z_mm: float = 0.0) -> np.ndarray:
    """The phantom frozen at ``time_s`` sampled at the pixel centres: (pixels, pixels) float HU, exact labels.

    ``z_mm`` is the axial slice height (mm, 0 = mid-ventricle). ``r_peaks`` may be None for a motionless phantom.
    """
    _check_protocol(protocol)
    state = _heart_state(phantom, np.array([time_s]), r_peaks, z_mm)
    axis = _pixel_axis_mm(protocol)
    return _render(state, 0, axis[None, :], axis[:, None])


def coronary_points(phantom: HeartPhantom, time_s: float, r_peaks: RPeaks | None,
                    protocol: ScanProtocol = ScanProtocol(), z_mm: float = 0.0) -> list[tuple[float, float]]:
    """Centres of the coronary cross-sections at ``time_s`` as (row, col) in (fractional) pixels."""
    _check_protocol(protocol)
    state = _heart_state(phantom, np.array([time_s]), r_peaks, z_mm)
    centre = protocol.pixels // 2
    return [(float(y / protocol.pixel_mm + centre), float(x / protocol.pixel_mm + centre))
            for x, y in state.coronaries[0]]


def heart_centre_px(case: SimulatedCase) -> tuple[float, float]:
    """(row, column) pixel of the left ventricle's centre at end-diastole on ``case``'s own grid (pixel
    ``inputs.shape[-1] // 2`` is the rotation centre, x runs along columns, y along rows)."""
    middle = case.inputs.shape[-1] // 2
    x_mm, y_mm = case.phantom.centre_mm
    return middle + y_mm / case.pixel_mm, middle + x_mm / case.pixel_mm


def heart_mask(phantom: HeartPhantom, time_s: float, r_peaks: RPeaks | None,
               protocol: ScanProtocol = ScanProtocol(), margin_mm: float = 8.0, z_mm: float = 0.0) -> np.ndarray:
    """(pixels, pixels) bool: the heart at ``time_s`` (inside the epicardium, and the right ventricle where there is
    one, grown by ``margin_mm`` on each semi-axis, which covers the coronaries), e.g. to measure errors where the
    motion is rather than over the whole, mostly static and noise-dominated, slice."""
    _check_protocol(protocol)
    state = _heart_state(phantom, np.array([time_s]), r_peaks, z_mm)
    first = len(phantom.thorax.parts) + (phantom.pericardial_fat_mm > 0)  # the RV wall or the epicardium
    outlines = [first, first + 2] if phantom.rv_mm is not None else [first]  # RV wall and epicardium
    grown = replace(state, a=state.a + margin_mm, b=state.b + margin_mm)
    axis = _pixel_axis_mm(protocol)
    return np.logical_or.reduce([_inside(grown, 0, part, axis[None, :], axis[:, None]) for part in outlines])


def view_times(window: PhaseWindow, protocol: ScanProtocol) -> np.ndarray:
    """Acquisition time (s) of each parallel view (views,), or with a fan beam of each ray (views * 2 * pixels,
    ordered as :func:`_sinogram` reads them).

    The source turns at ``omega = (pi + fan) / d`` over the window of duration ``d``; the parallel ray at angle
    ``theta_k = pi (k + 1/2) / views`` and detector offset ``s`` was measured when the source stood at
    ``theta_k - asin(s / R)``: ``t = start + (theta_k - asin(s / R) + fan / 2) / omega``. Without a fan this is
    ``start + (k + 1/2) * d / views``.
    """
    duration = window.end_s - window.start_s
    if not duration > 0:
        raise InputError(f"The time window {window.start_s:g}-{window.end_s:g} s is empty.",
                         "Give a window whose end is after its start.")
    if protocol.fan_deg == 0:
        return window.start_s + (np.arange(protocol.views) + 0.5) * (duration / protocol.views)
    fan = np.deg2rad(protocol.fan_deg)
    omega = (np.pi + fan) / duration
    theta = np.pi * (np.arange(protocol.views) + 0.5) / protocol.views
    gamma = np.arcsin(np.clip(_detector_samples_mm(protocol) / protocol.source_radius_mm, -1.0, 1.0))
    return (window.start_s + (theta[:, None] - gamma[None, :] + fan / 2.0) / omega).ravel()


def reconstruct_window(phantom: HeartPhantom, window: PhaseWindow, r_peaks: RPeaks | None,
                       protocol: ScanProtocol = ScanProtocol(), rng: np.random.Generator | None = None,
                       z_mm: float = 0.0, still_sinogram: np.ndarray | None = None) -> np.ndarray:
    """One phase volume (2-D slice): (pixels, pixels) HU reconstructed from the views acquired during ``window``.

    Each view (each ray with a fan beam) is taken at its :func:`view_times` with the phantom frozen at that time's
    cardiac phase; ``still_sinogram`` (pixels, views), e.g. the projection of a still texture, is added; noise
    (image std ``protocol.noise_hu``, :func:`_add_noise`) is added when ``rng`` is given (None = noise-free); FBP
    with :func:`skimage.transform.iradon`.
    """
    _check_protocol(protocol)
    times = view_times(window, protocol)
    if r_peaks is not None:
        r_peaks.check_covers(float(times.min()), float(times.max()))
    sinogram = _sinogram(_heart_state(phantom, times, r_peaks, z_mm), protocol)
    if still_sinogram is not None:
        sinogram = sinogram + still_sinogram
    if rng is not None and protocol.noise_hu > 0:
        sinogram = _add_noise(sinogram, protocol, rng)
    return _fbp(sinogram, protocol)


def ground_truth(phantom: HeartPhantom, time_s: float, r_peaks: RPeaks | None,
                 protocol: ScanProtocol = ScanProtocol(), z_mm: float = 0.0,
                 still_sinogram: np.ndarray | None = None) -> np.ndarray:
    """The phantom frozen at ``time_s`` (plus ``still_sinogram``), projected and reconstructed like a phase volume,
    without noise: (pixels, pixels) HU."""
    _check_protocol(protocol)
    if r_peaks is not None:
        r_peaks.check_covers(float(time_s), float(time_s))
    sinogram = _sinogram(_heart_state(phantom, np.array([time_s]), r_peaks, z_mm), protocol)
    return _fbp(sinogram if still_sinogram is None else sinogram + still_sinogram, protocol)


def random_r_peaks(rng: np.random.Generator, count: int = 6, rr_range_s: tuple[float, float] = (0.6, 1.1),
                   arrhythmia_probability: float = 0.5, jitter: float = 0.10) -> RPeaks:
    """R peaks from 0 s: a mean RR drawn in ``rr_range_s`` and, with ``arrhythmia_probability``, each interval
    jittered by a uniform ``+-jitter`` fraction (``t_n = t_{n-1} + RR (1 + eps_n)``, digest §7.3)."""
    rr = rng.uniform(*rr_range_s)
    eps = rng.uniform(-jitter, jitter, size=count - 1) if rng.random() < arrhythmia_probability else np.zeros(count - 1)
    return RPeaks(np.concatenate([[0.0], np.cumsum(rr * (1.0 + eps))]))


@dataclass(frozen=True)
class SimulatedCase:
    """One training/test sample (2-D).

    inputs: (N, H, W) HU phase volumes, chronological; windows: their acquisition windows (with phase_pct).
    target: (M, H, W) HU ground truth at ``target_windows`` (from
    :func:`scanai.artifact_correction.windows.output_windows`).
    coronaries: vessel centres (row, col) in pixels at the mid-time of the first target window.
    """

    inputs: np.ndarray
    windows: list[PhaseWindow]
    target: np.ndarray
    target_windows: list[PhaseWindow]
    r_peaks: RPeaks
    coronaries: list[tuple[float, float]]
    phantom: HeartPhantom
    pixel_mm: float


def simulate_case(rng: np.random.Generator, n_inputs: int = 4, n_outputs: int = 1,
                  protocol: ScanProtocol = ScanProtocol(), centre_phase_pct: float | None = None,
                  spacing_s: float | None = None, static: bool = False, phantom: HeartPhantom | None = None,
                  r_peaks: RPeaks | None = None, still_sinogram: np.ndarray | None = None) -> SimulatedCase:
    """A random subject scanned in ``n_inputs`` consecutive half-scan windows and its ground truth.

    The window mid-points are ``spacing_s`` apart (default 0.03 s, ¶91) and centred on ``centre_phase_pct`` of
    the third R-R interval (drawn uniformly over the cycle when None); the rhythm comes from
    :func:`random_r_peaks` (RR 0.6-1.1 s, half the cases with +-10 % arrhythmia) unless ``r_peaks`` is given. The
    target windows follow the ¶68-¶70 rule (:func:`scanai.artifact_correction.windows.output_windows`); each target
    is the noise-free :func:`ground_truth` at its window's mid-time. The subject is :func:`random_phantom` unless
    ``phantom`` is given; ``static`` freezes it (zero-motion case); ``still_sinogram`` is a still part's projection
    added to every window and to the truth. Deterministic for a seeded ``rng``.
    """
    if n_inputs < 2 or not 1 <= n_outputs < n_inputs:
        raise InputError(f"A case needs at least 2 inputs and 1 <= outputs < inputs, got {n_inputs} -> {n_outputs}.",
                         "Choose fewer outputs than inputs (claims 1/13 of the patent).")
    spacing = 0.03 if spacing_s is None else float(spacing_s)
    if phantom is None:
        phantom = random_phantom(rng, static=static)
    elif static:
        phantom = phantom.frozen()
    r_peaks = random_r_peaks(rng) if r_peaks is None else r_peaks
    fraction = rng.uniform(0.0, 1.0) if centre_phase_pct is None else float(centre_phase_pct) / 100.0
    cycle = min(2, len(r_peaks.times_s) - 2)
    centre_s = r_peaks.time_of(cycle, fraction)
    half = protocol.half_scan_s / 2.0
    mids = centre_s + (np.arange(n_inputs) - (n_inputs - 1) / 2.0) * spacing
    windows = assign_phases([PhaseWindow(float(m - half), float(m + half)) for m in mids], r_peaks)
    inputs = np.stack([reconstruct_window(phantom, w, r_peaks, protocol, rng, still_sinogram=still_sinogram)
                       for w in windows])
    target_windows = assign_phases(list(output_windows(windows, n_outputs)), r_peaks)
    target = np.stack([ground_truth(phantom, w.mid_s, r_peaks, protocol, still_sinogram=still_sinogram)
                       for w in target_windows])
    points = coronary_points(phantom, target_windows[0].mid_s, r_peaks, protocol)
    return SimulatedCase(inputs, windows, target, target_windows, r_peaks, points, phantom, protocol.pixel_mm)


@dataclass(frozen=True)
class PhaseSequenceTruth:
    """What :func:`simulate_phase_sequence` knows exactly.

    ground_truth: (T, K, J, I) HU, the frozen phantom at each phase volume's mid-time, reconstructed noise-free.
    windows: the acquisition window of each phase volume (cycle_index, phase_pct filled).
    target / target_windows: (M, K, J, I) ground truth at the ¶68-¶70 output windows of the chronologically
        ranked inputs (M = ``n_outputs``; empty when fewer than 2 phases).
    coronaries: vessel centres (row, col) in pixels on the middle slice at the first target's mid-time.
    """

    ground_truth: np.ndarray
    windows: list[PhaseWindow]
    target: np.ndarray
    target_windows: list[PhaseWindow]
    coronaries: list[tuple[float, float]]
    phantom: HeartPhantom
    slice_z_mm: tuple[float, ...]


def phase_geometry(protocol: ScanProtocol, slices: int, slice_mm: float) -> Geometry:
    """Axial geometry of a simulated phase volume: spacing (pixel, pixel, slice) mm, columns towards the patient's
    left and rows towards posterior (LPS-aligned, as DICOM axial CT), centred on the rotation axis."""
    centre = protocol.pixels // 2
    origin = (centre * protocol.pixel_mm, centre * protocol.pixel_mm, -(slices - 1) / 2.0 * slice_mm)
    return Geometry((protocol.pixel_mm, protocol.pixel_mm, float(slice_mm)), origin,
                    ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0)))


def simulate_phase_sequence(rng: np.random.Generator, phases_pct, slices: int = 1,
                            protocol: ScanProtocol = ScanProtocol(), slice_mm: float = 2.0, rr_s: float = 1.0,
                            n_outputs: int = 1, static: bool = False, phantom: HeartPhantom | None = None,
                            noise: bool = True, progress: Progress | None = None,
                            ) -> tuple[VolumeSequence, RPeaks, PhaseSequenceTruth]:
    """A phase sequence of thin 3-D phase volumes at ``phases_pct`` (%RR) of one regular cardiac cycle.

    Each phase volume is a half-scan window centred on its phase in the second R-R interval (R peaks every
    ``rr_s`` from 0 s); ``slices`` axial slices ``slice_mm`` apart, centred on mid-ventricle (the LV ellipsoid and
    the oblique coronaries change along z). Returns the sequence (frames (T, slices, pixels, pixels) HU, index
    "phase" in "%", geometry :func:`phase_geometry`), the R peaks, and the :class:`PhaseSequenceTruth`.
    """
    progress = Progress.ensure(progress)
    phases = [float(p) for p in np.atleast_1d(np.asarray(phases_pct, dtype=np.float64))]
    if not phases or not all(0.0 <= p < 100.0 for p in phases):
        raise InputError(f"Phases must be given in %RR within [0, 100), got {phases_pct}.")
    if slices < 1 or slice_mm <= 0:
        raise InputError(f"Need at least one slice and a positive slice spacing, got {slices} x {slice_mm} mm.")
    if phantom is None:
        phantom = random_phantom(rng, static=static)
    elif static:
        phantom = phantom.frozen()
    r_peaks = RPeaks.regular(rr_s, 4, 0.0)
    half = protocol.half_scan_s / 2.0
    mids = [r_peaks.time_of(1, p / 100.0) for p in phases]
    windows = assign_phases([PhaseWindow(m - half, m + half) for m in mids], r_peaks)
    z_values = tuple(float((k - (slices - 1) / 2.0) * slice_mm) for k in range(slices))
    noise_rng = rng if noise else None
    frames = np.empty((len(phases), slices, protocol.pixels, protocol.pixels))
    truth = np.empty_like(frames)
    steps = 2 * len(phases) * slices
    for t, window in enumerate(windows):
        for k, z in enumerate(z_values):
            progress((2 * (t * slices + k)) / steps, "Simulating phase volume")
            frames[t, k] = reconstruct_window(phantom, window, r_peaks, protocol, noise_rng, z)
            truth[t, k] = ground_truth(phantom, mids[t], r_peaks, protocol, z)
    ranked = sorted(windows, key=lambda w: w.mid_s)
    target_windows: list[PhaseWindow] = []
    if len(phases) >= 2 and 1 <= n_outputs < len(phases):
        target_windows = assign_phases(list(output_windows(ranked, n_outputs)), r_peaks)
    target = np.stack([np.stack([ground_truth(phantom, w.mid_s, r_peaks, protocol, z) for z in z_values])
                       for w in target_windows]) if target_windows else np.empty((0, *frames.shape[1:]))
    point_time = target_windows[0].mid_s if target_windows else mids[0]
    points = coronary_points(phantom, point_time, r_peaks, protocol, z_values[(slices - 1) // 2])
    progress(1.0, "Phase sequence simulated")
    sequence = VolumeSequence(frames, phase_geometry(protocol, slices, slice_mm), tuple(phases), "phase", "%")
    return sequence, r_peaks, PhaseSequenceTruth(truth, windows, target, target_windows, points, phantom, z_values)
