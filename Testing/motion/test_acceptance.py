"""Issue acceptance for cine motion with the shipped multi-pair network: the analytic phantom (exact truth) and
the real Sunnybrook cine with manual ED / ES contours."""

from __future__ import annotations

import numpy as np
import pytest

from scanai.motion.fields import folding_fraction
from scanai.motion.phantom import contraction_profile, myocardium_mask, smooth_motion_phantom
from scanai.motion.pipeline import analyse_cine
from scanai.motion.propagate import dice
from scanai.motion.strain import myocardial_strain

pytest.importorskip("torch")

AMPLITUDE_PX, TWIST_DEG = 5.0, 6.0


@pytest.fixture(scope="module")
def phantom_analysis():
    """96², 20 frames, 5 px contraction, 6° twist, noise 0.01 (a seed the network never saw)."""
    sequence, truth = smooth_motion_phantom(n_frames=20, shape=(1, 96, 96), amplitude_px=AMPLITUDE_PX,
                                            twist_deg=TWIST_DEG, noise=0.01, seed=20261121)
    myocardium = myocardium_mask(sequence, 0, AMPLITUDE_PX, TWIST_DEG)
    labels = myocardium.astype(np.uint8)
    result = analyse_cine(sequence, 0, "network", labels=labels, myocardium_label=1, device="cpu")
    return sequence, truth, myocardium, result


def test_network_endpoint_error_at_end_systole(phantom_analysis):
    sequence, truth, myocardium, result = phantom_analysis
    es = int(np.argmax(contraction_profile(len(sequence))))
    error = np.linalg.norm(result.fields.displacement_mm[es] - truth[es], axis=-1)[myocardium].mean()
    moved = np.linalg.norm(truth[es], axis=-1)[myocardium].mean()
    assert error <= 0.5, f"end-systolic end-point error {error:.3f} px (motion {moved:.2f} px)"


def test_network_strain_follows_the_truth_over_the_cycle(phantom_analysis):
    sequence, truth, myocardium, result = phantom_analysis
    exact = myocardial_strain(truth, sequence.geometry, myocardium)
    estimate = result.strain
    gcs_error = np.abs(estimate.global_circumferential_pct - exact.global_circumferential_pct).max()
    grs_error = np.abs(estimate.global_radial_pct - exact.global_radial_pct).max()
    assert gcs_error <= 2.0 and grs_error <= 2.0, f"GCS off by {gcs_error:.2f}, GRS by {grs_error:.2f} points"
    assert exact.global_circumferential_pct.min() < -10  # the phantom does contract


def test_network_folding_is_rare_and_propagation_keeps_the_myocardium(phantom_analysis):
    sequence, _truth, myocardium, result = phantom_analysis
    worst = max(folding_fraction(u, sequence.geometry, myocardium) for u in result.fields.displacement_mm)
    assert worst <= 0.001
    es = int(np.argmax(contraction_profile(len(sequence))))
    truth_es = myocardium_mask(sequence, es, AMPLITUDE_PX, TWIST_DEG)
    assert dice(result.labels[es] == 1, truth_es) >= 0.95


def _sunnybrook(shared_data, slice_index: int):
    from scanai.io.cine import read_sunnybrook_cine
    from scanai.io.contours import read_sunnybrook_contours

    root = shared_data / "cardiac" / "sunnybrook"
    dicoms = root / "dicoms" / "SCD0000101"
    contours = [c for c in read_sunnybrook_contours(root / "contourfiles" / "SC-HF-I-1", dicoms)
                if c.slice_index == slice_index]
    epicardium = next(c for c in contours if c.kind == "epicardium")
    ed = epicardium.phase_index
    endo_ed = next(c for c in contours if c.kind == "endocardium" and c.phase_index == ed)
    endo_es = next(c for c in contours if c.kind == "endocardium" and c.phase_index != ed)
    return read_sunnybrook_cine(dicoms, slice_index=slice_index), ed, endo_ed, epicardium, endo_es


@pytest.mark.parametrize("slice_index", [4, 6])
def test_sunnybrook_contour_propagated_from_ed_to_es(shared_data, slice_index):
    sequence, ed, endo_ed, epicardium, endo_es = _sunnybrook(shared_data, slice_index)
    labels = np.zeros(sequence.frames.shape[1:], dtype=np.uint8)
    labels[0][epicardium.mask] = 2
    labels[0][endo_ed.mask] = 1
    result = analyse_cine(sequence, ed, "network", labels=labels, myocardium_label=2, blood_pool_label=1,
                          device="cpu")
    score = dice(result.labels[endo_es.phase_index][0] == 1, endo_es.mask)
    unmoved = dice(endo_ed.mask, endo_es.mask)
    assert score >= 0.85, f"slice {slice_index}: Dice {score:.3f} (without motion {unmoved:.3f})"
    peak, _frame = result.strain.peak_circumferential()
    assert -40.0 < peak < -3.0, f"peak global circumferential strain {peak:.1f} %"
