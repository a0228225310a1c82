"""Damaged cine, sequence and contour files end in a ScanAIError that names the file or in the right data (seeded:
about 40 truncations and flipped bits per reader), never in another exception.

Where the format carries no checksum (DICOM pixels and header values, raw NRRD voxels, the text of an NRRD header,
contour text) a flipped bit can change values unnoticed: a flip inside uncompressed pixels changes one pixel; a
compressed NRRD or MetaImage must give its exact voxels or an error (scanai.io.compressed_check checks the stream).
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from damage import PIXEL_DATA_TAG, damaged_copies, run_cases

from scanai.core.errors import FileFormatError, ScanAIError
from scanai.core.image import Geometry, VolumeSequence
from scanai.io.cine import read_cine
from scanai.io.contours import read_contour_points
from scanai.io.sequence_file import write_sequence

SEED = 20261209
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def write_mr(path: Path, pixels: np.ndarray, **attributes) -> Path:
    """A small uncompressed MR DICOM file: (rows, cols) or multi-frame (frames, rows, cols) uint16 pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID, meta.MediaStorageSOPClassUID = ExplicitVRLittleEndian, MR_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID, dataset.Modality = MR_STORAGE, meta.MediaStorageSOPInstanceUID, "MR"
    dataset.Rows, dataset.Columns = pixels.shape[-2:]
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 0
    if pixels.ndim == 3:
        dataset.NumberOfFrames = pixels.shape[0]
    dataset.PixelData = pixels.astype("<u2").tobytes()
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    dataset.save_as(path, enforce_file_format=True)
    return path


def cine_folder(folder: Path, rng: np.random.Generator) -> Path:
    """2 slice locations x 3 phases of 6 x 8 pixels, CardiacNumberOfImages 3."""
    folder.mkdir()
    number = 0
    for location in range(2):
        for phase in range(3):
            number += 1
            write_mr(folder / f"{number}.dcm", rng.integers(0, 1000, (6, 8)),
                     ImagePositionPatient=[0, 0, 8.0 * location], ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
                     PixelSpacing=[1.5, 1.5], SliceThickness=8, TriggerTime=40.0 * phase, InstanceNumber=number,
                     SeriesInstanceUID="1.2.3.4", CardiacNumberOfImages=3)
    return folder


def frames_of(path: Path) -> np.ndarray:
    return read_cine(path).frames


def frames_by_position(path: Path) -> np.ndarray:
    """The frames of a cine with its slices ordered by position along the patient axis (RAS z), so that a stack
    read in the other direction, with the geometry saying so, compares equal."""
    sequence = read_cine(path)
    z = [sequence.geometry.ras_of_ijk(np.array([0.0, 0.0, float(k)]))[2] for k in range(sequence.frames.shape[1])]
    return sequence.frames[:, np.argsort(z)]


# ------------------------------------------------------------------------------------------ DICOM cine


def test_damaged_image_in_a_dicom_cine_folder(tmp_path):
    """40 cases: one image of a 2-slice, 3-phase folder cut (20), bit-flipped anywhere (10) or in its header (10).
    A cut image is never skipped (the cine would silently lose a phase); a flipped series UID or position makes a
    folder that does not stack, which is said as such."""
    rng = np.random.default_rng(SEED)
    source = cine_folder(tmp_path / "source", rng)
    reference = frames_by_position(source)
    victim = source / "4.dcm"
    data = victim.read_bytes()
    count = iter(range(100))

    def write(content: bytes) -> Path:
        folder = Path(shutil.copytree(source, tmp_path / f"case{next(count)}"))
        (folder / victim.name).write_bytes(content)
        return folder

    copies = damaged_copies(data, rng, 20, 10) + damaged_copies(data, rng, 0, 10, (128, data.find(PIXEL_DATA_TAG)))
    outcomes = run_cases(copies, write, frames_by_position, reference, 1, (victim.name, "slice location"))
    assert outcomes["cut error"] == 20 and outcomes["bit error"] >= 1, outcomes


def test_damaged_multiframe_dicom_cine(tmp_path):
    """40 cases on a 4-frame uncompressed cine: 20 cuts, 10 flips anywhere, 10 in the header."""
    rng = np.random.default_rng(SEED + 1)
    path = write_mr(tmp_path / "cine.dcm", rng.integers(0, 1000, (4, 6, 8)), FrameTime=40.0, PixelSpacing=[1.0, 1.0])
    reference, data = frames_of(path), path.read_bytes()
    damaged = tmp_path / "damaged.dcm"

    def write(content: bytes) -> Path:
        damaged.write_bytes(content)
        return damaged

    copies = damaged_copies(data, rng, 20, 10) + damaged_copies(data, rng, 0, 10, (128, data.find(PIXEL_DATA_TAG)))
    outcomes = run_cases(copies, write, frames_of, reference, None, (damaged.name,))
    assert outcomes["cut error"] == 20, outcomes


def test_damaged_compressed_echo_cine(tmp_path):
    """40 cases on pydicom's JPEG echo cine (30 colour frames): 20 cuts (all refused), 20 flips (JPEG: no checksum)."""
    try:
        from pydicom import examples

        source = Path(examples.get_path("ybr_color"))
    except (ImportError, AttributeError, ValueError) as error:  # pydicom < 3 has no examples module
        pytest.skip(f"pydicom's example echo cine is not available ({error})")
    reference, data = frames_of(source), source.read_bytes()
    damaged = tmp_path / "echo.dcm"

    def write(content: bytes) -> Path:
        damaged.write_bytes(content)
        return damaged

    outcomes = run_cases(damaged_copies(data, np.random.default_rng(SEED + 2), 20, 20), write, frames_of, reference,
                         None, (damaged.name,))
    assert outcomes["cut error"] == 20, outcomes


# ------------------------------------------------------------------------------------------ sequence files


def _sequence(rng: np.random.Generator) -> VolumeSequence:
    frames = rng.uniform(0, 100, (3, 2, 6, 5)).astype(np.float32)
    return VolumeSequence(frames, Geometry((1.0, 1.0, 2.0), (0.0, 0.0, 0.0), tuple(map(tuple, np.eye(3)))),
                          (0.0, 0.1, 0.25), "time", "s")


@pytest.mark.parametrize("name", ["cine.seq.nrrd", "cine.mha"])
def test_damaged_compressed_sequence_files(tmp_path, name):
    """40 cases each: 20 cuts, 20 flips of a gzip Slicer sequence NRRD / a compressed MetaImage; the voxels come
    back exact or the file is refused (SimpleITK alone reads some flipped streams as other voxels)."""
    rng = np.random.default_rng(SEED + 3)
    path = write_sequence(_sequence(rng), tmp_path / name)
    reference, data = frames_of(path), path.read_bytes()
    damaged = tmp_path / f"damaged{name[4:]}"

    def write(content: bytes) -> Path:
        damaged.write_bytes(content)
        return damaged

    outcomes = run_cases(damaged_copies(data, rng, 20, 20), write, frames_of, reference, 0, (damaged.name,))
    assert outcomes["cut error"] == 20 and outcomes["bit error"] >= 10, outcomes


def test_damaged_files_say_what_is_wrong(tmp_path):
    """A cut or flipped compressed stream is named incomplete or damaged; a cut NRRD header is named incomplete."""
    path = write_sequence(_sequence(np.random.default_rng(SEED + 4)), tmp_path / "cine.seq.nrrd")
    data = path.read_bytes()
    header_end = data.find(b"\n\n") + 2
    path.write_bytes(data[:header_end + (len(data) - header_end) // 2])
    with pytest.raises(FileFormatError, match="cine.seq.nrrd is incomplete: its compressed voxel data end before"):
        read_cine(path)
    path.write_bytes(data[:header_end // 2])
    with pytest.raises(FileFormatError, match="cine.seq.nrrd is incomplete: it ends inside its NRRD header"):
        read_cine(path)
    flipped = bytearray(data)
    flipped[header_end + 40] ^= 0x10
    path.write_bytes(bytes(flipped))
    with pytest.raises(FileFormatError, match="cine.seq.nrrd is damaged: its compressed voxel data fail their check"):
        read_cine(path)


# ------------------------------------------------------------------------------------------ contours


def test_damaged_contour_files(tmp_path):
    """40 cases on a contour text file: 20 cuts (refused unless cut right after a line end: a shorter contour, as
    text carries no length), 20 flips (refused, or one coordinate changed)."""
    rng = np.random.default_rng(SEED + 5)
    points = np.round(rng.uniform(90, 160, (40, 2)), 2)
    text = "".join(f"{x:.2f} {y:.2f}\n" for x, y in points).encode()
    path = tmp_path / "IM-0001-0048-icontour-manual.txt"
    path.write_bytes(text)
    np.testing.assert_array_equal(read_contour_points(path), points)
    outcomes: Counter = Counter()
    for label, content in damaged_copies(text, rng, 20, 20):
        path.write_bytes(content)
        try:
            read = read_contour_points(path)
        except ScanAIError as error:
            assert path.name in str(error), f"{label}: {error}"
            outcomes[f"{label.split()[0]} error"] += 1
            continue
        if label.startswith("cut"):
            assert content.endswith(b"\n"), f"{label}: a contour cut inside a line was read"
            np.testing.assert_array_equal(read, points[:len(read)])
            outcomes["cut at a line end"] += 1
        else:
            assert read.shape == points.shape and np.count_nonzero(read != points) <= 1, label
            outcomes["bit changed"] += 1
    assert outcomes["cut error"] >= 15 and outcomes["bit error"] >= 5, outcomes
    path.write_bytes(text[:-5])
    with pytest.raises(FileFormatError, match="is incomplete: it ends in the middle of line 40"):
        read_contour_points(path)
