"""End-diastole of a cine, found automatically: the reference frame strain is measured from.

For a short-axis **stack** with the LV cavity drawn on several slices (:func:`largest_stack_cavity`):
end-diastole is the frame where the LV *volume* is largest, the slices' cavity areas carried through the cycle
summed over the stack (disc summation). It is one frame for the whole heart: every slice shares one cardiac
cycle, and a single slice's area can peak elsewhere, because through-plane motion (the base descending in
systole) moves other parts of the ventricle through an apical slice. On the nine contoured Sunnybrook slices the
apical two peak at frames 2-3 in the images themselves (not only as carried by the motion), while the stack's
volume peaks at the experts' end-diastolic frame 19.

For one slice, three rules, the first that applies:

1. **Largest LV cavity** (a segmentation with the LV blood pool, or a myocardium whose hole is the cavity, drawn
   on any frame): the cavity drawn on frame L is carried to every frame by the motion relative to L, and its size
   in frame t is the integral of det(I + grad u_t) over it (the change-of-variables formula: no propagation
   needed). End-diastole is the frame where it is largest; frames within :data:`TIE_FRACTION` of the largest
   count as equal, and the drawn frame wins such a tie (the drawn outline is exact there, a carried one is not).
2. **ECG trigger time nearest the R wave** (a cine whose index is time in s, as the DICOM TriggerTime gives
   it): end-diastole is defined at the R wave, so the frame with the trigger time closest to R, counting the
   cycle as closed (the last frame's time plus one frame interval is the next R wave).
3. Otherwise frame 1 (0-based index 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scanai.core.errors import InputError
from scanai.core.image import Geometry, VolumeSequence

#: Cavity sizes within this fraction of the largest count as equal (the drawn frame wins the tie): near end-diastole
#: the cavity is flat, and the carried outline's size is uncertain by about this much (on the nine contoured
#: Sunnybrook slices the sizes of frames 19, 20 and 1 differ by 0.4-1.5 %).
TIE_FRACTION = 0.02


@dataclass(frozen=True)
class EndDiastole:
    """The chosen frame and how.

    index: 0-based frame (frame ``index + 1`` in the sequence browser and in motion.csv).
    rule:  one sentence for the summary, frames 1-based ("largest LV cavity ...", "ECG trigger time ...").
    """

    index: int
    rule: str


def cavity_sizes(jacobian: np.ndarray, cavity: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Size of the cavity drawn on the fields' reference frame, in every frame.

    jacobian: (T, K, J, I) det(I + grad u_t) of the fields relative to the frame the cavity was drawn on.
    cavity:   (K, J, I) bool. Returns (T,) mm^2 for a single slice (K == 1), else mm^3.
    """
    spacing = geometry.spacing_mm
    element = spacing[0] * spacing[1] * (1.0 if jacobian.shape[1] == 1 else spacing[2])
    return np.asarray(jacobian, dtype=np.float64)[:, cavity].sum(axis=1) * element


def largest_cavity(sizes: np.ndarray, drawn_index: int, unit: str = "mm²") -> EndDiastole:
    """Rule 1: the frame with the largest cavity ``sizes`` (T,) in ``unit``, the drawn frame winning a tie (see
    module doc). Volumes (``unit`` "mm³": a stack or a 3-D cine, its volume over all its slices, the stack's
    rule) are reported in mL."""
    if unit == "mm³":
        return _largest(np.asarray(sizes, dtype=np.float64) / 1000.0, drawn_index, "mL",
                        "largest LV cavity volume of the segmentation carried through the cycle")
    return _largest(sizes, drawn_index, unit, "largest LV cavity of the segmentation carried through the cycle")


def largest_stack_cavity(slice_sizes_mm2: Sequence[np.ndarray], slice_spacing_mm: Sequence[float] | float,
                         drawn_index: int | None = None) -> EndDiastole:
    """End-diastole of a short-axis stack: the frame where the LV volume is largest (see the module doc).

    slice_sizes_mm2:  per slice with a drawn cavity, its area in every frame (T,) mm², as :func:`cavity_sizes`
                      (or ``CineMotion.cavity_size``) gives it; all slices of one cine, so one T.
    slice_spacing_mm: the distance between neighbouring slices (one value, or one per slice): each area counts
                      as a disc of that thickness.
    drawn_index:      0-based frame the cavities were drawn on, when one frame for all: it wins a tie within
                      :data:`TIE_FRACTION`, as for one slice; None: no tie rule.
    Returns :class:`EndDiastole` (index 0-based; the rule names the slices and the volumes in mL).
    """
    sizes = np.asarray([np.asarray(s, dtype=np.float64) for s in slice_sizes_mm2])
    if sizes.ndim != 2 or len(sizes) == 0 or sizes.shape[1] == 0:
        raise InputError("End-diastole of a stack needs the cavity of at least one slice in every frame.",
                         "Draw the LV cavity (or myocardium) on the slices of the stack.")
    spacing = np.broadcast_to(np.asarray(slice_spacing_mm, dtype=np.float64), (len(sizes),))
    volume_ml = (sizes * spacing[:, None]).sum(axis=0) / 1000.0
    drawn = int(np.argmax(volume_ml)) if drawn_index is None else int(drawn_index)
    return _largest(volume_ml, drawn, "mL", f"largest LV volume of the stack, summed over the cavities of "
                                            f"{len(sizes)} slices carried through the cycle")


def _largest(sizes: np.ndarray, drawn_index: int, unit: str, what: str) -> EndDiastole:
    """The frame with the largest ``sizes`` (T,), ``drawn_index`` winning a tie within TIE_FRACTION."""
    sizes = np.asarray(sizes, dtype=np.float64)
    largest = int(np.argmax(sizes))
    index = int(drawn_index) if sizes[drawn_index] >= (1.0 - TIE_FRACTION) * sizes[largest] else largest
    digits = 1 if unit == "mL" else 0
    return EndDiastole(index, f"{what} ({sizes[index]:.{digits}f} {unit} at frame {index + 1}, "
                              f"{sizes.min():.{digits}f} {unit} at its smallest, frame {int(np.argmin(sizes)) + 1})")


def from_trigger_times(sequence: VolumeSequence) -> EndDiastole:
    """Rules 2 and 3: the trigger time nearest the R wave when the index is time in s, else frame 1."""
    times = np.asarray(sequence.index_values, dtype=np.float64)
    if sequence.index_name != "time" or sequence.index_unit != "s" or len(times) < 2 or np.any(np.diff(times) <= 0):
        return EndDiastole(0, "frame 1 (the cine has no trigger times and no segmentation to find end-diastole)")
    cycle = times[-1] + float(np.median(np.diff(times)))  # the next R wave
    distance = np.minimum(np.abs(times), np.abs(cycle - times))
    index = int(np.argmin(distance))
    return EndDiastole(index, f"ECG trigger time nearest the R wave ({1000 * times[index]:.0f} ms, frame "
                              f"{index + 1}; without a segmentation the largest cavity cannot be measured)")
