"""``scanai pet --method srtm|... --reference MASK``: reference-region maps, statistics and regional fits end to end
(4-D NIfTI + frames table on disk), and the clear errors when the input options do not fit the method."""

from __future__ import annotations

import argparse
import csv

import numpy as np
import pytest

from scanai.core.errors import InputError
from scanai.core.image import Geometry, Volume, VolumeSequence
from scanai.io.sitk_image import read_image, write_image
from scanai.pet import cli as pet_cli
from scanai.pet.dynamic import DynamicPet
from scanai.pet.study import write_dynamic_pet

from .test_reference_models import BP, simulate_curves, simulate_timing


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 2 x 4 x 6 image: row 0 the reference region, rows 1-3 the 1TCM targets of BPnd :data:`BP`."""
    folder = tmp_path_factory.mktemp("pet_reference_cli")
    timing = simulate_timing()
    reference, one, *_ = simulate_curves(timing)
    frames = np.empty((len(timing), 2, 4, 6), dtype=np.float32)
    frames[:, :, 0, :] = reference[:, None, None]
    for row in range(3):
        frames[:, :, row + 1, :] = one[row][:, None, None]
    geometry = Geometry((2.0, 2.0, 3.0), (0.0, 0.0, 0.0))
    sequence = VolumeSequence(frames, geometry, [float(t) for t in timing.mid_s])
    image, _ = write_dynamic_pet(DynamicPet(sequence, timing, unit="kBq/mL"), folder / "dynamic.nii.gz")
    labels = np.zeros((2, 4, 6), dtype=np.uint8)
    labels[:, 1:, :] = np.arange(1, 4)[None, :, None]
    reference_mask = write_image(Volume((labels == 0).astype(np.uint8), geometry), folder / "cerebellum.nrrd")
    regions = write_image(Volume(labels, geometry), folder / "regions.nrrd")
    return image, reference_mask, regions, folder


def _run(arguments: list[str]) -> int:
    parser = argparse.ArgumentParser()
    pet_cli.add_arguments(parser)
    return pet_cli.run(parser.parse_args(arguments))


@pytest.mark.parametrize("method", ["srtm", "mrtm2"])
def test_reference_maps_and_regional_fits_recover_bpnd(study, method, capsys):
    image, reference_mask, regions, folder = study
    out = folder / method
    assert _run([str(image), "--method", method, "--reference", str(reference_mask), "--regions", str(regions),
                 "--weights", "duration", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{method}_BPnd.nrrd" in printed and "reference_curve.csv" in printed
    bpnd = read_image(out / f"{method}_BPnd.nrrd").array
    np.testing.assert_allclose(bpnd[:, 1:, :], np.broadcast_to(BP[None, :, None], (2, 3, 6)), rtol=0.02)
    with open(out / f"{method}_region_fits.csv") as stream:
        fits = list(csv.DictReader(stream))
    assert [row["region"] for row in fits] == ["label 1", "label 2", "label 3"]
    np.testing.assert_allclose([float(row["BPnd"]) for row in fits], BP, rtol=0.02)
    assert all(float(row["r2"]) > 0.999 for row in fits)
    with open(out / f"{method}_statistics.csv") as stream:
        statistics = list(csv.DictReader(stream))
    np.testing.assert_allclose([float(row["BPnd_median"]) for row in statistics], BP, rtol=0.02)
    assert (out / f"{method}_region_curves.png").is_file()


@pytest.mark.parametrize(("options", "message"), [
    (["--method", "srtm"], "needs a reference region"),
    (["--method", "patlak"], "needs an arterial input"),
    (["--method", "srtm", "--weights", "counts", "--reference", "REF"], "not counts"),
])
def test_input_options_must_fit_the_method(study, options, message):
    image, reference_mask, _regions, folder = study
    options = [str(reference_mask) if option == "REF" else option for option in options]
    with pytest.raises(InputError, match=message):
        _run([str(image), *options, "--out", str(folder / "refused")])
    assert not (folder / "refused").exists()
