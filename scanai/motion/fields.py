"""Motion-field utilities: unit conversion, sampling, composition, inversion and Jacobian maps (numpy/scipy).

Field convention (as everywhere in :mod:`scanai.motion`): a motion field is the pull-back field ``u`` on a
grid, an array (K, J, I, 3) of RAS vectors in mm. For a point ``x`` of the grid's frame, the corresponding
point of the other frame is ``x + u(x)``. With the reference at end-diastole, ``u_t`` is the Lagrangian
displacement ED -> t. Single-slice grids (K == 1) are 2-D: fields are sampled in-plane only.

Voxel displacements are continuous index displacements in **array-axis order (k, j, i)**, so that
``grid_index + displacement_voxels`` can be handed to ``scipy.ndimage.map_coordinates`` directly.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from scanai.core.errors import InputError
from scanai.core.image import Geometry

ComposeMode = Literal["warp", "sum"]


# ------------------------------------------------------------------------------------------ checks, grids


def _checked_field(displacement_mm: np.ndarray, what: str = "displacement field", ndim: int = 4) -> np.ndarray:
    """``displacement_mm`` as float64 with ``ndim`` dimensions, the last of size 3, all finite (else InputError)."""
    field = np.asarray(displacement_mm, dtype=np.float64)
    if field.ndim != ndim or field.shape[-1] != 3 or 0 in field.shape:
        expected = "(K, J, I, 3)" if ndim == 4 else "(T, K, J, I, 3)"
        raise InputError(f"The {what} has shape {field.shape}; expected {expected} (one RAS vector in mm per "
                         "voxel).", "Pass a displacement field on the image grid.")
    if not np.isfinite(field).all():
        raise InputError(f"The {what} contains missing values (NaN or infinity).",
                         "Fill or recompute the motion field before using it.")
    return field


def _voxel_matrix(geometry: Geometry) -> np.ndarray:
    """3x3 matrix mapping RAS mm vectors to voxel-index vectors in (i, j, k) order: inv(D diag(spacing))."""
    return np.linalg.inv(geometry.ijk_to_ras()[:3, :3])


def _index_grid(shape: tuple[int, int, int]) -> np.ndarray:
    """Voxel indices (K, J, I, 3) in (k, j, i) order, float64."""
    return np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij"), axis=-1)


def _sample_frames(values: np.ndarray, points_kji: np.ndarray) -> np.ndarray:
    """Linear interpolation of every frame at once.

    values:     (T, K, J, I, C) one vector field per frame, or (1, K, J, I, C) shared by every frame.
    points_kji: (T, ..., 3) continuous indices in (k, j, i) order, one set per frame.
    Returns (T, ..., C) float64. Points outside the grid take the nearest edge value; with K == 1 the k
    coordinate is ignored (in-plane bilinear interpolation): ``scipy.ndimage.map_coordinates(order=1,
    mode="nearest")`` per frame and channel. With PyTorch installed all frames and channels go through one
    ``grid_sample`` call in float64 (the same numbers, about 3x faster on a CPU); without it, scipy frame by frame.
    """
    from scanai.core.device import torch_available

    values = np.asarray(values, dtype=np.float64)
    points = np.asarray(points_kji, dtype=np.float64)
    count, channels = points.shape[0], values.shape[-1]
    flat = points.reshape(count, -1, 3)
    out = _grid_sample(values, flat) if torch_available() else _map_coordinates(values, flat)
    return out.reshape(*points.shape[:-1], channels)


def _map_coordinates(values: np.ndarray, flat_kji: np.ndarray) -> np.ndarray:
    """:func:`_sample_frames` with scipy, frame by frame and channel by channel: values (T or 1, K, J, I, C),
    points (T, P, 3) -> (T, P, C) float64 (exact at the grid points)."""
    from scipy import ndimage

    count, channels = flat_kji.shape[0], values.shape[-1]
    out = np.empty((count, flat_kji.shape[1], channels))
    for t in range(count):
        source = values[t if values.shape[0] == count else 0]
        coordinates = flat_kji[t, :, 1:].T if source.shape[0] == 1 else flat_kji[t].T
        for c in range(channels):
            plane = source[0, ..., c] if source.shape[0] == 1 else source[..., c]
            out[t, :, c] = ndimage.map_coordinates(plane, coordinates, order=1, mode="nearest")
    return out


def _grid_sample(values: np.ndarray, flat_kji: np.ndarray) -> np.ndarray:
    """:func:`_sample_frames` with torch: values (T or 1, K, J, I, C), points (T, P, 3) -> (T, P, C) float64."""
    from scanai.nn.backend import functional, torch

    count, grid = flat_kji.shape[0], values.shape[1:4]
    two_d = grid[0] == 1
    kept = (2, 1) if two_d else (2, 1, 0)  # grid_sample wants (x, y[, z]) = (i, j[, k])
    normalised = np.stack([2.0 * flat_kji[..., axis] / (grid[axis] - 1) - 1.0 if grid[axis] > 1
                           else np.zeros(flat_kji.shape[:2]) for axis in kept], axis=-1)
    source = torch.from_numpy(np.ascontiguousarray(np.moveaxis(values, -1, 1)))  # (T, C, K, J, I)
    if two_d:
        source = source[:, :, 0]
    source = source.expand(count, *source.shape[1:])
    where = torch.from_numpy(normalised).reshape(count, *([1] * (len(kept) - 1)), -1, len(kept))
    sampled = functional.grid_sample(source, where, mode="bilinear", padding_mode="border", align_corners=True)
    return sampled.reshape(count, values.shape[-1], -1).permute(0, 2, 1).numpy()


def _sample(values: np.ndarray, points_kji: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``values`` (K, J, I, C) at continuous indices ``points_kji`` (..., 3) -> (..., C).

    Points outside the grid take the nearest edge value; with K == 1 the k coordinate is ignored (in-plane
    bilinear interpolation). One frame, with scipy (exact at the grid points, as the composition needs).
    """
    points = np.asarray(points_kji, dtype=np.float64)
    flat = points.reshape(1, -1, 3)
    return _map_coordinates(np.asarray(values, dtype=np.float64)[None], flat)[0].reshape(*points.shape[:-1], -1)


# ------------------------------------------------------------------------------------------- conversions


def to_voxel_displacement(displacement_mm: np.ndarray, geometry: Geometry) -> np.ndarray:
    """RAS displacement (..., 3) in mm -> continuous voxel displacement (..., 3) in array-axis order (k, j, i).

    ``(i, j, k) = inv(D diag(spacing)) d`` with D the direction matrix, then reversed to (k, j, i).
    """
    vectors = np.asarray(displacement_mm, dtype=np.float64)
    if vectors.shape[-1:] != (3,):
        raise InputError(f"Displacements must be (..., 3) RAS vectors in mm, got shape {vectors.shape}.")
    return (vectors @ _voxel_matrix(geometry).T)[..., ::-1].copy()


def to_mm_displacement(displacement_voxels: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Voxel displacement (..., 3) in (k, j, i) order -> RAS displacement (..., 3) in mm (inverse of
    :func:`to_voxel_displacement`)."""
    vectors = np.asarray(displacement_voxels, dtype=np.float64)
    if vectors.shape[-1:] != (3,):
        raise InputError(f"Voxel displacements must be (..., 3) in (k, j, i) order, got shape {vectors.shape}.")
    return vectors[..., ::-1] @ geometry.ijk_to_ras()[:3, :3].T


def sample_field(displacement_mm: np.ndarray, points_voxels: np.ndarray) -> np.ndarray:
    """Linear interpolation of a field at continuous voxel positions.

    displacement_mm: (K, J, I, 3) RAS mm (any vector field on the grid).
    points_voxels:   (..., 3) continuous indices in (k, j, i) order.
    Returns (..., 3) RAS mm. Points outside the grid take the nearest edge value; on a 2-D grid (K == 1) the
    k coordinate is ignored (in-plane bilinear interpolation).
    """
    field = _checked_field(displacement_mm)
    points = np.asarray(points_voxels, dtype=np.float64)
    if points.shape[-1:] != (3,):
        raise InputError(f"Sample points must be (..., 3) voxel indices in (k, j, i) order, got {points.shape}.")
    return _sample(field, points)


# ----------------------------------------------------------------------------------- compose, accumulate


def _checked_mode(mode: str) -> str:
    if mode not in ("warp", "sum"):
        raise InputError(f"Unknown composition mode {mode!r}.",
                         "Use 'warp' (exact composition) or 'sum' (small-motion approximation).")
    return mode


def compose(first_mm: np.ndarray, second_mm: np.ndarray, geometry: Geometry,
            mode: ComposeMode = "warp") -> np.ndarray:
    """The field of "first, then second", (K, J, I, 3) RAS mm.

    first_mm:  u1 on grid A (K, J, I, 3): point x of A corresponds to x + u1(x) of B.
    second_mm: u2 on grid B (same grid geometry), B -> C.
    mode:      "warp": u(x) = u1(x) + u2(x + u1(x)), u2 linearly interpolated (exact for pull-back fields up
               to interpolation error); "sum": u1 + u2, the patent's literal small-motion approximation
               (¶0043), exact only for uniform translations.
    """
    first = _checked_field(first_mm, "first displacement field")
    second = _checked_field(second_mm, "second displacement field")
    if first.shape != second.shape:
        raise InputError(f"The two displacement fields have different shapes {first.shape} and {second.shape}.",
                         "Compose fields that lie on the same grid.")
    mode = _checked_mode(mode)
    if mode == "sum":
        return first + second
    matrix = _voxel_matrix(geometry)
    first_voxels = (first @ matrix.T)[..., ::-1]
    shifted = _sample(second, _index_grid(first.shape[:3]) + first_voxels)
    return first + shifted


def accumulate(steps_mm: np.ndarray, geometry: Geometry, mode: ComposeMode = "warp") -> np.ndarray:
    """Frame-to-frame fields -> Lagrangian fields.

    steps_mm: (S, K, J, I, 3) RAS mm; step s is d_{s -> s+1} on the frame-s grid.
    Returns (S + 1, K, J, I, 3): u_0 = 0 and u_t = compose(u_{t-1}, d_{t-1 -> t}) (see :func:`compose`).
    """
    steps = _checked_field(steps_mm, "sequence of frame-to-frame fields", ndim=5)
    mode = _checked_mode(mode)
    out = np.zeros((steps.shape[0] + 1, *steps.shape[1:]), dtype=np.float64)
    for t in range(1, out.shape[0]):
        out[t] = compose(out[t - 1], steps[t - 1], geometry, mode)
    return out


# ---------------------------------------------------------------------------------------------- inverse


def invert(displacement_mm: np.ndarray, geometry: Geometry, iterations: int = 50,
           tolerance_px: float = 1e-3) -> np.ndarray:
    """Inverse of a pull-back field by fixed-point iteration, (K, J, I, 3) RAS mm.

    Returns v with v(y) = -u(y + v(y)), so that x + u(x) = y  <=>  y + v(y) = x (v lives on the grid of the
    frame that u points into; all frames share one grid). Starts from v = -u and stops after ``iterations``
    or when the largest update is below ``tolerance_px`` voxels. Converges where |grad u| < 1 (no folding).
    One frame of :func:`invert_frames`.
    """
    return invert_frames(_checked_field(displacement_mm)[None], geometry, iterations, tolerance_px)[0]


def invert_frames(displacement_mm: np.ndarray, geometry: Geometry, iterations: int = 50,
                  tolerance_px: float = 1e-3) -> np.ndarray:
    """:func:`invert` of every frame at once: (T, K, J, I, 3) RAS mm -> (T, K, J, I, 3) RAS mm.

    All frames iterate together; a frame stops on its own once its largest update is below ``tolerance_px``
    voxels (so each frame's result is what :func:`invert` gives it alone). Zero fields stay zero. With PyTorch
    the iteration runs in float32 tensors with ``grid_sample``, all frames in one call (several times faster on a
    CPU than scipy frame by frame in float64; the two agree to about 1e-5 voxel, far below the 1e-3 voxel
    tolerance of the iteration).
    """
    from scanai.core.device import torch_available

    fields = _checked_field(displacement_mm, "sequence of displacement fields", ndim=5)
    if iterations < 1:
        raise InputError(f"The inversion needs at least one iteration, got {iterations}.")
    u_voxels = np.ascontiguousarray((fields @ _voxel_matrix(geometry).T)[..., ::-1])
    active = np.flatnonzero(fields.reshape(len(fields), -1).any(axis=1))
    if torch_available():
        v_voxels = _invert_voxels_torch(u_voxels, active, int(iterations), float(tolerance_px))
    else:
        grid = _index_grid(fields.shape[1:4])
        v_voxels = -u_voxels
        for _ in range(int(iterations)):
            if active.size == 0:
                break
            updated = -_sample_frames(u_voxels[active], grid + v_voxels[active])
            change = np.sqrt(((updated - v_voxels[active]) ** 2).sum(axis=-1)).reshape(active.size, -1).max(axis=1)
            v_voxels[active] = updated
            active = active[change >= tolerance_px]
    return to_mm_displacement(v_voxels, geometry) + 0.0  # + 0.0: no negative zeros


def _invert_voxels_torch(u_voxels: np.ndarray, active: np.ndarray, iterations: int, tolerance_px: float) -> np.ndarray:
    """The fixed-point iteration of :func:`invert_frames` in torch, float32: u (T, K, J, I, 3) voxels (k, j, i) -> v,
    same shape, float64; only the frames in ``active`` iterate (the others keep v = -u)."""
    from scanai.nn.backend import functional, torch

    shape = u_voxels.shape[1:4]
    two_d = shape[0] == 1
    u = torch.from_numpy(u_voxels.astype(np.float32)).movedim(-1, 1)  # (T, 3, K, J, I), channels (k, j, i)
    through = None
    if two_d:  # in-plane sampling ignores k, so the k channel iterates with nothing: sampled once at the end
        through, u = u[:, :1, 0].contiguous(), u[:, 1:, 0]
    u = u.contiguous()
    spatial = shape[1:] if two_d else shape
    coordinates = [1, 0] if two_d else [2, 1, 0]  # channels of u giving grid_sample's (x, y[, z]) = (i, j[, k])
    sizes = spatial  # (J, I) or (K, J, I): the axis of channel c of u has sizes[c] voxels
    scale = torch.tensor([2.0 / (sizes[c] - 1) if sizes[c] > 1 else 0.0 for c in coordinates], dtype=torch.float32)
    axes = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in spatial), indexing="ij")
    base = torch.stack([axes[c] for c in coordinates], dim=-1) * scale - (scale != 0).float()
    v = -u
    remaining = torch.from_numpy(active)
    with torch.no_grad():
        for _ in range(iterations):
            if remaining.numel() == 0:
                break
            every = remaining.numel() == len(v)  # views instead of copies while every frame still iterates
            current, field = (v, u) if every else (v[remaining], u[remaining])
            where = torch.addcmul(base, current[:, coordinates].movedim(1, -1), scale)
            updated = functional.grid_sample(field, where, mode="bilinear", padding_mode="border",
                                             align_corners=True).neg_()
            change = (updated - current).square_().sum(dim=1).flatten(1).amax(dim=1)
            if every:
                v = updated
            else:
                v[remaining] = updated
            remaining = remaining[change >= tolerance_px**2]
        if through is not None:
            where = torch.addcmul(base, v[:, coordinates].movedim(1, -1), scale)
            v = torch.cat([functional.grid_sample(through, where, mode="bilinear", padding_mode="border",
                                                  align_corners=True).neg_(), v], dim=1)
    out = v.movedim(1, -1).double()
    return (out[:, None] if two_d else out).numpy().copy()


def consecutive_from_lagrangian(lagrangian_mm: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Lagrangian fields u_{0->t} (T, K, J, I, 3) -> frame-to-frame fields d_{t-1->t} (T-1, K, J, I, 3), RAS mm.

    d_{t-1->t} = compose(invert(u_{t-1}), u_t): from a frame t-1 point back to the reference, then to frame t.
    Each d_{t-1->t} lies on the frame t-1 grid (the inverse of :func:`accumulate` up to interpolation error).
    """
    fields = _checked_field(lagrangian_mm, "sequence of Lagrangian fields", ndim=5)
    if fields.shape[0] < 2:
        raise InputError("Frame-to-frame fields need at least two Lagrangian fields.")
    out = np.empty((fields.shape[0] - 1, *fields.shape[1:]), dtype=np.float64)
    for t in range(1, fields.shape[0]):
        previous = fields[t - 1]
        back = np.zeros_like(previous) if not previous.any() else invert(previous, geometry)
        out[t - 1] = compose(back, fields[t], geometry, "warp")
    return out


# --------------------------------------------------------------------------------------------- Jacobian


def axis_frame_field(displacement_mm: np.ndarray, geometry: Geometry) -> np.ndarray:
    """RAS vectors (..., 3) -> the grid's axis frame (..., 3) in (i, j, k) order, still mm: ``inv(D) u``."""
    return np.asarray(displacement_mm, dtype=np.float64) @ np.linalg.inv(np.asarray(geometry.directions)).T


def deformation_gradient(displacement_mm: np.ndarray, geometry: Geometry) -> np.ndarray:
    """F = I + grad u in the grid's axis frame, (K, J, I, n, n) with n = 2 (K == 1, in-plane) or 3.

    F[..., a, b] = delta_ab + d u_a / d X_b, a, b over (i, j[, k]); central differences (np.gradient, one-sided
    at the border) with the voxel spacing, so gradients are dimensionless (mm per mm). One frame of
    :func:`deformation_gradients`.
    """
    return deformation_gradients(_checked_field(displacement_mm)[None], geometry)[0]


def deformation_gradients(displacement_mm: np.ndarray, geometry: Geometry) -> np.ndarray:
    """:func:`deformation_gradient` of every frame at once: (T, K, J, I, 3) RAS mm -> (T, K, J, I, n, n)."""
    field = _checked_field(displacement_mm, "sequence of displacement fields", ndim=5)
    two_d = field.shape[1] == 1
    if min(field.shape[2:4]) < 2 or (not two_d and field.shape[1] < 2):
        raise InputError(f"The grid {field.shape[1:4]} is too small for spatial derivatives (2 voxels per axis).")
    axes = axis_frame_field(field, geometry)
    si, sj, sk = geometry.spacing_mm
    n = 2 if two_d else 3
    out = np.empty((*field.shape[:4], n, n), dtype=np.float64)
    for a in range(n):
        if two_d:
            d_dj, d_di = np.gradient(axes[..., a], sj, si, axis=(2, 3))
            derivatives = [d_di, d_dj]
        else:
            d_dk, d_dj, d_di = np.gradient(axes[..., a], sk, sj, si, axis=(1, 2, 3))
            derivatives = [d_di, d_dj, d_dk]
        for b in range(n):
            out[..., a, b] = derivatives[b] + (1.0 if a == b else 0.0)
    return out


def jacobian_determinant(displacement_mm: np.ndarray, geometry: Geometry) -> np.ndarray:
    """det(I + grad u), (K, J, I) float32: local area (K == 1, in-plane 2x2) or volume ratio; <= 0 is folding.

    Gradients in mm by central differences in the grid's axis frame (RAS vectors rotated with the direction
    matrix first), so the result does not depend on the grid's orientation.
    """
    return jacobian_determinants(_checked_field(displacement_mm)[None], geometry)[0]


def jacobian_determinants(displacement_mm: np.ndarray, geometry: Geometry) -> np.ndarray:
    """:func:`jacobian_determinant` of every frame at once: (T, K, J, I, 3) RAS mm -> (T, K, J, I) float32."""
    gradient = deformation_gradients(displacement_mm, geometry)
    if gradient.shape[-1] == 2:  # closed form: no LU factorisation per voxel
        determinant = gradient[..., 0, 0] * gradient[..., 1, 1] - gradient[..., 0, 1] * gradient[..., 1, 0]
    else:
        determinant = np.linalg.det(gradient)
    return determinant.astype(np.float32)


def folding_fraction(displacement_mm: np.ndarray, geometry: Geometry, mask: np.ndarray | None = None) -> float:
    """Fraction (0 to 1) of the voxels in ``mask`` (K, J, I) bool (None = all) where det(I + grad u) <= 0."""
    determinant = jacobian_determinant(displacement_mm, geometry)
    if mask is None:
        inside = np.ones(determinant.shape, dtype=bool)
    else:
        inside = np.asarray(mask)
        if inside.shape != determinant.shape:
            raise InputError(f"The mask has shape {inside.shape} but the field's grid is {determinant.shape}.",
                             "Use a mask drawn on the same grid as the motion field.")
        inside = np.nan_to_num(inside.astype(np.float64)) != 0
        if not inside.any():
            raise InputError("The mask for the folding fraction is empty.", "Choose a mask that covers the region.")
    return float(np.count_nonzero(determinant[inside] <= 0.0) / np.count_nonzero(inside))
