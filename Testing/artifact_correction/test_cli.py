"""``scanai motion-correct`` and the artifact-correction pipeline: a simulated phase sequence (file or separate
volumes) -> the corrected volume on the input grid, the phase table and the summary; selection, ranking and the
output window end to end; clear errors for bad input. Classical methods only (the network has its own tests)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from scanai.artifact_correction.cli import load_phase_sequence
from scanai.artifact_correction.pipeline import correct_phase_sequence, phase_windows, select_phases
from scanai.artifact_correction.simulator import simulate_phase_sequence
from scanai.cli import main
from scanai.core.errors import GeometryError, InputError
from scanai.core.image import Geometry, Volume, VolumeSequence
from scanai.io.sequence_file import write_sequence
from scanai.io.sitk_image import read_image, write_image

pytest.importorskip("skimage")

PHASES = [62.0, 66.0, 70.0, 74.0, 78.0, 82.0]


@pytest.fixture(scope="module")
def simulated():
    """Six phase volumes (2 slices, int16 HU) of a moving heart, with the truth."""
    sequence, r_peaks, truth = simulate_phase_sequence(np.random.default_rng(11), PHASES, slices=2)
    as_int = VolumeSequence(np.rint(sequence.frames).astype(np.int16), sequence.geometry, sequence.index_values,
                            sequence.index_name, sequence.index_unit)
    return as_int, r_peaks, truth


def test_pipeline_selects_ranks_and_keeps_the_input_grid(simulated):
    sequence, r_peaks, _truth = simulated
    windows = phase_windows(sequence, 0.15, rr_s=1.0)
    result = correct_phase_sequence(sequence, windows, "mean", count=4, first=1)
    assert result.selected == [1, 2, 3, 4]
    assert len(result.corrected) == 1
    assert result.corrected.frames.dtype == np.int16
    assert result.corrected.geometry.is_close(sequence.geometry, 1e-12)
    output = result.output_windows[0]
    assert output.phase_pct == pytest.approx(72.0)
    assert output.duration_s == pytest.approx(0.15)
    expected = 0.5 * (sequence.frames[2].astype(float) + sequence.frames[3])
    assert np.abs(result.corrected.frames[0] - expected).max() <= 0.5
    rows = result.table_rows()
    assert [row["rank"] for row in rows] == [None, 1, 2, 3, 4, None]
    descending = correct_phase_sequence(sequence, windows, "mean", count=4, first=1, descending=True)
    assert descending.selected == [4, 3, 2, 1]


def test_default_successive_selection_avoids_the_most_motion(simulated):
    sequence, _r_peaks, _truth = simulated
    amplitude = np.array([9.0, 8.0, 1.0, 1.0, 1.0, 1.0])
    windows = phase_windows(sequence, 0.15, rr_s=1.0)
    assert select_phases(windows, 4, "successive", amplitude, None) == [2, 3, 4, 5]
    assert select_phases(windows, 2, "image-below", amplitude, None, threshold=5.0) == [2, 3]
    with pytest.raises(InputError, match="ECG"):
        select_phases(windows, 2, "ecg-smallest", amplitude, None)
    with pytest.raises(InputError, match="threshold"):
        select_phases(windows, 2, "image-below", amplitude, None)


def test_registration_fusion_beats_the_centre_phase_on_the_simulator(simulated):
    sequence, r_peaks, truth = simulated
    windows = phase_windows(sequence, 0.15, r_peaks=r_peaks)
    result = correct_phase_sequence(sequence, windows, "registration-fusion", count=4, first=1, r_peaks=r_peaks)
    assert result.ecg_amplitude is not None and result.ecg_amplitude.shape == (6,)
    assert result.output_windows[0].phase_pct == pytest.approx(72.0)
    target = truth.target[0].astype(float)  # the frozen heart at 72 %, the centre of the six phases too
    frames = sequence.frames.astype(float)

    def rmse(image):
        return float(np.sqrt(np.mean((image - target) ** 2)))

    fused = result.corrected.frames[0].astype(float)
    assert rmse(fused) < 0.8 * min(rmse(frames[2]), rmse(frames[3]))
    assert rmse(fused) < rmse(0.5 * (frames[2] + frames[3]))


def test_cli_on_a_sequence_file_writes_volume_table_and_summary(simulated, tmp_path, capsys):
    sequence, _r_peaks, _truth = simulated
    path = write_sequence(sequence, tmp_path / "phases.seq.nrrd")
    ecg = tmp_path / "ecg.csv"
    ecg.write_text("r_peak_time_s\n0\n1\n2\n")
    out = tmp_path / "out"
    code = main(["motion-correct", str(path), "--window", "0.15", "--ecg", str(ecg), "--method", "halfway",
                 "--selection", "ecg-smallest", "--count", "4", "--out", str(out)])
    assert code == 0
    corrected = read_image(out / "corrected.nrrd")
    assert corrected.array.shape == sequence.frames.shape[1:]
    assert corrected.geometry.is_close(sequence.geometry, 1e-6)
    with open(out / "phases.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and sum(row["selected"] == "True" for row in rows) == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "halfway" and len(summary["selected_items"]) == 4
    ranked_phases = [PHASES[i - 1] for i in summary["selected_items"]]
    assert ranked_phases == sorted(ranked_phases) and min(ranked_phases) >= 66.0  # diastasis, chronological
    assert "corrected:" in capsys.readouterr().out


def test_cli_on_separate_volumes_and_bad_input(simulated, tmp_path, capsys):
    sequence, _r_peaks, _truth = simulated
    files = [write_image(sequence.frame(t), tmp_path / f"phase{t}.nrrd") for t in range(4)]
    loaded = load_phase_sequence(files, PHASES[:4])
    assert loaded.index_unit == "%" and loaded.index_values == tuple(PHASES[:4])
    code = main(["motion-correct", *map(str, files), "--phases", "62,66,70,74", "--rr", "1", "--window", "0.15",
                 "--method", "mean", "--out", str(tmp_path / "out")])
    assert code == 0
    assert main(["motion-correct", *map(str, files), "--phases", "62,66,70", "--rr", "1", "--window", "0.15",
                 "--method", "mean", "--out", str(tmp_path / "bad")]) == 2
    assert "--phases with one cardiac phase" in capsys.readouterr().err
    moved = Volume(sequence.frames[0], Geometry((0.5, 0.5, 2.0)))
    with pytest.raises(GeometryError, match="different grid"):
        load_phase_sequence([files[0], write_image(moved, tmp_path / "moved.nrrd")], [60.0, 70.0])
    assert main(["motion-correct", str(files[0]), "--rr", "1", "--window", "0.15", "--out", str(tmp_path / "one")]) == 2
    assert "not an image sequence" in capsys.readouterr().err


def test_network_refuses_a_phase_count_it_was_not_trained_for(simulated):
    from scanai.core.catalog import MODELS_DIR

    if not (MODELS_DIR / "motion_artifact_network.pt").is_file():
        pytest.skip("the motion-artifact network weights are not installed")
    sequence, _r_peaks, _truth = simulated
    three = VolumeSequence(sequence.frames[:3], sequence.geometry, sequence.index_values[:3], "phase", "%")
    with pytest.raises(InputError, match="4 phase volumes"):
        correct_phase_sequence(three, phase_windows(three, 0.15, rr_s=1.0), "network")
    with pytest.raises(InputError, match="trained for 4"):
        correct_phase_sequence(sequence, phase_windows(sequence, 0.15, rr_s=1.0), "network", count=3)


def test_network_needs_the_phases_of_a_time_indexed_sequence(simulated):
    from scanai.core.catalog import MODELS_DIR

    if not (MODELS_DIR / "motion_artifact_network.pt").is_file():
        pytest.skip("the motion-artifact network weights are not installed")
    sequence, _r_peaks, _truth = simulated
    timed = VolumeSequence(sequence.frames, sequence.geometry, [1.62 + 0.04 * k for k in range(6)], "time", "s")
    with pytest.raises(InputError, match="cardiac phase of every phase volume"):
        correct_phase_sequence(timed, phase_windows(timed, 0.15), "network")
    result = correct_phase_sequence(timed, phase_windows(timed, 0.15, rr_s=1.0), "network")
    assert result.output_windows[0].phase_pct is not None and len(result.selected) == 4


def test_a_phase_indexed_sequence_needs_no_window_or_rr_and_the_summary_says_what_ran(simulated, tmp_path, capsys):
    """Issue 27: --window and --rr cannot change the result of a sequence indexed by phase (%), so they are not
    demanded; summary.json names the method asked for and used, the model (sha256) and the input phases."""
    from scanai.artifact_correction.network import MODEL_NAME
    from scanai.core.catalog import MODELS_DIR, load_card

    sequence, _r_peaks, _truth = simulated
    path = write_sequence(sequence, tmp_path / "phases.seq.nrrd")
    assert main(["motion-correct", str(path), "--method", "mean", "--out", str(tmp_path / "bare")]) == 0
    bare = json.loads((tmp_path / "bare" / "summary.json").read_text())
    assert bare["timing"].startswith("nominal") and bare["output_windows"][0]["start_s"] is None
    assert bare["method"] == bare["requested_method"] == "mean" and bare["model"] is None
    assert [p["phase_pct"] for p in bare["input_phases"]] == PHASES
    assert sorted(p["rank"] for p in bare["input_phases"] if p["rank"]) == [1, 2, 3, 4]
    assert main(["motion-correct", str(path), "--method", "mean", "--rr", "1", "--window", "0.15", "--out",
                 str(tmp_path / "timed")]) == 0
    timed = json.loads((tmp_path / "timed" / "summary.json").read_text())
    corrected = [read_image(tmp_path / name / "corrected.nrrd").array for name in ("bare", "timed")]
    np.testing.assert_array_equal(*corrected)  # the timing changed nothing
    assert timed["timing"] == "scan" and timed["output_windows"][0]["start_s"] == pytest.approx(0.605, abs=0.01)
    assert timed["output_windows"][0]["phase_pct"] == pytest.approx(bare["output_windows"][0]["phase_pct"])
    seconds = VolumeSequence(sequence.frames, sequence.geometry, [1.62 + 0.04 * k for k in range(6)], "time", "s")
    with pytest.raises(InputError, match="window length"):
        phase_windows(seconds)  # a time-indexed sequence still needs its window
    assert bare["experimental"] is False
    if (MODELS_DIR / f"{MODEL_NAME}.pt").is_file():
        capsys.readouterr()
        assert main(["motion-correct", str(path), "--method", "network", "--out", str(tmp_path / "net"),
                     "--device", "cpu"]) == 0
        net = json.loads((tmp_path / "net" / "summary.json").read_text())
        assert net["requested_method"] == "network" and net["method"] in ("network", "registration-fusion")
        assert net["model"] == {"name": MODEL_NAME, "sha256": load_card(MODEL_NAME).sha256}
        assert (net["fallback_reason"] is None) == (net["method"] == "network") == net["experimental"]
        assert ("Note: experimental" in capsys.readouterr().out) == net["experimental"]


def test_the_default_is_the_classical_twin_and_the_network_is_labelled_experimental(simulated, tmp_path, capsys):
    """Validated on real data, or withheld: the network has seen simulated CT only, so the default method is
    registration fusion (no model, nothing experimental) and the network is named experimental in --help."""
    sequence, _r_peaks, _truth = simulated
    path = write_sequence(sequence, tmp_path / "phases.seq.nrrd")
    assert main(["motion-correct", str(path), "--out", str(tmp_path / "default")]) == 0
    summary = json.loads((tmp_path / "default" / "summary.json").read_text())
    assert summary["requested_method"] == summary["method"] == "registration-fusion"
    assert summary["model"] is None and summary["experimental"] is False
    assert "experimental" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["motion-correct", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default registration-fusion" in text and "network = trained multi-phase network" in text
    assert "experimental, simulation only" in text


def test_help_defines_the_window_of_a_fan_beam_half_scan(capsys):
    with pytest.raises(SystemExit):
        main(["motion-correct", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(180 deg + fan angle) / 360 x rotation time" in text
    assert "not for one indexed by phase (%)" in text
