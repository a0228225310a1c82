"""The Wingspan chest set (``../shared/data/chest/wingspan``): 259 real frontal radiographs with left-lung,
right-lung and heart masks, and reference cardiothoracic ratios for 220 of them (MIT; Dong et al., MICCAI 2018/2019).

The images are 512 x 512 8-bit grey, resampled without keeping the aspect ratio, so they carry no pixel size.
Masks are anti-aliased and thresholded at > 127. The split into training and validation images is fixed in
``wingspan_split.json`` next to this file (80/20 by image, made once by :func:`make_split`); never train on the
validation images.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scanai.core.errors import InputError

SPLIT_FILE = Path(__file__).with_name("wingspan_split.json")
#: Source annotation errors corrected on loading: image id -> the two mask names whose files are swapped. Found by
#: where the masks lie (the "left lung" of this image sits in the lower mediastinum and its "heart" over the upper
#: left lung); it is the only such case among the 259 images and it is in the validation split.
SWAPPED_MASKS = {"1.2.410.200048.10757.20170517111459.png": ("lung_left", "heart")}
#: Mask folder -> object name (patient sides: the left lung is on the image right).
MASK_FOLDERS = {"right_lung": "lung_right", "left_lung": "lung_left", "heart": "heart"}


@dataclass(frozen=True)
class WingspanCase:
    """One radiograph: ``image`` (512, 512) float32 grey 0..255, ``masks`` name -> (512, 512) bool
    (``lung_right``, ``lung_left``, ``heart``), ``ctr`` the reference ratio or None."""

    case_id: str
    image: np.ndarray
    masks: dict[str, np.ndarray]
    ctr: float | None


def _read_grey(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def case_ids(root: Path) -> list[str]:
    """Sorted image ids (file names) in ``root/png``."""
    ids = sorted(path.name for path in (Path(root) / "png").glob("*.png"))
    if not ids:
        raise InputError(f"No Wingspan images were found in {Path(root) / 'png'}.",
                         "Point to ../shared/data/chest/wingspan.")
    return ids


def reference_ctr(root: Path) -> dict[str, float]:
    """Image id -> reference cardiothoracic ratio from ``ctr_ground_truth.csv``."""
    with open(Path(root) / "ctr_ground_truth.csv", newline="") as handle:
        return {row["id"]: float(row["ctr"]) for row in csv.DictReader(handle)}


def load_case(root: Path, case_id: str, ctr: dict[str, float] | None = None) -> WingspanCase:
    """Read one image and its three masks (with the known annotation errors of :data:`SWAPPED_MASKS` corrected)."""
    root = Path(root)
    image = _read_grey(root / "png" / case_id).astype(np.float32)
    if image.ndim == 3:
        image = image[..., 0]
    masks = {name: _read_grey(root / "mask" / folder / case_id) > 127 for folder, name in MASK_FOLDERS.items()}
    if case_id in SWAPPED_MASKS:
        first, second = SWAPPED_MASKS[case_id]
        masks[first], masks[second] = masks[second], masks[first]
    return WingspanCase(case_id, image, masks, (ctr or {}).get(case_id))


def make_split(root: Path, seed: int = 20261121, validation_fraction: float = 0.2) -> dict[str, list[str]]:
    """A seeded random 80/20 split of the image ids: {"train": [...], "validation": [...]} (sorted)."""
    ids = case_ids(root)
    order = np.random.default_rng(seed).permutation(len(ids))
    count = int(round(validation_fraction * len(ids)))
    validation = sorted(ids[k] for k in order[:count])
    return {"seed": seed, "train": sorted(set(ids) - set(validation)), "validation": validation}


def split() -> dict[str, list[str]]:
    """The fixed split shipped with the library."""
    return json.loads(SPLIT_FILE.read_text())


def load_cases(root: Path, part: str) -> list[WingspanCase]:
    """All cases of one part of the fixed split ("train" or "validation")."""
    ctr = reference_ctr(root)
    return [load_case(root, case_id, ctr) for case_id in split()[part]]
