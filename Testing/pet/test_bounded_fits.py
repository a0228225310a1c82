"""Bound-constrained refinement, user bounds, zero weights and the input delay of the compartment fits; acceptance
on the real [11C]PBR28 scans.

Each bounded optimum is checked against an independent fit written here (a 0.5-s grid, FFT convolution, frame
averages, ``scipy.optimize.least_squares`` with bounds from many starts) and against our own objective: the
refinement must reach a cost no higher than the independent solution's.

PBR28 (kinfitr's data): default settings and the data's own frame weights give 1TCM, 2TCM and Logan VT within 1 %
of the independent fits in every region; fitting the input delay (near zero in these scans) moves VT by at most
1 %. The fast test checks one scan; the slow one (``make bench``) all four, writing the worst differences to
``bench_output/pet_pbr28.json``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares
from scipy.signal import fftconvolve

from scanai.core.errors import InputError
from scanai.pet.blood import read_blood_table
from scanai.pet.input_function import InputFunction, feng_input
from scanai.pet.kmap import load_tac_table
from scanai.pet.models import fit_tacs, model_tacs
from scanai.pet.timing import FrameTiming

#: 12x10 s, 6x30 s, 5x60 s, 5x120 s, 8x300 s (0-60 min).
TIMING = FrameTiming.from_durations([10.0] * 12 + [30.0] * 6 + [60.0] * 5 + [120.0] * 5 + [300.0] * 8)
#: Feng's input sampled as a blood table is (dense early, sparse late): 2 s to 3 min, then 30 s.
SAMPLES_S = np.concatenate([np.arange(0.0, 180.0, 2.0), np.arange(180.0, 3631.0, 30.0)])
PLASMA = InputFunction(SAMPLES_S, feng_input(SAMPLES_S), "uCi/mL")
BLOOD = InputFunction(SAMPLES_S, 0.9 * feng_input(SAMPLES_S) + 0.02 * SAMPLES_S / 60.0, "uCi/mL")
UPPER = {"1tcm": [5.0, 5.0, 0.999], "2tcm": [5.0, 5.0, 2.0, 1.0, 0.999]}
SCANS = ("cgyu_1", "cgyu_2", "flfp_1", "flfp_2")


def reference_fit(method: str, tac: np.ndarray, weights: np.ndarray, upper: list[float], plasma=PLASMA,
                  blood=BLOOD, timing=TIMING, starts: int = 6) -> np.ndarray:
    """Independent weighted least squares: 0.5-s grid, FFT convolution (trapezoid), frame averages of the grid
    curve, scipy's trust-region reflective solver with bounds [0, upper], best of ``starts`` random starts.
    Returns (K1, k2[, k3, k4], vB)."""
    step = 0.5 / 60.0
    t = np.arange(0.0, timing.end_s[-1] / 60.0 + step, step)
    cp, cb = plasma.value_at(t * 60), blood.value_at(t * 60)
    first, last = np.searchsorted(t, timing.start_s / 60 - 1e-9), np.searchsorted(t, timing.end_s / 60 - 1e-9)

    def conv(rate: float) -> np.ndarray:
        kernel = np.exp(-rate * t)
        return fftconvolve(cp, kernel)[: t.size] * step - 0.5 * step * (cp[0] * kernel + cp * kernel[0])

    def frames(curve: np.ndarray) -> np.ndarray:
        area = np.concatenate([[0.0], np.cumsum(0.5 * step * (curve[1:] + curve[:-1]))])
        return (area[last] - area[first]) / (timing.duration_s / 60)

    def model(p: np.ndarray) -> np.ndarray:
        if method == "1tcm":
            tissue = p[0] * conv(p[1])
        else:
            k1, k2, k3, k4 = p[:4]
            s = k2 + k3 + k4
            root = np.sqrt(max(s * s - 4 * k2 * k4, 1e-12))
            a1, a2 = (s - root) / 2, (s + root) / 2
            tissue = k1 / root * ((k3 + k4 - a1) * conv(a1) + (a2 - k3 - k4) * conv(a2))
        return frames((1 - p[-1]) * tissue + p[-1] * cb)

    sqrt_w = np.sqrt(weights)
    rng = np.random.default_rng(5)
    best = None
    for _ in range(starts):
        start = rng.uniform(0.02, 0.6, len(upper)) * np.minimum(upper, 1.0)
        start[-1] = rng.uniform(0.0, 0.1)
        result = least_squares(lambda p: sqrt_w * (model(p) - tac), start, bounds=(0.0, upper), x_scale="jac",
                               xtol=1e-13, ftol=1e-13, gtol=1e-13)
        if best is None or result.cost < best.cost:
            best = result
    return best.x


def names_of(method: str) -> list[str]:
    return ["K1", "k2", "vB"] if method == "1tcm" else ["K1", "k2", "k3", "k4", "vB"]


def own_cost(method: str, values: dict[str, float], tac: np.ndarray, weights: np.ndarray) -> float:
    """Our objective (exact frame-averaged model, weighted squares) at parameter values."""
    model = model_tacs(method, values, TIMING, PLASMA, BLOOD)[0]
    return float(((model - tac) ** 2) @ weights)


def check_bounded_optimum(method: str, tac: np.ndarray, weights: np.ndarray, upper: list[float], on_bound: str,
                          expected: float, bounds: dict | None = None) -> None:
    """Ours and the independent fit put ``on_bound`` at ``expected``, agree, and ours costs no more."""
    fit = fit_tacs(tac, TIMING, PLASMA, method, whole_blood=BLOOD, weights=weights, bounds=bounds, device="cpu")
    names = names_of(method)
    ours = {name: float(fit.parameters[name][0]) for name in names}
    reference = dict(zip(names, reference_fit(method, tac, weights * len(weights) / weights.sum(), upper),
                         strict=True))
    assert reference[on_bound] == pytest.approx(expected, abs=1e-6 * max(expected, 1.0)), "reference not on bound"
    assert ours[on_bound] == pytest.approx(expected, abs=1e-9 * max(expected, 1.0))
    assert bool(fit.bound_hit[0])
    # our objective at our optimum is no higher than at the independent solution (which its own grid biases)
    assert own_cost(method, ours, tac, weights) <= own_cost(method, reference, tac, weights) * (1 + 1e-9)
    for name in names:
        assert ours[name] == pytest.approx(reference[name], rel=2e-3, abs=2e-5), name
    vt = "VT"
    if vt in fit.parameters and method == "1tcm":
        assert float(fit.parameters[vt][0]) == pytest.approx(reference["K1"] / reference["k2"], rel=1e-3)


def test_vb_zero_at_the_optimum_is_reached():
    """Too little blood in the early frames: the unconstrained optimum has vB < 0, the bounded one vB = 0."""
    weights = TIMING.duration_s.astype(float)
    for method, truth in (("2tcm", {"K1": 0.12, "k2": 0.18, "k3": 0.11, "k4": 0.05, "vB": 0.0}),
                          ("1tcm", {"K1": 0.25, "k2": 0.12, "vB": 0.0})):
        tac = model_tacs(method, truth, TIMING, PLASMA, BLOOD)[0] - 0.01 * BLOOD.mean_over_frames(TIMING)
        check_bounded_optimum(method, tac, weights, UPPER[method], "vB", 0.0)


def test_k4_zero_at_the_optimum_is_reached():
    """An irreversible curve with a little extra trapping late: the reversible 2TCM optimum has k4 = 0."""
    weights = TIMING.duration_s.astype(float)
    truth = {"K1": 0.10, "k2": 0.15, "k3": 0.06, "k4": 0.0, "vB": 0.03}
    tac = model_tacs("2tcm", truth, TIMING, PLASMA, BLOOD)[0] * (1 + 0.03 * TIMING.mid_min / 60)
    check_bounded_optimum("2tcm", tac, weights, UPPER["2tcm"], "k4", 0.0)


def test_k1_at_a_user_bound_is_reached():
    """A user's upper bound on K1 below the curve's K1: the optimum has K1 on it, the other rates adapt."""
    weights = np.ones(len(TIMING))
    truth = {"K1": 0.30, "k2": 0.10, "vB": 0.05}
    tac = model_tacs("1tcm", truth, TIMING, PLASMA, BLOOD)[0]
    check_bounded_optimum("1tcm", tac, weights, [0.25, 5.0, 0.999], "K1", 0.25, bounds={"K1": (0.0, 0.25)})


def test_bounded_optima_without_torch(monkeypatch, shared_data):
    """Where torch is absent (Slicer before PyTorch is installed) the regional refinement runs on scipy and reaches
    the same bounded optima, and the PBR28 regions the same VT."""
    monkeypatch.setattr("scanai.core.device.torch_available", lambda: False)
    test_vb_zero_at_the_optimum_is_reached()
    test_k4_zero_at_the_optimum_is_reached()
    test_k1_at_a_user_bound_is_reached()
    check(scan_differences(shared_data / "pet", "cgyu_1", ("FC", "THA", "CBL")))


def test_user_bounds_are_checked():
    tac = model_tacs("1tcm", {"K1": 0.3, "k2": 0.1}, TIMING, PLASMA)[0]
    for bounds, words in (({"k3": (0, 1)}, "not a parameter of 1tcm"), ({"K1": (0.5, 0.1)}, "LOWER < UPPER"),
                          ({"vB": (0, 2)}, "vB < 1")):
        with pytest.raises(InputError, match=words):
            fit_tacs(tac, TIMING, PLASMA, "1tcm", bounds=bounds, device="cpu")
    with pytest.raises(InputError, match="refinement, which is off"):
        fit_tacs(tac, TIMING, PLASMA, "1tcm", bounds={"K1": (0, 1)}, refine=False)
    with pytest.raises(InputError, match="compartment models"):
        fit_tacs(tac, TIMING, PLASMA, "logan", bounds={"K1": (0, 1)})


def test_zero_weights_mean_frames_not_fitted():
    """A frame of weight 0 does not move the fit: corrupting it changes nothing; a negative weight is refused."""
    truth = {"K1": 0.12, "k2": 0.18, "k3": 0.11, "k4": 0.05, "vB": 0.04}
    tac = model_tacs("2tcm", truth, TIMING, PLASMA, BLOOD)[0]
    weights = np.ones(len(TIMING))
    weights[[0, 1, 14]] = 0.0
    damaged = tac.copy()
    damaged[[0, 1, 14]] = [50.0, -3.0, 0.0]
    fit = fit_tacs(damaged, TIMING, PLASMA, "2tcm", whole_blood=BLOOD, weights=weights, device="cpu")
    for name, value in truth.items():
        assert float(fit.parameters[name][0]) == pytest.approx(value, rel=1e-5), name
    patlak = fit_tacs(damaged, TIMING, PLASMA, "patlak", weights=np.where(TIMING.mid_min > 40, 0.0, 1.0))
    assert np.isfinite(patlak.parameters["Ki"][0])
    with pytest.raises(InputError, match=">= 0"):
        fit_tacs(tac, TIMING, PLASMA, "1tcm", weights=-weights)
    with pytest.raises(InputError, match="at least 3"):
        fit_tacs(tac, TIMING, PLASMA, "1tcm", weights=np.eye(len(TIMING))[0])


# ------------------------------------------------------------------------------------------------- delay
@pytest.mark.parametrize("method", ["1tcm", "2tcm"])
def test_a_20_s_delayed_input_is_recovered_within_2_s(method):
    truth = {"1tcm": {"K1": 0.25, "k2": 0.12, "vB": 0.05},
             "2tcm": {"K1": 0.12, "k2": 0.18, "k3": 0.11, "k4": 0.05, "vB": 0.04}}[method]
    tac = model_tacs(method, truth, TIMING, PLASMA.delayed(20.0), BLOOD.delayed(20.0))
    fit = fit_tacs(tac, TIMING, PLASMA, method, whole_blood=BLOOD, delay_s=(-30.0, 30.0), device="cpu")
    assert abs(float(fit.delay_s[0]) - 20.0) < 2.0
    vt = truth["K1"] / truth["k2"] * (1 + truth.get("k3", 0.0) / truth.get("k4", 1.0))
    assert float(fit.parameters["VT"][0]) == pytest.approx(vt, rel=0.01)
    plain = fit_tacs(tac, TIMING, PLASMA, method, whole_blood=BLOOD, device="cpu")
    assert float(plain.rmse[0]) > 5 * float(fit.rmse[0])  # ignoring the delay fits worse
    fixed = fit_tacs(tac, TIMING, PLASMA, method, whole_blood=BLOOD, delay_s=20.0, device="cpu")
    assert float(fixed.parameters["VT"][0]) == pytest.approx(vt, rel=1e-4)
    assert float(fixed.delay_s[0]) == 20.0


def test_delay_options_are_checked():
    tac = model_tacs("1tcm", {"K1": 0.3, "k2": 0.1}, TIMING, PLASMA)[0]
    with pytest.raises(InputError, match="LOW < HIGH"):
        fit_tacs(tac, TIMING, PLASMA, "1tcm", delay_s=(10.0, -10.0))
    with pytest.raises(InputError, match="only with a compartment model"):
        fit_tacs(tac, TIMING, PLASMA, "logan", delay_s=(-10.0, 10.0))


def test_delayed_input_curve():
    for delay in (20.0, -20.0, 0.0):
        shifted = PLASMA.delayed(delay)
        t = np.array([5.0, 30.0, 100.0, 300.0])
        np.testing.assert_allclose(shifted.value_at(t), PLASMA.value_at(t - delay), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------- real PBR28 scans
def reference_logan(tac: np.ndarray, study, plasma, weights: np.ndarray, t_star_min: float = 30.0) -> float:
    """Weighted Logan line through the frames after t*: tissue integral by rectangles of the frame means."""
    minutes = study.timing.duration_s / 60
    area = np.cumsum(tac * minutes) - tac * minutes / 2 + study.timing.start_s[0] / 60 * tac[0] / 2
    frames = study.timing.mid_min >= t_star_min
    x = plasma.mean_integral_over_frames(study.timing)[frames] / tac[frames]
    y = area[frames] / tac[frames]
    return float(np.polyfit(x, y, 1, w=np.sqrt(weights[frames]))[0])


def vt_of(method: str, p: np.ndarray) -> float:
    return float(p[0] / p[1]) if method == "1tcm" else float(p[0] / p[1] * (1 + p[2] / p[3]))


def scan_differences(folder, scan: str, checked: tuple[str, ...] | None = None) -> dict[str, float]:
    """Largest |VT difference| (%) over the regions ``checked`` (default all) of one scan per method, ours (defaults,
    the data's weights) against the independent fits; the delay fitted on all six regions and the largest VT change
    (%) it brings."""
    study = load_tac_table(folder / "pbr28_tacdata.csv", {"PET": scan})
    blood = read_blood_table(folder / "pbr28_blooddata.csv", where={"PET": scan}, unit="nCi/mL")
    assert study.weights is not None and study.weights.min() == 0.0  # kinfitr gives the first frames weight 0
    tacs = np.stack(list(study.tacs.values()))
    compared = [n for n, name in enumerate(study.tacs) if checked is None or name in checked]
    weights = study.weights * np.count_nonzero(study.weights) / study.weights.sum()
    worst: dict[str, float] = {}
    fits = {}
    for method in ("1tcm", "2tcm"):
        fits[method] = fit = fit_tacs(tacs, study.timing, blood.plasma, method, whole_blood=blood.whole_blood,
                       weights=study.weights, device="cpu")
        assert not fit.skipped.any()
        errors = []
        for number in compared:
            tac = tacs[number]
            reference = reference_fit(method, tac, weights, UPPER[method], blood.plasma, blood.whole_blood,
                                      study.timing)
            errors.append(abs(float(fit.parameters["VT"][number]) / vt_of(method, reference) - 1) * 100)
        worst[method] = max(errors)
    # one input delay for the scan, fitted with the 2TCM (the model these data need), then used by both models
    delayed = fit_tacs(tacs, study.timing, blood.plasma, "2tcm", whole_blood=blood.whole_blood,
                       weights=study.weights, delay_s=(-10.0, 10.0), device="cpu")
    delay = float(delayed.delay_s[0])
    worst["delay_s"] = delay
    for method in ("1tcm", "2tcm"):
        plain = fits[method]
        shifted = delayed if method == "2tcm" else fit_tacs(
            tacs, study.timing, blood.plasma, method, whole_blood=blood.whole_blood, weights=study.weights,
            delay_s=delay, device="cpu")
        worst[f"{method}_delay_change"] = float(np.max(np.abs(shifted.parameters["VT"] / plain.parameters["VT"] - 1)
                                                       * 100))
    logan = fit_tacs(tacs, study.timing, blood.plasma, "logan", weights=study.weights)
    worst["logan"] = max(abs(float(logan.parameters["VT"][n]) / reference_logan(tac, study, blood.plasma,
                                                                                  weights) - 1) * 100
                         for n, tac in enumerate(tacs))
    return worst


def check(worst: dict[str, float]) -> None:
    for method in ("1tcm", "2tcm", "logan"):
        assert worst[method] < 1.0, (method, worst)
    assert abs(worst["delay_s"]) < 5.0, worst
    for method in ("1tcm", "2tcm"):
        assert worst[f"{method}_delay_change"] <= 1.0, (method, worst)


def test_one_pbr28_scan_matches_the_independent_fits(shared_data):
    check(scan_differences(shared_data / "pet", "cgyu_1", ("FC", "THA", "CBL")))  # the delay on all six


@pytest.mark.slow
def test_every_pbr28_scan_matches_the_independent_fits(shared_data):
    from bench_results import write_result

    results = {scan: scan_differences(shared_data / "pet", scan) for scan in SCANS}
    write_result("pet_pbr28.json", "vt_difference_percent", results)
    print(results)
    for worst in results.values():
        check(worst)


# -------------------------------------------------------------------------------------- blood and tables
def test_dispersion_correction_undoes_a_sampling_line():
    """Feng's curve through a line with a 5-s exponential dispersion kernel, sampled every second, is brought back."""
    from scanai.pet.blood import correct_dispersion

    t = np.arange(0.0, 600.0, 0.01)
    true = feng_input(t)
    kernel = np.exp(-t / 5.0) / 5.0
    measured = fftconvolve(true, kernel)[: t.size] * 0.01
    every_second = slice(0, t.size, 100)
    samples = InputFunction(t[every_second], measured[every_second], "uCi/mL")
    corrected = correct_dispersion(samples, 5.0)
    truth = true[every_second]
    before = np.abs(samples.activity - truth).max()
    after = np.abs(corrected.activity - truth)[1:].max()  # the injection sample has only a one-sided slope
    assert after < 0.1 * before and after < 0.05 * truth.max(), (before, after)
    assert correct_dispersion(samples, 0.0) is samples
    with pytest.raises(InputError, match="0 to 60 s"):
        correct_dispersion(samples, -1.0)


def test_tac_table_weights_are_kept_and_checked(tmp_path):
    from scanai.core.errors import FileFormatError

    table = tmp_path / "tacs.csv"
    rows = ["StartTime,Duration,Weights,FC", "0,0,0,0", "0,10,0,1.5", "10,10,0.5,3", "20,20,1,4", "40,20,1,4.5"]
    table.write_text("\n".join(rows) + "\n")
    study = load_tac_table(table)
    np.testing.assert_array_equal(study.weights, [0.0, 0.5, 1.0, 1.0])  # the zero-length placeholder dropped
    table.write_text("\n".join(rows[:-1] + ["40,20,-1,4.5"]) + "\n")
    with pytest.raises(FileFormatError, match="Weights column .* negative"):
        load_tac_table(table)
