"""ChestQC pipeline: checks, view position, intensity warnings, thresholds, detection + assessment end to end with
an oracle detector (the phantom's ground truth, so no trained weights are needed), bad inputs, geometry helpers and
the overlay figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from scanai.chest.detection import EXPERIMENTAL, OBJECTS, Box, Detections, detections_from_masks
from scanai.chest.io import Radiograph, read_radiograph
from scanai.chest.metrics import NOT_ASSESSABLE, THRESHOLD_PROFILES
from scanai.chest.phantom import make_chest_phantom, write_phantom_dicom
from scanai.chest.pipeline import (
    SEGMENT_STYLE,
    analyse_file,
    analyse_radiograph,
    box_in_ras,
    centre_line,
    detector_by_name,
    error_row,
    intensity_warnings,
    inversion_score,
    patient_age_years,
    ras_of_pixel,
    spine_line,
    summary_row,
    table_columns,
    view_check,
    width_line_indices,
)
from scanai.core.errors import Cancelled, FileFormatError, InputError, ModelError
from scanai.core.image import Volume
from scanai.core.progress import CancelToken, Progress

PHANTOM_NAMES = {"right_lung": "lung_right", "left_lung": "lung_left"}


class Oracle:
    """Returns the phantom's ground-truth masks (plus ``extra`` masks, e.g. a foreign object)."""

    name = "oracle"

    def __init__(self, phantom, extra=None, confidences=None) -> None:
        self.phantom, self.extra, self.confidences = phantom, extra or {}, confidences
        self.calls = 0

    def detect(self, image, progress=None):
        self.calls += 1
        assert image.shape == self.phantom.image.shape
        masks = {PHANTOM_NAMES.get(k, k): v for k, v in self.phantom.masks.items()
                 if PHANTOM_NAMES.get(k, k) in OBJECTS}
        masks.update(self.extra)
        return detections_from_masks(masks, image, self.confidences, self.phantom.masks["torso"], self.name)


class Refusing:
    """A detector that must not be called (views that are not assessable skip detection)."""

    name = "refusing"

    def detect(self, image, progress=None):  # pragma: no cover - failing is the point
        raise AssertionError("the detector was called")


class Blind:
    """A detector that finds nothing."""

    name = "blind"

    def detect(self, image, progress=None):
        return Detections(image.shape, body=np.ones(image.shape, dtype=bool), backend=self.name)


@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom(size=256, spacing_mm=0.7, seed=5)


def _dicom(phantom, folder: Path, name: str = "mono2.dcm", photometric: str = "MONOCHROME2", **attributes) -> Path:
    path = write_phantom_dicom(phantom, folder / name, photometric)
    if attributes:
        dataset = pydicom.dcmread(str(path))
        for keyword, value in attributes.items():
            setattr(dataset, keyword, value)
        dataset.save_as(str(path), enforce_file_format=True)
    return path


# ---------------------------------------------------------------------------------------------- end to end


def test_phantom_is_first_level_with_the_ground_truth_ctr(phantom, tmp_path):
    result = analyse_file(_dicom(phantom, tmp_path), Oracle(phantom))
    assessment = result.assessment
    assert assessment.level == "FIRST" and assessment.rule == "R1" and not assessment.reasons
    heart, lungs = phantom.masks["heart"], phantom.masks["right_lung"] | phantom.masks["left_lung"]
    heart_px = np.ptp(np.flatnonzero(heart.any(axis=0))) + 1
    lung_px = np.ptp(np.flatnonzero(lungs.any(axis=0))) + 1
    ctr = assessment.finding("cardiothoracic_ratio")
    assert ctr.value == pytest.approx(heart_px / lung_px, abs=1e-12)
    assert ctr.value == pytest.approx(0.448, abs=0.01) and not ctr.present
    assert ctr.measurements["heart_width_mm"] == pytest.approx(heart_px * 0.7)  # spacing from the header
    assert result.warnings == () and result.backend == "oracle" and result.assessable
    record = result.as_dict()
    assert record["spacing_mm"] == pytest.approx([0.7, 0.7]) and record["view_position"] == "PA"
    assert record["detections"]["objects"]["heart"]["pixels"] == int(heart.sum())
    assert record["assessment"]["level"] == "FIRST"


def test_monochrome1_and_monochrome2_give_identical_assessments(phantom, tmp_path):
    mono2 = analyse_file(_dicom(phantom, tmp_path, "m2.dcm"), Oracle(phantom))
    mono1 = analyse_file(_dicom(phantom, tmp_path, "m1.dcm", "MONOCHROME1"), Oracle(phantom))
    assert mono1.radiograph.metadata["inverted"] and not mono2.radiograph.metadata["inverted"]
    np.testing.assert_array_equal(mono1.radiograph.image.array, mono2.radiograph.image.array)
    assert mono1.assessment.as_dict() == mono2.assessment.as_dict()
    assert mono1.warnings == mono2.warnings == ()


def test_foreign_object_inside_the_lung_is_second_level_and_drawn(phantom, tmp_path):
    button = np.zeros(phantom.image.shape, dtype=bool)
    button[120:127, 80:87] = True  # inside the right lung (image left)
    assert phantom.masks["right_lung"][button].all()
    oracle = Oracle(phantom, {"foreign_object": button}, {"foreign_object": 0.9})
    assert analyse_file(_dicom(phantom, tmp_path), oracle).assessment.level == "FIRST"  # withheld by default
    result = analyse_file(_dicom(phantom, tmp_path), oracle, overrides={"experimental": True})
    assert result.assessment.level == "SECOND" and result.assessment.rule == "R3"
    assert any("foreign object" in reason for reason in result.assessment.reasons)
    from scanai.chest.figures import save_overlay

    path = save_overlay(result.radiograph.image.array[0], result.detections, result.assessment,
                        tmp_path / "overlays" / "fo.png", "button", result.radiograph.spacing_mm)
    assert path.is_file() and path.stat().st_size > 10_000


def test_lungs_not_found_is_not_assessable(phantom):
    result = analyse_radiograph(Radiograph(phantom.volume(), True, {}), Blind())
    assert result.assessment.level == NOT_ASSESSABLE and result.detections is not None
    assert "No lung" in result.assessment.reasons[0]
    assert summary_row(result)["level"] == NOT_ASSESSABLE


def test_progress_is_reported_and_cancel_stops(phantom, tmp_path):
    path = _dicom(phantom, tmp_path)
    fractions = []
    analyse_file(path, Oracle(phantom), progress=Progress(lambda f, m: fractions.append(f)))
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        analyse_file(path, Oracle(phantom), progress=Progress(None, token))


# ---------------------------------------------------------------------------------------------- header facts


@pytest.mark.parametrize("view, kind", [("LL", "lateral"), ("RL", "lateral"), ("LATERAL", "lateral"),
                                        ("RLO", "oblique"), ("LLD", "decubitus")])
def test_a_view_that_is_not_frontal_is_not_assessable_without_detection(phantom, tmp_path, view, kind):
    result = analyse_file(_dicom(phantom, tmp_path, ViewPosition=view), Refusing())
    assert result.assessment.level == NOT_ASSESSABLE and result.detections is None
    assert result.assessment.reasons[0].startswith(f"{kind} view (ViewPosition {view})")
    assert result.assessment.findings == () and result.assessment.tests == ()
    row = summary_row(result, "x.dcm")
    assert row["level"] == NOT_ASSESSABLE and row["CTR"] == "" and "frontal" in row["reasons"]


@pytest.mark.filterwarnings("ignore:Invalid value for VR AS")
def test_view_profiles_and_unrecognised_views(phantom, tmp_path):
    ap = analyse_file(_dicom(phantom, tmp_path, "ap.dcm", ViewPosition="AP"), Oracle(phantom))
    assert ap.assessment.thresholds.name == "AP" and ap.assessment.thresholds.ctr == 0.55
    child = analyse_file(_dicom(phantom, tmp_path, "child.dcm", PatientAge="006Y"), Oracle(phantom))
    assert child.assessment.thresholds.name == "paediatric"
    odd = analyse_file(_dicom(phantom, tmp_path, "odd.dcm", ViewPosition="XYZ", PatientAge="old"), Oracle(phantom))
    assert odd.assessment.level == "FIRST" and odd.assessment.thresholds.name == "default"
    assert any("XYZ" in warning for warning in odd.warnings)
    assert view_check("pa") == ("PA", None, None) and view_check("") == (None, None, None)
    assert patient_age_years("006M") == pytest.approx(0.5) and patient_age_years("??") is None


def test_given_thresholds_and_overrides(phantom, tmp_path):
    path = _dicom(phantom, tmp_path)
    result = analyse_file(path, Oracle(phantom), THRESHOLD_PROFILES["infant"], overrides={"weighted": False})
    assert result.assessment.thresholds.ctr == 0.60 and result.assessment.thresholds.weighted is False
    strict = analyse_file(path, Oracle(phantom), overrides={"ctr": 0.40})  # the phantom's CTR is 0.45
    assert strict.assessment.finding("cardiothoracic_ratio").present
    with pytest.raises(InputError, match="Unknown threshold"):
        analyse_file(path, Oracle(phantom), overrides={"ctr_limit": 0.4})


# ---------------------------------------------------------------------------------------------- intensities


def test_intensity_warnings(phantom):
    assert intensity_warnings(Radiograph(phantom.volume(), True, {})) == []
    inverted = Radiograph(phantom.volume().with_array(1.0 - phantom.volume().array), True, {})
    assert inversion_score(phantom.image) > 0.3 and inversion_score(1.0 - phantom.image) < -0.3
    assert intensity_warnings(inverted)[0].startswith("looks inverted")
    saturated = phantom.image.copy()
    saturated[:60] = saturated.max()
    assert any(w.startswith("saturated") for w in intensity_warnings(Radiograph(Volume(saturated[None]), True, {})))
    levels = np.round(phantom.image * 7) / 7
    assert any("grey levels" in w for w in intensity_warnings(Radiograph(Volume(levels[None]), True, {})))
    narrow = 1000.0 + phantom.image * 20  # 12-bit data using 20 of 4096 values
    warnings = intensity_warnings(Radiograph(Volume(np.round(narrow)[None]), True, {"bits_stored": 12}))
    assert any("dynamic range" in w for w in warnings)


def test_an_inverted_image_is_not_assessable_unless_asked(phantom):
    inverted = Radiograph(phantom.volume().with_array(1.0 - phantom.volume().array), True, {})
    result = analyse_radiograph(inverted, Refusing())
    assert result.assessment.level == NOT_ASSESSABLE and "inverted" in result.assessment.reasons[0]
    graded = analyse_radiograph(inverted, Oracle(phantom), refuse_inverted=False)
    assert graded.assessment.level == "FIRST" and graded.warnings[0].startswith("looks inverted")
    # the same pixels from a file labelled MONOCHROME1 (which the reader inverted): the label is wrong, undo it
    mislabelled = Radiograph(inverted.image, True, {"inverted": True, "photometric_interpretation": "MONOCHROME1"})
    corrected = analyse_radiograph(mislabelled, Oracle(phantom))
    assert corrected.assessment.level == "FIRST" and corrected.warnings[0].startswith("mislabelled photometric")
    assert corrected.radiograph.metadata["inversion_undone"]
    offset = corrected.radiograph.image.array - phantom.volume().array
    assert np.ptp(offset) < 1e-5  # the original picture up to a constant


def test_real_radiographs_are_not_flagged_and_the_negative_is(shared_data):
    chest = shared_data / "chest"
    files = sorted((chest / "wingspan" / "png").glob("*.png"))[::4] + sorted(chest.glob("*.png"))
    files.append(chest / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm")
    scores = [inversion_score(read_radiograph(path).image.array[0]) for path in files]
    assert min(scores) > 0.04  # the threshold is -0.10
    for path in files[-3:]:
        assert intensity_warnings(read_radiograph(path)) == []
    # Fake_MONOHR1.dcm: the original's pixels labelled MONOCHROME1, so read correctly it is a negative. Its label is
    # wrong; the pipeline undoes the inversion and grades it exactly like the original.
    negative = read_radiograph(chest / "Fake_MONOHR1.dcm")
    assert inversion_score(negative.image.array[0]) < -0.3
    classical = pytest.importorskip("scanai.chest.classical").ClassicalDetector()
    original = analyse_file(files[-1], classical)
    fake = analyse_radiograph(negative, classical)
    assert fake.assessment.as_dict()["tests"] == original.assessment.as_dict()["tests"]
    assert fake.assessment.level == original.assessment.level and "mislabelled" in fake.warnings[0]
    for name in ("lung_right", "lung_left", "heart"):
        np.testing.assert_array_equal(fake.detections.mask(name), original.detections.mask(name))
    # a picture that looks inverted has no label to blame: not assessable
    picture = read_radiograph(files[-2])
    flipped = Radiograph(picture.image.with_array(255.0 - picture.image.array), False, picture.metadata)
    assert analyse_radiograph(flipped, Refusing()).assessment.level == NOT_ASSESSABLE


# ---------------------------------------------------------------------------------------------- bad input


def test_colour_picture_is_refused_and_grey_stored_as_rgb_is_accepted(phantom, tmp_path, rng):
    import SimpleITK as sitk

    grey = np.round(phantom.image * 255).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(np.stack([grey] * 3, axis=-1), isVector=True), str(tmp_path / "g.png"))
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(tmp_path / "g1.png"))
    np.testing.assert_allclose(read_radiograph(tmp_path / "g.png").image.array,
                               read_radiograph(tmp_path / "g1.png").image.array, atol=1e-3)
    sitk.WriteImage(sitk.GetImageFromArray(np.stack([grey] * 3, axis=-1), isVector=True), str(tmp_path / "g.jpg"))
    assert read_radiograph(tmp_path / "g.jpg").image.array.shape == (1, 256, 256)  # JPEG chroma noise is tolerated
    colour = np.stack([grey, np.roll(grey, 40, axis=1), 255 - grey], axis=-1)
    sitk.WriteImage(sitk.GetImageFromArray(colour, isVector=True), str(tmp_path / "photo.png"))
    with pytest.raises(InputError, match="colour image"):
        analyse_file(tmp_path / "photo.png", Refusing())


def test_empty_truncated_and_corrupt_files_are_refused(phantom, tmp_path, rng):
    import SimpleITK as sitk

    good = _dicom(phantom, tmp_path)
    cases = {"empty.dcm": b"", "empty.png": b"", "cut.dcm": good.read_bytes()[: good.stat().st_size // 2],
             "cut_header.dcm": good.read_bytes()[:300],
             "garbage.dcm": rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()}
    sitk.WriteImage(sitk.GetImageFromArray(np.round(phantom.image * 255).astype(np.uint8)), str(tmp_path / "a.jpg"))
    cases["cut.jpg"] = (tmp_path / "a.jpg").read_bytes()[:3000]
    messages = {"empty.dcm": "empty", "empty.png": "empty", "cut.dcm": "incomplete", "cut_header.dcm": "incomplete",
                "garbage.dcm": "not a DICOM file", "cut.jpg": "incomplete"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(FileFormatError, match=messages[name]):
            analyse_file(tmp_path / name, Refusing())


def test_a_three_d_volume_is_refused(phantom, tmp_path, rng):
    from scanai.io.sitk_image import write_image

    stack = write_image(Volume(rng.normal(size=(4, 96, 96))), tmp_path / "ct.nrrd")
    with pytest.raises(InputError, match="3-D volume"):
        analyse_file(stack, Refusing())
    with pytest.raises(InputError, match="one 2-D image"):
        analyse_radiograph(Radiograph(Volume(rng.normal(size=(3, 96, 96))), True, {}), Refusing())


def test_detector_by_name():
    with pytest.raises(InputError, match="network, classical"):
        detector_by_name("magic")
    try:
        assert detector_by_name("classical").name == "classical"
    except ImportError:
        pass  # the classical detector is written in parallel; its own tests cover it
    try:
        assert detector_by_name("network", "cpu").name == "network"
    except ModelError as error:
        assert "weights" in str(error).lower() or "model" in str(error).lower()


# ---------------------------------------------------------------------------------------------- geometry, rows


def test_geometry_helpers_put_pixels_where_the_volume_shows_them(phantom):
    volume = phantom.volume()
    geometry = volume.geometry
    np.testing.assert_allclose(ras_of_pixel(geometry, 10, 20), geometry.ras_of_ijk(np.array([20, 10, 0])))
    centre, size = box_in_ras(geometry, Box(10, 20, 30, 60))
    np.testing.assert_allclose(centre, geometry.ras_of_ijk(np.array([39.5, 19.5, 0])))
    np.testing.assert_allclose(size, [40 * 0.7, 20 * 0.7, 1.0])
    assert centre_line((256, 256)) == (0.0, 127.5, 255.0, 127.5)
    detections = Oracle(phantom).detect(phantom.image)
    top, col_top, bottom, col_bottom = spine_line(detections)
    assert col_top == pytest.approx(127.5, abs=0.5) and col_bottom == pytest.approx(127.5, abs=0.5)
    assert top < 40 and bottom > 220


def test_rows_and_table_columns(phantom):
    result = analyse_radiograph(Radiograph(phantom.volume(), False, {"source": "p.png"}), Oracle(phantom))
    row = summary_row(result)
    assert row["file"] == "p.png" and row["level"] == "FIRST" and row["cardiomegaly"] == "no"
    assert row["C6"] == pytest.approx(result.assessment.test("C6").value, abs=1e-6) and row["C6_pass"] == "yes"
    assert row["pneumothorax_severity"] == "not assessed (experimental)" and "pixel size" in row["warnings"]
    assert not set(result.detections.objects) & set(EXPERIMENTAL)  # withheld from every output by default
    clavicle = np.zeros(phantom.image.shape, dtype=bool)
    clavicle[10:14, 150:200] = True
    hidden = analyse_radiograph(Radiograph(phantom.volume(), False, {}), Oracle(phantom, {"clavicle_left": clavicle}))
    shown = analyse_radiograph(Radiograph(phantom.volume(), False, {}), Oracle(phantom, {"clavicle_left": clavicle}),
                               overrides={"experimental": True})
    assert "clavicle_left" not in hidden.detections.objects and "clavicle_left" in shown.detections.objects
    assert summary_row(shown)["pneumothorax_severity"] == "none"
    heart = next(line for line in result.assessment.width_lines if line.name == "heart")
    assert width_line_indices(heart)[2] - width_line_indices(heart)[1] == heart.length_px
    columns = table_columns(result.assessment.table_rows())
    assert columns["id"][len(result.assessment.tests)] == "overall_level" and "FIRST" in columns["value"]
    assert set(columns["pass"]) <= {"true", "false", ""}
    numeric = table_columns([{"a": 1, "b": None}, {"a": 2.5, "b": 3}])
    assert numeric["a"] == [1.0, 2.5] and np.isnan(numeric["b"][0])
    assert error_row("x.dcm", FileFormatError("broken.", "Fix it."))["error"] == "broken. Fix it."
    assert set(SEGMENT_STYLE) == set(OBJECTS) - {"foreign_object"}


def test_model_card_says_which_objects_are_experimental():
    """Validated or withheld: the card names every object's status, and the withheld ones are exactly EXPERIMENTAL."""
    from scanai.core.catalog import load_card

    status = load_card("chest_detector").extra["objects"]
    assert set(status) == set(OBJECTS)
    assert {name for name, text in status.items() if text.startswith("experimental")} == set(EXPERIMENTAL)
