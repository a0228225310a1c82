"""3-D+t motion: the beating-ventricle phantom's exact truth, the 3-D SVF estimator, 3-D strain, 2-D or 3-D."""

from __future__ import annotations

import numpy as np
import pytest

from scanai.core.errors import InputError
from scanai.core.image import VolumeSequence
from scanai.motion.phantom3d import beating_ventricle_phantom, to_frame, to_material
from scanai.motion.pipeline import analyse_cine, checked_dims, estimate_motion
from scanai.motion.strain import myocardial_strain

SMALL = {"shape": (32, 40, 40), "endo_radius_px": 6.0, "wall_px": 3.0, "amplitude_px": 2.0, "twist_deg": 10.0,
         "shortening": 0.12}
TINY = {"shape": (20, 24, 24), "endo_radius_px": 4.0, "wall_px": 2.5, "amplitude_px": 1.5, "twist_deg": 10.0,
        "shortening": 0.12}
QUICK = {"shrink_factors": (2, 1), "iterations": (25, 10)}


@pytest.fixture(scope="module")
def small():
    return beating_ventricle_phantom(n_frames=5, noise=0.0, **SMALL)


@pytest.fixture(scope="module")
def tiny():
    return beating_ventricle_phantom(n_frames=3, noise=0.0, **TINY)


def test_maps_invert_exactly(small):
    points = np.random.default_rng(3).uniform(0.0, 80.0, (500, 3))
    for s in (0.4, 1.0):
        assert np.abs(to_frame(to_material(points, small.heart, s), small.heart, s) - points).max() < 1e-9
        assert np.abs(to_material(to_frame(points, small.heart, s), small.heart, s) - points).max() < 1e-9


def test_truth_maps_every_frame_onto_the_reference(small):
    from scipy import ndimage

    frames, es = small.sequence.frames, small.end_systole
    assert es == 2 and not small.displacement_mm[0].any()
    shift = small.displacement_mm[es] / small.sequence.geometry.spacing_mm[0]  # (i, j, k) voxels, axis-aligned
    grid = np.indices(frames.shape[1:], dtype=float)
    pulled = ndimage.map_coordinates(frames[es].astype(float), grid + np.moveaxis(shift[..., ::-1], -1, 0), order=3,
                                     mode="nearest")
    wall = small.myocardium
    before = np.abs(frames[es] - frames[0])[wall].mean()
    after = np.abs(pulled - frames[0])[wall].mean()
    assert before > 0.05 and after < 0.02 * before  # frame_t(x + u_t(x)) = frame_0(x) up to interpolation
    # contraction, twist and longitudinal shortening are all present: through-plane motion of the wall
    assert np.abs(small.displacement_mm[es][wall][:, 2]).max() > 2.0 * small.sequence.geometry.spacing_mm[2]


@pytest.mark.filterwarnings("ignore:Eroding the myocardium mask")
def test_three_d_strain_of_the_exact_field_matches_the_analytic_truth(small):
    geometry = small.sequence.geometry
    result = myocardial_strain(small.displacement_mm, geometry, small.myocardium, blood_pool=small.blood_pool)
    circumferential, radial = small.true_strain(result.mask)
    es = small.end_systole
    assert circumferential[0] == pytest.approx(0.0, abs=1e-6) and radial[0] == pytest.approx(0.0, abs=1e-6)
    assert circumferential[es] < -8.0 and radial[es] > 10.0
    assert abs(result.global_circumferential_pct[es] - circumferential[es]) < 0.5
    assert abs(result.global_radial_pct[es] - radial[es]) < 1.5
    # the through-plane gradient matters: the in-plane (2-D) stretch alone misses it
    in_plane = small.displacement_mm.copy()
    in_plane[..., 2] = 0.0
    flat = myocardial_strain(in_plane, geometry, small.myocardium, blood_pool=small.blood_pool)
    assert abs(flat.global_radial_pct[es] - radial[es]) > abs(result.global_radial_pct[es] - radial[es]) + 0.5


def test_svf3d_recovers_the_motion(tiny):
    fields = estimate_motion(tiny.sequence, 0, "svf3d", dims="3d", **QUICK)
    assert fields.method == "svf3d" and not fields.displacement_mm[0].any()
    spacing = tiny.sequence.geometry.spacing_mm[0]
    es, wall = tiny.end_systole, tiny.myocardium
    error = np.linalg.norm(fields.displacement_mm[es] - tiny.displacement_mm[es], axis=-1)[wall] / spacing
    still = np.linalg.norm(tiny.displacement_mm[es], axis=-1)[wall] / spacing
    assert error.mean() < 0.35 * still.mean()


def test_dims_choice_is_checked(tiny):
    cine = tiny.sequence
    single = VolumeSequence(cine.frames[:, :1], cine.geometry, cine.index_values)
    assert checked_dims(cine, "network", None) == "2d" and checked_dims(cine, "svf3d", None) == "3d"
    assert checked_dims(cine, "demons", None) == "3d" and checked_dims(single, "demons", None) == "2d"
    for dims in ("3d", None):
        with pytest.raises(InputError, match="3-D motion needs one volume per frame"):
            checked_dims(single, "svf3d", dims)
    assert checked_dims(cine, "network-3d", None) == "3d"
    with pytest.raises(InputError, match="does not run in 3D") as error:
        analyse_cine(cine, 0, "network", dims="3d")
    assert "svf3d, network-3d" in error.value.action
    with pytest.raises(InputError, match="does not run in 2D"):
        checked_dims(cine, "network-3d", "2d")
    with pytest.raises(InputError, match="pairs every frame with the reference"):
        estimate_motion(cine, 0, "network-3d", scheme="consecutive")
    with pytest.raises(InputError, match="does not run in 2D"):
        checked_dims(cine, "svf3d", "2d")
    with pytest.raises(InputError, match="dimensionality"):
        checked_dims(cine, "demons", "4d")


def test_demons_slice_by_slice_stays_in_plane(tiny):
    cine = tiny.sequence
    fields = estimate_motion(cine, 0, "demons", dims="2d", iterations=5, shrink_factors=(1,))
    assert fields.displacement_mm.shape == (*cine.frames.shape, 3)
    assert np.abs(fields.displacement_mm[..., 2]).max() < 1e-9 and np.abs(fields.displacement_mm[1]).max() > 0.01


def test_analyse_cine_in_three_d_gives_strain(tiny):
    result = analyse_cine(tiny.sequence, 0, "svf3d", labels=tiny.labels(), myocardium_label=2, blood_pool_label=1,
                          dims="3d", propagate=False, **QUICK)
    es = tiny.end_systole
    assert result.fields.method == "svf3d" and result.fold_fraction.max() <= 0.001
    circumferential, radial = tiny.true_strain(result.strain.mask)  # 13.7 % shortening, 16.8 % thickening
    assert abs(result.strain.global_circumferential_pct[es] - circumferential[es]) < 3.5  # a few quick steps only
    assert 0.4 * radial[es] < result.strain.global_radial_pct[es] < 1.1 * radial[es]
    assert result.cavity_size[es] < 0.6 * result.cavity_size[0]


def test_cli_dims(tiny, tmp_path, capsys, monkeypatch):
    from scanai import cli as main_cli
    from scanai.io.sequence_file import write_sequence_nrrd
    from scanai.motion import svf3d

    monkeypatch.setitem(svf3d.SVF_DEFAULTS, "iterations", (10, 5))  # the command's path, not its accuracy

    path = write_sequence_nrrd(tiny.sequence, tmp_path / "heart.seq.nrrd")
    assert main_cli.main(["motion", str(path), "--dims", "3d", "--slice", "3", "--out", str(tmp_path / "a")]) == 2
    assert "--slice picks one" in capsys.readouterr().err
    assert main_cli.main(["motion", str(path), "--dims", "3d", "--method", "network", "--out",
                          str(tmp_path / "b")]) == 2
    assert "does not run in 3D" in capsys.readouterr().err
    assert main_cli.main(["motion", str(path), "--dims", "3d", "--reference", "1", "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "Multi-pair SVF optimisation, 3-D (classical), 3-D volumes" in out
    assert (tmp_path / "c" / "displacement.seq.nrrd").is_file() and not (tmp_path / "a").exists()


def test_temporal_term_joins_neighbours_on_each_side_of_the_reference():
    import torch

    from scanai.motion.svf3d import _temporal

    values = torch.tensor([0.0, 1.0, 5.0, 6.0])  # frames 0, 1, 3, 4 around reference 2
    velocity = values.view(4, 1, 1, 1, 1).expand(4, 3, 2, 2, 2)
    assert float(_temporal(velocity, 2)) == pytest.approx(1.0)  # 0->1 and 3->4 only, not 1->3 across the reference
    assert float(_temporal(velocity, 0)) == pytest.approx((1 + 16 + 1) / 3)
    assert float(_temporal(velocity[:1], 0)) == 0.0


def test_a_cine_too_large_for_the_memory_is_refused_before_any_work(tiny, monkeypatch):
    """3-D motion takes about 300 bytes per voxel and frame on the CPU (a 20-frame 512 x 512 x 200 CT cine: about
    290 GB): beyond 70 % of the computer's memory it is refused at once, with what to do, instead of swapping."""
    from scanai.core import memory
    from scanai.motion import svf3d

    svf3d.check_memory((20, 48, 64, 64), 16 * 2**30)  # a cropped cine on a 16 GB computer: fine
    svf3d.check_memory((20, 200, 512, 512), None)  # memory unknown: not checked
    with pytest.raises(InputError, match="needs about 293 GB of memory; this computer has 16 GB") as error:
        svf3d.check_memory((20, 200, 512, 512), 16 * 2**30)
    assert "Crop the volumes around the heart" in error.value.action
    monkeypatch.setattr(memory, "physical_memory_bytes", lambda: 1024)
    for method in ("svf3d", "network-3d"):  # the 3-D network's refinement is svf3d's optimisation
        with pytest.raises(InputError, match="needs about"):
            estimate_motion(tiny.sequence, 0, method, device="cpu")


def test_the_ncc_box_spans_about_the_same_millimetres_along_thick_slices():
    """On a short-axis stack (10 mm slices, 1.37 mm pixels) the 5-voxel box stays in its slice at full resolution
    and reaches one slice each side at 1/4 (5.5 mm pixels); isotropic voxels keep the cube; the separable box mean
    takes the (k, j, i) widths."""
    torch = pytest.importorskip("torch")
    from scanai.motion.network import box_mean
    from scanai.motion.svf3d import ncc_window

    assert ncc_window(5, (2.0, 2.0, 2.0)) == (5, 5, 5)
    assert ncc_window(5, (10.0, 1.37, 1.37)) == (1, 5, 5)
    assert ncc_window(5, (10.0, 5.47, 5.47)) == (3, 5, 5)
    volume = torch.zeros(1, 1, 5, 9, 9)
    volume[0, 0, 2, 4, 4] = 1.0
    flat = box_mean(volume, (1, 3, 3))[0, 0]
    assert flat[1].abs().max() == 0 and flat[3].abs().max() == 0  # nothing leaks into the next slices
    assert torch.isclose(flat[2, 3:6, 3:6], torch.tensor(1 / 9)).all()
    assert torch.equal(box_mean(volume, 3), box_mean(volume, (3, 3, 3)))
