"""Domain-randomised CT motion simulation, the training data of the motion-artifact network (issue 27).

The digest's simulator (:mod:`scanai.artifact_correction.simulator`) scans one mini thorax with one protocol; a
network trained on it learnt that phantom's appearance (no fat, a small body, one pixel size, one kernel) and
shifted the HU of other CT. Each case here draws its own physics and anatomy:

* **Scan**: parallel beam or a fan-beam half-scan (each ray at its own time), rotation 0.25-0.35 s, 144 or 240
  views, FBP kernel ramp / shepp-logan / cosine / hamming, image noise 1.5-42 HU (log-uniform), white or
  photon-like (heavier along long paths), 128-256 pixels of 0.75-1.9 mm.
* **Rhythm**: 50-110 bpm, half the cases arrhythmic (+-10 % per beat), windows 15-40 ms apart at any phase.
* **Anatomy**: one case in five the digest's mini thorax; otherwise a thorax built around the heart (subcutaneous fat
  0-18 mm, muscle, lungs beside the heart, vertebra with its canal, sternum, ribs, descending aorta where there is
  room) and a heart of LV radius 13-22 mm, wall 6-10 mm, with or without pericardial fat, right ventricle and
  papillary muscle, 2-3 coronaries (calcium in one case in three); contraction 0.12-0.32, shift 3-11 mm, twist up to
  10 degrees, breathing in one case in four.
* **Real CT texture**: half the cases carry the fine texture of pydicom's example CT slice (``CT_small.dcm``:
  its image minus its 2-pixel Gaussian blur, soft tissue only, randomly scaled, turned and tiled) over the still
  anatomy outside the heart, projected with :func:`skimage.transform.radon` and added to every window and the truth.

**Held out** (never drawn for training; :func:`random_domain` with ``held_out=True`` draws only them, to validate
on settings the network never saw): the hann kernel, noise of 48-60 HU, fan angles of 52-60 degrees and coronary
stents. The HU scale/offset jitter is a training augmentation (``train.py``), not part of a case.
Lengths in mm, times in s, images in HU.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from scanai.artifact_correction.reconstruction import ScanProtocol
from scanai.artifact_correction.simulator import (
    AIR_HU,
    FAT_HU,
    LUNG_HU,
    MINI_THORAX,
    HeartPhantom,
    SimulatedCase,
    Thorax,
    phantom_hu,
    random_phantom,
    random_r_peaks,
    simulate_case,
)

TRAINING_FILTERS = ("ramp", "shepp-logan", "cosine", "hamming")
HELD_OUT_FILTERS = ("hann",)
#: Image noise (HU): training log-uniform over TRAINING_NOISE_HU (a third of the cases below 6 HU, where motion, not
#: noise, dominates the loss), held-out uniform over HELD_OUT_NOISE_HU.
TRAINING_NOISE_HU, HELD_OUT_NOISE_HU = (1.5, 42.0), (48.0, 60.0)
TRAINING_FAN_DEG, HELD_OUT_FAN_DEG = (20.0, 48.0), (52.0, 60.0)
PIXEL_COUNTS = (128, 160, 192, 256)
PIXEL_MM = (0.75, 1.9)
MUSCLE_HU = 45.0
RIB_HU, SPINE_HU, CANAL_HU, STERNUM_HU, AORTA_HU = 650.0, 550.0, 15.0, 500.0, 300.0
#: Largest texture amplitude (HU) kept from the example CT's fine detail.
TEXTURE_CLIP_HU = 80.0


@dataclass(frozen=True)
class Domain:
    """One case's physics and anatomy: the scan protocol, the subject, the R-R range (s) and window spacing (s) of
    its rhythm, and the texture's random seed (None = no texture)."""

    protocol: ScanProtocol
    phantom: HeartPhantom
    rr_range_s: tuple[float, float]
    spacing_s: float
    texture_seed: int | None


# ------------------------------------------------------------------------------------------------ anatomy
def heart_reach_mm(phantom: HeartPhantom) -> float:
    """Radius (mm) around the LV centre that holds the whole heart at end-diastole (fat, vessels, RV), + 3 mm."""
    reach = max(phantom.lv_radii_mm) + phantom.wall_mm + phantom.coronary_diameter_mm + 0.5
    reach += phantom.pericardial_fat_mm
    if phantom.rv_mm is not None:
        reach += 1.5 + 2.0 * phantom.rv_mm[0]
    return reach + 3.0


def random_heart(rng: np.random.Generator, static: bool, stent: bool) -> HeartPhantom:
    """A random heart (see the module docstring), centred at the origin (the thorax is built around it)."""
    a = rng.uniform(13.0, 22.0)
    n_coronaries = int(rng.integers(2, 4))
    first = rng.uniform(0.0, 360.0)
    rv = rng.random() < 0.6
    # with an RV on the LV's -a side (180 degrees in the LV frame), the coronaries keep out of its way
    angles = [(first + i * 360.0 / n_coronaries + rng.uniform(-25, 25)) % 360 for i in range(n_coronaries)]
    if rv:
        angles = [angle if abs(angle - 180.0) > 35.0 else (angle + 70.0) % 360 for angle in angles]
    phantom = HeartPhantom(
        centre_mm=(0.0, 0.0), lv_radii_mm=(float(a), float(a * rng.uniform(0.8, 1.0))),
        wall_mm=float(rng.uniform(6.0, 10.0)), rotation_deg=float(rng.uniform(0.0, 360.0)),
        contraction_amplitude=float(rng.uniform(0.12, 0.32)), coronary_angles_deg=tuple(float(v) for v in angles),
        coronary_shift_mm=float(rng.uniform(3.0, 11.0)),
        coronary_direction_deg=float(-90.0 + rng.uniform(-60.0, 60.0)), calcium=bool(rng.random() < 1 / 3),
        breathing_mm=float(rng.uniform(5.0, 15.0)) if rng.random() < 0.25 else 0.0,
        breathing_offset_s=float(rng.uniform(0.0, 4.0)), long_axis_mm=float(rng.uniform(40.0, 60.0)),
        coronary_diameter_mm=float(rng.uniform(2.5, 4.0)), twist_deg=float(rng.uniform(-10.0, 10.0)),
        pericardial_fat_mm=float(rng.uniform(1.0, 5.0)) if rng.random() < 0.6 else 0.0,
        rv_mm=(float(rng.uniform(6.0, 10.0)), float(rng.uniform(12.0, 18.0))) if rv else None,
        papillary=bool(rng.random() < 0.5), stent=stent)
    return phantom.frozen() if static else phantom


def _boundary(ellipse: tuple, margin_mm: float = 0.0, points: int = 90) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of ``points`` points on the axis-aligned ellipse (cx, cy, a, b, ...) grown by ``margin_mm``."""
    angle = np.linspace(0.0, 2.0 * np.pi, points, endpoint=False)
    cx, cy, a, b = ellipse[:4]
    return cx + (a + margin_mm) * np.cos(angle), cy + (b + margin_mm) * np.sin(angle)


def _inside_ellipse(inner: tuple, outer: tuple, margin_mm: float) -> bool:
    """Whether axis-aligned ellipse ``inner`` grown by ``margin_mm`` lies inside ``outer`` (sampled boundary)."""
    x, y = _boundary(inner, margin_mm)
    return bool(np.all(((x - outer[0]) / outer[2]) ** 2 + ((y - outer[1]) / outer[3]) ** 2 < 1.0))


def _touches(one: tuple, other: tuple, margin_mm: float = 1.0) -> bool:
    """Whether two axis-aligned ellipses come within about ``margin_mm`` of each other (sampled boundaries)."""
    x, y = _boundary(one, margin_mm)
    inside = ((x - other[0]) / (other[2] + margin_mm)) ** 2 + ((y - other[1]) / (other[3] + margin_mm)) ** 2 <= 1.0
    return bool(inside.any()) or _inside_ellipse(other, one, 0.0)


def thorax_around(rng: np.random.Generator, reach_mm: float) -> tuple[Thorax, tuple[float, float]]:
    """A thorax with room for a heart of ``reach_mm`` (:func:`heart_reach_mm`), and where the heart's centre goes.

    Parts (nested, not overlapping, each in the part named after it): body (fat, or muscle without subcutaneous fat)
    in air; muscle in fat; lungs, vertebra, sternum, ribs and aorta in muscle; the spinal canal in the vertebra.
    """
    fat = float(rng.uniform(0.0, 18.0)) if rng.random() < 0.8 else 0.0
    heart_x, heart_y = float(rng.uniform(-5.0, 15.0)), float(rng.uniform(-10.0, 5.0))
    lung_width = rng.uniform(10.0, 22.0)
    inner_a = abs(heart_x) + reach_mm + 3.0 + 2.0 * lung_width + 8.0
    spine_b, spine_a = rng.uniform(10.0, 13.0), rng.uniform(12.0, 15.0)
    inner_b = max(abs(heart_y) + reach_mm + 2.0 * spine_b + 6.0, inner_a * rng.uniform(0.62, 0.8))
    parts: list[tuple[float, float, float, float, float, float]] = []
    muscle_in = AIR_HU
    if fat > 1.0:
        parts.append((0.0, 0.0, inner_a + fat, inner_b + fat, FAT_HU, AIR_HU))
        muscle_in = FAT_HU
    parts.append((0.0, 0.0, inner_a, inner_b, MUSCLE_HU, muscle_in))
    muscle = parts[-1]
    lungs = []
    for side in (-1.0, 1.0):  # the lungs fill the room between the heart and the chest wall
        edge = heart_x + side * (reach_mm + 3.0)
        outer = side * (inner_a - 8.0)
        lung = ((edge + outer) / 2.0, heart_y * 0.5, abs(outer - edge) / 2.0, inner_b * rng.uniform(0.55, 0.72))
        while not _inside_ellipse(lung, muscle, margin_mm=6.0):  # shorter until it clears the chest wall
            lung = (*lung[:3], lung[3] * 0.95)
        lungs.append(lung)
        parts.append((*lung, LUNG_HU, MUSCLE_HU))
    spine_y = inner_b - spine_b - 4.0
    parts.append((0.0, spine_y, spine_a, spine_b, SPINE_HU, MUSCLE_HU))
    parts.append((0.0, spine_y + spine_b * 0.35, 4.0, 4.0, CANAL_HU, SPINE_HU))
    parts.append((0.0, -inner_b + 3.5, rng.uniform(7.0, 11.0), 2.5, STERNUM_HU, MUSCLE_HU))
    for angle in np.deg2rad([30.0, 150.0, 210.0, 330.0]):  # ribs in the chest wall, where they clear the lungs
        rib = (float((inner_a - 5.0) * np.cos(angle)), float((inner_b - 5.0) * np.sin(angle)), 3.0, 2.0)
        if _inside_ellipse(rib, muscle, 0.5) and not any(_touches(rib, lung) for lung in lungs):
            parts.append((*rib, RIB_HU, MUSCLE_HU))
    aorta_r = rng.uniform(8.0, 12.0)
    aorta_y = spine_y - spine_b - aorta_r - 1.5
    if aorta_y - aorta_r > heart_y + reach_mm + 2.0:  # room behind the heart
        parts.append((-spine_a - 2.0, aorta_y, aorta_r, aorta_r, AORTA_HU, MUSCLE_HU))
    return Thorax(tuple(parts), heart_in_hu=MUSCLE_HU), (heart_x, heart_y)


# ------------------------------------------------------------------------------------------------ texture
@lru_cache(maxsize=1)
def _example_ct_detail() -> tuple[np.ndarray, float]:
    """(fine detail of pydicom's example CT slice in HU (H, W), its pixel size mm): the image minus its 2-pixel
    Gaussian blur, kept in soft tissue (-150 to 250 HU) and clipped to +-TEXTURE_CLIP_HU."""
    import pydicom
    from pydicom.data import get_testdata_file
    from scipy import ndimage

    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = dataset.pixel_array.astype(np.float64) * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    detail = hu - ndimage.gaussian_filter(hu, 2.0)
    soft = ndimage.binary_erosion((hu > -150.0) & (hu < 250.0), iterations=2)
    return np.clip(detail * soft, -TEXTURE_CLIP_HU, TEXTURE_CLIP_HU), float(dataset.PixelSpacing[0])


def texture_image(seed: int, protocol: ScanProtocol, phantom: HeartPhantom) -> np.ndarray:
    """(pixels, pixels) HU to add to the still anatomy: the example CT's detail scaled by 0.8-1.5, turned, tiled over
    the field of view, weighted by 0.3-1, only inside the body, outside the lungs and air, and away from the heart."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    detail, detail_mm = _example_ct_detail()
    zoom = detail_mm * rng.uniform(0.8, 1.5) / protocol.pixel_mm
    tile = ndimage.rotate(ndimage.zoom(detail, zoom, order=1), rng.uniform(0, 360), reshape=False, order=1)
    reps = int(np.ceil(protocol.pixels / max(1, tile.shape[0] // 2))) + 1
    tiled = np.tile(tile[tile.shape[0] // 4: 3 * tile.shape[0] // 4, tile.shape[1] // 4: 3 * tile.shape[1] // 4],
                    (reps, reps))[: protocol.pixels, : protocol.pixels]
    anatomy = phantom_hu(phantom.frozen(), 0.0, None, protocol)
    axis = (np.arange(protocol.pixels) - protocol.pixels // 2) * protocol.pixel_mm
    distance = np.hypot(axis[None, :] - phantom.centre_mm[0], axis[:, None] - phantom.centre_mm[1])
    keep = (anatomy > -200.0) & (anatomy < 300.0) & (distance > heart_reach_mm(phantom) + 2.0)
    keep = ndimage.binary_erosion(keep, iterations=1)
    return tiled * keep * rng.uniform(0.3, 1.0)


def texture_sinogram(image: np.ndarray, protocol: ScanProtocol) -> np.ndarray:
    """(pixels, views) projection of a still HU-increment image in the simulator's units (HU x pixels)."""
    from skimage.transform import radon

    return radon(image, protocol.view_angles_deg(), circle=True)


# ------------------------------------------------------------------------------------------------ cases
def random_domain(rng: np.random.Generator, held_out: bool = False, static: bool = False) -> Domain:
    """The physics and anatomy of one case (module docstring); ``held_out`` draws only the held-out settings."""
    if not held_out and rng.random() < 0.2:
        phantom = random_phantom(rng, static=static)
        extent = MINI_THORAX.extent_mm
    else:
        heart = random_heart(rng, static, stent=held_out)
        thorax, centre = thorax_around(rng, heart_reach_mm(heart))
        phantom = HeartPhantom(**{**heart.__dict__, "centre_mm": centre, "thorax": thorax})
        extent = thorax.extent_mm
    field_of_view = 2.0 * extent / rng.uniform(0.82, 0.92)
    fitting = [n for n in PIXEL_COUNTS if PIXEL_MM[0] <= field_of_view / n <= PIXEL_MM[1]] or [PIXEL_COUNTS[-1]]
    pixels = int(rng.choice(fitting))
    if held_out:
        noise, fan = float(rng.uniform(*HELD_OUT_NOISE_HU)), float(rng.uniform(*HELD_OUT_FAN_DEG))
    else:
        noise = float(np.exp(rng.uniform(*np.log(TRAINING_NOISE_HU))))
        fan = 0.0 if rng.random() < 0.4 else float(rng.uniform(*TRAINING_FAN_DEG))
    protocol = ScanProtocol(
        pixels=pixels, pixel_mm=float(field_of_view / pixels), views=int(rng.choice((144, 240))),
        rotation_s=float(rng.uniform(0.25, 0.35)), noise_hu=noise,
        filter_name=str(rng.choice(HELD_OUT_FILTERS if held_out else TRAINING_FILTERS)), fan_deg=fan,
        noise_model="photon" if rng.random() < 0.5 else "white")
    texture = int(rng.integers(2**31)) if rng.random() < 0.5 else None
    return Domain(protocol, phantom, (0.545, 1.2), float(rng.uniform(0.015, 0.040)), texture)


def simulate_domain_case(rng: np.random.Generator, held_out: bool = False, static: bool = False,
                         n_inputs: int = 4, n_outputs: int = 1) -> tuple[SimulatedCase, Domain]:
    """A case (on its acquisition grid, :attr:`SimulatedCase.pixel_mm`) of a random :class:`Domain`."""
    domain = random_domain(rng, held_out, static)
    still = None
    if domain.texture_seed is not None:
        still = texture_sinogram(texture_image(domain.texture_seed, domain.protocol, domain.phantom), domain.protocol)
    r_peaks = random_r_peaks(rng, rr_range_s=domain.rr_range_s)
    case = simulate_case(rng, n_inputs, n_outputs, domain.protocol, spacing_s=domain.spacing_s,
                         phantom=domain.phantom, r_peaks=r_peaks, still_sinogram=still)
    return case, domain

