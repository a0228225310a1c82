"""PET I/O: DICOM PET series, BIDS sidecars, 4-D images, units, decay correction and SUV."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pytest

from scanai.core.errors import FileFormatError, GeometryError, InputError
from scanai.core.image import Geometry, VolumeSequence
from scanai.core.progress import Progress
from scanai.pet.bids import read_bids_sidecar, timing_from_sidecar, write_bids_sidecar
from scanai.pet.dicom_pet import read_pet_dicom_series
from scanai.pet.dynamic import DynamicPet
from scanai.pet.input_function import InputFunction, feng_input
from scanai.pet.study import read_dynamic_pet, write_dynamic_pet
from scanai.pet.timing import FrameTiming
from scanai.pet.units import (
    check_compatible_units,
    decay_correct_frames,
    decay_correct_input,
    decay_uncorrect_input,
    decay_weighted_offset_s,
    frame_decay_factors,
    half_life_s,
    normalise_unit,
    shift_decay_reference,
    suv_factor,
)

F18 = 6586.2
LAM = math.log(2) / F18
INJECTION = dt.datetime(2024, 1, 2, 9, 0, 0)
STARTS = np.array([3600.0, 3900.0, 4200.0])  # s after injection; the series starts 1 h after the injection
DURATIONS = np.array([300.0, 300.0, 600.0])
ROW = np.array([1.0, 0.0, 0.0])  # LPS direction of increasing column index
COL = np.array([0.0, math.cos(0.3), -math.sin(0.3)])  # LPS direction of increasing row index (oblique)
NORMAL = np.cross(ROW, COL)
PIXEL_SPACING = (2.0, 2.5)  # (row spacing, column spacing) mm
SLICE_STEP = 3.27
ORIGIN_LPS = np.array([-10.0, 20.0, 30.0])
ROWS, COLS, SLICES = 8, 8, 4
DOSE_BQ, WEIGHT_KG = 370e6, 70.0


def _clock(moment: dt.datetime) -> tuple[str, str]:
    return moment.strftime("%Y%m%d"), moment.strftime("%H%M%S.%f")


def _stored(frame: int, slice_: int) -> np.ndarray:
    """Stored (pre-rescale) pixel values that encode frame and slice."""
    j, i = np.mgrid[:ROWS, :COLS]
    return (1000 * (frame + 1) + 100 * slice_ + 7 * j + i).astype(np.uint16)


def _slope(frame: int, slice_: int) -> float:
    return 0.5 + 0.01 * (SLICES * frame + slice_)


def _write_series(folder, frames=(0, 1, 2), *, series_uid="1.2.3.4.100", frame_uid="1.2.3.4.900",
                  series_start_s=3600.0, drop=(), overrides=None, rng=None, decay="START", rows=ROWS):
    """Write a PT series: one file per (frame, slice), shuffled file names. ``overrides(frame, slice, ds)``."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = rng or np.random.default_rng(1)
    series_time = INJECTION + dt.timedelta(seconds=series_start_s)
    paths = []
    order = rng.permutation(len(frames) * SLICES)
    for n, (f, k) in enumerate((f, k) for f in frames for k in range(SLICES)):
        ds = Dataset()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.128"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "PT"
        ds.StudyInstanceUID = "1.2.3.4"
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesNumber = 7
        ds.SeriesDescription = "Dynamic FDG"
        ds.SeriesDate, ds.SeriesTime = _clock(series_time)
        ds.StudyDate = ds.SeriesDate
        start = INJECTION + dt.timedelta(seconds=float(STARTS[f]))
        ds.AcquisitionDate, ds.AcquisitionTime = _clock(start)
        offset = float(decay_weighted_offset_s(DURATIONS[f], F18))
        ds.FrameReferenceTime = f"{(STARTS[f] - series_start_s + offset) * 1000:.3f}"
        ds.ActualFrameDuration = int(DURATIONS[f] * 1000)
        ds.ImageIndex = (f - frames[0]) * SLICES + k + 1
        ds.NumberOfSlices = SLICES
        ds.NumberOfTimeSlices = len(frames)
        ds.SeriesType = ["DYNAMIC", "IMAGE"]
        ds.Units = "BQML"
        ds.DecayCorrection = decay
        ds.PatientWeight = WEIGHT_KG
        item = Dataset()
        item.RadiopharmaceuticalStartDateTime = INJECTION.strftime("%Y%m%d%H%M%S.00")
        item.RadiopharmaceuticalStartTime = INJECTION.strftime("%H%M%S.00")
        item.RadionuclideTotalDose = DOSE_BQ
        item.RadionuclideHalfLife = F18
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "C-111A1", "SRT", "^18^Fluorine"
        item.RadionuclideCodeSequence = [code]
        ds.RadiopharmaceuticalInformationSequence = [item]
        ds.ImageOrientationPatient = [*ROW, *COL]
        ds.ImagePositionPatient = list(ORIGIN_LPS + k * SLICE_STEP * NORMAL)
        ds.PixelSpacing = list(PIXEL_SPACING)
        ds.SliceThickness = SLICE_STEP
        ds.Rows, ds.Columns = rows, COLS
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope = f"{_slope(f, k):.4f}"
        ds.RescaleIntercept = 0
        stored = _stored(f, k)
        if rows != ROWS:
            stored = np.resize(stored, (rows, COLS)).astype(np.uint16)
        ds.PixelData = stored.tobytes()
        for keyword in drop:
            if keyword in ds:
                delattr(ds, keyword)
            if keyword in item:
                delattr(item, keyword)
        if overrides is not None:
            overrides(f, k, ds)
        path = folder / f"img{order[n]:03d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def _expected_frames(frames=(0, 1, 2), reference_s=3600.0) -> np.ndarray:
    values = np.array([[_stored(f, k) * np.float32(_slope(f, k)) for k in range(SLICES)] for f in frames],
                      dtype=np.float64)
    return values * np.exp(LAM * np.broadcast_to(reference_s, (len(frames),)))[:, None, None, None]


# ----------------------------------------------------------------------------------------------- DICOM
def test_dicom_series_frames_timing_values_geometry(tmp_path):
    _write_series(tmp_path / "pet")
    reports = []
    pet = read_pet_dicom_series(tmp_path / "pet", progress=Progress(lambda f, m: reports.append(f)))
    assert pet.frames.shape == (3, SLICES, ROWS, COLS) and pet.frames.dtype == np.float32
    np.testing.assert_allclose(pet.timing.start_s, STARTS, atol=1e-3)
    np.testing.assert_allclose(pet.timing.duration_s, DURATIONS, atol=1e-3)
    np.testing.assert_allclose(pet.sequence.index_values, STARTS + DURATIONS / 2, atol=1e-3)
    # Slope per slice applied, frame and slice order restored, START decay re-referenced to the injection.
    np.testing.assert_allclose(pet.frames, _expected_frames(), rtol=2e-6)
    assert pet.decay_corrected is True and pet.decay_reference_s == 0.0
    assert any("re-referenced" in w for w in pet.warnings)
    assert not any("Frame timing check" in w for w in pet.warnings)
    assert pet.unit == "Bq/mL" and pet.radionuclide == "F18" and pet.half_life_s == pytest.approx(F18)
    assert pet.suv_factor() == pytest.approx(WEIGHT_KG * 1000 / DOSE_BQ, rel=1e-12)
    # Geometry against an independent LPS computation of each voxel centre.
    flip = np.diag([-1.0, -1.0, 1.0])
    for i, j, k in [(0, 0, 0), (5, 2, 1), (7, 7, 3), (3, 6, 2)]:
        lps = ORIGIN_LPS + k * SLICE_STEP * NORMAL + i * PIXEL_SPACING[1] * ROW + j * PIXEL_SPACING[0] * COL
        np.testing.assert_allclose(pet.geometry.ras_of_ijk(np.array([i, j, k])), flip @ lps, atol=1e-6)
    assert reports[-1] == 1.0 and np.all(np.diff(reports) >= -1e-12) and len(reports) > 5


def test_dicom_decay_admin_and_none_and_suv(tmp_path):
    _write_series(tmp_path / "admin", decay="ADMIN")
    admin = read_pet_dicom_series(tmp_path / "admin")
    np.testing.assert_allclose(admin.frames, _expected_frames(reference_s=0.0), rtol=2e-6)
    assert admin.decay_corrected is True
    suv = admin.to_suv()
    np.testing.assert_allclose(suv.frames, admin.frames * (WEIGHT_KG * 1000 / DOSE_BQ), rtol=1e-6)
    assert suv.unit == "SUV"
    _write_series(tmp_path / "none", decay="NONE")
    raw = read_pet_dicom_series(tmp_path / "none")
    assert raw.decay_corrected is False
    with pytest.raises(InputError, match="not decay corrected"):
        raw.to_suv()
    corrected = raw.decay_corrected_to_injection()
    factors = frame_decay_factors(raw.timing, F18)
    np.testing.assert_allclose(corrected.frames, raw.frames * factors[:, None, None, None].astype(np.float32),
                               rtol=1e-6)
    assert corrected.decay_corrected is True


@pytest.mark.parametrize("keep", ["RadiopharmaceuticalStartDateTime", "RadiopharmaceuticalStartTime"])
def test_injection_time_fallback_1078_1072(tmp_path, keep):
    other = {"RadiopharmaceuticalStartDateTime": "RadiopharmaceuticalStartTime",
             "RadiopharmaceuticalStartTime": "RadiopharmaceuticalStartDateTime"}[keep]
    _write_series(tmp_path / "pet", drop=(other,))
    pet = read_pet_dicom_series(tmp_path / "pet")
    np.testing.assert_allclose(pet.timing.start_s, STARTS, atol=1e-3)
    fell_back = any("(0018,1072)" in w and "absent" in w for w in pet.warnings)
    assert fell_back == (keep == "RadiopharmaceuticalStartTime")


def test_injection_time_before_midnight(tmp_path):
    """Injection at 23:30, series at 00:30 the next day, only the time (0018,1072) given."""
    global INJECTION
    saved = INJECTION
    try:
        INJECTION = dt.datetime(2024, 1, 1, 23, 30, 0)
        _write_series(tmp_path / "pet", drop=("RadiopharmaceuticalStartDateTime",))
    finally:
        INJECTION = saved
    pet = read_pet_dicom_series(tmp_path / "pet")
    np.testing.assert_allclose(pet.timing.start_s, STARTS, atol=1e-3)
    assert any("day before" in w for w in pet.warnings)


def test_missing_frame_reference_time_uses_acquisition_time(tmp_path):
    _write_series(tmp_path / "pet", drop=("FrameReferenceTime",))
    pet = read_pet_dicom_series(tmp_path / "pet")
    np.testing.assert_allclose(pet.timing.start_s, STARTS, atol=1e-3)
    assert any("FrameReferenceTime (0054,1300)" in w and "missing" in w for w in pet.warnings)


def test_missing_acquisition_time_uses_frame_reference_time(tmp_path):
    _write_series(tmp_path / "pet", drop=("AcquisitionTime", "AcquisitionDate"))
    pet = read_pet_dicom_series(tmp_path / "pet")
    np.testing.assert_allclose(pet.timing.start_s, STARTS, atol=1e-3)
    assert any("acquisition times are missing" in w for w in pet.warnings)


def test_frame_reference_time_disagreeing_is_reported(tmp_path):
    """dcm2niix #521 style: FrameReferenceTime holds the frame start instead of its reference (mid) time."""
    def wrong(f, k, ds):
        ds.FrameReferenceTime = f"{(STARTS[f] - 3600.0) * 1000:.1f}"

    _write_series(tmp_path / "pet", overrides=wrong)
    pet = read_pet_dicom_series(tmp_path / "pet")
    np.testing.assert_allclose(pet.timing.start_s, STARTS, atol=1e-3)  # acquisition times win
    check = [w for w in pet.warnings if "Frame timing check" in w]
    assert check and "frame 3" in check[0]  # the longest frame differs most (about 300 s)


def test_two_series_of_one_acquisition_are_merged(tmp_path):
    folder = tmp_path / "pet"
    _write_series(folder, frames=(0, 1), series_uid="1.2.3.4.101")
    _write_series(folder / "part2", frames=(2,), series_uid="1.2.3.4.102", series_start_s=4200.0,
                  rng=np.random.default_rng(5))
    pet = read_pet_dicom_series(folder)
    np.testing.assert_allclose(pet.timing.start_s, STARTS, atol=1e-3)
    # Each part was decay corrected (START) to its own series time.
    np.testing.assert_allclose(pet.frames, _expected_frames(reference_s=np.array([3600.0, 3600.0, 4200.0])),
                               rtol=2e-6)


def test_unrelated_and_overlapping_series_are_refused(tmp_path):
    _write_series(tmp_path / "a" / "s1", series_uid="1.2.3.4.201")
    _write_series(tmp_path / "a" / "s2", series_uid="1.2.3.4.202", frame_uid="1.2.3.4.999")
    with pytest.raises(FileFormatError, match="2 PET series") as error:
        read_pet_dicom_series(tmp_path / "a")
    assert "1.2.3.4.201" in str(error.value) and "1.2.3.4.202" in str(error.value)
    pet = read_pet_dicom_series(tmp_path / "a", series_uid="1.2.3.4.202")
    assert len(pet) == 3
    _write_series(tmp_path / "b" / "s1", series_uid="1.2.3.4.301")
    _write_series(tmp_path / "b" / "s2", series_uid="1.2.3.4.302")  # a copy: same frames, same frame of reference
    with pytest.raises(FileFormatError, match="cannot be merged"):
        read_pet_dicom_series(tmp_path / "b")


def test_mixed_grids_are_refused(tmp_path):
    def move(f, k, ds):
        if f == 1:
            ds.ImagePositionPatient = list(ORIGIN_LPS + (k + 0.5) * SLICE_STEP * NORMAL)

    _write_series(tmp_path / "moved", overrides=move)
    with pytest.raises(GeometryError, match="Frame 2"):
        read_pet_dicom_series(tmp_path / "moved")

    def spacing(f, k, ds):
        if f == 2:
            ds.PixelSpacing = [3.0, 3.0]

    _write_series(tmp_path / "spacing", overrides=spacing)
    with pytest.raises(GeometryError, match="mixed grids"):
        read_pet_dicom_series(tmp_path / "spacing")
    paths = _write_series(tmp_path / "missing")
    sorted(paths)[0].unlink()
    with pytest.raises(FileFormatError, match="incomplete.*12 images .* but 11 were found; missing: frame"):
        read_pet_dicom_series(tmp_path / "missing")


def test_empty_corrupt_and_non_pet_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileFormatError, match="No files"):
        read_pet_dicom_series(tmp_path / "empty")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.bin").write_bytes(b"\x00" * 200 + b"not dicom")
    with pytest.raises(FileFormatError, match="No usable PET"):
        read_pet_dicom_series(junk)
    (junk / "a.dcm").write_bytes(b"\x00" * 200 + b"not dicom")  # named DICOM: damaged, refused by name
    with pytest.raises(FileFormatError, match="could not be read: a.dcm"):
        read_pet_dicom_series(junk)
    folder = tmp_path / "pet"
    _write_series(folder)
    (folder / "broken").write_bytes(b"garbage" * 10)  # no DICOM name, no DICM marker: not DICOM, skipped
    (folder / "README.txt").write_text("notes")

    def ct(f, k, ds):
        ds.Modality = "CT"

    _write_series(tmp_path / "ct", frames=(0,), overrides=ct, series_uid="1.2.3.4.500")
    for path in (tmp_path / "ct").iterdir():
        path.rename(folder / f"ct_{path.name}")
    pet = read_pet_dicom_series(folder)
    assert len(pet) == 3
    assert any("not DICOM" in w and "broken" in w and "README.txt" in w for w in pet.warnings)
    assert any("not PET images" in w and "CT" in w for w in pet.warnings)
    with pytest.raises(FileFormatError):
        read_pet_dicom_series(tmp_path / "nowhere")


def _sop_file(path, modality: str, sop_class: str) -> None:
    """A small DICOM object without pixels (e.g. a structured report) at ``path``."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = modality, "1.2.3.4.777", "1.2.3.4"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


@pytest.mark.parametrize(("removed", "words"), [
    ([(1, 2)], r"3 frames x 4 slices = 12 images \(NumberOfTimeSlices, NumberOfSlices\) but 11 were found; "
               r"missing: frame 2 slice\(s\) 3 \(ImageIndex 7\)\."),
    ([(0, 0), (0, 1), (2, 0), (2, 1), (2, 2), (2, 3)],
     r"3 frames x 4 slices = 12 images .* but 6 were found; missing: frame 1 slice\(s\) 1-2 \(ImageIndex 1-2\); "
     r"frame 3 \(all 4 slices, "
     r"ImageIndex 9-12\)\."),
])
def test_missing_images_are_named_by_frame_slice_and_image_index(tmp_path, removed, words):
    paths = _write_series(tmp_path / "pet")
    for frame, slice_ in removed:
        paths[frame * SLICES + slice_].unlink()
    with pytest.raises(FileFormatError, match=r"series 7 'Dynamic FDG' .* is incomplete: its headers announce " +
                       words):
        read_pet_dicom_series(tmp_path / "pet")


def test_missing_images_without_image_index_are_named_by_position(tmp_path):
    paths = _write_series(tmp_path / "slice", drop=("ImageIndex",))
    paths[1 * SLICES + 1].unlink()  # frame 2, second slice along the normal
    with pytest.raises(FileFormatError, match=r"12 images .* but 11 were found; missing: frame 2 slice\(s\) 2\."):
        read_pet_dicom_series(tmp_path / "slice")
    paths = _write_series(tmp_path / "frame", drop=("ImageIndex",))
    for path in paths[2 * SLICES:]:
        path.unlink()
    with pytest.raises(FileFormatError, match=r"missing: 1 whole frame\(s\) \(only 2 of 3 were found"):
        read_pet_dicom_series(tmp_path / "frame")

    def move(f, k, ds):
        if f == 1:
            ds.ImagePositionPatient = list(ORIGIN_LPS + (k + 0.5) * SLICE_STEP * NORMAL)

    _write_series(tmp_path / "moved", drop=("ImageIndex",), overrides=move)  # all there, frame 2 elsewhere
    with pytest.raises(GeometryError, match="Frame 2 covers other slice positions"):
        read_pet_dicom_series(tmp_path / "moved")
    paths = _write_series(tmp_path / "inner", frames=(0,), drop=("ImageIndex", "NumberOfSlices"))
    paths[2].unlink()  # an inner slice of a static series: a gap in the stack
    with pytest.raises(FileFormatError, match=r"missing: frame 1 slice\(s\) 3\."):
        read_pet_dicom_series(tmp_path / "inner")


@pytest.mark.parametrize("keep", [100, 140, 400, 700, -40])
def test_a_cut_file_of_the_series_is_refused_by_name(tmp_path, keep):
    paths = _write_series(tmp_path / "pet")
    victim = paths[1 * SLICES + 2]
    data = victim.read_bytes()
    victim.write_bytes(data[:keep])
    with pytest.raises(FileFormatError, match=victim.name) as refused:
        read_pet_dicom_series(tmp_path / "pet")
    assert "Traceback" not in str(refused.value) and "\n" not in str(refused.value)
    victim.rename(victim.with_suffix(""))  # no DICOM name: still refused when it carries the DICM marker
    if keep > 132:
        with pytest.raises(FileFormatError, match=victim.with_suffix("").name):
            read_pet_dicom_series(tmp_path / "pet")


def test_a_report_beside_the_series_is_still_skipped(tmp_path):
    _write_series(tmp_path / "pet")
    _sop_file(tmp_path / "pet" / "report.dcm", "SR", "1.2.840.10008.5.1.4.1.1.88.11")
    _sop_file(tmp_path / "pet" / "DICOMDIR", "", "1.2.840.10008.1.3.10")
    pet = read_pet_dicom_series(tmp_path / "pet")
    assert len(pet) == 3 and any("not PET images" in w and "report.dcm (SR)" in w for w in pet.warnings)


def test_more_frames_than_announced_is_a_note(tmp_path):
    def announce_two(f, k, ds):
        ds.NumberOfTimeSlices = 2

    _write_series(tmp_path / "pet", overrides=announce_two)
    pet = read_pet_dicom_series(tmp_path / "pet")
    assert len(pet) == 3 and any("holds 3 frames but its headers announce 2" in w for w in pet.warnings)


def test_real_pet_dicom_series_still_read():
    """Every PET DICOM series under ../shared/data (there is none in the current data set) still reads whole."""
    from scanai.core.paths import shared_data_dir

    data = shared_data_dir()
    if data is None:
        pytest.skip("../shared/data is absent")
    folders = sorted({path.parent for path in data.rglob("*.dcm") if _is_pet(path)})
    if not folders:
        pytest.skip(f"no PET DICOM (Modality PT) in {data}: only synthetic series are tested")
    for folder in folders:
        pet = read_pet_dicom_series(folder)
        assert pet.frames.size and np.all(np.isfinite(pet.frames)), folder


def _is_pet(path) -> bool:
    import pydicom

    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True).get("Modality", "")) == "PT"
    except Exception:  # noqa: BLE001 - any unreadable file is not a PET file for this scan
        return False


def test_overlapping_and_non_increasing_frames_are_refused(tmp_path):
    def overlap(f, k, ds):
        ds.ActualFrameDuration = 400_000 if f == 0 else ds.ActualFrameDuration

    _write_series(tmp_path / "overlap", overrides=overlap)
    with pytest.raises(InputError, match="overlaps"):
        read_pet_dicom_series(tmp_path / "overlap")

    def same_time(f, k, ds):
        if f == 1:
            ds.AcquisitionTime = _clock(INJECTION + dt.timedelta(seconds=3600))[1]
            ds.FrameReferenceTime = f"{float(decay_weighted_offset_s(300.0, F18)) * 1000:.3f}"

    _write_series(tmp_path / "same", overrides=same_time)
    with pytest.raises(InputError, match="not increasing"):
        read_pet_dicom_series(tmp_path / "same")
    with pytest.raises(InputError, match="not increasing"):
        FrameTiming.from_start_duration([0, 60, 60], [60, 60, 60])
    with pytest.raises(InputError, match="overlaps"):
        FrameTiming.from_start_duration([0, 60, 120], [90, 60, 60])


def test_read_dynamic_pet_dispatches_dicom(tmp_path):
    paths = _write_series(tmp_path / "pet")
    assert len(read_dynamic_pet(tmp_path / "pet")) == 3
    assert len(read_dynamic_pet(paths)) == 3
    assert len(read_dynamic_pet(paths[0])) == 3  # one file: its series from its folder


# ------------------------------------------------------------------------------------------------ BIDS
def _write_nifti(path, frames: np.ndarray, geometry: Geometry):
    import SimpleITK as sitk

    from scanai.core.image import Volume
    from scanai.io.sitk_image import to_sitk

    image = sitk.JoinSeries([to_sitk(Volume(frame, geometry)) for frame in frames])
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def nifti_pet(tmp_path, rng):
    frames = rng.uniform(0, 50, size=(4, 3, 5, 6)).astype(np.float32)
    geometry = Geometry((2.0, 2.5, 3.0), (10.0, -20.0, 5.0))
    path = _write_nifti(tmp_path / "sub-01_pet.nii.gz", frames, geometry)
    return path, frames, geometry


def _sidecar(path, **changes):
    data = {"TimeZero": "10:00:00", "InjectionStart": -10.0, "ScanStart": 0.0,
            "FrameTimesStart": [0, 30, 60, 120], "FrameDuration": [30, 30, 60, 60], "Units": "kBq/mL",
            "ImageDecayCorrected": True, "ImageDecayCorrectionTime": -10.0, "TracerRadionuclide": "F18",
            "InjectedRadioactivity": 185.0, "InjectedRadioactivityUnits": "MBq", "BodyWeight": 80.0,
            "BodyWeightUnits": "kg"}
    data.update(changes)
    path.write_text(json.dumps(data))
    return path


def test_bids_nifti_with_sidecar(nifti_pet):
    path, frames, geometry = nifti_pet
    _sidecar(path.with_name("sub-01_pet.json"))
    pet = read_dynamic_pet(path)
    np.testing.assert_allclose(pet.timing.start_s, [10, 40, 70, 130])  # s after injection = t - InjectionStart
    np.testing.assert_allclose(pet.timing.duration_s, [30, 30, 60, 60])
    np.testing.assert_allclose(pet.frames, frames, rtol=1e-6)
    assert pet.geometry.is_close(geometry)
    assert pet.unit == "kBq/mL" and pet.decay_corrected is True and pet.radionuclide == "F18"
    assert pet.injected_dose_bq == pytest.approx(185e6) and pet.patient_weight_kg == 80.0
    np.testing.assert_allclose(pet.to_suv().frames, frames * 1000 * 80_000 / 185e6, rtol=1e-5)


def test_bids_decay_reference_at_scan_start_is_moved_to_injection(nifti_pet, tmp_path):
    path, frames, _ = nifti_pet
    sidecar = _sidecar(tmp_path / "other.json", ImageDecayCorrectionTime=0.0)
    pet = read_dynamic_pet(path, sidecar=sidecar)
    np.testing.assert_allclose(pet.frames, frames * np.exp(LAM * 10.0), rtol=1e-6)
    assert pet.decay_corrected is True and any("re-referenced" in w for w in pet.warnings)


def test_bids_frame_count_mismatch_and_missing_timing(nifti_pet, tmp_path):
    path, _, _ = nifti_pet
    sidecar = _sidecar(tmp_path / "bad.json", FrameTimesStart=[0, 30, 60], FrameDuration=[30, 30, 60])
    with pytest.raises(InputError, match="3 frames .* image has 4 frames"):
        read_dynamic_pet(path, sidecar=sidecar)
    with pytest.raises(InputError, match="missing frame timing"):
        read_dynamic_pet(path)  # no sidecar next to it, no CSV
    overlap = _sidecar(tmp_path / "overlap.json", FrameDuration=[40, 30, 60, 60])
    with pytest.raises(InputError, match="overlaps"):
        read_dynamic_pet(path, sidecar=overlap)
    csv = FrameTiming.from_durations([30, 30, 60, 60], first_start_s=5).to_csv(tmp_path / "frames.csv")
    pet = read_dynamic_pet(path, frames_csv=csv)
    np.testing.assert_allclose(pet.timing.start_s, [5, 35, 65, 125])
    assert pet.unit == "" and pet.decay_corrected is None


def test_bids_round_trip(tmp_path, rng):
    timing = FrameTiming.from_start_duration([0, 10, 20, 40, 70], [10, 10, 20, 30, 60])
    sidecar = write_bids_sidecar(tmp_path / "x.json", timing, "Bq/ml", radionuclide="^11^Carbon",
                                 decay_corrected=True, injected_dose_bq=4e8, weight_kg=65.0, time_zero="08:15:00")
    meta = read_bids_sidecar(sidecar)
    again = timing_from_sidecar(meta, 5)
    np.testing.assert_allclose(again.start_s, timing.start_s)
    np.testing.assert_allclose(again.duration_s, timing.duration_s)
    assert meta["unit"] == "Bq/mL" and meta["radionuclide"] == "C11" and meta["half_life_s"] == 1221.66
    assert meta["decay_corrected"] is True and meta["injected_dose_bq"] == pytest.approx(4e8)
    assert meta["weight_kg"] == 65.0 and meta["time_zero"] == "08:15:00"
    frames = rng.uniform(0, 10, size=(5, 2, 3, 4)).astype(np.float32)
    geometry = Geometry((1.5, 1.5, 2.0), (1.0, 2.0, 3.0))
    pet = DynamicPet(VolumeSequence(frames, geometry), timing, "kBq/mL", True, "C11", 1221.66, 65.0, 4e8)
    for name in ("study.nii.gz", "study.seq.nrrd"):
        image, side = write_dynamic_pet(pet, tmp_path / name)
        assert side.name == "study.json"
        back = read_dynamic_pet(image)
        np.testing.assert_allclose(back.frames, frames)
        np.testing.assert_allclose(back.timing.start_s, timing.start_s)
        assert back.geometry.is_close(geometry) and back.unit == "kBq/mL" and back.decay_corrected is True
        assert back.suv_factor() == pytest.approx(pet.suv_factor())
        side.unlink()
    back = read_dynamic_pet(tmp_path / "study.seq.nrrd")  # no sidecar: index values are the mid-times
    np.testing.assert_allclose(back.timing.start_s, timing.start_s, atol=1e-9)
    assert any("index values" in w for w in back.warnings)


# ----------------------------------------------------------------------------------------------- units
def test_half_life_names():
    for name in ("F18", "^18^F", "18F", "Fluorine-18", "^18^Fluorine", "F-18", "18F-FDG"):
        assert half_life_s(name) == 6586.2
    assert half_life_s("[11C]raclopride") == 1221.66
    assert half_life_s("O-15") == 122.24 and half_life_s("Rb82") == 75.45 and half_life_s("Zr-89") == 282276
    assert half_life_s(100.0) == 100.0 and half_life_s("6586.2") == 6586.2
    with pytest.raises(InputError, match="not known"):
        half_life_s("Tc-99m")


def test_unit_normalisation_and_compatibility():
    table = {"BQML": "Bq/mL", "Bq/ml": "Bq/mL", "kBq/cc": "kBq/mL", "MBq/mL": "MBq/mL", "nCi/cc": "nCi/mL",
             "µCi/mL": "uCi/mL", "GML": "SUV", "SUVbw": "SUV", "CNTS": "", "": "", "furlongs": ""}
    for text, unit in table.items():
        assert normalise_unit(text) == unit, text
    assert check_compatible_units("Bq/mL", "kBq/mL") == 1000.0
    assert check_compatible_units("kBq/mL", "Bq/mL") == pytest.approx(1e-3)
    assert check_compatible_units("Bq/mL", "uCi/mL") == pytest.approx(37000.0)
    assert check_compatible_units("SUV", "SUV") == 1.0
    assert check_compatible_units("", "kBq/mL") == 1.0 and check_compatible_units("CNTS", "SUV") == 1.0
    for frames, plasma in (("SUV", "Bq/mL"), ("BQML", "SUVbw")):
        with pytest.raises(InputError) as error:
            check_compatible_units(frames, plasma)
        message = str(error.value)
        assert "SUV" in message and "Bq/mL" in message and "weight" in message and "dose" in message


def test_frame_decay_factors_against_numerical_integral():
    timing = FrameTiming.from_start_duration([0, 30, 600, 3000], [30, 90, 300, 1200])
    for half_life in (F18, 122.24):
        lam = math.log(2) / half_life
        factors = frame_decay_factors(timing, half_life)
        for start, duration, factor in zip(timing.start_s, timing.duration_s, factors, strict=True):
            t = np.linspace(start, start + duration, 20001)
            mean = np.trapezoid(np.exp(-lam * t), t) / duration
            assert factor == pytest.approx(1.0 / mean, rel=1e-8)
        # A constant true concentration measured without decay correction comes back constant.
        measured = 5.0 / factors
        np.testing.assert_allclose(decay_correct_frames(measured[:, None], timing, half_life)[:, 0], 5.0)
    frames = np.ones((4, 2, 2), dtype=np.float32)
    shifted = shift_decay_reference(frames, timing, F18, 3600.0)
    np.testing.assert_allclose(shifted, 2.0 ** (3600 / F18), rtol=1e-6)
    assert shifted.dtype == np.float32 and frames.max() == 1.0  # input untouched


def test_decay_correct_input_round_trip():
    t = np.linspace(0, 3600, 61)
    curve = InputFunction(t, feng_input(t), "uCi/mL")
    corrected = decay_correct_input(curve, "F18")
    np.testing.assert_allclose(corrected.activity, curve.activity * 2.0 ** (t / F18))
    back = decay_uncorrect_input(corrected, F18)
    np.testing.assert_allclose(back.activity, curve.activity, rtol=1e-12, atol=1e-12)
    assert back.unit == "uCi/mL"


def test_suv_factor_and_errors():
    assert suv_factor(70, 370e6) == pytest.approx(70_000 / 370e6)
    # Dose measured 10 min before the injection: at the injection only e^(-600 lambda) of it is left.
    assert suv_factor(70, 370e6, -600, "F18") == pytest.approx(70_000 / (370e6 * math.exp(-LAM * 600)))
    with pytest.raises(InputError, match="weight"):
        suv_factor(None, 370e6)
    with pytest.raises(InputError, match="half-life"):
        suv_factor(70, 370e6, 600)
    with pytest.raises(InputError, match="MBq"):
        suv_factor(70, 370)
