"""An activity unit a user types is understood or refused, never silently "unknown" (scanai.pet.units.parse_unit and
``scanai pet --input-unit``)."""

from __future__ import annotations

import pytest

from scanai.core.errors import InputError
from scanai.pet.units import parse_unit


@pytest.mark.parametrize(("text", "unit"), [("kBq/cc", "kBq/mL"), ("BQML", "Bq/mL"), ("uCi/mL", "uCi/mL"),
                                            ("SUVbw", "SUV"), ("CNTS", ""), ("", "")])
def test_understood_units(text, unit):
    assert parse_unit(text) == unit


@pytest.mark.parametrize("text", ["kBq per litre", "Bq/L", "kilobecquerel"])
def test_a_unit_that_is_not_understood_is_refused_with_the_accepted_spellings(text):
    with pytest.raises(InputError, match="not understood.*kBq/mL"):
        parse_unit(text)


def test_the_pet_command_refuses_it_before_reading_anything(tmp_path, capsys):
    from scanai import cli

    with pytest.raises(SystemExit) as stopped:
        cli.main(["pet", str(tmp_path / "absent.nii.gz"), "--input-function", str(tmp_path / "absent.csv"),
                  "--input-unit", "Bq/L", "--out", str(tmp_path / "out")])
    assert stopped.value.code == 2 and "not understood" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- the image's unit, one place for it
def test_the_image_unit_is_the_one_it_carries_else_the_stated_one():
    from scanai.pet.units import settle_image_unit

    assert settle_image_unit("BQML", "") == "Bq/mL"
    assert settle_image_unit("", "kBq/cc") == "kBq/mL"
    assert settle_image_unit("kBq/mL", "kilobecquerel/ml") == "kBq/mL"
    assert settle_image_unit("", "") == ""
    with pytest.raises(InputError, match=r"unit is kBq/mL \(its sidecar\) but Bq/mL was stated \(--image-unit\)"):
        settle_image_unit("kBq/mL", "Bq/mL", "its sidecar", "--image-unit")
    with pytest.raises(InputError, match="not understood"):
        settle_image_unit("", "Bq/L")


def test_an_unknown_image_unit_taken_as_the_inputs_is_said():
    from scanai.pet.units import unit_assumption

    text = unit_assumption("", "Bq/mL", "state it with --image-unit UNIT")
    assert "assumed to be in the input function's unit, Bq/mL" in text and text.endswith("--image-unit UNIT.")
    assert unit_assumption("kBq/mL", "Bq/mL") == "" and unit_assumption("", "") == ""
