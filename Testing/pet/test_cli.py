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


def test_the_short_scan_network_is_labelled_experimental(study, capsys):
    """Validated on real data, or withheld: the Ki network has seen simulated phantoms only, so it is not the default
    and its run says so; Patlak (the default) prints no such note."""
    from scanai.core.device import torch_available

    phantom, image, blood, _labels, folder = study
    assert _run([str(image), "--input-function", str(blood), "--out", str(folder / "default")]) == 0
    assert "experimental" not in capsys.readouterr().out
    if not torch_available():
        pytest.skip("PyTorch is not installed")
    assert _run([str(image), "--input-function", str(blood), "--method", "network", "--window", "30", "60",
                 "--out", str(folder / "network")]) == 0
    assert "Note: experimental: the short-scan Ki network is validated on simulated phantoms only" in (
        capsys.readouterr().out)


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


def test_regions_are_named_fitted_and_drawn_and_their_medians_skip_unfitted_voxels(study, tmp_path, capsys):
    phantom, _image, blood, labels, _folder = study
    frames = np.array(phantom.sequence.frames, dtype=np.float32)
    region_one = phantom.labels.array == 1
    emptied = np.argwhere(region_one)[: int(region_one.sum()) * 2 // 3]  # most of region 1 without activity
    frames[:, emptied[:, 0], emptied[:, 1], emptied[:, 2]] = 0.0
    image, _sidecar = write_dynamic_pet(DynamicPet(phantom.sequence.__class__(
        frames, phantom.sequence.geometry, phantom.sequence.index_values), phantom.timing, unit="kBq/mL"),
        tmp_path / "holes.nii.gz")
    table = tmp_path / "names.ctbl"
    table.write_text("# value name r g b a\n1 whiteMatter 200 200 200 255\n2 greyMatter 100 100 100 255\n")
    out = tmp_path / "o"
    code, printed, err = _main([str(image), "--input-function", str(blood), "--method", "1tcm", "--regions",
                                str(labels), "--region-names", str(table), "--out", str(out)], capsys)
    assert code == 0, err
    statistics = (out / "1tcm_statistics.csv").read_text().splitlines()
    header = statistics[0].split(",")
    first = dict(zip(header, statistics[1].split(","), strict=True))
    assert first["region"] == "whiteMatter" and statistics[2].startswith("greyMatter,")
    assert statistics[3].startswith("label 3,")  # not in the colour table
    assert int(first["fitted_voxels"]) == int(region_one.sum()) - len(emptied)
    k1 = read_image(out / "1tcm_K1.nrrd").array[region_one]
    fitted = read_image(out / "1tcm_bound_hit.nrrd").array[region_one] != 2
    assert fitted.sum() == int(first["fitted_voxels"]) and np.all(k1[~fitted] == 0)
    assert float(first["K1_median"]) == pytest.approx(float(np.median(k1[fitted])), rel=1e-6)  # not the zeros
    assert float(first["K1_median"]) > 0.01 and np.median(k1) == 0.0
    fits = (out / "1tcm_region_fits.csv").read_text().splitlines()
    assert fits[0].startswith("region,K1,k2,vB,VT,r2,rmse,bound_hit,skipped,delay_s") and len(fits) == 4
    curves = (out / "1tcm_region_curves.csv").read_text().splitlines()
    assert "whiteMatter measured,whiteMatter fitted" in curves[0] and len(curves) == 1 + len(phantom.timing)
    assert (out / "1tcm_region_curves.png").stat().st_size > 10_000
    assert "1tcm_region_curves.png" in printed


def test_segment_names_of_a_segmentation_file_name_the_regions(study, tmp_path):
    from scanai.pet.regions import region_names
    from scanai.samples import _write_segmentation_nrrd

    phantom = study[0]
    path = tmp_path / "labels.seg.nrrd"
    _write_segmentation_nrrd(phantom.labels.array, phantom.labels.geometry,
                             {1: ("cortex", (1.0, 0.0, 0.0)), 3: ("tumour", (0.0, 1.0, 0.0))}, path)
    assert region_names([1, 2, 3], path) == {1: "cortex", 2: "label 2", 3: "tumour"}
    bad = tmp_path / "bad.ctbl"
    bad.write_text("white 1 2 3\n")
    with pytest.raises(Exception, match="does not start with a label value"):
        region_names([1], None, bad)


def test_weights_from_a_frames_column_or_a_file_with_zeros_and_the_fitted_delay(study, bare, tmp_path, capsys):
    phantom, _image, blood, labels, _folder = study
    bare_image, frames = bare
    rows = frames.read_text().strip().splitlines()
    weights = [0.0, 0.0] + [1.0] * (len(rows) - 3)
    frames_w = tmp_path / "frames_w.csv"
    frames_w.write_text("\n".join([rows[0] + ",Weights"] + [f"{r},{w}" for r, w in zip(rows[1:], weights,
                                                                                        strict=True)]) + "\n")
    file_w = tmp_path / "w.csv"
    file_w.write_text("weights\n" + "\n".join(str(w) for w in weights) + "\n")
    common = [str(bare_image), "--image-unit", "kBq/mL", "--input-function", str(blood), "--input-unit", "kBq/mL",
              "--method", "1tcm", "--regions", str(labels)]
    results = []
    for option in ("Weights", str(file_w)):
        out = tmp_path / f"o{len(results)}"
        code, _printed, err = _main([*common, "--frames", str(frames_w), "--weights", option, "--out", str(out)],
                                    capsys)
        assert code == 0, err
        results.append((out / "1tcm_region_fits.csv").read_text())
    assert results[0] == results[1]
    code, _printed, err = _main([*common, "--frames", str(frames), "--weights", "Weights", "--out",
                                 str(tmp_path / "x")], capsys)
    assert code == 2 and "neither none, duration, counts, an existing file nor a column of the frames table" in err
    irreversible = [*common[:-4], "--method", "2tcm_irreversible", *common[-2:]]  # the phantom's own model
    code, printed, err = _main([*irreversible, "--frames", str(frames), "--fit-delay", "-20", "20", "--out",
                                str(tmp_path / "d")], capsys)
    assert code == 0, err
    delay = float(re.search(r"input delay: ([-+0-9.]+) s", printed).group(1))
    assert abs(delay) < 2.0  # the phantom has none


def test_the_unit_conversion_factor_is_printed(study, tmp_path, capsys):
    phantom, image, _blood, _labels, _folder = study
    blood = _blood_csv(tmp_path / "blood_bq.csv", phantom, 1000.0)
    code, printed, _err = _main([str(image), "--input-function", str(blood), "--input-unit", "Bq/mL",
                                 "--out", str(tmp_path / "o")], capsys)
    assert code == 0 and "converted from Bq/mL to the image's kBq/mL (x0.001)" in printed, printed
