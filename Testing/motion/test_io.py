"""Cine input for motion estimation (folder / multi-frame DICOM / 4-D sequence files) and Sunnybrook contours."""

from __future__ import annotations

import shutil
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from scanai.core.errors import FileFormatError, GeometryError, InputError
from scanai.core.image import Geometry, VolumeSequence
from scanai.io.cine import (
    list_cine_slices,
    read_cine,
    read_cine_stack,
    read_dicom_series,
    read_multiframe_cine,
    read_sunnybrook_cine,
)
from scanai.io.contours import contour_mask, read_contour_points, read_sunnybrook_contours
from scanai.io.sequence_file import nifti_time_axis, write_sequence

SUNNYBROOK = Path("cardiac") / "sunnybrook"
DICOMS = SUNNYBROOK / "dicoms" / "SCD0000101"
CONTOURS = SUNNYBROOK / "contourfiles" / "SC-HF-I-1"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"


# ------------------------------------------------------------------------------------------ helpers


def _echo_path() -> Path:
    try:
        from pydicom import examples

        return Path(examples.get_path("ybr_color"))
    except (ImportError, AttributeError, ValueError) as error:  # pydicom < 3 has no examples module
        pytest.skip(f"pydicom's example echo cine is not available ({error})")


def _write_dicom(path: Path, pixels: np.ndarray | None, sop_class: str = MR_STORAGE, **attributes) -> Path:
    """A small uncompressed DICOM file; ``pixels`` (rows, cols), (frames, rows, cols) or (..., 3) RGB uint8/16."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    dataset.Modality = "MR" if sop_class == MR_STORAGE else "US"
    if pixels is not None:
        pixels = np.asarray(pixels)
        colour = pixels.shape[-1] == 3 and pixels.dtype == np.uint8
        plane = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
        dataset.Rows, dataset.Columns = (int(n) for n in plane)
        dataset.SamplesPerPixel = 3 if colour else 1
        dataset.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
        if colour:
            dataset.PlanarConfiguration = 0
        bits = pixels.dtype.itemsize * 8
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = bits, bits, bits - 1
        dataset.PixelRepresentation = 0
        if pixels.ndim == (4 if colour else 3):
            dataset.NumberOfFrames = pixels.shape[0]
        dataset.PixelData = np.ascontiguousarray(pixels).tobytes()
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    try:
        dataset.save_as(path, enforce_file_format=True)
    except TypeError:  # pydicom < 3
        dataset.save_as(path, write_like_original=False)
    return path


def _cine_folder(folder: Path, positions_lps: list[tuple[float, float, float]], phases: int = 2,
                 spacing: tuple[float, float] = (1.5, 1.5)) -> Path:
    """A synthetic axial cine folder: one slice per position, ``phases`` images each (TriggerTime 0, 40, ... ms)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    number = 0
    for position in positions_lps:
        for phase in range(phases):
            number += 1
            _write_dicom(folder / f"{number}.dcm", rng.integers(0, 1000, (6, 8)).astype(np.uint16),
                         ImagePositionPatient=list(position), ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
                         PixelSpacing=list(spacing), SliceThickness=8, TriggerTime=40.0 * phase,
                         InstanceNumber=number, SeriesInstanceUID="1.2.3.4")
    return folder


def _oblique_geometry() -> Geometry:
    angle = np.deg2rad(25)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    return Geometry((1.25, 1.5, 8.0), (-30.0, 12.5, 40.0), tuple(map(tuple, rotation)))


@pytest.fixture(scope="module")
def sunnybrook(shared_data):
    """(stack (20, 12, 256, 256), contours) of the Sunnybrook patient SCD0000101."""
    folder = shared_data / DICOMS
    return read_cine(folder), read_sunnybrook_contours(shared_data / CONTOURS, folder)


# ------------------------------------------------------------------------------------------ multi-frame DICOM


def test_echo_cine_reads_as_thirty_grey_frames_with_increasing_times():
    path = _echo_path()
    sequence = read_cine(path)
    assert sequence.frames.shape == (30, 1, 240, 320) and sequence.frames.dtype == np.float32
    assert (sequence.index_name, sequence.index_unit) == ("time", "s")
    times = np.asarray(sequence.index_values)
    assert np.all(np.diff(times) > 0)
    np.testing.assert_allclose(np.diff(times), 0.033333, rtol=1e-6)  # FrameTime 33.333 ms
    assert times[0] == 0.0
    # SequenceOfUltrasoundRegions: PhysicalDeltaX/Y 0.0510497 cm -> 0.510497 mm
    assert sequence.geometry.spacing_mm[:2] == pytest.approx((0.5104970559, 0.5104970559), rel=1e-9)
    assert np.allclose(sequence.geometry.directions, np.diag([-1.0, -1.0, 1.0]))  # axis-aligned (no orientation)
    # YBR_FULL_422: the grey frames are the Y channel, which is the RGB luminance 0.299 R + 0.587 G + 0.114 B
    import pydicom
    from pydicom.pixels import get_decoder

    dataset = pydicom.dcmread(path)
    decoder = get_decoder(dataset.file_meta.TransferSyntaxUID)
    ybr, _ = decoder.as_array(dataset, as_rgb=False)
    np.testing.assert_array_equal(sequence.frames[:, 0], ybr[..., 0].astype(np.float32))
    rgb, _ = decoder.as_array(dataset, as_rgb=True)
    luminance = rgb.astype(float) @ [0.299, 0.587, 0.114]
    assert np.abs(luminance - sequence.frames[:, 0]).mean() < 0.5
    assert 5.0 < sequence.frames.mean() < 30.0 and sequence.frames.max() > 150  # dark echo with bright tissue
    again = read_multiframe_cine(path)
    np.testing.assert_array_equal(again.frames, sequence.frames)


def test_rgb_multiframe_is_luminance_with_frame_time_vector(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
    path = _write_dicom(tmp_path / "rgb.dcm", rgb, sop_class=US_MULTIFRAME_STORAGE,
                        FrameTimeVector=[0, 40, 40, 50])
    with pytest.warns(UserWarning, match="1 mm"):
        sequence = read_multiframe_cine(path)
    np.testing.assert_allclose(sequence.frames[:, 0], rgb.astype(float) @ [0.299, 0.587, 0.114], atol=1e-4)
    np.testing.assert_allclose(sequence.index_values, [0.0, 0.04, 0.08, 0.13])
    assert sequence.geometry.spacing_mm[:2] == (1.0, 1.0)


def test_grey_multiframe_keeps_geometry_rescale_and_frame_numbers(tmp_path):
    stored = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    orientation = [0, 1, 0, 0, 0, -1]  # sagittal: rows toward P... LPS
    path = _write_dicom(tmp_path / "grey.dcm", stored, PixelSpacing=[0.8, 0.6], ImageOrientationPatient=orientation,
                        ImagePositionPatient=[10, -20, 30], RescaleSlope=2, RescaleIntercept=-5)
    sequence = read_multiframe_cine(path)
    np.testing.assert_allclose(sequence.frames[:, 0], stored * 2.0 - 5.0)
    assert (sequence.index_name, sequence.index_unit) == ("frame", "")
    assert sequence.index_values == (0.0, 1.0, 2.0)
    geometry = sequence.geometry
    assert geometry.spacing_mm[:2] == pytest.approx((0.6, 0.8))  # (column spacing i, row spacing j)
    assert np.allclose(geometry.origin_mm, (-10, 20, 30))
    assert np.allclose(np.asarray(geometry.directions)[:, 0], (0, -1, 0))  # LPS (0, 1, 0) -> RAS (0, -1, 0)
    assert np.allclose(np.asarray(geometry.directions)[:, 1], (0, 0, -1))


# ------------------------------------------------------------------------------------------ sequence files


def test_4d_nifti_round_trip_keeps_frames_spacing_and_times(tmp_path):
    rng = np.random.default_rng(2)
    times = 0.02 + 0.0375 * np.arange(5)
    sequence = VolumeSequence(rng.normal(size=(5, 3, 6, 7)).astype(np.float32), _oblique_geometry(), tuple(times))
    for name in ("cine.nii.gz", "cine.nii"):
        path = write_sequence(sequence, tmp_path / name)
        assert nifti_time_axis(path) == pytest.approx((0.02, 0.0375), rel=1e-6)
        again = read_cine(path)
        np.testing.assert_array_equal(again.frames, sequence.frames)
        assert again.geometry.is_close(sequence.geometry)
        assert again.geometry.spacing_mm == pytest.approx((1.25, 1.5, 8.0))
        assert (again.index_name, again.index_unit) == ("time", "s")
        np.testing.assert_allclose(again.index_values, times, rtol=1e-6)
    # one slice of a 3-D+t file: the origin moves to that slice
    middle = read_cine(tmp_path / "cine.nii.gz", slice_index=1)
    np.testing.assert_array_equal(middle.frames[:, 0], sequence.frames[:, 1])
    assert np.allclose(middle.geometry.origin_mm, sequence.geometry.ras_of_ijk(np.array([0.0, 0.0, 1.0])))
    with pytest.raises(InputError, match="Slice 3 does not exist"):
        read_cine(tmp_path / "cine.nii.gz", slice_index=3)
    # frame numbers stay frame numbers; uneven times cannot be stored in a 4-D image: frame numbers
    numbered = VolumeSequence(sequence.frames, sequence.geometry, (), "frame", "")
    again = read_cine(write_sequence(numbered, tmp_path / "frames.nii.gz"))
    assert (again.index_name, again.index_unit, again.index_values) == ("frame", "", (0.0, 1.0, 2.0, 3.0, 4.0))
    uneven = VolumeSequence(sequence.frames, sequence.geometry, (0.0, 0.1, 0.3, 0.4, 0.5))
    path = write_sequence(uneven, tmp_path / "uneven.nii")
    assert read_cine(path).index_name == "frame"
    # a .seq.nrrd keeps any index
    again = read_cine(write_sequence(uneven, tmp_path / "uneven.seq.nrrd"))
    np.testing.assert_allclose(again.index_values, uneven.index_values)


def test_nifti_time_in_milliseconds_and_without_unit(tmp_path):
    sequence = VolumeSequence(np.ones((3, 1, 4, 4), np.float32), Geometry(), (0.0, 1.0, 2.0))
    path = write_sequence(sequence, tmp_path / "ms.nii")
    header = bytearray(path.read_bytes())
    header[123] = 2 | 16  # mm, ms
    header[92:96] = struct.pack("<f", 37.5)  # pixdim[4]
    header[136:140] = struct.pack("<f", 20.0)  # toffset
    path.write_bytes(bytes(header))
    np.testing.assert_allclose(read_cine(path).index_values, [0.02, 0.0575, 0.095], rtol=1e-6)
    header[123] = 2  # no time unit -> frame numbers
    path.write_bytes(bytes(header))
    again = read_cine(path)
    assert (again.index_name, again.index_values) == ("frame", (0.0, 1.0, 2.0))


# ------------------------------------------------------------------------------------------ DICOM folders


def test_equally_spaced_folder_reads_as_a_stack_and_others_ask_for_a_slice(tmp_path):
    positions = [(0.0, 0.0, 0.0), (0.0, 0.0, -10.0), (0.0, 0.0, -20.0)]
    folder = _cine_folder(tmp_path / "even", positions)
    stack = read_cine(folder)
    assert stack.frames.shape == (2, 3, 6, 8)
    assert stack.geometry.spacing_mm == pytest.approx((1.5, 1.5, 10.0))
    assert np.allclose(np.asarray(stack.geometry.directions)[:, 2], (0, 0, -1))  # slice 0 -> slice 1
    np.testing.assert_allclose(stack.index_values, (0.0, 0.04))
    for k in range(3):
        one = read_cine(folder, slice_index=k)
        np.testing.assert_array_equal(stack.frames[:, k], one.frames[:, 0])
        assert np.allclose(stack.geometry.ras_of_ijk(np.array([2.0, 3.0, k])),
                           one.geometry.ras_of_ijk(np.array([2.0, 3.0, 0.0])))
    uneven = _cine_folder(tmp_path / "uneven", [(0.0, 0.0, 0.0), (0.0, 0.0, 10.0), (0.0, 0.0, 25.0)])
    with pytest.raises(InputError, match=r"3 slice locations.*not equally spaced.*slice_index \(0 to 2\)"):
        read_cine(uneven)
    sheared = _cine_folder(tmp_path / "sheared", [(0.0, 0.0, 0.0), (3.0, 0.0, 10.0), (6.0, 0.0, 20.0)])
    with pytest.raises(InputError, match=r"3 slice locations.*shifted in its own plane.*slice_index"):
        read_cine(sheared)
    assert read_cine(uneven, slice_index=2).frames.shape == (2, 1, 6, 8)


def test_sunnybrook_folder_reads_as_a_stack(sunnybrook, shared_data):
    stack, _ = sunnybrook
    assert stack.frames.shape == (20, 12, 256, 256)
    assert stack.geometry.spacing_mm == pytest.approx((1.367188, 1.367188, 10.0), abs=1e-3)
    assert (stack.index_name, stack.index_unit) == ("time", "s")
    times = np.asarray(stack.index_values)
    assert np.all(np.diff(times) > 0) and 0.0 < times[0] < 0.03 and 0.7 < times[-1] < 0.8
    one = read_cine(shared_data / DICOMS, slice_index=5)
    reference = read_sunnybrook_cine(shared_data / DICOMS, 5)
    np.testing.assert_array_equal(one.frames, reference.frames)
    np.testing.assert_array_equal(stack.frames[:, 5], reference.frames[:, 0])
    assert np.allclose(stack.geometry.ras_of_ijk(np.array([10.0, 20.0, 5.0])),
                       reference.geometry.ras_of_ijk(np.array([10.0, 20.0, 0.0])), atol=0.05)


# ------------------------------------------------------------------------------------------ contours


def test_contour_mask_fills_pixel_centres_by_the_even_odd_rule():
    square = np.array([[1.5, 1.5], [5.5, 1.5], [5.5, 4.5], [1.5, 4.5]])  # centres i 2..5, j 2..4
    mask = contour_mask(square, (7, 8))
    expected = np.zeros((7, 8), bool)
    expected[2:5, 2:6] = True
    np.testing.assert_array_equal(mask, expected)
    # a disc of radius 20 px: area within 1 % of pi r^2
    angles = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    disc = contour_mask(np.column_stack([32 + 20 * np.cos(angles), 30 + 20 * np.sin(angles)]), (64, 64))
    assert disc.sum() == pytest.approx(np.pi * 400, rel=0.01)
    # even-odd: an outline that goes round twice over an inner square leaves the overlap as a hole
    outer = [[0.5, 0.5], [9.5, 0.5], [9.5, 9.5], [0.5, 9.5], [0.5, 0.5]]
    inner = [[3.5, 3.5], [3.5, 6.5], [6.5, 6.5], [6.5, 3.5], [3.5, 3.5]]
    ring = contour_mask(np.array(outer + inner), (11, 11))
    assert ring[5, 5] == False and ring[2, 2] == True and ring.sum() == 81 - 9  # noqa: E712
    with pytest.raises(InputError, match="at least 3 points"):
        contour_mask(np.zeros((2, 2)), (4, 4))


def test_sunnybrook_contours_map_to_slices_and_phases(sunnybrook, shared_data):
    import pydicom

    stack, contours = sunnybrook
    found = {(c.slice_index, c.phase_index, c.kind) for c in contours}
    # SCD0000101: ED = phase 18 (endo + epi), ES = phase 7 (endo only) on slices 2..10
    expected = {(s, p, "endocardium") for s in range(2, 11) for p in (7, 18)} | \
        {(s, 18, "epicardium") for s in range(2, 11)}
    assert found == expected and len(contours) == 27
    slices = list_cine_slices(shared_data / DICOMS)
    for contour in contours:
        assert 0 <= contour.slice_index < 12 and 0 <= contour.phase_index < 20
        header = pydicom.dcmread(slices[contour.slice_index].files[contour.phase_index], stop_before_pixels=True)
        assert int(header.InstanceNumber) == contour.image_number
        assert contour.mask.shape == (256, 256) and contour.mask.dtype == bool
        assert contour.points_ij.ndim == 2 and contour.points_ij.shape[1] == 2
    first = next(c for c in contours if c.image_number == 48)
    np.testing.assert_allclose(first.points_ij[0], (120.5, 137.5))  # first line of the file: "120.50 137.50"
    np.testing.assert_array_equal(first.mask, contour_mask(read_contour_points(
        shared_data / CONTOURS / "i-contours" / "IM-0001-0048-icontour-manual.txt"), (256, 256)))


def test_sunnybrook_contours_match_the_anatomy(sunnybrook):
    stack, contours = sunnybrook
    by_key = {(c.slice_index, c.phase_index, c.kind): c for c in contours}
    pixel_mm2 = float(np.prod(stack.geometry.spacing_mm[:2]))
    for s in range(2, 11):
        ed, es = by_key[(s, 18, "endocardium")], by_key[(s, 7, "endocardium")]
        epi = by_key[(s, 18, "epicardium")]
        assert ed.mask.sum() > es.mask.sum(), f"slice {s}: ED cavity not larger than ES"
        assert 300 * pixel_mm2 < ed.mask.sum() * pixel_mm2 < 4000  # LV cavity cross-section in mm^2
        # the blood pool inside the ED endocardium is brighter than the myocardium 3-6 px outside it
        image = stack.frames[18, s]
        ring = ndimage.binary_dilation(ed.mask, iterations=6) & ~ndimage.binary_dilation(ed.mask, iterations=3)
        assert image[ed.mask].mean() > 1.4 * image[ring].mean(), f"slice {s}: contour does not fit the image"
        # the epicardium encloses the endocardium (the manual outlines touch: at most 1 pixel off in this set)
        assert (ed.mask & ~epi.mask).sum() <= 1
        assert epi.mask.sum() > 1.4 * ed.mask.sum()
    # over the ventricle (heart-failure patient): ED cavity area 10238 px, ES 7550 px
    ed_total = sum(by_key[(s, 18, "endocardium")].mask.sum() for s in range(2, 11))
    es_total = sum(by_key[(s, 7, "endocardium")].mask.sum() for s in range(2, 11))
    assert (ed_total, es_total) == (10238, 7550)


# ------------------------------------------------------------------------------------------ bad input


def test_bad_cine_input_raises_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileFormatError, match="No DICOM images were found"):
        read_cine(empty)
    with pytest.raises(FileFormatError, match="does not exist"):
        read_cine(tmp_path / "missing.nii.gz")
    # a truncated multi-frame file
    echo = _echo_path().read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(echo[: len(echo) // 2])
    with pytest.raises(FileFormatError, match="truncated.dcm is incomplete: its compressed pixel data"):
        read_cine(truncated)
    (tmp_path / "cut.dcm").write_bytes(echo[:300])  # cut inside the header
    with pytest.raises(FileFormatError, match="cut.dcm is incomplete: it ends inside its file meta information"):
        read_cine(tmp_path / "cut.dcm")
    # a truncated image in a DICOM folder
    folder = _cine_folder(tmp_path / "cut_folder", [(0.0, 0.0, 0.0)], phases=3)
    data = (folder / "2.dcm").read_bytes()
    (folder / "2.dcm").write_bytes(data[:-40])
    with pytest.raises(FileFormatError, match="2.dcm is incomplete: its pixel data hold 56 of the 96 bytes"):
        read_cine(folder)
    # not an image at all
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(FileFormatError, match="neither a DICOM file nor a known sequence file"):
        read_cine(tmp_path / "notes.txt")
    report = _write_dicom(tmp_path / "report.dcm", None, sop_class="1.2.840.10008.5.1.4.1.1.88.11")
    with pytest.raises(FileFormatError, match="no image.*Basic Text SR"):
        read_cine(report)


def test_single_frames_are_refused(tmp_path):
    single = _write_dicom(tmp_path / "single.dcm", np.zeros((4, 4), np.uint16), PixelSpacing=[1, 1])
    with pytest.raises(InputError, match="at least 2 frames"):
        read_cine(single)
    one_phase = _cine_folder(tmp_path / "one_phase", [(0.0, 0.0, 0.0)], phases=1)
    with pytest.raises(InputError, match="at least 2 frames"):
        read_cine(one_phase)
    path = write_sequence(VolumeSequence(np.zeros((1, 1, 4, 4), np.float32), Geometry(), (0.0,)),
                          tmp_path / "one.nii.gz")
    with pytest.raises(InputError, match="at least 2 frames"):
        read_cine(path)


def test_frames_on_different_grids_are_refused(tmp_path):
    folder = _cine_folder(tmp_path / "folder", [(0.0, 0.0, 0.0)], phases=3)
    _write_dicom(folder / "3.dcm", np.zeros((6, 8), np.uint16), ImagePositionPatient=[0, 0, 0],
                 ImageOrientationPatient=[1, 0, 0, 0, 1, 0], PixelSpacing=[1.2, 1.2], SliceThickness=8,
                 TriggerTime=80.0, InstanceNumber=3, SeriesInstanceUID="1.2.3.4")
    with pytest.raises(GeometryError, match="Phase 3 of slice 0.*different grid"):
        read_cine(folder)
    # an enhanced multi-frame file whose frames lie at two positions
    from pydicom.dataset import Dataset

    def frame_item(z: float) -> Dataset:
        position, item = Dataset(), Dataset()
        position.ImagePositionPatient = [0, 0, z]
        item.PlanePositionSequence = [position]
        return item

    _write_dicom(tmp_path / "enhanced.dcm", np.zeros((3, 4, 4), np.uint16), PixelSpacing=[1, 1],
                 ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
                 PerFrameFunctionalGroupsSequence=[frame_item(0.0), frame_item(0.0), frame_item(5.0)])
    with pytest.raises(GeometryError, match="Frame 3 of enhanced.dcm has another position"):
        read_cine(tmp_path / "enhanced.dcm")


def test_bad_contour_input(tmp_path, shared_data):
    with pytest.raises(FileFormatError, match="No Sunnybrook contour files"):
        read_sunnybrook_contours(tmp_path, shared_data / DICOMS)
    contours = tmp_path / "contours" / "i-contours"
    contours.mkdir(parents=True)
    bad = contours / "IM-0001-0048-icontour-manual.txt"
    bad.write_text("120.5 137.5\n121 oops\n")
    with pytest.raises(FileFormatError, match="Line 2 .* not two numbers"):
        read_sunnybrook_contours(tmp_path / "contours", shared_data / DICOMS)
    bad.unlink()
    shutil.copy(shared_data / CONTOURS / "i-contours" / "IM-0001-0048-icontour-manual.txt",
                contours / "IM-0001-0999-icontour-manual.txt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match="image 999.*InstanceNumber 999"):
            read_sunnybrook_contours(tmp_path / "contours", shared_data / DICOMS)
    assert read_dicom_series  # the folder reader stays the one the contours are placed with
    assert read_cine_stack


def test_a_damaged_or_missing_phase_is_not_silently_dropped(shared_data, tmp_path):
    """One unreadable DICOM of a cine, or one phase missing against CardiacNumberOfImages, is an error that says
    so (a 19-frame cine would otherwise be analysed as if it were the whole cycle)."""
    import shutil

    from scanai.core.errors import FileFormatError
    from scanai.io.cine import list_cine_slices, read_dicom_series

    source = shared_data / "cardiac" / "sunnybrook" / "dicoms" / "SCD0000101"
    first = list_cine_slices(source)[0]
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for path in first.files:
        shutil.copy(path, damaged / path.name)
    (damaged / first.files[3].name).write_bytes(b"\x00" * 64)
    with pytest.raises(FileFormatError, match="could not be read: " + first.files[3].name):
        read_dicom_series(damaged)
    if first.announced:  # the header announces the phase count: a missing file is named as missing
        (damaged / first.files[3].name).unlink()
        with pytest.raises(FileFormatError, match=f"has {len(first.files) - 1} phases, but its headers announce"):
            read_dicom_series(damaged)


# ------------------------------------------------------------------------------ a new study: list, label maps


def test_list_names_every_slice_and_a_run_names_the_slice_it_read(tmp_path, capsys, monkeypatch):
    from scanai import cli as main_cli
    from scanai.io.cine import read_cine_described

    positions = [(0.0, 0.0, 0.0), (0.0, 0.0, -10.0), (0.0, 0.0, -20.0)]
    folder = _cine_folder(tmp_path / "study", positions, phases=3)
    monkeypatch.chdir(tmp_path)
    assert main_cli.main(["motion", str(folder), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("slice 0 of 3 (0-based) at 0.0 mm along the slice normal: images 1-3 (1.dcm ... 3.dcm), "
                        "3 phases, trigger times 0-80 ms every 40.0 ms")
    assert lines[2].startswith("slice 2 of 3 (0-based) at -20.0 mm along the slice normal: images 7-9 (7.dcm ... ")
    assert "choose one with --slice N" in lines[3]
    assert not (tmp_path / "motion_output").exists()  # --list writes nothing
    sequence, described = read_cine_described(folder, 1)
    assert sequence.frames.shape == (3, 1, 6, 8)
    assert described == ("study: slice 1 of 3 (0-based) at -10.0 mm along the slice normal: images 4-6 (4.dcm ... "
                         "6.dcm), 3 phases, trigger times 0-80 ms every 40.0 ms")
    assert read_cine_described(folder)[1].startswith("study: all 3 slice locations as one 3-D+t stack")
    with pytest.raises(InputError, match=r"Slice 3 does not exist.*0 to 2.*--list"):
        read_cine_described(folder, 3)
    write_sequence(sequence, tmp_path / "one.seq.nrrd")
    assert main_cli.main(["motion", str(tmp_path / "one.seq.nrrd"), "--list"]) == 0
    assert capsys.readouterr().out.startswith("slice 0 of 1 (0-based) at ")


def test_sunnybrook_list(shared_data, capsys):
    from scanai import cli as main_cli

    assert main_cli.main(["motion", str(shared_data / DICOMS), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 13
    assert lines[4] == ("slice 4 of 12 (0-based) at -78.9 mm along the slice normal: images 81-100 (81.dcm ... "
                        "100.dcm), 20 phases, trigger times 19-741 ms every 38.0 ms")


def test_label_maps_on_the_pixel_grid_are_placed_on_the_cine(tmp_path):
    import SimpleITK as sitk

    from scanai.core.image import Volume
    from scanai.io.contours import read_label_map
    from scanai.io.sitk_image import write_image
    from scanai.motion.pipeline import _label_array

    sequence = VolumeSequence(np.random.default_rng(1).random((3, 1, 12, 16)), _oblique_geometry())
    labels = np.zeros((12, 16), np.uint8)
    labels[3:7, 4:9] = 1
    labels[8, 2] = 2
    np.save(tmp_path / "labels.npy", labels)
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(tmp_path / "labels.png"))
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(tmp_path / "plain.nrrd"))  # 2-D, no geometry of its own
    sitk.WriteImage(sitk.GetImageFromArray(np.repeat(labels[..., None], 3, axis=-1), isVector=True),
                    str(tmp_path / "grey_rgb.png"))
    for name in ("labels.npy", "labels.png", "plain.nrrd", "grey_rgb.png"):
        read = read_label_map(tmp_path / name)
        assert isinstance(read, np.ndarray), name
        np.testing.assert_array_equal(_label_array(read, sequence), labels[None])
    placed = write_image(Volume(labels[None], sequence.geometry), tmp_path / "placed.nrrd")
    assert isinstance(read_label_map(placed), Volume)  # a real geometry is kept, and checked
    np.testing.assert_array_equal(_label_array(read_label_map(placed), sequence), labels[None])
    coloured = np.zeros((12, 16, 3), np.uint8)
    coloured[3:7, 4:9] = (255, 0, 0)
    sitk.WriteImage(sitk.GetImageFromArray(coloured, isVector=True), str(tmp_path / "colour.png"))
    with pytest.raises(FileFormatError, match="colour image"):
        read_label_map(tmp_path / "colour.png")
    with pytest.raises(GeometryError, match=r"it is 16 x 12 pixels \(rows and columns swapped\? transpose it\)\. "
                                            r"The cine's grid is 12 x 16 pixels \(rows x columns\) of 1\.25 x 1\.5 mm"):
        _label_array(labels.T, sequence)
    with pytest.raises(FileFormatError, match="does not exist"):
        read_label_map(tmp_path / "missing.png")
