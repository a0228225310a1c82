"""Procedural chest radiographs with exact masks for every object, and compositing of foreign objects,
pleural effusion and pneumothorax onto any radiograph (generated or real).

No permissive real set annotates scapulae, spine, clavicles, foreign objects, pneumothorax or effusion, so the
detector learns them here (issue 7, digest §6.4). :func:`generate_chest` draws a frontal chest with random but
plausible anatomy: size, rotation, inspiration (lung height), heart size, patient shift, collimation (the field
cut at the image edges) and scapula position (from well lateral to overlapping the lungs). The composite
functions paint an object into a copy of an image and return the masks with the new object added; they only
need the lung masks, so they work on the real Wingspan radiographs as well.

Image convention: (rows, cols), row 0 = head, column 0 = image left = patient right; values roughly in [0, 1],
bright = dense (MONOCHROME2). Masks are named as :data:`scanai.chest.detection.OBJECTS` plus ``body``. Lung masks
are the whole lung field, including any pneumothorax or effusion painted into them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

from scanai.chest.detection import ANATOMY, FOREIGN, OBJECTS
from scanai.chest.phantom import ChestPhantom, ellipse_mask, rib_arches
from scanai.core.errors import InputError


@dataclass(frozen=True)
class Anatomy:
    """The shape parameters of one generated chest, in normalised image units (u = column / W, v = row / H).

    shift_u/shift_v move the whole patient; rotation_deg turns it about the image centre; scale sizes it.
    lung_height is the lung semi-height (inspiration), lung_width the semi-width; heart_width and heart_height
    are the heart's semi-axes (CTR ≈ heart_width / (lung_gap / 2 + lung_width) roughly); scapula_medial moves the
    scapulae toward the spine (0 = clear of the lungs, 0.12 = a clear overlap; random chests overlap in half the
    cases); spine_shift moves only the spine (the "off-centre spine" of C6); clavicle_drop lowers the medial
    clavicle ends.
    """

    shift_u: float = 0.0
    shift_v: float = 0.0
    rotation_deg: float = 0.0
    scale: float = 1.0
    lung_height: float = 0.25
    lung_width: float = 0.125
    lung_gap: float = 0.09
    heart_width: float = 0.12
    heart_height: float = 0.10
    heart_shift: float = 0.035
    scapula_medial: float = 0.0
    spine_shift: float = 0.0
    clavicle_drop: float = 0.0


@dataclass(frozen=True)
class Appearance:
    """Grey levels and image degradations (MONOCHROME2 units before the final window)."""

    tissue: float = 0.45
    lung_drop: float = 0.25
    bone: float = 0.22
    rib: float = 0.08
    texture: float = 0.03
    noise: float = 0.01
    blur_px: float = 1.0
    gamma: float = 1.0


def random_anatomy(rng: np.random.Generator, **fixed: float) -> Anatomy:
    """Plausible random anatomy; keyword arguments fix any field of :class:`Anatomy`."""
    drawn = dict(
        shift_u=rng.normal(0.0, 0.015), shift_v=rng.normal(0.0, 0.02), rotation_deg=rng.normal(0.0, 3.0),
        scale=rng.uniform(0.88, 1.08), lung_height=rng.uniform(0.2, 0.29), lung_width=rng.uniform(0.11, 0.14),
        lung_gap=rng.uniform(0.07, 0.11), heart_width=rng.uniform(0.1, 0.19), heart_height=rng.uniform(0.09, 0.13),
        heart_shift=rng.uniform(0.01, 0.06), scapula_medial=rng.choice([0.0, rng.uniform(0.04, 0.17)]),
        spine_shift=rng.normal(0.0, 0.006), clavicle_drop=rng.uniform(-0.02, 0.03))
    drawn.update(fixed)
    return Anatomy(**drawn)


def random_appearance(rng: np.random.Generator, **fixed: float) -> Appearance:
    """Random grey levels, noise, blur and gamma; keyword arguments fix any field of :class:`Appearance`."""
    drawn = dict(tissue=rng.uniform(0.35, 0.55), lung_drop=rng.uniform(0.15, 0.32), bone=rng.uniform(0.12, 0.3),
                 rib=rng.uniform(0.04, 0.12), texture=rng.uniform(0.015, 0.05), noise=rng.uniform(0.003, 0.02),
                 blur_px=rng.uniform(0.6, 1.8), gamma=rng.uniform(0.75, 1.35))
    drawn.update(fixed)
    return Appearance(**drawn)


def _grid(size: int, anatomy: Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """(v, u) body coordinates of every pixel centre: the image grid moved, turned and scaled into the patient."""
    centres = (np.arange(int(size)) + 0.5) / int(size)
    v, u = np.meshgrid(centres, centres, indexing="ij")
    u, v = u - 0.5 - anatomy.shift_u, v - 0.5 - anatomy.shift_v
    angle = np.deg2rad(anatomy.rotation_deg)
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = (cos * u + sin * v) / anatomy.scale, (-sin * u + cos * v) / anatomy.scale
    return v + 0.5, u + 0.5


def _triangle(u: np.ndarray, v: np.ndarray, corners: list[tuple[float, float]]) -> np.ndarray:
    """Pixels inside the triangle with (u, v) ``corners``."""
    (u1, v1), (u2, v2), (u3, v3) = corners
    d1 = (u - u2) * (v1 - v2) - (u1 - u2) * (v - v2)
    d2 = (u - u3) * (v2 - v3) - (u2 - u3) * (v - v3)
    d3 = (u - u1) * (v3 - v1) - (u3 - u1) * (v - v1)
    negative = (d1 < 0) | (d2 < 0) | (d3 < 0)
    positive = (d1 > 0) | (d2 > 0) | (d3 > 0)
    return ~(negative & positive)


def _segment_distance(u: np.ndarray, v: np.ndarray, start: tuple[float, float], end: tuple[float, float]
                      ) -> np.ndarray:
    """Distance of every (u, v) to the segment ``start``-``end``."""
    du, dv = end[0] - start[0], end[1] - start[1]
    t = np.clip(((u - start[0]) * du + (v - start[1]) * dv) / (du * du + dv * dv), 0.0, 1.0)
    return np.hypot(u - start[0] - t * du, v - start[1] - t * dv)


def _lung(u: np.ndarray, v: np.ndarray, side: int, anatomy: Anatomy) -> np.ndarray:
    """One lung field: a tall rounded shape with a pointed apex, a domed base and a straight medial border.

    side -1 = image left (patient right), +1 = image right.
    """
    medial = 0.5 + side * anatomy.lung_gap / 2.0
    centre_u = medial + side * anatomy.lung_width
    top = 0.49 - anatomy.lung_height
    depth = np.clip((v - top) / (2.0 * anatomy.lung_height), 0.0, 1.0)
    half_width = anatomy.lung_width * np.sqrt(np.clip(np.sin(np.pi * np.minimum(depth, 0.75) / 1.5), 0.0, 1.0))
    half_width = half_width * (0.93 + 0.07 * depth)
    dome = top + 2.0 * anatomy.lung_height - 0.04 * (1.0 - ((u - medial) * side / (2 * anatomy.lung_width)))
    inside = (np.abs(u - centre_u) <= half_width) & (v >= top) & (v <= dome)
    return inside & (side * (u - medial) >= 0)


def _ribs(u: np.ndarray, v: np.ndarray, anatomy: Anatomy) -> np.ndarray:
    """Posterior rib arches on both sides, ten per side spread over the lung height, 0.014 thick."""
    top = 0.49 - anatomy.lung_height - 0.02
    step = (2.0 * anatomy.lung_height + 0.03) / 9.0
    crests = [top + step * k for k in range(10)]
    return np.logical_or.reduce([rib_arches(u, v, side, crests, centre_offset=0.16, radius=0.17, half_thickness=0.007,
                                            height_fraction=0.7, lateral=(0.03, 0.36)) for side in (-1, 1)])


def _anatomy_masks(size: int, anatomy: Anatomy) -> dict[str, np.ndarray]:
    """Every structure as a (size, size) bool mask, on the image grid."""
    v, u = _grid(size, anatomy)
    body = ellipse_mask(u, v, (0.5, 0.6), (0.43, 0.55)) | ellipse_mask(u, v, (0.5, 0.08), (0.08, 0.2))
    heart = ellipse_mask(u, v, (0.5 + anatomy.heart_shift, 0.66), (anatomy.heart_width, anatomy.heart_height))
    spine_centre = 0.5 + anatomy.spine_shift
    # the label is the whole column (as drawn on real images); only the vertebral bodies are drawn bright
    spine = (np.abs(u - spine_centre) <= 0.028) & body & (v >= 0.05)
    vertebrae = spine & (((v - 0.01) % 0.045) > 0.007)
    masks = {"body": body, "heart": heart, "spine": spine, "vertebrae": vertebrae}
    for side, name in ((-1, "right"), (1, "left")):
        masks[f"lung_{name}"] = _lung(u, v, side, anatomy) & ~heart
        lateral_u = 0.5 + side * 0.4
        medial_shift = -side * anatomy.scapula_medial
        corners = [(lateral_u + medial_shift, 0.17), (0.5 + side * 0.27 + medial_shift, 0.19),
                   (0.5 + side * 0.34 + medial_shift, 0.46)]
        masks[f"scapula_{name}"] = _triangle(u, v, corners) & body
        start = (0.5 + side * 0.035, 0.2 + anatomy.clavicle_drop)
        end = (0.5 + side * 0.27, 0.15)
        masks[f"clavicle_{name}"] = _segment_distance(u, v, start, end) <= 0.011
    masks["ribs"] = _ribs(u, v, anatomy) & body
    return masks


def _band_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_px: float) -> np.ndarray:
    """Zero-mean, unit-std band-pass noise (difference of Gaussians)."""
    white = rng.normal(size=shape)
    band = ndimage.gaussian_filter(white, sigma_px) - ndimage.gaussian_filter(white, 3 * sigma_px)
    return band / (band.std() + 1e-12)


def _render(masks: dict[str, np.ndarray], appearance: Appearance, rng: np.random.Generator) -> np.ndarray:
    """The (size, size) image in [0, 1] drawn from the anatomy masks."""
    size = masks["body"].shape[0]
    lungs = masks["lung_right"] | masks["lung_left"]
    image = np.full(masks["body"].shape, 0.03)
    soft = ndimage.gaussian_filter(masks["body"].astype(float), size / 128.0)
    image += appearance.tissue * soft
    lung_field = ndimage.gaussian_filter(lungs.astype(float), size / 256.0)
    texture = 1.0 + appearance.texture * 4 * _band_noise(rng, image.shape, size / 200)
    image -= appearance.lung_drop * lung_field * texture
    image += 0.05 * ndimage.gaussian_filter(masks["heart"].astype(float), size / 128.0)
    scapulae = (masks["scapula_right"] | masks["scapula_left"]).astype(float)
    clavicles = (masks["clavicle_right"] | masks["clavicle_left"]).astype(float)
    image += appearance.bone * (1.1 * masks["vertebrae"] + 0.55 * scapulae + 0.9 * clavicles)
    image += appearance.rib * masks["ribs"]
    image = ndimage.gaussian_filter(image, appearance.blur_px)
    image += appearance.noise * rng.normal(size=image.shape)
    image = np.clip(image, 0.0, 1.0) ** appearance.gamma
    return image


def generate_chest(rng: np.random.Generator, size: int = 256, anatomy: Anatomy | None = None,
                   appearance: Appearance | None = None) -> ChestPhantom:
    """A random frontal chest radiograph (size x size, values in [0, 1]) with masks for every object.

    masks: ``body``, ``ribs`` and every anatomy name of :data:`scanai.chest.detection.ANATOMY` (the foreign object
    and abnormal parts are added by the composite functions). Objects that leave the field are cut at the edge.
    """
    if int(size) < 64:
        raise InputError(f"The generated radiograph needs at least 64 x 64 pixels, got {size}.")
    anatomy = anatomy if anatomy is not None else random_anatomy(rng)
    appearance = appearance if appearance is not None else random_appearance(rng)
    masks = _anatomy_masks(int(size), anatomy)
    image = _render(masks, appearance, rng)
    return ChestPhantom(image, masks, 0.7 * 512 / int(size))


def _image_range(image: np.ndarray) -> tuple[float, float]:
    """(low, high): the 1st and 99.5th percentile grey values."""
    low, high = np.percentile(image, [1.0, 99.5])
    return float(low), float(max(high, low + 1e-6))


def _lung_area(masks: dict[str, np.ndarray]) -> np.ndarray:
    return masks["lung_right"] | masks["lung_left"]


def _with_mask(phantom: ChestPhantom, image: np.ndarray, name: str, mask: np.ndarray) -> ChestPhantom:
    masks = dict(phantom.masks)
    masks[name] = masks.get(name, np.zeros(mask.shape, dtype=bool)) | mask
    return replace(phantom, image=image, masks=masks)


FOREIGN_KINDS = ("button", "coin", "necklace", "electrode", "clip")


def add_foreign_object(phantom: ChestPhantom, rng: np.random.Generator, inside_lung: bool = True,
                       kind: str | None = None) -> ChestPhantom:
    """A metal object painted into a copy of the image: inside a lung or elsewhere on the body (neck, shoulder,
    abdomen). Its mask is added to ``foreign_object``. kind: one of :data:`FOREIGN_KINDS` (random when None)."""
    masks = phantom.masks
    size = np.asarray(phantom.image.shape, dtype=float)
    lungs = _lung_area(masks)
    body = masks.get("body", np.ones(lungs.shape, dtype=bool))
    kind = kind or str(rng.choice(FOREIGN_KINDS))
    if kind == "necklace" and inside_lung:
        kind = "button"
    allowed = ndimage.binary_erosion(lungs, iterations=3) if inside_lung else body & ~ndimage.binary_dilation(
        lungs, iterations=int(0.03 * size[1]) + 1)
    if kind == "necklace":
        allowed = body & ~ndimage.binary_dilation(lungs, iterations=2)
        allowed[int(0.3 * size[0]):] = False
    candidates = np.argwhere(allowed)
    if len(candidates) == 0:
        raise InputError("There is no room for a foreign object in this image.", "Use an image with both lungs.")
    row, col = candidates[rng.integers(len(candidates))]
    rows, cols = np.meshgrid(np.arange(int(size[0])), np.arange(int(size[1])), indexing="ij")
    unit = size[1] / 512.0
    radius = rng.uniform(5, 11) * unit
    distance = np.hypot(rows - row, cols - col)
    if kind == "button":
        mask = distance <= radius
        density = np.where(mask, 1.0, 0.0) - 0.6 * (np.hypot(rows - row, cols - col - radius / 3) <= radius / 4)
    elif kind == "coin":
        mask = distance <= radius * 1.4
        density = mask.astype(float)
    elif kind == "electrode":
        mask = distance <= radius * 1.2
        density = 0.5 * mask + 0.5 * (distance <= radius * 0.35) + 0.4 * (np.abs(distance - radius) < 1.5 * unit)
    elif kind == "clip":
        angle = rng.uniform(0, np.pi)
        end = (row + 3 * radius * np.sin(angle), col + 3 * radius * np.cos(angle))
        mask = _segment_distance(cols.astype(float), rows.astype(float), (col, row), (end[1], end[0])) <= 2.2 * unit
        density = mask.astype(float)
    else:  # necklace: beads on an arc around the neck
        mask = np.zeros(lungs.shape, dtype=bool)
        centre_col = size[1] * (0.5 + rng.normal(0, 0.02))
        for angle in np.linspace(0.25 * np.pi, 0.75 * np.pi, int(rng.integers(9, 16))):
            bead_row = row - 0.08 * size[0] + 0.12 * size[0] * np.sin(angle)
            bead_col = centre_col + 0.12 * size[1] * np.cos(angle)
            mask |= np.hypot(rows - bead_row, cols - bead_col) <= 3.5 * unit
        mask &= body
        density = mask.astype(float)
    low, high = _image_range(phantom.image)
    strength = rng.uniform(0.9, 1.3) * (high - low)
    painted = ndimage.gaussian_filter(np.clip(density, 0, 1), 0.7 * unit)
    image = np.minimum(phantom.image + strength * painted, max(high, float(phantom.image.max())) + 0.2 * (high - low))
    return _with_mask(phantom, image, FOREIGN, mask & (painted > 0.3))


def _fill_to_fraction(score: np.ndarray, region: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` pixels of ``region`` with the highest ``score`` (ties broken by position)."""
    values = np.where(region, score, -np.inf).ravel()
    chosen = np.zeros(values.size, dtype=bool)
    if count > 0:
        chosen[np.argsort(-values, kind="stable")[:count]] = True
    return chosen.reshape(score.shape) & region


def _lung_share(masks: dict[str, np.ndarray], fraction: float, side: str, what: str
                ) -> tuple[np.ndarray, int, np.ndarray, np.ndarray, int]:
    """(lung mask of ``side``, pixel count for ``fraction`` of both lungs, its pixel rows and columns, its medial
    column); InputError when that lung is missing or the region would not fit in it."""
    lung = masks[f"lung_{side}"]
    if not lung.any():
        raise InputError(f"The {side} lung is missing, so nothing can be painted into it.")
    count = int(round(float(fraction) * _lung_area(masks).sum()))
    if count > lung.sum():
        raise InputError(f"{what} of {fraction:.0%} of the lungs does not fit in the {side} lung.")
    rows, cols = np.nonzero(lung)
    return lung, count, rows, cols, int(cols.max() if side == "right" else cols.min())


def add_effusion(phantom: ChestPhantom, rng: np.random.Generator, fraction: float, side: str = "right"
                 ) -> ChestPhantom:
    """A pleural effusion at the base of one lung covering ``fraction`` of both lungs' pixels: a dense region
    whose top edge is a meniscus (higher laterally). Its mask is added to ``effusion``."""
    masks = phantom.masks
    lung, count, rows, cols, medial = _lung_share(masks, fraction, side, "An effusion")
    width = max(1, np.ptp(cols))
    grid_rows, grid_cols = np.indices(lung.shape)
    lateralness = np.abs(grid_cols - medial) / width
    score = grid_rows + 0.25 * lung.shape[0] * lateralness ** 2 * rng.uniform(0.6, 1.2)
    effusion = _fill_to_fraction(score, lung, count)
    opacity = rng.uniform(0.8, 1.0) * ndimage.gaussian_filter(effusion.astype(float), lung.shape[0] / 180)
    heart = masks.get("heart", np.zeros_like(lung))
    fluid = np.percentile(phantom.image[heart], 60) if heart.any() else np.percentile(phantom.image, 75)
    fluid = fluid + (ndimage.gaussian_filter(phantom.image, lung.shape[0] / 25) - phantom.image.mean()) * 0.3
    image = phantom.image * (1.0 - opacity) + fluid * opacity
    return _with_mask(phantom, image, "effusion", effusion)


def add_pneumothorax(phantom: ChestPhantom, rng: np.random.Generator, fraction: float, side: str = "right"
                     ) -> ChestPhantom:
    """A pneumothorax in one lung covering ``fraction`` of both lungs' pixels: an apical-lateral crescent with no
    lung markings, darker than the lung, bounded by a thin bright pleural line. Its mask is added to
    ``pneumothorax``."""
    masks = phantom.masks
    lung, count, rows, cols, medial = _lung_share(masks, fraction, side, "A pneumothorax")
    grid_rows, grid_cols = np.indices(lung.shape)
    depth_to_edge = ndimage.distance_transform_edt(lung)
    apex_bias = (grid_rows - rows.min()) / max(1, np.ptp(rows))
    medial_bias = 1.0 - np.abs(grid_cols - medial) / max(1, np.ptp(cols))
    score = -(depth_to_edge / max(1.0, depth_to_edge.max()) + 0.6 * apex_bias + 1.2 * medial_bias)
    pneumothorax = _fill_to_fraction(score, lung, count)
    low, high = _image_range(phantom.image)
    smooth = ndimage.gaussian_filter(phantom.image, lung.shape[0] / 60)
    inside = ndimage.gaussian_filter(pneumothorax.astype(float), 0.6)
    darker = smooth - rng.uniform(0.06, 0.14) * (high - low)
    image = phantom.image * (1 - inside) + darker * inside
    edge = pneumothorax ^ ndimage.binary_erosion(pneumothorax)
    pleura = edge & ndimage.binary_erosion(lung, iterations=2)
    image = image + 0.12 * (high - low) * ndimage.gaussian_filter(pleura.astype(float), 0.6)
    return _with_mask(phantom, image, "pneumothorax", pneumothorax)


@dataclass(frozen=True)
class Scenario:
    """A generated case with the level and findings it must produce (digest §6.4; levels with default thresholds).

    expected_findings: finding name -> expected ``present`` flag; expected_reason: a word the explanation names.
    """

    name: str
    phantom: ChestPhantom
    expected_level: str
    expected_findings: dict[str, bool] = field(default_factory=dict)
    expected_reason: str = ""
    photometric: str = "MONOCHROME2"
    flipped: bool = False


SCENARIOS = ("normal", "scapula_overlap", "lung_cut", "spine_offset", "foreign_object_inside",
             "foreign_object_outside", "cardiomegaly", "effusion", "pneumothorax", "monochrome1", "flip")


def _normal_anatomy(rng: np.random.Generator, **fixed: float) -> Anatomy:
    """A clean, well-positioned chest (small random variation) for the scenarios."""
    values = dict(shift_u=0.0, shift_v=0.0, rotation_deg=rng.normal(0.0, 1.0), scale=rng.uniform(0.95, 1.02),
                  lung_height=rng.uniform(0.23, 0.27), heart_width=rng.uniform(0.09, 0.11),
                  scapula_medial=0.0, spine_shift=0.0, clavicle_drop=0.0)
    values.update(fixed)
    return random_anatomy(rng, **values)


def make_scenario(name: str, seed: int = 0, size: int = 256) -> Scenario:
    """One of :data:`SCENARIOS`, drawn with ``seed`` (use seeds the training never used: training draws its own
    random anatomy, so any scenario is a new case)."""
    if name not in SCENARIOS:
        raise InputError(f"Unknown scenario '{name}'.", f"Choose one of {', '.join(SCENARIOS)}.")
    rng = np.random.default_rng(seed)
    appearance = random_appearance(rng, noise=0.008, gamma=1.0)
    fixed: dict[str, float] = {}
    if name == "scapula_overlap":
        fixed = {"scapula_medial": 0.13}
    elif name == "lung_cut":
        fixed = {"shift_v": -0.24}
    elif name == "spine_offset":
        fixed = {"shift_u": 0.09}
    elif name == "cardiomegaly":
        fixed = {"heart_width": 0.17, "heart_height": 0.12}
    phantom = generate_chest(rng, size, _normal_anatomy(rng, **fixed), appearance)
    level, findings, reason = "FIRST", {"cardiothoracic_ratio": False}, ""
    if name == "scapula_overlap":
        level, reason = "INTERMEDIATE", "scapula"
    elif name == "lung_cut":
        level, reason = "SECOND", "lung"
    elif name == "spine_offset":
        level, reason = "INTERMEDIATE", "spine"
    elif name == "foreign_object_inside":
        phantom, level, reason = add_foreign_object(phantom, rng, True, "coin"), "SECOND", "foreign"
    elif name == "foreign_object_outside":
        phantom, level, reason = add_foreign_object(phantom, rng, False, "necklace"), "INTERMEDIATE", "foreign"
    elif name == "cardiomegaly":
        findings = {"cardiothoracic_ratio": True}
    elif name == "effusion":
        phantom, findings = add_effusion(phantom, rng, 0.2, "right"), {**findings, "effusion": True}
    elif name == "pneumothorax":
        phantom, findings = add_pneumothorax(phantom, rng, 0.2, "left"), {**findings, "pneumothorax": True}
    if level == "SECOND":
        findings = {}
    flipped = name == "flip"
    if flipped:
        phantom = flip_phantom(phantom)
    return Scenario(name, phantom, level, findings, reason, "MONOCHROME1" if name == "monochrome1" else "MONOCHROME2",
                    flipped)


def flip_phantom(phantom: ChestPhantom) -> ChestPhantom:
    """The phantom mirrored left-right; masks follow the image position (``*_right`` stays the image-left one)."""
    flipped = {name: mask[:, ::-1] for name, mask in phantom.masks.items()}
    for pair in (("lung_right", "lung_left"), ("scapula_right", "scapula_left"), ("clavicle_right", "clavicle_left")):
        flipped[pair[0]], flipped[pair[1]] = flipped[pair[1]], flipped[pair[0]]
    return replace(phantom, image=phantom.image[:, ::-1].copy(), masks=flipped)


def object_masks(masks: dict[str, np.ndarray], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Only the detectable objects (:data:`OBJECTS`), every one present (empty when absent)."""
    empty = np.zeros(shape, dtype=bool)
    return {name: np.asarray(masks.get(name, empty), dtype=bool) for name in OBJECTS}


__all__ = ["ANATOMY", "Anatomy", "Appearance", "FOREIGN_KINDS", "SCENARIOS", "Scenario", "add_effusion",
           "add_foreign_object", "add_pneumothorax", "flip_phantom", "generate_chest", "make_scenario",
           "object_masks", "random_anatomy", "random_appearance"]
