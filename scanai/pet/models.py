"""One entry point for every plasma-input kinetic model, per TAC (:func:`fit_tacs`) or per voxel (:func:`kinetic_maps`).

Methods (keys of :data:`METHODS`) and their defaults:

* ``patlak``  — Patlak plot (irreversible), frames with mid-time >= t* (default 20 min); computed by
  :mod:`scanai.pet.patlak` (Ki, intercept V).
* ``logan``   — Logan plot with plasma input (reversible), t* default 30 min; see :mod:`scanai.pet.logan`.
* ``1tcm``, ``2tcm_irreversible`` (k4 = 0), ``2tcm`` — compartment models with blood volume, fitted to all
  frames by basis functions, refined by bound-constrained (active-set) Levenberg-Marquardt (:func:`fit_tacs`: by
  default; :func:`kinetic_maps`: with ``refine=True``); user bounds, an input delay (fixed or fitted); see
  :mod:`scanai.pet.compartment` and :mod:`scanai.pet.lm_refine`. Ki = K1 k3/(k2 + k3) and VT = K1/k2
  (1 + k3/k4) (1TCM: VT = K1/k2) refer to the tissue (the blood fraction vB excluded); a Patlak slope of the same
  voxel estimates (1 - vB) Ki.

Weights: None (equal), ``"duration"`` (frame duration), ``"counts"`` (duration / mean TAC of the frame, the
mean taken over all curves or all mask voxels, so it is shared by every voxel), or (T,) numbers >= 0; a zero
weight means the frame is not fitted (kinfitr gives its first frames one), in the compartment models as in the
plots.

Threshold (as TPCCLIB): curves whose area ``Σ C̄ Δt`` is below ``threshold`` (default 1 %) of the plasma
area over the same frames are not fitted: parameters 0, flagged in ``skipped`` (maps: ``bound_hit`` = 2).

Goodness of fit: ``rmse`` is the weighted RMS residual of the model TAC in activity units on the fitted frames;
``r2`` is the TAC's R² for compartment models and the plot's R² for Patlak and Logan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scanai.core.errors import InputError
from scanai.core.image import Volume, VolumeSequence
from scanai.core.progress import Progress
from scanai.pet import compartment, patlak
from scanai.pet.input_function import InputFunction
from scanai.pet.logan import DEFAULT_T_STAR_MIN as LOGAN_T_STAR_MIN
from scanai.pet.logan import logan_fit
from scanai.pet.timing import FrameTiming

METHODS = ("patlak", "logan", "1tcm", "2tcm_irreversible", "2tcm")
PARAMETERS: dict[str, tuple[str, ...]] = {
    "patlak": ("Ki", "V"),
    "logan": ("VT", "b"),
    "1tcm": ("K1", "k2", "vB", "VT"),
    "2tcm_irreversible": ("K1", "k2", "k3", "vB", "Ki"),
    "2tcm": ("K1", "k2", "k3", "k4", "vB", "Ki", "VT"),
}
UNITS: dict[str, str] = {"Ki": "1/min", "K1": "mL/min/mL", "k2": "1/min", "k3": "1/min", "k4": "1/min",
                         "VT": "mL/mL", "V": "mL/mL", "vB": "mL/mL", "b": "min"}
#: Default t* (min) of the graphical methods (compartment models use every frame).
DEFAULT_T_STAR_MIN: dict[str, float] = {"patlak": patlak.DEFAULT_T_STAR_MIN, "logan": LOGAN_T_STAR_MIN}
#: Default fraction of the plasma area under which a curve is not fitted.
DEFAULT_THRESHOLD = 0.01
#: Largest input delay accepted, s; default search range of a fitted delay (kinfitr's ±0.5 min); grid step, s.
MAX_DELAY_S = 120.0
DEFAULT_DELAY_RANGE_S = (-30.0, 30.0)
DELAY_GRID_S = 4.0
#: Default voxels per chunk of :func:`kinetic_maps` (graphical methods take 16 x more).
DEFAULT_CHUNK_VOXELS = 16384


@dataclass(frozen=True, eq=False)
class TacFit:
    """Per-curve results, arrays (N,) (N = 1 for a single TAC).

    parameters: name -> values (see :data:`PARAMETERS`, :data:`UNITS`); 0 for skipped curves, NaN where a
                derived value is undefined (e.g. VT of a 2TCM with k4 = 0, Logan on a non-positive TAC).
    r2, rmse:   goodness of fit (module docstring).
    bound_hit:  True where a parameter sits on a bound or grid edge (or the fit failed).
    skipped:    True where the curve was below the area threshold (not fitted).
    predicted:  (N, T) frame-averaged model TAC; for Patlak/Logan only on the fitted frames (NaN elsewhere).
    delay_s:    (N,) input delay used, s (fitted or given; NaN for skipped curves whose delay was to be fitted).
    """

    method: str
    parameters: dict[str, np.ndarray]
    r2: np.ndarray
    rmse: np.ndarray
    bound_hit: np.ndarray
    predicted: np.ndarray
    skipped: np.ndarray
    delay_s: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class KineticMaps:
    """Voxelwise results on the sequence's grid (0 outside the mask and where undefined).

    bound_hit: uint8 volume, 0 ok, 1 a parameter on a bound / grid edge or undefined, 2 below the area threshold.
    mask:      (k, j, i) bool, the voxels considered.
    delay_s:   the input delay used for every voxel, s (given, or fitted on the mean curve).
    """

    method: str
    parameters: dict[str, Volume]
    r2: Volume
    rmse: Volume
    bound_hit: Volume
    mask: np.ndarray
    delay_s: float = 0.0


# --------------------------------------------------------------------------------------------- checks
def _check_method(method: str) -> str:
    key = str(method).strip().lower()
    if key not in METHODS:
        raise InputError(f"Unknown kinetic model '{method}'.", f"Choose one of: {', '.join(METHODS)}.")
    return key


def _frame_weights(weights: Any, timing: FrameTiming, mean_tac: np.ndarray | None) -> np.ndarray | None:
    """(T,) weights >= 0 normalised to mean 1 over the weighted frames (0: frame not fitted), or None for equal
    weights."""
    if weights is None:
        return None
    if isinstance(weights, str):
        if weights == "duration":
            w = timing.duration_s.astype(float)
        elif weights == "counts":
            level = np.abs(mean_tac) if mean_tac is not None else np.ones(len(timing))
            w = timing.duration_s / np.maximum(level, 1e-6 * max(float(level.max()), 1e-30))
        else:
            raise InputError(f"Unknown weighting '{weights}'.",
                             "Use 'duration', 'counts', None, or give one positive weight per frame.")
    else:
        w = np.asarray(weights, dtype=float).reshape(-1)
        if w.size != len(timing):
            raise InputError(f"{w.size} weights were given for {len(timing)} frames.", "Give one weight per frame.")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise InputError("The frame weights must be numbers >= 0 (0: the frame is not fitted).",
                             "Give one weight per frame, positive for the frames to fit.")
        if np.count_nonzero(w) < 3:
            raise InputError(f"Only {np.count_nonzero(w)} frame(s) have a weight above 0; a fit needs at least 3.",
                             "Give a positive weight to the frames to fit.")
    return w * (np.count_nonzero(w) / w.sum())


def _check_bounds(bounds: Any, method: str, refine: bool) -> dict[str, tuple[float, float]] | None:
    """User bounds name -> (lower, upper) of the refined parameters of ``method``, checked; None for none."""
    if not bounds:
        return None
    if method not in compartment.KINETIC_PARAMETERS:
        raise InputError(f"Parameter bounds apply to the compartment models, not {method}.")
    if not refine:
        raise InputError("Parameter bounds are applied by the refinement, which is off.", "Turn refinement on.")
    allowed = (*compartment.KINETIC_PARAMETERS[method], "vB")
    checked = {}
    for name, pair in dict(bounds).items():
        if name not in allowed:
            raise InputError(f"'{name}' is not a parameter of {method}.", f"Bound one of: {', '.join(allowed)}.")
        low, high = (float(v) for v in pair)
        limit = 1.0 if name == "vB" else np.inf
        if not (np.isfinite(low) and np.isfinite(high) and 0.0 <= low < high and high <= limit):
            raise InputError(f"The bounds of {name} must be 0 <= LOWER < UPPER (finite{', vB < 1' * (name == 'vB')})"
                             f", got {pair}.")
        checked[name] = (low, min(high, 0.999) if name == "vB" else high)
    return checked


def _check_vb(vb: float | None) -> float | None:
    if vb is None:
        return None
    value = float(vb)
    if not (0.0 <= value < 1.0):
        raise InputError(f"A fixed blood volume fraction vB must be in [0, 1), got {vb}.")
    return value


# ----------------------------------------------------------------------------------------------- plan
class _Plan:
    """Everything computed once per (timing, input function, method, options); ``fit`` handles one block."""

    def __init__(self, method: str, timing: FrameTiming, input_function: InputFunction, t_star_min: float | None,
                 weights: np.ndarray | None, whole_blood: InputFunction | None, vb: float | None, refine: bool,
                 device: str, threshold: float, bounds: dict[str, tuple[float, float]] | None = None,
                 delay_s: float = 0.0) -> None:
        self.method = method
        self.timing = timing
        self.delay_s = float(delay_s)
        if self.delay_s != 0.0:
            input_function = input_function.delayed(self.delay_s)
            whole_blood = None if whole_blood is None else whole_blood.delayed(self.delay_s)
        self.input_function = input_function
        self.weights = weights
        self.refine = refine
        self.bounds = bounds
        self.vb = _check_vb(vb)
        self.t_star = DEFAULT_T_STAR_MIN.get(method, 0.0) if t_star_min is None else float(t_star_min)
        if not (np.isfinite(threshold) and 0 <= threshold < 1):
            raise InputError(f"The area threshold must be a fraction in [0, 1), got {threshold}.")
        input_function.check_covers(timing)
        plasma_area = float(input_function.mean_over_frames(timing) @ timing.duration_s)
        self.area_weights = timing.duration_s.astype(float)
        self.min_area = threshold * abs(plasma_area)
        self.w_all = np.ones(len(timing)) if weights is None else weights
        if method == "patlak":
            self.axes = patlak.patlak_axes(timing, input_function, self.t_star, weights)
            self.fit_frames = self.axes.frames
        elif method == "logan":
            from scanai.pet.logan import logan_frames

            self.fit_frames = logan_frames(timing, self.t_star)
        else:
            if whole_blood is not None:
                whole_blood.check_covers(timing)
            blood_curve = (whole_blood or input_function).mean_over_frames(timing)
            self.blood = blood_curve
            self.setup = compartment.prepare_basis(method, input_function, timing, self.w_all, blood_curve, self.vb)
            self.fit_frames = np.arange(len(timing))
            self.device = None
            if refine:
                from scanai.core.device import choose_device, torch_available

                if torch_available():  # else the refinement runs on scipy (lm_refine.refine_without_torch)
                    self.device = choose_device(device)  # type: ignore[arg-type]

    def fit(self, rows: np.ndarray, predicted: bool = True) -> dict[str, np.ndarray]:
        """Fit TACs ``rows`` (n, T) float64; returns parameters, r2, rmse, bound_hit, skipped (and predicted)."""
        n = rows.shape[0]
        skipped = rows @ self.area_weights < self.min_area
        use = ~skipped
        result: dict[str, np.ndarray] = {name: np.zeros(n) for name in PARAMETERS[self.method]}
        result.update(r2=np.zeros(n), rmse=np.zeros(n), bound_hit=np.zeros(n, bool), skipped=skipped)
        model = np.full((n, len(self.timing)), np.nan) if predicted else None
        if use.any():
            part = self._fit_rows(rows[use] if not use.all() else rows, predicted)
            for key, values in part.items():
                if key == "predicted":
                    if model is not None:
                        model[use] = values
                else:
                    result[key][use] = values
        if model is not None:
            model[skipped] = 0.0
            result["predicted"] = model
        return result

    def fit_patlak_columns(self, block: np.ndarray) -> dict[str, np.ndarray]:
        """Fast Patlak path for maps: frames-first block (T, n) (float32 or float64), never copied whole.

        The same weighted least-squares line as :func:`scanai.pet.patlak.patlak_fit`, from weighted moments of
        the frames computed by two matrix products in the block's precision (one over all frames, one over the
        squares of the fitted frames), then finished in float64. ``SS_tot = SS_res + slope² Sxx`` and the TAC
        residual ``Σ w Cp² (y - s x - b)²`` are expanded into those moments; rmse is in activity units.
        """
        axes = self.axes
        data = np.asarray(block)
        if data.dtype not in (np.float32, np.float64):
            data = data.astype(np.float32)
        frames = axes.frames
        fitted = data[frames[0]:frames[-1] + 1] if np.all(np.diff(frames) == 1) else data[frames]
        w, x, cp = axes.weights, axes.x_min, axes.cp_mean
        sw, x_mean, dx, sxx = patlak.abscissa_moments(x, w)
        u = w * cp**2  # TAC-residual weights: (C - s x Cp - b Cp)² = Cp² (y - s x - b)²
        linear = np.zeros((5, data.shape[0]))
        linear[0] = self.area_weights
        linear[1, frames] = w / cp / sw               # -> mean y
        linear[2, frames] = w * dx / cp / sxx         # -> slope
        linear[3, frames] = u * x / cp                # -> Σ u x y
        linear[4, frames] = u / cp                    # -> Σ u y
        quadratic = np.stack([w / cp**2, u / cp**2])  # -> Σ w y², Σ u y²
        area, y_mean, slope, uxy, uy = (linear.astype(data.dtype) @ data).astype(np.float64)
        syy, uyy = (quadratic.astype(data.dtype) @ np.square(fitted)).astype(np.float64)
        skipped = area < self.min_area  # NaN anywhere in a voxel's frames makes its area NaN
        intercept = y_mean - slope * x_mean
        ss_tot = np.maximum(syy - sw * y_mean**2, 0.0)
        ss_reg = slope**2 * sxx
        ss_res = np.maximum(ss_tot - ss_reg, 0.0)
        flat = ss_tot <= 1e-24 * np.maximum(y_mean**2, 1e-30) * sw
        r2 = np.where(flat, 0.0, ss_reg / np.where(flat, 1.0, ss_reg + ss_res))
        ux, uxx, usum = (u * x).sum(), (u * x * x).sum(), u.sum()
        tac_res = (uyy - 2 * slope * uxy - 2 * intercept * uy + slope**2 * uxx + 2 * slope * intercept * ux
                   + intercept**2 * usum)
        rmse = np.sqrt(np.maximum(tac_res, 0.0) / sw)
        zero = np.where(skipped, 0.0, 1.0)
        return {"Ki": slope * zero, "V": intercept * zero, "r2": r2 * zero, "rmse": rmse * zero,
                "bound_hit": np.zeros(data.shape[1], bool), "skipped": skipped,
                "finite": np.isfinite(area) & np.isfinite(slope) & np.isfinite(intercept)}

    def _goodness(self, rows: np.ndarray, model: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frames = self.fit_frames
        w = self.w_all[frames]
        y, m = rows[:, frames], model[:, frames]
        ss_res = ((y - m) ** 2) @ w
        mean = (y @ w) / w.sum()
        ss_tot = ((y - mean[:, None]) ** 2) @ w
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), 0.0)
        return r2, np.sqrt(ss_res / w.sum())

    def _goodness_from_rss(self, rows: np.ndarray, rss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """r2 and rmse of a basis-function fit (all frames) from its weighted residual sum of squares ``rss`` (n,).

        Same values as :meth:`_goodness` of the fitted model (the fit of a vB-corrected TAC scales the residual by
        1 - vB); curves without a fit (rss inf) count as a zero model.
        """
        w = self.w_all
        mean = (rows @ w) / w.sum()
        total = (rows * rows) @ w
        ss_tot = np.maximum(total - w.sum() * mean * mean, 0.0)
        ss_res = rss * (1.0 - self.vb) ** 2 if self.vb is not None else rss
        if not np.all(np.isfinite(ss_res)):
            ss_res = np.where(np.isfinite(ss_res), ss_res, total)
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), 0.0)
        return r2, np.sqrt(ss_res / w.sum())

    def _fit_rows(self, rows: np.ndarray, predicted: bool) -> dict[str, np.ndarray]:
        method = self.method
        if method == "patlak":
            axes = self.axes
            y = rows[:, axes.frames] / axes.cp_mean
            ki, v, r2, rmse_y = patlak._fit_lines(axes.x_min, y, axes.weights)
            out = {"Ki": ki, "V": v, "r2": r2, "rmse": rmse_y * float(np.sqrt(np.mean(axes.cp_mean**2))),
                   "bound_hit": np.zeros(rows.shape[0], bool)}
            if predicted:
                model = np.full(rows.shape, np.nan)
                x_mean = self.input_function.mean_integral_over_frames(self.timing)[axes.frames]
                model[:, axes.frames] = ki[:, None] * x_mean + v[:, None] * axes.cp_mean
                out["predicted"] = model
                out["rmse"] = self._goodness(rows, np.nan_to_num(model))[1]
            return out
        if method == "logan":
            fit = logan_fit(rows, self.timing, self.input_function, self.t_star, self.weights)
            return {"VT": np.where(fit.valid, fit.vt, np.nan), "b": np.where(fit.valid, fit.intercept, np.nan),
                    "r2": fit.r2, "rmse": fit.rmse, "bound_hit": ~fit.valid, "predicted": fit.predicted}
        best = compartment.basis_fit(self.setup, rows, model=predicted and not self.refine)
        names = compartment.KINETIC_PARAMETERS[method]
        kinetic = np.stack([best[name] for name in names], axis=1)
        vb = best["vB"]
        edge = best["edge"]
        if not self.refine:
            r2, rmse = self._goodness_from_rss(rows, best["rss"])
            return self._compartment_outputs(kinetic, vb, edge, r2, rmse, best.get("model") if predicted else None)
        start = kinetic if self.vb is not None else np.concatenate([kinetic, vb[:, None]], axis=1)
        return self.refine_from(rows, start, edge, predicted)

    def refine_from(self, rows: np.ndarray, start: np.ndarray, edge: np.ndarray | None = None,
                    predicted: bool = True) -> dict[str, np.ndarray]:
        """Bounded Levenberg-Marquardt from ``start`` (n, P) (kinetic columns, then vB when fitted) on ``rows``
        (n, T); the outputs of :meth:`fit` for these rows (compartment models; rows with a non-finite start keep it
        and are flagged). ``edge`` (n,) bool: bound hits of the start (kept for those rows)."""
        method, names = self.method, compartment.KINETIC_PARAMETERS[self.method]
        start = np.array(start, dtype=float)
        edge = np.zeros(rows.shape[0], bool) if edge is None else edge.copy()
        good = np.all(np.isfinite(start), axis=1)
        if good.any():
            refined, hit = compartment.refine_lm(method, self.setup.convolver, rows[good], self.w_all, self.blood,
                                                 start[good], self.vb, self.device, bounds=self.bounds)
            start[good] = refined
            edge[good] = hit
        kinetic = start[:, :len(names)]
        vb = np.full(rows.shape[0], self.vb) if self.vb is not None else start[:, -1]
        ok = np.all(np.isfinite(kinetic), axis=1) & np.isfinite(vb)
        model = compartment.predict(method, self.setup.convolver, np.where(ok[:, None], kinetic, 0.0),
                                    np.where(ok, vb, 0.0), self.blood)
        r2, rmse = self._goodness(rows, model)
        return self._compartment_outputs(kinetic, vb, edge, r2, rmse, model if predicted else None)

    def _compartment_outputs(self, kinetic: np.ndarray, vb: np.ndarray, edge: np.ndarray, r2: np.ndarray,
                             rmse: np.ndarray, model: np.ndarray | None) -> dict[str, np.ndarray]:
        """The named outputs of a compartment fit: micro and derived parameters, vB, r2, rmse and bound_hit, plus
        ``predicted`` when ``model`` is given."""
        names = compartment.KINETIC_PARAMETERS[self.method]
        micro = {name: kinetic[:, k] for k, name in enumerate(names)}
        ok = np.all(np.isfinite(kinetic), axis=1) & np.isfinite(vb)
        out = {**micro, **compartment.derived(self.method, micro), "vB": vb, "r2": r2, "rmse": rmse,
               "bound_hit": edge | ~ok}
        if model is not None:
            out["predicted"] = np.where(ok[:, None], model, np.nan)
        return out


# ------------------------------------------------------------------------------------------ input delay
def _check_delay(delay_s: Any, method: str) -> float | tuple[float, float]:
    """A fixed delay (s) or a (low, high) search range (s); fitting needs a compartment model."""
    if delay_s is None:
        return 0.0
    if np.ndim(delay_s) == 0:
        value = float(delay_s)
        if not np.isfinite(value) or abs(value) > MAX_DELAY_S:
            raise InputError(f"The input delay must be a number of seconds within ±{MAX_DELAY_S:g}, got {delay_s}.")
        return value
    low, high = (float(v) for v in delay_s)
    if not (np.isfinite(low) and np.isfinite(high) and -MAX_DELAY_S <= low < high <= MAX_DELAY_S):
        raise InputError(f"The input delay search range must be LOW < HIGH seconds within ±{MAX_DELAY_S:g}, "
                         f"got {delay_s}.", f"For example ({DEFAULT_DELAY_RANGE_S[0]:g}, "
                                            f"{DEFAULT_DELAY_RANGE_S[1]:g}).")
    if method not in compartment.KINETIC_PARAMETERS:
        raise InputError(f"The input delay can be fitted only with a compartment model, not {method}.",
                         "Fit it with 1tcm or 2tcm on a regional curve and give that delay as a number.")
    return low, high


def _delay_cost(make: Any, rows: np.ndarray, delay: float, start: np.ndarray) -> tuple[float, np.ndarray]:
    """Summed weighted squared residual of ``rows`` refitted (warm started from ``start``, (n, P)) with the input
    delayed by ``delay`` s, and the refitted parameters (n, P)."""
    plan = make(delay)
    part = plan.refine_from(rows, start, predicted=False)
    return float(np.sum(part["rmse"] ** 2)), _start_columns(plan, part)


def _start_columns(plan: _Plan, result: dict[str, np.ndarray]) -> np.ndarray:
    """(n, P) refinement parameters (kinetic columns, then vB when fitted) from fit outputs."""
    names = compartment.KINETIC_PARAMETERS[plan.method] + (("vB",) if plan.vb is None else ())
    return np.stack([result[name] for name in names], axis=1)


def _fit_delays(make: Any, rows: np.ndarray, low: float, high: float,
                predicted: bool) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Fit one input delay shared by all ``rows`` (the arterial sampling delay is the same for every region) within
    [low, high] s: the summed weighted residual of the refined fits is scanned on a grid of :data:`DELAY_GRID_S`
    (warm starts from the neighbouring delay, outwards from the one nearest 0), then narrowed by parabolas through
    the best point and its neighbours at a grid step, a quarter and a sixteenth of it (0.25 s). Returns the outputs of
    :meth:`_Plan.fit` at that delay and the delays (n,) s (NaN for skipped rows)."""
    centre = min(max(0.0, low), high)
    first = make(centre)
    base = first.fit(rows, predicted=False)
    use = ~base["skipped"]
    if not use.any():
        return make(centre).fit(rows, predicted), np.full(rows.shape[0], np.nan)
    data = rows[use]
    grid = np.unique(np.concatenate([np.arange(centre, high, DELAY_GRID_S), [high],
                                     np.arange(centre, low, -DELAY_GRID_S), [low]]))
    costs = np.full(grid.size, np.inf)
    params: dict[int, np.ndarray] = {}
    for index in np.argsort(np.abs(grid - centre), kind="stable"):
        neighbour = index - 1 if grid[index] > centre else index + 1
        start = params.get(neighbour, _start_columns(first, {k: v[use] for k, v in base.items()}))
        costs[index], params[index] = _delay_cost(make, data, float(grid[index]), start)
    best = int(np.argmin(costs))
    delay, cost, start = float(grid[best]), float(costs[best]), params[best]
    for step in (DELAY_GRID_S, DELAY_GRID_S / 4, DELAY_GRID_S / 16):
        left, right = max(delay - step, low), min(delay + step, high)
        tried = {t: _delay_cost(make, data, t, start) for t in (left, right) if t != delay}
        c_left, c_right = (tried[t][0] if t in tried else np.inf for t in (left, right))
        curvature = c_left + c_right - 2 * cost
        if np.isfinite(curvature) and curvature > 0:
            vertex = float(np.clip(delay + 0.5 * step * (c_left - c_right) / curvature, left, right))
            if vertex not in tried and vertex != delay:
                tried[vertex] = _delay_cost(make, data, vertex, start)
        if tried:
            candidate = min(tried, key=lambda t: tried[t][0])
            if tried[candidate][0] < cost:
                delay, (cost, start) = candidate, tried[candidate]
    result = make(delay).fit(rows, predicted)  # from the basis fit, and from the warm start: the better of the two
    refined = make(delay).refine_from(data, start, predicted=predicted)
    better = refined["rmse"] <= result["rmse"][use]
    for key, values in refined.items():
        result[key][np.flatnonzero(use)[better]] = values[better]
    return result, np.where(use, delay, np.nan)


# --------------------------------------------------------------------------------------------- per TAC
def fit_tacs(tacs: np.ndarray | Sequence[float], timing: FrameTiming, input_function: InputFunction, method: str, *,
             t_star_min: float | None = None, weights: Any = None, whole_blood: InputFunction | None = None,
             vb: float | None = None, refine: bool | None = None, device: str = "auto",
             threshold: float = DEFAULT_THRESHOLD, bounds: dict[str, tuple[float, float]] | None = None,
             delay_s: float | tuple[float, float] | None = None, progress: Progress | None = None) -> TacFit:
    """Fit kinetic ``method`` to frame-averaged TACs (T,) or (N, T), in the input function's activity unit.

    t_star_min:  graphical methods only (default :data:`DEFAULT_T_STAR_MIN`); ignored by compartment models.
    weights:     None, "duration", "counts" or (T,) (module docstring).
    whole_blood: whole-blood curve for the vB term (default: the plasma curve).
    vb:          None fits vB; a number in [0, 1) fixes it.
    refine:      bound-constrained Levenberg-Marquardt refinement of the basis-function solution (torch, device
                 "auto" | "cpu" | "cuda"; without torch scipy's bounded least squares per curve); None (default): on
                 for compartment models, so regional fits reach the least-squares optimum.
    bounds:      name -> (lower, upper) replacing :data:`~scanai.pet.kinetic_parameters.BOUNDS` (K1, k2, k3, k4 in
                 their units, vB); needs the refinement.
    delay_s:     input delay, s: a number shifts the plasma and blood curves (``Cp(t - delay)``); a (low, high)
                 pair fits one delay shared by the curves within it (compartment models, refined; see
                 :func:`_fit_delays`; for one delay per curve, fit them one by one), reported in ``TacFit.delay_s``.
    Returns a :class:`TacFit` with arrays (N,) (N = 1 for one TAC).
    """
    progress = Progress.ensure(progress)
    method = _check_method(method)
    values = np.array(tacs, dtype=float)
    if values.ndim not in (1, 2):
        raise InputError(f"TACs must be one curve (T,) or N curves (N, T), got shape {values.shape}.")
    rows = values.reshape(-1, values.shape[-1])
    if rows.shape[1] != len(timing):
        raise InputError(f"The TAC has {rows.shape[1]} frames but the frame timing lists {len(timing)} frames.",
                         "Give exactly one start time and duration per frame.")
    bad = ~np.isfinite(rows)
    if bad.any():
        raise patlak._nan_message(int(bad.sum()), np.flatnonzero(bad.any(axis=0)), "TAC")
    progress(0.0, f"{method}: preparing")
    w = _frame_weights(weights, timing, rows.mean(axis=0))
    compartmental = method in compartment.KINETIC_PARAMETERS
    delay = _check_delay(delay_s, method)
    if refine is None:
        refine = compartmental
    bounds = _check_bounds(bounds, method, refine or isinstance(delay, tuple))
    refine = refine or isinstance(delay, tuple)

    def make(delay_value: float) -> _Plan:
        return _Plan(method, timing, input_function, t_star_min, w, whole_blood, vb, refine, device, threshold,
                     bounds, delay_value)

    progress(0.2, f"{method}: fitting {rows.shape[0]} curve(s)")
    if isinstance(delay, tuple):
        result, delays = _fit_delays(make, rows, *delay, predicted=True)
    else:
        result, delays = make(delay).fit(rows), np.full(rows.shape[0], delay)
    progress(1.0, f"{method}: done")
    parameters = {name: result[name] for name in PARAMETERS[method]}
    return TacFit(method, parameters, result["r2"], result["rmse"], result["bound_hit"], result["predicted"],
                  result["skipped"], delays)


def model_tacs(method: str, parameters: dict[str, np.ndarray], timing: FrameTiming, input_function: InputFunction,
               whole_blood: InputFunction | None = None) -> np.ndarray:
    """Frame-averaged model TACs (N, T) for parameter arrays (N,) (broadcast) of ``method``.

    Compartment models need their kinetic parameters (K1, k2[, k3[, k4]]) and vB (default 0). Patlak uses Ki and V
    (``Ki mean(∫Cp) + V mean(Cp)``, exact on all frames). Logan has no forward model (raises).
    """
    method = _check_method(method)
    if method == "logan":
        raise InputError("The Logan plot has no forward model of the TAC.", "Use 1tcm or 2tcm to simulate TACs.")
    if method == "patlak":
        ki, v = np.broadcast_arrays(*(np.atleast_1d(np.asarray(parameters[k], float)) for k in ("Ki", "V")))
        return (ki[:, None] * input_function.mean_integral_over_frames(timing)
                + v[:, None] * input_function.mean_over_frames(timing))
    names = compartment.KINETIC_PARAMETERS[method]
    missing = [n for n in names if n not in parameters]
    if missing:
        raise InputError(f"The {method} model needs the parameter(s) {', '.join(missing)}.")
    arrays = np.broadcast_arrays(*(np.atleast_1d(np.asarray(parameters[n], float)) for n in names),
                                 np.atleast_1d(np.asarray(parameters.get("vB", 0.0), float)))
    kinetic = np.stack(arrays[:-1], axis=1)
    vb = arrays[-1]
    if not np.all(np.isfinite(kinetic)) or np.any(kinetic < 0) or np.any((vb < 0) | (vb >= 1)):
        raise InputError("Rate constants must be finite and >= 0, and vB in [0, 1).")
    input_function.check_covers(timing)
    convolver = compartment.FrameConvolver.build(input_function, timing)
    blood = (whole_blood or input_function).mean_over_frames(timing)
    return compartment.predict(method, convolver, kinetic, vb, blood)


# ------------------------------------------------------------------------------------------- per voxel
def kinetic_maps(sequence: VolumeSequence, timing: FrameTiming, input_function: InputFunction, method: str, *,
                 mask: Volume | np.ndarray | None = None, chunk_voxels: int | None = None,
                 t_star_min: float | None = None, weights: Any = None, whole_blood: InputFunction | None = None,
                 vb: float | None = None, refine: bool = False, device: str = "auto",
                 threshold: float = DEFAULT_THRESHOLD, bounds: dict[str, tuple[float, float]] | None = None,
                 delay_s: float | tuple[float, float] | None = None, progress: Progress | None = None) -> KineticMaps:
    """Voxelwise ``method`` maps of a dynamic PET ``sequence`` (T, k, j, i) (options as :func:`fit_tacs`).

    The fast basis-function fit unless ``refine``. A fitted delay (``delay_s`` a (low, high) pair) is one global
    delay, fitted on the mean curve of the voxels considered and then used for every voxel (``KineticMaps.delay_s``).

    Voxels inside ``mask`` (default: all) are fitted in chunks of ``chunk_voxels`` (default
    :data:`DEFAULT_CHUNK_VOXELS`, x16 for the graphical methods); memory beyond the input stays about
    chunk x T x 8 bytes x a few (plus the candidate grid for compartment models). Progress is reported per chunk
    (cancel is checked there). The input frames (float32 or float64) are never copied whole nor modified.
    """
    progress = Progress.ensure(progress)
    method = _check_method(method)
    frames, spatial, inside = patlak.frames_inside(sequence, timing, mask)
    flat = frames.reshape(frames.shape[0], -1)
    everything = bool(inside.all())
    voxels = None if everything else np.flatnonzero(inside.reshape(-1))
    total = inside.size if everything else voxels.size
    if chunk_voxels is None:
        chunk_voxels = DEFAULT_CHUNK_VOXELS * (16 if method in ("patlak", "logan") else 1)
    chunk = max(int(chunk_voxels), 1)
    starts = range(0, total, chunk)

    def block(begin: int) -> tuple[np.ndarray, Any]:
        if everything:
            index = slice(begin, min(begin + chunk, total))
            return flat[:, index], index
        index = voxels[begin:begin + chunk]
        return flat[:, index], index

    def nan_error() -> InputError:
        bad_frames = [t for t in range(frames.shape[0]) if not np.all(np.isfinite(frames[t][inside]))]
        count = sum(int(np.count_nonzero(~np.isfinite(frames[t][inside]))) for t in bad_frames)
        return patlak._nan_message(count, np.asarray(bad_frames), "image voxels")

    progress(0.0, f"{method}: preparing")
    mean_tac = None
    if isinstance(weights, str) and weights == "counts":  # one pass for the mean TAC over the mask
        mean_tac = np.zeros(frames.shape[0])
        for begin in starts:
            data, _ = block(begin)
            mean_tac += np.asarray(data, dtype=float).sum(axis=1)
        mean_tac /= total
        if not np.all(np.isfinite(mean_tac)):
            raise nan_error()
    w = _frame_weights(weights, timing, mean_tac)
    delay = _check_delay(delay_s, method)
    if isinstance(delay, tuple):
        mean_curve = np.zeros(frames.shape[0])
        for begin in starts:
            mean_curve += np.asarray(block(begin)[0], dtype=float).sum(axis=1)
        if not np.all(np.isfinite(mean_curve)):
            raise nan_error()
        fitted = fit_tacs(mean_curve / total, timing, input_function, method, t_star_min=t_star_min, weights=w,
                          whole_blood=whole_blood, vb=vb, device=device, threshold=threshold, bounds=bounds,
                          delay_s=delay)
        delay = float(np.nan_to_num(fitted.delay_s[0]))
    plan = _Plan(method, timing, input_function, t_star_min, w, whole_blood, vb, refine, device, threshold,
                 _check_bounds(bounds, method, refine), delay)
    names = PARAMETERS[method]
    outputs = {name: np.zeros(inside.size, dtype=np.float32) for name in (*names, "r2", "rmse")}
    flags = np.zeros(inside.size, dtype=np.uint8)
    for number, begin in enumerate(starts):
        progress(number / len(starts), f"{method}: voxel block {number + 1}/{len(starts)}")
        data, index = block(begin)
        if method == "patlak":
            result = plan.fit_patlak_columns(data)
            if not np.all(result["finite"]):
                raise nan_error()
        else:
            rows = np.asarray(data, dtype=float).T
            if not np.all(np.isfinite(rows)):
                raise nan_error()
            result = plan.fit(rows, predicted=False)
        for name, output in outputs.items():
            values = result[name]
            output[index] = np.where(np.isfinite(values), values, 0.0)
        undefined = np.zeros(result["skipped"].shape[0], dtype=bool)
        for name in names:
            undefined |= ~np.isfinite(result[name])
        flags[index] = np.where(result["skipped"], 2, (result["bound_hit"] | undefined).astype(np.uint8))
    progress(1.0, f"{method}: done")
    geometry = sequence.geometry
    volumes = {name: Volume(outputs[name].reshape(spatial), geometry) for name in names}
    return KineticMaps(method, volumes, Volume(outputs["r2"].reshape(spatial), geometry),
                       Volume(outputs["rmse"].reshape(spatial), geometry), Volume(flags.reshape(spatial), geometry),
                       inside, delay)
