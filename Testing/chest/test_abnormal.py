"""The decision rule of the experimental abnormal findings (scanai.chest.abnormal) on hand-made masks, and the pieces
of its calibration command that need no data (scanai.chest.calibrate_abnormal)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from scanai.chest import calibrate_abnormal as cal
from scanai.chest.abnormal import (
    BASE_ZONE,
    abnormal_regions,
    contact_tolerance,
    decide,
    lung_edges,
    strongest,
)
from scanai.chest.detection import detections_from_masks
from scanai.chest.metrics import Thresholds, assess
from scanai.core.errors import InputError

SIZE = 256
#: Thresholds that let every plausible region count (the place tests alone decide).
PLACE_ONLY = Thresholds(experimental=True, pneumothorax_min_ratio=0.0, pneumothorax_min_confidence=0.0,
                        effusion_min_ratio=0.0, effusion_min_confidence=0.0)


def _grid(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(u, v): normalised column and row coordinates of the pixel centres."""
    centres = (np.arange(size) + 0.5) / size
    v, u = np.meshgrid(centres, centres, indexing="ij")
    return u, v


def _ellipse(u, v, centre, axes):
    return ((u - centre[0]) / axes[0]) ** 2 + ((v - centre[1]) / axes[1]) ** 2 <= 1.0


def chest(size: int = SIZE) -> dict[str, np.ndarray]:
    """Two elliptic lungs (patient right on the image left), a heart and a body, on a size x size grid."""
    u, v = _grid(size)
    return {"lung_right": _ellipse(u, v, (0.33, 0.48), (0.12, 0.26)),
            "lung_left": _ellipse(u, v, (0.67, 0.48), (0.12, 0.26)),
            "heart": _ellipse(u, v, (0.54, 0.63), (0.11, 0.11))}


def found(masks: dict[str, np.ndarray], confidence: float = 1.0):
    body = _ellipse(*_grid(masks["lung_right"].shape[0]), (0.5, 0.58), (0.44, 0.52))
    return detections_from_masks(masks, confidences={"pneumothorax": confidence, "effusion": confidence}, body=body)


def disc(centre: tuple[float, float], radius: float, size: int = SIZE) -> np.ndarray:
    u, v = _grid(size)
    return np.hypot(u - centre[0], v - centre[1]) <= radius


def lateral_crescent(masks: dict[str, np.ndarray], depth: float = 0.04, size: int = SIZE) -> np.ndarray:
    """The outer ``depth`` (normalised width) of the right lung above its middle: an apical-lateral pneumothorax."""
    u, v = _grid(size)
    inner = _ellipse(u, v, (0.33 + depth, 0.48 + depth), (0.12, 0.26))
    return masks["lung_right"] & ~inner & (v < 0.5) & (u < 0.36)


def basal_part(masks: dict[str, np.ndarray], side: str = "right", height: float = 0.08) -> np.ndarray:
    """The lowest ``height`` (normalised) of one lung: an effusion at the base."""
    _u, v = _grid(masks["lung_right"].shape[0])
    return masks[f"lung_{side}"] & (v > 0.74 - height)


def apical_part(masks: dict[str, np.ndarray], side: str = "right", height: float = 0.08) -> np.ndarray:
    """The highest ``height`` (normalised) of one lung."""
    _u, v = _grid(masks["lung_right"].shape[0])
    return masks[f"lung_{side}"] & (v < 0.22 + height)


# ---------------------------------------------------------------------------------------------------------------
# Place tests
# ---------------------------------------------------------------------------------------------------------------

def test_pneumothorax_away_from_the_pleura_is_discarded_and_a_pleural_one_kept():
    masks = chest()
    central = disc((0.36, 0.45), 0.04)  # well inside the right lung, far from its edges
    assert central.sum() > 0 and not (central & ~masks["lung_right"]).any()
    masks["pneumothorax"] = central
    (region,) = abnormal_regions(found(masks), "pneumothorax")
    assert not region.plausible and region.why == "does not touch the lateral or apical pleura"
    assert region.side == "right" and region.contact == 0
    result = assess(found(masks), PLACE_ONLY).finding("pneumothorax")
    assert not result.present and "1 candidate region" in result.text and "outside the plausible place" in result.text

    masks["pneumothorax"] = lateral_crescent(masks)
    (region,) = abnormal_regions(found(masks), "pneumothorax")
    assert region.plausible and region.why == "" and region.contact > 0
    result = assess(found(masks), PLACE_ONLY).finding("pneumothorax")
    expected = masks["pneumothorax"].sum() / (masks["lung_right"] | masks["lung_left"]).sum()
    assert result.present and result.value == pytest.approx(expected, abs=1e-12)
    assert result.measurements["abnormal_px"] == masks["pneumothorax"].sum()


def test_both_places_together_only_the_pleural_region_counts():
    masks = chest()
    masks["pneumothorax"] = lateral_crescent(masks) | disc((0.68, 0.45), 0.04)
    decision = decide(found(masks), "pneumothorax", 0.0, 0.0)
    assert sorted(region.plausible for region in decision.regions) == [False, True]
    assert decision.kept_px == lateral_crescent(masks).sum()
    assert "2 candidate regions, 1 counted: 1 outside the plausible place discarded" == decision.summary()


def test_pneumothorax_only_in_the_costophrenic_zone_is_discarded():
    masks = chest()
    u, v = _grid()
    lowest = masks["lung_right"] & (v > 0.74 - BASE_ZONE * 0.52 * 0.6) & (u < 0.30)  # lateral, lowest part only
    masks["pneumothorax"] = lowest
    (region,) = abnormal_regions(found(masks), "pneumothorax")
    assert not region.plausible


def test_effusion_at_the_base_kept_at_the_apex_discarded():
    masks = chest()
    for side in ("right", "left"):
        masks["effusion"] = basal_part(masks, side)
        (region,) = abnormal_regions(found(masks), "effusion")
        assert region.plausible and region.side == side
        assert assess(found(masks), PLACE_ONLY).finding("effusion").present
        masks["effusion"] = apical_part(masks, side)
        (region,) = abnormal_regions(found(masks), "effusion")
        assert not region.plausible and region.why == "does not touch the lower lung boundary"
        assert not assess(found(masks), PLACE_ONLY).finding("effusion").present


def test_effusion_touching_the_base_only_medially_above_the_zone_is_discarded():
    masks = chest()
    masks["effusion"] = apical_part(masks, "left", height=0.3)  # reaches down to v = 0.52: not the base
    (region,) = abnormal_regions(found(masks), "effusion")
    assert not region.plausible


def test_a_region_away_from_both_lungs_is_outside_the_thorax():
    masks = chest()
    masks["pneumothorax"] = disc((0.5, 0.08), 0.03)  # the neck
    masks["effusion"] = disc((0.5, 0.92), 0.03)  # the abdomen, below the heart
    for name in ("pneumothorax", "effusion"):
        (region,) = abnormal_regions(found(masks), name)
        assert region.side == "" and not region.plausible and "outside the thorax" in region.why


def test_a_detector_whose_lungs_leave_the_region_out_gets_the_same_answer():
    masks = chest()
    crescent = lateral_crescent(masks, depth=0.05)
    base = basal_part(masks, "left", height=0.12)
    masks["pneumothorax"], masks["effusion"] = crescent, base
    included = assess(found(masks), PLACE_ONLY)
    for name, region in (("pneumothorax", crescent), ("effusion", base)):
        left_out = assess(found(dict(masks, lung_right=masks["lung_right"] & ~region,
                                     lung_left=masks["lung_left"] & ~region)), PLACE_ONLY)
        assert included.finding(name).present and left_out.finding(name).present
        assert left_out.finding(name).value == pytest.approx(included.finding(name).value, abs=1e-12)


def test_mirror_and_resize_keep_the_decisions():
    for size in (256, 512):
        masks = chest(size)
        masks["pneumothorax"] = lateral_crescent(masks, size=size)
        masks["effusion"] = basal_part(masks, "right")
        mirrored = {"lung_right": masks["lung_left"][:, ::-1], "lung_left": masks["lung_right"][:, ::-1],
                    **{name: masks[name][:, ::-1] for name in ("heart", "pneumothorax", "effusion")}}
        for name in ("pneumothorax", "effusion"):
            first, second = abnormal_regions(found(masks), name), abnormal_regions(found(mirrored), name)
            assert [r.plausible for r in first] == [r.plausible for r in second] == [True]
            assert {first[0].side, second[0].side} == {"right", "left"}
            assert first[0].ratio == pytest.approx(second[0].ratio, abs=1e-12)
    assert contact_tolerance((512, 512)) == 2 * contact_tolerance((256, 256)) == 10


def test_lung_edges_of_a_box():
    lung = np.zeros((20, 20), dtype=bool)
    lung[4:16, 5:12] = True
    edges = lung_edges(lung, lateral_is_image_left=True)
    assert edges is not None and (edges.top, edges.bottom, edges.height) == (4, 16, 12)
    assert edges.base_row == 4 + int(np.ceil((1 - BASE_ZONE) * 12))
    assert edges.basal[15, 5:12].all() and edges.basal.sum() == 7
    assert edges.pleural[4:edges.base_row, 5].all() and edges.pleural[4, 5:12].all()  # lateral column + apex row
    assert edges.pleural[:, 11].sum() == 1  # the medial side only where it is the apex
    assert not edges.pleural[edges.base_row:].any()
    other = lung_edges(lung, lateral_is_image_left=False)
    assert other is not None and other.pleural[4:other.base_row, 11].all()
    assert lung_edges(np.zeros((5, 5), dtype=bool), True) is None


# ---------------------------------------------------------------------------------------------------------------
# Thresholds
# ---------------------------------------------------------------------------------------------------------------

def test_extent_and_confidence_thresholds():
    masks = chest()
    masks["pneumothorax"] = lateral_crescent(masks)
    ratio = abnormal_regions(found(masks), "pneumothorax")[0].ratio
    for min_ratio, confidence, present in ((ratio - 1e-6, 0.9, True), (ratio, 0.9, False),
                                           (ratio - 1e-6, 0.8, False)):
        t = replace(PLACE_ONLY, pneumothorax_min_ratio=min_ratio, pneumothorax_min_confidence=0.8)
        finding = assess(found(masks, confidence), t).finding("pneumothorax")
        assert finding.present is present
        if not present:
            assert "at or below the extent" in finding.text and "[experimental" in finding.text
    assert strongest(abnormal_regions(found(masks, 0.9), "pneumothorax")) == (pytest.approx(ratio), 0.9)
    masks["pneumothorax"] = disc((0.36, 0.45), 0.04)
    assert strongest(abnormal_regions(found(masks, 0.9), "pneumothorax")) == (0.0, 0.0)


def test_calibrated_defaults_and_their_validation():
    t = Thresholds()
    for part in ("pneumothorax", "effusion"):
        assert 0.0 <= getattr(t, f"{part}_min_ratio") < 0.3 and 0.5 <= getattr(t, f"{part}_min_confidence") < 1.0
    for key, value in (("pneumothorax_min_ratio", -0.1), ("effusion_min_confidence", 1.5),
                       ("effusion_min_ratio", float("nan"))):
        with pytest.raises(InputError):
            Thresholds(**{key: value})
    assert Thresholds.from_dict({"effusion_min_ratio": 0}).effusion_min_ratio == 0.0


def test_experimental_off_shows_no_abnormal_finding():
    masks = chest()
    masks["pneumothorax"], masks["effusion"] = lateral_crescent(masks), basal_part(masks)
    shipped = assess(found(masks))
    assert [item.name for item in shipped.findings] == ["cardiothoracic_ratio"]


# ---------------------------------------------------------------------------------------------------------------
# The calibration command's pieces
# ---------------------------------------------------------------------------------------------------------------

def scores(ratio, confidence, unplaced=None) -> cal.Scores:
    ratio = np.asarray(ratio, dtype=float)
    return cal.Scores(ratio, np.asarray(confidence, dtype=float), tuple(f"case{k}" for k in range(ratio.size)),
                      ratio.copy() if unplaced is None else np.asarray(unplaced, dtype=float))


def test_scores_with_and_without_the_place_tests():
    found = scores([0.0, 0.05, 0.2], [0.97, 0.97, 0.5], unplaced=[0.1, 0.05, 0.2])
    assert found.found(0.01, 0.9).tolist() == [False, True, False]
    assert found.found(0.01, 0.9, place=False).tolist() == [True, True, False]
    assert cal.rate(found, 0.01, 0.9)["files"] == ["case1"]


def test_choose_meets_the_rate_then_keeps_detection():
    rng = np.random.default_rng(0)
    n = 200
    negatives = scores(rng.uniform(0.0, 0.06, n), rng.uniform(0.85, 0.95, n))
    negatives.ratio[:3] = [0.20, 0.15, 0.12]  # three large, confident false positives
    negatives.confidence[:3] = 0.96
    positives = {0.1: scores(np.full(20, 0.09), np.full(20, 0.97)), 0.3: scores(np.full(20, 0.25), np.full(20, 0.97))}
    choice = cal.choose(negatives, positives, max_fpr=0.01)
    assert choice.n == n
    assert negatives.found(choice.min_ratio, choice.min_confidence).sum() == choice.fp
    assert choice.sensitivity == pytest.approx(1.0)  # both fractions still found: the confidence does the work
    # ties: every confidence 0.960-0.969 and ratio 0-0.085 keeps both fractions without false positives; the middle
    assert (choice.min_confidence, choice.min_ratio, choice.fp) == (0.964, 0.04, 0)
    grid = negatives.found_on_grid()
    assert grid.shape == (cal.RATIO_GRID.size, cal.CONFIDENCE_GRID.size) and grid[0, 0] == n
    with pytest.raises(InputError):
        cal.choose(scores([], []), positives)


def test_plans_are_deterministic_and_cover_the_fractions():
    plan = cal.training_plan(10)
    assert len(plan) == 20 and {fraction for _i, _p, fraction, _s in plan} == set(cal.FRACTIONS)
    assert cal.training_plan(10) == plan
    validation = cal.validation_plan(3)
    assert len(validation) == 3 * 2 * len(cal.FRACTIONS)


def _report() -> dict:
    part = {"false_positives": {name: {"found": 1, "n": 50, "rate": 0.02, "files": []}
                                for name in ("train", "validation", "nih", "held_out")},
            "sensitivity_validation_composites": {"0.05": {"found": 1, "n": 2, "rate": 0.5}},
            "sensitivity_train_composites_mean": 0.5}
    return {"data": {}, "rule": "r", "choice": "c",
            "pneumothorax": {**part, "thresholds": {"pneumothorax_min_ratio": 0.085,
                                                    "pneumothorax_min_confidence": 0.945}},
            "effusion": {**part, "thresholds": {"effusion_min_ratio": 0.0, "effusion_min_confidence": 0.99}}}


def test_write_defaults_and_card_touch_only_their_parts(tmp_path):
    source = tmp_path / "thresholds.py"
    source.write_text(cal.THRESHOLDS_FILE.read_text())
    report = _report()
    cal.write_defaults(cal.thresholds_of(report), source)
    text = source.read_text()
    assert "    pneumothorax_min_ratio: float = 0.085\n" in text
    assert "    effusion_min_confidence: float = 0.99\n" in text
    changed = [a for a, b in zip(text.splitlines(), cal.THRESHOLDS_FILE.read_text().splitlines(), strict=True)
               if a != b]
    assert all("_min_" in line for line in changed)
    with pytest.raises(InputError):
        cal.write_defaults({"no_such_threshold": 1.0}, source)
    card = tmp_path / "card.json"
    card.write_text(cal.CARD_FILE.read_text())
    before = json.loads(card.read_text())
    cal.write_card(report, card)
    after = json.loads(card.read_text())
    for name in ("pneumothorax", "effusion"):
        assert after["extra"]["objects"][name].startswith("experimental, off by default:")
    assert {k: v for k, v in after["extra"]["objects"].items() if k not in ("pneumothorax", "effusion")} == \
           {k: v for k, v in before["extra"]["objects"].items() if k not in ("pneumothorax", "effusion")}
    assert {k: v for k, v in after.items() if k != "extra"} == {k: v for k, v in before.items() if k != "extra"}
    assert after["extra"]["abnormal_calibration"]["pneumothorax"]["thresholds"]["pneumothorax_min_ratio"] == 0.085
    assert "pneumothorax_min_ratio = 0.085" in cal.summary_text(report)


def test_only_counted_regions_are_shown():
    """With experimental objects on, the detections handed to overlays and segmentations keep only the regions
    the finding rests on: a pleural pneumothorax stays, a central blob over the lung is dropped."""
    from scanai.chest.abnormal import counted_only

    masks = chest()
    pleural, central = lateral_crescent(masks), disc((0.66, 0.45), 0.04)
    masks["pneumothorax"] = pleural | central
    shown = counted_only(found(masks), PLACE_ONLY)
    np.testing.assert_array_equal(shown.mask("pneumothorax"), pleural)
    masks["pneumothorax"] = central
    assert not counted_only(found(masks), PLACE_ONLY).found("pneumothorax")
