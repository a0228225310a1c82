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
