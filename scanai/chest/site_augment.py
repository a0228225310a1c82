"""Site augmentation for the ChestQC detection network: make one site's radiographs look like another's.

Real test radiographs come from other hospitals, vendors and scanners. The transforms below reproduce what differs
between sites, on the real (and generated) training images the project has:

- :func:`tone_curve` - the vendor's look-up table: gamma, sigmoid contrast, logarithmic, window/level clipping
  (never an inversion: the network's input is always MONOCHROME2, bright = dense);
- :func:`quantise` - 8-, 10- or 12-bit storage of a narrow used range, or a coarse palette of grey levels;
- :func:`grid_lines` - fine periodic stripes of an antiscatter grid, random frequency and orientation;
- :func:`noise_and_sharpness` - Poisson / Gaussian noise at several levels, blur, or an unsharp mask such as
  vendor post-processing applies;
- :func:`burn_in_markers` - bright L/R letters, text, rectangles and rulers burnt in at the borders, placed only
  where no labelled object is (they are background);
- :func:`collimate` - tight collimation: dark or bright borders cutting the field, masks cut to the field;
- :func:`portable_ap` - the portable AP look: magnified heart, wider mediastinum, lower contrast, slight rotation.

Every function takes an (H, W) float image in [0, 1] (bright = dense), a dict of (H, W) bool masks and a
``numpy.random.Generator``, and returns a new image in [0, 1] and new masks (inputs are never modified): the same
generator state gives the same result. :func:`site_augment` chains them, each with its own probability.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

Masks = dict[str, np.ndarray]
Transform = Callable[[np.ndarray, Masks, np.random.Generator], tuple[np.ndarray, Masks]]

#: 5 x 3 bitmaps of the letters a technologist's lead marker or a burnt-in label shows.
GLYPHS = {
    "L": ("100", "100", "100", "100", "111"),
    "R": ("110", "101", "110", "101", "101"),
    "A": ("010", "101", "111", "101", "101"),
    "P": ("110", "101", "110", "100", "100"),
}


def _unit(image: np.ndarray) -> np.ndarray:
    """The image clipped to [0, 1] as float64."""
    return np.clip(np.asarray(image, dtype=float), 0.0, 1.0)


def _stretch(image: np.ndarray) -> np.ndarray:
    """The image linearly stretched to [0, 1] (a constant image becomes 0)."""
    low, high = float(image.min()), float(image.max())
    return (image - low) / max(high - low, 1e-6)


def tone_curve(image: np.ndarray, masks: Masks, rng: np.random.Generator) -> tuple[np.ndarray, Masks]:
    """A random monotone increasing look-up table: gamma (0.5-2), sigmoid contrast, logarithmic, or window/level
    clipping of 0-25 % at each end. Masks are unchanged."""
    x = _unit(image)
    kind = int(rng.integers(4))
    if kind == 0:
        out = x ** rng.uniform(0.5, 2.0)
    elif kind == 1:
        gain, centre = rng.uniform(4.0, 12.0), rng.uniform(0.35, 0.65)
        out = _stretch(1.0 / (1.0 + np.exp(-gain * (x - centre))))
    elif kind == 2:
        strength = rng.uniform(3.0, 30.0)
        out = np.log1p(strength * x) / np.log1p(strength)
    else:
        low, high = rng.uniform(0.0, 0.25), rng.uniform(0.75, 1.0)
        out = np.clip((x - low) / (high - low), 0.0, 1.0)
    return _unit(out), dict(masks)


def quantise(image: np.ndarray, masks: Masks, rng: np.random.Generator) -> tuple[np.ndarray, Masks]:
    """Bit-depth quantisation or a coarse palette. Either the image is stored with 8, 10 or 12 bits using only a
    random 3-100 % of the code range (a detector that uses few of its levels: banding once the viewer stretches
    it), or it is mapped to a palette of 8-48 grey levels, uniform or random. Masks are unchanged."""
    x = _unit(image)
    if rng.random() < 0.6:
        bits = int(rng.choice([8, 10, 12]))
        levels = (2 ** bits - 1) * rng.uniform(0.03, 1.0)
        out = np.round(x * levels) / levels
    else:
        count = int(rng.integers(8, 49))
        palette = np.linspace(0.0, 1.0, count) if rng.random() < 0.5 else np.sort(rng.random(count))
        edges = (palette[1:] + palette[:-1]) / 2.0
        out = palette[np.searchsorted(edges, x)]
    return _unit(out), dict(masks)


def grid_lines(image: np.ndarray, masks: Masks, rng: np.random.Generator) -> tuple[np.ndarray, Masks]:
    """Antiscatter grid stripes: a sinusoid (or its square wave) of period 2.2-8 pixels, amplitude 1-6 % of the
    range, vertical or horizontal within +-4 degrees, multiplied onto the image. Masks are unchanged."""
    x = _unit(image)
    rows, cols = np.indices(x.shape, dtype=float)
    angle = np.deg2rad(rng.uniform(-4.0, 4.0) + (90.0 if rng.random() < 0.4 else 0.0))
    period = rng.uniform(2.2, 8.0)
    phase = 2.0 * np.pi * ((cols * np.cos(angle) + rows * np.sin(angle)) / period) + rng.uniform(0, 2 * np.pi)
    wave = np.sin(phase)
    if rng.random() < 0.3:
        wave = np.sign(wave)
    amplitude = rng.uniform(0.01, 0.06)
    return _unit(x * (1.0 - amplitude * (0.5 + 0.5 * wave)) + amplitude * 0.5), dict(masks)


def noise_and_sharpness(image: np.ndarray, masks: Masks, rng: np.random.Generator) -> tuple[np.ndarray, Masks]:
    """Vendor processing and quantum noise: blur (sigma 0.5-1.5 px) or an unsharp mask (radius 2-12 px, amount
    0.3-1.5) or neither; then Poisson noise (30-2000 counts at full scale) or Gaussian noise (sigma 0.5-5 %).
    Masks are unchanged."""
    x = _unit(image)
    choice = int(rng.integers(3))
    if choice == 0:
        x = ndimage.gaussian_filter(x, rng.uniform(0.5, 1.5))
    elif choice == 1:
        x = x + rng.uniform(0.3, 1.5) * (x - ndimage.gaussian_filter(x, rng.uniform(2.0, 12.0)))
    x = _unit(x)
    if rng.random() < 0.5:
        counts = rng.uniform(30.0, 2000.0)
        x = rng.poisson(x * counts + 1.0) / counts
    else:
        x = x + rng.normal(0.0, rng.uniform(0.005, 0.05), x.shape)
    return _unit(x), dict(masks)


def _glyph(letter: str, cell: int) -> np.ndarray:
    """The (5 cell, 3 cell) bool bitmap of a letter of GLYPHS."""
    bitmap = np.array([[c == "1" for c in row] for row in GLYPHS[letter]])
    return np.kron(bitmap, np.ones((cell, cell), dtype=bool))


def _stamp(canvas: np.ndarray, stencil: np.ndarray, forbidden: np.ndarray, rng: np.random.Generator,
           border: float) -> bool:
    """Put ``stencil`` into ``canvas`` (in place) at a random place within ``border`` (fraction of the size) of an
    image edge, where it and a 2-pixel margin miss every ``forbidden`` pixel; False when 30 tries found none."""
    size_r, size_c = canvas.shape
    height, width = stencil.shape
    if height + 2 > size_r or width + 2 > size_c:
        return False
    band = max(int(border * min(size_r, size_c)), 1)
    for _ in range(30):
        side = int(rng.integers(4))
        if side in (0, 1):  # top or bottom band
            row = int(rng.integers(0, max(band - height, 0) + 1))
            row = row if side == 0 else size_r - height - row
            col = int(rng.integers(0, size_c - width + 1))
        else:  # left or right band
            col = int(rng.integers(0, max(band - width, 0) + 1))
            col = col if side == 2 else size_c - width - col
            row = int(rng.integers(0, size_r - height + 1))
        r0, r1 = max(row - 2, 0), min(row + height + 2, size_r)
        c0, c1 = max(col - 2, 0), min(col + width + 2, size_c)
        if not forbidden[r0:r1, c0:c1].any():
            canvas[row:row + height, col:col + width] |= stencil
            return True
    return False


def marker_stencil(shape: tuple[int, int], forbidden: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W) bool: the pixels of 1-4 burnt-in items - an L or R letter, a line of text, a rectangle (filled or an
    outline) and a ruler with ticks - each near an image border and never touching ``forbidden``."""
    canvas = np.zeros(shape, dtype=bool)
    size = min(shape)
    kinds = rng.permutation(["letter", "text", "rectangle", "ruler"])[: int(rng.integers(1, 5))]
    for kind in kinds:
        if kind == "letter":
            cell = max(1, int(round(size * rng.uniform(0.006, 0.018))))
            stencil = _glyph(str(rng.choice(["L", "R"])), cell)
            if rng.random() < 0.5:  # the lead marker's frame
                stencil = np.pad(stencil, cell, constant_values=False)
                stencil[[0, -1], :] = True
                stencil[:, [0, -1]] = True
        elif kind == "text":
            cell = max(1, int(round(size * rng.uniform(0.003, 0.008))))
            letters = [rng.random((5, 3)) < 0.5 for _ in range(int(rng.integers(3, 12)))]
            stencil = np.kron(np.hstack([np.pad(g, ((0, 0), (0, 1))) for g in letters]), np.ones((cell, cell), bool))
        elif kind == "rectangle":
            height = int(size * rng.uniform(0.02, 0.08))
            width = int(size * rng.uniform(0.05, 0.25))
            stencil = np.ones((max(height, 2), max(width, 2)), dtype=bool)
            if rng.random() < 0.5:
                stencil[1:-1, 1:-1] = False
        else:
            length = int(size * rng.uniform(0.2, 0.6))
            spacing = int(rng.integers(3, 9))
            stencil = np.zeros((6, length), dtype=bool)
            stencil[0, :] = True
            stencil[:, ::spacing] = True
            stencil[3:, ::spacing][:, 1::2] = False  # long and short ticks
            if rng.random() < 0.5:
                stencil = stencil.T
        _stamp(canvas, stencil, forbidden, rng, border=0.2)
    return canvas


def burn_in_markers(image: np.ndarray, masks: Masks, rng: np.random.Generator) -> tuple[np.ndarray, Masks]:
    """Burnt-in L/R letters, text, rectangles and rulers (:func:`marker_stencil`), bright (85-100 % of the range),
    placed only outside every mask, so they are background and the masks are unchanged."""
    x = _unit(image)
    forbidden = np.zeros(x.shape, dtype=bool)
    for mask in masks.values():
        forbidden |= mask
    stencil = marker_stencil(x.shape, forbidden, rng)
    out = x.copy()
    out[stencil] = rng.uniform(0.85, 1.0)
    return out, dict(masks)


def field_of_view(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(H, W) bool collimated field: 1-4 of the sides cut by 3-18 % of the size each, every edge tilted by up to
    +-4 degrees."""
    rows, cols = np.indices(shape, dtype=float)
    height, width = shape
    field = np.ones(shape, dtype=bool)
    sides = rng.permutation(4)[: int(rng.integers(1, 5))]
    for side in sides:
        depth = rng.uniform(0.03, 0.18)
        tilt = np.tan(np.deg2rad(rng.uniform(-4.0, 4.0)))
        if side == 0:
            field &= rows >= depth * height + tilt * (cols - width / 2)
        elif side == 1:
            field &= rows < (1 - depth) * height + tilt * (cols - width / 2)
        elif side == 2:
            field &= cols >= depth * width + tilt * (rows - height / 2)
        else:
            field &= cols < (1 - depth) * width + tilt * (rows - height / 2)
    return field


def collimate(image: np.ndarray, masks: Masks, rng: np.random.Generator) -> tuple[np.ndarray, Masks]:
    """Tight collimation (:func:`field_of_view`): outside the field the image is a dark (0-8 %) or, as after some
    vendors' shutter processing, bright (90-100 %) flat border with slight noise and a soft edge; every mask is cut
    to the field (what is not imaged cannot be segmented)."""
    x = _unit(image)
    field = field_of_view(x.shape, rng)
    level = rng.uniform(0.0, 0.08) if rng.random() < 0.7 else rng.uniform(0.9, 1.0)
    border = level + rng.normal(0.0, 0.005, x.shape)
    weight = ndimage.gaussian_filter(field.astype(float), rng.uniform(0.3, 1.5))
    out = weight * x + (1.0 - weight) * border
    return _unit(out), {name: mask & field for name, mask in masks.items()}


def _warp(array: np.ndarray, source_rows: np.ndarray, source_cols: np.ndarray, order: int) -> np.ndarray:
    """``array`` sampled at the source coordinates (nearest edge value outside)."""
    return ndimage.map_coordinates(array, [source_rows, source_cols], order=order, mode="nearest")


def portable_ap(image: np.ndarray, masks: Masks, rng: np.random.Generator) -> tuple[np.ndarray, Masks]:
    """The portable AP look. The heart is magnified by 8-25 % (a smooth radial warp about its centroid, or about
    (0.6 H, 0.5 W) without a heart mask), the upper mediastinum widened by 5-20 % (a horizontal warp about the
    midline), the image rotated by up to +-5 degrees, and the contrast lowered to 60-85 % with 0-30 % scatter
    haze. Image and masks are warped alike (masks with nearest neighbour)."""
    x = _unit(image)
    height, width = x.shape
    rows, cols = np.indices(x.shape, dtype=float)
    heart = masks.get("heart")
    if heart is not None and heart.any():
        centre_r, centre_c = ndimage.center_of_mass(heart)
        radius = max(np.sqrt(heart.sum() / np.pi), 0.05 * width)
    else:
        centre_r, centre_c, radius = 0.6 * height, 0.5 * width, 0.12 * width
    d_r, d_c = rows - centre_r, cols - centre_c
    gain = rng.uniform(0.08, 0.25) * np.exp(-(d_r ** 2 + d_c ** 2) / (2.0 * (1.3 * radius) ** 2))
    source_r, source_c = centre_r + d_r / (1.0 + gain), centre_c + d_c / (1.0 + gain)
    midline = centre_c if heart is not None and heart.any() else 0.5 * width
    upper = np.clip((centre_r - rows) / max(centre_r, 1.0), 0.0, 1.0)  # 0 at the heart, 1 at the top
    widen = rng.uniform(0.05, 0.2) * upper * np.exp(-((source_c - midline) ** 2) / (2.0 * (0.08 * width) ** 2))
    source_c = midline + (source_c - midline) / (1.0 + widen)
    angle = np.deg2rad(rng.uniform(-5.0, 5.0))
    cos, sin = np.cos(angle), np.sin(angle)
    o_r, o_c = source_r - height / 2.0, source_c - width / 2.0
    source_r, source_c = height / 2.0 + cos * o_r - sin * o_c, width / 2.0 + sin * o_r + cos * o_c
    out = _warp(x, source_r, source_c, order=1)
    new_masks = {name: _warp(mask.astype(np.uint8), source_r, source_c, order=0) > 0 for name, mask in masks.items()}
    mean = float(out.mean())
    out = mean + (out - mean) * rng.uniform(0.6, 0.85)
    haze = rng.uniform(0.0, 0.3)
    out = (1.0 - haze) * out + haze * ndimage.gaussian_filter(out, 0.08 * width)
    return _unit(out), new_masks


#: The transforms in the order a radiograph meets them (geometry, collimation, detector LUT and grid, processing,
#: burnt-in annotation, storage), with the probability each is applied in :func:`site_augment`.
SITE_TRANSFORMS: tuple[tuple[str, Transform, float], ...] = (
    ("portable_ap", portable_ap, 0.25),
    ("collimate", collimate, 0.3),
    ("tone_curve", tone_curve, 0.5),
    ("grid_lines", grid_lines, 0.25),
    ("noise_and_sharpness", noise_and_sharpness, 0.5),
    ("burn_in_markers", burn_in_markers, 0.35),
    ("quantise", quantise, 0.3),
)


def site_augment(image: np.ndarray, masks: Masks, rng: np.random.Generator, probability: float = 0.7
                 ) -> tuple[np.ndarray, Masks]:
    """With ``probability``, apply each of SITE_TRANSFORMS with its own probability (in that order); otherwise
    return the image clipped to [0, 1] and the masks as they are."""
    image = _unit(image)
    masks = dict(masks)
    if rng.random() >= probability:
        return image, masks
    for _, transform, chance in SITE_TRANSFORMS:
        if rng.random() < chance:
            image, masks = transform(image, masks, rng)
    return image, masks
