"""Damaged radiograph files: a cut DICOM says it is incomplete (not "a report"), and seeded random damage (about
40 truncations and flipped bits per reader) ends in a ScanAIError that names the file or in the right image.

DICOM, JPEG and raw pixel data carry no checksum, so a bit flipped inside them (or in a header value such as the
pixel representation) can change the pixels without any reader noticing: such cases must still give an image of
the right size with finite values, and a flip inside uncompressed DICOM pixels changes one pixel only. PNG carries
CRCs, so a flipped bit there gives an error or the same image.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from damage import PIXEL_DATA_TAG, damaged_copies, run_cases

from scanai.chest.io import read_radiograph
from scanai.core.errors import FileFormatError

REAL_DICOM = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
SEED = 20261208
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def write_dx(path: Path, pixels: np.ndarray | None, sop_class: str = DX_STORAGE) -> Path:
    """A small uncompressed DX radiograph (16-bit, 12 bits stored, MONOCHROME2), or a non-image object."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID, meta.MediaStorageSOPClassUID = ExplicitVRLittleEndian, sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    dataset.Modality, dataset.PatientName, dataset.ViewPosition = "DX", "Test^Damaged", "PA"
    if pixels is not None:
        dataset.Rows, dataset.Columns = pixels.shape
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 12, 11, 0
        dataset.ImagerPixelSpacing = [0.2, 0.2]
        dataset.PixelData = pixels.astype("<u2").tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


def run_radiograph_cases(copies: list[tuple[str, bytes]], path: Path, reference: np.ndarray,
                         changed_pixels: int | None) -> Counter:
    """:func:`damage.run_cases` for the radiograph reader: each copy written to ``path`` and read; an error must
    name the file."""
    def write(content: bytes) -> Path:
        path.write_bytes(content)
        return path

    return run_cases(copies, write, lambda target: read_radiograph(target).image.array, reference, changed_pixels,
                     (path.name,))


# ------------------------------------------------------------------------------------- 1a: the message


@pytest.mark.parametrize("fraction", [0.003, 0.005, 0.008, 0.05, 0.3, 0.6, 0.99])
def test_a_cut_real_dicom_radiograph_is_incomplete_not_a_report(shared_data, tmp_path, fraction):
    data = (shared_data / "chest" / REAL_DICOM).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(FileFormatError, match=r"cut.dcm is incomplete: .*cut off while copying") as error:
        read_radiograph(cut)
    assert "report" not in str(error.value)


def test_a_cut_generated_radiograph_names_what_is_missing(tmp_path):
    pixels = np.random.default_rng(SEED).integers(0, 4096, (40, 48))
    data = write_dx(tmp_path / "dx.dcm", pixels).read_bytes()
    start = data.find(PIXEL_DATA_TAG) + 12  # the pixel values, after the tag, VR, reserved bytes and length
    for end in (200, 300, len(data) - pixels.size * 2 - 20, start + 100, len(data) - 1):
        cut = tmp_path / f"cut{end}.dcm"
        cut.write_bytes(data[:end])
        with pytest.raises(FileFormatError, match=rf"cut{end}.dcm is incomplete: .*cut off while copying") as error:
            read_radiograph(cut)
        assert "report" not in str(error.value)
    cut = tmp_path / "pixels.dcm"
    cut.write_bytes(data[:start + 100])
    with pytest.raises(FileFormatError, match=r"its pixel data hold 100 of the 3840 bytes its header announces"):
        read_radiograph(cut)
    cut.write_bytes(data[:data.find(PIXEL_DATA_TAG)])  # cut exactly before the pixel data element
    with pytest.raises(FileFormatError, match=r"no image \(pixel data\) although its header describes a 40 x 48 image"):
        read_radiograph(cut)


def test_a_dicom_report_is_still_named_a_report(tmp_path):
    report = write_dx(tmp_path / "report.dcm", None, BASIC_TEXT_SR)
    with pytest.raises(FileFormatError, match=r"no image \(pixel data\): report.dcm is a Basic Text SR .*not a report"):
        read_radiograph(report)


# ------------------------------------------------------------------------------------- 3: random damage


def test_damaged_real_dicom_radiograph(shared_data, tmp_path):
    """40 cases on the real (JPEG-compressed) radiograph: 20 cuts, 10 flips anywhere, 10 in the header."""
    source = shared_data / "chest" / REAL_DICOM
    data = source.read_bytes()
    reference = read_radiograph(source).image.array
    rng = np.random.default_rng(SEED)
    header_end = data.find(PIXEL_DATA_TAG)
    copies = damaged_copies(data, rng, 20, 10) + damaged_copies(data, rng, 0, 10, (0, header_end))
    outcomes = run_radiograph_cases(copies, tmp_path / "damaged.dcm", reference, None)
    assert outcomes["cut error"] == 20, outcomes


def test_damaged_generated_dicom_radiograph(tmp_path):
    """40 cases on an uncompressed DX: 20 cuts, 10 flips anywhere (mostly pixels: one pixel changes), 10 in the
    header (a valid but wrong value, e.g. the pixel representation, changes pixels unnoticed)."""
    rng = np.random.default_rng(SEED + 1)
    data = write_dx(tmp_path / "dx.dcm", rng.integers(0, 4096, (40, 48))).read_bytes()
    reference = read_radiograph(tmp_path / "dx.dcm").image.array
    header_end = data.find(PIXEL_DATA_TAG)
    damaged = tmp_path / "damaged.dcm"
    outcomes = run_radiograph_cases(damaged_copies(data, rng, 20, 10, (header_end + 12, len(data))), damaged,
                                    reference, 1)
    outcomes += run_radiograph_cases(damaged_copies(data, rng, 0, 10, (0, header_end)), damaged, reference, None)
    assert outcomes["cut error"] == 20, outcomes


def test_damaged_png_radiograph(shared_data, tmp_path):
    """40 cases on a real PNG radiograph: 20 cuts, 20 flips; PNG's CRCs refuse flips in the image (a flip in an
    ancillary chunk may be ignored, giving the same image)."""
    source = shared_data / "chest" / "00000001_000.png"
    data = source.read_bytes()
    reference = read_radiograph(source).image.array
    outcomes = run_radiograph_cases(damaged_copies(data, np.random.default_rng(SEED + 2), 20, 20),
                                    tmp_path / "damaged.png", reference, 0)
    assert outcomes["cut error"] == 20 and outcomes["bit error"] >= 15, outcomes


def test_damaged_jpeg_radiograph(shared_data, tmp_path):
    """40 cases on a JPEG written from a real radiograph: 20 cuts (all refused: no end-of-image marker), 20 flips
    (JPEG has no checksum: the picture may change, but keeps its size)."""
    import SimpleITK as sitk

    whole = tmp_path / "whole.jpg"
    sitk.WriteImage(sitk.ReadImage(str(shared_data / "chest" / "00027426_000.png")), str(whole))
    reference = read_radiograph(whole).image.array
    outcomes = run_radiograph_cases(damaged_copies(whole.read_bytes(), np.random.default_rng(SEED + 3), 20, 20),
                                    tmp_path / "damaged.jpg", reference, None)
    assert outcomes["cut error"] == 20, outcomes
