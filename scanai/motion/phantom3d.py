"""A beating 3-D left ventricle with an exactly known motion field (for 3-D+t motion estimation).

The ventricle is a thick-walled, truncated prolate ellipsoid (long axis along k, apex at low k, open towards the
base plane) around a blood pool, inside textured tissue. Work in *q-space*, the axis-frame mm relative to the
ellipsoid's centre with the long-axis coordinate divided by the elongation ``e`` (``q = (x, y, z / e)``): there the
endocardium and epicardium are the spheres ``|q| = rho_endo`` and ``|q| = rho_epi`` (the apical wall is ``e`` times
as thick as the free wall, as the long axis is ``e`` times as long).

Material points move with an analytic map ``x_t = L_s(C_s(W_s(X)))`` of the contraction state ``s`` (0 at
end-diastole, 1 at end-systole; :func:`scanai.motion.phantom.contraction_profile`):

- ``W_s`` **twist**: rotation about the long axis by ``s * twist * w(z) * taper(|q|)``, ``w`` running linearly from
  -0.3 at the base plane (clockwise seen from the apex) to 1 at the apex, ``taper`` 1 inside the epicardium and 0
  from ``rho_epi + 6`` voxels outwards. Rotation about the axis keeps ``|q|`` and ``z``, so it inverts exactly.
- ``C_s`` **radial contraction** in q-space about the centre: the endocardium moves inwards from ``rho_endo`` to
  ``rho_endo - s * amplitude``, the wall and everything outside keep their q-space volume
  (``rho_t^3 = rho^3 - rho_endo^3 + rho_endo_t^3``), the cavity shrinks proportionally.
- ``L_s`` **longitudinal shortening**: the long-axis coordinate is scaled by ``1 - s * shortening`` about the
  apex plane (the base descends towards the apex).

Each step has a closed-form inverse, so frames are rendered by backward mapping, ``frame_t(y) = material(X_t(y))``,
and the truth is the pull-back field of the registration convention (:mod:`scanai.motion.registration`):
``u_t(x) = x_t(X_r(x)) - x`` on the reference grid, exact to round-off. The true strain is computed from the
analytic map's deformation gradient (central differences of the closed form with a 1e-4 mm step, error ~1e-8).

Strain directions (as :mod:`scanai.motion.strain` measures them on a short-axis stack): radial = away from the long
axis within the short-axis plane, circumferential = about the long axis, both unit vectors at the reference
position; the strain along ``e`` is ``|F e| - 1`` with the full 3x3 deformation gradient ``F``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scanai.core.errors import InputError
from scanai.core.image import Geometry, VolumeSequence
from scanai.motion.phantom import _texture, contraction_profile

_BASE_TWIST = -0.3  # twist weight at the base plane (the apex has 1)
_TAPER_VOXELS = 6.0  # the twist fades to 0 over this many voxels outside the epicardium


@dataclass(frozen=True)
class Ventricle:
    """The ventricle's shape and motion, all in axis-frame mm (along i, j, k) or radians.

    centre_mm: (3,) ellipsoid centre; rho_endo_mm / rho_epi_mm: q-space radii (short-axis radii at the equator);
    elongation: long / short semi-axis ratio; base_mm: base plane, long-axis offset above the centre;
    amplitude_mm: q-space inward endocardial motion at end-systole; twist_rad: apical rotation at end-systole;
    shortening: relative long-axis shortening at end-systole; taper_mm: width of the twist's fade outside the wall.
    """

    centre_mm: np.ndarray
    rho_endo_mm: float
    rho_epi_mm: float
    elongation: float
    base_mm: float
    amplitude_mm: float
    twist_rad: float
    shortening: float
    taper_mm: float

    @property
    def apex_mm(self) -> float:
        """Long-axis offset of the epicardial apex below the centre (negative)."""
        return -self.elongation * self.rho_epi_mm

    def q_space(self, points_mm: np.ndarray) -> np.ndarray:
        """Axis-frame mm (..., 3) -> q-space (..., 3) (relative to the centre, long axis divided by elongation)."""
        rel = np.asarray(points_mm, dtype=np.float64) - self.centre_mm
        return np.concatenate([rel[..., :2], rel[..., 2:] / self.elongation], axis=-1)

    def from_q_space(self, q: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`q_space`."""
        return np.concatenate([q[..., :2], q[..., 2:] * self.elongation], axis=-1) + self.centre_mm

    def twist_angle(self, q: np.ndarray, s: float) -> np.ndarray:
        """Rotation (rad) of the material point with q-space position ``q`` (..., 3) at contraction state ``s``."""
        z = q[..., 2] * self.elongation
        along = np.clip((self.base_mm - z) / (self.base_mm - self.apex_mm), 0.0, 1.0)
        weight = _BASE_TWIST + (1.0 - _BASE_TWIST) * along
        taper = np.clip((self.rho_epi_mm + self.taper_mm - np.linalg.norm(q, axis=-1)) / self.taper_mm, 0.0, 1.0)
        return s * self.twist_rad * weight * taper

    def endocardium_at(self, s: float) -> float:
        """q-space endocardial radius (mm) at contraction state ``s``."""
        return self.rho_endo_mm - s * self.amplitude_mm


def _rotate(q: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """q (..., 3) rotated about the long axis (the third coordinate) by ``angle`` (...) rad."""
    cosine, sine = np.cos(angle), np.sin(angle)
    out = q.copy()
    out[..., 0] = cosine * q[..., 0] - sine * q[..., 1]
    out[..., 1] = sine * q[..., 0] + cosine * q[..., 1]
    return out


def _radial_scale(radius: np.ndarray, inner_from: float, inner_to: float) -> np.ndarray:
    """Factor taking q-space radius ``radius`` to its image when the sphere ``inner_from`` goes to ``inner_to``
    (the cavity scales, the rest keeps its q-space volume); 1 where ``radius`` is 0."""
    outer = np.cbrt(np.maximum(radius**3 - inner_from**3 + inner_to**3, 0.0))
    image = np.where(radius >= inner_from, outer, radius * inner_to / inner_from)
    return np.divide(image, radius, out=np.ones_like(radius), where=radius > 0)


def to_frame(material_mm: np.ndarray, heart: Ventricle, s: float) -> np.ndarray:
    """Material -> frame map ``x_t(X)``: axis-frame mm (..., 3) -> (..., 3) at contraction state ``s``."""
    q = heart.q_space(material_mm)
    q = _rotate(q, heart.twist_angle(q, s))
    q = q * _radial_scale(np.linalg.norm(q, axis=-1), heart.rho_endo_mm, heart.endocardium_at(s))[..., None]
    x = heart.from_q_space(q)
    apex = heart.centre_mm[2] + heart.apex_mm
    x[..., 2] = apex + (x[..., 2] - apex) * (1.0 - s * heart.shortening)
    return x


def to_material(frame_mm: np.ndarray, heart: Ventricle, s: float) -> np.ndarray:
    """Frame -> material map ``X_t(x)``, the exact inverse of :func:`to_frame`: (..., 3) mm -> (..., 3) mm."""
    x = np.array(frame_mm, dtype=np.float64, copy=True)
    apex = heart.centre_mm[2] + heart.apex_mm
    x[..., 2] = apex + (x[..., 2] - apex) / (1.0 - s * heart.shortening)
    q = heart.q_space(x)
    q = q * _radial_scale(np.linalg.norm(q, axis=-1), heart.endocardium_at(s), heart.rho_endo_mm)[..., None]
    q = _rotate(q, -heart.twist_angle(q, s))  # |q| and z are the material point's: the angle is known exactly
    return heart.from_q_space(q)


def _tissues(material_mm: np.ndarray, heart: Ventricle, width_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Smooth (blood, myocardium) fractions in [0, 1] at material points (..., 3): sigmoid edges ``width_mm``."""
    from scipy.special import expit

    q = heart.q_space(material_mm)
    radius = np.linalg.norm(q, axis=-1)
    below_base = expit((heart.base_mm - q[..., 2] * heart.elongation) / width_mm)
    inside_endo = expit((heart.rho_endo_mm - radius) / width_mm)
    inside_epi = expit((heart.rho_epi_mm - radius) / width_mm)
    return inside_endo, (inside_epi - inside_endo) * below_base


@dataclass(frozen=True)
class VentriclePhantom:
    """A rendered 3-D+t phantom.

    sequence:        frames (T, K, J, I) float32, index "time" in s.
    displacement_mm: (T, K, J, I, 3) exact pull-back fields, RAS mm, zero at ``reference_index``.
    myocardium, blood_pool: (K, J, I) bool tissue masks at the reference frame.
    heart:           the analytic ventricle; states: (T,) contraction state per frame.
    """

    sequence: VolumeSequence
    displacement_mm: np.ndarray
    myocardium: np.ndarray
    blood_pool: np.ndarray
    heart: Ventricle
    states: np.ndarray
    reference_index: int

    @property
    def end_systole(self) -> int:
        """Frame of peak contraction (0-based)."""
        return int(np.argmax(self.states))

    def labels(self, myocardium_label: int = 2, blood_pool_label: int = 1) -> np.ndarray:
        """(K, J, I) uint8 label map at the reference frame (0 background)."""
        out = np.zeros(self.myocardium.shape, dtype=np.uint8)
        out[self.blood_pool] = blood_pool_label
        out[self.myocardium] = myocardium_label
        return out

    def true_strain(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact global (circumferential, radial) strain in % per frame, (T,) each, averaged over ``mask``
        (K, J, I) bool on the reference grid (e.g. the strain result's eroded mask), from the analytic map's
        deformation gradient (see the module docstring for the directions)."""
        geometry = self.sequence.geometry
        spacing = np.asarray(geometry.spacing_mm)
        kk, jj, ii = np.nonzero(np.asarray(mask, dtype=bool))
        points = np.stack([ii, jj, kk], axis=-1) * spacing  # axis-frame mm
        reference = self.states[self.reference_index]
        radial = points[:, :2] - self.heart.centre_mm[:2]
        radial /= np.linalg.norm(radial, axis=-1, keepdims=True)
        directions = {"radial": np.concatenate([radial, np.zeros((len(points), 1))], axis=-1)}
        directions["circumferential"] = np.stack([-radial[:, 1], radial[:, 0], np.zeros(len(points))], axis=-1)
        step = 1e-4
        circumferential, radial_strain = np.zeros(len(self.states)), np.zeros(len(self.states))
        for t, s in enumerate(self.states):
            def mapped(offset: np.ndarray, s: float = s) -> np.ndarray:
                return to_frame(to_material(points + offset, self.heart, reference), self.heart, s)

            for name, e in directions.items():
                stretched = (mapped(step * e) - mapped(-step * e)) / (2.0 * step)  # F e
                value = 100.0 * float(np.mean(np.linalg.norm(stretched, axis=-1) - 1.0))
                if name == "radial":
                    radial_strain[t] = value
                else:
                    circumferential[t] = value
        return circumferential, radial_strain


def beating_ventricle_phantom(n_frames: int = 10, shape: tuple[int, int, int] = (48, 64, 64),
                              spacing_mm: float = 2.0, endo_radius_px: float = 11.0, wall_px: float = 5.0,
                              elongation: float = 1.6, amplitude_px: float = 3.5, twist_deg: float = 10.0,
                              shortening: float = 0.12, noise: float = 0.01, reference_index: int = 0,
                              seed: int = 0) -> VentriclePhantom:
    """Render the beating ventricle (see the module docstring) and its exact motion.

    n_frames:       frames over one 1 s cycle; frame 0 end-diastole, end-systole at round(0.4 n_frames).
    shape:          (K, J, I) voxels, isotropic ``spacing_mm``; the long axis runs along k, centred in-plane,
                    the apex ~7 voxels above slice 0 for the default shape.
    endo_radius_px, wall_px: q-space endocardial radius and wall thickness at end-diastole, in voxels.
    elongation:     long / short semi-axis ratio. amplitude_px: inward endocardial motion at end-systole (voxels).
    twist_deg:      apical rotation at end-systole (the base turns -0.3 times that). shortening: long-axis
                    shortening at end-systole (fraction).
    noise:          standard deviation of the added Gaussian noise (tissue intensities 0.15 .. 0.9).
    Returns :class:`VentriclePhantom`.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 16:
        raise InputError(f"The 3-D phantom needs at least 16 voxels along every axis, got {shape}.")
    if n_frames < 2 or not 0 <= reference_index < n_frames:
        raise InputError(f"The phantom needs at least 2 frames and a reference among them, got {n_frames} frames "
                         f"and reference {reference_index}.")
    if not 0.0 <= amplitude_px < 0.6 * endo_radius_px or wall_px <= 0:
        raise InputError(f"The contraction {amplitude_px} px must lie in [0, {0.6 * endo_radius_px:.1f}) px and the "
                         "wall be thicker than 0.")
    spacing = float(spacing_mm)
    k_size, j_size, i_size = shape
    rho_epi = (endo_radius_px + wall_px) * spacing
    apex_k = 0.15 * k_size * spacing  # the epicardial apex, above slice 0
    top_k = apex_k + 1.25 * elongation * rho_epi  # the base plane
    if 2.0 * rho_epi > 0.9 * min(i_size, j_size) * spacing or top_k > (k_size - 3) * spacing:
        raise InputError(f"The ventricle (short-axis radius {endo_radius_px + wall_px:g} voxels, {elongation:g} times "
                         f"as long) does not fit a grid of {shape} voxels.", "Use a larger shape or a smaller radius.")
    centre = np.array([(i_size - 1) / 2.0 * spacing, (j_size - 1) / 2.0 * spacing, apex_k + elongation * rho_epi])
    heart = Ventricle(centre_mm=centre, rho_endo_mm=endo_radius_px * spacing, rho_epi_mm=rho_epi,
                      elongation=float(elongation), base_mm=0.25 * rho_epi * elongation,
                      amplitude_mm=amplitude_px * spacing, twist_rad=np.deg2rad(twist_deg),
                      shortening=float(shortening), taper_mm=_TAPER_VOXELS * spacing)
    geometry = Geometry((spacing,) * 3)
    kk, jj, ii = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    grid_mm = np.stack([ii, jj, kk], axis=-1) * spacing
    largest_motion = amplitude_px + np.deg2rad(abs(twist_deg)) * (endo_radius_px + wall_px) + shortening * k_size
    pad = int(np.ceil(largest_motion)) + 8
    from scipy import ndimage

    texture = ndimage.spline_filter(_texture(shape, (pad, pad, pad), seed, sigma_px=1.5), order=3, mode="mirror")
    rng = np.random.default_rng(seed + 1)
    states = contraction_profile(n_frames)
    reference_material = to_material(grid_mm, heart, states[reference_index])
    frames = np.empty((n_frames, *shape), dtype=np.float32)
    displacement = np.empty((n_frames, *shape, 3), dtype=np.float64)
    for t, s in enumerate(states):
        frames[t] = _render(to_material(grid_mm, heart, s), heart, texture, pad, spacing)
        if noise > 0:
            frames[t] += rng.normal(0.0, noise, size=shape).astype(np.float32)
        displacement[t] = 0.0 if t == reference_index else to_frame(reference_material, heart, s) - grid_mm
    blood, myocardium = _tissues(reference_material, heart, 1e-6 * spacing)
    times = tuple(float(n) / n_frames for n in range(n_frames))
    return VentriclePhantom(VolumeSequence(frames, geometry, times, "time", "s"), displacement, myocardium > 0.5,
                            (blood > 0.5) & (myocardium <= 0.5), heart, states, int(reference_index))


def _render(material_mm: np.ndarray, heart: Ventricle, texture: np.ndarray, pad: int, spacing: float) -> np.ndarray:
    """The material image at material points (K, J, I, 3) axis-frame mm -> intensities (K, J, I): blood 0.9,
    myocardium 0.35, tissue 0.15, each with a moving texture (cubic interpolation of ``texture``, already
    spline-filtered)."""
    from scipy import ndimage

    blood, myocardium = _tissues(material_mm, heart, 0.7 * spacing)
    index = material_mm / spacing + pad
    values = ndimage.map_coordinates(texture, [index[..., 2], index[..., 1], index[..., 0]], order=3, mode="mirror",
                                     prefilter=False)
    tissue = np.clip(1.0 - blood - myocardium, 0.0, 1.0)
    return (blood * (0.9 + 0.04 * values) + myocardium * (0.35 + 0.08 * values)
            + tissue * (0.15 + 0.06 * values)).astype(np.float32)
