"""The combined spike detector: the classical levels set sample by sample by the patch classifier's opinion
(scanai.kspace.peeling.prior_levels, scanai.kspace.pipeline.classifier_prior)."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest

import scanai.kspace as package
from scanai.core.errors import ModelError
from scanai.core.jobs import decode, encode
from scanai.kspace import make_phantom, read_kspace
from scanai.kspace.classical import detect_plane
from scanai.kspace.patches import PatchGrid
from scanai.kspace.peeling import VETO_RAISE, Thresholds, prior_levels
from scanai.kspace.pipeline import DETECTORS, VETO_PROBABILITY, calibrate, classifier_prior, detect

#: se_t1 (one coil): a clean sample that scores 5.9-6.3 (-log10 p) and was flagged in most bench trials once a
#: sure spike elsewhere relaxed the level to 5.5; its patches score ~0.002 with the shipped classifier.
CLEAN_OUTLIER = (170, 228)
SPIKE = (60, 60)


def se_t1_with_spike(shared_data):  # noqa: ANN001, ANN201
    ks = read_kspace(shared_data / "kspace" / "se_t1_sag_data.mat")
    data = ks.data.copy()
    data[:, 0, SPIKE[0], SPIKE[1]] += 0.3 * np.abs(ks.data).max()
    return ks, replace(ks, data=data)


def test_prior_levels_agree_veto_and_no_opinion() -> None:
    thresholds = Thresholds.from_sensitivity(0.5)
    assert prior_levels(thresholds, False) == thresholds.strict
    assert prior_levels(thresholds, True) == thresholds.relaxed
    prior = np.array([[1, 0, -1]], dtype=np.int8)
    # no sure spike in the slice: the classifier's target patch opens the gate, elsewhere the strict level
    np.testing.assert_allclose(prior_levels(thresholds, False, prior),
                               [[thresholds.relaxed, thresholds.strict, thresholds.strict]])
    # a corrupted slice: relaxed, except one decade more where the classifier rules a spike out
    np.testing.assert_allclose(prior_levels(thresholds, True, prior),
                               [[thresholds.relaxed, thresholds.relaxed, thresholds.relaxed + VETO_RAISE]])


def test_classifier_prior_takes_the_most_confident_overlapping_patch() -> None:
    grid = PatchGrid.over((40, 40), 32)  # anchors 0 and 8 on each axis: four overlapping patches
    probabilities = np.array([0.9, 0.2, VETO_PROBABILITY / 3, VETO_PROBABILITY / 3])
    prior = classifier_prior(grid, probabilities, probabilities > 0.5)
    assert prior.shape == (40, 40) and prior.dtype == np.int8
    assert np.all(prior[:32, :32] == 1)  # inside the target patch (0, 0), whatever the others say
    assert np.all(prior[:32, 32:] == 0)  # also in patch (0, 8) of 0.2: no opinion
    assert np.all(prior[32:, 32:] == -1)  # only in patches below the veto probability


def test_a_veto_keeps_the_clean_single_coil_outlier_and_the_spike(shared_data) -> None:
    """Torch-free: the classical detector flags the clean outlier once the spike relaxes its level; the same
    detector with a classifier opinion that places the spike and rules out the rest flags the spike alone."""
    _, spiked = se_t1_with_spike(shared_data)
    plane = spiked.data[:, 0]
    classical = detect_plane(plane)
    assert classical.mask[SPIKE] and classical.mask[CLEAN_OUTLIER]
    prior = np.full(plane.shape[1:], -1, dtype=np.int8)
    prior[SPIKE[0] - 16:SPIKE[0] + 16, SPIKE[1] - 16:SPIKE[1] + 16] = 1
    combined = detect_plane(plane, prior=prior)
    assert list(zip(*np.nonzero(combined.mask), strict=True)) == [SPIKE]


def test_combined_detector_on_real_single_coil_data(shared_data) -> None:
    pytest.importorskip("torch")
    assert "combined" in DETECTORS
    clean, spiked = se_t1_with_spike(shared_data)
    assert detect(clean, detector="combined").count == 0
    detection = detect(spiked, detector="combined")
    assert detection.detector == "combined"
    assert list(zip(*np.nonzero(detection.mask[0]), strict=True)) == [SPIKE]
    assert detect(spiked).mask[0][CLEAN_OUTLIER]  # the classical detector alone flags it
    (row,) = detection.table
    assert row["score"] > Thresholds.from_sensitivity(0.5).relaxed  # the sample's significance
    assert detection.patch_scores[0, row["patch"]] > 0.9  # the classifier's probability of the flagging patch
    corrected = calibrate(spiked, detection)
    changed = np.any(corrected != spiked.data, axis=0)[0]
    assert changed[SPIKE] and changed.sum() == 1  # bit-identical outside the flagged sample


@pytest.mark.parametrize("detector", DETECTORS)
def test_every_detector_removes_a_core_spike_by_its_measured_value(shared_data, detector) -> None:
    """A spike of 0.1 x max|k| beside DC on gre.dat: each detector flags it alone and carries the background
    test's measurement of it (``Detection.core_spikes``), within 2 % of the true value in every coil; calibrate
    subtracts it and changes nothing else."""
    if detector != "classical":
        pytest.importorskip("torch")
    ks = read_kspace(shared_data / "kspace" / "gre.dat")
    spike = (0.1 * np.abs(ks.data).max() * np.array([0.6 + 0.8j, -1.0])).astype(np.complex64)
    data = ks.data.copy()
    data[:, 0, 81, 160] += spike
    spiked = replace(ks, data=data)
    detection = detect(spiked, detector=detector)
    assert list(zip(*np.nonzero(detection.mask[0]), strict=True)) == [(81, 160)]
    measured = detection.core_spikes[(0, 81, 160)]
    assert np.abs(measured - spike).max() < 0.02 * np.abs(spike).max(), (measured, spike)
    corrected = calibrate(spiked, detection)
    np.testing.assert_array_equal(corrected[:, 0, 81, 160], data[:, 0, 81, 160] - measured.astype(np.complex64))
    changed = np.any(corrected != data, axis=0)[0]
    assert changed[81, 160] and changed.sum() == 1
    arrays: dict[str, np.ndarray] = {}  # the Slicer module's worker process hands the detection back whole
    returned = decode(encode(detection, arrays), arrays)
    np.testing.assert_array_equal(returned.core_spikes[(0, 81, 160)], measured)


def test_combined_without_the_network_module_is_a_model_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "scanai.kspace.network", None)
    monkeypatch.delattr(package, "network", raising=False)
    with pytest.raises(ModelError, match="classical"):
        detect(make_phantom(64, 4).kspace, detector="combined")
