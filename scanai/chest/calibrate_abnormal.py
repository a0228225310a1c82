"""Calibrate the decision rule of the experimental abnormal findings (:mod:`scanai.chest.abnormal`) on real normal
radiographs, and measure what it costs on composites.

Command (seeded, deterministic; 5-10 minutes on 2 CPU cores: 263 radiographs and 934 composites)::

    python -m scanai.chest.calibrate_abnormal --data ../shared/data/chest [--write] [--out report.json]

1. Real negatives. No radiograph of ``../shared/data/chest`` has a pneumothorax or an effusion. The 207 Wingspan
   training images of the fixed split calibrate; the 52 validation images and the NIH files (two PNGs, the DICOM and
   its MONOCHROME1 copy) are held out. Each is analysed as a user's file is
   (:func:`~scanai.chest.pipeline.analyse_file`, experimental objects on) and reduced, per part, to the (ratio,
   confidence) of its strongest plausible region
   (:func:`~scanai.chest.abnormal.strongest`). A radiograph counts as a false positive when the rule finds the part,
   whatever its quality grade (a finding is shown only on usable radiographs, so fewer are shown).
2. Composites. The project's generator paints a pneumothorax or an effusion covering a fraction of both lungs' pixels
   into a real radiograph, as training does (:func:`~scanai.chest.generator.add_pneumothorax`,
   :func:`~scanai.chest.generator.add_effusion`). Training images get one composite per part (the fractions of
   :data:`FRACTIONS` and the two sides in turn); validation images get every fraction. A composite that does not fit
   in the lung is skipped.
3. Choice, from training images only: on the grid :data:`RATIO_GRID` x :data:`CONFIDENCE_GRID`, the pairs with a
   false-positive rate <= :data:`MAX_TRAIN_FPR` on the training negatives; of these the ones with the highest mean
   sensitivity over the fractions on the training composites (so detection is not simply switched off), then the
   lowest training false-positive rate. Remaining ties are broken as :mod:`scanai.chest.calibrate` breaks them, by the
   middle of the longest run of tied candidates (the middle of the gap between the classes): first the confidence,
   then the ratio at that confidence.
4. Held-out check: the false-positive rate on the validation and NIH radiographs (target <= :data:`HELD_OUT_FPR`)
   and the sensitivity per fraction on the validation composites, at the chosen thresholds.
5. ``--write``: the thresholds become the :class:`~scanai.chest.thresholds.Thresholds` defaults (thresholds.py) and
   the figures go into the model card (``extra.objects`` pneumothorax / effusion and ``extra.abnormal_calibration``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scanai.chest.abnormal import PARTS, Region, abnormal_regions, strongest
from scanai.chest.calibrate import _middle_of_best_run
from scanai.chest.detection import Detector
from scanai.chest.thresholds import Thresholds
from scanai.chest.wingspan import WingspanCase, load_cases, split
from scanai.core.errors import InputError, ScanAIError
from scanai.core.progress import Progress

#: Composite sizes: fraction of both lungs' pixels (the training range is 0.03-0.4). Severity by the default
#: levels (low 0.10, high 0.40): 0.05 "self-healing", 0.10-0.30 "present", 0.40 the border of "high-risk".
FRACTIONS = (0.05, 0.10, 0.20, 0.30, 0.40)
#: Candidate thresholds: extent ratio 0 .. 0.30 by 0.005, confidence 0.5 .. 0.999 by 0.001.
RATIO_GRID = np.round(np.arange(0, 61) * 0.005, 4)
CONFIDENCE_GRID = np.round(0.5 + np.arange(0, 500) * 0.001, 4)
MAX_TRAIN_FPR = 0.01
HELD_OUT_FPR = 0.02
SEED = 20261206
THRESHOLDS_FILE = Path(__file__).with_name("thresholds.py")
CARD_FILE = Path(__file__).resolve().parent.parent / "models" / "chest_detector.json"
CARD_PREFIX = "experimental, off by default: "


@dataclass(frozen=True)
class Scores:
    """Per radiograph, for one part: (N,) ``ratio`` of the strongest plausible region (0 when none), (N,) the part's
    network ``confidence`` (0 when not detected), (N,) ``names`` (file or case names) and (N,) ``unplaced``: the ratio
    of the largest region whatever its place (what the rule would see without its place tests)."""

    ratio: np.ndarray
    confidence: np.ndarray
    names: tuple[str, ...]
    unplaced: np.ndarray

    def found(self, min_ratio: float, min_confidence: float, place: bool = True) -> np.ndarray:
        """(N,) bool: whether the rule finds the part on each radiograph at these thresholds (``place=False``:
        without its place tests)."""
        return ((self.ratio if place else self.unplaced) > min_ratio) & (self.confidence > min_confidence)

    def found_on_grid(self) -> np.ndarray:
        """(len(RATIO_GRID), len(CONFIDENCE_GRID)) number of radiographs found at every grid pair."""
        over_ratio = self.ratio[None, :] > RATIO_GRID[:, None]  # (R, N)
        over_confidence = self.confidence[None, :] > CONFIDENCE_GRID[:, None]  # (C, N)
        return over_ratio.astype(np.int32) @ over_confidence.T.astype(np.int32)


Row = tuple[str, float, float, float]


def _row(name: str, regions: Sequence[Region]) -> Row:
    """(name, ratio of the strongest plausible region, the part's confidence, ratio of the largest region)."""
    return name, strongest(regions)[0], regions[0].confidence if regions else 0.0, strongest(regions, False)[0]


def _scores(rows: Sequence[Row]) -> Scores:
    columns = list(zip(*rows, strict=True)) if rows else [(), (), (), ()]
    return Scores(np.array(columns[1], dtype=np.float64), np.array(columns[2], dtype=np.float64), tuple(columns[0]),
                  np.array(columns[3], dtype=np.float64))


# ---------------------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------------------

def real_files(data: Path) -> dict[str, list[Path]]:
    """The real radiographs of ``data`` (``../shared/data/chest``): "train" and "validation" (the Wingspan split) and
    "nih" (every PNG and DICOM file directly in ``data``)."""
    data = Path(data)
    png = data / "wingspan" / "png"
    if not png.is_dir():
        raise InputError(f"No Wingspan images in {png}.", "Point --data at ../shared/data/chest.")
    parts = split()
    nih = sorted(path for path in data.iterdir() if path.is_file() and path.suffix.lower() in (".png", ".dcm"))
    return {"train": [png / name for name in parts["train"]],
            "validation": [png / name for name in parts["validation"]], "nih": nih}


def measure_files(detector: Detector, paths: Sequence[Path], progress: Progress | None = None
                  ) -> tuple[dict[str, Scores], dict[str, Any]]:
    """Per part the :class:`Scores` of real radiographs read from ``paths`` and analysed as a user's file (experimental
    on), and a summary: ``files``, ``not_assessed`` (no detection ran: inverted or not frontal), ``usable`` (FIRST or
    INTERMEDIATE)."""
    from scanai.chest.pipeline import analyse_file

    progress = Progress.ensure(progress)
    rows: dict[str, list[Row]] = {part: [] for part in PARTS}
    summary = {"files": len(paths), "not_assessed": 0, "usable": 0}
    for _, path in progress.iterate(paths, "real radiographs"):
        result = analyse_file(path, detector, Thresholds(experimental=True))
        summary["usable"] += int(result.assessment.usable)
        if result.detections is None:
            summary["not_assessed"] += 1
        for part in PARTS:
            regions = abnormal_regions(result.detections, part) if result.detections is not None else []
            rows[part].append(_row(Path(path).name, regions))
    return {part: _scores(part_rows) for part, part_rows in rows.items()}, summary


def composite_image(case: WingspanCase, part: str, fraction: float, side: str, rng: np.random.Generator
                    ) -> np.ndarray | None:
    """(rows, cols) float64 grey 0..255: ``case``'s radiograph with a ``part`` covering ``fraction`` of both lungs'
    pixels painted into its ``side`` lung by the project's generator (on its reference masks), or None when it does
    not fit."""
    from scanai.chest import generator
    from scanai.chest.phantom import ChestPhantom

    paint = {"pneumothorax": generator.add_pneumothorax, "effusion": generator.add_effusion}[part]
    phantom = ChestPhantom(np.asarray(case.image, dtype=np.float64) / 255.0, dict(case.masks), 1.0)
    try:
        return paint(phantom, rng, fraction, side).image * 255.0
    except InputError:
        return None


def measure_composites(detector: Detector, cases: Sequence[WingspanCase], plan: Sequence[tuple[int, str, float, str]],
                       progress: Progress | None = None) -> dict[str, dict[float, Scores]]:
    """part -> fraction -> :class:`Scores` of the composites in ``plan`` ((case index, part, fraction, side) each;
    the painting is seeded by :data:`SEED`, the case index, the part and the fraction, so the plan's order does not
    matter). Composites that do not fit are left out."""
    progress = Progress.ensure(progress)
    rows: dict[str, dict[float, list[Row]]] = {part: {} for part in PARTS}
    for _, (index, part, fraction, side) in progress.iterate(plan, "composites"):
        rng = np.random.default_rng([SEED, index, PARTS.index(part), int(round(1000 * fraction))])
        image = composite_image(cases[index], part, fraction, side, rng)
        if image is None:
            continue
        regions = abnormal_regions(detector.detect(image), part)
        rows[part].setdefault(fraction, []).append(_row(f"{cases[index].case_id}:{side}", regions))
    return {part: {fraction: _scores(found) for fraction, found in sorted(by_fraction.items())}
            for part, by_fraction in rows.items()}


def training_plan(count: int) -> list[tuple[int, str, float, str]]:
    """One composite per training image and part: the fractions in turn, the sides in turn every len(FRACTIONS)."""
    return [(index, part, FRACTIONS[index % len(FRACTIONS)], ("right", "left")[(index // len(FRACTIONS)) % 2])
            for index in range(count) for part in PARTS]


def validation_plan(count: int) -> list[tuple[int, str, float, str]]:
    """Every fraction on every validation image and part, the sides alternating."""
    return [(index, part, fraction, ("right", "left")[(index + step) % 2]) for index in range(count)
            for part in PARTS for step, fraction in enumerate(FRACTIONS)]


# ---------------------------------------------------------------------------------------------------------------
# Choosing
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Choice:
    """The chosen ``min_ratio`` and ``min_confidence`` of one part, its training false positives ``fp`` of ``n``,
    and its mean sensitivity on the training composites."""

    min_ratio: float
    min_confidence: float
    fp: int
    n: int
    sensitivity: float


def choose(negatives: Scores, positives: dict[float, Scores], max_fpr: float = MAX_TRAIN_FPR) -> Choice:
    """The thresholds of step 3 of the module docstring: FPR on ``negatives`` <= ``max_fpr``, then the highest mean
    sensitivity over the fractions of ``positives``, then the lowest FPR; then the middle of the longest run of tied
    confidences, and of tied ratios at it."""
    n = negatives.ratio.size
    if n == 0:
        raise InputError("There are no negative radiographs to calibrate on.", "Point --data at ../shared/data/chest.")
    false = negatives.found_on_grid()
    rates = [scores.found_on_grid() / max(1, scores.ratio.size) for scores in positives.values() if scores.ratio.size]
    sensitivity = np.mean(rates, axis=0) if rates else np.zeros_like(false, dtype=np.float64)
    allowed = false <= max_fpr * n + 1e-9
    if not allowed.any():
        raise InputError(f"No threshold pair reaches a false-positive rate of {max_fpr:.0%}.", "Widen the grids.")
    key = np.where(allowed, np.round(sensitivity, 9), -1.0)  # rounded against float noise
    best = key == key.max()
    best &= false == false[best].min()
    c = _middle_of_best_run(best.any(axis=0).astype(np.float64))
    r = _middle_of_best_run(best[:, c].astype(np.float64))
    return Choice(float(RATIO_GRID[r]), float(CONFIDENCE_GRID[c]), int(false[r, c]), n, float(sensitivity[r, c]))


def rate(scores: Scores, min_ratio: float, min_confidence: float, place: bool = True) -> dict[str, Any]:
    """{"found": count, "n": count, "rate": fraction, "files": names found} at these thresholds (``place=False``:
    without the place tests)."""
    found = scores.found(min_ratio, min_confidence, place)
    count = int(found.sum())
    return {"found": count, "n": int(found.size), "rate": count / found.size if found.size else float("nan"),
            "files": [name for name, hit in zip(scores.names, found, strict=True) if hit]}


# ---------------------------------------------------------------------------------------------------------------
# The whole calibration
# ---------------------------------------------------------------------------------------------------------------

def calibrate(data: Path, detector: Detector, progress: Progress | None = None) -> dict[str, Any]:
    """Steps 1-4 of the module docstring on ``data`` (``../shared/data/chest``); a JSON-ready report with, per part,
    the chosen thresholds, the false positives per set and the composite sensitivity per fraction, and under
    ``scores`` every radiograph's and composite's (name, ratio, confidence)."""
    progress = Progress.ensure(progress)
    files = real_files(data)
    real: dict[str, dict[str, Scores]] = {}
    summaries: dict[str, dict[str, Any]] = {}
    for step, name in enumerate(("train", "validation", "nih")):
        real[name], summaries[name] = measure_files(detector, files[name], progress.sub(0.08 * step, 0.08 * (step + 1)))
    train_cases = load_cases(Path(data) / "wingspan", "train")
    train_composites = measure_composites(detector, train_cases, training_plan(len(train_cases)),
                                          progress.sub(0.24, 0.6))
    chosen = {part: choose(real["train"][part], train_composites[part]) for part in PARTS}
    validation_cases = load_cases(Path(data) / "wingspan", "validation")
    validation_composites = measure_composites(detector, validation_cases, validation_plan(len(validation_cases)),
                                               progress.sub(0.6, 1.0))
    report: dict[str, Any] = {
        "data": {"train": f"Wingspan training split ({len(files['train'])} normal radiographs; thresholds chosen here)",
                 "validation": f"Wingspan validation split ({len(files['validation'])} normal radiographs, held out)",
                 "nih": f"NIH ChestX-ray14 / RSNA files in ../shared/data/chest ({len(files['nih'])}: "
                        + ", ".join(path.name for path in files["nih"]) + "; held out)",
                 "composites": "scanai.chest.generator.add_pneumothorax / add_effusion on the reference lung masks; "
                               "train: one per image and part (fractions and sides in turn), validation: every "
                               "fraction per image and part",
                 "seed": SEED, "images": summaries},
        "rule": "scanai.chest.abnormal: a region counts when it lies in the thorax (on a lung field), touches the "
                "lateral/apical pleura above the costophrenic zone (pneumothorax) or the lower lung boundary reaching "
                "the costophrenic zone (effusion), and its extent |R| / |L u A| and the part's confidence exceed the "
                "thresholds; false positive = the rule finds the part on a normal radiograph, whatever its grade",
        "choice": f"training false-positive rate <= {MAX_TRAIN_FPR:.0%}, then the highest mean sensitivity on the "
                  "training composites, then the lowest training rate; remaining ties: the middle of the run of tied "
                  "confidences, then of tied ratios (as scanai.chest.calibrate)",
    }
    for part in PARTS:
        choice = chosen[part]
        r, c = choice.min_ratio, choice.min_confidence
        report[part] = {
            "thresholds": {f"{part}_min_ratio": r, f"{part}_min_confidence": c},
            "false_positives": {name: rate(real[name][part], r, c) for name in ("train", "validation", "nih")},
            "sensitivity_train_composites_mean": round(choice.sensitivity, 4),
            "sensitivity_validation_composites": {
                f"{fraction:g}": {key: value for key, value in rate(scores, r, c).items() if key != "files"}
                for fraction, scores in validation_composites[part].items()},
        }
        held = [real[name][part] for name in ("validation", "nih")]
        found = sum(int(scores.found(r, c).sum()) for scores in held)
        total = sum(scores.ratio.size for scores in held)
        report[part]["false_positives"]["held_out"] = {"found": found, "n": total, "rate": found / total}
        report[part]["without_place_tests"] = {  # the same thresholds, every region taken: what the place tests do
            "false_positives": {name: _count(rate(real[name][part], r, c, False)) for name in real},
            "validation_composites": {f"{fraction:g}": _count(rate(scores, r, c, False))
                                      for fraction, scores in validation_composites[part].items()}}
    report["scores"] = {  # per radiograph (name, ratio, confidence, unplaced ratio) for audits
        part: {**{name: _rows(real[name][part]) for name in real},
               "train_composites": {f"{f:g}": _rows(s) for f, s in train_composites[part].items()},
               "validation_composites": {f"{f:g}": _rows(s) for f, s in validation_composites[part].items()}}
        for part in PARTS}
    return report


def _count(found: dict[str, Any]) -> str:
    """ "found/n" of a :func:`rate` result."""
    return f"{found['found']}/{found['n']}"


def _rows(scores: Scores) -> list[Row]:
    return [(name, round(float(r), 6), round(float(c), 6), round(float(u), 6))
            for name, r, c, u in zip(scores.names, scores.ratio, scores.confidence, scores.unplaced, strict=True)]


def thresholds_of(report: dict[str, Any]) -> dict[str, float]:
    """The chosen Thresholds fields of a :func:`calibrate` report."""
    return {key: value for part in PARTS for key, value in report[part]["thresholds"].items()}


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------

def write_defaults(values: dict[str, float], path: Path = THRESHOLDS_FILE) -> Path:
    """Replace the default of each ``name: float = ...`` field of :class:`Thresholds` in ``path`` by ``values``."""
    text = Path(path).read_text()
    for name, value in values.items():
        pattern = re.compile(rf"^(    {re.escape(name)}: float = )[0-9.eE+-]+$", re.MULTILINE)
        text, count = pattern.subn(lambda match, v=value: f"{match.group(1)}{v!r}", text)
        if count != 1:
            raise InputError(f"The default of {name} was not found once in {path}.", "Restore thresholds.py.")
    Path(path).write_text(text)
    return Path(path)


def card_text(part: str, report: dict[str, Any]) -> str:
    """The model card's ``extra.objects`` sentence for ``part`` (starts with :data:`CARD_PREFIX`)."""
    entry = report[part]
    r, c = entry["thresholds"][f"{part}_min_ratio"], entry["thresholds"][f"{part}_min_confidence"]
    place = ("on the lateral/apical pleura" if part == "pneumothorax" else "at the lung base (costophrenic zone)")
    fp = entry["false_positives"]
    sens = ", ".join(f"{_count(value)} at {100 * float(fraction):g} %"
                     for fraction, value in entry["sensitivity_validation_composites"].items())
    return (f"{CARD_PREFIX}composited on real images; turned on, a region counts only {place}, above {100 * r:g} % "
            f"of the lung field and confidence {c:g} (scanai.chest.abnormal, calibrated on the Wingspan training "
            f"split: {_count(fp['train'])} normal radiographs flagged); held out, it is reported on "
            f"{_count(fp['validation'])} Wingspan validation and {_count(fp['nih'])} NIH radiographs, none of "
            f"which has one; composites on the validation images found: {sens} of both lungs' pixels")


def write_card(report: dict[str, Any], path: Path = CARD_FILE) -> Path:
    """Set ``extra.objects`` pneumothorax / effusion and ``extra.abnormal_calibration`` in the model card."""
    card = json.loads(Path(path).read_text())
    extra = card.setdefault("extra", {})
    for part in PARTS:
        extra.setdefault("objects", {})[part] = card_text(part, report)
    extra["abnormal_calibration"] = {
        "command": "python -m scanai.chest.calibrate_abnormal --data ../shared/data/chest --write",
        **{key: report[key] for key in ("data", "rule", "choice")},
        **{part: report[part] for part in PARTS},
    }
    Path(path).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    return Path(path)


def summary_text(report: dict[str, Any]) -> str:
    """A few lines per part: thresholds, false positives per set, sensitivity per composite fraction."""
    lines = []
    for part in PARTS:
        entry = report[part]
        fp = entry["false_positives"]
        lines.append(f"{part}: " + ", ".join(f"{k} = {v:g}" for k, v in entry["thresholds"].items()))
        lines.append("  false positives: " + ", ".join(f"{name} {_count(value)} ({100 * value['rate']:.1f} %)"
                                                      for name, value in fp.items()))
        lines.append("  validation composites found: " + ", ".join(
            f"{fraction} {_count(value)}" for fraction, value in entry["sensitivity_validation_composites"].items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """The command of the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m scanai.chest.calibrate_abnormal",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--data", default="../shared/data/chest", help="the real chest folder (../shared/data/chest)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--out", help="also write the whole report (JSON) here")
    parser.add_argument("--write", action="store_true",
                        help="write the thresholds into scanai/chest/thresholds.py and the figures into the model card")
    args = parser.parse_args(argv)
    try:
        from scanai.chest.network import load_chest_detector
        from scanai.core.device import set_determinism
        from scanai.core.progress import tqdm_progress

        set_determinism(SEED, 2)
        detector = load_chest_detector(args.device)
        with tqdm_progress("calibrating") as progress:
            report = calibrate(Path(args.data), detector, progress)
        print(summary_text(report))
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        if args.write:
            print(f"Written: {write_defaults(thresholds_of(report))}, {write_card(report)}")
        return 0
    except ScanAIError as error:
        print(f"calibrate_abnormal: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
