"""Motion estimation foundation: phantom truth, registration to a reference, warping, cine I/O, CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from scanai.core.errors import Cancelled, FileFormatError, InputError
from scanai.core.image import Geometry, Volume, VolumeSequence
from scanai.core.progress import CancelToken, Progress
from scanai.io.cine import list_cine_slices, read_dicom_series, read_sunnybrook_cine
from scanai.io.sequence_file import read_sequence, write_sequence_nrrd
from scanai.motion import cli as motion_cli
from scanai.motion.export import read_displacement_field, write_displacement_field
from scanai.motion.phantom import (
    contraction_profile,
    heart_motion_on_image,
    myocardium_mask,
    smooth_motion_phantom,
)
from scanai.motion.registration import register_to_reference, warp

# An oblique grid (rotation about an arbitrary axis) with anisotropic voxels, so that any LPS/RAS or
# axis-order mix-up shows up as a wrong field.
_ANGLE = np.deg2rad(30.0)
_AXIS = np.array([1.0, 2.0, 2.0]) / 3.0
_K = np.array([[0, -_AXIS[2], _AXIS[1]], [_AXIS[2], 0, -_AXIS[0]], [-_AXIS[1], _AXIS[0], 0]])
OBLIQUE = np.eye(3) + np.sin(_ANGLE) * _K + (1 - np.cos(_ANGLE)) * _K @ _K
SPACING = (1.3, 1.3, 6.0)
PHANTOM = {"n_frames": 6, "shape": (1, 64, 64), "spacing_mm": SPACING, "amplitude_px": 3.0, "twist_deg": 5.0,
           "noise": 0.01, "seed": 3, "origin_mm": (-40.0, 25.0, 110.0), "directions": tuple(map(tuple, OBLIQUE))}
SUNNYBROOK = Path("cardiac") / "sunnybrook" / "dicoms" / "SCD0000101"


@pytest.fixture(scope="module")
def phantom() -> tuple[VolumeSequence, np.ndarray]:
    return smooth_motion_phantom(**PHANTOM)


@pytest.fixture(scope="module")
def demons_result(phantom):
    sequence, _ = phantom
    return register_to_reference(sequence, 0, "demons")


def _epe_px(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.linalg.norm(estimate - truth, axis=-1) / SPACING[0]


# ------------------------------------------------------------------------------------------------ phantom


def test_phantom_truth_warps_frames_onto_the_reference():
    sequence, truth = smooth_motion_phantom(**{**PHANTOM, "noise": 0.0})
    reference = sequence.frames[0]
    peak = int(np.argmax(contraction_profile(len(sequence))))
    assert np.abs(truth[0]).max() == 0.0
    assert np.linalg.norm(truth[peak], axis=-1).max() / SPACING[0] > 2.5  # the motion is really there
    unwarped = np.abs(sequence.frames[peak] - reference).mean()
    warped = np.abs(warp(sequence.frame(peak), truth[peak], order=3).array - reference)[:, 4:-4, 4:-4].mean()
    assert unwarped > 0.02
    assert warped < 0.1 * unwarped  # interpolation error only: the truth matches the pull-back convention


def test_heart_motion_on_a_real_image_has_exact_truth():
    from scipy import ndimage

    image = ndimage.gaussian_filter(np.random.default_rng(4).random((80, 90)), 2.0)
    frames, truth, masks = heart_motion_on_image(image, 10, (38.0, 47.0), 14.0, 4.0, 8.0)
    assert frames.shape == (10, 80, 90) and truth.shape == (10, 80, 90, 2) and masks.shape == (10, 80, 90)
    np.testing.assert_allclose(frames[0], image, atol=1e-6)
    assert np.abs(truth[0]).max() < 1e-9
    peak = int(np.argmax(contraction_profile(10)))
    rows, columns = np.meshgrid(np.arange(80.0), np.arange(90.0), indexing="ij")
    pulled = ndimage.map_coordinates(frames[peak], [rows + truth[peak, ..., 0], columns + truth[peak, ..., 1]],
                                     order=3)
    moved = np.abs(frames[peak] - image)[8:-8, 8:-8].mean()
    assert moved > 0.005 and np.abs(pulled - image)[8:-8, 8:-8].mean() < 0.1 * moved
    assert abs(int(masks[peak].sum()) - int(masks[0].sum())) < 0.03 * masks[0].sum()  # the wall keeps its area


def test_phantom_timing_geometry_and_myocardium():
    sequence, truth = smooth_motion_phantom(**PHANTOM)
    assert sequence.index_name == "time" and sequence.index_unit == "s"
    assert np.allclose(np.diff(sequence.index_values), 1.0 / 6)
    assert truth.shape == (*sequence.frames.shape, 3)
    assert np.allclose(sequence.geometry.directions, OBLIQUE)
    # 2-D phantom: no through-plane motion (the k axis is the third column of the direction matrix)
    assert np.abs(truth @ OBLIQUE[:, 2]).max() < 1e-9
    mask = myocardium_mask(sequence, 0, amplitude_px=3.0, twist_deg=5.0)
    assert 200 < mask.sum() < 1000
    with pytest.raises(InputError):
        smooth_motion_phantom(shape=(1, 8, 8))


# ------------------------------------------------------------------------------------------- registration


def test_demons_recovers_the_phantom_motion(phantom, demons_result):
    sequence, truth = phantom
    error = _epe_px(demons_result.displacement_mm, truth)
    peak = int(np.argmax(contraction_profile(len(sequence))))
    mask = myocardium_mask(sequence, 0, amplitude_px=3.0, twist_deg=5.0)
    # everywhere (whole image, every moving frame) and in the myocardium at peak contraction
    assert error[1:].mean() < 0.5
    assert error[peak][mask].mean() < 0.5
    assert error[peak][mask].mean() < 0.3 * _epe_px(0 * truth[peak], truth[peak])[mask].mean()


def test_bspline_recovers_the_phantom_motion(phantom):
    sequence, truth = phantom
    result = register_to_reference(sequence, 0, "bspline")
    error = _epe_px(result.displacement_mm, truth)
    assert error[1:].mean() < 0.5
    assert np.abs(result.displacement_mm[0]).max() == 0.0
    assert result.method == "bspline"


def test_reference_field_is_zero_and_outputs_keep_the_input_grid(phantom, demons_result):
    sequence, _ = phantom
    assert demons_result.displacement_mm.shape == (*sequence.frames.shape, 3)
    assert np.abs(demons_result.displacement_mm[0]).max() == 0.0
    assert demons_result.mean_magnitude_mm()[0] == 0.0
    warped = demons_result.warped
    assert warped.frames.shape == sequence.frames.shape
    assert warped.geometry == sequence.geometry
    assert warped.index_values == sequence.index_values
    assert (warped.index_name, warped.index_unit) == (sequence.index_name, sequence.index_unit)
    assert np.array_equal(warped.frames[0], sequence.frames[0])
    before = np.abs(sequence.frames[1:] - sequence.frames[0]).mean()
    after = np.abs(warped.frames[1:] - sequence.frames[0]).mean()
    assert after < 0.5 * before


def test_non_zero_reference_and_input_left_untouched():
    sequence, truth = smooth_motion_phantom(**{**PHANTOM, "n_frames": 4, "reference_index": 2})
    frames_before = sequence.frames.copy()
    result = register_to_reference(sequence, 2, "demons", iterations=60)
    assert np.array_equal(sequence.frames, frames_before)
    assert np.abs(result.displacement_mm[2]).max() == 0.0
    assert _epe_px(result.displacement_mm, truth)[[0, 1, 3]].mean() < 0.5


def test_three_d_demons():
    spacing = (1.5, 1.5, 2.0)
    sequence, truth = smooth_motion_phantom(n_frames=3, shape=(12, 32, 32), spacing_mm=spacing, amplitude_px=2.5,
                                            shortening=0.1, seed=5)
    assert np.abs(truth[..., 2]).max() > 0.5  # long-axis shortening moves points through-plane
    result = register_to_reference(sequence, 0, "demons")
    assert (np.linalg.norm(result.displacement_mm - truth, axis=-1)[1:] / spacing[0]).mean() < 0.5


@pytest.mark.parametrize("reference", [-1, 6, 99, 1.5, True])
def test_bad_reference_index(phantom, reference):
    with pytest.raises(InputError, match="[Rr]eference frame"):
        register_to_reference(phantom[0], reference)


def test_bad_sequences_are_refused(phantom):
    sequence = phantom[0]
    with pytest.raises(InputError, match="at least 2 frames"):
        register_to_reference(VolumeSequence(sequence.frames[:1], sequence.geometry), 0)
    with_nan = sequence.frames.copy()
    with_nan[2, 0, 5, 5] = np.nan
    with pytest.raises(InputError, match="Frame 2"):
        register_to_reference(VolumeSequence(with_nan, sequence.geometry), 0)
    blank = sequence.frames.copy()
    blank[3] = 7.0
    with pytest.raises(InputError, match="blank"):
        register_to_reference(VolumeSequence(blank, sequence.geometry), 0)
    with pytest.raises(InputError, match="Unknown option"):
        register_to_reference(sequence, 0, "demons", mesh_size=4)
    with pytest.raises(InputError, match="Unknown registration method"):
        register_to_reference(sequence, 0, "optical_flow")
    with pytest.raises(InputError, match="too small"):
        register_to_reference(VolumeSequence(np.random.default_rng(0).random((3, 2, 32, 32))), 0)


def test_cancel_raises_cancelled(phantom):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        register_to_reference(phantom[0], 0, progress=Progress(token=token))


def test_cancel_during_the_run(phantom):
    token = CancelToken()
    seen = []

    def callback(fraction: float, message: str) -> None:
        seen.append(fraction)
        if fraction > 0.3:
            token.cancel()

    with pytest.raises(Cancelled):
        register_to_reference(phantom[0], 0, "demons", progress=Progress(callback, token))
    assert seen and max(seen) < 1.0


def test_registration_filters_are_let_go_after_the_run():
    """The cancel command refers to its filter, a cycle through SimpleITK that Python's collector cannot see: it is
    removed after the run, so the filter and its image buffers are freed (before, every demons filter of a fusion
    stayed alive: a large volume's fusion grew by about 0.36 GB per 4-million-voxel registration)."""
    import gc
    import weakref

    import SimpleITK as sitk

    from scanai.motion.registration import demons_pair, stop_on_cancel

    process = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    with stop_on_cancel(process, Progress()):
        assert process.HasCommand(sitk.sitkIterationEvent)
    assert not process.HasCommand(sitk.sitkIterationEvent)
    made = []
    original = sitk.FastSymmetricForcesDemonsRegistrationFilter
    try:
        sitk.FastSymmetricForcesDemonsRegistrationFilter = lambda: made.append(original()) or made[-1]
        image = sitk.GetImageFromArray(np.random.default_rng(0).random((8, 24, 24)).astype(np.float32))
        demons_pair(image, image, None, {"shrink_factors": (2, 1), "variant": "fast_symmetric", "iterations": 3,
                                         "field_sigma_px": 1.0, "update_sigma_px": 0.0}, Progress())
    finally:
        sitk.FastSymmetricForcesDemonsRegistrationFilter = original
    references = [weakref.ref(filter_) for filter_ in made]
    made.clear()
    gc.collect()
    assert len(references) == 2 and all(reference() is None for reference in references)


# ----------------------------------------------------------------------------------------------------- warp


def test_warp_applies_a_translation_in_ras(rng):
    geometry = Geometry(SPACING, (3.0, -2.0, 7.0), tuple(map(tuple, OBLIQUE)))
    ramp = np.tile(np.arange(40, dtype=np.float32) * 0.5, (1, 30, 1))  # 0.5 per column (i)
    volume = Volume(ramp, geometry)
    shift_ras = OBLIQUE @ np.array([2.0 * SPACING[0], 0.0, 0.0])  # two columns along +i, in RAS mm
    field_array = np.broadcast_to(shift_ras, (*ramp.shape, 3)).copy()
    out = warp(volume, field_array)
    assert out.geometry == geometry and out.array.dtype == np.float32
    assert np.allclose(out.array[:, :, :-2], ramp[:, :, 2:], atol=1e-5)
    assert np.array_equal(warp(volume, np.zeros_like(field_array)).array, ramp)
    with pytest.raises(InputError, match="shape"):
        warp(volume, field_array[..., :2])
    labels = Volume(rng.integers(0, 3, size=(1, 30, 40)).astype(np.uint8), geometry)
    assert warp(labels, field_array, order=0).array.dtype == np.uint8


# ------------------------------------------------------------------------------------------ files and CLI


def test_sequence_and_field_files_round_trip(tmp_path, phantom, demons_result):
    sequence = phantom[0]
    path = write_sequence_nrrd(sequence, tmp_path / "cine.seq.nrrd")
    again = read_sequence(path)
    assert np.array_equal(again.frames, sequence.frames)
    assert again.geometry.is_close(sequence.geometry)
    assert np.allclose(again.index_values, sequence.index_values)
    assert (again.index_name, again.index_unit) == ("time", "s")
    field_path = write_displacement_field(demons_result.displacement_mm[3], sequence.geometry, tmp_path / "u.nrrd")
    field_array, geometry = read_displacement_field(field_path)
    assert np.allclose(field_array, demons_result.displacement_mm[3])
    assert geometry.is_close(sequence.geometry)
    import SimpleITK as sitk

    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(field_path)))  # ITK convention: LPS vectors
    assert np.allclose(raw[0, 10, 10], demons_result.displacement_mm[3, 0, 10, 10] * [-1, -1, 1])


def test_cli_run_writes_outputs(tmp_path, capsys):
    sequence, _ = smooth_motion_phantom(n_frames=3, shape=(1, 40, 40), amplitude_px=2.0, seed=1)
    source = write_sequence_nrrd(sequence, tmp_path / "in.seq.nrrd")
    parser = argparse.ArgumentParser()
    motion_cli.add_arguments(parser)
    args = parser.parse_args([str(source), "--reference", "2", "--method", "demons", "--displacement-folder",
                              "--out", str(tmp_path / "out")])
    assert motion_cli.run(args) == 0
    out = tmp_path / "out"
    assert (out / "warped.seq.nrrd").is_file() and (out / "motion.csv").is_file()
    assert sorted(p.name for p in (out / "displacement").iterdir()) == [f"frame_{t:03d}.nrrd" for t in (1, 2, 3)]
    assert np.abs(read_displacement_field(out / "displacement" / "frame_002.nrrd")[0]).max() == 0.0
    assert "warped.seq.nrrd" in capsys.readouterr().out


def test_dicom_reader_errors(tmp_path):
    with pytest.raises(FileFormatError, match="does not exist"):
        read_dicom_series(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(FileFormatError, match="No DICOM"):
        read_dicom_series(tmp_path)


def test_sunnybrook_cine(shared_data):
    folder = shared_data / SUNNYBROOK
    slices = list_cine_slices(folder)
    assert len(slices) == 12 and all(len(s.files) == 20 for s in slices)
    sequence = read_sunnybrook_cine(folder, 5)
    assert sequence.frames.shape == (20, 1, 256, 256)
    assert (sequence.index_name, sequence.index_unit) == ("time", "s")
    times = np.asarray(sequence.index_values)
    assert np.all(np.diff(times) > 0) and 0.0 < times[0] < 0.05 and times[-1] < 1.5
    assert sequence.geometry.spacing_mm[:2] == pytest.approx((1.367188, 1.367188), abs=1e-5)
    import pydicom  # DICOM LPS -> RAS: x and y change sign

    first = pydicom.dcmread(slices[5].files[0], stop_before_pixels=True)
    lps = np.asarray(first.ImagePositionPatient, dtype=float)
    assert np.allclose(sequence.geometry.origin_mm, lps * [-1, -1, 1])
    row = np.asarray(first.ImageOrientationPatient[:3], dtype=float)
    assert np.allclose(np.asarray(sequence.geometry.directions)[:, 0], row * [-1, -1, 1])
    subset = VolumeSequence(sequence.frames[[0, 5, 10]], sequence.geometry, times[[0, 5, 10]])
    result = register_to_reference(subset, 0, "demons", iterations=50)
    before = np.abs(subset.frames[1:] - subset.frames[0]).mean()
    after = np.abs(result.warped.frames[1:] - subset.frames[0]).mean()
    assert after < 0.8 * before
