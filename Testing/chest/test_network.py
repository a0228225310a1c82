"""The shipped ChestQC detection network: shapes, the digest's scenarios end to end, and real radiographs.

The heavy evaluation (all 52 Wingspan validation images, speed) is in test_chest_bench.py (``make bench``).
"""

from __future__ import annotations

import numpy as np
import pytest

from scanai.chest.detection import OBJECTS
from scanai.chest.generator import SCENARIOS, make_scenario
from scanai.chest.io import read_radiograph
from scanai.chest.network import INPUT_SIZE, build_chest_network, load_chest_detector, network_input
from scanai.chest.phantom import write_phantom_dicom
from scanai.chest.pipeline import analyse_file, analyse_radiograph
from scanai.chest.wingspan import load_case, split
from scanai.core.image import Volume
from scanai.io.dicom import default_radiograph_geometry

SCENARIO_SEED = 7000  # the training never draws these seeds


@pytest.fixture(scope="module")
def detector():
    return load_chest_detector("cpu")


def _radiograph(image: np.ndarray):
    from scanai.chest.io import Radiograph

    geometry = default_radiograph_geometry(image.shape, (0.7, 0.7))
    return Radiograph(Volume(image.astype(np.float32)[None], geometry), True, {"format": "test"})


def test_untrained_network_maps_an_image_to_one_channel_per_object():
    torch = pytest.importorskip("torch")
    model = build_chest_network({"widths": [4, 8, 8, 8, 8]}).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 64, 64))
    assert tuple(out.shape) == (1, len(OBJECTS), 64, 64)


def test_network_input_is_the_patent_normalisation_at_the_network_size():
    image = np.random.default_rng(0).uniform(0, 4000, (300, 200))
    x = network_input(image)
    assert x.shape == (INPUT_SIZE, INPUT_SIZE)
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1.0) < 1e-2
    np.testing.assert_allclose(network_input(3.0 * image + 7.0), x, atol=1e-4)


@pytest.mark.parametrize("name", SCENARIOS)
def test_generated_scenario_gives_the_expected_grade_and_findings(name, detector, tmp_path):
    scenario = make_scenario(name, SCENARIO_SEED)
    on = {"experimental": True}  # the generated scenarios hold synthetic findings: the machinery is tested with them on
    if scenario.photometric == "MONOCHROME1":
        result = analyse_file(write_phantom_dicom(scenario.phantom, tmp_path / "m1.dcm", "MONOCHROME1"), detector,
                              overrides=on)
    else:
        result = analyse_radiograph(_radiograph(scenario.phantom.image), detector, overrides=on)
    assessment = result.assessment
    assert assessment.level == scenario.expected_level, assessment.reasons
    if scenario.expected_reason:
        assert any(scenario.expected_reason in reason for reason in assessment.reasons), assessment.reasons
    present = {finding.name: finding.present for finding in assessment.findings}
    for finding, expected in scenario.expected_findings.items():
        assert present.get(finding) == expected, (finding, assessment.findings)
    if assessment.level == "SECOND":
        assert not assessment.findings


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


def test_wingspan_validation_images_are_segmented(shared_data, detector):
    """Ten validation images (never trained on); all 52 with the CTR error are in make bench."""
    root = shared_data / "chest" / "wingspan"
    scores = {"lung_right": [], "lung_left": [], "heart": []}
    for case_id in split()["validation"][::5]:
        case = load_case(root, case_id)
        detections = detector.detect(case.image)
        for name in scores:
            scores[name].append(_dice(case.masks[name], detections.mask(name)))
    assert np.mean(scores["lung_right"]) >= 0.95 and np.mean(scores["lung_left"]) >= 0.95, scores
    assert np.mean(scores["heart"]) >= 0.90, scores


def test_nih_radiographs_show_both_lungs_heart_and_spine(shared_data, detector):
    for name in ("00000001_000.png", "00027426_000.png", "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"):
        radiograph = read_radiograph(shared_data / "chest" / name)
        detections = detector.detect(radiograph.image.array[0])
        for organ in ("lung_right", "lung_left", "heart", "spine"):
            assert detections.found(organ), (name, organ)
        # the spine lies between the lungs
        spine_col = np.nonzero(detections.mask("spine"))[1].mean()
        assert np.nonzero(detections.mask("lung_right"))[1].mean() < spine_col
        assert spine_col < np.nonzero(detections.mask("lung_left"))[1].mean()


def test_monochrome1_and_monochrome2_copies_give_the_same_result(shared_data, detector):
    first = analyse_file(shared_data / "chest" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm",
                         detector)
    second = analyse_file(shared_data / "chest" / "Fake_MONOHR1.dcm", detector)
    assert first.assessment.level == second.assessment.level
    for name in ("lung_right", "lung_left", "heart", "spine"):
        assert _dice(first.detections.mask(name), second.detections.mask(name)) > 0.99, name
    ctr = [finding.value for result in (first, second) for finding in result.assessment.findings
           if finding.name == "cardiothoracic_ratio"]
    assert len(ctr) in (0, 2) and (not ctr or abs(ctr[0] - ctr[1]) < 0.005)
