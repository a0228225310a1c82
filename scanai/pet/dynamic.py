"""The dynamic PET study :class:`DynamicPet`: frames with their timing, units, decay state and SUV metadata."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from scanai.core.errors import InputError
from scanai.core.image import VolumeSequence
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
