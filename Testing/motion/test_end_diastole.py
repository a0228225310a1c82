"""End-diastole found automatically (the default reference of ``scanai motion``): the largest LV cavity of a
segmentation drawn on any frame, else the ECG trigger time nearest the R wave, else frame 1; the label map carried
onto it; and progress readable in a log."""

from __future__ import annotations

import numpy as np
import pytest

from scanai.core.image import VolumeSequence
from scanai.core.progress import tqdm_progress
from scanai.motion.end_diastole import TIE_FRACTION, from_trigger_times, largest_cavity
from scanai.motion.phantom import contraction_profile, myocardium_mask, smooth_motion_phantom
from scanai.motion.pipeline import analyse_cine
from scanai.motion.propagate import dice

PHANTOM = {"n_frames": 6, "shape": (1, 64, 64), "spacing_mm": (1.25, 1.25, 8.0), "amplitude_px": 4.0,
           "twist_deg": 4.0, "noise": 0.01, "seed": 3}
MASK_ARGS = {"amplitude_px": PHANTOM["amplitude_px"], "twist_deg": PHANTOM["twist_deg"]}
SHIFT = 3  # the phantom's end-diastole (its frame 0) becomes frame SHIFT: not the first frame


def test_trigger_time_nearest_the_r_wave_or_frame_one():
    frames = np.zeros((5, 1, 8, 8))
    late = VolumeSequence(frames, index_values=(0.1, 0.3, 0.5, 0.7, 0.9))  # the cycle closes at 1.1 s
    assert from_trigger_times(late).index == 0
    wrapped = VolumeSequence(frames, index_values=(0.25, 0.45, 0.65, 0.85, 1.05))  # R again at 1.25 s
    chosen = from_trigger_times(wrapped)
    assert chosen.index == 4 and "ECG trigger time nearest the R wave (1050 ms, frame 5" in chosen.rule
    numbered = VolumeSequence(frames, index_values=range(5), index_name="frame", index_unit="")
    assert from_trigger_times(numbered).index == 0 and from_trigger_times(numbered).rule.startswith("frame 1 (")


def test_largest_cavity_and_its_tie_rule():
    sizes = np.array([900.0, 700.0, 600.0, 800.0, 1000.0])
    assert largest_cavity(sizes, drawn_index=2).index == 4
    near = sizes.copy()
    near[1] = sizes.max() * (1 - TIE_FRACTION / 2)  # within the tie: the drawn (exact) outline wins
    assert largest_cavity(near, drawn_index=1).index == 1
    assert "1000 mm² at frame 5, 600 mm² at its smallest, frame 3" in largest_cavity(sizes, 2).rule


@pytest.fixture(scope="module")
def rolled():
    """The phantom with its end-diastole moved to frame SHIFT, and the myocardium at end-systole."""
    sequence, _truth = smooth_motion_phantom(**PHANTOM)
    es = int(np.argmax(contraction_profile(PHANTOM["n_frames"])))
    ed_mask = myocardium_mask(sequence, 0, **MASK_ARGS)
    es_mask = myocardium_mask(sequence, es, **MASK_ARGS)
    frames = np.roll(sequence.frames, SHIFT, axis=0)
    times = tuple(0.05 + 0.1 * n for n in range(PHANTOM["n_frames"]))  # trigger times say frame 1
    return VolumeSequence(frames, sequence.geometry, times), (es + SHIFT) % len(frames), ed_mask, es_mask


def test_the_largest_cavity_is_found_from_a_segmentation_drawn_at_end_systole(rolled):
    sequence, es, ed_mask, es_mask = rolled
    result = analyse_cine(sequence, None, "demons", labels=es_mask.astype(np.uint8), labels_index=es,
                          myocardium_label=1, iterations=40)
    assert result.fields.reference_index == SHIFT, result.reference_rule
    assert result.reference_rule.startswith("largest LV cavity")
    assert np.argmax(result.cavity_size) == SHIFT and np.argmin(result.cavity_size) == es
    # the outline drawn at end-systole was carried onto end-diastole, strain is relative to it (zero there)
    assert dice(result.myocardium, ed_mask) >= 0.9
    np.testing.assert_array_equal(result.labels[es], es_mask)  # the drawn frame keeps the outline as drawn
    assert result.strain.global_circumferential_pct[SHIFT] == pytest.approx(0.0, abs=1e-9)
    assert result.strain.global_circumferential_pct[es] < -5.0
    plain = analyse_cine(sequence, None, "demons", iterations=40)  # no segmentation: the trigger time says frame 1
    assert plain.fields.reference_index == 0 and plain.reference_rule.startswith("ECG trigger time nearest")


def test_progress_in_a_log_is_plain_lines_every_ten_percent(capsys):
    with tqdm_progress("Motion (test)") as progress:
        for step in range(101):
            progress(step / 100, f"step {step}")
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert lines[0] == "Motion (test):   0% step 0" and lines[-1] == "Motion (test): 100% step 100"
    assert len(lines) == 11 and lines[3] == "Motion (test):  30% step 30"


def _sunnybrook_slice(shared_data, slice_index: int):
    from scanai.io.cine import read_sunnybrook_cine
    from scanai.io.contours import read_sunnybrook_contours

    root = shared_data / "cardiac" / "sunnybrook"
    dicoms = root / "dicoms" / "SCD0000101"
    contours = [c for c in read_sunnybrook_contours(root / "contourfiles" / "SC-HF-I-1", dicoms)
                if c.slice_index == slice_index]
    epicardium = next(c for c in contours if c.kind == "epicardium")  # drawn at end-diastole only
    endo_es = next(c for c in contours if c.kind == "endocardium" and c.phase_index != epicardium.phase_index)
    endo_ed = next(c for c in contours if c.kind == "endocardium" and c.phase_index == epicardium.phase_index)
    return read_sunnybrook_cine(dicoms, slice_index=slice_index), epicardium.phase_index, endo_es, epicardium, endo_ed


def test_sunnybrook_reference_is_the_contoured_end_diastole(shared_data):
    """Acceptance: with the Sunnybrook contours (myocardium and LV cavity drawn on the experts' end-diastolic frame,
    phase 19 of 20, where the trigger time would say phase 1), the reference chosen automatically is that frame.
    (From the end-systolic cavity alone, on every contoured slice: the slow bench.)"""
    pytest.importorskip("torch")
    sequence, ed, endo_es, epicardium, endo_ed = _sunnybrook_slice(shared_data, 6)
    assert ed == 18 and from_trigger_times(sequence).index == 0
    labels = np.zeros(sequence.frames.shape[1:], np.uint8)
    labels[0][epicardium.mask] = 2
    labels[0][endo_ed.mask] = 1
    result = analyse_cine(sequence, None, "network", labels=labels, labels_index=ed, myocardium_label=2,
                          blood_pool_label=1, device="cpu", propagate=False)
    assert result.fields.reference_index == ed, (result.reference_rule, result.cavity_size.round())
    assert np.argmin(result.cavity_size) in (endo_es.phase_index - 1, endo_es.phase_index, endo_es.phase_index + 1)
    assert result.strain.global_circumferential_pct[endo_es.phase_index] < -3.0
