"""A dynamic PET study: frames with their timing, units, decay state and SUV metadata; readers for it.

:class:`DynamicPet` carries what kinetic analysis needs besides the voxels: frame timing in s after injection,
the activity unit, whether the frames are decay corrected to the injection, and the radionuclide, weight and
dose for SUV. :func:`read_dynamic_pet` reads a DICOM PET series (folder or file list), a 4-D NIfTI/NRRD/MHA image
with a BIDS JSON sidecar or a frame CSV, or a Slicer ``.seq.nrrd`` sequence. Every assumption a reader had to
make (a fall-back for a missing tag, a re-referenced decay correction) is listed in ``DynamicPet.warnings``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scanai.core.errors import InputError
from scanai.core.image import VolumeSequence
from scanai.core.progress import Progress
from scanai.pet.timing import FrameTiming
from scanai.pet.units import (
    CONCENTRATION_UNITS,
    SUV,
    decay_correct_frames,
    normalise_unit,
    shift_decay_reference,
    suv_factor,
    unit_scale_to_bq_per_ml,
)

#: File name endings read as 4-D images / sequences (everything else that is a file is tried as DICOM).
IMAGE_SUFFIXES = (".seq.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

_TIMING_ACTION = ("Give the frame timing: a BIDS JSON sidecar (FrameTimesStart, FrameDuration) next to the image "
                  "or as 'sidecar', or a CSV with columns start_s,duration_s as 'frames_csv'.")


@dataclass(frozen=True, eq=False)
class DynamicPet:
    """Dynamic PET frames with timing and quantification metadata.

    sequence:          frames (T, k, j, i) float32 on one grid; index values = frame mid-times in s, index "time",
                       unit "s".
    timing:            (T frames) start and duration, s after injection.
    unit:              normalised activity unit ("Bq/mL", "kBq/mL", ..., "SUV", "" = unknown).
    decay_corrected:   True = decay corrected to the injection time; False = not decay corrected; None = unknown
                       or corrected to another time (then ``decay_reference_s`` says which).
    radionuclide:      "F18", "C11", ... ("" unknown).
    half_life_s:       physical half-life in s (None unknown).
    patient_weight_kg, injected_dose_bq: for SUV (dose at the injection time), None when unknown.
    source:            the file/folder read or a description.
    warnings:          assumptions and fall-backs made while reading, for the user to check.
    decay_reference_s: when the frames are decay corrected, the time (s after injection) they refer to; 0.0 for
                       ``decay_corrected is True``.
    """

    sequence: VolumeSequence
    timing: FrameTiming
    unit: str = ""
    decay_corrected: bool | None = None
    radionuclide: str = ""
    half_life_s: float | None = None
    patient_weight_kg: float | None = None
    injected_dose_bq: float | None = None
    source: str = ""
    warnings: tuple[str, ...] = ()
    decay_reference_s: float | None = None

    def __post_init__(self) -> None:
        if len(self.sequence) != len(self.timing):
            raise InputError(f"The dynamic PET has {len(self.sequence)} frames but timing for {len(self.timing)}.",
                             _TIMING_ACTION)
        frames = np.asarray(self.sequence.frames)
        mids = tuple(float(v) for v in self.timing.mid_s)
        if (frames.dtype != np.float32 or self.sequence.index_values != mids or self.sequence.index_name != "time"
                or self.sequence.index_unit != "s"):
            sequence = VolumeSequence(frames.astype(np.float32, copy=False), self.sequence.geometry, mids, "time", "s")
            object.__setattr__(self, "sequence", sequence)
        object.__setattr__(self, "unit", normalise_unit(self.unit))
        object.__setattr__(self, "warnings", tuple(self.warnings))
        if self.decay_corrected is True:
            object.__setattr__(self, "decay_reference_s", 0.0)

    # --------------------------------------------------------------------------------------------- views
    def __len__(self) -> int:
        return len(self.timing)

    @property
    def frames(self) -> np.ndarray:
        """(T, k, j, i) float32 frames."""
        return self.sequence.frames

    @property
    def geometry(self):
        """The frames' :class:`~scanai.core.image.Geometry` (RAS)."""
        return self.sequence.geometry

    def with_frames(self, frames: np.ndarray, **changes) -> DynamicPet:
        """A copy with new (T, k, j, i) ``frames`` and other fields replaced by ``changes``."""
        sequence = VolumeSequence(np.asarray(frames, dtype=np.float32), self.geometry, self.sequence.index_values)
        return dataclasses.replace(self, sequence=sequence, **changes)

    def __repr__(self) -> str:
        shape = "x".join(str(n) for n in self.frames.shape)
        return (f"DynamicPet({shape}, {self.timing!r}, unit={self.unit or '?'}, decay_corrected="
                f"{self.decay_corrected}, {self.radionuclide or 'radionuclide ?'}, {len(self.warnings)} warning(s))")

    # ----------------------------------------------------------------------------------- quantification
    def suv_factor(self) -> float:
        """``weight[g] / dose[Bq]`` (SUV = C[Bq/mL] · factor); InputError when weight or dose is missing."""
        return suv_factor(self.patient_weight_kg, self.injected_dose_bq, 0.0, self.half_life_s)

    def to_suv(self) -> DynamicPet:
        """A new study in SUV (body weight). The frames must be decay corrected to the injection (the dose is)."""
        if self.unit == SUV:
            return self
        if self.unit not in CONCENTRATION_UNITS:
            raise InputError("The frames' activity unit is unknown, so they cannot be converted to SUV.",
                             "Set the unit of the frames (e.g. Bq/mL) first.")
        if self.decay_corrected is False or (self.decay_corrected is None and self.decay_reference_s is not None):
            raise InputError("The frames are not decay corrected to the injection time, while the injected dose "
                             "refers to the injection: SUV would be biased.",
                             "Decay correct the frames to the injection first (decay_corrected_to_injection()).")
        factor = self.suv_factor() * unit_scale_to_bq_per_ml(self.unit)
        notes = self.warnings
        if self.decay_corrected is None:
            notes = notes + ("SUV computed from frames whose decay correction is unknown; they were assumed to be "
                             "decay corrected to the injection.",)
        return self.with_frames(self.frames * np.float32(factor), unit=SUV, warnings=notes)

    def decay_corrected_to_injection(self) -> DynamicPet:
        """A new study decay corrected to the injection time (self when already so)."""
        if self.decay_corrected is True:
            return self
        if self.half_life_s is None:
            raise InputError("The frames cannot be decay corrected: the radionuclide's half-life is unknown.",
                             "Give the radionuclide (e.g. F18) or its half-life.")
        if self.decay_corrected is False:
            frames = decay_correct_frames(self.frames, self.timing, self.half_life_s)
        elif self.decay_reference_s is not None:
            frames = shift_decay_reference(self.frames, self.timing, self.half_life_s, self.decay_reference_s)
        else:
            raise InputError("It is not known whether the frames are decay corrected, so they cannot be corrected "
                             "to the injection time.",
                             "Say whether the frames are decay corrected (and to which time), e.g. in the BIDS "
                             "sidecar (ImageDecayCorrected, ImageDecayCorrectionTime).")
        return self.with_frames(frames, decay_corrected=True, decay_reference_s=0.0)


def settle_decay_reference(frames: np.ndarray, timing: FrameTiming, decay_corrected: bool | None,
                           reference_s: float | np.ndarray | None, half_life: float | None, notes: list[str],
                           ) -> tuple[np.ndarray, bool | None, float | None]:
    """Bring frames decay corrected to a time other than the injection to the injection (used by the readers).

    reference_s: scalar or (T,) times in s after injection the frames are corrected to (None: not known).
    Returns (frames, decay_corrected, decay_reference_s); appends a note for each re-referencing or assumption.
    """
    if decay_corrected is not True or reference_s is None:
        return frames, decay_corrected, (0.0 if decay_corrected is True else None)
    reference = np.asarray(reference_s, dtype=float)
    if np.allclose(reference, 0.0, atol=1e-3):
        return frames, True, 0.0
    where = (f"{float(reference.min()):g} s" if np.ptp(reference) < 1e-3
             else f"{reference.min():g}-{reference.max():g} s (per frame)")
    if half_life is None:
        notes.append(f"The frames are decay corrected to {where} after injection, not to the injection, and the "
                     "half-life is unknown: they were left as they are.")
        return frames, None, (float(reference.min()) if np.ptp(reference) < 1e-3 else None)
    notes.append(f"The frames were decay corrected to {where} after injection (scan start); they were re-referenced "
                 "to the injection time (multiplied by e^(lambda t_ref)).")
    return shift_decay_reference(frames, timing, half_life, reference), True, 0.0


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
