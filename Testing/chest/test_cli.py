"""``scanai chest``: a file or a folder -> report.csv (one row per image, error rows for bad files), an overlay PNG
and a JSON per image, thresholds from profiles and JSON, exit status. The detector is an oracle returning the
phantom's ground truth, so the command is tested without trained weights."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest

import scanai.chest.pipeline as pipeline
from scanai.chest.cli import add_arguments, load_thresholds, output_names, radiograph_files, run
from scanai.chest.detection import OBJECTS, detections_from_masks
from scanai.chest.phantom import make_chest_phantom, write_phantom_dicom
from scanai.core.errors import FileFormatError, InputError

PHANTOM_NAMES = {"right_lung": "lung_right", "left_lung": "lung_left"}


class Oracle:
    name = "oracle"

    def __init__(self, phantom) -> None:
        self.phantom = phantom

    def detect(self, image, progress=None):
        masks = {PHANTOM_NAMES.get(k, k): v for k, v in self.phantom.masks.items()
                 if PHANTOM_NAMES.get(k, k) in OBJECTS}
        return detections_from_masks(masks, image, body=self.phantom.masks["torso"], backend=self.name)


@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom(size=256, spacing_mm=0.7, seed=2)


@pytest.fixture
def oracle(phantom, monkeypatch):
    """``--backend`` resolves to the oracle (whatever name is given)."""
    monkeypatch.setattr(pipeline, "detector_by_name", lambda name="network", device="auto": Oracle(phantom))


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_folder_with_a_corrupt_file_gives_one_row_per_image(phantom, oracle, tmp_path, capsys):
    folder = tmp_path / "in"
    write_phantom_dicom(phantom, folder / "b_mono2.dcm", "MONOCHROME2")
    write_phantom_dicom(phantom, folder / "a_mono1.dcm", "MONOCHROME1")
    (folder / "c_corrupt.dcm").write_bytes(b"DICM" + bytes(range(256)) * 8)
    (folder / "notes.txt").write_text("not an image\n")
    out = tmp_path / "out"
    assert run(_args(str(folder), "--out", str(out), "--backend", "classical")) == 1  # 1: an image failed
    rows = _rows(out / "report.csv")
    assert [row["file"] for row in rows] == ["a_mono1.dcm", "b_mono2.dcm", "c_corrupt.dcm"]
    good, bad = rows[:2], rows[2]
    for row in good:
        assert row["level"] == "FIRST" and row["rule"] == "R1" and row["error"] == "" and row["backend"] == "oracle"
        assert float(row["CTR"]) == pytest.approx(0.448, abs=0.01) and row["cardiomegaly"] == "no"
        assert row["C6_pass"] == "yes" and float(row["C4_top"]) == pytest.approx(0.22, abs=0.01)
    assert good[0]["CTR"] == good[1]["CTR"]  # MONOCHROME1 and MONOCHROME2 agree
    assert bad["level"] == "ERROR" and "DICOM" in bad["error"] and bad["CTR"] == ""
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["a_mono1.png", "b_mono2.png"]
    record = json.loads((out / "json" / "b_mono2.json").read_text())
    assert record["assessment"]["level"] == "FIRST" and record["spacing_mm"] == [0.7, 0.7]
    assert "Not a diagnosis" in record["report_text"]
    captured = capsys.readouterr()
    assert "skipped 1 file(s) that are not radiographs: notes.txt" in captured.err
    assert "3 image(s), 1 error(s)" in captured.out


def test_single_file_thresholds_and_normalised_output(phantom, oracle, tmp_path):
    from scanai.chest.io import read_radiograph
    from scanai.chest.preprocess import normalise
    from scanai.io.sitk_image import read_image

    path = write_phantom_dicom(phantom, tmp_path / "p.dcm")
    settings = tmp_path / "t.json"
    settings.write_text(json.dumps({"thresholds": {"ctr": 0.4, "_comment": "strict"}}))
    out = tmp_path / "out"
    assert run(_args(str(path), "--out", str(out), "--thresholds", str(settings), "--normalised")) == 0
    row = _rows(out / "report.csv")[0]
    assert row["file"] == "p.dcm" and row["level"] == "FIRST" and row["cardiomegaly"] == "yes"
    written = read_image(out / "normalised" / "p.nrrd")
    source = read_radiograph(path)
    assert written.geometry.is_close(source.image.geometry)
    np.testing.assert_allclose(written.array, normalise(source.image).array, atol=1e-6)
    assert run(_args(str(path), "--out", str(out), "--profile", "infant", "--thresholds",
                     '{"weighted": false}')) == 0
    record = json.loads((out / "json" / "p.json").read_text())
    assert record["assessment"]["thresholds"]["ctr"] == 0.60 and record["assessment"]["thresholds"]["weighted"] is False
    assert record["assessment"]["thresholds"]["experimental"] is False and _rows(out / "report.csv")[0][
        "pneumothorax_severity"] == "not assessed (experimental)"
    assert run(_args(str(path), "--out", str(out), "--experimental")) == 0
    assert json.loads((out / "json" / "p.json").read_text())["assessment"]["thresholds"]["experimental"] is True
    assert _rows(out / "report.csv")[0]["pneumothorax_severity"] == "none"


def test_lateral_and_unknown_spacing_rows(phantom, oracle, tmp_path):
    import pydicom
    import SimpleITK as sitk

    folder = tmp_path / "in"
    lateral = write_phantom_dicom(phantom, folder / "lateral.dcm")
    dataset = pydicom.dcmread(str(lateral))
    dataset.ViewPosition = "LL"
    dataset.save_as(str(lateral))
    sitk.WriteImage(sitk.GetImageFromArray(np.round(phantom.image * 255).astype(np.uint8)), str(folder / "p.png"))
    assert run(_args(str(folder), "--out", str(tmp_path / "out"))) == 0  # not assessable is a result, not an error
    rows = {row["file"]: row for row in _rows(tmp_path / "out" / "report.csv")}
    assert rows["lateral.dcm"]["level"] == "NOT ASSESSABLE" and "lateral view" in rows["lateral.dcm"]["reasons"]
    assert rows["p.png"]["level"] == "FIRST" and "pixel size not in the file" in rows["p.png"]["warnings"]
    assert (tmp_path / "out" / "overlays" / "lateral.png").is_file()


def test_masks_and_the_pixel_size_of_a_picture(phantom, oracle, tmp_path):
    import SimpleITK as sitk
    from PIL import Image

    from scanai.io.sitk_image import read_image

    picture = tmp_path / "p.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.round(phantom.image * 255).astype(np.uint8)), str(picture))
    out = tmp_path / "out"
    assert run(_args(str(picture), "--out", str(out), "--masks", "nrrd", "--pixel-size-mm", "0.7")) == 0
    record = json.loads((out / "json" / "p.json").read_text())
    assert record["spacing_mm"] == [0.7, 0.7] and record["spacing_source"] == "given by the user"
    assert "pixel size not in the file" not in _rows(out / "report.csv")[0]["warnings"]
    heart = read_image(out / "masks" / "p" / "heart.nrrd")
    assert heart.geometry.spacing_mm[:2] == (0.7, 0.7)
    np.testing.assert_array_equal(heart.array[0] > 0, phantom.masks["heart"])
    assert {p.stem for p in (out / "masks" / "p").iterdir()} >= {"lung_right", "lung_left", "heart", "body"}
    dicom = write_phantom_dicom(phantom, tmp_path / "d.dcm")  # the file's own pixel size wins
    assert run(_args(str(dicom), "--out", str(tmp_path / "o2"), "--masks", "png", "--pixel-size-mm", "0.2")) == 0
    assert json.loads((tmp_path / "o2" / "json" / "d.json").read_text())["spacing_mm"] == [0.7, 0.7]
    png = np.asarray(Image.open(tmp_path / "o2" / "masks" / "d" / "heart.png"))
    np.testing.assert_array_equal(png == 255, phantom.masks["heart"])
    with pytest.raises(InputError, match="pixel size"):
        run(_args(str(picture), "--out", str(tmp_path / "o3"), "--pixel-size-mm", "70"))


def test_bad_commands(phantom, oracle, tmp_path):
    with pytest.raises(FileFormatError, match="does not exist"):
        run(_args(str(tmp_path / "absent"), "--out", str(tmp_path / "o")))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(InputError, match="no radiograph file"):
        run(_args(str(tmp_path / "empty"), "--out", str(tmp_path / "o")))
    with pytest.raises(InputError, match="not valid JSON"):
        load_thresholds(None, "{weighted: no}")
    with pytest.raises(InputError, match="Unknown threshold"):
        load_thresholds(None, '{"ctr_max": 0.5}')
    with pytest.raises(InputError, match="Unknown threshold profile"):
        load_thresholds("giant", None)
    with pytest.raises(FileFormatError, match="does not exist"):
        load_thresholds(None, str(tmp_path / "missing.json"))
    with pytest.raises(SystemExit):
        _args(str(tmp_path), "--out", str(tmp_path / "o"), "--backend", "magic")


def test_exit_status_through_the_dispatcher(tmp_path, capsys):
    from scanai.cli import main

    assert main(["chest", str(tmp_path / "absent.dcm"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_file_discovery_and_names(tmp_path):
    from scanai.chest.phantom import make_chest_phantom

    (tmp_path / "sub").mkdir()
    write_phantom_dicom(make_chest_phantom(size=64), tmp_path / "IM0001")  # DICOM without extension
    for name in ("a.dcm", "a.png", "sub/b.jpg", "table.csv", ".hidden.dcm"):
        (tmp_path / name).write_bytes(b"x")
    found, skipped = radiograph_files(tmp_path)
    assert [p.name for p in found] == ["IM0001", "a.dcm", "a.png"] and [p.name for p in skipped] == ["table.csv"]
    deep, _ = radiograph_files(tmp_path, recursive=True)
    assert [str(p.relative_to(tmp_path)) for p in deep] == ["IM0001", "a.dcm", "a.png", "sub/b.jpg"]
    assert output_names(deep, tmp_path) == ["IM0001", "a_dcm", "a_png", "sub__b"]
