"""Reference-region models (scanai.pet.reference_models): truth on simulated curves, an independent implementation
written here, voxel maps, and the user errors.

Simulation: plasma input = Feng's curve; reference = 1TCM (K1' 0.2 mL/min/mL, k2' 0.25 /min, V_ND 0.8); targets =
1TCM with V_T = V_ND (1 + BPnd), reversible 2TCM with K1/k2 = V_ND and BPnd = k3/k4, or irreversible 2TCM for the
reference Patlak plot (Kref = Ki / V_ND). Frame means from scanai.pet.kinetics.two_tissue_tacs (0.5-s grid).

The independent implementation shares only the model definitions (operational equations, the reference linear
between frame mid-times for the convolution, the step-function integral of frame means, weighted least squares);
it is built differently: SRTM/SRTM2 by scipy.optimize.least_squares on a 0.5-s FFT convolution, the linear models
by numpy.linalg.lstsq / numpy.polyfit one curve at a time with integrals from a Python loop.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares
from scipy.signal import fftconvolve

from scanai.core.errors import InputError
from scanai.core.image import Geometry, Volume, VolumeSequence
from scanai.pet.input_function import InputFunction
from scanai.pet.kinetics import two_tissue_tacs
from scanai.pet.reference_models import REFERENCE_PARAMETERS, fit_reference, reference_maps
from scanai.pet.timing import FrameTiming

DURATIONS_S = [10.0] * 6 + [20.0] * 3 + [30.0] * 6 + [60.0] * 5 + [120.0] * 5 + [300.0] * 14  # 39 frames, 90 min
K1_REF, K2_REF, V_ND = 0.2, 0.25, 0.8
BP = np.array([0.5, 2.0, 5.0])


def simulate_timing() -> FrameTiming:
    """The 39-frame, 90-min schedule of these tests."""
    return FrameTiming.from_durations(DURATIONS_S)


def simulate_curves(timing: FrameTiming) -> tuple[np.ndarray, ...]:
    """Reference (T,), 1TCM targets (3, T), fast reversible 2TCM targets (3, T), irreversible targets (3, T) and
    their Kref (3,) (1/min); BPnd of both reversible sets :data:`BP`."""
    feng = InputFunction.feng(end_s=timing.end_s[-1] + 1.0, step_s=1.0)
    reference = two_tissue_tacs(feng, timing, K1_REF, K2_REF, 0.0)[0]
    k1 = 0.24
    one = two_tissue_tacs(feng, timing, k1, k1 / (V_ND * (1.0 + BP)), 0.0)
    two = two_tissue_tacs(feng, timing, k1, k1 / V_ND, BP * 1.0, 1.0)
    k1i, k2i, k3i = np.array([0.1, 0.2, 0.3]), np.array([0.15, 0.3, 0.4]), np.array([0.05, 0.1, 0.02])
    irreversible = two_tissue_tacs(feng, timing, k1i, k2i, k3i)
    return reference, one, two, irreversible, k1i * k3i / (k2i + k3i) / V_ND


@pytest.fixture(scope="module")
def timing() -> FrameTiming:
    return simulate_timing()


@pytest.fixture(scope="module")
def curves(timing):
    return simulate_curves(timing)


# ------------------------------------------------------------------------------------- independent implementation
def _mid_interp(reference: np.ndarray, timing: FrameTiming, t_s: np.ndarray) -> np.ndarray:
    return np.interp(t_s, np.concatenate([[0.0], timing.mid_s]), np.concatenate([[0.0], reference]))


def _frame_mean(t_s: np.ndarray, curve: np.ndarray, timing: FrameTiming) -> np.ndarray:
    dt = t_s[1] - t_s[0]
    out = []
    for start, end in zip(timing.start_s, timing.end_s, strict=True):
        i, j = int(round(start / dt)), int(round(end / dt))
        out.append(np.trapezoid(curve[i:j + 1], dx=dt) / (end - start))
    return np.array(out)


class IndependentSrtm:
    """SRTM/SRTM2 by least_squares; C_R ⊗ e^{-k t} by a trapezoid FFT convolution on a 0.5-s grid (min units)."""

    def __init__(self, reference: np.ndarray, timing: FrameTiming, weights: np.ndarray) -> None:
        self.dt = 0.5
        self.t = np.arange(0.0, timing.end_s[-1] + self.dt / 2, self.dt)
        self.cr = _mid_interp(reference, timing, self.t)
        self.reference, self.timing = reference, timing
        self.sw = np.sqrt(weights)

    def conv(self, k_per_min: float) -> np.ndarray:
        h = np.exp(-k_per_min * self.t / 60.0)
        full = fftconvolve(self.cr, h)[: self.t.size]
        full -= 0.5 * (self.cr[0] * h + self.cr * h[0])  # trapezoid end corrections
        return _frame_mean(self.t, full * self.dt / 60.0, self.timing)

    def model(self, r1: float, k2: float, bp: float) -> np.ndarray:
        k2a = k2 / (1.0 + bp)
        return r1 * self.reference + (k2 - r1 * k2a) * self.conv(k2a)

    def fit(self, tac: np.ndarray, k2_ref: float | None, start: np.ndarray) -> float:
        if k2_ref is None:
            res = least_squares(lambda p: self.sw * (self.model(*p) - tac), start, x_scale=start, xtol=1e-13,
                                ftol=1e-13, gtol=1e-13)
        else:
            res = least_squares(lambda p: self.sw * (self.model(p[0], p[0] * k2_ref, p[1]) - tac), start[[0, 2]],
                                x_scale=start[[0, 2]], xtol=1e-13, ftol=1e-13, gtol=1e-13)
        return float(res.x[-1])


def _running_integral(tac: np.ndarray, timing: FrameTiming) -> np.ndarray:
    """Frame means of ∫_0^t of the step function of frame means (contiguous frames from 0 here), in activity·min."""
    out, before = [], 0.0
    for value, duration in zip(tac, timing.duration_s / 60.0, strict=True):
        out.append(before + 0.5 * value * duration)
        before += value * duration
    return np.array(out)


def independent_linear(model: str, tac: np.ndarray, reference: np.ndarray, timing: FrameTiming, weights: np.ndarray,
                       t_star_min: float, k2_ref: float | None) -> float:
    """BPnd (Kref for patlak_ref) of one curve by numpy lstsq / polyfit."""
    use = (weights > 0) & (timing.mid_min >= t_star_min)
    sw = np.sqrt(weights[use])
    ct, cr = tac[use], reference[use]
    int_t, int_r = _running_integral(tac, timing)[use], _running_integral(reference, timing)[use]
    if model in ("mrtm", "mrtm2"):
        columns = [int_r, int_t, cr] if model == "mrtm" else [int_r + cr / k2_ref, int_t]
        gamma = np.linalg.lstsq(np.stack(columns, 1) * sw[:, None], ct * sw, rcond=None)[0]
        return -gamma[0] / gamma[1] - 1.0
    if model == "logan_ref":
        x = (int_r + (cr / k2_ref if k2_ref else 0.0)) / ct
        return np.polyfit(x, int_t / ct, 1, w=sw)[0] - 1.0
    return np.polyfit(int_r / cr, ct / cr, 1, w=sw)[0]


# ------------------------------------------------------------------------------------------------ truth
@pytest.mark.parametrize("model, kwargs", [
    ("srtm", {}), ("srtm2", {}), ("srtm2", {"k2_ref_per_min": K2_REF}), ("mrtm", {}), ("mrtm2", {}),
    ("mrtm2", {"k2_ref_per_min": K2_REF}), ("logan_ref", {}), ("logan_ref", {"k2_ref_per_min": K2_REF})])
def test_noise_free_bpnd_within_2_percent(curves, timing, model, kwargs):
    reference, one, two, _, _ = curves
    for targets in (one, two):  # 1TCM targets, and 2TCM targets with fast binding (k4 = 1/min)
        fit = fit_reference(targets, reference, timing, model=model, **kwargs)
        assert np.all(np.abs(fit.parameters["BPnd"] / BP - 1.0) < 0.02), (model, fit.parameters["BPnd"])
        assert np.allclose(fit.parameters["DVR"], fit.parameters["BPnd"] + 1.0)
        assert not fit.bound_hit.any()
    if "R1" in REFERENCE_PARAMETERS[model]:
        fit = fit_reference(one, reference, timing, model=model, **kwargs)
        assert np.allclose(fit.parameters["R1"], 0.24 / K1_REF, rtol=0.02)
        assert np.allclose(fit.parameters["k2a"], 0.24 / (V_ND * (1 + BP)), rtol=0.02)
    if model in ("srtm2", "mrtm2") and not kwargs:  # k2' from the first pass over 1TCM targets is exact
        fit = fit_reference(one, reference, timing, model=model)
        assert fit.k2_ref_per_min == pytest.approx(K2_REF, rel=0.01)


def test_srtm_is_near_exact_on_one_tissue_targets(curves, timing):
    reference, one, _, _, _ = curves
    fit = fit_reference(one, reference, timing, model="srtm")
    assert np.allclose(fit.parameters["BPnd"], BP, rtol=2e-3)
    assert np.allclose(fit.parameters["k2prime"], K2_REF, rtol=1e-2)
    assert np.allclose(fit.predicted, one, rtol=1e-3, atol=1e-3 * one.max())
    grid = fit_reference(one, reference, timing, model="srtm", refine=False)  # grid value: within one grid step
    assert np.all(np.abs(grid.parameters["k2a"] / fit.parameters["k2a"] - 1.0) < 0.07)


def test_reference_patlak_recovers_kref(curves, timing):
    reference, _, _, irreversible, kref = curves
    fit = fit_reference(irreversible, reference, timing, model="patlak_ref")
    assert np.allclose(fit.parameters["Kref"], kref, rtol=0.01)
    assert fit.frames[0] == np.flatnonzero(timing.mid_min >= 20.0)[0]


# -------------------------------------------------------------------------------------- independent, noisy
@pytest.fixture(scope="module")
def noisy(curves, timing):
    """5 % noise on the targets, 2 % on the reference; duration weights with frame 1 left out (weight 0)."""
    reference, one, two, irreversible, _ = curves
    rng = np.random.default_rng(7)
    noisy_ref = reference * (1.0 + 0.02 * rng.standard_normal(reference.shape))
    targets = np.concatenate([one, two])
    targets = targets * (1.0 + 0.05 * rng.standard_normal(targets.shape))
    irr = irreversible * (1.0 + 0.05 * rng.standard_normal(irreversible.shape))
    weights = timing.duration_s.copy()
    weights[0] = 0.0
    return noisy_ref, targets, irr, weights


@pytest.mark.parametrize("model", ["srtm", "srtm2"])
def test_srtm_agrees_with_independent_least_squares(noisy, timing, model):
    reference, targets, _, weights = noisy
    rows = targets[[0, 2, 4]]
    fit = fit_reference(rows, reference, timing, model=model, weights=weights)
    k2_ref = fit.k2_ref_per_min
    assert (k2_ref is None) == (model == "srtm")
    other = IndependentSrtm(reference, timing, weights / weights[weights > 0].mean())
    for n, tac in enumerate(rows):
        start = np.array([fit.parameters["R1"][n], fit.parameters["k2"][n], fit.parameters["BPnd"][n]]) * 1.1
        assert fit.parameters["BPnd"][n] == pytest.approx(other.fit(tac, k2_ref, start), rel=5e-3)


@pytest.mark.parametrize("model, t_star, k2_ref", [
    ("mrtm", 0.0, None), ("mrtm", 10.0, None), ("mrtm2", 0.0, K2_REF), ("logan_ref", 30.0, None),
    ("logan_ref", 30.0, K2_REF), ("patlak_ref", 20.0, None)])
def test_linear_models_agree_with_independent_lstsq(noisy, timing, model, t_star, k2_ref):
    reference, targets, irreversible, weights = noisy
    rows = irreversible if model == "patlak_ref" else targets
    fit = fit_reference(rows, reference, timing, model=model, weights=weights, t_star_min=t_star,
                        k2_ref_per_min=k2_ref)
    ours = fit.parameters["Kref" if model == "patlak_ref" else "BPnd"]
    theirs = [independent_linear(model, tac, reference, timing, weights, t_star, k2_ref) for tac in rows]
    assert np.allclose(ours, theirs, rtol=5e-3)
    assert np.allclose(ours, theirs, rtol=1e-8)  # the same least-squares problem: agreement to rounding


def test_zero_weight_leaves_a_frame_out(curves, timing):
    reference, one, _, _, _ = curves
    weights = np.ones(len(timing))
    weights[20] = 0.0
    broken = one.copy()
    broken[:, 20] *= 3.0
    clean = fit_reference(one, reference, timing, weights=weights)
    fit = fit_reference(broken, reference, timing, weights=weights)
    assert np.allclose(fit.parameters["BPnd"], clean.parameters["BPnd"], rtol=1e-6)
    assert 20 not in fit.frames
    fitted = fit_reference(broken, reference, timing)  # the same frame fitted changes BPnd by more than 1 %
    assert np.all(np.abs(fitted.parameters["BPnd"] / clean.parameters["BPnd"] - 1.0) > 0.01)


# ---------------------------------------------------------------------------------------------------- maps
def test_maps_match_curve_fits_and_keep_geometry(curves, timing):
    reference, one, two, _, _ = curves
    rows = np.concatenate([one, two, np.zeros((1, len(timing)))])
    frames = rows.T.reshape(len(timing), 1, 1, rows.shape[0]).astype(np.float32)
    geometry = Geometry(spacing_mm=(2.0, 3.0, 4.0), origin_mm=(1.0, 2.0, 3.0))
    sequence = VolumeSequence(frames.copy(), geometry)
    mask = np.ones((1, 1, rows.shape[0]), bool)
    mask[0, 0, 1] = False
    for model in ("srtm", "srtm2", "mrtm2", "logan_ref"):
        maps = reference_maps(sequence, reference, timing, model=model, mask=Volume(mask.astype(np.uint8), geometry),
                              chunk_voxels=3)
        curve = fit_reference(rows[mask[0, 0]], reference, timing, model=model, refine=False)
        bp = maps.parameters["BPnd"].array[0, 0]
        assert maps.parameters["BPnd"].geometry == geometry
        assert bp[1] == 0.0 and maps.bound_hit.array[0, 0, -1] == 1  # outside the mask; a flat (zero) voxel
        expected = np.nan_to_num(curve.parameters["BPnd"])
        assert np.allclose(bp[mask[0, 0]], expected, rtol=1e-3, atol=1e-4), model
        if model == "srtm2":
            assert maps.k2_ref_per_min == pytest.approx(curve.k2_ref_per_min, rel=1e-4)
    np.testing.assert_array_equal(sequence.frames, frames)  # input untouched


# -------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, message", [
    ({"model": "fancy"}, "Unknown reference-region model"),
    ({"model": "srtm", "k2_ref_per_min": 0.2}, "not a parameter one can fix"),
    ({"model": "srtm2", "k2_ref_per_min": -1.0}, "positive number"),
    ({"weights": np.zeros(39)}, "at least one of them positive"),
    ({"weights": np.ones(5)}, "5 weights"),
    ({"model": "logan_ref", "t_star_min": 89.0}, "t* = 89 min"),
])
def test_user_errors(curves, timing, kwargs, message):
    reference, one, _, _, _ = curves
    with pytest.raises(InputError, match=message.replace("*", r"\*")):
        fit_reference(one, reference, timing, **kwargs)


def test_bad_curves_are_refused(curves, timing):
    reference, one, _, _, _ = curves
    with pytest.raises(InputError, match="38 frames"):
        fit_reference(one[:, :-1], reference, timing)
    with pytest.raises(InputError, match="zero or negative in every frame"):
        fit_reference(one, np.zeros(len(timing)), timing)
    broken = one.copy()
    broken[0, 3] = np.nan
    with pytest.raises(InputError, match="missing values"):
        fit_reference(broken, reference, timing)
    single = fit_reference(one[1], reference, timing, model="mrtm")  # one curve (T,) gives scalars
    assert single.parameters["BPnd"].shape == ()
