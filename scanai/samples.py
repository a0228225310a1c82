"""Sample data for the four Slicer modules, generated on the user's machine: no download, no network.

Slicer's *Sample Data* module lists one data set per ScanAI module (category "ScanAI"). Each module file registers
its data set when Slicer has started (``registerSampleData``), with the file names, node names and Slicer file types
of :data:`SAMPLES` and ``file://`` addresses in a cache folder (:func:`sample_folder`); Sample Data then copies the
files into its own cache and loads them with Slicer's readers, as it does for downloaded data.

The files are made here, the first time they are asked for, by one writer per module (:func:`write_motion_sample`,
:func:`write_pet_sample`, :func:`write_kspace_sample`, :func:`write_chest_sample`), and reused afterwards. Every
file is written under a temporary name in the target folder and then renamed, so an interrupted or concurrent
generation never leaves a partial file under a final name. The file names carry :data:`VERSION`: raise it when a
phantom changes, so that caches filled by an older version are not served.

Formats a stock Slicer reads without extra packages: Slicer sequence NRRD, segmentation NRRD, NRRD volume, CSV table
with its ``.schema.csv`` (column types and units), and NumPy ``.npz`` k-space (KSpaceCalibration's reader needs only
numpy for it; ``.h5`` would need h5py). Pure Python: numpy, scipy and SimpleITK, no ``slicer`` import.
"""

from __future__ import annotations

import gzip
import os
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scanai.core.image import Geometry

#: Part of every file name; raise it when a phantom changes so that cached files of the old version are not reused.
VERSION = 1
#: The Sample Data category (and its title) that the four data sets appear under.
CATEGORY = "ScanAI"

#: Phantom settings, kept here so tests can rebuild the ground truth of a sample.
MOTION_PHANTOM = {"n_frames": 12, "shape": (1, 96, 96), "spacing_mm": (1.5, 1.5, 8.0), "amplitude_px": 4.0,
                  "twist_deg": 4.0, "noise": 0.02, "seed": 7}
PET_PHANTOM = {"shape": (6, 48, 48), "seed": 0}
KSPACE_PHANTOM = {"size": 128, "n_coils": 8, "noise_std": 0.002, "seed": 0}
KSPACE_SPIKES = {"n_events": 20, "seed": 3}
CHEST_PHANTOM = {"size": 512, "spacing_mm": 0.7, "seed": 0}


@dataclass(frozen=True)
class SampleFile:
    """One file of a sample data set.

    name:      file name (in the samples folder and in Slicer's cache).
    node_name: the node Slicer creates from it; None for a file that is not loaded (a table's schema, which Slicer
               reads with the table, or a file the module opens itself).
    file_type: Slicer's reader ("SequenceFile", "SegmentationFile", "TableFile", "VolumeFile"); None: not loaded.
    """

    name: str
    node_name: str | None = None
    file_type: str | None = None


@dataclass(frozen=True)
class Sample:
    """A module's sample data set: ``sample_name`` is its name in Sample Data (``SampleData.downloadSample``)."""

    module: str
    sample_name: str
    files: tuple[SampleFile, ...]

    def file_names(self) -> list[str]:
        return [file.name for file in self.files]


def _name(stem: str, suffix: str) -> str:
    return f"ScanAI-{stem}-v{VERSION}{suffix}"


SAMPLES: dict[str, Sample] = {
    "MotionCorrection": Sample("MotionCorrection", "CardiacCinePhantom", (
        SampleFile(_name("cine-phantom", ".seq.nrrd"), "CardiacCinePhantom", "SequenceFile"),
        SampleFile(_name("cine-phantom-myocardium", ".seg.nrrd"), "CardiacCinePhantom segmentation",
                   "SegmentationFile"),
    )),
    "ParametricPET": Sample("ParametricPET", "DynamicPETPhantom", (
        SampleFile(_name("pet-phantom", ".seq.nrrd"), "DynamicPETPhantom", "SequenceFile"),
        SampleFile(_name("pet-phantom-input-function", ".schema.csv")),
        SampleFile(_name("pet-phantom-input-function", ".csv"), "DynamicPETPhantom input function", "TableFile"),
    )),
    "KSpaceCalibration": Sample("KSpaceCalibration", "SpikedKSpacePhantom", (
        SampleFile(_name("kspace-phantom-spiked", ".npz")),
        SampleFile(_name("kspace-phantom-clean-image", ".nrrd"), "SpikedKSpacePhantom clean image", "VolumeFile"),
    )),
    "ChestQC": Sample("ChestQC", "ChestRadiographPhantom", (
        SampleFile(_name("chest-phantom", ".nrrd"), "ChestRadiographPhantom", "VolumeFile"),
    )),
}


# ---------------------------------------------------------------------------------------------- folders, URLs


def sample_folder(cache_path: str | Path) -> Path:
    """The folder the sample files are generated in, under an application cache folder (Slicer's
    ``slicer.app.cachePath``)."""
    return Path(cache_path) / "ScanAI" / "SampleData"


def source_arguments(module: str, folder: str | Path) -> dict:
    """Keyword arguments of ``SampleData.SampleDataLogic.registerCustomSampleDataSource`` for ``module``'s data
    set: the category, the sample name, one ``file://`` address per file in ``folder`` (nothing is written
    here), file names, node names, file types and which files Sample Data loads (the others are only copied)."""
    sample = SAMPLES[module]
    folder = Path(folder).absolute()
    return {
        "category": CATEGORY,
        "sampleName": sample.sample_name,
        "uris": [(folder / file.name).as_uri() for file in sample.files],
        "fileNames": sample.file_names(),
        "nodeNames": [file.node_name for file in sample.files],
        "loadFileTypes": [file.file_type for file in sample.files],
        "loadFiles": [file.file_type is not None for file in sample.files],
    }


def path_of_url(url: str) -> Path | None:
    """The local path of a ``file://`` URL (None for any other URL)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "file":
        return None
    return Path(urllib.request.url2pathname(parsed.path))


def module_of_file(name: str) -> str | None:
    """The module whose sample data set has a file called ``name`` (None when no sample has)."""
    return next((module for module, sample in SAMPLES.items() if name in sample.file_names()), None)


def generate_for_url(url: str) -> str:
    """A URL rewrite rule for Slicer's Sample Data (``SampleDataLogic.registerUrlRewriteRule``), which applies the
    rules to every address just before fetching it: when ``url`` is the ``file://`` address of a ScanAI sample file
    that does not exist yet, that module's sample is generated there first. Returns ``url`` unchanged, so that
    ``SampleData.downloadSample(name)`` works as for downloaded data (it does not call the custom downloader)."""
    path = path_of_url(url)
    module = module_of_file(path.name) if path is not None else None
    if module is not None and not path.is_file():
        write_sample(module, path.parent)
    return url


# ---------------------------------------------------------------------------------------------- writing


def write_sample(module: str, folder: str | Path) -> list[Path]:
    """Write ``module``'s sample files into ``folder`` unless they are all there; returns their paths (in the order
    of :data:`SAMPLES`). Each file is written under a temporary name in ``folder`` and renamed when all are
    written."""
    sample = SAMPLES[module]
    folder = Path(folder)
    paths = [folder / name for name in sample.file_names()]
    if all(path.is_file() for path in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f".partial-{os.getpid()}-{uuid.uuid4().hex[:8]}-"  # the suffix stays: writers pick the format by it
    temporary = {name: folder / (prefix + name) for name in sample.file_names()}
    try:
        _WRITERS[module](temporary)
        for name, path in zip(sample.file_names(), paths, strict=True):
            os.replace(temporary[name], path)
    finally:
        for path in temporary.values():
            path.unlink(missing_ok=True)
    return paths


def write_motion_sample(folder: str | Path) -> list[Path]:
    """MotionCorrection: a 2-D cardiac cine phantom (12 frames of 96 x 96, 1.5 mm, time index in s, end-diastole
    first) as a Slicer sequence NRRD, and its LV myocardium and blood pool on the first frame as a segmentation
    NRRD. Returns [sequence, segmentation]."""
    return write_sample("MotionCorrection", folder)


def write_pet_sample(folder: str | Path) -> list[Path]:
    """ParametricPET: a dynamic FDG PET phantom (32 frames over 60 min, time index = frame mid-times in s) as a
    Slicer sequence NRRD, and its plasma input function (time_s in s, Cp in uCi/mL) as a CSV table with its
    schema. Returns [sequence, schema, table]."""
    return write_sample("ParametricPET", folder)


def write_kspace_sample(folder: str | Path) -> list[Path]:
    """KSpaceCalibration: 8-coil k-space of a 128 x 128 Shepp-Logan head (readout oversampled x 2) with 20
    simulated spike events, as ``.npz``, and the spike-free root-sum-of-squares image as a NRRD volume (on the
    grid of the module's reconstructions, for comparison). Returns [k-space, image]."""
    return write_sample("KSpaceCalibration", folder)


def write_chest_sample(folder: str | Path) -> list[Path]:
    """ChestQC: a 512 x 512 synthetic PA chest radiograph (0.7 mm pixels, 12-bit values) as a NRRD volume placed
    like a loaded radiograph. Returns [volume]."""
    return write_sample("ChestQC", folder)


def _motion_files(paths: Mapping[str, Path]) -> None:
    from scanai.io.sequence_file import write_sequence_nrrd
    from scanai.motion.phantom import myocardium_mask, smooth_motion_phantom

    settings = MOTION_PHANTOM
    sequence, _truth = smooth_motion_phantom(**settings)
    myocardium = myocardium_mask(sequence, 0, amplitude_px=settings["amplitude_px"], twist_deg=settings["twist_deg"])
    files = SAMPLES["MotionCorrection"].file_names()
    write_sequence_nrrd(sequence, paths[files[0]])
    # the blood pool: inside the endocardium at end-diastole (the phantom's ring: radii 16 % and 24 % of the field)
    k_size, j_size, i_size = myocardium.shape
    spacing = np.asarray(sequence.geometry.spacing_mm)
    _k, j, i = np.indices(myocardium.shape)
    radius = np.hypot((i - (i_size - 1) / 2) * spacing[0], (j - (j_size - 1) / 2) * spacing[1])
    blood = ~myocardium & (radius < 0.16 * min(i_size * spacing[0], j_size * spacing[1]))
    labels = myocardium.astype(np.uint8) + 2 * blood.astype(np.uint8)
    _write_segmentation_nrrd(labels, sequence.geometry, {1: ("LV myocardium", (0.81, 0.40, 0.33)),
                                                          2: ("LV blood pool", (0.85, 0.10, 0.10))}, paths[files[1]])


def _pet_files(paths: Mapping[str, Path]) -> None:
    from scanai.io.sequence_file import write_sequence_nrrd
    from scanai.pet.phantom import pet_phantom

    phantom = pet_phantom(**PET_PHANTOM)
    sequence_file, schema_file, table_file = SAMPLES["ParametricPET"].file_names()
    write_sequence_nrrd(phantom.sequence, paths[sequence_file])
    curve = phantom.input_function
    # blood samples as drawn: every 2 s over the first 3 min, then every 30 s (the model's own curve, sampled)
    seconds = np.round(curve.t_s)
    keep = ((seconds <= 180.0) & (seconds % 2 == 0)) | (seconds % 30 == 0)
    rows = [f"{t:.6g},{a:.8g}" for t, a in zip(curve.t_s[keep], curve.activity[keep], strict=True)]
    _write_text(paths[table_file], "time_s,Cp\n" + "\n".join(rows) + "\n")
    _write_text(paths[schema_file], "columnName,unitLabel,title,type\n"
                                    "time_s,s,time after injection,double\n"
                                    f"Cp,{curve.unit},plasma activity,double\n")


def _kspace_files(paths: Mapping[str, Path]) -> None:
    from dataclasses import replace

    from scanai.core.image import Volume
    from scanai.io.sitk_image import write_image
    from scanai.kspace.io import write_kspace_npz
    from scanai.kspace.phantom import make_phantom
    from scanai.kspace.recon import rss
    from scanai.kspace.simulate import inject_spikes

    case = make_phantom(**KSPACE_PHANTOM)
    spiked, _truth = inject_spikes(case.kspace.data, **KSPACE_SPIKES)
    kspace = replace(case.kspace, data=spiked, source="ScanAI spiked k-space phantom")
    kspace_file, image_file = SAMPLES["KSpaceCalibration"].file_names()
    write_kspace_npz(kspace, paths[kspace_file])
    clean = rss(case.coil_images)[np.newaxis].astype(np.float32)
    write_image(Volume(clean, Geometry(spacing_mm=kspace.spacing_mm)), paths[image_file])


def _chest_files(paths: Mapping[str, Path]) -> None:
    from scanai.chest.phantom import make_chest_phantom, quantise
    from scanai.core.image import Volume
    from scanai.io.sitk_image import write_image

    phantom = make_chest_phantom(**CHEST_PHANTOM)
    volume = Volume(quantise(phantom.image)[np.newaxis], phantom.volume().geometry)  # 12-bit, like a detector
    write_image(volume, paths[SAMPLES["ChestQC"].file_names()[0]])


_WRITERS: dict[str, Callable[[Mapping[str, Path]], None]] = {
    "MotionCorrection": _motion_files, "ParametricPET": _pet_files, "KSpaceCalibration": _kspace_files,
    "ChestQC": _chest_files}


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as stream:
        stream.write(text)


def _write_segmentation_nrrd(labels: np.ndarray, geometry: Geometry,
                             segments: Mapping[int, tuple[str, tuple[float, float, float]]], path: Path) -> None:
    """A Slicer segmentation NRRD (``.seg.nrrd``): one labelmap layer (k, j, i) uint8 with each segment's name,
    colour and label value in the header, LPS space, gzip."""
    from scanai.io.sitk_image import LPS_TO_RAS

    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    k_size, j_size, i_size = labels.shape
    axes = LPS_TO_RAS @ np.asarray(geometry.directions) * np.asarray(geometry.spacing_mm)  # columns: i, j, k

    def vector(values) -> str:
        return "(" + ",".join(f"{float(v):.17g}" for v in values) + ")"

    header = ["NRRD0004", "type: unsigned char", "dimension: 3", "space: left-posterior-superior",
              f"sizes: {i_size} {j_size} {k_size}",
              "space directions: " + " ".join(vector(axes[:, c]) for c in range(3)),
              "kinds: domain domain domain", "encoding: gzip",
              "space origin: " + vector(LPS_TO_RAS @ np.asarray(geometry.origin_mm))]
    extent = f"0 {i_size - 1} 0 {j_size - 1} 0 {k_size - 1}"
    for index, (value, (name, colour)) in enumerate(sorted(segments.items())):
        header += [f"Segment{index}_Color:={' '.join(f'{c:.6g}' for c in colour)}",
                   f"Segment{index}_ColorAutoGenerated:=0", f"Segment{index}_Extent:={extent}",
                   f"Segment{index}_ID:=Segment_{value}", f"Segment{index}_LabelValue:={value}",
                   f"Segment{index}_Layer:=0", f"Segment{index}_Name:={name}",
                   f"Segment{index}_NameAutoGenerated:=0", f"Segment{index}_Tags:=|"]
    header += ["Segmentation_ContainedRepresentationNames:=Binary labelmap|",
               "Segmentation_MasterRepresentation:=Binary labelmap",
               "Segmentation_ReferenceImageExtentOffset:=0 0 0"]
    with open(path, "wb") as stream:
        stream.write(("\n".join(header) + "\n\n").encode("utf-8"))
        stream.write(gzip.compress(labels.tobytes(), compresslevel=6))
