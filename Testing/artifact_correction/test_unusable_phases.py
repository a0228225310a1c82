"""``scanai motion-correct`` refuses phase volumes that hold no image (all zero, one constant value) or non-finite
voxels, naming the phase (1-based, with its index value) and what was seen, before any computation."""

from __future__ import annotations

import re

import numpy as np
import pytest

from scanai.artifact_correction import pipeline
from scanai.artifact_correction.pipeline import check_phase_volumes, correct_phase_sequence, phase_windows
from scanai.cli import main
from scanai.core.errors import InputError
from scanai.core.image import Geometry, VolumeSequence
from scanai.io.sequence_file import write_sequence

PHASES = (62.0, 66.0, 70.0, 74.0, 78.0, 82.0)


def _sequence(edit=None) -> VolumeSequence:
    """Six 2 x 16 x 16 phase volumes in HU (index: phase in %), with ``edit(frames)`` applied."""
    frames = np.random.default_rng(7).normal(40.0, 20.0, (len(PHASES), 2, 16, 16))
    if edit is not None:
        edit(frames)
    return VolumeSequence(frames, Geometry((0.5, 0.5, 2.0)), PHASES, "phase", "%")


def _zero(frames: np.ndarray) -> None:
    frames[1] = 0.0


def _air(frames: np.ndarray) -> None:
    frames[3] = -1024.0


def _holes(frames: np.ndarray) -> None:
    frames[4, 1, 3, :5] = np.nan
    frames[4, 0, 0, 0] = np.inf


CASES = [(_zero, r"Phase 2 of 6 \(66 %\) is all zero: it holds no image"),
         (_air, r"Phase 4 of 6 \(74 %\) has the same value \(-1024\) in every voxel"),
         (_holes, r"Phase 5 of 6 \(78 %\) holds 6 non-finite voxel\(s\) \(NaN or infinite\) of 512")]


@pytest.mark.parametrize(("edit", "says"), CASES)
def test_unusable_phase_volumes_are_refused_before_any_computation(monkeypatch, edit, says):
    def computed(*args, **kwargs):
        raise AssertionError("a computation ran on unusable phase volumes")

    monkeypatch.setattr(pipeline.win, "image_motion_amplitude", computed)
    sequence = _sequence(edit)
    with pytest.raises(InputError, match=says):
        check_phase_volumes(sequence)
    windows = phase_windows(_sequence(), 0.15, rr_s=1.0)
    for method in ("mean", "network"):
        with pytest.raises(InputError, match=says):
            correct_phase_sequence(sequence, windows, method, count=4)


def test_every_unusable_phase_is_counted_and_good_ones_pass():
    def two(frames: np.ndarray) -> None:
        _zero(frames)
        _air(frames)

    with pytest.raises(InputError, match=r"Phase 2 of 6 .* all zero.*; phase\(s\) 4 are unusable too"):
        check_phase_volumes(_sequence(two))
    frames = check_phase_volumes(_sequence())
    assert frames.dtype == np.float32 and frames.shape == (6, 2, 16, 16)


@pytest.mark.parametrize(("edit", "says"), CASES)
def test_the_command_says_which_phase_in_one_line(tmp_path, capsys, edit, says):
    path = write_sequence(_sequence(edit), tmp_path / "phases.seq.nrrd")
    out = tmp_path / "out"
    code = main(["motion-correct", str(path), "--rr", "1", "--window", "0.15", "--method", "mean", "--out", str(out)])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and not out.exists()
    assert error[0].startswith("scanai motion-correct:") and re.search(says, error[0]), error[0]
