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


# The static mini thorax, (centre x, centre y, semi-axis along x, semi-axis along y, HU), in mm; y points to the
# image bottom (posterior). The heart stays inside |x| < 38 mm, -44.5 < y < 35 mm, clear of all of these.
_BODY = (0.0, 0.0, 61.0, 52.0, SOFT_TISSUE_HU)
_LUNGS = ((-47.0, -2.0, 9.0, 26.0, LUNG_HU), (47.0, -2.0, 9.0, 26.0, LUNG_HU))
_BONES = ((0.0, 42.0, 7.0, 7.0, BONE_HU), (0.0, -47.0, 6.0, 2.5, BONE_HU))  # vertebral body, sternum

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
        """The same subject without any motion (no contraction, no shift, no breathing)."""
        return replace(self, contraction_amplitude=0.0, coronary_shift_mm=0.0, breathing_mm=0.0)


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
    moving = phantom.contraction_amplitude > 0 or phantom.coronary_shift_mm != 0
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
    rotation = np.deg2rad(phantom.rotation_deg)
    cos_r, sin_r = np.cos(rotation), np.sin(rotation)

    radius_v = phantom.coronary_diameter_mm / 2.0
    vessels = []
    for angle_deg in phantom.coronary_angles_deg:
        theta = np.deg2rad(angle_deg) + _CORONARY_TWIST_RAD_PER_MM * z_eff
        u = (epi_a + radius_v + _CORONARY_GAP_MM) * np.cos(theta)
        v = (epi_b + radius_v + _CORONARY_GAP_MM) * np.sin(theta)
        vessels.append((hx + cos_r * u - sin_r * v, hy + sin_r * u + cos_r * v, theta))

    parts_static = [_BODY, *_LUNGS, *_BONES]
    cx = [np.full(k, p[0]) for p in parts_static]
    cy = [np.full(k, p[1]) for p in parts_static]
    sa = [np.full(k, p[2]) for p in parts_static]
    sb = [np.full(k, p[3]) for p in parts_static]
    ang = [np.zeros(k) for _ in parts_static]
    hu = [p[4] for p in parts_static]
    inc = [SOFT_TISSUE_HU - AIR_HU] + [p[4] - SOFT_TISSUE_HU for p in (*_LUNGS, *_BONES)]

    for a_, b_, value, parent in ((epi_a, epi_b, MYOCARDIUM_HU, SOFT_TISSUE_HU),
                                  (endo_a, endo_b, BLOOD_POOL_HU, MYOCARDIUM_HU)):
        cx.append(hx)
        cy.append(hy)
        sa.append(a_)
        sb.append(b_)
        ang.append(np.full(k, rotation))
        hu.append(value)
        inc.append(value - parent)
    for x, y, _theta in vessels:
        cx.append(x)
        cy.append(y)
        sa.append(np.full(k, radius_v))
        sb.append(np.full(k, radius_v))
        ang.append(np.zeros(k))
        hu.append(CORONARY_HU)
        inc.append(CORONARY_HU - SOFT_TISSUE_HU)
    if phantom.calcium:
        x, y, theta = vessels[0]
        offset = radius_v - _CALCIUM_RADIUS_MM - 0.1  # an eccentric plaque against the outer vessel wall
        normal = np.arctan2(np.sin(theta) * (epi_a + 1e-9), np.cos(theta) * (epi_b + 1e-9)) + rotation
        cx.append(x + offset * np.cos(normal))
        cy.append(y + offset * np.sin(normal))
        sa.append(np.full(k, _CALCIUM_RADIUS_MM))
        sb.append(np.full(k, _CALCIUM_RADIUS_MM))
        ang.append(np.zeros(k))
        hu.append(CALCIUM_HU)
        inc.append(CALCIUM_HU - CORONARY_HU)
    coronaries = np.stack([np.stack([x, y], axis=-1) for x, y, _ in vessels], axis=1)
    return _Ellipses(np.stack(cx, 1), np.stack(cy, 1), np.stack(sa, 1), np.stack(sb, 1), np.stack(ang, 1),
                     np.asarray(hu), np.asarray(inc), coronaries)


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


def _sinogram(state: _Ellipses, protocol: ScanProtocol) -> np.ndarray:
    """Analytic parallel-beam sinogram (pixels, views) of attenuation ``HU + 1000`` in pixel units, view k from the
    phantom at time index k (or the single time index 0 for every view). Detector bin p sits at
    ``(p - pixels // 2) * pixel_mm`` and view k at ``theta = pi k / views`` integrates along the lines
    ``x cos(theta) - y sin(theta) = s``, as :func:`skimage.transform.radon` does; each bin averages two samples."""
    theta = np.deg2rad(protocol.view_angles_deg())[:, None]  # (V, 1)
    pick = slice(None) if state.cx.shape[0] == protocol.views else np.zeros(protocol.views, dtype=int)
    cx, cy, a, b, angle = (getattr(state, name)[pick] for name in ("cx", "cy", "a", "b", "angle"))  # (V, E)
    centre = cx * np.cos(theta) - cy * np.sin(theta)
    r2 = (a * np.cos(theta + angle)) ** 2 + (b * np.sin(theta + angle)) ** 2
    weight = 2.0 * a * b / r2 * state.increment / protocol.pixel_mm  # (V, E)
    detector = _pixel_axis_mm(protocol)
    offsets = np.array([-0.25, 0.25]) * protocol.pixel_mm
    samples = (detector[None, :] + offsets[:, None]).ravel()  # (2P,)
    t = samples[None, None, :] - centre[:, :, None]  # (V, E, 2P)
    chord = np.sqrt(np.maximum(r2[:, :, None] - t * t, 0.0))
    projection = np.einsum("ve,vep->vp", weight, chord)  # (V, 2P)
    projection = projection.reshape(protocol.views, offsets.size, protocol.pixels).mean(axis=1)
    return projection.T.copy()


















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


def heart_mask(phantom: HeartPhantom, time_s: float, r_peaks: RPeaks | None,
               protocol: ScanProtocol = ScanProtocol(), margin_mm: float = 8.0, z_mm: float = 0.0) -> np.ndarray:
    """(pixels, pixels) bool: the heart at ``time_s`` (inside the epicardium grown by ``margin_mm`` on each
    semi-axis, which covers the coronaries), e.g. to measure errors where the motion is rather than over the
    whole, mostly static and noise-dominated, slice."""
    _check_protocol(protocol)
    state = _heart_state(phantom, np.array([time_s]), r_peaks, z_mm)
    epicardium = 5  # body, two lungs, two bones, then the epicardium
    grown = replace(state, a=state.a + margin_mm, b=state.b + margin_mm)
    axis = _pixel_axis_mm(protocol)
    return _inside(grown, 0, epicardium, axis[None, :], axis[:, None])


def view_times(window: PhaseWindow, protocol: ScanProtocol) -> np.ndarray:
    """(views,) acquisition time (s) of each view: spread evenly over the window, ``start + (k + 1/2) * d / views``."""
    duration = window.end_s - window.start_s
    if not duration > 0:
        raise InputError(f"The time window {window.start_s:g}-{window.end_s:g} s is empty.",
                         "Give a window whose end is after its start.")
    return window.start_s + (np.arange(protocol.views) + 0.5) * (duration / protocol.views)


def reconstruct_window(phantom: HeartPhantom, window: PhaseWindow, r_peaks: RPeaks | None,
                       protocol: ScanProtocol = ScanProtocol(), rng: np.random.Generator | None = None,
                       z_mm: float = 0.0) -> np.ndarray:
    """One phase volume (2-D slice): (pixels, pixels) HU reconstructed from the views acquired during ``window``.

    View k is taken at ``view_times(window)[k]`` and angle ``pi k / views`` with the phantom frozen at that
    time's cardiac phase; Gaussian noise (image std ``protocol.noise_hu``) is added to the sinogram when ``rng``
    is given (None = noise-free); FBP with :func:`skimage.transform.iradon`.
    """
    _check_protocol(protocol)
    times = view_times(window, protocol)
    if r_peaks is not None:
        r_peaks.check_covers(float(times[0]), float(times[-1]))
    state = _heart_state(phantom, times, r_peaks, z_mm)
    sinogram = _sinogram(state, protocol)
    if rng is not None and protocol.noise_hu > 0:
        sigma = protocol.noise_hu / _noise_gain(protocol.pixels, protocol.views, protocol.filter_name)
        sinogram = sinogram + rng.normal(0.0, sigma, size=sinogram.shape)
    return _fbp(sinogram, protocol)


def ground_truth(phantom: HeartPhantom, time_s: float, r_peaks: RPeaks | None,
                 protocol: ScanProtocol = ScanProtocol(), z_mm: float = 0.0) -> np.ndarray:
    """The phantom frozen at ``time_s``, projected and reconstructed like a phase volume, without noise:
    (pixels, pixels) HU."""
    _check_protocol(protocol)
    if r_peaks is not None:
        r_peaks.check_covers(float(time_s), float(time_s))
    return _fbp(_sinogram(_heart_state(phantom, np.array([time_s]), r_peaks, z_mm), protocol), protocol)


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
                  r_peaks: RPeaks | None = None) -> SimulatedCase:
    """A random subject scanned in ``n_inputs`` consecutive half-scan windows and its ground truth.

    The window mid-points are ``spacing_s`` apart (default 0.03 s, ¶91) and centred on ``centre_phase_pct`` of
    the third R-R interval (drawn uniformly over the cycle when None); the rhythm comes from
    :func:`random_r_peaks` (RR 0.6-1.1 s, half the cases with +-10 % arrhythmia) unless ``r_peaks`` is given. The
    target windows follow the ¶68-¶70 rule (:func:`scanai.artifact_correction.windows.output_windows`); each target
    is the noise-free :func:`ground_truth` at its window's mid-time. The subject is :func:`random_phantom` unless
    ``phantom`` is given; ``static`` freezes it (zero-motion case). Deterministic for a seeded ``rng``.
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
    inputs = np.stack([reconstruct_window(phantom, w, r_peaks, protocol, rng) for w in windows])
    target_windows = assign_phases(list(output_windows(windows, n_outputs)), r_peaks)
    target = np.stack([ground_truth(phantom, w.mid_s, r_peaks, protocol) for w in target_windows])
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
