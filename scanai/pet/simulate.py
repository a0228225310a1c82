"""Physics simulation of late-window dynamic FDG PET slices with known kinetics (training data for the network).

One *phantom* is a 2-D slice (torso or head) with

- a **plasma input function** drawn from a population of Feng FDG curves (:func:`random_feng_params`: every
  amplitude A ±20 %, every exponent λ ±10 %, delay τ in [0, 0.5] min, global scale ×[0.5, 1.5]);
- **irreversible 2TCM** parameters (K1, k2, k3; k4 = 0) per voxel: published FDG tissue values
  (:data:`FDG_TISSUES`; digest §7.3, anchors A3) times a per-phantom region factor ×[0.8, 1.2] and smooth
  Gaussian random fields of ±10-20 %, plus 1-5 lesions with high Ki; blood volume vB 0.03-0.05 (1 in the blood
  pool), whole blood taken equal to plasma (Cb = Cp);
- labels: (i) the true net influx ``Ki = (1 - vB) K1 k3 / (k2 + k3)`` (the :mod:`scanai.pet.phantom`
  convention: the blood fraction holds no trapped tracer) and (ii) voxelwise Patlak Ki and intercept of the
  **noise-free, unblurred** full 0-60 min protocol (t* = 20 min, :func:`scanai.pet.patlak.patlak_fit`).

Frames are exact frame averages of the 2TCM model. The TAC is linear in K1, k3, vB and nonlinear only in
β = k2 + k3: ``C_T = (K1 / β) [k3 ∫Cp + k2 (e^{-β t} ⊗ Cp)]``. So per input function we compute, once, the
frame-averaged basis ``∫Cp``, ``Cp`` and ``e^{-β t} ⊗ Cp`` on a fine logarithmic β grid
(:data:`BETA_GRID`, with :func:`scanai.pet.kinetics.tissue_curves_2tcm`, 0.5-s grid) and interpolate linearly
in ln β per voxel (relative error < 1e-4). Cumulative integrals are kept at every 30 s (:data:`EDGE_STEP_S`)
from 20 to 60 min, so any frame schedule with edges on that grid is rendered exactly and fast.

Noise (image domain, digest §7.3 5a): ``σ_k² = s C̄_k e^{λ t_k} / Δt_k`` (F-18, λ = ln 2 / 109.77 min, t_k the
frame mid-time, Δt_k in min), with ``s`` set from a target coefficient of variation ``cv`` of a 10-min frame at
45 min for the mean body activity; then a Gaussian PSF (FWHM 4-6 mm) blurs the noise-free frames (resolution)
and the noise is the same PSF applied to white noise, rescaled to unit variance (correlated noise with the
intended per-voxel σ).

Everything is seeded by a :class:`numpy.random.Generator`; nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from scanai.core.errors import InputError
from scanai.core.image import Geometry, Volume, VolumeSequence
from scanai.pet.input_function import FENG_FDG_PARAMS, InputFunction
from scanai.pet.kinetics import frame_average, tissue_curves_2tcm
from scanai.pet.patlak import DEFAULT_T_STAR_MIN, patlak_fit
from scanai.pet.phantom import default_timing
from scanai.pet.timing import FrameTiming

#: F-18 half-life, min.
F18_HALF_LIFE_MIN = 109.77
F18_LAMBDA_PER_MIN = float(np.log(2.0) / F18_HALF_LIFE_MIN)
#: β = k2 + k3 grid (1/min) of the precomputed convolution basis (log-spaced).
BETA_GRID = np.geomspace(0.02, 6.0, 256)
#: Frame edges of rendered schedules lie on this grid (s) between EDGE_RANGE_S.
EDGE_STEP_S = 30.0
EDGE_RANGE_S = (1200.0, 3600.0)
#: Fine convolution step (s) of the basis (same as scanai.pet.kinetics.DEFAULT_STEP_S).
BASIS_STEP_S = 0.5
#: Slice size and voxel size of the training phantoms.
DEFAULT_SIZE = 96
DEFAULT_VOXEL_MM = 4.0
#: Default late window (min) and the range of windows drawn for training (min).
DEFAULT_WINDOW_MIN = (30.0, 50.0)
TRAIN_WINDOW_START_MIN = (25.0, 40.0)
TRAIN_WINDOW_LENGTH_MIN = (10.0, 30.0)
TRAIN_WINDOW_END_MAX_MIN = 60.0
#: Noise: coefficient of variation of a 10-min frame at 45 min (mean body activity), log-uniform range.
CV_RANGE = (0.05, 0.30)
PSF_FWHM_MM_RANGE = (4.0, 6.0)

#: FDG 2TCM tissue values (K1 mL/min/mL, k2, k3 in 1/min; k4 = 0). Sources: digest §7.3 (GM, WM), anchors A3
#: (qurit/dynamicPET table: liver, lung, myocardium, kidney, bone, background), scanai.pet.phantom (soft tissue).
FDG_TISSUES: dict[str, tuple[float, float, float]] = {
    "background": (0.100, 1.000, 0.003),
    "soft tissue": (0.030, 0.150, 0.010),
    "liver": (0.667, 0.695, 0.003),
    "lung": (0.233, 1.536, 0.012),
    "myocardium": (0.600, 1.200, 0.100),
    "kidney": (0.793, 0.672, 0.008),
    "bone": (0.108, 0.642, 0.025),
    "grey matter": (0.102, 0.130, 0.062),
    "white matter": (0.054, 0.109, 0.045),
    "blood": (0.0, 1.0, 0.0),  # vB = 1: the voxel is plasma (Ki = 0, Patlak V = 1)
}
REGION_NAMES: tuple[str, ...] = ("air",) + tuple(FDG_TISSUES)
#: Lesion parameter ranges (uniform): K1, k2, k3 in 1/min (Ki about 0.02-0.4 /min).
LESION_RANGES = ((0.15, 0.9), (0.2, 0.7), (0.05, 0.25))


# ---------------------------------------------------------------------------------------------- input function
def random_feng_params(rng: np.random.Generator) -> dict[str, float]:
    """Feng FDG parameters of one subject: A1-A3 ×U(0.8, 1.2), λ1-λ3 ×U(0.9, 1.1), τ ~ U(0, 0.5) min."""
    params = dict(FENG_FDG_PARAMS)
    for key in ("a1", "a2", "a3"):
        params[key] *= float(rng.uniform(0.8, 1.2))
    for key in ("lambda1_per_min", "lambda2_per_min", "lambda3_per_min"):
        params[key] *= float(rng.uniform(0.9, 1.1))
    params["tau_min"] = float(rng.uniform(0.0, 0.5))
    return params


def feng_population_input(rng: np.random.Generator, end_s: float = 3660.0) -> tuple[InputFunction, dict[str, Any]]:
    """A random subject's plasma curve (1-s samples to ``end_s``, µCi/mL × a global scale U(0.5, 1.5))."""
    params = random_feng_params(rng)
    scale = float(rng.uniform(0.5, 1.5))
    base = InputFunction.feng(end_s, 1.0, params)
    return InputFunction(base.t_s, base.activity * scale, "uCi/mL"), {**params, "scale": scale}


# ---------------------------------------------------------------------------------------------- basis
@dataclass(frozen=True, eq=False)
class KineticBasis:
    """Frame-averaging basis of one input function.

    edges_s:   (E,) times (s) at which cumulative integrals are stored (multiples of EDGE_STEP_S).
    cumulative:(2 + G, E) ∫_0^edge of [Cp, ∫Cp (activity·min), e^{-β_g t} ⊗ Cp (activity·min) for β_g in
               BETA_GRID], in (row unit)·s.
    full:      (2 + G, T_full) the same rows averaged over the full 0-60 min protocol ``full_timing``.
    """

    input_function: InputFunction
    edges_s: np.ndarray
    cumulative: np.ndarray
    full_timing: FrameTiming
    full: np.ndarray

    def frame_means(self, timing: FrameTiming) -> np.ndarray:
        """(2 + G, T) frame averages of the basis rows; frame edges must lie on the stored edge grid."""
        start = np.rint((timing.start_s - self.edges_s[0]) / EDGE_STEP_S).astype(int)
        end = np.rint((timing.end_s - self.edges_s[0]) / EDGE_STEP_S).astype(int)
        exact = (np.allclose(self.edges_s[0] + start * EDGE_STEP_S, timing.start_s, atol=1e-6)
                 and np.allclose(self.edges_s[0] + end * EDGE_STEP_S, timing.end_s, atol=1e-6))
        if not exact or start.min() < 0 or end.max() >= self.edges_s.size:
            raise InputError(f"Simulated frame edges must be multiples of {EDGE_STEP_S:g} s between "
                             f"{self.edges_s[0]:g} and {self.edges_s[-1]:g} s.", "Round the schedule to that grid.")
        return (self.cumulative[:, end] - self.cumulative[:, start]) / timing.duration_s


def kinetic_basis(input_function: InputFunction, full_timing: FrameTiming | None = None) -> KineticBasis:
    """Compute the basis of ``input_function`` (fine 0.5-s convolution for every β in :data:`BETA_GRID`)."""
    full_timing = full_timing if full_timing is not None else default_timing()
    end_s = max(float(EDGE_RANGE_S[1]), float(full_timing.end_s[-1]))
    k2 = np.concatenate([[0.0], BETA_GRID])  # row 0: pure trapping -> ∫Cp; rows β: e^{-βt} ⊗ Cp (K1 = 1, k3 = 0)
    t, curves = tissue_curves_2tcm(input_function, end_s, 1.0, k2, 0.0, 0.0, 0.0, BASIS_STEP_S)
    rows = np.concatenate([input_function.value_at(t)[None], curves])  # (2 + G, M)
    steps = np.diff(t)
    cumulative = np.concatenate([np.zeros((rows.shape[0], 1)),
                                 np.cumsum(0.5 * steps * (rows[:, 1:] + rows[:, :-1]), axis=1)], axis=1)
    edges = np.arange(EDGE_RANGE_S[0], EDGE_RANGE_S[1] + 0.5 * EDGE_STEP_S, EDGE_STEP_S)
    index = np.rint(edges / BASIS_STEP_S).astype(int)
    return KineticBasis(input_function, edges, cumulative[:, index], full_timing, frame_average(t, rows, full_timing))


def _beta_weights(beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower grid index (N,) and linear weight in ln β (N,) of β values (clipped to the grid)."""
    log_grid = np.log(BETA_GRID)
    u = (np.log(np.clip(beta, BETA_GRID[0], BETA_GRID[-1])) - log_grid[0]) / (log_grid[1] - log_grid[0])
    index = np.clip(np.floor(u).astype(int), 0, BETA_GRID.size - 2)
    return index, u - index


def render_tacs(means: np.ndarray, k1: np.ndarray, k2: np.ndarray, k3: np.ndarray, vb: np.ndarray) -> np.ndarray:
    """Frame-averaged PET TACs (N, T) from basis frame means (2 + G, T) and per-voxel (N,) K1, k2, k3 (1/min), vB.

    ``C = (1 - vB) (K1 / β) [k3 ∫Cp + k2 E_β] + vB Cp``, E_β interpolated linearly in ln β.
    """
    beta = k2 + k3
    index, weight = _beta_weights(beta)
    basis = means[2:]
    exp_term = (1.0 - weight)[:, None] * basis[index] + weight[:, None] * basis[index + 1]
    safe_beta = np.where(beta > 0, beta, 1.0)
    tissue = (k1 / safe_beta)[:, None] * (k3[:, None] * means[1][None] + k2[:, None] * exp_term)
    return (1.0 - vb)[:, None] * tissue + vb[:, None] * means[0][None]


# ---------------------------------------------------------------------------------------------- phantom
@dataclass(frozen=True, eq=False)
class SimPhantom:
    """One simulated 2-D slice with its kinetics and labels; maps are (H, W) float64.

    region: (H, W) int index into REGION_NAMES (0 air); lesions: (H, W) int lesion number (0 none).
    ki_true: label (i), (1 - vB) K1 k3 / (k2 + k3), 1/min. ki_patlak_full / v_patlak_full: label (ii), Patlak
    slope and intercept of the noise-free unblurred 0-60 min protocol (t* = 20 min), 0 in air.
    """

    kind: str
    k1: np.ndarray
    k2: np.ndarray
    k3: np.ndarray
    vb: np.ndarray
    region: np.ndarray
    lesions: np.ndarray
    basis: KineticBasis
    input_params: dict[str, Any]
    ki_true: np.ndarray
    ki_patlak_full: np.ndarray
    v_patlak_full: np.ndarray
    voxel_mm: float
    seed: int

    @property
    def body(self) -> np.ndarray:
        return self.region > 0

    @property
    def shape(self) -> tuple[int, int]:
        return self.k1.shape  # type: ignore[return-value]

    @property
    def input_function(self) -> InputFunction:
        return self.basis.input_function

    def clean_frames(self, timing: FrameTiming) -> np.ndarray:
        """(T, H, W) noise-free, unblurred frame averages on ``timing`` (edges on the 30-s grid)."""
        means = self.basis.frame_means(timing)
        body = self.body
        out = np.zeros((len(timing),) + self.shape)
        out[:, body] = render_tacs(means, self.k1[body], self.k2[body], self.k3[body], self.vb[body]).T
        return out


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    j, i = np.mgrid[0:size, 0:size].astype(float)
    return j, i


def _ellipse(j: np.ndarray, i: np.ndarray, cj: float, ci: float, a: float, b: float, angle: float = 0.0) -> np.ndarray:
    """Inside of an ellipse with semi-axes a (along i) and b (along j) px, rotated by ``angle`` rad."""
    c, s = np.cos(angle), np.sin(angle)
    u = (i - ci) * c + (j - cj) * s
    v = -(i - ci) * s + (j - cj) * c
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _code(name: str) -> int:
    return REGION_NAMES.index(name)


def _outline(size: int, rng: np.random.Generator, a_range: tuple[float, float], b_range: tuple[float, float],
             tilt: float) -> tuple[np.ndarray, np.ndarray, float, float, float, float, float]:
    """(j, i grids, centre row, centre column, semi-axes a and b in px, angle in rad) of a body outline: the centre
    within 3 px of the image centre, the semi-axes drawn as fractions of ``size`` from the ranges, the angle within
    +- ``tilt`` (drawn in that order from ``rng``)."""
    j, i = _grid(size)
    c = (size - 1) / 2.0
    cj, ci = c + rng.uniform(-3, 3), c + rng.uniform(-3, 3)
    a, b = rng.uniform(*a_range) * size, rng.uniform(*b_range) * size
    return j, i, cj, ci, a, b, rng.uniform(-tilt, tilt)


def _torso(size: int, rng: np.random.Generator) -> np.ndarray:
    j, i, cj, ci, a, b, angle = _outline(size, rng, (0.36, 0.46), (0.25, 0.33), 0.15)
    region = np.zeros((size, size), dtype=np.int16)
    region[_ellipse(j, i, cj, ci, a, b, angle)] = _code("background")
    region[_ellipse(j, i, cj, ci, a - rng.uniform(2, 4), b - rng.uniform(2, 4), angle)] = _code("soft tissue")
    level = rng.choice(["thorax", "upper abdomen", "abdomen"])
    spine_j = cj + 0.6 * b
    region[_ellipse(j, i, spine_j, ci, rng.uniform(3.5, 5), rng.uniform(3.5, 5))] = _code("bone")
    aorta = _ellipse(j, i, spine_j - rng.uniform(6, 8), ci + rng.uniform(-4, 0), 2.2, 2.2)
    if level == "thorax":
        for side in (-1, 1):
            region[_ellipse(j, i, cj - rng.uniform(0, 0.15) * b, ci + side * rng.uniform(0.4, 0.5) * a,
                            rng.uniform(0.25, 0.33) * a, rng.uniform(0.55, 0.7) * b, rng.uniform(-0.3, 0.3))] = \
                _code("lung")
        hj, hi = cj - rng.uniform(0.0, 0.2) * b, ci + rng.uniform(0.0, 0.15) * a
        outer = rng.uniform(7, 10)
        region[_ellipse(j, i, hj, hi, outer, outer * rng.uniform(0.85, 1.1))] = _code("myocardium")
        thickness = rng.uniform(2.5, 4)
        region[_ellipse(j, i, hj, hi, outer - thickness, (outer - thickness) * rng.uniform(0.85, 1.1))] = \
            _code("blood")
    else:
        liver = _ellipse(j, i, cj - rng.uniform(0, 0.2) * b, ci - rng.uniform(0.3, 0.45) * a,
                         rng.uniform(0.35, 0.5) * a, rng.uniform(0.55, 0.75) * b, rng.uniform(-0.4, 0.4))
        region[liver & (region > 0)] = _code("liver")
        if level == "abdomen":
            for side in (-1, 1):
                region[_ellipse(j, i, spine_j - rng.uniform(2, 5), ci + side * rng.uniform(0.3, 0.4) * a,
                                rng.uniform(4, 6), rng.uniform(6, 8), rng.uniform(-0.5, 0.5))] = _code("kidney")
    region[aorta] = _code("blood")
    return region


def _head(size: int, rng: np.random.Generator) -> np.ndarray:
    j, i, cj, ci, a, b, angle = _outline(size, rng, (0.28, 0.36), (0.34, 0.42), 0.2)
    region = np.zeros((size, size), dtype=np.int16)
    region[_ellipse(j, i, cj, ci, a, b, angle)] = _code("soft tissue")
    skull = rng.uniform(2, 3.5)
    region[_ellipse(j, i, cj, ci, a - 1.5, b - 1.5, angle)] = _code("bone")
    region[_ellipse(j, i, cj, ci, a - 1.5 - skull, b - 1.5 - skull, angle)] = _code("grey matter")
    cortex = rng.uniform(2.5, 5)
    inner = _ellipse(j, i, cj, ci, a - 1.5 - skull - cortex, b - 1.5 - skull - cortex, angle)
    # a wavy grey/white boundary so the cortex is not a plain ring
    wave = gaussian_filter(rng.normal(size=(size, size)), 3.0)
    wave /= max(float(np.abs(wave).max()), 1e-12)
    region[inner & (wave < 0.6)] = _code("white matter")
    for side in (-1, 1):  # deep grey nuclei
        region[_ellipse(j, i, cj + rng.uniform(-4, 4), ci + side * rng.uniform(5, 9), rng.uniform(2.5, 4),
                        rng.uniform(4, 6), rng.uniform(-0.5, 0.5))] = _code("grey matter")
    if rng.random() < 0.5:  # a venous sinus (blood)
        region[_ellipse(j, i, cj + b - skull - 3, ci, 1.8, 1.8)] = _code("blood")
    return region


def _smooth_field(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A zero-mean, unit-std Gaussian random field with a random correlation length of 3-8 px."""
    field = gaussian_filter(rng.normal(size=shape), rng.uniform(3.0, 8.0), mode="wrap")
    return (field - field.mean()) / max(float(field.std()), 1e-12)


def make_phantom(rng: np.random.Generator, size: int = DEFAULT_SIZE, voxel_mm: float = DEFAULT_VOXEL_MM,
                 kind: str | None = None, seed: int = -1) -> SimPhantom:
    """One random phantom slice (``size`` × ``size`` voxels of ``voxel_mm``): anatomy, kinetics, input function,
    basis and labels. ``kind``: "torso" (default 75 %), "head" or None (random)."""
    kind = kind or ("head" if rng.random() < 0.25 else "torso")
    region = _torso(size, rng) if kind == "torso" else _head(size, rng)
    body = region > 0
    table = np.array([(0.0, 1.0, 0.0)] + list(FDG_TISSUES.values()))  # (R, 3), row 0 air
    factors = rng.uniform(0.8, 1.2, size=(table.shape[0], 3))  # per-phantom region factor
    params = (table * factors)[region]  # (H, W, 3)
    for p in range(3):  # smooth ±10-20 % variation per parameter
        params[..., p] *= np.clip(1.0 + rng.uniform(0.10, 0.20) * _smooth_field(region.shape, rng), 0.5, 1.5)
    vb = np.clip(0.04 + 0.01 * _smooth_field(region.shape, rng), 0.03, 0.05)
    blood = region == _code("blood")
    vb = np.where(blood, 1.0, np.where(body, vb, 0.0))
    params[blood] = (0.0, 1.0, 0.0)
    # lesions: 1-5 discs with soft edges inside the body but not in the blood pool
    lesions = np.zeros(region.shape, dtype=np.int16)
    j, i = _grid(size)
    candidates = np.argwhere(body & ~blood & (gaussian_filter(body.astype(float), 3.0) > 0.95))
    for number in range(1, int(rng.integers(1, 6)) + 1):
        cj, ci = candidates[rng.integers(len(candidates))]
        radius = rng.uniform(1.2, 5.0)
        inside = _ellipse(j, i, cj, ci, radius, radius * rng.uniform(0.7, 1.3), rng.uniform(0, np.pi)) & body & ~blood
        if not inside.any():
            inside = (j == cj) & (i == ci)
        lesion = [rng.uniform(*r) for r in LESION_RANGES]
        params[inside] = np.asarray(lesion) * np.clip(1.0 + 0.1 * rng.normal(size=(int(inside.sum()), 3)), 0.7, 1.3)
        lesions[inside] = number
    params[~body] = (0.0, 1.0, 0.0)
    k1, k2, k3 = (np.ascontiguousarray(params[..., p]) for p in range(3))
    input_function, input_params = feng_population_input(rng)
    basis = kinetic_basis(input_function)
    ki_true = np.where(body, (1.0 - vb) * k1 * k3 / np.maximum(k2 + k3, 1e-12), 0.0)
    full = np.zeros((len(basis.full_timing), int(body.sum())))
    full[:] = render_tacs(basis.full, k1[body], k2[body], k3[body], vb[body]).T
    fit = patlak_fit(full.T, basis.full_timing, input_function, DEFAULT_T_STAR_MIN)
    ki_full = np.zeros(region.shape)
    v_full = np.zeros(region.shape)
    ki_full[body] = fit.ki_per_min
    v_full[body] = fit.intercept
    return SimPhantom(kind, k1, k2, k3, vb, region, lesions, basis, input_params, ki_true, ki_full, v_full,
                      float(voxel_mm), int(seed))


def make_phantoms(seed: int, count: int, size: int = DEFAULT_SIZE, voxel_mm: float = DEFAULT_VOXEL_MM
                  ) -> list[SimPhantom]:
    """``count`` phantoms; phantom n uses the generator ``SeedSequence([seed, n])`` (reproducible one by one)."""
    return [make_phantom(np.random.default_rng(np.random.SeedSequence([seed, n])), size, voxel_mm, seed=n)
            for n in range(count)]


# ---------------------------------------------------------------------------------------------- schedules
def _on_grid(minutes: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(minutes, float) * 60.0 / EDGE_STEP_S) * EDGE_STEP_S


def schedule(window_min: tuple[float, float], n_frames: int) -> FrameTiming:
    """``n_frames`` contiguous equal frames covering ``window_min`` (edges rounded to the 30-s grid)."""
    edges = np.unique(_on_grid(np.linspace(window_min[0], window_min[1], n_frames + 1)))
    if edges.size != n_frames + 1:
        raise InputError(f"{n_frames} frames do not fit the window {window_min} on the {EDGE_STEP_S:g}-s grid.")
    return FrameTiming.from_start_end(edges[:-1], edges[1:])


def random_window(rng: np.random.Generator, default_share: float = 0.5) -> tuple[float, float]:
    """A training window (min): the default 30-50 min with probability ``default_share``, else start
    U(25, 40) and length U(10, 30) ending by 60 min, both on the 0.5-min grid."""
    if rng.random() < default_share:
        return DEFAULT_WINDOW_MIN
    start = float(np.rint(rng.uniform(*TRAIN_WINDOW_START_MIN) * 2) / 2)
    end = min(start + float(np.rint(rng.uniform(*TRAIN_WINDOW_LENGTH_MIN) * 2) / 2), TRAIN_WINDOW_END_MAX_MIN)
    return start, end


def random_schedule(rng: np.random.Generator, window_min: tuple[float, float],
                    single_frame_share: float = 0.1) -> FrameTiming:
    """A random frame schedule inside ``window_min``: 1 frame (``single_frame_share``), 2-6 equal frames, or
    2-5 frames with random cut points; sometimes one frame is dropped (a gap). Frames are >= 1 min."""
    length = window_min[1] - window_min[0]
    if rng.random() < single_frame_share:
        return schedule(window_min, 1)
    for _ in range(20):
        if rng.random() < 0.6:
            n = int(rng.integers(2, 7))
            edges_min = np.linspace(window_min[0], window_min[1], n + 1)
        else:
            n = int(rng.integers(2, 6))
            cuts = np.sort(rng.uniform(window_min[0], window_min[1], n - 1))
            edges_min = np.concatenate([[window_min[0]], cuts, [window_min[1]]])
        edges = _on_grid(edges_min)
        if np.all(np.diff(edges) >= 60.0) and length > 0:
            starts, ends = edges[:-1], edges[1:]
            if n >= 3 and rng.random() < 0.15:  # drop one inner frame: a gap in the acquisition
                keep = np.ones(n, bool)
                keep[int(rng.integers(1, n - 1))] = False
                starts, ends = starts[keep], ends[keep]
            return FrameTiming.from_start_end(starts, ends)
    return schedule(window_min, 2)


# ---------------------------------------------------------------------------------------------- noisy frames
def psf_sigma_px(fwhm_mm: float, voxel_mm: float) -> float:
    """Gaussian σ in voxels of a PSF with full width at half maximum ``fwhm_mm``."""
    return fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / voxel_mm


def _unit_noise(shape: tuple[int, ...], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise (..., H, W) blurred in-plane by the PSF and rescaled to unit variance."""
    delta = np.zeros((33, 33))
    delta[16, 16] = 1.0
    gain = float(np.sqrt((gaussian_filter(delta, sigma_px) ** 2).sum()))
    sigma = (0.0,) * (len(shape) - 2) + (sigma_px, sigma_px)
    return gaussian_filter(rng.normal(size=shape), sigma) / gain


def noise_scale(cv: float, body_mean_activity: float) -> float:
    """The noise factor ``s`` of ``σ² = s C̄ e^{λt} / Δt`` that gives a CV of ``cv`` for a 10-min frame at 45 min
    and activity ``body_mean_activity``: ``s = cv² C̄ 10 / e^{λ 45}``."""
    return cv**2 * body_mean_activity * 10.0 / np.exp(F18_LAMBDA_PER_MIN * 45.0)


@dataclass(frozen=True, eq=False)
class NoisyFrames:
    """Frames (T, H, W) of one phantom on ``timing``: ``frames`` noisy and blurred, ``clean`` blurred noise-free."""

    frames: np.ndarray
    clean: np.ndarray
    timing: FrameTiming
    cv: float
    psf_fwhm_mm: float


def noisy_frames(phantom: SimPhantom, timing: FrameTiming, rng: np.random.Generator, cv: float | None = None,
                 psf_fwhm_mm: float | None = None) -> NoisyFrames:
    """Render ``phantom`` on ``timing`` with PSF blur and activity-, decay- and duration-dependent noise.

    cv: CV of a 10-min frame at 45 min for the mean body activity (default log-uniform in CV_RANGE);
    psf_fwhm_mm: default U(4, 6) mm.
    """
    cv = float(np.exp(rng.uniform(*np.log(CV_RANGE)))) if cv is None else float(cv)
    fwhm = float(rng.uniform(*PSF_FWHM_MM_RANGE)) if psf_fwhm_mm is None else float(psf_fwhm_mm)
    sigma_px = psf_sigma_px(fwhm, phantom.voxel_mm)
    clean = gaussian_filter(phantom.clean_frames(timing), (0.0, sigma_px, sigma_px))
    body = phantom.body
    reference = float(np.average(clean[:, body].mean(axis=1), weights=timing.duration_s))
    s = noise_scale(cv, reference)
    decay = np.exp(F18_LAMBDA_PER_MIN * timing.mid_min)
    variance = s * np.clip(clean, 0.0, None) * (decay / (timing.duration_s / 60.0))[:, None, None]
    frames = clean + np.sqrt(variance) * _unit_noise(clean.shape, sigma_px, rng)
    return NoisyFrames(frames, clean, timing, cv, fwhm)


def as_sequence(frames: np.ndarray, timing: FrameTiming, voxel_mm: float = DEFAULT_VOXEL_MM) -> VolumeSequence:
    """Frames (T, H, W) or (T, K, H, W) as a :class:`VolumeSequence` (time index = frame mid-times, s)."""
    array = np.asarray(frames, dtype=np.float32)
    if array.ndim == 3:
        array = array[:, None]
    return VolumeSequence(array, Geometry((voxel_mm, voxel_mm, voxel_mm)), tuple(timing.mid_s), "time", "s")


def as_volume(image: np.ndarray, voxel_mm: float = DEFAULT_VOXEL_MM) -> Volume:
    """A (H, W) or (K, H, W) map as a :class:`Volume` on the simulation grid."""
    array = np.asarray(image)
    return Volume(array[None] if array.ndim == 2 else array, Geometry((voxel_mm, voxel_mm, voxel_mm)))
