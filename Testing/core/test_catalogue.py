"""The damaged-input catalogue of the README's *Reliability* section: every ``scanai`` command run on broken,
missing, wrong or surprising input, as a new user would meet it.

Every case must end in either a clear one-line error (exit status 2, the line starting ``scanai COMMAND:`` and
saying what was seen) or a correct result (exit 0); never a traceback. In both cases the inputs are unchanged
(checksums), nothing is left beside the output folder, and an error leaves nothing in it (an earlier run's folder
stays as it was). The README lists each case's description; a test keeps the two the same.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from scanai import cli
from scanai.core.paths import shared_data_dir

README = Path(__file__).resolve().parents[2] / "README.md"


@dataclass(frozen=True)
class Case:
    """One catalogue entry: ``build(inputs, originals)`` writes the case's input files into ``inputs`` (from the
    valid ``originals``) and returns the command's arguments (``--out`` is added unless given); ``says``: a
    regular expression the error line (for a result: the printed output, e.g. a warning) must match; ``result``:
    the case must give a result, with exit status ``status`` (1: a folder of radiographs with an unreadable one,
    reported)."""

    command: str
    description: str
    build: Callable[[Path, dict[str, Path]], list[str]]
    says: str = ""
    result: bool = False
    status: int = 0


def _copy(originals: dict[str, Path], key: str, inputs: Path, name: str | None = None) -> Path:
    return Path(shutil.copy(originals[key], inputs / (name or originals[key].name)))


def _cut(path: Path, fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    return path


def _text(path: Path) -> Path:
    path.write_text("patient list\nname,date\nDoe,2026-01-01\n")
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _earlier_results(inputs: Path) -> Path:
    out = inputs.parent / "results"
    out.mkdir()
    (out / "report.csv").write_text("an earlier run's results\n")
    return out


def _file_in_the_way(inputs: Path) -> Path:
    out = inputs.parent / "results"
    out.write_text("a file where the output folder should go\n")
    return out


# ------------------------------------------------------------------------------------------- valid originals


@pytest.fixture(scope="session")
def originals(tmp_path_factory) -> dict[str, Path]:
    """Valid inputs of every command (the modules' sample data, a simulated phase sequence), written once."""
    from scanai.artifact_correction.simulator import simulate_phase_sequence
    from scanai.core.image import VolumeSequence
    from scanai.io.sequence_file import write_sequence
    from scanai.io.sitk_image import write_image
    from scanai.samples import write_sample

    folder = tmp_path_factory.mktemp("originals")
    motion_cine, motion_labels = write_sample("MotionCorrection", folder)
    pet_image, pet_schema, pet_blood = write_sample("ParametricPET", folder)
    kspace, _kspace_image = write_sample("KSpaceCalibration", folder)
    (chest,) = write_sample("ChestQC", folder)
    sequence, _r_peaks, _truth = simulate_phase_sequence(np.random.default_rng(1), [62.0, 68.0, 74.0, 80.0],
                                                         slices=1)
    phases = VolumeSequence(np.rint(sequence.frames).astype(np.int16), sequence.geometry, sequence.index_values,
                            sequence.index_name, sequence.index_unit)
    phase_paths = [write_image(phases.frame(i), folder / f"phase{i + 1}.nrrd") for i in range(len(phases))]
    chest_png = folder / "chest.png"
    _write_png(chest, chest_png)
    return {"cine": motion_cine, "labels": motion_labels, "pet": pet_image, "pet_schema": pet_schema,
            "blood": pet_blood, "kspace": kspace, "chest": chest, "chest_png": chest_png,
            "phases": write_sequence(phases, folder / "phases.seq.nrrd"),
            **{f"phase{i + 1}": path for i, path in enumerate(phase_paths)}}


def _write_png(volume_path: Path, png: Path) -> None:
    from PIL import Image

    from scanai.io.sitk_image import read_image

    pixels = read_image(volume_path).array[0].astype(np.float64)
    scaled = np.clip((pixels - pixels.min()) / np.ptp(pixels) * 255.0, 0, 255).astype(np.uint8)
    Image.fromarray(scaled).save(png)


def _rewrite_volume(path: Path, change: Callable[[np.ndarray], np.ndarray]) -> Path:
    from dataclasses import replace

    from scanai.io.sitk_image import read_image, write_image

    volume = read_image(path)
    return write_image(replace(volume, array=change(volume.array.astype(np.float32))), path)


def _rewrite_sequence(path: Path, change: Callable[[np.ndarray], np.ndarray]) -> Path:
    from dataclasses import replace

    from scanai.io.sequence_file import read_sequence, write_sequence

    sequence = read_sequence(path)
    frames = change(sequence.frames.astype(np.float32))
    index = sequence.index_values[:len(frames)]
    return write_sequence(replace(sequence, frames=frames, index_values=index), path)


def _shifted(path: Path, shift_mm: float = 10.0) -> Path:
    """The same image 10 mm further along x: another grid."""
    from dataclasses import replace

    from scanai.io.sitk_image import read_image, write_image

    volume = read_image(path)
    origin = np.asarray(volume.geometry.origin_mm) + np.array([shift_mm, 0.0, 0.0])
    return write_image(replace(volume, geometry=replace(volume.geometry, origin_mm=tuple(origin))), path)


def _with_nan(frames: np.ndarray) -> np.ndarray:
    frames = frames.copy()
    frames.reshape(-1)[frames.size // 3: frames.size // 3 + 7] = np.nan
    return frames


def _one_zero_phase(frames: np.ndarray) -> np.ndarray:
    frames = frames.copy()
    frames[1] = 0.0
    return frames


def _npz(inputs: Path, name: str, array: np.ndarray) -> Path:
    path = inputs / name
    np.savez(path, kspace=array)
    return path


def _kspace_array(originals: dict[str, Path]) -> np.ndarray:
    with np.load(originals["kspace"]) as stored:
        return np.array(stored["kspace"])


def _dicom_radiograph(path: Path, report: bool = False) -> Path:
    """A small CR DICOM radiograph (or, with ``report``, a Basic Text SR without pixels) written with pydicom."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11" if report else "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "SR" if report else "CR"
    dataset.PatientID = "CATALOGUE"
    if not report:
        pixels = (np.random.default_rng(0).random((256, 256)) * 4000).astype(np.uint16)
        dataset.Rows, dataset.Columns = pixels.shape
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
        dataset.SamplesPerPixel, dataset.PixelRepresentation = 1, 0
        dataset.PhotometricInterpretation = "MONOCHROME2"
        dataset.PixelSpacing = [0.7, 0.7]
        dataset.PixelData = pixels.tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------------------------------- cases

MOTION = [
    Case("motion", "input file missing", lambda i, o: [str(i / "cine.seq.nrrd")], r"not found|does not exist|no such"),
    Case("motion", "empty (0-byte) cine file", lambda i, o: [str(_empty(_copy(o, "cine", i)))], r"empty|read"),
    Case("motion", "cine file cut in half", lambda i, o: [str(_cut(_copy(o, "cine", i)))],
         r"incomplete|truncated|cut|read"),
    Case("motion", "a text file named .seq.nrrd", lambda i, o: [str(_text(i / "cine.seq.nrrd"))], r"not|read"),
    Case("motion", "an empty folder as input", lambda i, o: [str(i)], r"no |empty|not"),
    Case("motion", "NaN voxels in one frame",
         lambda i, o: [str(_rewrite_sequence(_copy(o, "cine", i), _with_nan))], r"NaN|non-finite|not finite"),
    Case("motion", "a cine of one frame",
         lambda i, o: [str(_rewrite_sequence(_copy(o, "cine", i), lambda f: f[:1]))],
         r"frame|not an image sequence"),
    Case("motion", "a real DICOM cine with one file cut", lambda i, o: _real_cine(i, "cut"),
         r"\.dcm.*(cut|incomplete|unreadable|could not)|could not.*\.dcm"),
    Case("motion", "a real DICOM cine with one phase file missing", lambda i, o: _real_cine(i, "missing"),
         r"19 .*20|20 .*19|missing"),
    Case("motion", "--labels on another grid",
         lambda i, o: [str(_copy(o, "cine", i)), "--labels", str(_shifted(_copy(o, "labels", i, "labels.nrrd"))),
                       "--labels-frame", "1"],
         r"origin is [\d.]+ mm away.*cine's grid is"),
    Case("motion", "--labels file cut in half",
         lambda i, o: [str(_copy(o, "cine", i)), "--labels", str(_cut(_copy(o, "labels", i))), "--labels-frame", "1"],
         r"incomplete|truncated|cut|read"),
    Case("motion", "--labels without saying the frame it was drawn on",
         lambda i, o: [str(_copy(o, "cine", i)), "--labels", str(_copy(o, "labels", i))], r"--labels-frame"),
    Case("motion", "--reference 0 (frames are numbered from 1)",
         lambda i, o: [str(_copy(o, "cine", i)), "--reference", "0"], r"numbered 1 to"),
    Case("motion", "--slice beyond the stack", lambda i, o: [str(_copy(o, "cine", i)), "--slice", "5"], r"slice"),
    Case("motion", "--reference beyond the last frame",
         lambda i, o: [str(_copy(o, "cine", i)), "--reference", "40"], r"reference|frame"),
    Case("motion", "--out is a file", lambda i, o: [str(_copy(o, "cine", i)), "--out", str(_file_in_the_way(i))],
         r"is a file"),
    Case("motion", "--out holds an earlier run's results",
         lambda i, o: [str(_copy(o, "cine", i)), "--out", str(_earlier_results(i))], r"already holds"),
    Case("motion", "--overwrite over an earlier run (classical demons)",
         lambda i, o: [str(_copy(o, "cine", i)), "--method", "demons", "--out", str(_earlier_results(i)),
                       "--overwrite"], result=True),
]

MOTION_CORRECT = [
    Case("motion-correct", "input file missing", lambda i, o: _phases(i, o, sequence=i / "phases.seq.nrrd"),
         r"not found|does not exist|no such"),
    Case("motion-correct", "empty (0-byte) phase sequence",
         lambda i, o: _phases(i, o, sequence=_empty(_copy(o, "phases", i))), r"empty|read"),
    Case("motion-correct", "phase sequence cut in half",
         lambda i, o: _phases(i, o, sequence=_cut(_copy(o, "phases", i))), r"incomplete|truncated|cut|read"),
    Case("motion-correct", "an all-zero phase volume",
         lambda i, o: _phases(i, o, sequence=_rewrite_sequence(_copy(o, "phases", i), _one_zero_phase)),
         r"phase 2.*(zero|constant)"),
    Case("motion-correct", "NaN voxels in a phase volume",
         lambda i, o: _phases(i, o, sequence=_rewrite_sequence(_copy(o, "phases", i), _with_nan)),
         r"NaN|non-finite|not finite"),
    Case("motion-correct", "phase volumes on different grids",
         lambda i, o: [str(_copy(o, "phase1", i)), str(_shifted(_copy(o, "phase2", i))), "--phases", "62,68",
                       "--rr", "1", "--window", "0.15"], r"origin"),
    Case("motion-correct", "--phases count differs from the files",
         lambda i, o: [str(_copy(o, "phase1", i)), str(_copy(o, "phase2", i)), "--phases", "62"],
         r"2 phase volumes.*1 phase"),
    Case("motion-correct", "--ecg table that is not a table",
         lambda i, o: _phases(i, o, "--ecg", str(_empty(i / "ecg.csv"))), r"ecg|table|empty"),
    Case("motion-correct", "--roi on another grid",
         lambda i, o: _phases(i, o, "--roi", str(_shifted(_copy(o, "phase1", i, "roi.nrrd")))), r"origin"),
    Case("motion-correct", "--window negative",
         lambda i, o: [str(_copy(o, "phases", i)), "--rr", "1", "--window", "-0.1"], r"window"),
    Case("motion-correct", "--count larger than the phases",
         lambda i, o: _phases(i, o, "--method", "mean", "--count", "9"), r"count|phase"),
    Case("motion-correct", "--out is a file", lambda i, o: _phases(i, o, "--out", str(_file_in_the_way(i))),
         r"is a file"),
    Case("motion-correct", "--out holds an earlier run's results",
         lambda i, o: _phases(i, o, "--out", str(_earlier_results(i))), r"already holds"),
    Case("motion-correct", "--overwrite over an earlier run (mean of phases)",
         lambda i, o: _phases(i, o, "--method", "mean", "--out", str(_earlier_results(i)), "--overwrite"),
         result=True),
    Case("motion-correct", "a phase-indexed sequence without --window or --rr (mean of phases)",
         lambda i, o: [str(_copy(o, "phases", i)), "--method", "mean"], r"corrected:", result=True),
]


def _phases(i: Path, o: dict[str, Path], *extra: str, sequence: Path | None = None) -> list[str]:
    """motion-correct's arguments: the phase sequence (by default the valid one) at 1 s R-R, 0.15 s windows."""
    return [str(sequence or _copy(o, "phases", i)), "--rr", "1", "--window", "0.15", *extra]


def _pet(i: Path, o: dict[str, Path], *extra: str, image: Path | None = None, blood: Path | None = None) -> list[str]:
    if blood is None:
        _copy(o, "pet_schema", i)
        blood = _copy(o, "blood", i)
    return [str(image or _copy(o, "pet", i)), "--input-function", str(blood), *extra]


def _scaled_blood(i: Path, o: dict[str, Path], factor: float) -> Path:
    """The sample's blood table with every activity multiplied by ``factor`` and no unit (no schema file)."""
    lines = o["blood"].read_text().splitlines()
    rows = [f"{t},{float(a) * factor:.8g}" for t, a in (line.split(",") for line in lines[1:])]
    return _blood_text(i, "\n".join([lines[0], *rows]) + "\n")


def _blood_text(i: Path, text: str) -> Path:
    path = i / "blood.csv"
    path.write_text(text)
    return path


PET = [
    Case("pet", "image file missing", lambda i, o: _pet(i, o, image=i / "pet.nii.gz"),
         r"not found|does not exist|no such"),
    Case("pet", "empty (0-byte) image", lambda i, o: _pet(i, o, image=_empty(_copy(o, "pet", i))), r"empty|read"),
    Case("pet", "image cut in half", lambda i, o: _pet(i, o, image=_cut(_copy(o, "pet", i))),
         r"incomplete|truncated|cut|read"),
    Case("pet", "a text file named .nii.gz", lambda i, o: _pet(i, o, image=_text(i / "pet.nii.gz")), r"not|read"),
    Case("pet", "NaN voxels in a frame",
         lambda i, o: _pet(i, o, image=_rewrite_sequence(_copy(o, "pet", i), _with_nan)), r"NaN|non-finite"),
    Case("pet", "empty input-function table", lambda i, o: _pet(i, o, blood=_empty(i / "blood.csv")),
         r"empty|no rows|no data|table"),
    Case("pet", "text in the input function's numbers",
         lambda i, o: _pet(i, o, blood=_blood_text(i, "time_s,Cp\n0,0\n10,abc\n20,3\n")), r"abc|number|numeric"),
    Case("pet", "input-function times not increasing",
         lambda i, o: _pet(i, o, blood=_blood_text(i, "time_s,Cp\n0,0\n30,5\n10,3\n60,2\n")),
         r"increas|order|sorted"),
    Case("pet", "--input-unit not understood", lambda i, o: _pet(i, o, "--input-unit", "furlongs"),
         r"furlongs.*(Bq|Ci)"),
    Case("pet", "--image-unit not understood", lambda i, o: _pet(i, o, "--image-unit", "becquerels"),
         r"becquerels.*Bq"),
    Case("pet", "--weights neither a scheme, a file nor a frames column",
         lambda i, o: _pet(i, o, "--weights", "kinfitr"), r"kinfitr.*neither none, duration, counts"),
    Case("pet", "--weights file with a negative weight",
         lambda i, o: _pet(i, o, "--weights", str(_blood_text(i, "weights\n" + "1\n" * 31 + "-1\n"))),
         r"weights|frames"),
    Case("pet", "--bounds not NAME=LOW,HIGH", lambda i, o: _pet(i, o, "--bounds", "vB=0.1"), r"NAME=LOW,HIGH"),
    Case("pet", "--bounds of a parameter the method lacks",
         lambda i, o: _pet(i, o, "--method", "1tcm", "--bounds", "k4=0,1"), r"k4.*not a parameter of 1tcm"),
    Case("pet", "--fit-delay with Patlak", lambda i, o: _pet(i, o, "--fit-delay", "-20", "20"),
         r"delay.*compartment model"),
    Case("pet", "input function in Bq/mL against an image in kBq/mL (a result, with a warning naming x1000)",
         lambda i, o: _pet(i, o, "--image-unit", "kBq/mL", blood=_scaled_blood(i, o, 1000.0)),
         r"x1000|1000 times", result=True),
    Case("pet", "--regions on another grid",
         lambda i, o: _pet(i, o, "--regions", str(_shifted(_labels_for_pet(i, o)))), r"origin"),
    Case("pet", "--mask with no voxel inside", lambda i, o: _pet(i, o, "--mask", str(_labels_for_pet(i, o, 0))),
         r"mask|empty|no voxel"),
    Case("pet", "--out is a file", lambda i, o: _pet(i, o, "--out", str(_file_in_the_way(i))), r"is a file"),
    Case("pet", "--out holds an earlier run's results", lambda i, o: _pet(i, o, "--out", str(_earlier_results(i))),
         r"already holds"),
    Case("pet", "--overwrite over an earlier run (Patlak)",
         lambda i, o: _pet(i, o, "--out", str(_earlier_results(i)), "--overwrite"), result=True),
]


def _labels_for_pet(i: Path, o: dict[str, Path], value: int = 1) -> Path:
    """A label map on the PET image's grid: ``value`` in a central block, 0 elsewhere."""
    from scanai.core.image import Volume
    from scanai.io.sequence_file import read_sequence
    from scanai.io.sitk_image import write_image

    sequence = read_sequence(o["pet"])
    labels = np.zeros(sequence.frames.shape[1:], dtype=np.uint8)
    k, j, m = labels.shape
    labels[:, j // 4: 3 * j // 4, m // 4: 3 * m // 4] = value
    return write_image(Volume(labels, sequence.geometry), i / "labels.nrrd")


KSPACE = [
    Case("kspace", "input file missing", lambda i, o: [str(i / "raw.dat")], r"not found|does not exist|no such"),
    Case("kspace", "empty (0-byte) .npz", lambda i, o: [str(_empty(_copy(o, "kspace", i)))], r"empty|read"),
    Case("kspace", ".npz cut in half", lambda i, o: [str(_cut(_copy(o, "kspace", i)))],
         r"incomplete|truncated|cut|read"),
    Case("kspace", "a text file named .dat", lambda i, o: [str(_text(i / "raw.dat"))], r"not a|twix|Siemens"),
    Case("kspace", "a real twix .dat cut in half",
         lambda i, o: [str(_cut(Path(shutil.copy(_shared("kspace/gre.dat"), i / "gre.dat"))))],
         r"incomplete|truncated"),
    Case("kspace", "a text file named .h5", lambda i, o: [str(_text(i / "raw.h5"))], r"not|HDF5|ISMRMRD"),
    Case("kspace", "NaN samples", lambda i, o: [str(_npz(i, "nan.npz", _with_nan(_kspace_array(o))))],
         r"non-finite|NaN"),
    Case("kspace", "bit-flipped samples (1e13 x the rest)",
         lambda i, o: [str(_npz(i, "flipped.npz", _flipped(_kspace_array(o))))], r"coil .*line|magnitude"),
    Case("kspace", "a one-dimensional array", lambda i, o: [str(_npz(i, "line.npz", np.ones(64, np.complex64)))],
         r"axes|dimension|shape"),
    Case("kspace", "all-zero k-space", lambda i, o: [str(_npz(i, "zero.npz", np.zeros((4, 32, 32), np.complex64)))],
         r"zero|empty|no signal"),
    Case("kspace", "an unknown file type", lambda i, o: [str(_text(i / "raw.xyz"))], r"\.xyz|format|type"),
    Case("kspace", "--sensitivity out of range", lambda i, o: [str(_copy(o, "kspace", i)), "--sensitivity", "-1"],
         r"sensitivity"),
    Case("kspace", "--out is a file", lambda i, o: [str(_copy(o, "kspace", i)), "--out", str(_file_in_the_way(i))],
         r"is a file"),
    Case("kspace", "--out holds an earlier run's results",
         lambda i, o: [str(_copy(o, "kspace", i)), "--out", str(_earlier_results(i))], r"already holds"),
    Case("kspace", "--overwrite over an earlier run",
         lambda i, o: [str(_copy(o, "kspace", i)), "--out", str(_earlier_results(i)), "--overwrite"], result=True),
    Case("kspace", "a coils-last (ky, kx, coil) array without --axes",
         lambda i, o: [str(_npz(i, "last.npz", np.moveaxis(_kspace_array(o)[:, 0], 0, -1)))], r"--axes ky,kx,coil"),
    Case("kspace", "--axes naming more axes than the array has",
         lambda i, o: [str(_copy(o, "kspace", i)), "--axes", "coil,slice,ky,kx,echo"], r"names 5 axes.*has 4"),
    Case("kspace", "a BART readout-transformed array (1 x ky x kz x coils, BART's example layout)",
         lambda i, o: [str(_bart(i, _kspace_array(o)[:, 0].transpose(1, 2, 0)[np.newaxis]))], r"spike",
         result=True),
    Case("kspace", "a BART array with one k-space axis (readout x coils x time)",
         lambda i, o: [str(_bart(i, _kspace_array(o)[:, 0, 0].T[:, None, None, :, None, None, None, None, None, None,
                                                                 None].repeat(3, axis=10)))], r"only kx.*--axes"),
    Case("kspace", "--prewhiten on a file without noise scans", lambda i, o: [str(_copy(o, "kspace", i)),
                                                                           "--prewhiten"], r"--noise"),
    Case("kspace", "--noise of another coil count",
         lambda i, o: [str(_copy(o, "kspace", i)), "--noise", str(_npy(i, "psi.npy", np.eye(3, dtype=complex)))],
         r"3 coil.*has 8"),
]


def _bart(inputs: Path, array: np.ndarray) -> Path:
    from scanai.kspace import write_cfl

    return write_cfl(inputs / "bart", array)[1]


def _npy(inputs: Path, name: str, array: np.ndarray) -> Path:
    np.save(inputs / name, array)
    return inputs / name


def _flipped(kspace: np.ndarray) -> np.ndarray:
    kspace = kspace.copy()
    kspace.reshape(-1)[1234] = 1e13 * np.abs(kspace).max()
    return kspace


def _png(i: Path, o: dict[str, Path], change: Callable[[np.ndarray], np.ndarray]) -> Path:
    from PIL import Image

    pixels = change(np.asarray(Image.open(o["chest_png"])))
    path = i / "changed.png"
    Image.fromarray(pixels).save(path)
    return path


def _shared(pattern: str) -> Path:
    """The first real file of ``../shared/data`` matching ``pattern`` (the case is skipped when it is absent)."""
    data = shared_data_dir()
    found = sorted(data.glob(pattern)) if data else []
    if not found:
        pytest.skip(f"real data ../shared/data/{pattern} is absent here")
    return found[0]


def _real_cine(i: Path, damage: str) -> list[str]:
    """A copy of a real Sunnybrook cine study (12 slices x 20 phases) with the 7th phase file of its first slice
    cut or removed; that slice is analysed."""
    from scanai.io.cine import list_cine_slices

    folder = Path(shutil.copytree(_shared("cardiac/sunnybrook/dicoms/SCD*"), i / "cine"))
    victim = list_cine_slices(folder)[0].files[6]
    if damage == "cut":
        _cut(victim, 0.3)
    else:
        victim.unlink()
    return [str(folder), "--slice", "0", "--method", "demons"]


def _folder_with_one_cut(i: Path, o: dict[str, Path]) -> list[str]:
    folder = i / "radiographs"
    folder.mkdir()
    shutil.copy(o["chest_png"], folder / "a.png")
    shutil.copy(o["chest_png"], folder / "b.png")
    _cut(Path(shutil.copy(o["chest_png"], folder / "c.png")))
    return [str(folder)]


CHEST = [
    Case("chest", "input file missing", lambda i, o: [str(i / "chest.png")], r"not found|does not exist|no such"),
    Case("chest", "an empty folder", lambda i, o: [str(i)], r"no radiograph|no image|empty"),
    Case("chest", "empty (0-byte) PNG", lambda i, o: [str(_empty(_copy(o, "chest_png", i)))], r"empty|read"),
    Case("chest", "PNG cut in half", lambda i, o: [str(_cut(_copy(o, "chest_png", i)))],
         r"incomplete|truncated|cut|read"),
    Case("chest", "a text file named .png", lambda i, o: [str(_text(i / "chest.png"))], r"not|read"),
    Case("chest", "a DICOM radiograph cut in its pixel data",
         lambda i, o: [str(_cut(_dicom_radiograph(i / "cut.dcm"), 0.6))], r"incomplete|cut|truncated"),
    Case("chest", "the real NIH DICOM cut in its pixel data",
         lambda i, o: [str(_cut(Path(shutil.copy(_shared("chest/1.2.*.dcm"), i / "nih.dcm")), 0.5))],
         r"incomplete|cut|truncated"),
    Case("chest", "a DICOM report instead of an image",
         lambda i, o: [str(_dicom_radiograph(i / "report.dcm", report=True))], r"report|no pixel|not an image"),
    Case("chest", "an all-black image", lambda i, o: [str(_png(i, o, lambda p: np.zeros_like(p)))],
         r"blank|constant|black|no contrast"),
    Case("chest", "a 16 x 16 image", lambda i, o: [str(_png(i, o, lambda p: p[::64, ::64].copy()))],
         r"small|pixels|size"),
    Case("chest", "a folder with one cut PNG among good ones (recorded, the batch goes on)",
         lambda i, o: _folder_with_one_cut(i, o), result=True, status=1),
    Case("chest", "--thresholds that are not JSON",
         lambda i, o: [str(_copy(o, "chest_png", i)), "--thresholds", "{margin: 0.02"], r"JSON|threshold"),
    Case("chest", "--out is a file", lambda i, o: [str(_copy(o, "chest_png", i)), "--out", str(_file_in_the_way(i))],
         r"is a file"),
    Case("chest", "--out holds an earlier run's results",
         lambda i, o: [str(_copy(o, "chest_png", i)), "--out", str(_earlier_results(i))], r"already holds"),
    Case("chest", "--overwrite over an earlier run",
         lambda i, o: [str(_copy(o, "chest_png", i)), "--out", str(_earlier_results(i)), "--overwrite"], result=True),
]

CATALOGUE = MOTION + MOTION_CORRECT + PET + KSPACE + CHEST


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CATALOGUE, ids=[f"{c.command}: {c.description}" for c in CATALOGUE])
def test_damaged_input_gives_a_clear_error_or_a_correct_result(case, originals, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    arguments = case.build(inputs, originals)
    if "--out" not in arguments:
        arguments += ["--out", str(tmp_path / "results")]
    out = Path(arguments[arguments.index("--out") + 1])
    before = _digest(tmp_path)
    try:
        code = cli.main([case.command, *arguments])  # any other exception escaping is a traceback: the test fails
    except SystemExit as exit_:  # argparse's own refusal of an option value: usage + one line, status 2
        code = exit_.code
    printed = capsys.readouterr()
    assert "Traceback" not in printed.err
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name or ".previous-" in p.name] == []
    after = _digest(tmp_path)
    if case.result:  # only the output folder may change
        before = {k: v for k, v in before.items() if not Path(k).is_relative_to(out.name)}
        after = {k: v for k, v in after.items() if not Path(k).is_relative_to(out.name)}
    assert after == before, "the inputs (or an earlier run's folder) changed"
    if case.result:
        assert code == case.status, printed.err
        assert out.is_dir() and any(out.iterdir())
        assert re.search(case.says, printed.out + printed.err, re.IGNORECASE | re.DOTALL), printed.err
        return
    lines = [line for line in printed.err.splitlines() if line.strip()]
    assert code == 2 and lines, printed.err
    assert lines[-1].startswith(f"scanai {case.command}: "), printed.err
    assert re.search(case.says, lines[-1], re.IGNORECASE), lines[-1]


def test_the_readme_lists_the_catalogue():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Reliability"):]
    missing = [f"{c.command}: {c.description}" for c in CATALOGUE if c.description not in section]
    assert missing == []


def test_every_command_has_ten_cases():
    counts = {command: sum(c.command == command for c in CATALOGUE) for command in cli.DOMAINS}
    assert min(counts.values()) >= 10, counts


if __name__ == "__main__":  # print the README's table
    for command in cli.DOMAINS:
        cases = [c for c in CATALOGUE if c.command == command]
        print(f"| `{command}` ({len(cases)}) | " + "; ".join(c.description for c in cases) + " |")
