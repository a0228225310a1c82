"""Input functions for parametric PET: blood tables, image-derived curves, Feng fit, population curves, coverage."""

from __future__ import annotations

import numpy as np
import pytest

from scanai.core.errors import GeometryError, InputError
from scanai.core.image import Geometry, Volume, VolumeSequence
from scanai.io.text_table import read_numeric_csv
from scanai.pet.blood import (
    BloodCurves,
    fit_feng,
    image_derived_input,
    mask_frame_means,
    population_input,
    population_scale,
    read_blood_table,
    scaled_population_input,
)
from scanai.pet.input_function import (
    FENG_FDG_PARAMS,
    InputFunction,
    check_frames_covered,
    feng_input,
    feng_integral,
)
from scanai.pet.timing import FrameTiming

FULL_PROTOCOL = FrameTiming.from_durations([10.0] * 12 + [30.0] * 6 + [60.0] * 5 + [120.0] * 5 + [300.0] * 8)
LATE_FRAMES = FrameTiming.from_durations([300.0] * 6, first_start_s=1800.0)  # 6 x 5 min, 30-60 min


def frame_means(timing: FrameTiming, params: dict | None = None) -> np.ndarray:
    """Exact frame averages of a Feng curve."""
    return (feng_integral(timing.end_s, params) - feng_integral(timing.start_s, params)) * 60 / timing.duration_s


def perturbed_feng(rng: np.random.Generator) -> dict[str, float]:
    """A subject: A's ±20 %, λ's ±10 %, τ in [0, 0.5] min (digest §7.3)."""
    params = dict(FENG_FDG_PARAMS)
    for key in ("a1", "a2", "a3"):
        params[key] *= rng.uniform(0.8, 1.2)
    for key in ("lambda1_per_min", "lambda2_per_min", "lambda3_per_min"):
        params[key] *= rng.uniform(0.9, 1.1)
    params["tau_min"] = rng.uniform(0.0, 0.5)
    return params


# ------------------------------------------------------------------------------------------ Feng template
def test_feng_template_numbers_on_fine_grid():
    t_min = np.arange(0.0, 60.0 + 5e-4, 0.001)
    cp = feng_input(t_min * 60)
    assert feng_input(0.0) == 0.0 and feng_input(0.7 * 60, {"tau_min": 0.7}) == 0.0  # Cp(τ) = 0
    assert cp.max() == pytest.approx(103.5, abs=0.05)
    assert t_min[np.argmax(cp)] == pytest.approx(0.29, abs=0.002)
    assert np.trapezoid(cp, t_min) == pytest.approx(1189.78, abs=0.01)  # full-precision λ
    assert float(feng_integral(3600.0)) == pytest.approx(1189.78, abs=0.01)
    cp30, cp60 = feng_input([1800.0, 3600.0])
    assert cp30 == pytest.approx(16.58, abs=0.01) and cp60 == pytest.approx(11.72, abs=0.01)
    swapped = dict(FENG_FDG_PARAMS, a2=FENG_FDG_PARAMS["a3"], a3=FENG_FDG_PARAMS["a2"])  # the wrong pairing
    assert feng_input(3600.0, swapped) == pytest.approx(11.14, abs=0.01)
    assert abs(cp60 - 11.14) > 0.5


def test_population_input_scales_the_template():
    curve = population_input(3600.0, step_s=1.0, scale=2.0, unit="kBq/mL")
    assert curve.unit == "kBq/mL" and curve.end_s == 3600.0
    np.testing.assert_allclose(curve.activity, 2.0 * feng_input(curve.t_s))
    with pytest.raises(InputError, match="positive"):
        population_input(3600.0, scale=-1.0)


# -------------------------------------------------------------------------------------------- Feng fit
def test_fit_feng_recovers_auc_and_delay_from_noisy_samples():
    rng = np.random.default_rng(20261120)
    t_s = np.concatenate([np.arange(5.0, 121.0, 5.0),
                          60 * np.array([2.5, 3, 4, 5, 7.5, 10, 12.5, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60])])
    errors, delays = [], []
    for _ in range(8):
        truth = perturbed_feng(rng)
        noisy = feng_input(t_s, truth) * (1 + 0.02 * rng.standard_normal(t_s.size))
        fit = fit_feng(InputFunction(t_s, noisy, "uCi/mL"))
        assert fit.success and fit.relative_rmse < 0.03
        assert fit.params["lambda2_per_min"] > fit.params["lambda3_per_min"]  # canonical pairing: λ2 the slow one
        errors.append(float(fit.integral_from_injection(3600.0) / feng_integral(3600.0, truth)) - 1)
        delays.append(fit.params["tau_min"] - truth["tau_min"])
    assert np.max(np.abs(errors)) < 0.02, errors
    assert np.max(np.abs(delays)) < 0.05, delays
    # The curve is usable as an input function and by feng_input.
    curve = fit.curve(3600.0, step_s=1.0)
    assert curve.unit == "uCi/mL" and curve.end_s == 3600.0
    np.testing.assert_allclose(curve.activity, feng_input(curve.t_s, fit.params))


def test_fit_feng_noise_free_is_exact_and_delay_can_be_fixed():
    truth = dict(FENG_FDG_PARAMS, tau_min=0.3, a1=700.0, lambda2_per_min=-0.012)
    t_s = np.concatenate([np.arange(2.0, 180.0, 4.0), np.arange(180.0, 3601.0, 300.0)])
    fit = fit_feng(InputFunction(t_s, feng_input(t_s, truth)))
    for key, value in truth.items():
        assert fit.params[key] == pytest.approx(value, rel=1e-3, abs=1e-4), key
    fixed = fit_feng(InputFunction(t_s, feng_input(t_s, truth)), fit_delay=False, tau_min=0.3)
    assert fixed.params["tau_min"] == 0.3 and fixed.relative_rmse < 1e-4
    with pytest.raises(InputError, match="never positive"):
        fit_feng(InputFunction([0.0, 10.0, 20.0], [0.0, -1.0, -2.0]))


def test_fit_feng_on_real_pbr28_plasma(shared_data):
    blood = read_blood_table(shared_data / "pet" / "pbr28_blooddata.csv", where={"PET": "cgyu_1"}, unit="nCi/mL")
    fit = fit_feng(blood.plasma)
    assert fit.success and fit.relative_rmse < 0.06  # measured 3.2 % of the peak
    end = blood.plasma.end_s
    trapezoid = float(blood.plasma.integral_from_injection(end))
    assert float(fit.integral_from_injection(end)) == pytest.approx(trapezoid, rel=0.05)  # measured -1.9 %
    assert 0.0 < fit.params["tau_min"] < 2.0


# -------------------------------------------------------------------------------------------- tables
def test_read_blood_table_on_real_pbr28(shared_data):
    path = shared_data / "pet" / "pbr28_blooddata.csv"
    blood = read_blood_table(path, where={"PET": "cgyu_1"}, unit="nCi/mL")
    columns = read_numeric_csv(path, where={"PET": "cgyu_1"})
    assert (blood.plasma_column, blood.whole_blood_column) == ("Cpl_metabcorr", "Cbl_dispcorr")
    np.testing.assert_allclose(blood.plasma.activity, columns["Cpl_metabcorr"])
    np.testing.assert_allclose(blood.whole_blood.activity, columns["Cbl_dispcorr"])
    np.testing.assert_allclose(blood.plasma.t_s, columns["Time"])
    assert blood.plasma.unit == "nCi/mL" and blood.plasma.end_s == 5390.0
    # Late on, metabolite-corrected plasma is far below whole blood (radio-metabolites): the columns are not mixed.
    assert blood.plasma.value_at(3600.0) < 0.2 * blood.whole_blood.value_at(3600.0)
    with pytest.raises(InputError, match="not increasing"):  # four scans in one file
        read_blood_table(path)
    # Coverage on the real scan: the samples stop at 89.8 min, inside the last frame (87.5-93.5 min).
    tacs = read_numeric_csv(shared_data / "pet" / "pbr28_tacdata.csv", where={"PET": "cgyu_1"})
    frames = FrameTiming.from_start_duration(tacs["StartTime"][1:], tacs["Duration"][1:])  # row 0: a 0 s stub
    with pytest.raises(InputError, match="ends at 89.83 min"):
        check_frames_covered(blood.plasma, frames)
    check_frames_covered(blood.plasma, frames, end_tolerance=1.0)  # the lenient rule models use


def test_read_blood_table_tsv_minutes_and_rows_per_curve(tmp_path):
    path = tmp_path / "blood.tsv"
    lines = ["Time (min)\tPlasma\tWhole blood",
             "0\t0\t0", "0.5\t50\t", "1\t30\t33", "2\t20\t", "5\t10\t12", "10\t8\t9.5", "20\t\t8.5"]
    path.write_text("\n".join(lines) + "\n")
    blood = read_blood_table(path, unit="kBq/mL")
    np.testing.assert_allclose(blood.plasma.t_s, [0, 30, 60, 120, 300, 600])
    np.testing.assert_allclose(blood.plasma.activity, [0, 50, 30, 20, 10, 8])
    np.testing.assert_allclose(blood.whole_blood.t_s, [0, 60, 300, 600, 1200])
    np.testing.assert_allclose(blood.whole_blood.activity, [0, 33, 12, 9.5, 8.5])
    assert blood.whole_blood_column == "Whole blood"


def test_blood_column_precedence():
    t = np.array([0.0, 30.0, 60.0, 120.0])
    plasma, blood = np.array([0.0, 9.0, 5.0, 3.0]), np.array([0.0, 10.0, 6.0, 4.0])
    for whole_name in ("blood", "cb", "Cbl", "Cbl_dispcorr", "wb", "whole_blood", "Cwb"):
        for plasma_name in ("Cp", "plasma", "Cpl_metabcorr", "Plasma_parent", "activity"):
            columns = {"time": t, whole_name: blood, plasma_name: plasma}  # whole blood listed first
            curves = BloodCurves.from_columns(columns)
            assert curves.plasma_column == plasma_name and curves.whole_blood_column == whole_name
            np.testing.assert_allclose(curves.plasma.activity, plasma)
            np.testing.assert_allclose(curves.whole_blood.activity, blood)
            np.testing.assert_allclose(InputFunction.from_columns(columns).activity, plasma)
    only_blood = BloodCurves.from_columns({"Time": t, "Cb": blood})  # no plasma column: whole blood serves
    assert only_blood.plasma_column == "Cb" and only_blood.whole_blood is None
    with pytest.raises(InputError, match="no time column"):
        BloodCurves.from_columns({"Cp": plasma, "wb": blood})
    with pytest.raises(InputError, match="plasma or whole-blood column"):
        BloodCurves.from_columns({"t": t, "a": plasma, "b": blood})
    with pytest.raises(InputError, match="without a sample time"):
        BloodCurves.from_columns({"t": [0.0, np.nan, 60.0, 90.0], "cp": [0.0, 5.0, 3.0, 2.0]})


# ------------------------------------------------------------------------------------------- IDIF
def blood_pool_study(timing: FrameTiming = FULL_PROTOCOL):
    """(T, 6, 10, 12) frames: a blood-pool box holding the Feng frame means (with a zero-mean checkerboard
    ripple), tissue elsewhere; returns the sequence, the mask and the true blood frame means."""
    truth = frame_means(timing)
    shape = (6, 10, 12)
    mask = np.zeros(shape, dtype=np.uint8)
    mask[2:4, 3:7, 4:8] = 1  # 32 voxels
    mask[0, 0, 0] = 2  # another label
    k, j, i = np.indices(shape)
    ripple = np.where((k + j + i) % 2 == 0, 0.1, -0.1)  # 16 + 16 voxels in the box: mean 0
    tissue = 0.3 * truth[-1] * (1 - np.exp(-timing.mid_s / 900.0))
    frames = np.where(mask == 1, truth[:, None, None, None] * (1 + ripple), tissue[:, None, None, None])
    geometry = Geometry((2.0, 2.0, 3.0), (-10.0, 5.0, 20.0))
    return VolumeSequence(frames, geometry, tuple(timing.mid_s)), mask, truth


def test_image_derived_input_equals_true_frame_means():
    sequence, mask, truth = blood_pool_study()
    np.testing.assert_allclose(mask_frame_means(sequence, mask, label=1), truth, rtol=1e-12)
    idif = image_derived_input(sequence, FULL_PROTOCOL, Volume(mask == 1, sequence.geometry), unit="uCi/mL")
    np.testing.assert_allclose(idif.t_s, np.concatenate([[0.0], FULL_PROTOCOL.mid_s]))
    np.testing.assert_allclose(idif.activity, np.concatenate([[0.0], truth]), rtol=1e-12)
    assert idif.unit == "uCi/mL"
    # The mid-time approximation: AUC 0-60 min within 1 % of the true curve's for this protocol.
    assert float(idif.integral_from_injection(3600.0)) == pytest.approx(float(feng_integral(3600.0)), rel=0.01)
    check_frames_covered(idif, FULL_PROTOCOL, end_tolerance=0.5)


def test_image_derived_input_errors():
    sequence, mask, _ = blood_pool_study()
    moved = Geometry((2.0, 2.0, 3.0), (0.0, 5.0, 20.0))
    with pytest.raises(GeometryError, match="blood-pool mask vs image: origin"):
        image_derived_input(sequence, FULL_PROTOCOL, Volume(mask, moved))
    with pytest.raises(GeometryError, match=r"blood-pool mask vs image: size \(6, 10, 11\) vs \(6, 10, 12\)"):
        image_derived_input(sequence, FULL_PROTOCOL, mask[:, :, :-1])
    with pytest.raises(InputError, match="empty"):
        image_derived_input(sequence, FULL_PROTOCOL, np.zeros_like(mask))
    with pytest.raises(InputError, match="empty"):
        image_derived_input(sequence, FULL_PROTOCOL, mask, label=7)
    broken = sequence.frames.copy()
    broken[4, 2, 3, 4] = np.nan  # inside the blood pool, frame 5
    broken[9, 0, 9, 11] = np.nan  # outside: harmless
    with pytest.raises(InputError, match=r"frame\(s\) 5 have missing"):
        image_derived_input(VolumeSequence(broken, sequence.geometry), FULL_PROTOCOL, mask == 1)
    with pytest.raises(InputError, match="36 frames but the frame timing lists 6"):
        image_derived_input(sequence, LATE_FRAMES, mask == 1)


# -------------------------------------------------------------------------------------- sPBIF / PBIFNI
def test_scaled_population_input_recovers_a_known_scale():
    means = 2.5 * frame_means(FULL_PROTOCOL)
    assert population_scale(FULL_PROTOCOL, means, window_min=(30, 60)) == pytest.approx(2.5, rel=1e-12)
    assert population_scale(FULL_PROTOCOL, means, frames=[34, 35]) == pytest.approx(2.5, rel=1e-12)
    early_nan = means.copy()
    early_nan[:20] = np.nan  # only the chosen frames need values
    curve = scaled_population_input(FULL_PROTOCOL, early_nan, window_min=(30, 60), unit="uCi/mL")
    assert curve.end_s == 3600.0 and curve.unit == "uCi/mL"
    np.testing.assert_allclose(curve.activity, 2.5 * feng_input(curve.t_s), rtol=1e-12)
    # From an image-derived blood pool on late frames only (PBIFNI): the scale is exact, so is the curve.
    sequence, mask, _ = blood_pool_study(LATE_FRAMES)
    late = mask_frame_means(sequence, mask == 1)
    assert population_scale(LATE_FRAMES, late) == pytest.approx(1.0, rel=1e-12)
    with pytest.raises(InputError, match="No frame lies in 61-70 min"):
        scaled_population_input(FULL_PROTOCOL, means, window_min=(61, 70))
    with pytest.raises(InputError, match="frame\\(s\\) 1 is missing"):
        population_scale(FULL_PROTOCOL, early_nan, frames=[0, 35])
    with pytest.raises(InputError, match="not positive"):
        population_scale(FULL_PROTOCOL, -means)
    with pytest.raises(InputError, match="5 frame values were given for 36 frames"):
        population_scale(FULL_PROTOCOL, means[:5])


def test_spbif_auc_bias_on_perturbed_subjects():
    rng = np.random.default_rng(20261120)
    bias = []
    for _ in range(100):
        truth = perturbed_feng(rng)
        scale = population_scale(LATE_FRAMES, frame_means(LATE_FRAMES, truth))
        bias.append(100 * (scale * float(feng_integral(3600.0)) / float(feng_integral(3600.0, truth)) - 1))
    bias = np.array(bias)
    print(f"sPBIF AUC0-60 bias from 30-60 min frames: mean {bias.mean():+.2f} %, SD {bias.std():.2f} %, "
          f"max |bias| {np.abs(bias).max():.2f} %")
    assert abs(bias.mean()) < 2.0 and bias.std() < 5.0  # measured +0.2 % ± 3.0 % (200 subjects)
    assert np.abs(bias).max() < 10.0  # measured 8.3 %


# -------------------------------------------------------------------------------------------- coverage
def test_check_frames_covered():
    feng = InputFunction.feng(3600.0, 1.0)
    check_frames_covered(feng, FULL_PROTOCOL)
    check_frames_covered(feng, LATE_FRAMES)
    short = InputFunction.feng(3500.0, 1.0)  # ends 100 s before the 300 s last frame ends (> 10 %)
    with pytest.raises(InputError, match="input function ends at 58.33 min"):
        check_frames_covered(short, FULL_PROTOCOL)
    check_frames_covered(short, FULL_PROTOCOL, end_tolerance=0.5)
    with pytest.raises(InputError, match="input function ends"):  # ends before the last frame starts
        check_frames_covered(InputFunction.feng(3200.0, 1.0), FULL_PROTOCOL, end_tolerance=2.0)
    venous = InputFunction([0.0, 2100.0, 2700.0, 3300.0, 3600.0], [0.0, 18.0, 15.0, 13.0, 12.0])
    with pytest.raises(InputError, match="starts at 35.00 min, after the first frame ends"):
        check_frames_covered(venous, FULL_PROTOCOL)
    check_frames_covered(venous, FULL_PROTOCOL, require_start=False)  # legitimate for population scaling
    check_frames_covered(venous, LATE_FRAMES)  # the first sample is within the first late frame
    # check_covers keeps its older, lenient meaning (only "ends before the last frame starts").
    short.check_covers(FULL_PROTOCOL)
    venous.check_covers(FULL_PROTOCOL)
    with pytest.raises(InputError, match="input function ends"):
        InputFunction.feng(3200.0, 1.0).check_covers(FULL_PROTOCOL)
