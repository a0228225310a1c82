"""Anatomy priors of the detection post-processing (scanai.chest.detection, applied by
scanai.chest.network.detections_from_regions), on generated masks and probability maps: the spine line's label-bias
correction and its check against the lungs' midline, the heart bounded by the diaphragm and the thorax, the lungs'
hysteresis and costophrenic completion, and clavicles and scapulae chosen by place. Their measurements on real
radiographs are in test_bench_priors.py (``make bench``)."""

from __future__ import annotations

import numpy as np
import pytest

from scanai.chest.detection import (
    COSTOPHRENIC_DEPTH,
    HEART_DEPTH_MAX,
    OBJECTS,
    SPINE_LABEL_BIAS,
    SPINE_MIDLINE_TOLERANCE,
    Box,
    Found,
    apical_midline,
    costophrenic_point,
    detections_from_masks,
    heart_outside_thorax,
    heart_prior,
    lung_prior,
    lungs_midline,
    objects_from_probability,
    placed,
    shift_columns,
    spine_prior,
    spine_to_midline_px,
)
from scanai.chest.measurements import heart_below_diaphragm, lung_bottom, spine_midline_offset
from scanai.chest.network import detections_from_probabilities

SIZE = 256


def _ellipse(centre: tuple[float, float], axes: tuple[float, float], size: int = SIZE) -> np.ndarray:
    rows, cols = np.indices((size, size))
    return ((rows - centre[0]) / axes[0]) ** 2 + ((cols - centre[1]) / axes[1]) ** 2 <= 1.0


def _chest(shift: int = 0) -> dict[str, np.ndarray]:
    """Two lungs mirror-symmetric about the image centre (moved ``shift`` columns), a heart on the image right,
    lowest lung row 190."""
    heart = _ellipse((168, 148 + shift), (27, 45))
    right = _ellipse((120, 80 + shift), (70, 40)) & ~heart
    left = _ellipse((120, 175 + shift), (70, 40)) & ~heart
    return {"lung_right": right, "lung_left": left, "heart": heart}


def _found(name: str, mask: np.ndarray) -> Found:
    return Found(name, mask, Box.of_mask(mask), 0.9)


def _band(centre: float, half_width: float, rows: tuple[int, int] = (40, 190)) -> np.ndarray:
    """A vertical band of columns whose pixel centres lie within ``half_width`` of ``centre`` (pixel-edge units)."""
    band = np.zeros((SIZE, SIZE), dtype=bool)
    cols = np.arange(SIZE) + 0.5
    band[rows[0]:rows[1]] = np.abs(cols - centre) <= half_width
    return band


def _spine_centre(mask: np.ndarray) -> float:
    return float(np.nonzero(mask)[1].mean()) + 0.5


# --- lungs' midline and the spine line ---------------------------------------------------------------------------


def test_apical_midline_is_the_middle_of_the_medial_edges_beside_the_apices():
    chest = _chest()
    rows, x = apical_midline(chest["lung_right"], chest["lung_left"])
    shared = np.flatnonzero(chest["lung_right"].any(axis=1) & chest["lung_left"].any(axis=1))
    assert rows[0] == shared[0] and 1 <= rows.size <= 0.25 * shared.size  # the top rows only
    assert lungs_midline(chest["lung_right"], chest["lung_left"]) == pytest.approx(SIZE / 2)
    moved = _chest(shift=10)
    assert lungs_midline(moved["lung_right"], moved["lung_left"]) == pytest.approx(SIZE / 2 + 10)
    assert lungs_midline(chest["lung_right"], np.zeros_like(chest["lung_left"])) is None


def test_shift_columns_moves_a_mask_sideways_and_drops_what_leaves():
    mask = np.zeros((4, 6), dtype=bool)
    mask[1, [0, 5]] = True
    assert np.flatnonzero(shift_columns(mask, 2)[1]).tolist() == [2]
    assert np.flatnonzero(shift_columns(mask, -1)[1]).tolist() == [4]
    assert not shift_columns(mask, 6).any() and np.array_equal(shift_columns(mask, 0), mask)


@pytest.mark.parametrize("mirrored", [False, True])
def test_spine_line_is_moved_away_from_the_heart_by_the_label_bias(mirrored):
    """A spine line drawn where the training labels put it (SPINE_LABEL_BIAS of the lung width toward the heart) ends
    on the lungs' midline; in a mirrored image (heart on the image left) the correction goes the other way."""
    chest = _chest()
    lung_width = float(np.ptp(np.flatnonzero((chest["lung_right"] | chest["lung_left"]).any(axis=0))) + 1)
    spine = _band(SIZE / 2 + SPINE_LABEL_BIAS * lung_width, 10)
    if mirrored:
        chest = {"lung_right": chest["lung_left"][:, ::-1], "lung_left": chest["lung_right"][:, ::-1],
                 "heart": chest["heart"][:, ::-1]}
        spine = spine[:, ::-1]
    before = spine_to_midline_px(spine, chest["lung_right"], chest["lung_left"])
    assert abs(before) == pytest.approx(SPINE_LABEL_BIAS * lung_width, abs=0.5)
    corrected, notes = spine_prior(_found("spine", spine), chest["lung_right"], chest["lung_left"], chest["heart"])
    assert notes == ()
    assert abs(spine_to_midline_px(corrected.mask, chest["lung_right"], chest["lung_left"])) <= 0.5
    assert corrected.mask.sum() == spine.sum() and corrected.box == Box.of_mask(corrected.mask)


def test_a_spine_line_far_from_the_lungs_midline_is_moved_onto_it_with_a_note():
    chest = _chest()
    spine = _band(SIZE / 2 - (SPINE_MIDLINE_TOLERANCE + 0.03) * SIZE, 10)  # on the patient's right lung
    corrected, notes = spine_prior(_found("spine", spine), chest["lung_right"], chest["lung_left"], chest["heart"])
    assert len(notes) == 1 and "moved onto the lungs' midline" in notes[0] and "image left" in notes[0]
    assert abs(spine_to_midline_px(corrected.mask, chest["lung_right"], chest["lung_left"])) <= 0.5
    # within the tolerance (after the bias correction) the line stays where the network put it, less the bias
    near = _band(SIZE / 2 - 0.5 * SPINE_MIDLINE_TOLERANCE * SIZE, 10)
    kept, notes = spine_prior(_found("spine", near), chest["lung_right"], chest["lung_left"], chest["heart"])
    assert notes == () and _spine_centre(kept.mask) < _spine_centre(near)


def test_spine_without_lungs_or_beside_no_apex_is_handled():
    chest = _chest()
    spine = _found("spine", _band(SIZE / 2 + 5, 10))
    empty = np.zeros((SIZE, SIZE), dtype=bool)
    assert spine_prior(spine, empty, empty, chest["heart"]) == (spine, ())
    low = _band(SIZE / 2 + 5, 10, rows=(150, 200))  # starts below the apical rows: its whole line is compared
    assert spine_to_midline_px(low, chest["lung_right"], chest["lung_left"]) == pytest.approx(5.0, abs=0.5)
    assert spine_to_midline_px(empty, chest["lung_right"], chest["lung_left"]) is None


# --- heart bounded by the diaphragm ------------------------------------------------------------------------------


def test_a_heart_reaching_just_below_the_lung_bases_is_kept():
    """The reference hearts' inferior border may lie below the lungs' lowest row (up to 0.2 lung heights): a heart
    that narrows there is left as it is."""
    chest = _chest()
    heart = _ellipse((175, 140), (30, 40)) & ~(chest["lung_right"] | chest["lung_left"])
    assert Box.of_mask(heart).bottom - 1 > lung_bottom(detections_from_masks(chest))  # dips below the lung bases
    assert not heart_outside_thorax(heart, chest["lung_right"], chest["lung_left"]).any()
    found = _found("heart", heart)
    assert heart_prior(found, chest["lung_right"], chest["lung_left"]) is found


def test_a_heart_spreading_sideways_below_the_diaphragm_is_cut_back():
    chest = _chest()
    leak = np.zeros((SIZE, SIZE), dtype=bool)
    leak[188:215, 30:230] = True  # the liver and stomach from the lung bases down, joined to the heart
    heart = (chest["heart"] | leak) & ~(chest["lung_right"] | chest["lung_left"])
    outside = heart_outside_thorax(heart, chest["lung_right"], chest["lung_left"])
    assert outside.any() and not (outside & chest["heart"]).any()
    kept = heart_prior(_found("heart", heart), chest["lung_right"], chest["lung_left"])
    width = np.flatnonzero(kept.mask.any(axis=0))
    true_width = np.flatnonzero(chest["heart"].any(axis=0))
    assert width[0] >= true_width[0] - 0.02 * SIZE - 1 and width[-1] <= true_width[-1] + 0.02 * SIZE + 1
    assert (kept.mask & chest["heart"]).sum() == chest["heart"].sum()
    assert not heart_outside_thorax(kept.mask, chest["lung_right"], chest["lung_left"]).any()


def test_a_heart_deeper_than_the_limit_or_past_a_costophrenic_angle_is_cut():
    chest = _chest()
    lungs = chest["lung_right"] | chest["lung_left"]
    rows = np.flatnonzero(lungs.any(axis=1))
    limit = rows[-1] + int(np.floor(HEART_DEPTH_MAX * (rows[-1] - rows[0] + 1)))
    deep = chest["heart"].copy()
    deep[150:limit + 20, 130:150] = True  # a narrow tongue straight down
    deep &= ~lungs
    outside = heart_outside_thorax(deep, chest["lung_right"], chest["lung_left"])
    assert np.flatnonzero(outside.any(axis=1)).min() == limit + 1
    wide = chest["heart"].copy()
    wide[150:160, 100:250] = True  # past the image-right lung's costophrenic angle
    wide &= ~lungs
    _row, corner = costophrenic_point(chest["lung_left"], 1)
    outside = heart_outside_thorax(wide, chest["lung_right"], chest["lung_left"])
    assert outside.any() and np.flatnonzero(outside.any(axis=0)).min() > corner
    assert not heart_outside_thorax(chest["heart"], np.zeros_like(lungs), np.zeros_like(lungs)).any()


def test_costophrenic_point_is_the_lowest_lateral_corner():
    triangle = np.zeros((SIZE, SIZE), dtype=bool)
    for row in range(50, 200):
        triangle[row, 100 - (row - 50) // 3:120] = True  # widens downward toward the image left
    assert costophrenic_point(triangle, -1) == (199, 100 - 149 // 3)
    assert costophrenic_point(triangle, 1) == (199, 119)
    assert costophrenic_point(np.zeros((8, 8), dtype=bool), 1) is None


# --- lungs: hysteresis and costophrenic angles -------------------------------------------------------------------


def _lung_probability() -> tuple[np.ndarray, np.ndarray]:
    """(probability, core): an image-left lung at 0.9 with a 0.45 rim, a 0.2 wedge below the lateral (image-left)
    half of its lowest row and another below the medial half, and a separate 0.45 blob."""
    core = _ellipse((120, 80), (70, 40))
    probability = np.where(core, 0.9, 0.02)
    probability[_ellipse((120, 80), (72, 42)) & ~core] = 0.45
    probability[191:240, 74:80] = np.maximum(probability[191:240, 74:80], 0.2)  # lateral: a costophrenic angle
    probability[191:240, 81:87] = np.maximum(probability[191:240, 81:87], 0.2)  # medial: not one
    probability[20:30, 200:220] = 0.45
    return probability, core


def test_lung_grows_by_hysteresis_and_into_its_lateral_costophrenic_angle_only():
    probability, core = _lung_probability()
    found = objects_from_probability("lung_right", probability, 0.5, 1, 1, True)[0]
    assert np.array_equal(found.mask, core) and found.box.bottom == 191

    def values(box: Box) -> np.ndarray:
        return probability[box.top:box.bottom, box.left:box.right]

    grown = lung_prior(found, values, -1)
    assert grown.confidence == found.confidence and grown.box == Box.of_mask(grown.mask)
    assert (grown.mask & core).sum() == core.sum()
    assert grown.mask[_ellipse((120, 80), (72, 42))].all()  # the rim above LUNG_GROW
    assert not grown.mask[20:30, 200:220].any()  # not connected
    depth = max(1, int(round(COSTOPHRENIC_DEPTH * SIZE)))
    assert grown.mask[191:191 + depth, 74:80].all() and not grown.mask[191 + depth:, 74:80].any()
    assert not grown.mask[193:, 81:87].any()  # below the medial half only the 0.45 rim (to row 192) joins
    assert lung_bottom(detections_from_masks({"lung_right": grown.mask})) == 190 + depth


# --- clavicles and scapulae by place -----------------------------------------------------------------------------


def _probabilities(extra: dict[str, np.ndarray]) -> np.ndarray:
    """(len(OBJECTS), SIZE, SIZE) probabilities: the lungs, heart and a centred spine at 0.9, plus ``extra``."""
    chest = _chest()
    stack = np.full((len(OBJECTS), SIZE, SIZE), 0.02, dtype=np.float32)
    masks = {**chest, "spine": _band(SIZE / 2, 12, rows=(20, 190))}
    for name, mask in {**masks, **extra}.items():
        stack[OBJECTS.index(name)][mask] = 0.9
    return stack


def _image() -> np.ndarray:
    chest = _chest()
    return 100.0 + 800.0 * _ellipse((130, 128), (125, 120)) - 500.0 * (chest["lung_right"] | chest["lung_left"])


def _box_mask(top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def test_the_clavicle_above_the_apex_is_chosen_over_a_larger_blob_at_the_bottom_edge():
    bottom_blob = _box_mask(225, 10, 256, 120)
    clavicle = _box_mask(40, 50, 47, 118)  # across the right apex (lung top: row 50)
    stack = _probabilities({"clavicle_right": bottom_blob | clavicle})
    plain = detections_from_probabilities(stack, _image(), priors=False)
    assert np.array_equal(plain.mask("clavicle_right"), bottom_blob)  # the old rule: the largest region
    detections = detections_from_probabilities(stack, _image())
    assert np.array_equal(detections.mask("clavicle_right"), clavicle)
    only_bottom = detections_from_probabilities(_probabilities({"clavicle_right": bottom_blob}), _image())
    assert not only_bottom.found("clavicle_right")


@pytest.mark.parametrize(("name", "mask", "found"), [
    ("clavicle_left", _box_mask(40, 140, 47, 205), True),   # over the image-right apex
    ("clavicle_left", _box_mask(40, 50, 47, 118), False),   # on the other side
    ("clavicle_right", _box_mask(150, 50, 157, 118), False),  # in the lower thorax
    ("clavicle_right", _box_mask(40, 0, 47, 30), False),    # far lateral to the lung
    ("scapula_right", _box_mask(60, 20, 110, 50), True),    # at the shoulder, lateral to the lung's upper half
    ("scapula_left", _box_mask(60, 210, 110, 245), True),
    ("scapula_right", _box_mask(60, 95, 110, 118), False),  # over the medial third of the lung
    ("scapula_right", _box_mask(180, 20, 230, 50), False),  # beside the lung bases
    ("scapula_left", _box_mask(60, 20, 110, 50), False),    # on the other side
])
def test_clavicles_and_scapulae_are_found_only_where_anatomy_allows(name, mask, found):
    detections = detections_from_probabilities(_probabilities({name: mask}), _image())
    assert detections.found(name) == found
    if found:
        assert np.array_equal(detections.mask(name), mask)
    chest = _chest()
    assert placed(name, [_found(name, mask)], chest["lung_right"], np.zeros_like(mask)) is None  # a lung missing


# --- the priors together, and the plain rules without them ---------------------------------------------------------


def test_priors_off_gives_the_largest_region_of_each_organ():
    stack = _probabilities({"scapula_left": _box_mask(200, 150, 250, 250)})
    plain = detections_from_probabilities(stack, _image(), priors=False)
    for name in ("lung_right", "lung_left", "heart", "spine", "scapula_left"):
        expected = objects_from_probability(name, stack[OBJECTS.index(name)], 0.5, 1, 1, True)[0]
        assert np.array_equal(plain.mask(name), expected.mask), name
    assert plain.notes == ()
    detections = detections_from_probabilities(stack, _image())
    assert not detections.found("scapula_left")
    assert detections.found("lung_right") and detections.found("heart") and detections.found("spine")


def test_a_misplaced_spine_gives_a_note_in_the_detections():
    stack = _probabilities({})
    stack[OBJECTS.index("spine")] = 0.02
    stack[OBJECTS.index("spine")][_band(70, 10, rows=(20, 190))] = 0.9  # on the image-left lung
    detections = detections_from_probabilities(stack, _image())
    assert len(detections.notes) == 1 and "spine line moved" in detections.notes[0]
    assert abs(spine_midline_offset(detections)) <= 1.0 / SIZE
    assert detections.without(("foreign_object",)).notes == detections.notes


def test_measurements_of_the_priors_on_ready_made_masks():
    chest = _chest()
    leak = _box_mask(185, 30, 215, 230) & ~(chest["lung_right"] | chest["lung_left"])
    detections = detections_from_masks({**chest, "heart": chest["heart"] | leak,
                                        "spine": _band(SIZE / 2 + 0.02 * SIZE, 10)})
    assert spine_midline_offset(detections) == pytest.approx(0.02, abs=1.0 / SIZE)
    assert heart_below_diaphragm(detections) > 0
    assert heart_below_diaphragm(detections_from_masks(chest)) == 0
    assert lung_bottom(detections) == 190 and lung_bottom(detections, "lung_left") == 190
    assert lung_bottom(detections_from_masks({"heart": chest["heart"]})) is None
    assert spine_midline_offset(detections_from_masks(chest)) is None
