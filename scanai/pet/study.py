"""Reading and writing a dynamic PET study, a :class:`~scanai.pet.dynamic.DynamicPet` (re-exported here).

:class:`DynamicPet` carries what kinetic analysis needs besides the voxels: frame timing in s after injection,
the activity unit, whether the frames are decay corrected to the injection, and the radionuclide, weight and
dose for SUV. :func:`read_dynamic_pet` reads a DICOM PET series (folder or file list), a 4-D NIfTI/NRRD/MHA image
with a BIDS JSON sidecar or a frame CSV, or a Slicer ``.seq.nrrd`` sequence. Every assumption a reader had to
make (a fall-back for a missing tag, a re-referenced decay correction) is listed in ``DynamicPet.warnings``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scanai.core.errors import InputError
from scanai.core.image import VolumeSequence
from scanai.core.progress import Progress
from scanai.pet.dynamic import _TIMING_ACTION, DynamicPet, settle_decay_reference
from scanai.pet.timing import FrameTiming

#: File name endings read as 4-D images / sequences (everything else that is a file is tried as DICOM).
IMAGE_SUFFIXES = (".seq.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


# --------------------------------------------------------------------------------------------- readers
def _image_stem(path: Path) -> str:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _is_image_file(path: Path) -> bool:
    return path.name.lower().endswith(IMAGE_SUFFIXES)


def _index_timing(sequence: VolumeSequence) -> FrameTiming | None:
    """Timing from a sequence's own index values, when they are times (mid-times of contiguous frames)."""
    scale = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "min": 60.0, "minute": 60.0,
             "minutes": 60.0}.get(sequence.index_unit.strip().lower())
    if scale is None or sequence.index_name.strip().lower() not in ("time", "t", "frame time", "frametime"):
        return None
    values = np.asarray(sequence.index_values, dtype=float) * scale
    if np.allclose(values, np.arange(values.size) * scale):  # default frame numbers, not real times
        return None
    try:
        return FrameTiming.from_mid_times(values)
    except InputError:
        return None


def read_image_pet(path: str | Path, sidecar: str | Path | None = None, frames_csv: str | Path | None = None,
                   progress: Progress | None = None) -> DynamicPet:
    """A 4-D image (NIfTI/NRRD/MHA) or Slicer ``.seq.nrrd`` as a :class:`DynamicPet`.

    Timing, in this order: ``sidecar`` (BIDS JSON), a JSON next to the image with the same stem, ``frames_csv``,
    the sequence's own index values when they are times (taken as mid-times of contiguous frames starting at the
    injection; recorded in ``warnings``). Otherwise :class:`InputError` "missing frame timing".
    """
    from scanai.io.sequence_file import read_sequence
    from scanai.pet.bids import read_bids_sidecar, timing_from_sidecar

    progress = Progress.ensure(progress)
    path = Path(path)
    progress(0.0, f"Reading {path.name}")
    sequence = read_sequence(path)
    progress(0.8, "Reading frame timing")
    notes: list[str] = []
    count = len(sequence)
    if sidecar is None:
        candidate = path.with_name(_image_stem(path) + ".json")
        sidecar = candidate if candidate.is_file() else None
    meta: dict = {}
    if sidecar is not None:
        meta = read_bids_sidecar(sidecar)
        notes.extend(meta["warnings"])
        timing = timing_from_sidecar(meta, count)
    elif frames_csv is not None:
        timing = FrameTiming.read_csv(frames_csv)
        if len(timing) != count:
            raise InputError(f"The frame CSV gives timing for {len(timing)} frames but the image has {count} frames.",
                             "Use the frame table that belongs to this image.")
    else:
        timing = _index_timing(sequence)
        if timing is None:
            raise InputError(f"{path.name} has missing frame timing: it stores no frame times.", _TIMING_ACTION)
        notes.append("Frame timing was taken from the sequence's index values as mid-times of contiguous frames "
                     "starting at the injection; give a sidecar or frame CSV if that is not right.")
    frames = np.asarray(sequence.frames, dtype=np.float32)
    unit = meta.get("unit", "")
    if not unit:
        notes.append("The activity unit is unknown (no Units in a sidecar).")
    decay_corrected = meta.get("decay_corrected")
    reference = meta.get("decay_reference_s")
    if decay_corrected is True and reference is None:
        reference = 0.0
    if decay_corrected is None:
        notes.append("It is not known whether the frames are decay corrected (no ImageDecayCorrected).")
    half_life = meta.get("half_life_s")
    frames, decay_corrected, reference = settle_decay_reference(frames, timing, decay_corrected, reference,
                                                                half_life, notes)
    progress(1.0, "Done")
    return DynamicPet(VolumeSequence(frames, sequence.geometry, tuple(timing.mid_s)), timing, unit, decay_corrected,
                      meta.get("radionuclide", ""), half_life, meta.get("weight_kg"), meta.get("injected_dose_bq"),
                      str(path), tuple(notes), reference)


def read_dynamic_pet(path: str | Path | Sequence[str | Path], sidecar: str | Path | None = None,
                     frames_csv: str | Path | None = None, progress: Progress | None = None) -> DynamicPet:
    """Read a dynamic PET study from a DICOM folder/file list or a 4-D image (see :func:`read_image_pet`).

    - a folder, or a list of files -> :func:`scanai.pet.dicom_pet.read_pet_dicom_series`;
    - ``.nii``/``.nii.gz``/``.nrrd``/``.nhdr``/``.mha``/``.mhd``/``.seq.nrrd`` -> :func:`read_image_pet`;
    - any other single file -> read as DICOM: the series it belongs to, from its folder.
    """
    from scanai.pet.dicom_pet import read_pet_dicom_series

    if isinstance(path, (list, tuple)):
        return read_pet_dicom_series(list(path), progress=progress)
    path = Path(path)
    if path.is_dir():
        return read_pet_dicom_series(path, progress=progress)
    if _is_image_file(path):
        return read_image_pet(path, sidecar, frames_csv, progress)
    from scanai.pet.dicom_pet import series_uid_of

    return read_pet_dicom_series(path.parent, progress=progress, series_uid=series_uid_of(path))


def write_dynamic_pet(pet: DynamicPet, path: str | Path) -> tuple[Path, Path]:
    """Write frames as a 4-D image (``.nii.gz``, ``.nrrd`` or ``.seq.nrrd``) plus a BIDS JSON sidecar with the same
    stem; returns (image path, sidecar path). :func:`read_dynamic_pet` reads it back."""
    from scanai.io.sequence_file import write_sequence
    from scanai.pet.bids import write_bids_sidecar

    path = Path(path)
    image = write_sequence(pet.sequence, path)
    extra = None
    if pet.decay_corrected is None and pet.decay_reference_s is not None:  # corrected to another time
        extra = {"ImageDecayCorrected": True, "ImageDecayCorrectionTime": float(pet.decay_reference_s)}
    sidecar = write_bids_sidecar(path.with_name(_image_stem(path) + ".json"), pet.timing, pet.unit,
                                 radionuclide=pet.radionuclide or None, decay_corrected=pet.decay_corrected,
                                 injected_dose_bq=pet.injected_dose_bq, weight_kg=pet.patient_weight_kg,
                                 extra=extra)
    return image, sidecar
