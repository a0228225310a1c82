"""Reference-region kinetic models, per curve (:func:`fit_reference`) or per voxel (:func:`reference_maps`).

No blood sampling: a reference region without specific binding (e.g. cerebellum) stands in for the input.
Models (keys of :data:`REFERENCE_MODELS`), their parameters (:data:`REFERENCE_PARAMETERS`) and defaults:

* ``srtm``  — simplified reference tissue model (Lammertsma & Hume 1996) by basis functions (Gunn et al. 1997),
  refined per curve to the exact least-squares optimum (``refine``, default for curves, off for maps); all frames.
  See :mod:`scanai.pet.reference_basis`.
* ``srtm2`` — SRTM with the reference efflux k2' fixed (Wu & Carson 2002): given, or the median k2' = k2/R1 of a
  first SRTM pass over the same curves (voxels).
* ``mrtm``  — multilinear reference tissue model (Ichise et al. 2003, MRTM/MRTM1):
  ``C_T(t) = γ1 ∫C_R + γ2 ∫C_T + γ3 C_R(t)``, frames with mid-time >= t* (default 0: all);
  ``DVR = -γ1/γ2``, ``R1 = γ3``, ``k2' = γ1/γ3``, ``k2a = -γ2``.
* ``mrtm2`` — MRTM with k2' fixed (Ichise 2003): ``C_T = γ1 (∫C_R + C_R/k2') + γ2 ∫C_T``, ``R1 = γ1/k2'``; k2'
  given or the median of a first MRTM pass.
* ``logan_ref`` — Logan plot with a reference region (Logan et al. 1996), t* default 30 min:
  ``∫C_T/C_T = DVR (∫C_R + C_R/k2')/C_T + b``; without k2' (default) the ``C_R/k2'`` term is left out.
* ``patlak_ref`` — Patlak plot with a reference region (irreversible tracers), t* default 20 min:
  ``C_T/C_R = Kref ∫C_R/C_R + V``; ``Kref = Ki/V_ND`` of the reference (1/min). No BPnd.

BPnd = DVR - 1 = k2/k2a - 1 (k2a the apparent efflux of the target, k2 = R1 k2').

Conventions. Times in s inside, rate constants in 1/min. Curves are frame means; every model is compared with
frame means. Integrals run from the injection over the step function of the frame means (gaps and the time before
the first frame bridged linearly, as :func:`scanai.pet.logan.tissue_running_integral`); the SRTM convolution uses
the reference linear between its frame mid-times (:func:`scanai.pet.reference_basis.reference_input`).
Weights: None (equal), ``"duration"``, or (T,) numbers >= 0; a zero weight means the frame is not fitted (it
still counts in the integrals).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scanai.core.errors import InputError
from scanai.core.image import Volume, VolumeSequence
from scanai.core.progress import Progress
from scanai.pet import reference_basis as rb
from scanai.pet.logan import tissue_running_integral
from scanai.pet.patlak import frames_inside
from scanai.pet.timing import FrameTiming

REFERENCE_MODELS = ("srtm", "srtm2", "mrtm", "mrtm2", "logan_ref", "patlak_ref")
REFERENCE_PARAMETERS: dict[str, tuple[str, ...]] = {
    "srtm": ("BPnd", "DVR", "R1", "k2", "k2a", "k2prime"),
    "srtm2": ("BPnd", "DVR", "R1", "k2", "k2a"),
    "mrtm": ("BPnd", "DVR", "R1", "k2", "k2a", "k2prime"),
    "mrtm2": ("BPnd", "DVR", "R1", "k2", "k2a"),
    "logan_ref": ("BPnd", "DVR", "b"),
    "patlak_ref": ("Kref", "V"),
}
REFERENCE_UNITS: dict[str, str] = {"BPnd": "1", "DVR": "1", "R1": "1", "k2": "1/min", "k2a": "1/min",
                                   "k2prime": "1/min", "b": "min", "Kref": "1/min", "V": "1"}
#: Default t* (min): graphical models only; SRTM/SRTM2 always fit every frame with a positive weight.
REFERENCE_T_STAR_MIN: dict[str, float] = {"mrtm": 0.0, "mrtm2": 0.0, "logan_ref": 30.0, "patlak_ref": 20.0}
#: Curves (voxels) fitted at once (bounds memory to about chunk x (T + grid) x 8 bytes).
DEFAULT_CHUNK_VOXELS = 65536
_FIRST_PASS = {"srtm2": "srtm", "mrtm2": "mrtm"}


@dataclass(frozen=True, eq=False)
class ReferenceFit:
    """Per-curve results; arrays have the curves' leading shape (``()`` for one curve, ``(N,)`` for N).

    parameters:     name -> values (:data:`REFERENCE_PARAMETERS`, units :data:`REFERENCE_UNITS`); NaN where the
                    fit is undefined (flat or non-positive curve, degenerate regression).
    rmse:           weighted RMS residual of the fitted curve on the fitted frames, activity units (Logan/Patlak:
                    of the plot ordinate).
    bound_hit:      True where k2a sits on the end of the basis grid, or the fit is undefined.
    predicted:      (..., T) model frame means (SRTM, SRTM2, MRTM, MRTM2; NaN for the plots and unfitted frames).
    frames:         (F,) 0-based indices of the fitted frames.
    k2_ref_per_min: the k2' used (SRTM2, MRTM2, Logan with k2'), else None.
    """

    model: str
    parameters: dict[str, np.ndarray]
    rmse: np.ndarray
    bound_hit: np.ndarray
    predicted: np.ndarray
    frames: np.ndarray
    k2_ref_per_min: float | None


@dataclass(frozen=True, eq=False)
class ReferenceMaps:
    """Voxelwise results on the sequence's grid (0 outside the mask and where undefined).

    bound_hit: uint8 volume, 0 ok, 1 k2a on the end of the grid or the fit undefined. mask: (k, j, i) bool.
    """

    model: str
    parameters: dict[str, Volume]
    rmse: Volume
    bound_hit: Volume
    mask: np.ndarray
    k2_ref_per_min: float | None


# --------------------------------------------------------------------------------------------- checks
def _check_model(model: str) -> str:
    key = str(model).strip().lower()
    if key not in REFERENCE_MODELS:
        raise InputError(f"Unknown reference-region model '{model}'.", f"Choose one of: {', '.join(REFERENCE_MODELS)}.")
    return key


def reference_weights(weights: Any, timing: FrameTiming) -> np.ndarray:
    """(T,) frame weights >= 0 with mean 1 over the weighted frames: None (equal), "duration", or T numbers >= 0
    (0 = frame not fitted)."""
    if weights is None:
        return np.ones(len(timing))
    if isinstance(weights, str):
        if weights != "duration":
            raise InputError(f"Unknown weighting '{weights}'.", "Use 'duration', None, or one weight >= 0 per frame.")
        w = timing.duration_s.astype(float)
    else:
        w = np.asarray(weights, dtype=float).reshape(-1)
        if w.size != len(timing):
            raise InputError(f"{w.size} weights were given for {len(timing)} frames.", "Give one weight per frame.")
        if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
            raise InputError("The frame weights must be numbers >= 0, at least one of them positive.",
                             "Give one weight per frame (0 leaves a frame out of the fit).")
    return w * (np.count_nonzero(w) / w.sum())


def _check_curve(values: np.ndarray, timing: FrameTiming, what: str) -> None:
    if values.shape[-1] != len(timing):
        raise InputError(f"The {what} has {values.shape[-1]} frames but the frame timing lists {len(timing)}.",
                         "Give exactly one start time and duration per frame.")
    if not np.all(np.isfinite(values)):
        raise InputError(f"The {what} has missing values (NaN or infinite).",
                         "Fix or leave out those frames (weight 0 does not remove a NaN) or mask those voxels.")


def _check_reference(reference: Any, timing: FrameTiming) -> np.ndarray:
    ref = np.asarray(reference, dtype=float)
    if ref.ndim != 1:
        raise InputError(f"The reference region curve must be one curve (T,), got shape {ref.shape}.",
                         "Average the reference region's voxels per frame.")
    _check_curve(ref, timing, "reference region curve")
    if not np.any(ref > 0):
        raise InputError("The reference region curve is zero or negative in every frame.",
                         "Check the reference segment: it must lie inside the field of view with activity.")
    return ref


def _check_k2_ref(value: float | None, model: str) -> float | None:
    if value is None:
        return None
    if model not in ("srtm2", "mrtm2", "logan_ref"):
        raise InputError(f"k2' is not a parameter one can fix in {model}.",
                         "Fix k2' only with srtm2, mrtm2 or logan_ref.")
    k2 = float(value)
    if not (np.isfinite(k2) and k2 > 0):
        raise InputError(f"The reference efflux rate k2' must be a positive number in 1/min, got {value}.")
    return k2


# --------------------------------------------------------------------------------------------- plan
def _weighted_lstsq(design: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of y (n, F) on regressors design (F, P) (shared) or (n, F, P): (coef (n, P), ok (n,)).

    Columns are scaled to unit weighted norm before the normal equations are solved (one batched solve);
    ``ok`` is False where the regressors are (nearly) collinear or not finite (coefficients NaN).
    """
    a = design * np.sqrt(w)[:, None]
    b = y * np.sqrt(w)
    scale = np.sqrt(np.einsum("...fp,...fp->...p", a, a))
    scale = np.where(scale > 0, scale, 1.0)
    a = a / scale[..., None, :]
    gram = np.einsum("...fp,...fq->...pq", a, a)
    rhs = np.einsum("...fp,nf->np", a, b) if a.ndim == 2 else np.einsum("nfp,nf->np", a, b)
    gram = np.broadcast_to(gram, (y.shape[0],) + gram.shape[-2:])
    ok = np.all(np.isfinite(gram), axis=(1, 2)) & np.all(np.isfinite(rhs), axis=1)
    ok &= np.linalg.det(np.where(ok[:, None, None], gram, np.eye(gram.shape[-1]))) > 1e-10
    safe = np.where(ok[:, None, None], gram, np.eye(gram.shape[-1]))
    coef = np.linalg.solve(safe, np.where(ok[:, None], rhs, 0.0)[..., None])[..., 0] / scale
    return np.where(ok[:, None], coef, np.nan), ok


class _Plan:
    """Everything computed once per (model, timing, reference, weights, t*, k2'); :meth:`fit` handles one block."""

    def __init__(self, model: str, reference: np.ndarray, timing: FrameTiming, weights: np.ndarray,
                 t_star_min: float | None, k2_ref: float | None, refine: bool,
                 grid: np.ndarray = rb.K2A_GRID_PER_MIN) -> None:
        self.model, self.reference, self.timing, self.refine = model, reference, timing, refine
        self.k2_ref = k2_ref
        if model in ("srtm", "srtm2"):
            t_star = 0.0
        else:
            t_star = REFERENCE_T_STAR_MIN[model] if t_star_min is None else float(t_star_min)
            if not (np.isfinite(t_star) and t_star >= 0):
                raise InputError(f"The start time t* must be a number of minutes >= 0, got {t_star_min}.")
        fitted = (weights > 0) & (timing.mid_min >= t_star)
        self.frames = np.flatnonzero(fitted)
        needed = {"srtm": 4, "srtm2": 3, "mrtm": 4, "mrtm2": 3, "logan_ref": 3, "patlak_ref": 3}[model]
        if self.frames.size < needed:
            raise InputError(f"Only {self.frames.size} frame(s) have a positive weight and a mid-time after t* = "
                             f"{t_star:g} min; the {model} fit needs at least {needed}.",
                             "Choose an earlier t* or give more frames a positive weight.")
        self.w = weights[self.frames]
        self.sqrt_w = np.sqrt(np.where(fitted, weights, 0.0))
        self.ref_integral = tissue_running_integral(reference[None], timing)[0]
        if model in ("srtm", "srtm2"):
            self.convolver = rb.build_convolver(reference, timing)
            self.tables = rb.basis_tables(self.convolver, reference, self.sqrt_w, k2_ref, grid)
        if model == "patlak_ref" and np.any(reference[self.frames] <= 0):
            raise InputError("The reference region curve is zero or negative in a frame after t*, so the Patlak "
                             "plot is undefined there.", "Check the reference segment, or choose a later t*.")

    def fit(self, rows: np.ndarray, dtype: type = np.float64, predicted: bool = True) -> dict[str, np.ndarray]:
        """Fit TACs ``rows`` (n, T); returns the parameters, rmse, bound_hit (and predicted (n, T)), float64.

        ``dtype``: precision of the SRTM/SRTM2 grid search (float32 for maps); ``rows`` are float64 otherwise.
        """
        if self.model in ("srtm", "srtm2"):
            out = self._fit_basis(rows, dtype, predicted)
        elif self.model in ("mrtm", "mrtm2"):
            out = self._fit_mrtm(rows)
        else:
            out = self._fit_plot(rows)
        names = REFERENCE_PARAMETERS[self.model]
        energy = out.pop("energy", None)
        if energy is None:
            energy = np.einsum("nf,f->n", rows[:, self.frames] ** 2, self.w)
        flat = energy <= 0
        bad = flat | ~np.all(np.isfinite(np.stack([out[name] for name in names])), axis=0)
        for name in names:
            out[name] = np.where(bad, np.nan, out[name])
        out["bound_hit"] = out["bound_hit"] | bad
        if not predicted:
            out.pop("predicted", None)
        elif "predicted" not in out:
            out["predicted"] = np.full(rows.shape, np.nan)
        return out

    def _fit_basis(self, rows: np.ndarray, dtype: type, predicted: bool) -> dict[str, np.ndarray]:
        parameters, index = rb.grid_fit(self.tables, rows.T.astype(dtype, copy=False))
        edge = (index == 0) | (index == self.tables.grid.size - 1)
        if self.refine:
            parameters, edge = rb.refine_k2a(self.tables, self.convolver, rows.astype(np.float64, copy=False), index)
        out = dict(parameters)
        out["DVR"] = out["BPnd"] + 1.0
        if self.model == "srtm":
            with np.errstate(divide="ignore", invalid="ignore"):
                out["k2prime"] = out["k2"] / out["R1"]
        out["rmse"] = np.sqrt(out.pop("rss") / self.w.sum())
        out["bound_hit"] = edge
        if predicted:
            out["predicted"] = rb.predict(self.convolver, self.reference, parameters)
        return out

    def _fit_mrtm(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        f = self.frames
        tissue_integral = tissue_running_integral(rows, self.timing)
        ref, ref_int = self.reference[f], self.ref_integral[f]
        n = rows.shape[0]
        if self.model == "mrtm":
            first = np.broadcast_to(ref_int, (n, f.size))
            last = np.broadcast_to(ref, (n, f.size))
            design = np.stack([first, tissue_integral[:, f], last], axis=2)
        else:
            combined = np.broadcast_to(ref_int + ref / self.k2_ref, (n, f.size))
            design = np.stack([combined, tissue_integral[:, f]], axis=2)
        gamma, _ = _weighted_lstsq(design, rows[:, f], self.w)
        with np.errstate(divide="ignore", invalid="ignore"):
            dvr = -gamma[:, 0] / gamma[:, 1]
            if self.model == "mrtm":
                r1, k2_ref = gamma[:, 2], gamma[:, 0] / gamma[:, 2]
            else:
                r1, k2_ref = gamma[:, 0] / self.k2_ref, np.full(n, self.k2_ref)
        fitted = np.einsum("nfp,np->nf", design, gamma)
        predicted = np.full(rows.shape, np.nan)
        predicted[:, f] = fitted
        rmse = np.sqrt(np.einsum("nf,f->n", (rows[:, f] - fitted) ** 2, self.w) / self.w.sum())
        out = {"BPnd": dvr - 1.0, "DVR": dvr, "R1": r1, "k2": r1 * k2_ref, "k2a": -gamma[:, 1], "rmse": rmse,
               "bound_hit": np.zeros(n, bool), "predicted": predicted}
        if self.model == "mrtm":
            out["k2prime"] = k2_ref
        return out

    def _fit_plot(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        f = self.frames
        n = rows.shape[0]
        c = rows[:, f]
        if self.model == "patlak_ref":
            ref = self.reference[f]
            x, y = self.ref_integral[f] / ref, c / ref
            design = np.stack([x, np.ones(f.size)], axis=1)
        else:
            positive = np.all(c > 0, axis=1)
            safe = np.where(positive[:, None], c, 1.0)
            numerator = self.ref_integral[f] + (0.0 if self.k2_ref is None else self.reference[f] / self.k2_ref)
            x = np.broadcast_to(numerator, (n, f.size)) / safe
            y = tissue_running_integral(rows, self.timing)[:, f] / safe
            design = np.stack([x, np.ones((n, f.size))], axis=2)
        coef, ok = _weighted_lstsq(design, y, self.w)
        fitted = np.einsum("fp,np->nf", design, coef) if design.ndim == 2 else np.einsum("nfp,np->nf", design, coef)
        rmse = np.sqrt(np.einsum("nf,f->n", (y - fitted) ** 2, self.w) / self.w.sum())
        if self.model == "patlak_ref":
            return {"Kref": coef[:, 0], "V": coef[:, 1], "rmse": rmse, "bound_hit": ~ok}
        coef = np.where(positive[:, None], coef, np.nan)
        return {"BPnd": coef[:, 0] - 1.0, "DVR": coef[:, 0], "b": coef[:, 1], "rmse": rmse,
                "bound_hit": ~(ok & positive)}


# ----------------------------------------------------------------------------------------------- API
def _run(plan: _Plan, rows_of: Callable[[int, int], np.ndarray], count: int, chunk: int,
         progress: Progress, dtype: type = np.float64, predicted: bool = False) -> dict[str, np.ndarray]:
    """Fit ``count`` curves, ``rows_of(begin, end)`` (n, T) float64 at a time, ``chunk`` per block."""
    names = REFERENCE_PARAMETERS[plan.model]
    out = {name: np.empty(count) for name in names + ("rmse",)}
    out["bound_hit"] = np.empty(count, dtype=bool)
    if predicted:
        out["predicted"] = np.empty((count, len(plan.timing)))
    chunk = max(int(chunk), 1)
    blocks = range(0, count, chunk)
    for number, begin in enumerate(blocks):
        progress(number / max(len(blocks), 1), f"{plan.model} fit, block {number + 1}/{len(blocks)}")
        end = min(begin + chunk, count)
        for key, values in plan.fit(rows_of(begin, end), dtype, predicted).items():
            if key in out:
                out[key][begin:end] = values
    progress(1.0, f"{plan.model} fit: done")
    return out


def _k2_ref_first_pass(model: str, reference: np.ndarray, timing: FrameTiming, weights: np.ndarray,
                       t_star_min: float | None, rows_of: Callable[[int, int], np.ndarray], count: int, chunk: int,
                       progress: Progress, dtype: type, refine: bool) -> float:
    """Median k2' (1/min) of the SRTM (for SRTM2) or MRTM (for MRTM2) fits with R1 > 0, k2' > 0, not on a bound."""
    first = _FIRST_PASS[model]
    plan = _Plan(first, reference, timing, weights, t_star_min, None, refine)
    out = _run(plan, rows_of, count, chunk, progress, dtype)
    k2_ref = out["k2prime"]
    good = ~out["bound_hit"] & (out["R1"] > 0) & np.isfinite(k2_ref) & (k2_ref > 0)
    if not good.any():
        raise InputError(f"k2' could not be estimated by a first {first.upper()} pass: no curve gave a valid fit.",
                         "Give k2' (k2_ref_per_min), e.g. from an SRTM fit of a high-binding region.")
    return float(np.median(k2_ref[good]))


def fit_reference(tacs: np.ndarray | Sequence[float], reference: np.ndarray | Sequence[float], timing: FrameTiming,
                  model: str = "srtm", weights: Any = None, t_star_min: float | None = None,
                  k2_ref_per_min: float | None = None, refine: bool = True,
                  chunk_voxels: int = DEFAULT_CHUNK_VOXELS, progress: Progress | None = None) -> ReferenceFit:
    """Reference-region model fit of target curves ``tacs`` (T,), (N, T) or any (..., T) voxel array.

    reference:      (T,) reference region frame means, same unit as ``tacs``.
    timing:         the T frames (s after injection).
    model:          one of :data:`REFERENCE_MODELS` (module docstring).
    weights:        None, "duration" or (T,) >= 0 (0 = frame not fitted).
    t_star_min:     graphical/multilinear models only (default :data:`REFERENCE_T_STAR_MIN`); ignored by SRTM/SRTM2.
    k2_ref_per_min: k2' for SRTM2/MRTM2 (None: median of a first SRTM/MRTM pass over ``tacs``) and Logan (None:
                    the C_R/k2' term left out); an error for the other models.
    refine:         SRTM/SRTM2: refine k2a between grid points to the exact optimum (else the basis grid value;
                    for many voxels prefer :func:`reference_maps`, which keeps the grid value by default).
    """
    model = _check_model(model)
    values = np.asarray(tacs, dtype=float)
    if values.ndim == 0:
        raise InputError("The target curve must have one value per frame.")
    _check_curve(values, timing, "target curve")
    ref = _check_reference(reference, timing)
    w = reference_weights(weights, timing)
    k2_ref = _check_k2_ref(k2_ref_per_min, model)
    progress = Progress.ensure(progress)
    rows = values.reshape(-1, len(timing))

    def rows_of(begin: int, end: int) -> np.ndarray:
        return rows[begin:end]

    if model in _FIRST_PASS and k2_ref is None:
        k2_ref = _k2_ref_first_pass(model, ref, timing, w, t_star_min, rows_of, rows.shape[0], chunk_voxels,
                                    progress.sub(0.0, 0.5), np.float64, refine)
        progress = progress.sub(0.5, 1.0)
    plan = _Plan(model, ref, timing, w, t_star_min, k2_ref, refine)
    out = _run(plan, rows_of, rows.shape[0], chunk_voxels, progress, predicted=True)
    shape = values.shape[:-1]
    parameters = {name: out[name].reshape(shape) for name in REFERENCE_PARAMETERS[model]}
    return ReferenceFit(model, parameters, out["rmse"].reshape(shape), out["bound_hit"].reshape(shape),
                        out["predicted"].reshape(values.shape), plan.frames, k2_ref)


def reference_maps(sequence: VolumeSequence, reference: np.ndarray | Sequence[float], timing: FrameTiming,
                   model: str = "srtm", mask: Volume | np.ndarray | None = None, weights: Any = None,
                   t_star_min: float | None = None, k2_ref_per_min: float | None = None, refine: bool = False,
                   chunk_voxels: int = DEFAULT_CHUNK_VOXELS, progress: Progress | None = None) -> ReferenceMaps:
    """Voxelwise maps of a reference-region model for a dynamic PET ``sequence`` (T, k, j, i).

    The options are those of :func:`fit_reference`; ``mask`` (k, j, i) limits the fit (others are 0). SRTM/SRTM2
    use the basis grid (Gunn 1997) in float32 unless ``refine``; SRTM2/MRTM2 without k2' take the median of a
    first SRTM/MRTM pass over the mask's voxels. Voxels are fitted in chunks of ``chunk_voxels``; the outputs keep
    the sequence's geometry; the input is not modified.
    """
    model = _check_model(model)
    progress = Progress.ensure(progress)
    frames, spatial, inside = frames_inside(sequence, timing, mask)
    ref = _check_reference(reference, timing)
    w = reference_weights(weights, timing)
    k2_ref = _check_k2_ref(k2_ref_per_min, model)
    flat = frames.reshape(frames.shape[0], -1)
    voxels = np.flatnonzero(inside.reshape(-1))
    contiguous = voxels.size == inside.size
    dtype = np.float64 if refine else np.float32

    basis_grid = model in ("srtm", "srtm2") and not refine

    def rows_of(begin: int, end: int) -> np.ndarray:
        index = voxels[begin:end]
        block = flat[:, begin:end] if contiguous else flat[:, index]  # (T, n), a view when contiguous
        block = block.astype(np.float32 if basis_grid else np.float64, copy=False).T
        _check_curve(block, timing, "image (inside the mask)")
        return block

    if model in _FIRST_PASS and k2_ref is None:
        k2_ref = _k2_ref_first_pass(model, ref, timing, w, t_star_min, rows_of, voxels.size, chunk_voxels,
                                    progress.sub(0.0, 0.5), dtype, refine)
        progress = progress.sub(0.5, 1.0)
    plan = _Plan(model, ref, timing, w, t_star_min, k2_ref, refine)
    out = _run(plan, rows_of, voxels.size, chunk_voxels, progress, dtype)
    volumes = {}
    for name in REFERENCE_PARAMETERS[model] + ("rmse",):
        image = np.zeros(inside.size, dtype=np.float32)
        values = out[name]
        image[voxels] = np.where(np.isfinite(values), values, 0.0)
        volumes[name] = Volume(image.reshape(spatial), sequence.geometry)
    hit = np.zeros(inside.size, dtype=np.uint8)
    hit[voxels] = out["bound_hit"]
    rmse = volumes.pop("rmse")
    return ReferenceMaps(model, volumes, rmse, Volume(hit.reshape(spatial), sequence.geometry), inside, k2_ref)
