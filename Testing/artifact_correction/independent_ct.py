"""A second CT motion simulator, written apart from ``scanai.artifact_correction.simulator`` and sharing none of its
code, to check the motion-artifact correction on physics it was not built from (issue 27).

What differs from the training simulator:

* **Anatomy**: a wide thorax (chest wall with subcutaneous fat, pectoral muscle, two lungs, a spine with its canal,
  ribs and a sternum, descending aorta) around a heart with pericardial fat, right ventricle, left ventricle
  (myocardium and contrast pool), ascending aorta and 2-3 coronaries (optionally calcified). Rasterised on a
  supersampled grid and box-averaged (partial volume), not analytic line integrals.
* **Motion**: the heart (with its fat and coronaries) follows a left-ventricular volume curve ``v(phase)`` (rapid
  ejection to end-systole at ~38 %, rapid filling, diastasis, atrial kick at ~85 %); every heart point is scaled
  towards the LV centre by ``1 - a v``, turned by ``w v`` and shifted by ``d v`` (an affine map per instant).
* **Scan**: a fan-beam half-scan rebinned to parallel rays: source angles over 180 deg + the fan angle, so each
  detector channel ``s`` of the parallel view at angle ``theta`` was measured at its own time
  ``t = t0 + (theta - asin(s / R) + fan / 2) / omega`` (R the source radius); the sinogram at each (view, channel)
  is interpolated in time between ``skimage.transform.radon`` sinograms of the heart frozen at a few instants.
* **Noise**: photon-count noise (Gaussian approximation of Poisson, variance ``exp(p) / I0`` for line integral
  ``p`` in attenuation units), so it is heavier along long paths; FBP with the kernel of the case.

The truth is the heart frozen at the output window's centre, scanned and reconstructed the same way without
noise. All lengths in mm, times in s, images (H, W) in HU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MU_WATER_PER_MM = 0.0192  # linear attenuation of water at ~70 keV, 1/mm


@dataclass(frozen=True)
class Settings:
    """One simulator setting: grid, scan and subject parameters (see the module docstring)."""

    pixels: int = 128
    pixel_mm: float = 1.6
    heart_rate_bpm: float = 75.0
    rotation_s: float = 0.28
    fan_deg: float = 50.0
    source_radius_mm: float = 570.0
    views: int = 144
    time_samples: int = 10
    photons: float = 4e4
    kernel: str = "hann"
    fat_mm: float = 12.0
    phase_step_pct: float = 3.0
    centre_phase_pct: float = 70.0
    motion_scale: float = 1.0
    calcium: bool = True


def volume_curve(phase: np.ndarray) -> np.ndarray:
    """Fraction of the stroke volume ejected at ``phase`` (0-1 of the R-R interval): 0 at end-diastole, 1 at
    end-systole (~0.38), back to ~0.15 after rapid filling, ~0.1 in diastasis, 0 after the atrial kick."""
    phase = np.mod(phase, 1.0)
    knots = np.array([0.0, 0.05, 0.38, 0.55, 0.75, 0.85, 0.95, 1.0])
    values = np.array([0.0, 0.05, 1.0, 0.25, 0.12, 0.1, 0.0, 0.0])
    return np.interp(phase, knots, values)


@dataclass(frozen=True)
class Subject:
    """Random anatomy: heart centre, sizes, coronary angles (rad), motion amplitudes."""

    centre: tuple[float, float]
    lv_radius: float
    wall: float
    coronary_angles: tuple[float, ...]
    contraction: float
    twist_rad: float
    shift: tuple[float, float]
    body: tuple[float, float]


def random_subject(rng: np.random.Generator, settings: Settings) -> Subject:
    """A random subject for ``settings`` (its heart placed left-anterior of the thorax centre)."""
    angles = tuple(rng.uniform(0, 2 * np.pi, size=int(rng.integers(2, 4))))
    scale = settings.motion_scale
    return Subject(centre=(rng.uniform(8, 16), rng.uniform(-12, -4)), lv_radius=rng.uniform(18, 23),
                   wall=rng.uniform(8, 11), coronary_angles=angles, contraction=scale * rng.uniform(0.18, 0.28),
                   twist_rad=scale * rng.uniform(0.05, 0.12), shift=(scale * rng.uniform(-5, 5),
                                                                     scale * rng.uniform(4, 8)),
                   body=(rng.uniform(88, 96), rng.uniform(68, 74)))


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0


def _thorax(x: np.ndarray, y: np.ndarray, subject: Subject, settings: Settings) -> np.ndarray:
    """The still anatomy in HU on points (x, y) (mm; y posterior)."""
    a, b = subject.body
    image = np.full(x.shape, -1000.0)
    fat = settings.fat_mm
    image[_ellipse(x, y, 0, 0, a, b)] = -100.0  # subcutaneous fat
    image[_ellipse(x, y, 0, 0, a - fat, b - fat)] = 45.0  # muscle / mediastinum
    for side in (-1, 1):
        image[_ellipse(x, y, side * 42, 2, 30, 42) & ~_ellipse(x, y, side * 8, 2, 22, 46)] = -850.0  # lungs
        for k in range(3):  # ribs cut obliquely
            angle = np.deg2rad(200 + 35 * k) if side < 0 else np.deg2rad(-20 - 35 * k)
            rx, ry = (a - fat - 5) * np.cos(angle) * side * -1, (b - fat - 5) * np.sin(angle)
            image[_ellipse(x, y, rx, ry, 4.0, 2.5)] = 650.0
    image[_ellipse(x, y, 0, 48, 14, 12)] = 550.0  # vertebral body
    image[_ellipse(x, y, 0, 62, 5, 5)] = 15.0  # spinal canal
    image[_ellipse(x, y, 0, -b + fat + 3, 9, 3)] = 500.0  # sternum
    image[_ellipse(x, y, -18, 40, 11, 11)] = 300.0  # descending aorta
    return image


def _to_end_diastole(x: np.ndarray, y: np.ndarray, subject: Subject, v: float) -> tuple[np.ndarray, np.ndarray]:
    """Heart points (x, y) (mm) at state ``v`` -> their end-diastolic place (u, w) in the LV frame (about the LV
    centre): the inverse of the instant's affine map (scale, turn, shift)."""
    cx, cy = subject.centre
    scale = 1.0 - subject.contraction * v
    angle = subject.twist_rad * v
    u, w = x - cx - subject.shift[0] * v, y - cy - subject.shift[1] * v
    cos, sin = np.cos(-angle), np.sin(-angle)
    return (cos * u - sin * w) / scale, (sin * u + cos * w) / scale


def _from_end_diastole(u: np.ndarray, w: np.ndarray, subject: Subject, v: float) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of :func:`_to_end_diastole`: end-diastolic LV-frame points (u, w) -> (x, y) mm at state ``v``."""
    cx, cy = subject.centre
    scale = 1.0 - subject.contraction * v
    angle = subject.twist_rad * v
    return (cx + subject.shift[0] * v + scale * (np.cos(angle) * u - np.sin(angle) * w),
            cy + subject.shift[1] * v + scale * (np.sin(angle) * u + np.cos(angle) * w))


def _heart(x: np.ndarray, y: np.ndarray, subject: Subject, settings: Settings, v: float) -> np.ndarray:
    """HU of the heart (NaN outside it) at ejection fraction state ``v``: the points are mapped back to the
    end-diastolic heart (:func:`_to_end_diastole`)."""
    u, w = _to_end_diastole(x, y, subject, v)
    image = np.full(x.shape, np.nan)
    r, wall = subject.lv_radius, subject.wall
    image[_ellipse(u, w, -r - 14, -6, 24, 20)] = -90.0  # pericardial fat pad around the RV
    image[_ellipse(u, w, 0, 0, r + wall + 5, r + wall + 4)] = -90.0  # pericardial fat
    image[_ellipse(u, w, -r - 12, -6, 18, 14)] = 40.0  # RV wall
    image[_ellipse(u, w, -r - 12, -6, 15, 11)] = 250.0  # RV blood (less contrast)
    image[_ellipse(u, w, 0, 0, r + wall, r + wall - 1)] = 110.0  # LV myocardium
    image[_ellipse(u, w, 0, 0, r, r - 1)] = 380.0  # LV pool
    image[_ellipse(u, w, r * 0.45, r * 0.55, 4.0, 3.0)] = 110.0  # papillary muscle
    image[_ellipse(u, w, -8, -r - wall - 10, 12, 11)] = 390.0  # ascending aorta
    for k, theta in enumerate(subject.coronary_angles):
        px, py = (r + wall + 2.3) * np.cos(theta), (r + wall + 1.3) * np.sin(theta)
        image[_ellipse(u, w, px, py, 1.8, 1.8)] = 420.0
        if settings.calcium and k == 0:
            image[_ellipse(u, w, px + 0.6, py, 0.9, 0.9)] = 900.0
    return image


def render(subject: Subject, settings: Settings, v: float, supersample: int = 3) -> np.ndarray:
    """(pixels, pixels) HU image of the anatomy at state ``v``, box-averaged from a ``supersample``-times finer
    grid (partial volume)."""
    n, step = settings.pixels * supersample, settings.pixel_mm / supersample
    axis = (np.arange(n) - n / 2 + 0.5) * step
    y, x = np.meshgrid(axis, axis, indexing="ij")
    image = _thorax(x, y, subject, settings)
    heart = _heart(x, y, subject, settings, v)
    image = np.where(np.isnan(heart), image, heart)
    return image.reshape(settings.pixels, supersample, settings.pixels, supersample).mean(axis=(1, 3))


def _mu(hu: np.ndarray, settings: Settings) -> np.ndarray:
    """Attenuation per pixel (1/pixel) from HU; zero outside the reconstruction circle."""
    mu = MU_WATER_PER_MM * settings.pixel_mm * np.clip(1.0 + hu / 1000.0, 0.0, None)
    n = settings.pixels
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    return np.where(xx**2 + yy**2 <= (n / 2 - 1) ** 2, mu, 0.0)


def _hu(mu: np.ndarray, settings: Settings) -> np.ndarray:
    return 1000.0 * (mu / (MU_WATER_PER_MM * settings.pixel_mm) - 1.0)


def scan(subject: Subject, settings: Settings, centre_s: float | None, rr_s: float, rng: np.random.Generator | None,
         frozen_v: float | None = None) -> np.ndarray:
    """FBP image (HU) of a fan-beam half-scan centred at ``centre_s``; ``frozen_v`` scans the heart frozen in that
    state instead (the truth); ``rng`` None = no noise."""
    from skimage.transform import iradon, radon

    angles = np.linspace(0.0, 180.0, settings.views, endpoint=False)
    n = settings.pixels
    offsets = (np.arange(n) - n // 2) * settings.pixel_mm  # detector channels (mm), as skimage centres them
    if frozen_v is not None:
        sinogram = radon(_mu(render(subject, settings, frozen_v), settings), angles, circle=True)
    else:
        fan = np.deg2rad(settings.fan_deg)
        omega = 2 * np.pi / settings.rotation_s
        duration = (np.pi + fan) / omega
        gamma = np.arcsin(np.clip(offsets / settings.source_radius_mm, -1, 1))
        times = centre_s - duration / 2 + (np.deg2rad(angles)[None, :] - gamma[:, None] + fan / 2) / omega
        samples = np.linspace(centre_s - duration / 2, centre_s + duration / 2, settings.time_samples)
        states = volume_curve(samples / rr_s)
        sinograms = np.stack([radon(_mu(render(subject, settings, v), settings), angles, circle=True)
                              for v in states])
        position = np.clip((times - samples[0]) / (samples[1] - samples[0]), 0, settings.time_samples - 1 - 1e-9)
        low = np.floor(position).astype(int)
        weight = position - low
        channel, view = np.indices(times.shape)
        sinogram = (1 - weight) * sinograms[low, channel, view] + weight * sinograms[low + 1, channel, view]
    if rng is not None:
        counts = settings.photons * np.exp(-sinogram)
        sinogram = sinogram + rng.normal(size=sinogram.shape) / np.sqrt(np.maximum(counts, 1.0))
    image = iradon(sinogram, angles, output_size=n, filter_name=settings.kernel, circle=True)
    return _hu(image, settings)


@dataclass(frozen=True)
class Case:
    """Inputs (N, H, W) HU ranked by phase with their phases (%), the truth (H, W), the heart mask (H, W) at the
    truth's instant, the coronary centres (row, column) there, the settings and the subject (its exact motion)."""

    inputs: np.ndarray
    phase_pct: np.ndarray
    truth: np.ndarray
    heart: np.ndarray
    coronaries: list[tuple[float, float]]
    settings: Settings
    subject: Subject


def simulate(seed: int, settings: Settings, static: bool = False) -> Case:
    """Four consecutive half-scans around ``settings.centre_phase_pct`` and their truth; ``static`` freezes the
    heart (zero motion)."""
    rng = np.random.default_rng(seed)
    subject = random_subject(rng, settings)
    if static:
        subject = Subject(**{**subject.__dict__, "contraction": 0.0, "twist_rad": 0.0, "shift": (0.0, 0.0)})
    rr = 60.0 / settings.heart_rate_bpm
    phases = settings.centre_phase_pct + settings.phase_step_pct * (np.arange(4) - 1.5)
    inputs = np.stack([scan(subject, settings, rr * (2 + p / 100), rr, rng) for p in phases])
    v = float(volume_curve(settings.centre_phase_pct / 100.0))
    truth = scan(subject, settings, None, rr, None, frozen_v=v)
    n, step = settings.pixels, settings.pixel_mm
    axis = (np.arange(n) - n / 2 + 0.5) * step
    y, x = np.meshgrid(axis, axis, indexing="ij")
    heart = ~np.isnan(_heart(x, y, subject, settings, v))
    coronaries = []
    r, wall = subject.lv_radius, subject.wall
    for theta in subject.coronary_angles:
        qx, qy = _from_end_diastole((r + wall + 2.3) * np.cos(theta), (r + wall + 1.3) * np.sin(theta), subject, v)
        coronaries.append((qy / step + n / 2 - 0.5, qx / step + n / 2 - 0.5))
    return Case(inputs, phases, truth, heart, coronaries, settings, subject)


def exact_motion_average(case: Case, order: int = 3) -> np.ndarray:
    """(H, W) HU: the best a combination of the input phases can do, an oracle. Each phase is pulled onto the
    truth's instant by the simulator's exact heart motion (its affine map at the phase's window centre, inside the
    heart dilated by 2 pixels; the still thorax is left in place) with spline interpolation of ``order``, and the
    four are averaged. What is left against the truth is the motion inside each phase's own window (its streaks
    and blur, which no warping removes) and the noise of four phases."""
    from scipy import ndimage

    settings, subject = case.settings, case.subject
    n, step = settings.pixels, settings.pixel_mm
    axis = (np.arange(n) - n / 2 + 0.5) * step
    y, x = np.meshgrid(axis, axis, indexing="ij")
    inside = ndimage.binary_dilation(case.heart, iterations=2)
    u, w = _to_end_diastole(x, y, subject, float(volume_curve(settings.centre_phase_pct / 100.0)))
    pulled = []
    for image, phase_pct in zip(case.inputs, case.phase_pct, strict=True):
        source_x, source_y = _from_end_diastole(u, w, subject, float(volume_curve(phase_pct / 100.0)))
        rows = np.where(inside, source_y, y) / step + n / 2 - 0.5
        columns = np.where(inside, source_x, x) / step + n / 2 - 0.5
        pulled.append(ndimage.map_coordinates(image, [rows, columns], order=order, mode="nearest"))
    return np.mean(pulled, axis=0)


# ---------------------------------------------------------------------------------------------- scoring
def heart_region(case: Case, margin_px: int = 3):
    """(H, W) bool: the heart at the truth's instant, dilated by ``margin_px`` (where motion artifacts land)."""
    from scipy import ndimage

    return ndimage.binary_dilation(case.heart, iterations=margin_px)


def heart_rmse(image: np.ndarray, case: Case) -> float:
    """RMSE (HU) of an (H, W) image to the truth inside :func:`heart_region`."""
    image = np.asarray(image, dtype=np.float64)
    assert image.shape == case.truth.shape, (image.shape, case.truth.shape)
    return float(np.sqrt(np.mean((image - case.truth)[heart_region(case)] ** 2)))


def coronary_scores(image: np.ndarray, case: Case) -> tuple[float, float]:
    """(median relative FWHM error, median peak-contrast ratio) of the coronaries in an (H, W) image against the
    truth; the peak contrast is the brightest value within 1.5 pixels of the vessel centre minus the median of a
    4-6 pixel ring."""
    from scanai.artifact_correction.image_quality import vessel_fwhm_mm

    rows, columns = np.indices(case.truth.shape)
    widths, peaks = [], []
    for row, column in case.coronaries:
        distance = np.hypot(rows - row, columns - column)
        centre, ring = distance <= 1.5, (distance >= 4) & (distance <= 6)

        def contrast(picture: np.ndarray, centre=centre, ring=ring) -> float:
            return float(picture[centre].max() - np.median(picture[ring]))

        truth_width = vessel_fwhm_mm(case.truth, (row, column), case.settings.pixel_mm)
        width = vessel_fwhm_mm(image, (row, column), case.settings.pixel_mm)
        if np.isfinite(truth_width) and truth_width > 0:
            widths.append(abs(width / truth_width - 1.0) if np.isfinite(width) else 1.0)
        peaks.append(contrast(image) / contrast(case.truth))
    return (float(np.median(widths)) if widths else float("nan"), float(np.median(peaks)))


def sequence_of(case: Case):
    """The case's inputs as a phase-indexed :class:`~scanai.core.image.VolumeSequence` of one-slice volumes."""
    from scanai.core.image import Geometry, VolumeSequence

    spacing = (case.settings.pixel_mm, case.settings.pixel_mm, 2.0)
    return VolumeSequence(case.inputs[:, None].astype(np.float32), Geometry(spacing), tuple(case.phase_pct),
                          "phase", "%")


def held_out_settings(count: int, seed: int = 27) -> list[Settings]:
    """``count`` settings drawn apart from anything the network was trained on: fan-beam half-scans, heart rates
    50-110 bpm, centre phases 35-80 %, four FBP kernels, 1e4-1e5 photons, 4-16 mm of fat, calcium in half."""
    rng = np.random.default_rng(seed)
    kernels = ("ramp", "shepp-logan", "hann", "cosine")
    return [Settings(heart_rate_bpm=float(rng.uniform(50, 110)), centre_phase_pct=float(rng.uniform(35, 80)),
                     kernel=kernels[k % 4], photons=float(10 ** rng.uniform(4, 5)), fat_mm=float(rng.uniform(4, 16)),
                     fan_deg=float(rng.uniform(40, 60)), calcium=bool(k % 2)) for k in range(count)]
