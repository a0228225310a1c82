"""End-diastole found automatically (the default reference of ``scanai motion``): the largest LV cavity of a
segmentation drawn on any frame, else the ECG trigger time nearest the R wave, else frame 1; for a stack, the
largest LV volume over its slices; the label map carried onto it; and progress readable in a log."""

from __future__ import annotations

import numpy as np
import pytest
from sunnybrook_cases import contoured_slices

from scanai.core.errors import InputError
from scanai.core.image import VolumeSequence
from scanai.core.progress import tqdm_progress
from scanai.motion.end_diastole import TIE_FRACTION, from_trigger_times, largest_cavity, largest_stack_cavity
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
    assert largest_cavity(1000 * sizes, 2, "mm³").rule == ("largest LV cavity volume of the segmentation carried "
                                                            "through the cycle (1000.0 mL at frame 5, 600.0 mL at its "
                                                            "smallest, frame 3)")


def test_largest_stack_volume_outvotes_a_slice_whose_own_area_peaks_elsewhere():
    """Three slices of one cycle (T = 6, ED at frame 4): two large mid slices peak at ED, a small apical one, where
    through-plane motion moves more cavity into the slice in early systole, peaks at frame 1 by itself."""
    mid = np.array([800.0, 700.0, 600.0, 750.0, 900.0, 890.0])
    apex = np.array([150.0, 240.0, 200.0, 160.0, 170.0, 160.0])
    assert largest_cavity(apex, drawn_index=4).index == 1  # the slice alone is misled
    chosen = largest_stack_cavity([mid, 0.9 * mid, apex], 10.0)
    assert chosen.index == 4
    assert chosen.rule == ("largest LV volume of the stack, summed over the cavities of 3 slices carried through the "
                           "cycle (18.8 mL at frame 5, 13.4 mL at its smallest, frame 3)")
    # the frame drawn on wins a tie (frame 6 is within TIE_FRACTION of frame 5), per-slice spacings weight the areas
    assert largest_stack_cavity([mid, 0.9 * mid, apex], [10.0, 10.0, 8.0], drawn_index=5).index == 5
    assert largest_stack_cavity([mid, apex], [10.0, 200.0]).index == 1  # a thick apical disc would outweigh
    with pytest.raises(InputError, match="at least one slice"):
        largest_stack_cavity([], 10.0)


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


def test_sunnybrook_reference_is_the_contoured_end_diastole_on_every_slice(shared_data):
    """Acceptance: with the Sunnybrook contours (myocardium and LV cavity drawn on the experts' end-diastolic frame,
    phase 19 of 20, on nine slices; the trigger time would say phase 1), the reference chosen automatically is
    that frame on every slice: the largest LV volume of the stack. A slice's own area is not enough: on the three
    lowest slices it peaks at frames 2-3 (through-plane motion)."""
    pytest.importorskip("torch")
    sizes, spacings, contoured, own, mid = [], [], [], [], None
    for slice_index, sequence, labels, endo_ed, endo_es in contoured_slices(shared_data):
        ed = endo_ed.phase_index
        result = analyse_cine(sequence, ed, "network", labels=labels, blood_pool_label=1, device="cpu",
                              propagate=False, myocardium_label=2 if slice_index == 6 else None)  # strain: one
        sizes.append(result.cavity_size)
        spacings.append(sequence.geometry.spacing_mm[2])
        contoured.append(ed)
        own.append(largest_cavity(result.cavity_size, ed).index)
        if slice_index == 6:
            assert from_trigger_times(sequence).index == 0
            mid = result, endo_es
    assert len(sizes) == 9 and set(contoured) == {18}
    chosen = largest_stack_cavity(sizes, spacings, drawn_index=18)
    assert chosen.index == 18, chosen.rule
    assert largest_stack_cavity(sizes, spacings).index == 18, chosen.rule  # the largest outright, not by the tie
    assert chosen.rule.startswith("largest LV volume of the stack, summed over the cavities of 9 slices")
    # a slice's own largest cavity: the contoured frame from base to mid (slices 2-7; slice 7's frame 0 within 1.2 %
    # of it); 2-4 frames later below them (8-10), which need the stack
    assert sum(index == 18 for index in own) >= 6, own
    assert all(min((index - 18) % 20, (18 - index) % 20) <= 2 for index in own[:6]), own
    result, endo_es = mid  # the mid-ventricular slice: smallest near the experts' end-systole, strain relative to ED
    assert abs(int(np.argmin(result.cavity_size)) - endo_es.phase_index) <= 2
    assert result.strain.global_circumferential_pct[endo_es.phase_index] < -3.0
