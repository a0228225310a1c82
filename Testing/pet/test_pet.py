"""Tests of scanai.pet: frame timing, input functions, 2TCM forward model, Patlak fits and maps, CLI, demo."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from scanai.core.errors import FileFormatError, InputError
from scanai.core.image import Geometry, VolumeSequence
from scanai.core.progress import Progress
from scanai.io.text_table import read_numeric_csv
from scanai.pet.input_function import InputFunction, feng_input, feng_integral
from scanai.pet.kinetics import patlak_ki, tissue_curves_2tcm, two_tissue_tacs
from scanai.pet.patlak import patlak_fit, patlak_maps
from scanai.pet.phantom import default_timing, pet_phantom
from scanai.pet.timing import FrameTiming

#: (K1, k2, k3, vB): FDG grey matter, white matter (vB = 0), tumour, fast-exchange tissue (vB = 0).
PARAMETER_SETS = [
    (0.102, 0.130, 0.062, 0.05),
    (0.054, 0.109, 0.045, 0.0),
    (0.250, 0.350, 0.150, 0.03),
    (0.100, 0.300, 0.050, 0.0),
    (0.600, 1.000, 0.100, 0.10),
]


@pytest.fixture(scope="module")
def timing() -> FrameTiming:
    return default_timing()


def oblique_geometry() -> Geometry:
    angle = np.deg2rad(20.0)
    rotation = ((np.cos(angle), -np.sin(angle), 0.0), (np.sin(angle), np.cos(angle), 0.0), (0.0, 0.0, 1.0))
    return Geometry((1.5, 2.0, 3.25), (-12.5, 40.0, 7.0), rotation)


# ------------------------------------------------------------------------------------------------ timing
def test_frame_timing_constructors_agree():
    by_duration = FrameTiming.from_start_duration([0, 60, 120, 300], [60, 60, 180, 300])
    by_end = FrameTiming.from_start_end([0, 60, 120, 300], [60, 120, 300, 600])
    by_mid = FrameTiming.from_mid_times([30, 90, 210, 450])
    for other in (by_end, by_mid):
        np.testing.assert_allclose(other.start_s, by_duration.start_s)
        np.testing.assert_allclose(other.duration_s, by_duration.duration_s)
    np.testing.assert_allclose(by_duration.mid_min, [0.5, 1.5, 3.5, 7.5])
    with_gap = FrameTiming.from_start_duration([0, 100], [60, 60])
    np.testing.assert_allclose(with_gap.end_s, [60, 160])


@pytest.mark.parametrize("start, duration, words", [
    ([0, 60, 60], [60, 60, 60], "not increasing"),
    ([0, 30], [60, 60], "overlaps"),
    ([0, 60], [60, 0], "zero or negative duration"),
    ([-10, 60], [60, 60], "before the injection"),
    ([0, np.nan], [60, 60], "missing"),
    ([0, 60, 120], [60, 60], "3 start times but 2 durations"),
    ([], [], "missing frame timing"),
])
def test_frame_timing_rejects_bad_input(start, duration, words):
    with pytest.raises(InputError, match=words):
        FrameTiming.from_start_duration(start, duration)


def test_frame_timing_missing_and_inconsistent_mid_times():
    with pytest.raises(InputError, match="missing frame timing"):
        FrameTiming(None, None)
    with pytest.raises(InputError, match="not contiguous"):
        FrameTiming.from_mid_times([30, 60, 200])  # frame 2 would start at 60 s, its own middle


def test_frame_timing_csv_round_trip(tmp_path):
    timing = FrameTiming.from_durations([10, 10, 60, 300], first_start_s=5.0)
    back = FrameTiming.read_csv(timing.to_csv(tmp_path / "frames.csv"))
    np.testing.assert_allclose(back.start_s, [5, 15, 25, 85])
    np.testing.assert_allclose(back.duration_s, timing.duration_s)
    (tmp_path / "bad.csv").write_text("frame,weight\n1,1\n2,1\n")
    with pytest.raises(InputError, match="start_s"):
        FrameTiming.read_csv(tmp_path / "bad.csv")


# ---------------------------------------------------------------------------------------- input function
def test_feng_model_shape_and_published_values():
    t_s = np.array([-10.0, 0.0, 14.5, 60.0, 600.0, 3600.0])
    cp = feng_input(t_s)
    assert cp[0] == 0.0 and cp[1] == pytest.approx(0.0, abs=1e-9)
    # Peak where the fast term's derivative vanishes: u = 1/|λ1| + (A2 + A3)/A1 min = 17.5 s.
    peak_s = 60 * (1 / 4.133859 + (21.8798 + 20.8113) / 851.1225)
    assert 0.1 * np.argmax(feng_input(np.arange(0, 120, 0.1))) == pytest.approx(peak_s, abs=0.3)
    # (A1 u - A2 - A3) e^{λ1 u} + A2 e^{λ2 u} + A3 e^{λ3 u} at 60 min, by hand
    expected = (851.1225 * 60 - 21.8798 - 20.8113) * np.exp(-4.133859 * 60) + 21.8798 * np.exp(
        -0.01043449 * 60) + 20.8113 * np.exp(-0.1190996 * 60)
    assert cp[-1] == pytest.approx(expected, rel=1e-12)
    delayed = feng_input(np.array([30.0, 60.0]), {"tau_min": 0.7})
    assert delayed[0] == 0.0 and delayed[1] > 0


def test_integral_from_injection_matches_analytic_integral():
    sampled = InputFunction.feng(end_s=3600.0, step_s=0.1)
    t_s = np.array([5.0, 30.0, 90.0, 600.0, 1800.0, 3600.0])
    np.testing.assert_allclose(sampled.integral_from_injection(t_s), feng_integral(t_s), rtol=2e-4)
    # Starting at a late first sample: integration still runs from the injection (linear ramp from 0).
    late = InputFunction([60.0, 120.0, 180.0], [6.0, 4.0, 4.0])
    np.testing.assert_allclose(late.integral_from_injection([60.0, 120.0, 240.0]),
                               [3.0, 3.0 + 5.0, 3.0 + 5.0 + 4.0 + 4.0])
    np.testing.assert_allclose(late.value_at([-5.0, 30.0, 90.0, 500.0]), [0.0, 3.0, 5.0, 4.0])


def test_frame_means_are_exact_for_linear_and_quadratic_pieces():
    # Cp(t) = t (s) on [0, 600]: mean over [a, b] = (a + b) / 2; ∫Cp = t^2/2 /60; mean ∫ = (b^3 - a^3)/(6 (b-a))/60.
    ramp = InputFunction([0.0, 300.0, 600.0], [0.0, 300.0, 600.0])
    frames = FrameTiming.from_start_end([0.0, 100.0, 400.0], [100.0, 400.0, 600.0])
    a, b = frames.start_s, frames.end_s
    np.testing.assert_allclose(ramp.mean_over_frames(frames), (a + b) / 2)
    np.testing.assert_allclose(ramp.mean_integral_over_frames(frames), (b**3 - a**3) / (6 * (b - a)) / 60)


def test_input_function_validation():
    with pytest.raises(InputError, match="at least 3"):
        InputFunction([0.0, 10.0], [0.0, 1.0])
    with pytest.raises(InputError, match="NaN"):
        InputFunction([0.0, 10.0, 20.0], [0.0, np.nan, 1.0])
    with pytest.raises(InputError, match="not increasing"):
        InputFunction([0.0, 20.0, 10.0], [0.0, 1.0, 1.0])
    with pytest.raises(InputError, match="before the injection"):
        InputFunction([-5.0, 20.0, 30.0], [0.0, 1.0, 1.0])


def test_input_function_table_without_time_column_is_refused():
    with pytest.raises(InputError, match="no time column") as caught:
        InputFunction.from_columns({"Cp": [0.0, 5.0, 3.0], "whole_blood": [0.0, 6.0, 3.5]})
    assert "time_s" in str(caught.value)


def test_input_function_columns_by_name_and_unit():
    minutes = InputFunction.from_columns({"time_min": [0.0, 0.5, 1.0, 2.0], "plasma": [0, 10, 5, 2]})
    np.testing.assert_allclose(minutes.t_s, [0, 30, 60, 120])
    single = InputFunction.from_columns({"Time": [0, 30, 60], "counts": [0, 9, 4]})
    np.testing.assert_allclose(single.activity, [0, 9, 4])
    with pytest.raises(InputError, match="activity column"):
        InputFunction.from_columns({"t": [0, 30, 60], "a": [0, 9, 4], "b": [0, 1, 1]})


def test_input_function_reads_real_blood_csv(shared_data):
    path = shared_data / "pet" / "pbr28_blooddata.csv"
    plasma = InputFunction.read_csv(path, where={"PET": "cgyu_1"})
    assert len(plasma) > 20 and plasma.t_s[-1] > 3600  # ~90 min of arterial samples
    columns = read_numeric_csv(path, where={"PET": "cgyu_1"})
    np.testing.assert_allclose(plasma.activity, columns["Cpl_metabcorr"])  # plasma preferred over whole blood
    with pytest.raises(InputError, match="not increasing"):  # the file holds four scans: refuse mixing them
        InputFunction.read_csv(path)


# -------------------------------------------------------------------------------------------- kinetics
def test_two_tissue_curve_matches_ode_solution(feng):
    k1, k2, k3, k4 = 0.1, 0.2, 0.08, 0.01
    t_s, curves = tissue_curves_2tcm(feng, 3600.0, k1, k2, k3, k4, 0.0, step_s=0.5)

    def rates(t, c):
        cp = float(feng.value_at(t))
        return [(k1 * cp - (k2 + k3) * c[0] + k4 * c[1]) / 60, (k3 * c[0] - k4 * c[1]) / 60]

    check = np.array([60.0, 600.0, 3600.0])
    solution = solve_ivp(rates, (0, 3600), [0, 0], t_eval=check, rtol=1e-11, atol=1e-12, max_step=1.0)
    np.testing.assert_allclose(curves[0, np.searchsorted(t_s, check)], solution.y.sum(axis=0), rtol=1e-6)


# ---------------------------------------------------------------------------------------------- Patlak
@pytest.mark.parametrize("k1, k2, k3, vb", PARAMETER_SETS)
def test_patlak_recovers_ki_of_irreversible_two_tissue_model(feng, k1, k2, k3, vb):
    timing = default_timing()  # frames end at 60 min; 6 frames of 5 min from 30 min on
    tac = two_tissue_tacs(feng, timing, k1, k2, k3, 0.0, vb)[0]
    fit = patlak_fit(tac, timing, feng, t_star_min=30.0)
    assert fit.axes.frames.size == 6 and timing.mid_min[fit.axes.frames].min() >= 30
    # The voxel holds (1 - vB) tissue: its measured net influx is (1 - vB) K1 k3 / (k2 + k3).
    truth = float(patlak_ki(k1, k2, k3)) * (1 - vb)
    assert float(fit.ki_per_min) == pytest.approx(truth, rel=0.025)
    assert float(fit.r2) > 0.999


def test_patlak_slope_is_exact_on_synthetic_patlak_curve(feng, timing):
    # C = Ki ∫Cp + V Cp exactly (frame-averaged on both sides): the fit must return Ki and V to rounding.
    ki, v = 0.042, 0.35
    tacs = ki * feng.mean_integral_over_frames(timing) + v * feng.mean_over_frames(timing)
    fit = patlak_fit(np.stack([tacs, 2 * tacs]), timing, feng, t_star_min=10.0, weights="duration")
    np.testing.assert_allclose(fit.ki_per_min, [ki, 2 * ki], rtol=1e-9)
    np.testing.assert_allclose(fit.intercept, [v, 2 * v], rtol=1e-8)


def test_patlak_fit_input_errors(feng, timing):
    tac = two_tissue_tacs(feng, timing, 0.1, 0.13, 0.06)[0]
    with pytest.raises(InputError, match="31 frames but the frame timing lists 32"):
        patlak_fit(tac[:-1], timing, feng)
    broken = tac.copy()
    broken[20] = np.nan
    with pytest.raises(InputError, match=r"1 value\(s\).*frame\(s\) 21"):
        patlak_fit(broken, timing, feng)
    with pytest.raises(InputError, match="Only 1 frame"):
        patlak_fit(tac, timing, feng, t_star_min=54.0)
    short = InputFunction([0.0, 60.0, 600.0], [0.0, 10.0, 5.0])
    with pytest.raises(InputError, match="input function ends"):
        patlak_fit(tac, timing, short)


def test_patlak_maps_keep_geometry_and_match_truth():
    phantom = pet_phantom((3, 16, 16), geometry=oblique_geometry())
    frames_before = phantom.sequence.frames.copy()
    seen: list[float] = []
    maps = patlak_maps(phantom.sequence, phantom.timing, phantom.input_function, t_star_min=30.0,
                       chunk_voxels=100, progress=Progress(lambda f, m: seen.append(f)))
    for volume in (maps.ki, maps.intercept, maps.r2):
        assert volume.array.shape == phantom.sequence.frames.shape[1:]
        assert volume.geometry == phantom.sequence.geometry
    np.testing.assert_array_equal(phantom.sequence.frames, frames_before)  # input untouched
    assert len(seen) >= 7 and seen[-1] == 1.0  # one report per chunk of 100 voxels (768 voxels)
    body = phantom.labels.array > 0
    soft = phantom.labels.array == 1  # slow, low-uptake soft tissue: Patlak's bias is largest there
    error = np.abs(maps.ki.array - phantom.ki_true.array) / np.where(body, phantom.ki_true.array, 1)
    assert error[body & ~soft].max() < 0.025
    assert error[soft].max() < 0.10
    assert np.all(maps.ki.array[~body] == 0) and np.all(maps.r2.array[~body] == 0)


def test_patlak_maps_refuse_nan_frame_and_wrong_frame_count():
    phantom = pet_phantom((2, 8, 8))
    frames = phantom.sequence.frames.copy()
    frames[25, 0, 2:4, 3] = np.nan
    broken = VolumeSequence(frames, phantom.sequence.geometry)
    with pytest.raises(InputError, match=r"2 value\(s\) of the image voxels.*frame\(s\) 26"):
        patlak_maps(broken, phantom.timing, phantom.input_function)
    fewer = phantom.timing.subset(np.arange(len(phantom.timing) - 1))
    with pytest.raises(InputError, match="32 frames but the frame timing lists 31"):
        patlak_maps(phantom.sequence, fewer, phantom.input_function)
    mask = np.zeros(frames.shape[1:], dtype=bool)
    mask[1, :4, :4] = True  # the NaNs lie outside this mask: allowed
    maps = patlak_maps(broken, phantom.timing, phantom.input_function, mask=mask)
    assert np.all(np.isfinite(maps.ki.array))


def test_noisy_phantom_is_seeded_and_unbiased():
    first = pet_phantom((2, 16, 16), counts_per_activity_s=5.0, seed=3)
    second = pet_phantom((2, 16, 16), counts_per_activity_s=5.0, seed=3)
    np.testing.assert_array_equal(first.sequence.frames, second.sequence.frames)
    maps = patlak_maps(first.sequence, first.timing, first.input_function, t_star_min=20.0)
    grey = first.labels.array == 3
    assert np.mean(maps.ki.array[grey]) == pytest.approx(first.ki_true.array[grey][0], rel=0.03)
    assert np.std(maps.ki.array[grey]) > 0


# --------------------------------------------------------------------------------------------- real data
def test_patlak_on_real_grey_matter_and_liver(shared_data):
    from scanai.pet.kmap import load_kmap_mat

    study = load_kmap_mat(shared_data / "pet" / "demo_2tcm_realdata.mat")
    assert len(study.timing) == 29 and study.timing.end_s[-1] == pytest.approx(3600.0)
    fit = patlak_fit(study.tacs["GM"], study.timing, study.input_function, t_star_min=20.0)
    ki = float(fit.ki_per_min)
    assert np.isfinite(ki) and 0.01 < ki < 0.08  # FDG grey matter: a few 1/100 per min
    assert float(fit.r2) > 0.99
    liver = load_kmap_mat(shared_data / "pet" / "demo_liver_realdata.mat")
    liver_ki = float(patlak_fit(liver.tacs["Liver"], liver.timing, liver.input_function, 20.0).ki_per_min)
    assert 0 < liver_ki < ki / 5  # liver retains little FDG (dephosphorylation)


# ----------------------------------------------------------------------------------------------- CLI, demo
def test_dynamic_reader_accepts_slicer_sequence_file_and_refuses_a_3d_image(tmp_path):
    import SimpleITK as sitk

    from scanai.io.sequence_file import read_sequence
    from scanai.io.sitk_image import to_sitk, write_image

    phantom = pet_phantom((2, 8, 8), geometry=oblique_geometry())
    # A Slicer .seq.nrrd is read by ITK as a 3-D image with one component per frame.
    vector = sitk.Compose([to_sitk(phantom.sequence.frame(t)) for t in range(len(phantom.sequence))])
    sitk.WriteImage(vector, str(tmp_path / "dynamic.seq.nrrd"))
    sequence = read_sequence(tmp_path / "dynamic.seq.nrrd")
    np.testing.assert_allclose(sequence.frames, phantom.sequence.frames)
    assert sequence.geometry.is_close(phantom.sequence.geometry)
    path = write_image(phantom.ki_true, tmp_path / "static.nrrd")
    with pytest.raises(FileFormatError, match="not an image sequence"):
        read_sequence(path)
