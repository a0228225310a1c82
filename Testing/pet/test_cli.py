"""``scanai pet`` end to end (4-D image + timing + blood table or pool -> maps, statistics, clear errors), demo."""

from __future__ import annotations

import argparse
import re

import numpy as np
import pytest

from scanai import cli as main_cli
from scanai.core.image import Geometry, Volume
from scanai.io.sitk_image import read_image, write_image
from scanai.pet import cli as pet_cli
from scanai.pet.dynamic import DynamicPet
from scanai.pet.phantom import DEFAULT_REGIONS, pet_phantom
from scanai.pet.study import write_dynamic_pet


def oblique_geometry() -> Geometry:
    angle = np.deg2rad(20.0)
    rotation = ((np.cos(angle), -np.sin(angle), 0.0), (np.sin(angle), np.cos(angle), 0.0), (0.0, 0.0, 1.0))
    return Geometry((1.5, 2.0, 3.25), (-12.5, 40.0, 7.0), rotation)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A BIDS-style 4-D NIfTI + sidecar of a 3-region phantom, a plasma CSV and a label image, on disk."""
    folder = tmp_path_factory.mktemp("pet_cli")
    regions = {name: DEFAULT_REGIONS[name] for name in ("white matter", "grey matter", "tumour")}
    phantom = pet_phantom((2, 12, 12), regions=regions, geometry=oblique_geometry())
    image, _sidecar = write_dynamic_pet(DynamicPet(phantom.sequence, phantom.timing, unit="kBq/mL"),
                                        folder / "dynamic.nii.gz")
    t_s = np.arange(0.0, 3601.0, 2.0)
    blood = folder / "plasma.csv"
    blood.write_text("time_s,Cp\n" + "\n".join(f"{t},{v}" for t, v in
                                                 zip(t_s, phantom.input_function.value_at(t_s), strict=True)))
    labels = write_image(phantom.labels, folder / "labels.nrrd")
    return phantom, image, blood, labels, folder


def _run(arguments: list[str]) -> int:
    parser = argparse.ArgumentParser()
    pet_cli.add_arguments(parser)
    return pet_cli.run(parser.parse_args(arguments))


def test_patlak_maps_keep_the_geometry_and_match_truth(study, capsys):
    phantom, image, blood, _labels, folder = study
    out = folder / "patlak"
    assert _run([str(image), "--input-function", str(blood), "--t-star-min", "30", "--out", str(out)]) == 0
    assert "patlak_Ki.nrrd" in capsys.readouterr().out
    ki = read_image(out / "patlak_Ki.nrrd")
    assert ki.array.shape == (2, 12, 12) and ki.geometry.is_close(phantom.sequence.geometry)
    inside = phantom.ki_true.array > 0
    np.testing.assert_allclose(ki.array[inside], phantom.ki_true.array[inside], rtol=0.025)
    for name in ("patlak_V.nrrd", "patlak_R2.nrrd", "patlak_statistics.csv", "input_function.csv", "frames.csv"):
        assert (out / name).is_file()


def test_compartment_model_with_regions_writes_one_row_per_label(study):
    phantom, image, blood, labels, folder = study
    out = folder / "2tcm"
    assert _run([str(image), "--input-function", str(blood), "--method", "2tcm_irreversible", "--regions",
                 str(labels), "--format", "nii.gz", "--out", str(out)]) == 0
    rows = (out / "2tcm_irreversible_statistics.csv").read_text().strip().splitlines()
    header = rows[0].split(",")
    assert len(rows) == 1 + len(phantom.regions) and "Ki_mean" in header and "K1_mean" in header
    k1 = read_image(out / "2tcm_irreversible_K1.nii.gz").array
    for number, (k1_true, *_rest) in enumerate(phantom.regions.values(), start=1):
        assert np.median(k1[phantom.labels.array == number]) == pytest.approx(k1_true, rel=0.03)


def test_blood_pool_and_population_inputs(study, tmp_path):
    phantom, image, blood, _labels, folder = study
    frames = phantom.sequence.frames.copy()
    frames[:, 0, :3, :3] = phantom.input_function.mean_over_frames(phantom.timing)[:, None, None]
    pooled, _ = write_dynamic_pet(DynamicPet(phantom.sequence.__class__(frames, phantom.sequence.geometry,
                                                                         phantom.sequence.index_values),
                                             phantom.timing), tmp_path / "pooled.nii.gz")
    pool = np.zeros(frames.shape[1:], dtype=np.uint8)
    pool[0, :3, :3] = 1
    mask = write_image(Volume(pool, phantom.sequence.geometry), tmp_path / "pool.nrrd")
    inside = phantom.ki_true.array > 0
    for option in ("--blood-pool", "--population-from"):
        out = tmp_path / option.strip("-")
        assert _run([str(pooled), option, str(mask), "--t-star-min", "30", "--out", str(out)]) == 0
        ki = read_image(out / "patlak_Ki.nrrd").array
        error = np.median(np.abs(ki[inside] / phantom.ki_true.array[inside] - 1))
        assert error < 0.08, f"{option}: median Ki error {100 * error:.1f} %"


def test_malformed_row_filter_is_a_usage_error(study, capsys):
    _phantom, image, blood, _labels, _folder = study
    with pytest.raises(SystemExit) as stop:
        main_cli.main(["pet", str(image), "--input-function", str(blood), "--where", "cgyu_1"])
    assert stop.value.code == 2 and "COLUMN=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("extra, words", [
    (["--input-unit", "SUV"], "SUV"),
    (["--mask", "OTHER_GRID"], "grid"),
    (["--t-star-min", "59"], "t\\*"),
])
def test_bad_input_is_a_clear_error_without_traceback(study, tmp_path, capsys, extra, words):
    phantom, image, blood, _labels, _folder = study
    if "OTHER_GRID" in extra:
        other = write_image(Volume(np.ones((2, 12, 12), np.uint8), Geometry((3.0, 3.0, 3.0))), tmp_path / "m.nrrd")
        extra = [str(other) if item == "OTHER_GRID" else item for item in extra]
    code = main_cli.main(["pet", str(image), "--input-function", str(blood), "--out", str(tmp_path / "o"), *extra])
    error = capsys.readouterr().err
    assert code == 2 and "Traceback" not in error
    assert re.search(words, error), error


def test_demo_writes_report_and_files(tmp_path):
    from scanai.core.paths import shared_data_dir

    out_dir = tmp_path / "pet"
    markdown = pet_cli.demo(out_dir, shared_data_dir())
    assert markdown.startswith("## ")
    for name in ("phantom_ki.png", "phantom_ki.nrrd", "phantom_ki_true.nrrd", "phantom_regions.csv"):
        assert (out_dir / name).is_file() and (out_dir / name).stat().st_size > 0
        if name.endswith(".png"):
            assert f"(pet/{name})" in markdown
    if shared_data_dir() is not None:
        assert (out_dir / "models_real.png").is_file() and "pet/models_real.png" in markdown
    assert (out_dir / "network_ki.png").is_file() and "pet/network_ki.png" in markdown


# ------------------------------------------------------------------------------------ units, fit checks, regions
def _blood_csv(path, phantom, scale: float = 1.0):
    """The phantom's plasma curve as a blood table, its values multiplied by ``scale`` (1000: kBq/mL -> Bq/mL)."""
    t_s = np.arange(0.0, 3601.0, 10.0)
    values = scale * phantom.input_function.value_at(t_s)
    path.write_text("time_s,Cp\n" + "".join(f"{t:g},{v:.6g}\n" for t, v in zip(t_s, values, strict=True)))
    return path


@pytest.fixture(scope="module")
def bare(study, tmp_path_factory):
    """The study's image without its sidecar (unit unknown) and its frame table: a NIfTI + frames CSV."""
    phantom, image, _blood, _labels, _folder = study
    folder = tmp_path_factory.mktemp("pet_bare")
    bare_image, sidecar = write_dynamic_pet(DynamicPet(phantom.sequence, phantom.timing), folder / "bare.nii.gz")
    sidecar.unlink()
    return bare_image, phantom.timing.to_csv(folder / "frames.csv")


def _main(arguments: list[str], capsys) -> tuple[int, str, str]:
    code = main_cli.main(["pet", *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_image_unit_declares_a_unit_the_image_lacks_and_must_agree_with_one_it_carries(study, bare, tmp_path,
                                                                                         capsys):
    phantom, image, blood, _labels, _folder = study
    bare_image, frames = bare
    code, _out, err = _main([str(bare_image), "--frames", str(frames), "--input-function", str(blood),
                             "--input-unit", "kBq/mL", "--out", str(tmp_path / "a")], capsys)
    assert code == 0 and re.search(r"warning: The image's activity unit is unknown .* assumed to be in the input "
                                   r"function's unit, kBq/mL; if it is not, state it with --image-unit", err), err
    code, _out, err = _main([str(bare_image), "--frames", str(frames), "--input-function", str(blood),
                             "--input-unit", "kBq/mL", "--image-unit", "kBq/cc", "--out", str(tmp_path / "b")], capsys)
    assert code == 0 and "warning" not in err, err
    code, _out, err = _main([str(image), "--input-function", str(blood), "--image-unit", "Bq/mL",
                             "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "Traceback" not in err and not (tmp_path / "c").exists()
    assert re.search(r"image's activity unit is kBq/mL \(its sidecar's Units\) but Bq/mL was stated \(--image-unit\)",
                     err), err
    with pytest.raises(SystemExit) as stopped:
        main_cli.main(["pet", str(image), "--input-function", str(blood), "--image-unit", "Bq/L"])
    assert stopped.value.code == 2 and re.search(r"'Bq/L' is not understood.*kBq/mL", capsys.readouterr().err)


def test_blood_in_bq_against_an_image_in_kbq_is_warned_not_silently_zero(study, tmp_path, capsys):
    phantom, image, _blood, _labels, _folder = study
    blood = _blood_csv(tmp_path / "blood_bq.csv", phantom, 1000.0)  # Bq/mL numbers, unit not stated
    code, out, err = _main([str(image), "--input-function", str(blood), "--out", str(tmp_path / "wrong")], capsys)
    assert code == 0
    assert "Ki: no voxel fitted" in out and "Ki median 0 " not in out, out
    warning = err[err.index("warning: The Patlak fit looks wrong"):]
    for words in ("none of the 288 voxels inside the mask was fitted", "unit mismatch",
                  "the image is in kBq/mL and the input function in no stated unit",
                  r"typical value is [0-9.]+ times the image's",
                  r"suggests an input function in Bq/mL against an image in kBq/mL \(x1000\)",
                  "wrong input function", "wrong frame times"):
        assert re.search(words, warning), (words, warning)
    assert warning.count("\n") == 1, "one paragraph"
    code, out, err = _main([str(image), "--input-function", str(blood), "--input-unit", "Bq/mL",
                            "--t-star-min", "30", "--out", str(tmp_path / "right")], capsys)
    assert code == 0 and "warning" not in err, err
    ki = read_image(tmp_path / "right" / "patlak_Ki.nrrd").array
    inside = phantom.ki_true.array > 0
    np.testing.assert_allclose(ki[inside], phantom.ki_true.array[inside], rtol=0.025)


def test_an_unlabelled_image_in_kbq_against_blood_in_bq_gets_both_warnings(study, bare, tmp_path, capsys):
    phantom, _image, _blood, _labels, _folder = study
    bare_image, frames = bare
    blood = _blood_csv(tmp_path / "blood_bq.csv", phantom, 1000.0)
    common = [str(bare_image), "--frames", str(frames), "--input-function", str(blood), "--input-unit", "Bq/mL"]
    code, _out, err = _main([*common, "--out", str(tmp_path / "a")], capsys)
    assert code == 0 and "assumed to be in the input function's unit, Bq/mL" in err
    assert re.search(r"fit looks wrong: none of the 288 voxels .*the image is in an unknown unit and the input "
                     r"function in Bq/mL.*\(x1000\)", err), err
    code, out, err = _main([*common, "--image-unit", "kBq/mL", "--t-star-min", "30", "--out", str(tmp_path / "b")],
                           capsys)
    assert code == 0 and "warning" not in err, err
    assert re.search(r"patlak: 288 voxels, \d+ fitted; Ki median 0\.0\d+", out), out


def test_an_image_a_thousand_times_the_blood_is_warned_by_magnitude(study, tmp_path, capsys):
    phantom, _image, _blood, _labels, _folder = study
    image, _sidecar = write_dynamic_pet(DynamicPet(phantom.sequence.__class__(
        phantom.sequence.frames * 1000.0, phantom.sequence.geometry, phantom.sequence.index_values), phantom.timing),
        tmp_path / "bq.nii.gz")
    _sidecar.unlink()  # an image in Bq/mL numbers, unit unknown; the blood table in kBq/mL numbers, unit unknown
    frames = phantom.timing.to_csv(tmp_path / "frames.csv")
    blood = _blood_csv(tmp_path / "blood.csv", phantom)
    code, _out, err = _main([str(image), "--frames", str(frames), "--input-function", str(blood),
                             "--out", str(tmp_path / "o")], capsys)
    assert code == 0 and re.search(r"input function's values are 0.000\d+ times the image's.*suggests an input "
                                   r"function in kBq/mL against an image in Bq/mL \(x1/1000\)", err), err


def test_a_label_map_on_another_grid_is_refused_before_any_fit(study, tmp_path, capsys, monkeypatch):
    import scanai.pet.analysis as analysis

    phantom, image, blood, _labels, _folder = study
    geometry = Geometry((1.5, 2.0, 3.0), phantom.sequence.geometry.origin_mm, phantom.sequence.geometry.directions)
    other = write_image(Volume(phantom.labels.array, geometry), tmp_path / "labels_other.nrrd")

    def no_fit(*_args, **_kwargs):
        raise AssertionError("the maps were computed before the label map was checked")

    monkeypatch.setattr(analysis, "compute_maps", no_fit)
    code, _out, err = _main([str(image), "--input-function", str(blood), "--regions", str(other),
                             "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "Traceback" not in err and not (tmp_path / "o").exists()
    assert re.search(r"labels_other.nrrd lies on another grid than the image .*spacing \(1.5, 2, 3(\.0)?\) mm vs "
                     r"\(1.5, 2, 3.25\) mm", err), err
