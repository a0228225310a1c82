"""Threshold calibration on labelled radiographs (US 2020/0211186 ¶0112-0124; digest §3.3 "Threshold calibration").

For each criterion, cases labelled as meeting (True) or failing (False) the imaging standard are measured with the
same formulas as the grade (:mod:`scanai.chest.metrics`), every candidate threshold on a grid inside the patent's
interval predicts pass/fail, and the candidate with the highest accuracy against the labels is kept (ties: the
middle of the longest run of best candidates, i.e. the middle of the gap between the classes). It is accepted only
when its accuracy reaches the preset rate; otherwise the starting threshold is kept.

=================  =====================  ========================================================  ============
criterion          thresholds             candidate grid                                             min accuracy
=================  =====================  ========================================================  ============
scapula            t2, t3 (and t1 when    t1 0.009-0.028 (patent, 500 images); t2 0.010-0.100 and    0.90 (patent)
                   C1 is enabled)         t3 0.003-0.030 (ours: around the defaults 0.05 / 0.015,
                                          covering the phantom's 0.038-0.083 / 0.011-0.024)
lung               d_top, d_bottom,       top/bottom 0.031-0.062, left/right 0.012-0.035 (patent)    0.90 (ours)
                   d_left, d_right
foreign_object     tc                     0.20-0.80 (patent)                                         0.90 (ours)
spine              to                     0.020-0.070 (patent, 490 images)                           0.95 (patent)
=================  =====================  ========================================================  ============

A criterion with several thresholds (scapula, lung) is calibrated jointly, as the grade uses them: a case is
predicted to pass when all its tests pass; each threshold is scanned in turn with the others fixed, a few rounds
(coordinate ascent), starting from the given thresholds.

Command::

    python -m scanai.chest.calibrate CASES.csv --out thresholds.json [--backend network|classical]

CASES.csv has a column ``image`` (a path relative to the CSV) and one or more label columns ``scapula_ok``,
``lung_ok``, ``foreign_object_ok``, ``spine_ok`` (1 = meets the standard, 0 = fails, blank = not labelled).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from scanai.chest.detection import Detections
from scanai.chest.measurements import (
    foreign_object_confidence,
    foreign_objects_inside_lung,
    lung_margins,
    scapula_ratios,
    spine_offset,
)
from scanai.chest.thresholds import THRESHOLD_PROFILES, Thresholds
from scanai.core.errors import InputError, ScanAIError
from scanai.core.progress import Progress


@dataclass(frozen=True)
class Calibration:
    """The result of scanning one threshold: the chosen ``threshold``, its ``accuracy`` against the labels,
    whether it is ``accepted`` (accuracy >= ``min_accuracy``; always True without a minimum), and every candidate
    with its accuracy. ``n_pass`` / ``n_fail`` count the labelled cases."""

    threshold: float
    accuracy: float
    accepted: bool
    candidates: tuple[float, ...]
    accuracies: tuple[float, ...]
    parameter: str = ""
    comparator: str = "<="
    min_accuracy: float | None = None
    n_pass: int = 0
    n_fail: int = 0


@dataclass(frozen=True)
class Parameter:
    """One calibratable threshold: the :func:`quantities` key it tests, how (``<=`` passes below, ``>=`` above),
    and its candidate grid ``low`` .. ``high`` in steps of ``step``."""

    quantity: str
    comparator: str
    low: float
    high: float
    step: float

    def candidates(self) -> np.ndarray:
        """The candidate grid (both ends included)."""
        count = int(round((self.high - self.low) / self.step)) + 1
        return np.round(np.linspace(self.low, self.high, count), 10)


#: Threshold field of :class:`~scanai.chest.metrics.Thresholds` -> its candidate grid (see the module docstring).
PARAMETERS: dict[str, Parameter] = {
    "t1": Parameter("C1", "<=", 0.009, 0.028, 0.0005),
    "t2": Parameter("C2", "<=", 0.010, 0.100, 0.001),
    "t3": Parameter("C3", "<=", 0.003, 0.030, 0.0005),
    "d_top": Parameter("C4_top", ">=", 0.031, 0.062, 0.001),
    "d_bottom": Parameter("C4_bottom", ">=", 0.031, 0.062, 0.001),
    "d_left": Parameter("C4_left", ">=", 0.012, 0.035, 0.001),
    "d_right": Parameter("C4_right", ">=", 0.012, 0.035, 0.001),
    "tc": Parameter("C5", "<=", 0.20, 0.80, 0.01),
    "to": Parameter("C6", "<=", 0.020, 0.070, 0.001),
}
#: Criterion -> (its thresholds, minimum accuracy). Scapula: t1 joins when C1 is enabled in the base thresholds.
CRITERIA: dict[str, tuple[tuple[str, ...], float]] = {
    "scapula": (("t1", "t2", "t3"), 0.90),
    "lung": (("d_top", "d_bottom", "d_left", "d_right"), 0.90),
    "foreign_object": (("tc",), 0.90),
    "spine": (("to",), 0.95),
}
#: CSV label column -> criterion.
LABEL_COLUMNS = {"scapula_ok": "scapula", "lung_ok": "lung", "foreign_object_ok": "foreign_object",
                 "spine_ok": "spine"}


# ---------------------------------------------------------------------------------------------------------------
# Scanning
# ---------------------------------------------------------------------------------------------------------------

def _predict(values: np.ndarray, threshold: float, comparator: str) -> np.ndarray:
    """Pass/fail per case (NaN values fail, as a missing object fails its test)."""
    with np.errstate(invalid="ignore"):
        return values <= threshold if comparator == "<=" else values >= threshold


def _middle_of_best_run(accuracies: np.ndarray) -> int:
    """Index of the middle (lower middle for an even count) of the longest run of maximal accuracies."""
    best = accuracies.max()
    is_best = accuracies >= best - 1e-12
    runs, start = [], None
    for index, flag in enumerate([*is_best, False]):
        if flag and start is None:
            start = index
        elif not flag and start is not None:
            runs.append((start, index - start))
            start = None
    first, length = max(runs, key=lambda run: run[1])  # max keeps the first of equally long runs
    return first + (length - 1) // 2


def _check_labels(labels: Sequence, count: int | None = None) -> np.ndarray:
    array = np.asarray(labels, dtype=object).ravel()
    if count is not None and array.size != count:
        raise InputError(f"There are {array.size} labels for {count} cases.", "Give one label per case.")
    if array.size == 0:
        raise InputError("There are no labelled cases to calibrate on.", "Label some images (1 = ok, 0 = fails).")
    for label in array:
        if not (isinstance(label, bool | np.bool_) or (isinstance(label, int | np.integer) and label in (0, 1))):
            raise InputError(f"A label is {label!r}; labels must be True/False or 1/0.",
                             "Use 1 for an image that meets the standard and 0 for one that fails it.")
    return array.astype(bool)


def _comparator(comparator: str) -> str:
    if comparator not in ("<=", ">="):
        raise InputError(f"The comparator must be '<=' or '>=', got {comparator!r}.",
                         "Use '<=' when values below the threshold pass, '>=' when values above it pass.")
    return comparator


def _calibration(candidates: np.ndarray, accuracies: np.ndarray, labels: np.ndarray, parameter: str,
                 comparator: str, min_accuracy: float | None) -> Calibration:
    pick = _middle_of_best_run(accuracies)
    accuracy = float(accuracies[pick])
    return Calibration(float(candidates[pick]), accuracy, min_accuracy is None or accuracy >= min_accuracy,
                       tuple(float(c) for c in candidates), tuple(float(a) for a in accuracies), parameter,
                       comparator, min_accuracy, int(labels.sum()), int((~labels).sum()))


def calibrate_threshold(values: Sequence[float], labels: Sequence[bool], candidates: Sequence[float],
                        comparator: str = "<=", min_accuracy: float | None = None) -> Calibration:
    """Scan ``candidates`` for the threshold that best reproduces ``labels`` (¶0113, ¶0120, ¶0124).

    values:     (N,) measured quantity per case (NaN = not measurable: predicted to fail).
    labels:     (N,) True when the case meets the standard.
    candidates: thresholds to try (sorted here). comparator: "<=" (a value at or below the threshold passes) or
                ">=" (at or above passes). min_accuracy: the preset rate for acceptance (None: always accepted).
    Ties in accuracy: the middle of the longest run of best candidates.
    """
    comparator = _comparator(comparator)
    values = np.asarray(values, dtype=np.float64).ravel()
    truth = _check_labels(labels, values.size)
    grid = np.unique(np.asarray(candidates, dtype=np.float64).ravel())
    if grid.size == 0 or not np.isfinite(grid).all():
        raise InputError("The candidate thresholds are empty or not all numbers.", "Give a grid of finite values.")
    if min_accuracy is not None and not 0.0 <= min_accuracy <= 1.0:
        raise InputError(f"min_accuracy must be in [0, 1], got {min_accuracy}.", "Give a fraction such as 0.95.")
    accuracies = np.array([np.mean(_predict(values, c, comparator) == truth) for c in grid])
    return _calibration(grid, accuracies, truth, "", comparator, min_accuracy)


# ---------------------------------------------------------------------------------------------------------------
# From detections
# ---------------------------------------------------------------------------------------------------------------

def quantities(detections: Detections, thresholds: Thresholds | None = None) -> dict[str, float]:
    """What C1-C6 measure on one radiograph (the formulas of :mod:`scanai.chest.metrics`): C1, C2, C3, C4_top,
    C4_bottom, C4_left, C4_right, C5 (max foreign-object confidence), C6 (|spine offset|), and fo_inside_lung (1.0
    when a foreign object that fails C5 under ``thresholds`` lies inside the lung). NaN when not measurable (no
    lung for C4, no spine for C6)."""
    thresholds = thresholds if thresholds is not None else Thresholds()
    c1, c2, c3 = scapula_ratios(detections)
    margins = lung_margins(detections) or {}
    offset = spine_offset(detections)
    values = {"C1": c1, "C2": c2, "C3": c3}
    values.update({f"C4_{side}": float(margins.get(side, math.nan)) for side in ("top", "bottom", "left", "right")})
    values["C5"] = foreign_object_confidence(detections)
    values["C6"] = abs(offset) if offset is not None else math.nan
    values["fo_inside_lung"] = 1.0 if foreign_objects_inside_lung(detections, thresholds) else 0.0
    return values


def _calibrate_jointly(table: dict[str, np.ndarray], truth: np.ndarray, names: Sequence[str], start: Thresholds,
                       min_accuracy: float, rounds: int = 3) -> dict[str, Calibration]:
    """Coordinate ascent over the thresholds ``names`` of one criterion (a case passes when all its tests pass)."""
    current = {name: float(getattr(start, name)) for name in names}
    results: dict[str, Calibration] = {}
    for _ in range(rounds):
        changed = False
        for name in names:
            parameter = PARAMETERS[name]
            others = np.ones(truth.size, dtype=bool)
            for other in names:
                if other != name:
                    others &= _predict(table[PARAMETERS[other].quantity], current[other], PARAMETERS[other].comparator)
            grid = parameter.candidates()
            values = table[parameter.quantity]
            accuracies = np.array([np.mean((_predict(values, c, parameter.comparator) & others) == truth)
                                   for c in grid])
            results[name] = _calibration(grid, accuracies, truth, name, parameter.comparator, min_accuracy)
            changed |= results[name].threshold != current[name]
            current[name] = results[name].threshold
        if not changed:
            break
    final = np.ones(truth.size, dtype=bool)  # the joint accuracy of the final set decides acceptance
    for name in names:
        final &= _predict(table[PARAMETERS[name].quantity], current[name], PARAMETERS[name].comparator)
    accuracy = float(np.mean(final == truth))
    return {name: replace(result, accuracy=accuracy, accepted=accuracy >= min_accuracy)
            for name, result in results.items()}


def calibrate_cases(detections_list: Sequence[Detections], labels: Mapping[str, Sequence[bool | None]],
                    base: Thresholds | None = None) -> tuple[Thresholds, dict[str, Calibration]]:
    """Calibrate the thresholds of each labelled criterion on a set of radiographs.

    detections_list: one :class:`Detections` per case. labels: criterion ("scapula", "lung", "foreign_object",
    "spine") -> one label per case (True = meets the standard, None = not labelled, skipped). base: the starting
    thresholds (default: the defaults). Returns the thresholds with every *accepted* calibration applied (rejected
    ones keep the base value) and threshold name -> :class:`Calibration`.
    """
    base = base if base is not None else Thresholds()
    unknown = sorted(set(labels) - set(CRITERIA))
    if unknown:
        raise InputError(f"Unknown calibration criteria {unknown}.", f"Use names from {sorted(CRITERIA)}.")
    rows = [quantities(detections, base) for detections in detections_list]
    if not rows:
        raise InputError("There are no cases to calibrate on.", "Give at least one labelled radiograph.")
    results: dict[str, Calibration] = {}
    updates: dict[str, float] = {}
    for criterion, case_labels in labels.items():
        case_labels = list(case_labels)
        if len(case_labels) != len(rows):
            raise InputError(f"The '{criterion}' labels number {len(case_labels)} for {len(rows)} cases.",
                             "Give one label per case (None for a case without this label).")
        keep = [index for index, label in enumerate(case_labels) if label is not None]
        if not keep:
            continue
        truth = _check_labels([case_labels[index] for index in keep])
        names, min_accuracy = CRITERIA[criterion]
        if criterion == "scapula":
            names = tuple(name for name, enabled in zip(names, (base.c1_enabled, base.c2_enabled, base.c3_enabled),
                                                        strict=True) if enabled)
            if not names:
                continue
        table = {key: np.array([rows[index][key] for index in keep]) for key in rows[0]}
        calibrations = _calibrate_jointly(table, truth, names, base, min_accuracy)
        results.update(calibrations)
        updates.update({name: result.threshold for name, result in calibrations.items() if result.accepted})
    return (replace(base, **updates) if updates else base), results


def calibration_table(results: Mapping[str, Calibration], base: Thresholds) -> str:
    """A plain-text table of the calibrations (one line per threshold)."""
    criterion_of = {name: criterion for criterion, (names, _rate) in CRITERIA.items() for name in names}
    lines = [f"{'criterion':<15} {'threshold':<9} {'before':>8} {'chosen':>8} {'accuracy':>9} {'minimum':>8} "
             f"{'pass/fail':>10}  result"]
    for name, result in results.items():
        verdict = "accepted" if result.accepted else "REJECTED (kept the starting value)"
        lines.append(f"{criterion_of.get(name, ''):<15} {name:<9} {getattr(base, name):>8.4g} {result.threshold:>8.4g} "
                     f"{result.accuracy:>9.3f} {result.min_accuracy or 0:>8.2f} "
                     f"{f'{result.n_pass}/{result.n_fail}':>10}  {verdict}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Command
# ---------------------------------------------------------------------------------------------------------------

def _parse_label(text: str | None, column: str, line: int) -> bool | None:
    value = (text or "").strip().lower()
    if value == "":
        return None
    if value in ("1", "true", "yes", "ok"):
        return True
    if value in ("0", "false", "no", "fail"):
        return False
    raise InputError(f"Row {line} of the cases file has '{text}' in column {column}.",
                     "Use 1 (meets the standard), 0 (fails) or leave it blank.")


def read_cases(path: str | Path) -> tuple[list[Path], dict[str, list[bool | None]]]:
    """(image paths, criterion -> labels) from a cases CSV (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The cases file {path} does not exist.", "Check the path.")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        columns = [name for name in header if name in LABEL_COLUMNS]
        if "image" not in header or not columns:
            raise InputError(f"{path.name} needs a column 'image' and at least one of {list(LABEL_COLUMNS)}; it has "
                             f"{header}.", "Add the missing columns (1 = ok, 0 = fails).")
        images: list[Path] = []
        labels: dict[str, list[bool | None]] = {LABEL_COLUMNS[column]: [] for column in columns}
        for line, row in enumerate(reader, start=2):
            row = {(key or "").strip(): value for key, value in row.items()}
            if not (row.get("image") or "").strip():
                continue
            images.append((path.parent / row["image"].strip()).resolve())
            for column in columns:
                labels[LABEL_COLUMNS[column]].append(_parse_label(row.get(column), column, line))
    if not images:
        raise InputError(f"{path.name} lists no images.", "Add one row per labelled image.")
    return images, labels


def detect_cases(images: Sequence[Path], backend: str, progress: Progress | None = None
                 ) -> tuple[list[Detections], list[int], list[str]]:
    """Run detector ``backend`` on each image: (detections, indices of the images used, warnings for the ones
    that could not be read)."""
    from scanai.chest.io import read_radiograph
    from scanai.chest.pipeline import detector_by_name

    progress = Progress.ensure(progress)
    detector = detector_by_name(backend)
    found, used, warnings = [], [], []
    for index, image in progress.iterate(images, "Detecting"):
        try:
            radiograph = read_radiograph(image)
            part = progress.sub(index / len(images), (index + 1) / len(images))
            found.append(detector.detect(radiograph.image.array[0], part))
            used.append(index)
        except InputError as error:  # FileFormatError included: skip the case, say so
            warnings.append(f"{image.name}: skipped ({error})")
    return found, used, warnings


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m scanai.chest.calibrate``."""
    parser = argparse.ArgumentParser(
        prog="python -m scanai.chest.calibrate",
        description="Calibrate the ChestQC thresholds on labelled radiographs (US 2020/0211186 ¶0112-0124).")
    parser.add_argument("cases", type=Path, help="CSV with a column 'image' (path relative to the CSV) and label "
                        "columns among scapula_ok, lung_ok, foreign_object_ok, spine_ok (1 = ok, 0 = fails)")
    parser.add_argument("--out", type=Path, default=Path("thresholds.json"),
                        help="thresholds JSON to write (default: thresholds.json)")
    parser.add_argument("--backend", default="network", help="detector: network (default) or classical")
    parser.add_argument("--base", type=Path, default=None, help="starting thresholds JSON (default: the profile)")
    parser.add_argument("--profile", choices=sorted(THRESHOLD_PROFILES), default="default",
                        help="starting threshold profile when --base is not given (default: default)")
    parser.add_argument("--quantities", type=Path, default=None,
                        help="also write the measured C1-C6 quantities of every case to this CSV")
    return parser


def _write_quantities(path: Path, images: Sequence[Path], rows: Sequence[dict[str, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        keys = list(rows[0]) if rows else []
        writer.writerow(["image", *keys])
        for image, row in zip(images, rows, strict=True):
            writer.writerow([str(image), *(f"{row[key]:.6g}" for key in keys)])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the calibration command; returns the exit status (2 for a user error)."""
    from scanai.core.progress import tqdm_progress

    args = build_parser().parse_args(argv)
    try:
        base = Thresholds.from_json(args.base) if args.base else THRESHOLD_PROFILES[args.profile]
        images, labels = read_cases(args.cases)
        with tqdm_progress("Calibration") as progress:
            found, used, warnings = detect_cases(images, args.backend, progress)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if not found:
            raise InputError("None of the images could be read.", "Check the paths in the cases file.")
        used_labels = {criterion: [values[index] for index in used] for criterion, values in labels.items()}
        thresholds, results = calibrate_cases(found, used_labels, base)
        thresholds = replace(thresholds, name=f"calibrated ({len(found)} images, {args.backend})")
        print(f"{len(found)} of {len(images)} images measured with the {args.backend} detector.")
        print(calibration_table(results, base))
        if args.quantities:
            _write_quantities(args.quantities, [images[index] for index in used],
                              [quantities(detections, base) for detections in found])
        path = thresholds.to_json(args.out)
        print(f"Thresholds written to {path}")
        return 0
    except ScanAIError as error:
        print(f"calibrate: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
