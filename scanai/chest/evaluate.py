"""Evaluate a chest detector on Wingspan cases: Dice of lungs and heart, cardiothoracic ratio, time.

Works for any :class:`~scanai.chest.detection.Detector` (the network and the classical baseline alike), so both
are measured the same way. The cardiothoracic ratio is defined as for the reference values: horizontal extent
of the heart / horizontal extent of the two lungs together (:func:`cardiothoracic_ratio`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from scanai.chest.detection import Detections, Detector
from scanai.chest.wingspan import WingspanCase
from scanai.core.errors import InputError
from scanai.core.progress import Progress
from scanai.motion.propagate import dice as _dice_both_empty_one

#: The objects with reference masks in the Wingspan set.
SCORED = ("lung_right", "lung_left", "heart")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap 2|A n B| / (|A| + |B|) of two (rows, cols) masks of one shape (non-zero = inside).

    0.0 when exactly one is empty (an object that was not found scores 0), 1.0 when both are empty.
    InputError for masks of different shapes.
    """
    return _dice_both_empty_one(a, b)


def horizontal_extent(mask: np.ndarray) -> int:
    """Number of columns from the leftmost to the rightmost pixel of a (rows, cols) mask (0 when empty)."""
    columns = np.flatnonzero(np.asarray(mask).any(axis=0))
    return int(columns[-1] - columns[0] + 1) if columns.size else 0


def cardiothoracic_ratio(heart: np.ndarray, lungs: np.ndarray) -> float | None:
    """Horizontal extent of ``heart`` / horizontal extent of ``lungs`` (both lungs together), both (rows, cols)
    masks; None when either is empty."""
    heart_width, lung_width = horizontal_extent(heart), horizontal_extent(lungs)
    if heart_width == 0 or lung_width == 0:
        return None
    return heart_width / lung_width


def score_case(detections: Detections, case: WingspanCase, seconds: float = float("nan")) -> dict:
    """One row: case_id, dice_<object> for lung_right/lung_left/heart, ctr_predicted (None when the heart or
    both lungs are missing), ctr_reference (``case.ctr``, may be None), seconds, and missing (names of scored
    objects the detector did not find)."""
    if tuple(detections.shape) != tuple(case.image.shape):
        raise InputError(f"The detections are on a {detections.shape} grid but the image is {case.image.shape}.",
                         "Run the detector on the case's own image.")
    row: dict = {"case_id": case.case_id}
    for name in SCORED:
        row[f"dice_{name}"] = dice(detections.mask(name), case.masks[name])
    row["ctr_predicted"] = cardiothoracic_ratio(detections.mask("heart"), detections.lungs())
    row["ctr_reference"] = None if case.ctr is None else float(case.ctr)
    row["seconds"] = float(seconds)
    row["missing"] = [name for name in SCORED if not detections.found(name)]
    return row


def summarise(rows: Sequence[dict]) -> dict:
    """Summary of :func:`score_case` rows, a flat JSON-ready dict.

    ``cases``; per object (lung_right, lung_left, heart): ``dice_<object>_mean``, ``_median``, ``_min`` and
    ``not_found_<object>`` (cases where it was not found); ``ctr_mae`` and ``ctr_bias`` (mean absolute and mean
    signed error, predicted - reference) over the ``ctr_cases`` cases with a reference, of which
    ``ctr_not_predicted`` had no prediction (left out of the errors); ``seconds_per_image`` (mean). NaN where
    nothing could be averaged.
    """
    summary: dict = {"cases": len(rows)}
    for name in SCORED:
        values = np.array([row[f"dice_{name}"] for row in rows], dtype=np.float64)
        summary[f"dice_{name}_mean"] = float(values.mean()) if values.size else float("nan")
        summary[f"dice_{name}_median"] = float(np.median(values)) if values.size else float("nan")
        summary[f"dice_{name}_min"] = float(values.min()) if values.size else float("nan")
        summary[f"not_found_{name}"] = sum(name in row["missing"] for row in rows)
    with_reference = [row for row in rows if row["ctr_reference"] is not None]
    errors = np.array([row["ctr_predicted"] - row["ctr_reference"] for row in with_reference
                       if row["ctr_predicted"] is not None], dtype=np.float64)
    summary["ctr_cases"] = len(with_reference)
    summary["ctr_not_predicted"] = len(with_reference) - int(errors.size)
    summary["ctr_mae"] = float(np.mean(np.abs(errors))) if errors.size else float("nan")
    summary["ctr_bias"] = float(np.mean(errors)) if errors.size else float("nan")
    seconds = np.array([row["seconds"] for row in rows], dtype=np.float64)
    summary["seconds_per_image"] = float(np.nanmean(seconds)) if np.isfinite(seconds).any() else float("nan")
    return summary


def evaluate_detector(detector: Detector, cases: Sequence[WingspanCase], progress: Progress | None = None) -> dict:
    """Run ``detector`` on every case and score it against the reference masks.

    Returns {"detector": name, "rows": [one :func:`score_case` dict per case], "summary": :func:`summarise`}.
    Times are wall-clock seconds of ``detector.detect`` alone. ``progress`` is reported per case (Cancel).
    """
    progress = Progress.ensure(progress)
    cases = list(cases)
    if not cases:
        raise InputError("There are no cases to evaluate.", "Load cases with scanai.chest.wingspan.load_cases.")
    rows = []
    for _, case in progress.iterate(cases, "evaluating"):
        start = time.perf_counter()
        detections = detector.detect(case.image)
        rows.append(score_case(detections, case, time.perf_counter() - start))
    return {"detector": getattr(detector, "name", type(detector).__name__), "rows": rows,
            "summary": summarise(rows)}
