"""Time windows, cardiac phases, ECG R peaks, selection, ranking and the output-window rule
(scanai.artifact_correction.windows; digest §7.4 worked examples)."""

from __future__ import annotations

import numpy as np
import pytest

from scanai.artifact_correction.tables import read_ecg_table, read_timing_table, windows_from_table
from scanai.artifact_correction.timing import PhaseWindow, RPeaks
from scanai.artifact_correction.windows import (
    assign_phases,
    consecutive_windows,
    ecg_motion_amplitude,
    image_motion_amplitude,
    output_windows,
    rank_windows,
    same_cycle,
    select_below,
    select_smallest,
    select_successive,
    to_one_cycle,
    window_at_phase,
    windows_from_index,
)
from scanai.core.errors import FileFormatError, InputError


def limits(windows: list[PhaseWindow]) -> list[tuple[float, float]]:
    return [(w.start_s, w.end_s) for w in windows]


def synthetic_ecg(rng: np.random.Generator, rr_mean_s: float = 0.85, beats: int = 14, fs_hz: float = 500.0,
                  noise_mv: float = 0.03) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time_s, ecg_mV, true R times) of a PQRST trace with R-R intervals varying uniformly by +-10 % and
    baseline wander."""
    rr = rr_mean_s * (1.0 + rng.uniform(-0.1, 0.1, beats))
    r_times = 0.5 + np.concatenate([[0.0], np.cumsum(rr)])
    t = np.arange(0.0, r_times[-1] + 0.5, 1.0 / fs_hz)
    x = 0.2 * np.sin(2 * np.pi * 0.3 * t)
    waves = ((-0.18, 0.025, 0.15), (-0.03, 0.01, -0.15), (0.0, 0.01, 1.2), (0.03, 0.01, -0.3), (0.25, 0.04, 0.35))
    for r in r_times:
        for offset, width, amplitude in waves:
            x += amplitude * np.exp(-0.5 * ((t - r - offset) / width) ** 2)
    return t, x + noise_mv * rng.standard_normal(t.size), r_times


# ---------------------------------------------------------------------------------------------------------------
# Ranking (¶63-¶64, claims 7-9)
# ---------------------------------------------------------------------------------------------------------------
def test_ranking_example_of_paragraph_64() -> None:
    windows = assign_phases([PhaseWindow(0.0, 0.2), PhaseWindow(1.4, 1.6), PhaseWindow(2.2, 2.4)],
                            RPeaks.regular(1.0, 4))
    assert [w.cycle_index for w in windows] == [0, 1, 2]
    np.testing.assert_allclose([w.phase_pct for w in windows], [10.0, 50.0, 30.0], atol=1e-9)
    assert not same_cycle(windows)
    assert rank_windows(windows) == [0, 2, 1]
    assert rank_windows(windows, descending=True) == [1, 2, 0]


def test_same_cycle_windows_rank_chronologically_and_are_reordered() -> None:
    shuffled = assign_phases([PhaseWindow(0.30, 0.35), PhaseWindow(0.10, 0.15), PhaseWindow(0.20, 0.25)],
                             RPeaks.regular(1.0, 2))
    assert same_cycle(shuffled)
    assert rank_windows(shuffled) == [1, 2, 0]
    assert rank_windows(shuffled, descending=True) == [0, 2, 1]
    # without any cycle information (time index, no ECG) the windows are taken as one cycle: chronological
    assert rank_windows([PhaseWindow(0.8, 0.9), PhaseWindow(0.1, 0.2), PhaseWindow(0.4, 0.5)]) == [1, 2, 0]


def test_ranking_across_cycles_needs_phases() -> None:
    windows = [PhaseWindow(0.0, 0.2, 0, None), PhaseWindow(1.4, 1.6, 1, 50.0)]
    with pytest.raises(InputError, match="different heart cycles") as error:
        rank_windows(windows)
    assert "ECG" in error.value.action
    with pytest.raises(InputError, match="cycle number"):
        same_cycle([PhaseWindow(0.0, 0.2, 0, 10.0), PhaseWindow(0.3, 0.4)])


# ---------------------------------------------------------------------------------------------------------------
# Phase <-> window (¶91), index values, timing tables
# ---------------------------------------------------------------------------------------------------------------
def test_window_at_phase_example_of_paragraph_91() -> None:
    for window in (window_at_phase(69.0, 0.03, 1.0), window_at_phase(69.0, 0.03, rr_s=1.0),
                   window_at_phase(69.0, 0.03, RPeaks.regular(1.0, 3))):
        assert window.start_s == pytest.approx(0.675, abs=1e-12)
        assert window.end_s == pytest.approx(0.705, abs=1e-12)
        assert (window.cycle_index, window.phase_pct) == (0, 69.0)
        assert window.mid_s == pytest.approx(0.69) and window.duration_s == pytest.approx(0.03)
    # an irregular rhythm: 69 % of the second beat (1.0 -> 1.9 s)
    second = window_at_phase(69.0, 0.03, RPeaks(np.array([0.0, 1.0, 1.9])), cycle_index=1)
    assert second.mid_s == pytest.approx(1.0 + 0.69 * 0.9)


def test_phase_index_of_paragraph_91_gives_touching_windows_and_centre_output() -> None:
    windows = windows_from_index([69, 72, 75, 78], "%", 0.03, rr_s=1.0)
    np.testing.assert_allclose(limits(windows), [(0.675, 0.705), (0.705, 0.735), (0.735, 0.765), (0.765, 0.795)],
                               atol=1e-12)
    (out,) = output_windows(windows, 1)
    assert (out.start_s, out.end_s) == (pytest.approx(0.72), pytest.approx(0.75))
    assert out.phase_pct == pytest.approx(73.5) and out.cycle_index == 0


def test_time_index_gets_phases_from_rr_or_r_peaks() -> None:
    windows = windows_from_index([0.69, 1.2, 2.5], "s", 0.03, rr_s=1.0)
    np.testing.assert_allclose([w.phase_pct for w in windows], [69.0, 20.0, 50.0], atol=1e-9)
    assert [w.cycle_index for w in windows] == [0, 1, 2]
    peaks = RPeaks(np.array([0.0, 0.9, 2.0, 2.8]))  # irregular: 0.9, 1.1, 0.8 s
    windows = windows_from_index([450.0, 1450.0, 2400.0], "ms", 0.05, r_peaks=peaks)
    np.testing.assert_allclose([w.phase_pct for w in windows], [50.0, 50.0, 50.0], atol=1e-9)
    assert rank_windows(windows) == [0, 1, 2]
    plain = windows_from_index([0.1, 0.2], "s", 0.05)
    assert limits(plain) == [(pytest.approx(0.075), pytest.approx(0.125)), (pytest.approx(0.175), pytest.approx(0.225))]
    assert plain[1].phase_pct is None and plain[1].cycle_index is None


@pytest.mark.parametrize("unit", ["mm", "frame", "", "bpm"])
def test_index_unit_other_than_percent_or_seconds_is_an_error(unit: str) -> None:
    with pytest.raises(InputError, match="index unit") as error:
        windows_from_index([0, 1, 2], unit, 0.03, rr_s=1.0)
    assert "% or s" in error.value.action


def test_phase_index_without_timing_is_an_error() -> None:
    with pytest.raises(InputError, match="timing is missing") as error:
        windows_from_index([69, 72], "%", 0.03)
    assert "R-R interval" in error.value.action
    with pytest.raises(InputError, match="timing is missing"):
        window_at_phase(69.0, 0.03)


def test_bad_index_values_and_windows_are_errors() -> None:
    with pytest.raises(InputError, match="NaN"):
        windows_from_index([69, np.nan, 75], "%", 0.03, rr_s=1.0)
    with pytest.raises(InputError, match="same index value"):
        windows_from_index([69, 69], "%", 0.03, rr_s=1.0)
    with pytest.raises(InputError, match="0-100 %"):
        windows_from_index([69, 120], "%", 0.03, rr_s=1.0)
    with pytest.raises(InputError, match="not shorter than"):
        window_at_phase(50.0, 1.2, 1.0)
    with pytest.raises(InputError, match="later end"):
        PhaseWindow(0.2, 0.1)


def test_timing_table_rows_in_item_order(tmp_path) -> None:
    rows = [{"item": "2", "window_start_s": "2.2", "window_end_s": "2.4", "cycle_index": "2", "phase_pct": "30"},
            {"item": "0", "window_start_s": "0.0", "window_end_s": "0.2", "cycle_index": "0", "phase_pct": "10"},
            {"item": "1", "window_start_s": "1.4", "window_end_s": "1.6", "cycle_index": "1", "phase_pct": "50"}]
    windows = windows_from_table(rows)
    assert limits(windows) == [(0.0, 0.2), (1.4, 1.6), (2.2, 2.4)]
    assert rank_windows(windows) == [0, 2, 1]
    path = tmp_path / "timing.tsv"
    path.write_text("Item\tWindow_Start_s\tWindow_End_s\tcycle_index\tphase_pct\n"
                    "0\t0.675\t0.705\t\t\n1\t0.705\t0.735\t\t\n")
    from_file = read_timing_table(path)
    assert limits(from_file) == [(0.675, 0.705), (0.705, 0.735)]
    assert from_file[0].phase_pct is None and from_file[0].cycle_index is None


def test_timing_table_errors(tmp_path) -> None:
    with pytest.raises(InputError, match="window_start_s"):
        windows_from_table([{"item": 0, "start": 0.0, "end": 0.1}])
    with pytest.raises(InputError, match="distinct whole numbers"):
        windows_from_table([{"item": 0, "window_start_s": 0, "window_end_s": 0.1},
                            {"item": 0, "window_start_s": 0.1, "window_end_s": 0.2}])
    with pytest.raises(InputError, match="not a number"):
        windows_from_table([{"window_start_s": "abc", "window_end_s": 0.1}])
    with pytest.raises(InputError, match="no window start"):
        windows_from_table([{"window_start_s": "", "window_end_s": 0.1}])
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(FileFormatError, match="empty"):
        read_timing_table(empty)


# ---------------------------------------------------------------------------------------------------------------
# Output windows (¶68-¶70)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "m", "expected"), [
    (2, 1, [(0.025, 0.075)]),                  # ¶68
    (3, 1, [(0.05, 0.1)]),                     # ¶69
    (4, 1, [(0.075, 0.125)]),                  # ¶70
    (4, 2, [(0.05, 0.1), (0.1, 0.15)]),        # ¶70
])
def test_output_window_rule_of_paragraphs_68_to_70(n: int, m: int, expected: list[tuple[float, float]]) -> None:
    inputs = consecutive_windows(0.0, 0.05, n)
    outputs = output_windows(inputs, m)
    assert len(outputs) == m < n  # claims 1/13: fewer outputs than inputs
    np.testing.assert_allclose(limits(outputs), expected, atol=1e-12)
    assert all(out.duration_s == pytest.approx(0.05) for out in outputs)


@pytest.mark.parametrize(("n", "m"), [(2, 2), (3, 3), (3, 4), (4, 0)])
def test_output_window_needs_fewer_outputs_than_inputs(n: int, m: int) -> None:
    with pytest.raises(InputError, match="M < N") as error:
        output_windows(consecutive_windows(0.0, 0.05, n), m)
    assert "output volume" in error.value.action


def test_output_window_needs_ranked_inputs_and_handles_several_cycles() -> None:
    windows = assign_phases([PhaseWindow(0.0, 0.2), PhaseWindow(1.4, 1.6), PhaseWindow(2.2, 2.4)],
                            RPeaks.regular(1.0, 4))
    ranked = [windows[i] for i in rank_windows(windows)]
    with pytest.raises(InputError, match="chronological"):
        output_windows(ranked, 1)
    one_cycle = to_one_cycle(ranked, 1.0)
    np.testing.assert_allclose(limits(one_cycle), [(0.0, 0.2), (0.2, 0.4), (0.4, 0.6)], atol=1e-12)
    (out,) = output_windows(one_cycle, 1)
    assert (out.start_s, out.end_s, out.phase_pct) == (pytest.approx(0.2), pytest.approx(0.4), pytest.approx(30.0))


# ---------------------------------------------------------------------------------------------------------------
# Selection (¶55-¶57)
# ---------------------------------------------------------------------------------------------------------------
def test_successive_selection_of_paragraph_55() -> None:
    windows = consecutive_windows(0.0, 0.05, 10)
    chosen = select_successive(windows, 3)
    assert chosen == [0, 1, 2]
    np.testing.assert_allclose(limits([windows[i] for i in chosen]), [(0.0, 0.05), (0.05, 0.1), (0.1, 0.15)],
                               atol=1e-12)
    shuffled = [windows[i] for i in (5, 0, 2, 1, 3, 4)]
    assert select_successive(shuffled, 3, first=1) == [3, 2, 4]  # 0.05-0.1, 0.1-0.15, 0.15-0.2
    with pytest.raises(InputError, match="successive"):
        select_successive(windows, 4, first=8)


AMPLITUDES = [3.0, 0.5, 2.0, 0.7, 0.4, 5.0, 0.9]


def test_n_smallest_and_below_threshold_on_a_known_amplitude_vector() -> None:
    assert select_smallest(AMPLITUDES, 3) == [1, 3, 4]
    assert select_smallest(AMPLITUDES, 1) == [4]
    assert select_below(AMPLITUDES, 1.0) == [1, 3, 4, 6]
    assert select_below(AMPLITUDES, 0.6) == [1, 4]
    with pytest.raises(InputError, match="below 0.45") as error:
        select_below(AMPLITUDES, 0.45, minimum=2)
    assert "Raise the threshold" in error.value.action
    with pytest.raises(InputError, match="Cannot select 8"):
        select_smallest(AMPLITUDES, 8)
    with pytest.raises(InputError, match=r"phase volume\(s\) 2 is missing \(NaN\)"):
        select_smallest([1.0, 2.0, np.nan], 1)


def test_image_motion_amplitude_uses_neighbours_and_mask() -> None:
    volumes = np.stack([np.full((2, 3, 4), k * k, dtype=np.float32) for k in range(4)])  # steps 1, 3, 5
    np.testing.assert_allclose(image_motion_amplitude(volumes), [1.0, 2.0, 4.0, 5.0])
    slices = volumes[:, 0].copy()
    slices[2, 0, 0] += 100.0  # motion outside the mask
    mask = np.ones((3, 4), dtype=bool)
    mask[0, 0] = False
    np.testing.assert_allclose(image_motion_amplitude(slices, mask), [1.0, 2.0, 4.0, 5.0])
    assert image_motion_amplitude(slices)[2] > 4.0
    assert select_smallest(image_motion_amplitude(volumes), 2) == [0, 1]
    with pytest.raises(InputError, match="mask has shape"):
        image_motion_amplitude(volumes, mask)
    with pytest.raises(InputError, match="at least 2 phase volumes"):
        image_motion_amplitude(volumes[:1])
    broken = volumes.copy()
    broken[1, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        image_motion_amplitude(broken)


def test_ecg_based_selection_picks_diastasis_on_a_regular_rhythm() -> None:
    peaks = RPeaks.regular(0.8, 6)
    windows = assign_phases(consecutive_windows(0.0, 0.03, 133), peaks)  # 0.03 s windows over 4 s
    amplitude = ecg_motion_amplitude(windows, peaks)
    chosen = select_smallest(amplitude, 4)
    assert all(60.0 <= windows[i].phase_pct <= 85.0 for i in chosen)
    assert all(60.0 <= windows[i].phase_pct <= 85.0 for i in select_below(amplitude, 0.15))
    systole = [i for i, w in enumerate(windows) if 10.0 <= w.phase_pct <= 25.0]
    assert amplitude[systole].min() > 10 * amplitude[chosen].max()


def test_ecg_amplitude_follows_each_beat_of_an_irregular_rhythm() -> None:
    peaks = RPeaks(np.array([0.0, 1.0, 1.8, 2.9]))
    windows = [window_at_phase(50.0, 0.05, peaks, cycle) for cycle in range(3)]
    amplitude = ecg_motion_amplitude(windows, peaks)
    # same phase span: the motion rate (per second) scales with 1 / RR
    np.testing.assert_allclose(amplitude * peaks.rr_s, amplitude[0] * peaks.rr_s[0], rtol=0.02)


# ---------------------------------------------------------------------------------------------------------------
# R peaks and ECG tables
# ---------------------------------------------------------------------------------------------------------------
def test_phase_of_and_time_of_on_an_irregular_rhythm() -> None:
    peaks = RPeaks(np.array([0.2, 1.0, 1.9, 2.6]))
    assert peaks.phase_of(0.6) == (0, pytest.approx(0.5))
    assert peaks.phase_of(1.0) == (1, pytest.approx(0.0))
    assert peaks.phase_of(2.6) == (2, pytest.approx(1.0))
    for cycle, fraction in ((0, 0.3), (1, 0.69), (2, 0.95)):
        assert peaks.phase_of(peaks.time_of(cycle, fraction)) == (cycle, pytest.approx(fraction))
    with pytest.raises(InputError, match="cycles 0-2"):
        peaks.time_of(3, 0.5)


@pytest.mark.parametrize(("rr_mean_s", "fs_hz", "noise_mv"), [(0.85, 500.0, 0.03), (0.5, 250.0, 0.08),
                                                              (1.15, 1000.0, 0.08)])
def test_detects_r_peaks_of_an_irregular_synthetic_ecg(rng, rr_mean_s: float, fs_hz: float, noise_mv: float) -> None:
    t, ecg, truth = synthetic_ecg(rng, rr_mean_s, beats=20, fs_hz=fs_hz, noise_mv=noise_mv)
    assert np.ptp(np.diff(truth)) > 0.1 * rr_mean_s  # really irregular
    for lead in (ecg, -ecg):  # an inverted lead is detected too
        peaks = RPeaks.from_ecg(t, lead)
        assert peaks.times_s.size == truth.size
        assert np.abs(peaks.times_s - truth).max() < 0.010


def test_read_ecg_table_from_trace_peaks_and_columns(tmp_path, rng) -> None:
    t, ecg, truth = synthetic_ecg(rng, beats=6)
    trace = tmp_path / "ecg.csv"
    trace.write_text("time_s,ecg_mV\n" + "\n".join(f"{a:.4f},{b:.5f}" for a, b in zip(t, ecg, strict=True)))
    assert np.abs(read_ecg_table(trace).times_s - truth).max() < 0.010
    listed = tmp_path / "peaks.tsv"
    listed.write_text("R_Peak_Time_s\tnote\n0.1\ta\n0.95\tb\n1.9\t\n")
    np.testing.assert_allclose(read_ecg_table(listed).times_s, [0.1, 0.95, 1.9])
    mixed = {"time_s": list(t[:4]), "ecg_mV": list(ecg[:4]), "r_peak_time_s": ["0.5", "1.4", "", ""]}
    np.testing.assert_allclose(read_ecg_table(mixed).times_s, [0.5, 1.4])
    np.testing.assert_allclose(read_ecg_table({"r_peak_time_ms": [100, 900]}).times_s, [0.1, 0.9])
    blank_peaks = {"Time_s": t, "ECG_mV": ecg, "r_peak_time_s": [""] * t.size}  # Slicer table, peaks not filled
    assert np.abs(read_ecg_table(blank_peaks).times_s - truth).max() < 0.010


def test_ecg_that_does_not_cover_the_phases_is_an_error() -> None:
    peaks = RPeaks(np.array([0.5, 1.3, 2.1]))
    windows = [PhaseWindow(0.3, 0.45), PhaseWindow(1.0, 1.15), PhaseWindow(2.0, 2.3)]
    with pytest.raises(InputError, match="does not cover") as error:
        assign_phases(windows, peaks)
    message = str(error.value)
    assert "0.500-2.100 s" in message and "window(s) 0 (0.300-0.450 s), 2 (2.000-2.300 s)" in message
    assert "whole scan" in error.value.action
    with pytest.raises(InputError, match="does not cover"):
        ecg_motion_amplitude(windows[1:], peaks)
    with pytest.raises(InputError, match="does not cover"):
        windows_from_index([0.4, 1.0], "s", 0.05, r_peaks=peaks)
    with pytest.raises(InputError, match=r"need 0.300-0.450 s \(uncovered: 0.300-0.450 s before the first R peak"):
        peaks.check_covers(0.3, 0.45)
    with pytest.raises(InputError, match=r"need 2.300 s \(uncovered: 2.300 s after the last R peak"):
        peaks.phase_of(2.3)


def test_fewer_than_two_r_peaks_is_an_error(rng) -> None:
    with pytest.raises(InputError, match="at least 2"):
        read_ecg_table({"r_peak_time_s": [0.7]})
    t, ecg, _ = synthetic_ecg(rng, beats=0)  # a single beat
    with pytest.raises(InputError, match="R peak") as error:
        RPeaks.from_ecg(t, ecg)
    assert "two heart beats" in error.value.action
    t, ecg, _ = synthetic_ecg(rng, beats=4, fs_hz=50.0)
    with pytest.raises(InputError, match="50 Hz"):
        RPeaks.from_ecg(t, ecg)
    with pytest.raises(InputError, match="lasts only 0.10 s"):
        RPeaks.from_ecg(np.arange(0.0, 0.1, 0.002), np.zeros(50))


def test_nan_and_implausible_values_in_ecg_tables_are_errors(rng) -> None:
    with pytest.raises(InputError, match=r"NaN\) at row\(s\) 2"):
        read_ecg_table({"r_peak_time_s": [0.1, float("nan"), 1.9]})
    t, ecg, _ = synthetic_ecg(rng, beats=3)
    ecg[10] = np.nan
    with pytest.raises(InputError, match=r"ECG column .*NaN\) at row\(s\) 11"):
        RPeaks.from_ecg(t, ecg)
    with pytest.raises(InputError, match="not plausible") as error:
        read_ecg_table({"r_peak_time_s": [100, 900, 1700]})  # milliseconds in a seconds column
    assert "milliseconds" in error.value.action
    with pytest.raises(InputError, match="increase strictly"):
        RPeaks(np.array([0.0, 1.0, 0.9]))
    with pytest.raises(InputError, match="not a number"):
        read_ecg_table({"r_peak_time_s": ["0.1", "x", "1.9"]})
    with pytest.raises(InputError, match="no usable columns") as error:
        read_ecg_table({"voltage": [1.0, 2.0]})
    assert "r_peak_time_s" in error.value.action


@pytest.mark.parametrize("content", [b"", b"time_s,ecg_mV\n", b"\x00\xff\xfe\x89PNG\x00\x01" * 64])
def test_corrupt_or_empty_ecg_file_is_an_error(tmp_path, content: bytes) -> None:
    path = tmp_path / "ecg.csv"
    path.write_bytes(content)
    with pytest.raises(FileFormatError, match="ECG table file") as error:
        read_ecg_table(path)
    assert error.value.action
    with pytest.raises(FileFormatError, match="does not exist"):
        read_ecg_table(tmp_path / "missing.csv")
