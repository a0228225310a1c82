"""A beating-heart phantom with an exactly known motion field.

The phantom is a textured short-axis ring (left-ventricular myocardium) around a blood pool, inside textured
background tissue. Material points move with an analytic, invertible map (radial contraction that keeps the
myocardial area, or volume in 3-D, constant, an optional endocardial twist and, in 3-D, longitudinal
shortening). Every frame is rendered by backward mapping, ``frame_t(y) = material(X_t(y))``, where ``X_t`` is
the analytic frame-t -> material map and ``material`` is a fixed continuous image (tissue labels with smooth
edges plus a smoothed-noise texture that moves with the tissue).

Ground truth follows the registration convention of :mod:`scanai.motion.registration` (pull-back field on
the reference grid): for a point ``x`` of the reference frame ``r``, frame ``t``'s corresponding point is
``x + u_t(x)`` with ``u_t(x) = x_t(X_r(x)) - x`` (``x_t`` = material -> frame-t map). Hence
``frame_t(x + u_t(x)) = frame_r(x)`` exactly (before the optional noise); the truth is analytic, accurate to
floating-point round-off (far below 0.05 px), with no numerical inversion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scanai.core.errors import InputError
from scanai.core.image import Geometry, VolumeSequence


@dataclass(frozen=True)
class _Heart:
    """Ring geometry in mm (in-plane, about ``centre_mm``) and the motion amplitudes."""

    centre_mm: np.ndarray  # (3,) axis-aligned mm (along i, j, k)
    r_endo_mm: float
    r_epi_mm: float
    amplitude_mm: float  # inward endocardial displacement at peak contraction
    twist_rad: float  # endocardial rotation at peak contraction
    shortening: float  # relative longitudinal shortening at peak contraction (3-D only)


def contraction_profile(n_frames: int, systole_fraction: float = 0.4) -> np.ndarray:
    """Contraction state s in [0, 1] per frame, shape (n_frames,): 0 at frame 0 (end-diastole), 1 at
    end-systole (frame ``round(systole_fraction * n_frames)``), smooth cosine rise and fall, periodic."""
    frames = np.arange(n_frames, dtype=float)
    t_es = max(1, int(round(systole_fraction * n_frames)))
    rise = 0.5 * (1.0 - np.cos(np.pi * frames / t_es))
    fall = 0.5 * (1.0 + np.cos(np.pi * (frames - t_es) / max(n_frames - t_es, 1)))
    return np.where(frames <= t_es, rise, fall)


def _to_material(points: np.ndarray, heart: _Heart, s: float) -> np.ndarray:
    """Frame -> material map X_t(x). ``points`` (..., 3) axis-aligned mm; ``s`` the contraction state."""
    rel = points - heart.centre_mm
    stretch = 1.0 - heart.shortening * s
    r_endo_t = heart.r_endo_mm - heart.amplitude_mm * s
    r = np.hypot(rel[..., 0], rel[..., 1])
    theta = np.arctan2(rel[..., 1], rel[..., 0])
    outside = np.sqrt(np.maximum(heart.r_endo_mm**2 + stretch * (r**2 - r_endo_t**2), 0.0))
    big_r = np.where(r >= r_endo_t, outside, r * heart.r_endo_mm / r_endo_t)
    big_theta = theta - heart.twist_rad * s * _twist_weight(big_r, heart)
    out = np.empty_like(points, dtype=float)
    out[..., 0] = heart.centre_mm[0] + big_r * np.cos(big_theta)
    out[..., 1] = heart.centre_mm[1] + big_r * np.sin(big_theta)
    out[..., 2] = heart.centre_mm[2] + rel[..., 2] / stretch
    return out


def _to_frame(points: np.ndarray, heart: _Heart, s: float) -> np.ndarray:
    """Material -> frame map x_t(X), the exact inverse of :func:`_to_material`. ``points`` (..., 3) in mm."""
    rel = points - heart.centre_mm
    stretch = 1.0 - heart.shortening * s
    r_endo_t = heart.r_endo_mm - heart.amplitude_mm * s
    big_r = np.hypot(rel[..., 0], rel[..., 1])
    big_theta = np.arctan2(rel[..., 1], rel[..., 0])
    outside = np.sqrt(np.maximum(r_endo_t**2 + (big_r**2 - heart.r_endo_mm**2) / stretch, 0.0))
    r = np.where(big_r >= heart.r_endo_mm, outside, big_r * r_endo_t / heart.r_endo_mm)
    theta = big_theta + heart.twist_rad * s * _twist_weight(big_r, heart)
    out = np.empty_like(points, dtype=float)
    out[..., 0] = heart.centre_mm[0] + r * np.cos(theta)
    out[..., 1] = heart.centre_mm[1] + r * np.sin(theta)
    out[..., 2] = heart.centre_mm[2] + stretch * rel[..., 2]
    return out


def _twist_weight(big_r: np.ndarray, heart: _Heart) -> np.ndarray:
    """1 inside the endocardium tapering linearly to 0 at the epicardium (material radius ``big_r`` mm)."""
    return np.clip((heart.r_epi_mm - big_r) / (heart.r_epi_mm - heart.r_endo_mm), 0.0, 1.0)


def _texture(shape: tuple[int, int, int], pad: tuple[int, int, int], seed: int, sigma_px: float) -> np.ndarray:
    """Unit-variance Gaussian-smoothed white noise on the grid padded by ``pad`` voxels per side (k, j, i)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    padded = tuple(n + 2 * p for n, p in zip(shape, pad, strict=True))
    sigmas = tuple(0.0 if n == 1 else sigma_px for n in shape)
    noise = ndimage.gaussian_filter(rng.standard_normal(padded), sigmas, mode="wrap")
    return (noise - noise.mean()) / noise.std()


def _render(material_mm: np.ndarray, heart: _Heart, texture: np.ndarray, pad: tuple[int, int, int],
            spacing: np.ndarray) -> np.ndarray:
    """Material image sampled at material points (K, J, I, 3) axis-aligned mm -> intensities (K, J, I)."""
    from scipy import ndimage

    rel = material_mm - heart.centre_mm
    big_r = np.hypot(rel[..., 0], rel[..., 1])
    width = 0.7 * float(min(spacing[0], spacing[1]))
    in_wall = 1.0 / (1.0 + np.exp(-(big_r - heart.r_endo_mm) / width))
    out_wall = 1.0 / (1.0 + np.exp(-(big_r - heart.r_epi_mm) / width))
    blood, myocardium = 1.0 - in_wall, in_wall - out_wall
    ijk = material_mm / spacing  # continuous (i, j, k) on the unpadded grid
    coordinates = np.stack([ijk[..., 2] + pad[0], ijk[..., 1] + pad[1], ijk[..., 0] + pad[2]])
    texture_values = ndimage.map_coordinates(texture, coordinates, order=3, mode="mirror")
    return (blood * (0.9 + 0.04 * texture_values) + myocardium * (0.35 + 0.08 * texture_values)
            + out_wall * (0.15 + 0.06 * texture_values))


def smooth_motion_phantom(n_frames: int = 20, shape: tuple[int, int, int] = (1, 96, 96),
                          spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0), amplitude_px: float = 4.0,
                          twist_deg: float = 0.0, shortening: float = 0.1, noise: float = 0.01,
                          period_s: float = 1.0, reference_index: int = 0, seed: int = 0,
                          origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
                          directions: tuple[tuple[float, float, float], ...] | None = None,
                          ) -> tuple[VolumeSequence, np.ndarray]:
    """A synthetic cardiac cine (2-D when ``shape[0] == 1``, else 3-D) and its exact motion field.

    n_frames:      frames over one cycle of ``period_s`` seconds; frame 0 is end-diastole (no contraction),
                   peak contraction (end-systole) at frame round(0.4 n_frames).
    shape:         (K, J, I) voxels; the ring's radii are 16 % and 24 % of the smaller in-plane field of view.
    spacing_mm:    voxel size along (i, j, k) in mm; ``origin_mm`` and ``directions`` (3x3, columns = RAS
                   directions of i, j, k) place the grid in RAS (default axis-aligned at the origin).
    amplitude_px:  inward endocardial displacement at end-systole, in in-plane pixels (along i).
    twist_deg:     endocardial rotation at end-systole (tapering to 0 at the epicardium).
    shortening:    relative long-axis shortening at end-systole (3-D only; ignored when K == 1).
    noise:         standard deviation of the added Gaussian noise (tissue intensities are 0.15 .. 0.9).
    reference_index: the frame the ground truth is expressed on.

    Returns ``(sequence, displacement_mm)``: the frames (T, K, J, I) with index "time" in s (frame n at
    n * period_s / n_frames), and the true pull-back field (T, K, J, I, 3), RAS mm, such that
    ``frame_t(x + u_t(x)) = frame_ref(x)``; ``u`` is exactly zero at the reference frame.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1 or min(shape[1:]) < 16:
        raise InputError(f"The phantom needs a (slices, rows, columns) shape with at least 16 x 16 pixels per "
                         f"slice, got {shape}.")
    if n_frames < 2:
        raise InputError(f"The phantom needs at least 2 frames, got {n_frames}.")
    if not 0 <= reference_index < n_frames:
        raise InputError(f"Reference frame {reference_index} does not exist: the phantom has {n_frames} frames "
                         f"(0 to {n_frames - 1}).")
    geometry = Geometry(spacing_mm, origin_mm, directions if directions is not None else Geometry().directions)
    spacing = np.asarray(geometry.spacing_mm)
    k_size, j_size, i_size = shape
    fov = min(i_size * spacing[0], j_size * spacing[1])
    r_endo, r_epi = 0.16 * fov, 0.24 * fov
    amplitude_mm = amplitude_px * spacing[0]
    if not 0.0 <= amplitude_mm < 0.6 * r_endo:
        raise InputError(f"The contraction amplitude {amplitude_px} px is out of range for this field of view "
                         f"(0 to {0.6 * r_endo / spacing[0]:.1f} px).")
    three_d = k_size > 1
    heart = _Heart(centre_mm=(np.array([i_size, j_size, k_size], dtype=float) - 1.0) / 2.0 * spacing,
                   r_endo_mm=r_endo, r_epi_mm=r_epi, amplitude_mm=amplitude_mm,
                   twist_rad=np.deg2rad(twist_deg), shortening=shortening if three_d else 0.0)

    kk, jj, ii = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    grid_mm = np.stack([ii, jj, kk], axis=-1) * spacing  # (K, J, I, 3) axis-aligned mm
    pad_in_plane = int(np.ceil(amplitude_px)) + 8
    pad_k = int(np.ceil(k_size * heart.shortening)) + 4 if three_d else 0
    pad = (pad_k, pad_in_plane, pad_in_plane)
    texture = _texture(shape, pad, seed, sigma_px=1.5)
    rng = np.random.default_rng(seed + 1)

    states = contraction_profile(n_frames)
    reference_material = _to_material(grid_mm, heart, states[reference_index])
    linear = np.asarray(geometry.directions)  # columns: RAS direction of i, j, k
    frames = np.empty((n_frames, *shape), dtype=np.float32)
    displacement = np.empty((n_frames, *shape, 3), dtype=np.float64)
    for t, s in enumerate(states):
        image = _render(_to_material(grid_mm, heart, s), heart, texture, pad, spacing)
        if noise > 0:
            image = image + rng.normal(0.0, noise, size=image.shape)
        frames[t] = image
        if t == reference_index:
            displacement[t] = 0.0
        else:
            displacement[t] = (_to_frame(reference_material, heart, s) - grid_mm) @ linear.T
    times = tuple(float(n) * period_s / n_frames for n in range(n_frames))
    return VolumeSequence(frames, geometry, times, "time", "s"), displacement


def myocardium_mask(sequence: VolumeSequence, frame_index: int = 0, amplitude_px: float = 4.0,
                    twist_deg: float = 0.0, shortening: float = 0.1) -> np.ndarray:
    """Boolean (K, J, I) mask of the phantom's myocardium in frame ``frame_index`` (same parameters as used
    for :func:`smooth_motion_phantom`; only its shape, spacing and frame count are taken from ``sequence``)."""
    k_size, j_size, i_size = sequence.frames.shape[1:]
    spacing = np.asarray(sequence.geometry.spacing_mm)
    fov = min(i_size * spacing[0], j_size * spacing[1])
    heart = _Heart(centre_mm=(np.array([i_size, j_size, k_size], dtype=float) - 1.0) / 2.0 * spacing,
                   r_endo_mm=0.16 * fov, r_epi_mm=0.24 * fov, amplitude_mm=amplitude_px * spacing[0],
                   twist_rad=np.deg2rad(twist_deg), shortening=shortening if k_size > 1 else 0.0)
    kk, jj, ii = np.meshgrid(np.arange(k_size), np.arange(j_size), np.arange(i_size), indexing="ij")
    grid_mm = np.stack([ii, jj, kk], axis=-1) * spacing
    return _in_wall(_to_material(grid_mm, heart, contraction_profile(len(sequence))[frame_index]), heart)


def _in_wall(material_mm: np.ndarray, heart: _Heart) -> np.ndarray:
    """Whether material points (..., 3) mm lie in the myocardial wall, between endocardium and epicardium."""
    radius = np.hypot(material_mm[..., 0] - heart.centre_mm[0], material_mm[..., 1] - heart.centre_mm[1])
    return (radius >= heart.r_endo_mm) & (radius < heart.r_epi_mm)


def heart_motion_on_image(image: np.ndarray, n_frames: int, centre_px: tuple[float, float], r_endo_px: float,
                          amplitude_px: float, twist_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Move a real 2-D image with this module's analytic heart motion: real texture, exact truth.

    image (H, W); the ring (endocardial radius ``r_endo_px``, epicardium 1.5 x that) contracts about
    ``centre_px`` = (row, column) by ``amplitude_px`` at end-systole, with ``twist_deg``; frame 0 is ``image``
    itself (end-diastole). Returns frames (T, H, W) float32 (cubic interpolation, edges mirrored), the pull-back
    truth (T, H, W, 2) in pixels (dy, dx) with ``frame_t(x + u_t(x)) = frame_0(x)``, and the ring masks (T, H, W).
    """
    from scipy import ndimage

    height, width = image.shape
    heart = _Heart(centre_mm=np.array([centre_px[1], centre_px[0], 0.0]), r_endo_mm=float(r_endo_px),
                   r_epi_mm=1.5 * float(r_endo_px), amplitude_mm=float(amplitude_px),
                   twist_rad=np.deg2rad(twist_deg), shortening=0.0)
    jj, ii = np.meshgrid(np.arange(height, dtype=float), np.arange(width, dtype=float), indexing="ij")
    grid = np.stack([ii, jj, np.zeros_like(ii)], axis=-1)  # (H, W, 3) as (i, j, k) = (column, row, 0)
    frames = np.empty((n_frames, height, width), dtype=np.float32)
    truth = np.empty((n_frames, height, width, 2), dtype=np.float32)
    masks = np.empty((n_frames, height, width), dtype=bool)
    for t, s in enumerate(contraction_profile(n_frames)):
        material = _to_material(grid, heart, s)
        frames[t] = ndimage.map_coordinates(image, [material[..., 1], material[..., 0]], order=3, mode="mirror")
        truth[t] = (_to_frame(grid, heart, s) - grid)[..., [1, 0]]
        masks[t] = _in_wall(material, heart)
    return frames, truth, masks
