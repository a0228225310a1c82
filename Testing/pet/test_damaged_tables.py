"""Damaged PET text files (blood table, frame table, BIDS sidecar, regional TAC table): seeded random cuts and byte
flips each end in a ScanAIError with a one-line message, or in what the damaged file still correctly says.

"Correct" is checked against the undamaged file: a cut file may give the rows before the cut (the last one possibly
cut inside its last number: no reader can tell that from a file written without a final line break), a flipped file
the same columns and rows with at most one changed value per flipped byte (a digit turned into another digit is a
valid number). What must never happen: another exception (a traceback), a plasma column silently replaced by whole
blood, a column, row or frame silently dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from scanai.core.errors import FileFormatError, InputError, ScanAIError
from scanai.pet.bids import read_bids_sidecar, timing_from_sidecar
from scanai.pet.blood import read_blood_table
from scanai.pet.input_function import InputFunction
from scanai.pet.kmap import load_tac_table
from scanai.pet.timing import FrameTiming

CASES = 40  # per reader and kind of damage
TIMING = FrameTiming.from_durations([30.0] * 4 + [60.0] * 4 + [300.0] * 4 + [600.0] * 3)


def _blood_text() -> str:
    feng = InputFunction.feng(end_s=3600.0, step_s=60.0)
    rows = [f"{t:g},{a:.5g},{1.1 * a:.5g}" for t, a in zip(feng.t_s, feng.activity, strict=True)]
    return "time_s,Cp,whole_blood\n" + "\n".join(rows) + "\n"


def _frames_text() -> str:
    return "start_s,duration_s\n" + "".join(f"{s:g},{d:g}\n" for s, d in zip(TIMING.start_s, TIMING.duration_s,
                                                                             strict=True))


def _sidecar_text() -> str:
    return json.dumps({"FrameTimesStart": TIMING.start_s.tolist(), "FrameDuration": TIMING.duration_s.tolist(),
                       "Units": "kBq/mL", "TracerRadionuclide": "F18", "InjectionStart": 0, "TimeZero": "10:00:00",
                       "ImageDecayCorrected": True, "ImageDecayCorrectionTime": 0, "InjectedRadioactivity": 370,
                       "InjectedRadioactivityUnits": "MBq", "BodyWeight": 70}, indent=2)


def _tac_text() -> str:
    rows = [f"{scan},{s:g},{d:g},{0.1 * n + 0.05:.4f},{0.2 * n + 0.05:.4f}" for scan in ("s_1", "s_2")
            for n, (s, d) in enumerate(zip(TIMING.start_s, TIMING.duration_s, strict=True))]
    return "PET,StartTime,Duration,FC,THA\n" + "\n".join(rows) + "\n"


def _blood(path: Path) -> dict[str, np.ndarray | str]:
    curves = read_blood_table(path, unit="kBq/mL")
    whole = curves.whole_blood
    return {"columns": f"{curves.plasma_column.lower()}|{curves.whole_blood_column.lower()}",
            "time": curves.plasma.t_s, "plasma": curves.plasma.activity,
            "whole_blood": np.empty(0) if whole is None else whole.activity}


def _frames(path: Path) -> dict[str, np.ndarray | str]:
    timing = FrameTiming.read_csv(path)
    return {"start": timing.start_s, "duration": timing.duration_s}


def _sidecar(path: Path) -> dict[str, np.ndarray | str]:
    meta = read_bids_sidecar(path)
    timing = timing_from_sidecar(meta, len(TIMING))
    return {"unit": meta["unit"], "start": timing.start_s, "duration": timing.duration_s}


def _tac(path: Path) -> dict[str, np.ndarray | str]:
    study = load_tac_table(path, {"PET": "s_1"})
    return {"regions": str(len(study.tacs)), "start": study.timing.start_s, "duration": study.timing.duration_s,
            **{f"tac {number}": tac for number, tac in enumerate(study.tacs.values())}}


READERS: dict[str, tuple[Callable[[], str], Callable[[Path], dict]]] = {
    "blood.csv": (_blood_text, _blood), "frames.csv": (_frames_text, _frames),
    "dynamic.json": (_sidecar_text, _sidecar), "tacs.csv": (_tac_text, _tac),
}


def _damaged(data: bytes, rng: np.random.Generator, kind: str) -> tuple[bytes, int]:
    """A cut copy (at a random offset) or a copy with 1-3 random bytes changed; returns it and the bytes changed."""
    if kind == "cut":
        return data[:int(rng.integers(0, len(data)))], 0
    damaged = bytearray(data)
    count = int(rng.integers(1, 4))
    for _ in range(count):
        damaged[int(rng.integers(0, len(damaged)))] ^= int(rng.integers(1, 256))
    return bytes(damaged), count


def _explained(reference: dict, result: dict, kind: str, changed: int, data: bytes) -> str:
    """"" when ``result`` is what the damaged file ``data`` correctly says (module docstring), else what is wrong.
    A sidecar whose "Units" key was damaged has no unit (the reader notes it, as for any sidecar without Units)."""
    for name, expected in reference.items():
        got = result[name]
        if isinstance(expected, str):
            if got != expected and not (name == "unit" and got == "" and b'"Units"' not in data):
                return f"{name} {got!r} instead of {expected!r}"
            continue
        if kind == "cut":
            if got.size > expected.size or not np.array_equal(got[:-1], expected[:got.size - 1]):
                return f"{name} is not the rows before the cut"
        elif got.size != expected.size:
            return f"{name} has {got.size} values instead of {expected.size}"
    if kind == "flip":
        differing = sum(int(np.sum(result[n] != v)) for n, v in reference.items() if not isinstance(v, str))
        if differing > changed:
            return f"{differing} values differ after {changed} changed byte(s)"
    elif len({result[n].size for n, v in reference.items() if not isinstance(v, str) and n != "whole_blood"}) != 1:
        return "the columns were cut to different lengths"
    return ""


@pytest.mark.parametrize("kind", ["cut", "flip"])
@pytest.mark.parametrize("name", list(READERS))
def test_damaged_pet_text_files_give_a_clear_error_or_what_they_still_say(tmp_path, name, kind):
    make, read = READERS[name]
    original = tmp_path / f"original_{name}"
    original.write_text(make())
    reference = read(original)
    rng = np.random.default_rng([20261206, list(READERS).index(name), kind == "flip"])
    outcomes = {"error": 0, "same": 0, "explained": 0}
    for case in range(CASES):
        data, changed = _damaged(original.read_bytes(), rng, kind)
        path = tmp_path / name
        path.write_bytes(data)
        try:
            result = read(path)
        except ScanAIError as error:
            message = str(error)
            assert message.strip() and "\n" not in message and "Traceback" not in message, (case, message)
            outcomes["error"] += 1
            continue
        except Exception as error:  # noqa: BLE001 - the point of the test
            pytest.fail(f"case {case} ({kind}): {type(error).__name__}: {error}\n{data!r}")
        wrong = _explained(reference, result, kind, changed, data)
        assert not wrong, f"case {case} ({kind}) of {name} read silently wrong: {wrong}\n{data!r}"
        same = all(np.array_equal(result[n], v) if not isinstance(v, str) else result[n] == v
                   for n, v in reference.items())
        outcomes["same" if same else "explained"] += 1
    print(f"{name} {kind}: {outcomes}")
    assert outcomes["error"] > 0


# ------------------------------------------------------------------------------------- what the fuzzing found
def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_damaged_plasma_number_is_named_not_replaced_by_whole_blood(tmp_path):
    path = _write(tmp_path, "blood.csv", "time_s,Cp,whole_blood\n0,0,0\n60,9.5,10\n120,7.l,8\n180,6,6.5\n")
    with pytest.raises(FileFormatError, match=r"Row 4 .*blood.csv, column 'Cp', holds '7.l', which is not a number"):
        read_blood_table(path)
    path = _write(tmp_path, "blood.csv", "time_s,Cq,whole_blood\n0,0,0\n60,9.5,10\n120,7.1,8\n180,6,6.5\n")
    with pytest.raises(InputError, match="no recognisable plasma column.*'Cq'"):
        read_blood_table(path)
    from scanai.pet.blood import BloodCurves

    text_column = {"time": [0.0, 60.0, 120.0], "Cb": [0.0, 9.0, 7.0], "scan": np.array(["a", "a", "a"])}
    assert BloodCurves.from_columns(text_column).plasma_column == "Cb"  # a text column (a Slicer table's) is no plasma
    path = _write(tmp_path, "blood.csv", "time_s,Cp\n0,0\n60,NA\n120,7.1\n180,6\n")
    with pytest.raises(FileFormatError, match="'NA'.*Leave missing values empty"):
        read_blood_table(path)


def test_incomplete_or_split_rows_are_refused(tmp_path):
    path = _write(tmp_path, "blood.csv", "time_s,Cp,whole_blood\n0,0,0\n60,9.5,10\n120,7.1,8\n180,6")
    with pytest.raises(FileFormatError, match="Row 5 .* has 2 cell.*header has 3"):
        read_blood_table(path)
    path = _write(tmp_path, "frames.csv", "start_s,duration_s\n0,60\n60,60,5\n")
    with pytest.raises(FileFormatError, match="Row 3 .* 3 cells .* header has 2"):
        FrameTiming.read_csv(path)
    # Trailing empty cells (a spreadsheet's empty columns) are fine.
    assert len(FrameTiming.read_csv(_write(tmp_path, "frames.csv", "start_s,duration_s\n0,60,\n60,60,\n"))) == 2


def test_a_damaged_start_column_does_not_make_frames_contiguous(tmp_path):
    with pytest.raises(InputError, match="durations but no start times.*'stxrt_s'"):
        FrameTiming.read_csv(_write(tmp_path, "frames.csv", "stxrt_s,duration_s\n600,60\n660,60\n"))
    timing = FrameTiming.read_csv(_write(tmp_path, "frames.csv", "frame,duration_s\n1,60\n2,60\n"))
    np.testing.assert_allclose(timing.start_s, [0.0, 60.0])


def test_a_damaged_scan_name_does_not_silently_drop_a_frame(tmp_path):
    text = _tac_text().replace("s_1,660,", "s_3,660,", 1)
    with pytest.raises(FileFormatError, match="PET = 's_3', which no other row has"):
        load_tac_table(_write(tmp_path, "tacs.csv", text), {"PET": "s_1"})


def test_a_file_cut_right_after_a_delimiter_is_refused(tmp_path):
    path = _write(tmp_path, "blood.csv", "time_s,Cp,whole_blood\n0,0,0\n60,9.5,10\n120,7.1,8\n180,6,")
    with pytest.raises(FileFormatError, match="blood.csv ends inside a row"):
        read_blood_table(path)
    path.write_text("time_s,Cp,whole_blood\n0,0,0\n60,9.5,10\n120,7.1,8\n180,6,\n")  # whole: an empty cell is fine
    assert read_blood_table(path).whole_blood.t_s.size == 3


def test_a_zero_duration_is_only_a_placeholder_when_the_row_is_all_zero(tmp_path):
    text = _tac_text().replace("s_1,1260,300,", "s_1,1260,0,", 1)
    with pytest.raises(FileFormatError, match="Frame 12 of the TAC table tacs.csv has a zero duration"):
        load_tac_table(_write(tmp_path, "tacs.csv", text), {"PET": "s_1"})
    placeholder = _tac_text().replace("PET,StartTime,Duration,FC,THA\n", "PET,StartTime,Duration,FC,THA\n"
                                      "s_1,0,0,0,0\n", 1)
    assert len(load_tac_table(_write(tmp_path, "tacs.csv", placeholder), {"PET": "s_1"}).timing) == len(TIMING)


def test_a_sidecar_unit_that_is_not_understood_is_refused(tmp_path):
    raw = json.loads(_sidecar_text())
    raw["Units"] = "kB'/mL"
    with pytest.raises(InputError, match="sidecar's Units \"kB'/mL\" is not understood.*kBq/mL"):
        read_bids_sidecar(_write(tmp_path, "dynamic.json", json.dumps(raw)))
    raw["Units"] = "CNTS"  # a DICOM code of another quantity: unknown, with a note
    meta = read_bids_sidecar(_write(tmp_path, "dynamic.json", json.dumps(raw)))
    assert meta["unit"] == "" and any("CNTS" in note for note in meta["warnings"])
