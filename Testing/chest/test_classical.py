"""ChestQC classical detector (the baseline beside the network) and the evaluation routine used for both.

Phantom tests use the phantom's exact masks as ground truth; the real-data test runs on the first Wingspan
validation images (never used to fit the detector's few shape constants) and skips without ../shared/data.
"""

from __future__ import annotations

import numpy as np
import pytest

from scanai.chest.classical import ClassicalDetector
from scanai.chest.detection import Detections, detections_from_masks
from scanai.chest.evaluate import (
    cardiothoracic_ratio,
    dice,
    evaluate_detector,
    horizontal_extent,
    score_case,
    summarise,
)
from scanai.chest.phantom import make_chest_phantom
from scanai.chest.wingspan import WingspanCase, load_case, reference_ctr, split
from scanai.core.errors import InputError
from scanai.core.progress import Progress

SIZE = 512
BUTTON_CENTRE = (0.45, 0.30)  # (v, u): inside the right lung (image left)
BUTTON_RADIUS = 0.012
MARKER = (slice(15, 45), slice(15, 45))  # a bright block in the top-left corner, outside the torso


def _uv(size: int) -> tuple[np.ndarray, np.ndarray]:
    centres = (np.arange(size) + 0.5) / size
    return np.meshgrid(centres, centres, indexing="ij")


@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom(SIZE)


@pytest.fixture(scope="module")
def button_mask():
    v, u = _uv(SIZE)
    return (v - BUTTON_CENTRE[0]) ** 2 + (u - BUTTON_CENTRE[1]) ** 2 <= BUTTON_RADIUS ** 2


@pytest.fixture(scope="module")
def detections(phantom, button_mask) -> Detections:
    """The phantom with a metal button in the right lung and an L/R marker block in the air."""
    image = phantom.image.copy()
    image[button_mask] = 1.0
    image[MARKER] = 1.0
    return ClassicalDetector().detect(image)


# ------------------------------------------------------------------------------------------ phantom


def test_phantom_lungs_body_and_spine_match_ground_truth(phantom, detections):
    assert detections.backend == "classical" and detections.shape == (SIZE, SIZE)
    assert dice(detections.mask("lung_right"), phantom.masks["right_lung"]) >= 0.9
    assert dice(detections.mask("lung_left"), phantom.masks["left_lung"]) >= 0.9
    # patient right lung on the image left
    assert detections.objects["lung_right"].box.centre[1] < SIZE / 2 < detections.objects["lung_left"].box.centre[1]
    assert dice(detections.body, phantom.masks["torso"]) >= 0.95
    spine = detections.mask("spine")
    assert spine.any()
    truth_centre = np.nonzero(phantom.masks["spine"])[1].mean()
    rows = np.flatnonzero(spine.any(axis=1))
    centres = [np.flatnonzero(spine[row]).mean() for row in rows]
    assert abs(np.mean(centres) - truth_centre) <= 0.01 * SIZE
    assert np.ptp(centres) <= 0.01 * SIZE  # a vertical spine gives a vertical line


def test_phantom_heart_sits_between_the_lungs(phantom, detections):
    heart = detections.mask("heart")
    assert dice(heart, phantom.masks["heart"]) >= 0.6
    truth = cardiothoracic_ratio(phantom.masks["heart"], phantom.masks["right_lung"] | phantom.masks["left_lung"])
    predicted = cardiothoracic_ratio(heart, detections.lungs())
    assert predicted == pytest.approx(truth, abs=0.08)


def test_scapulae_clavicles_and_abnormal_parts_are_not_reported(detections):
    for name in ("scapula_right", "scapula_left", "clavicle_right", "clavicle_left", "pneumothorax", "effusion"):
        assert not detections.found(name)


def test_button_in_the_lung_is_a_foreign_object_and_the_marker_in_the_air_is_not(detections, button_mask):
    assert detections.foreign_objects, "the button was not found"
    best = detections.foreign_objects[0]
    assert best.confidence > 0.5
    assert dice(best.mask, button_mask) >= 0.6
    assert best.confidence == max(found.confidence for found in detections.foreign_objects)
    for found in detections.foreign_objects:
        assert not found.mask[MARKER].any(), "the L/R marker outside the body counted as a foreign object"
        assert not (found.confidence > 0.5 and not (found.mask & button_mask).any())


def test_clean_phantom_has_no_confident_foreign_object(phantom):
    found = ClassicalDetector().detect(phantom.image).foreign_objects
    assert max((f.confidence for f in found), default=0.0) < 0.2


def test_necklace_of_small_beads_is_one_foreign_object(phantom):
    image = phantom.image.copy()
    v, u = _uv(SIZE)
    beads = np.zeros(image.shape, dtype=bool)
    for angle in np.linspace(0.3, np.pi - 0.3, 17):  # an arc over the upper chest, beads 0.016 apart
        cu, cv = 0.5 + 0.12 * np.cos(angle), 0.20 + 0.06 * np.sin(angle)
        beads |= (v - cv) ** 2 + (u - cu) ** 2 <= 0.004 ** 2
    image[beads] = 1.0
    found = ClassicalDetector().detect(image).foreign_objects
    chains = [f for f in found if f.confidence > 0.5 and (f.mask & beads).sum() >= 0.5 * beads.sum()]
    assert len(chains) == 1


def test_raw_intensity_range_and_grid_size_do_not_matter(phantom):
    """12-bit stored values and a 1024 grid give the same lungs as the [0, 1] 512 image."""
    reference = ClassicalDetector().detect(phantom.image)
    stored = ClassicalDetector().detect(np.rint(phantom.image * 4095.0).astype(np.uint16))
    assert dice(stored.mask("lung_right"), reference.mask("lung_right")) >= 0.97
    large = make_chest_phantom(1024)
    found = ClassicalDetector().detect(large.image)
    assert found.shape == (1024, 1024) and found.mask("lung_left").shape == (1024, 1024)
    assert dice(found.mask("lung_left"), large.masks["left_lung"]) >= 0.9


def test_non_square_image_and_horizontal_flip(phantom):
    cropped = phantom.image[40:472]  # 432 x 512
    found = ClassicalDetector().detect(cropped)
    assert found.shape == cropped.shape and found.body.shape == cropped.shape
    assert dice(found.mask("lung_right"), phantom.masks["right_lung"][40:472]) >= 0.9
    flipped = ClassicalDetector().detect(phantom.image[:, ::-1])
    # mirrored, the patient's left lung lies on the image left
    assert dice(flipped.mask("lung_right"), phantom.masks["left_lung"][:, ::-1]) >= 0.9
    assert dice(flipped.mask("lung_left"), phantom.masks["right_lung"][:, ::-1]) >= 0.9


def test_input_is_not_modified_and_progress_is_reported(phantom):
    image = phantom.image.copy()
    reports = []
    ClassicalDetector().detect(image, Progress(lambda fraction, message: reports.append(fraction)))
    np.testing.assert_array_equal(image, phantom.image)
    assert reports[0] == 0.0 and reports[-1] == 1.0 and reports == sorted(reports)


@pytest.mark.parametrize("array", [np.zeros((3, 300, 300)), np.full((300, 300), 7.0),
                                   np.zeros((2, 300, 300)) + np.arange(300)])
def test_bad_input_raises_input_error(array):
    with pytest.raises(InputError):
        ClassicalDetector().detect(array)


# ------------------------------------------------------------------------------------------ evaluation


def test_dice_ratio_and_extent_on_hand_made_masks():
    a = np.zeros((10, 10), dtype=bool)
    b = np.zeros((10, 10), dtype=bool)
    a[2:6, 2:6] = True
    b[4:8, 2:6] = True
    assert dice(a, b) == pytest.approx(2 * 8 / 32)
    assert dice(a, np.zeros_like(a)) == 0.0  # an object that was not found scores 0
    assert horizontal_extent(a) == 4 and horizontal_extent(np.zeros_like(a)) == 0
    lungs = np.zeros((10, 20), dtype=bool)
    lungs[2:8, 1:7] = lungs[2:8, 12:19] = True
    heart = np.zeros((10, 20), dtype=bool)
    heart[6:9, 5:14] = True
    assert cardiothoracic_ratio(heart, lungs) == pytest.approx(9 / 18)
    assert cardiothoracic_ratio(np.zeros_like(heart), lungs) is None
    with pytest.raises(InputError):
        dice(a, np.zeros((5, 5), dtype=bool))


class _Oracle:
    """Returns a case's own reference masks (or nothing for ``heart`` when ``drop_heart``)."""

    name = "oracle"

    def __init__(self, cases, drop_heart=False):
        self.by_image = {id(case.image): case for case in cases}
        self.drop_heart = drop_heart

    def detect(self, image, progress=None):
        case = self.by_image[id(image)]
        masks = {k: v for k, v in case.masks.items() if not (self.drop_heart and k == "heart")}
        return detections_from_masks(masks, body=np.ones(image.shape, dtype=bool), backend=self.name)


def _phantom_case(seed: int, ctr: float | None) -> WingspanCase:
    p = make_chest_phantom(256, seed=seed)
    masks = {"lung_right": p.masks["right_lung"], "lung_left": p.masks["left_lung"], "heart": p.masks["heart"]}
    return WingspanCase(f"phantom-{seed}", p.image, masks, ctr)


def test_evaluate_detector_scores_an_oracle_perfectly_and_counts_missing_objects():
    cases = [_phantom_case(0, None), _phantom_case(1, None)]
    truth = cardiothoracic_ratio(cases[0].masks["heart"], cases[0].masks["lung_right"] | cases[0].masks["lung_left"])
    cases[1] = WingspanCase(cases[1].case_id, cases[1].image, cases[1].masks, truth + 0.02)
    result = evaluate_detector(_Oracle(cases), cases)
    assert result["detector"] == "oracle" and len(result["rows"]) == 2
    row = result["rows"][0]
    assert set(row) >= {"case_id", "dice_lung_right", "dice_lung_left", "dice_heart", "ctr_predicted",
                        "ctr_reference", "seconds"}
    assert row["dice_lung_right"] == row["dice_lung_left"] == row["dice_heart"] == 1.0
    assert row["ctr_predicted"] == pytest.approx(truth) and row["ctr_reference"] is None
    summary = result["summary"]
    assert summary["dice_heart_mean"] == summary["dice_heart_median"] == summary["dice_heart_min"] == 1.0
    assert summary["ctr_cases"] == 1 and summary["ctr_mae"] == pytest.approx(0.02)
    assert summary["not_found_heart"] == 0 and summary["seconds_per_image"] >= 0.0

    missing = evaluate_detector(_Oracle(cases, drop_heart=True), cases)["summary"]
    assert missing["not_found_heart"] == 2 and missing["dice_heart_mean"] == 0.0
    assert missing["ctr_not_predicted"] == 1 and np.isnan(missing["ctr_mae"])


def test_score_case_refuses_detections_on_another_grid():
    case = _phantom_case(0, None)
    with pytest.raises(InputError):
        score_case(Detections((128, 128)), case)
    with pytest.raises(InputError):
        evaluate_detector(ClassicalDetector(), [])
    assert summarise([])["cases"] == 0


# ------------------------------------------------------------------------------------------ real radiographs


def test_wingspan_validation_images(shared_data):
    """First 10 Wingspan validation images. Measured with this detector: mean Dice 0.90 (right lung), 0.85 (left
    lung), 0.86 (heart); CTR mean absolute error 0.042 (8 cases with a reference). The bounds sit a little below."""
    root = shared_data / "chest" / "wingspan"
    reference = reference_ctr(root)
    cases = [load_case(root, case_id, reference) for case_id in split()["validation"][:10]]
    result = evaluate_detector(ClassicalDetector(), cases)
    summary = result["summary"]
    assert summary["not_found_lung_right"] == summary["not_found_lung_left"] == summary["not_found_heart"] == 0
    assert summary["dice_lung_right_mean"] >= 0.87
    assert summary["dice_lung_left_mean"] >= 0.82
    assert summary["dice_heart_mean"] >= 0.83
    assert summary["ctr_mae"] <= 0.055
    assert summary["seconds_per_image"] < 2.0  # the 0.5 s target is checked in make bench, not on a busy CI
