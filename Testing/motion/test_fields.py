"""Motion-field utilities: voxel/mm conversion, sampling, composition, inversion, Jacobian determinant."""

from __future__ import annotations

import numpy as np
import pytest

from scanai.core.errors import InputError
from scanai.core.image import Geometry
from scanai.motion.fields import (
    accumulate,
    compose,
    consecutive_from_lagrangian,
    folding_fraction,
    invert,
    jacobian_determinant,
    sample_field,
    to_mm_displacement,
    to_voxel_displacement,
)
from scanai.motion.phantom import contraction_profile, myocardium_mask, smooth_motion_phantom

# Oblique grid (30 degrees about an arbitrary axis) with anisotropic voxels: any axis-order or direction mix-up
# shows up as a wrong field.
_ANGLE = np.deg2rad(30.0)
_AXIS = np.array([1.0, 2.0, 2.0]) / 3.0
_K = np.array([[0, -_AXIS[2], _AXIS[1]], [_AXIS[2], 0, -_AXIS[0]], [-_AXIS[1], _AXIS[0], 0]])
OBLIQUE = np.eye(3) + np.sin(_ANGLE) * _K + (1 - np.cos(_ANGLE)) * _K @ _K
SPACING = (1.3, 1.3, 6.0)
N_FRAMES = 10
ES = int(np.argmax(contraction_profile(N_FRAMES)))
PHANTOM = {"n_frames": N_FRAMES, "shape": (1, 96, 96), "spacing_mm": SPACING, "amplitude_px": 6.0,
           "twist_deg": 8.0, "noise": 0.0, "origin_mm": (-40.0, 25.0, 110.0),
           "directions": tuple(map(tuple, OBLIQUE))}


def _geometry() -> Geometry:
    return Geometry(SPACING, (-40.0, 25.0, 110.0), tuple(map(tuple, OBLIQUE)))


def _ras_grid(shape: tuple[int, int, int], geometry: Geometry) -> np.ndarray:
    """RAS position (K, J, I, 3) of every voxel centre."""
    kk, jj, ii = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return geometry.ras_of_ijk(np.stack([ii, jj, kk], axis=-1))


def _px(vectors_mm: np.ndarray) -> np.ndarray:
    """Length of RAS vectors in in-plane pixels."""
    return np.linalg.norm(vectors_mm, axis=-1) / SPACING[0]


@pytest.fixture(scope="module")
def phantom():
    """(geometry, Lagrangian truth (T, 1, 96, 96, 3), ED myocardium mask, ES myocardium mask, GT steps)."""
    sequence, truth = smooth_motion_phantom(**PHANTOM)
    mask_ed = myocardium_mask(sequence, 0, amplitude_px=6.0, twist_deg=8.0)
    mask_es = myocardium_mask(sequence, ES, amplitude_px=6.0, twist_deg=8.0)
    # truth relative to reference t - 1, evaluated at frame t, is the exact frame-to-frame field d_{t-1 -> t}
    steps = np.stack([smooth_motion_phantom(**PHANTOM, reference_index=t - 1)[1][t] for t in range(1, ES + 1)])
    return sequence.geometry, truth, mask_ed, mask_es, steps


# ------------------------------------------------------------------------------------------- conversions


def test_voxel_conversion_matches_the_geometry_and_round_trips():
    geometry = _geometry()
    rng = np.random.default_rng(1)
    start, displacement = rng.normal(size=(20, 3)) * 30, rng.normal(size=(20, 3)) * 4
    voxels = to_voxel_displacement(displacement, geometry)
    expected_ijk = geometry.ijk_of_ras(start + displacement) - geometry.ijk_of_ras(start)
    assert np.allclose(voxels, expected_ijk[:, ::-1], atol=1e-10)  # (k, j, i) order
    assert np.allclose(to_mm_displacement(voxels, geometry), displacement, atol=1e-10)
    # a move along the grid's j axis by 2 rows is (0, 2, 0) in (k, j, i)
    along_j = 2.0 * SPACING[1] * OBLIQUE[:, 1]
    assert np.allclose(to_voxel_displacement(along_j, geometry), [0.0, 2.0, 0.0], atol=1e-12)
    with pytest.raises(InputError):
        to_voxel_displacement(np.zeros((4, 2)), geometry)


def test_sample_field_is_linear_clamps_at_the_edge_and_stays_in_plane_for_2d():
    rng = np.random.default_rng(2)
    slope = rng.normal(size=(3, 3))
    grid = np.stack(np.meshgrid(np.arange(3.0), np.arange(12.0), np.arange(15.0), indexing="ij"), axis=-1)
    field = grid @ slope.T  # linear in the (k, j, i) index: interpolation is exact
    points = rng.uniform([0, 0, 0], [2, 11, 14], size=(50, 3))
    assert np.allclose(sample_field(field, points), points @ slope.T, atol=1e-10)
    outside = sample_field(field, np.array([[1.0, -5.0, 20.0]]))
    assert np.allclose(outside, field[1, 0, 14], atol=1e-12)  # nearest edge value
    flat = field[:1]  # 2-D grid: the k coordinate is ignored
    in_plane = points.copy()
    in_plane[:, 0] = 0.0
    off_plane = points.copy()
    off_plane[:, 0] = 0.7
    assert np.allclose(sample_field(flat, off_plane), sample_field(flat, in_plane), atol=1e-12)
    assert np.allclose(sample_field(flat, in_plane), in_plane @ slope.T, atol=1e-10)


# --------------------------------------------------------------------------------------------- compose


def test_composing_ground_truth_steps_reproduces_the_lagrangian_field(phantom):
    geometry, truth, mask_ed, _, steps = phantom
    warped = accumulate(steps, geometry, "warp")
    summed = accumulate(steps, geometry, "sum")
    assert warped.shape == (ES + 1, *truth.shape[1:]) and np.abs(warped[0]).max() == 0.0
    epe_warp = _px(warped[ES] - truth[ES])[mask_ed].mean()
    epe_sum = _px(summed[ES] - truth[ES])[mask_ed].mean()
    motion = _px(truth[ES])[mask_ed].mean()
    print(f"compose ES EPE: warp {epe_warp:.4f} px, sum {epe_sum:.4f} px, mean |u| {motion:.2f} px")
    assert motion > 4.0
    assert epe_warp < 0.05
    assert epe_sum > 0.2 and epe_sum > 10 * epe_warp
    # every intermediate frame too
    for t in range(1, ES + 1):
        assert _px(warped[t] - truth[t])[mask_ed].mean() < 0.05


def test_composing_with_zero_is_the_identity_and_sum_is_exact_for_translations(phantom):
    geometry, truth, *_ = phantom
    field = truth[ES]
    zero = np.zeros_like(field)
    assert np.array_equal(compose(field, zero, geometry), field)
    assert np.allclose(compose(zero, field, geometry), field, atol=1e-12)
    shift = np.broadcast_to(OBLIQUE @ np.array([1.7, -2.2, 0.0]), field.shape)
    assert np.allclose(compose(shift, shift, geometry, "warp"), compose(shift, shift, geometry, "sum"), atol=1e-12)
    with pytest.raises(InputError):
        compose(field, field, geometry, mode="plus")
    with pytest.raises(InputError):
        compose(field, field[:, :50], geometry)


# ---------------------------------------------------------------------------------------------- invert


def test_inverse_round_trip_in_the_myocardium(phantom):
    geometry, truth, mask_ed, *_ = phantom
    field = truth[ES]
    inverse = invert(field, geometry)
    grid = np.stack(np.meshgrid(*(np.arange(n, dtype=float) for n in field.shape[:3]), indexing="ij"), axis=-1)
    residual = _px(field + sample_field(inverse, grid + to_voxel_displacement(field, geometry)))[mask_ed]
    print(f"inverse round trip: mean {residual.mean():.4f} px, 95th percentile {np.percentile(residual, 95):.4f}")
    assert residual.mean() < 0.05
    assert np.percentile(residual, 95) < 0.1
    assert _px(invert(inverse, geometry) - field)[mask_ed].mean() < 0.05
    assert np.array_equal(invert(np.zeros_like(field), geometry), np.zeros_like(field))


def test_inverse_matches_the_analytic_inverse_from_a_reference_swap(phantom):
    geometry, truth, _, mask_es, _ = phantom
    # with the reference at ES, the truth of frame 0 maps ES points to ED points: the Eulerian inverse of u_ES
    analytic = smooth_motion_phantom(**PHANTOM, reference_index=ES)[1][0]
    error = _px(invert(truth[ES], geometry) - analytic)[mask_es]
    print(f"inverse vs analytic: mean {error.mean():.4f} px")
    assert error.mean() < 0.05
    assert _px(analytic)[mask_es].mean() > 4.0  # not trivially small


def test_consecutive_fields_from_lagrangian_fields(phantom):
    geometry, truth, mask_ed, _, steps = phantom
    consecutive = consecutive_from_lagrangian(truth[: ES + 1], geometry)
    assert consecutive.shape == steps.shape
    assert np.array_equal(consecutive[0], truth[1])  # from the reference frame the step is u_1 itself
    for t in range(ES):
        assert _px(consecutive[t] - steps[t])[mask_ed].mean() < 0.05
    with pytest.raises(InputError):
        consecutive_from_lagrangian(truth[:1], geometry)


# -------------------------------------------------------------------------------------------- Jacobian


def _rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = np.deg2rad(degrees)
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


@pytest.mark.parametrize("scale", [0.8, 1.15])
def test_jacobian_of_uniform_scaling(scale):
    geometry = _geometry()
    for shape, power in (((1, 20, 24), 2), ((6, 14, 12), 3)):
        ras = _ras_grid(shape, geometry)
        centre = ras[shape[0] // 2, 5, 7]
        determinant = jacobian_determinant((scale - 1.0) * (ras - centre), geometry)
        assert determinant.shape == shape and determinant.dtype == np.float32
        assert np.allclose(determinant, scale**power, atol=1e-5)


def test_jacobian_of_rigid_motion_is_one_and_of_a_fold_is_negative():
    geometry = _geometry()
    ras = _ras_grid((6, 14, 12), geometry)
    centre = ras[3, 7, 6]
    rotation = _rotation([0.3, -1.0, 0.5], 25.0)
    rigid = (ras - centre) @ (rotation - np.eye(3)).T + np.array([3.0, -1.0, 2.0])
    assert np.allclose(jacobian_determinant(rigid, geometry), 1.0, atol=1e-5)
    assert folding_fraction(rigid, geometry) == 0.0
    # in-plane rotation of a 2-D slice (about the slice normal)
    ras2 = _ras_grid((1, 20, 24), geometry)
    spin = _rotation(OBLIQUE[:, 2], 40.0)
    assert np.allclose(jacobian_determinant((ras2 - ras2[0, 10, 12]) @ (spin - np.eye(3)).T, geometry), 1.0,
                       atol=1e-5)
    # a Gaussian push along the grid's i axis, steep enough to fold on one side of its centre
    offset = ras2 - ras2[0, 10, 12]
    bump = 12.0 * np.exp(-(offset**2).sum(axis=-1) / (2 * 3.0**2))
    folded = bump[..., None] * OBLIQUE[:, 0]
    determinant = jacobian_determinant(folded, geometry)
    assert determinant.min() < 0
    fraction = folding_fraction(folded, geometry)
    assert 0.0 < fraction < 0.2
    away = np.zeros((1, 20, 24), dtype=bool)
    away[0, :3, :3] = True
    assert folding_fraction(folded, geometry, away) == 0.0
    assert folding_fraction(0.2 * folded, geometry) == 0.0
    with pytest.raises(InputError):
        folding_fraction(folded, geometry, np.zeros((1, 20, 24), dtype=bool))
    with pytest.raises(InputError):
        folding_fraction(folded, geometry, away[:, :10])


def test_jacobian_of_the_area_preserving_phantom_is_one_in_the_myocardium(phantom):
    from scipy import ndimage

    geometry, truth, mask_ed, *_ = phantom
    inner = ndimage.binary_erosion(mask_ed[0])[None]  # central differences must not straddle the endocardium
    determinant = jacobian_determinant(truth[ES], geometry)
    print(f"phantom det J in the eroded myocardium: {determinant[inner].min():.4f} .. {determinant[inner].max():.4f}")
    assert np.abs(determinant[inner] - 1.0).max() < 0.02
    # the blood pool contracts: area ratio (r_endo_ES / R_endo)^2 < 1
    centre_value = determinant[0, 48, 48]
    assert centre_value < 0.7
    assert folding_fraction(truth[ES], geometry, mask_ed) == 0.0


def test_field_checks():
    geometry = _geometry()
    with pytest.raises(InputError):
        jacobian_determinant(np.zeros((1, 8, 8, 2)), geometry)
    bad = np.zeros((1, 8, 8, 3))
    bad[0, 2, 2, 0] = np.nan
    with pytest.raises(InputError):
        invert(bad, geometry)
    with pytest.raises(InputError):
        accumulate(np.zeros((1, 8, 8, 3)), geometry)


# ------------------------------------------------------------------- every frame at once = frame by frame


def _sequence_fields() -> tuple[np.ndarray, Geometry]:
    """Smooth fields of 5 frames (one zero) on an oblique 2-D grid, and the grid."""
    from scipy import ndimage

    rng = np.random.default_rng(4)
    fields = ndimage.gaussian_filter(rng.normal(size=(5, 1, 40, 48, 3)), (0, 0, 4, 4, 0)) * 15.0
    fields[..., 2] *= 0.2  # a little through-plane motion, as an oblique 2-D grid gives
    fields[2] = 0.0
    return fields, _geometry()


def test_batched_inversion_jacobian_and_strain_equal_frame_by_frame(monkeypatch):
    from scanai.core import device
    from scanai.motion.fields import invert_frames, jacobian_determinants
    from scanai.motion.strain import myocardial_strain

    fields, geometry = _sequence_fields()
    assert np.abs(fields).max() > 1.0
    frame_by_frame = np.stack([invert(u, geometry) for u in fields])
    batched = invert_frames(fields, geometry)  # with torch (grid_sample, float32) where installed
    np.testing.assert_allclose(batched, frame_by_frame, atol=1e-9)
    assert np.array_equal(batched[2], np.zeros_like(batched[2]))
    monkeypatch.setattr(device, "torch_available", lambda: False)  # the scipy path (float64): the same to 1e-5 px
    np.testing.assert_allclose(invert_frames(fields, geometry), batched, atol=1e-4)
    monkeypatch.undo()
    np.testing.assert_array_equal(jacobian_determinants(fields, geometry),
                                  np.stack([jacobian_determinant(u, geometry) for u in fields]))
    myocardium = np.zeros((1, 40, 48), bool)
    _k, j, i = np.indices(myocardium.shape)
    myocardium[(np.hypot(j - 20, i - 24) > 8) & (np.hypot(j - 20, i - 24) < 14)] = True
    whole = myocardial_strain(fields, geometry, myocardium)
    for t in range(len(fields)):
        alone = myocardial_strain(fields[t:t + 1], geometry, myocardium)
        np.testing.assert_array_equal(whole.radial_pct[t], alone.radial_pct[0])
        np.testing.assert_array_equal(whole.circumferential_pct[t], alone.circumferential_pct[0])


def test_labels_carried_at_the_label_tolerance_equal_the_tight_inversion():
    """propagate_labels inverts to LABEL_TOLERANCE_PX (0.01 voxel) and only about the labels, for speed: not one
    label differs from carrying them through the default 1e-3 voxel inversion of the whole grid."""
    from scanai.motion.fields import invert_frames
    from scanai.motion.propagate import propagate_labels, pull_labels

    fields, geometry = _sequence_fields()
    labels = np.zeros((1, 40, 48), np.uint8)
    labels[0, 10:30, 12:36] = 1
    labels[0, 16:24, 20:28] = 2
    moving = np.flatnonzero(fields.reshape(len(fields), -1).any(axis=1))
    tight = pull_labels(labels, invert_frames(fields[moving], geometry, tolerance_px=1e-3), geometry)
    np.testing.assert_array_equal(propagate_labels(labels, fields, geometry)[moving], tight)
    # on a larger grid the labels are carried within a box about them (the inverse on a box around that): the same
    wide = np.pad(fields, ((0, 0), (0, 0), (30, 30), (40, 40), (0, 0)))
    wide_labels = np.pad(labels, ((0, 0), (30, 30), (40, 40)))
    tight = pull_labels(wide_labels, invert_frames(wide[moving], geometry, tolerance_px=1e-3), geometry)
    np.testing.assert_array_equal(propagate_labels(wide_labels, wide, geometry)[moving], tight)


def test_batched_propagation_equals_the_scipy_path(monkeypatch):
    from scanai.core import device
    from scanai.motion.propagate import propagate_labels, propagate_points

    fields, geometry = _sequence_fields()
    labels = np.zeros((1, 40, 48), np.uint8)
    labels[0, 10:30, 12:36] = 1
    labels[0, 16:24, 20:28] = 2
    batched = propagate_labels(labels, fields, geometry)
    points = geometry.ras_of_ijk(np.array([[5.5, 7.25, 0.0], [30.0, 20.0, 0.0]]))
    tracked = propagate_points(points, fields, geometry)
    monkeypatch.setattr(device, "torch_available", lambda: False)
    scipy_labels = propagate_labels(labels, fields, geometry)
    assert np.count_nonzero(batched != scipy_labels) <= 2  # ties of equal weights may fall either way
    np.testing.assert_allclose(propagate_points(points, fields, geometry), tracked, atol=1e-9)
    np.testing.assert_array_equal(batched[2], labels)
    assert np.count_nonzero(batched[0] != labels) > 50  # the fields do move the labels
