"""Input functions from blood tables, from the images, and from the Feng population model.

Four routes to the plasma curve ``Cp(t)`` of the Patlak/compartment models (patent digest §1.4):

* measured blood samples: :func:`read_blood_table` / :meth:`BloodCurves.from_columns` (plasma and, if present,
  whole blood; arterial or arterialised venous);
* image-derived (IDIF): :func:`image_derived_input`, the mean of each frame inside a blood-pool mask (aorta,
  left ventricle);
* a Feng 1993 model fitted to samples: :func:`fit_feng` (smooth curve, extrapolation, delay);
* a population curve (the Feng FDG template): :func:`population_input`, or scaled to late image-derived or
  venous frame values (PBIFNI / sPBIF): :func:`scaled_population_input`.

Times are s after injection; Feng parameters are in minutes (A1 activity/min, A2/A3 activity, λ 1/min, τ min);
integrals are activity·min. Nothing here converts activity units: whatever the table or image holds is carried.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scanai.core.errors import InputError
from scanai.core.image import Volume, VolumeSequence, mask_on_grid
from scanai.pet.input_function import (
    FENG_FDG_PARAMS,
    InputFunction,
    blood_table_columns,
    curve_from_columns,
    feng_input,
    feng_integral,
)
from scanai.pet.tables import read_pet_table
from scanai.pet.timing import FrameTiming

_FENG_KEYS = ("a1", "a2", "a3", "lambda1_per_min", "lambda2_per_min", "lambda3_per_min", "tau_min")


# ------------------------------------------------------------------------------------------- blood tables
@dataclass(frozen=True, eq=False)
class BloodCurves:
    """Blood curves of one scan: ``plasma`` (the input function) and optionally ``whole_blood`` (for the blood
    volume term ``Vb·Cb``). Each is sampled at its own times (the two may have been measured at different rows).

    ``plasma_column`` / ``whole_blood_column`` name the table columns used (empty when not from a table).
    """

    plasma: InputFunction
    whole_blood: InputFunction | None = None
    plasma_column: str = ""
    whole_blood_column: str = ""

    @classmethod
    def from_columns(cls, columns: Mapping[str, Sequence[float] | np.ndarray], unit: str = "") -> BloodCurves:
        """From ``{column name: (rows,) values}`` (e.g. a Slicer table node).

        Columns are found as in :meth:`InputFunction.from_columns` (time in s or min; a plasma column in
        preference to any whole-blood column; whole blood: ``whole_blood``, ``wb``, ``cb``, ``cbl``,
        ``cbl_dispcorr``, ``blood``, ``Cwb``, ...). When the table has only a whole-blood column it serves as the
        plasma curve and ``whole_blood`` is None. Empty (NaN) cells drop that row from that curve only.
        """
        names = blood_table_columns(columns)
        if names.plasma is None:
            others = [str(name) for name in columns if name != names.time]
            raise InputError(f"The blood table has no recognisable plasma or whole-blood column (found: "
                             f"{', '.join(others) or 'none'}).",
                             "Name the plasma column 'Cp' (or 'plasma') and the whole-blood column 'whole_blood'.")
        plasma = curve_from_columns(columns, names.time, names.time_scale, names.plasma, unit, "plasma")
        whole_blood = None
        if names.whole_blood is not None:
            whole_blood = curve_from_columns(columns, names.time, names.time_scale, names.whole_blood, unit,
                                             "whole-blood")
        return cls(plasma, whole_blood, str(names.plasma), str(names.whole_blood or ""))


def read_blood_table(path: str | Path, where: Mapping[str, str] | None = None, unit: str = "") -> BloodCurves:
    """Read a CSV/TSV blood table (comma, semicolon or tab separated, header row) into :class:`BloodCurves`.

    ``where`` keeps only rows whose text columns equal the given values, e.g. ``{"PET": "cgyu_1"}`` for a file
    holding several scans. See :meth:`BloodCurves.from_columns` for the column names understood.
    """
    return BloodCurves.from_columns(read_pet_table(path, "blood table", where), unit)


def correct_dispersion(samples: InputFunction, tau_s: float) -> InputFunction:
    """Arterial samples corrected for the dispersion of the sampling line: ``C = Cm + τ dCm/dt``.

    The line is modelled as a one-exponential dispersion kernel ``e^{-t/τ}/τ`` (Iida et al. 1986; Meyer 1989), so the
    true curve is the measured one plus τ times its slope (second-order differences on the sample times; one-sided
    at the first and last samples). ``tau_s``
    (s, >= 0; 0 returns the samples) is the line's time constant, measured for the set-up (typically 2-10 s). The
    derivative amplifies noise, and values it would make negative are set to 0. Returns a new curve.
    """
    tau = float(tau_s)
    if not (np.isfinite(tau) and 0.0 <= tau <= 60.0):
        raise InputError(f"The dispersion time constant must be 0 to 60 s, got {tau_s!r}.",
                         "Give the sampling line's time constant in seconds (typically 2-10 s).")
    if tau == 0.0:
        return samples
    slope = np.gradient(samples.activity, samples.t_s)
    return InputFunction(samples.t_s, np.maximum(samples.activity + tau * slope, 0.0), samples.unit)


# ---------------------------------------------------------------------------------------- image-derived
def mask_frame_means(sequence: VolumeSequence, mask: Volume | np.ndarray, label: int | None = None) -> np.ndarray:
    """(T,) mean activity of each frame of ``sequence`` (T, k, j, i) inside ``mask`` (k, j, i).

    ``mask``: bool/label array on the sequence grid, or a :class:`Volume` (its geometry must match); voxels
    ``!= 0`` are inside, or ``== label`` when given. Raises :class:`GeometryError` for a mask on another grid,
    :class:`InputError` for an empty mask or NaN/inf values inside the mask (naming the frames).
    """
    inside = mask_on_grid(mask, sequence.frames.shape[1:], sequence.geometry, "blood-pool mask", label)
    values = np.asarray(sequence.frames)[:, inside].astype(float)  # (T, n): only the masked voxels are copied
    bad = np.flatnonzero(~np.all(np.isfinite(values), axis=1))
    if bad.size:
        frames = ", ".join(str(int(i) + 1) for i in bad[:8])
        raise InputError(f"The PET frame(s) {frames} have missing (NaN) or infinite values inside the blood-pool "
                         "mask.", "Fix those frames, or draw the mask away from the corrupted voxels.")
    return values.mean(axis=1)


def image_derived_input(sequence: VolumeSequence, timing: FrameTiming, mask: Volume | np.ndarray, unit: str = "",
                        label: int | None = None) -> InputFunction:
    """Image-derived input function (IDIF): the mean of each frame inside a blood-pool ``mask``.

    sequence: (T, k, j, i) frames; timing: their T frames; mask: see :func:`mask_frame_means`.
    Returns the curve sampled at ``(0 s, 0)`` (injection) and at the T frame mid-times, with the frame means as
    values (use :func:`mask_frame_means` for the raw (T,) means, e.g. for :func:`scaled_population_input`).

    Approximations: a frame mean is the *average* over the frame, placed at its mid-time; where the curve bends
    within a frame (the bolus peak in frames of tens of seconds) the piecewise-linear curve through the mid-times
    misses the peak and its frame averages differ slightly from the measured ones. It is a **whole-blood** curve
    (no plasma/blood ratio, metabolite, partial-volume or spill-over correction), and before the first frame it
    is a linear ramp from the injection, which is only right when the first frame starts early.
    """
    if len(sequence) != len(timing):
        raise InputError(f"The PET sequence has {len(sequence)} frames but the frame timing lists {len(timing)}.",
                         "Use the frame timing of this sequence.")
    means = mask_frame_means(sequence, mask, label)
    t = timing.mid_s
    if t[0] > 0:
        t, means = np.concatenate([[0.0], t]), np.concatenate([[0.0], means])
    if t.size < 3:
        raise InputError(f"An image-derived input function needs at least 2 frames, got {len(timing)}.",
                         "Use a dynamic sequence.")
    return InputFunction(t, means, unit)


# ------------------------------------------------------------------------------------------ Feng fit
def _feng_vector(x: np.ndarray) -> dict[str, float]:
    return {key: float(value) for key, value in zip(_FENG_KEYS, x, strict=True)}


def _canonical(x: np.ndarray) -> np.ndarray:
    """Swap the (A2, λ2) and (A3, λ3) terms (the model is symmetric in them) so that λ2 is the slower one."""
    x = np.array(x, dtype=float)
    if x[4] < x[5]:
        x[[1, 2]] = x[[2, 1]]
        x[[4, 5]] = x[[5, 4]]
    return x


@dataclass(frozen=True, eq=False)
class FengFit:
    """A Feng 1993 model fitted to blood samples.

    params: usable as ``feng_input(t_s, params)`` (keys of :data:`FENG_FDG_PARAMS`; A in the samples' units).
    rmse: root mean square of model - samples (activity units); relative_rmse: rmse / sample peak.
    n_samples, unit: of the samples fitted; success/message: from the optimiser.
    """

    params: dict[str, float]
    rmse: float
    relative_rmse: float
    n_samples: int
    unit: str = ""
    success: bool = True
    message: str = ""
    residuals: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def value_at(self, t_s: np.ndarray | Sequence[float] | float) -> np.ndarray:
        """Model ``Cp`` at times ``t_s`` (any shape, s)."""
        return feng_input(t_s, self.params)

    def integral_from_injection(self, t_s: np.ndarray | Sequence[float] | float) -> np.ndarray:
        """Analytic ``∫_0^t Cp`` of the model at ``t_s`` (s), activity·min."""
        return feng_integral(t_s, self.params)

    def curve(self, end_s: float, step_s: float = 1.0) -> InputFunction:
        """The fitted model sampled every ``step_s`` s from the injection to ``end_s`` (extrapolated beyond the
        last sample)."""
        return InputFunction.feng(end_s=end_s, step_s=step_s, params=self.params, unit=self.unit)


def _interval_weights(t: np.ndarray) -> np.ndarray:
    """Each sample's share of the time axis (half the gap to each neighbour), normalised to mean 1."""
    edges = np.concatenate([[t[0]], 0.5 * (t[1:] + t[:-1]), [t[-1]]])
    width = np.diff(edges)
    width = np.maximum(width, 1e-3 * max(float(np.median(width)), 1e-9))
    return width / width.mean()


def fit_feng(samples: InputFunction, fit_delay: bool = True, tau_min: float = 0.0,
             weights: str | np.ndarray | Sequence[float] = "interval") -> FengFit:
    """Fit the Feng model (A1, A2, A3 > 0, λ1..λ3 < 0, delay τ in [0, 2] min) to blood ``samples``.

    Least squares (scipy ``least_squares``, trust-region with bounds) from several starts: the FDG template
    scaled to the samples in least squares, shifted so its peak meets the sampled peak (or the arrival), with the
    fast exponent as is, halved or doubled; the best is kept. ``weights``: "interval" (default; each sample counts
    for the time span it covers, so that dense early sampling does not swamp sparse late samples, which carry
    most of the area), "uniform", or (N,) positive weights. With ``fit_delay=False`` τ is fixed at ``tau_min``.
    The slow terms are reported with λ2 the slower (closer to 0) exponent, as in :data:`FENG_FDG_PARAMS`.
    """
    from scipy.optimize import least_squares

    t_min = samples.t_s / 60.0
    y = samples.activity.astype(float)
    n = y.size
    peak = float(np.max(y))
    if not peak > 0:
        raise InputError("The blood samples are never positive, so no input-function model can be fitted.",
                         "Check the activity column and its units.")
    if isinstance(weights, str):
        if weights == "interval":
            w = _interval_weights(t_min)
        elif weights == "uniform":
            w = np.ones(n)
        else:
            raise InputError(f"Unknown weighting '{weights}' for the Feng fit.",
                             "Use 'interval', 'uniform' or one weight per sample.")
    else:
        w = np.asarray(weights, dtype=float).reshape(-1)
        if w.size != n or not np.all(np.isfinite(w)) or np.any(w < 0) or not w.any():
            raise InputError(f"The Feng fit needs {n} finite weights >= 0 (one per sample).")
    sqrt_w = np.sqrt(w)
    if not (0.0 <= tau_min <= 2.0):
        raise InputError(f"The input-function delay must be within 0-2 min, got {tau_min:g}.")

    template = np.array([FENG_FDG_PARAMS[k] for k in _FENG_KEYS])
    lower = np.array([0.0, 0.0, 0.0, -200.0, -50.0, -50.0, 0.0])
    upper = np.array([np.inf, np.inf, np.inf, -1e-6, -1e-6, -1e-6, 2.0])
    free = np.ones(7, dtype=bool)
    free[6] = fit_delay

    def full(x_free: np.ndarray, tau: float) -> np.ndarray:
        x = np.empty(7)
        x[free] = x_free
        if not fit_delay:
            x[6] = tau
        return x

    def residual(x_free: np.ndarray, tau: float) -> np.ndarray:
        return sqrt_w * (feng_input(samples.t_s, _feng_vector(full(x_free, tau))) - y)

    # Start delays: align the template peak (0.29 min after tau) with the sampled peak, or its start with arrival.
    t_peak = float(t_min[int(np.argmax(y))])
    arrived = t_min[y > 0.05 * peak]
    taus = sorted({float(np.clip(t_peak - 0.29, 0, 2)), float(np.clip(arrived[0] - 0.05, 0, 2))} if fit_delay
                  else {float(tau_min)})
    best = None
    for tau0 in taus:
        for fast in (1.0, 0.5, 2.0):
            x0 = template.copy()
            x0[3] *= fast
            x0[0] *= fast  # keep the peak height of the ramp term comparable
            x0[6] = tau0
            shape = feng_input(samples.t_s, _feng_vector(x0))
            scale = float(np.sum(w * shape * y) / max(np.sum(w * shape * shape), 1e-300))
            if not scale > 0:
                scale = peak / max(float(shape.max()), 1e-300)
            x0[:3] *= scale
            x0 = np.clip(x0, lower + 1e-9, upper - 1e-9)
            result = least_squares(residual, x0[free], bounds=(lower[free], upper[free]), args=(tau_min,),
                                   x_scale="jac", method="trf", max_nfev=2000)
            if best is None or result.cost < best.cost:
                best = result
    result = best
    x = _canonical(full(result.x, tau_min))
    params = _feng_vector(x)
    diff = feng_input(samples.t_s, params) - y
    rmse = float(np.sqrt(np.mean(diff**2)))
    return FengFit(params, rmse, rmse / peak, n, samples.unit, bool(result.success), str(result.message), diff)


# ---------------------------------------------------------------------------------- population curves
def population_input(end_s: float, step_s: float = 1.0, scale: float = 1.0,
                     params: Mapping[str, float] | None = None, unit: str = "") -> InputFunction:
    """A population input function: ``scale`` x the Feng model (default the FDG template, µCi/mL) sampled every
    ``step_s`` s from 0 to ``end_s``."""
    if not (np.isfinite(scale) and scale > 0):
        raise InputError(f"The population input-function scale must be a positive number, got {scale}.")
    curve = InputFunction.feng(end_s=end_s, step_s=step_s, params=params, unit=unit)
    return InputFunction(curve.t_s, scale * curve.activity, unit)


def _template_frame_means(timing: FrameTiming, params: Mapping[str, float] | None) -> np.ndarray:
    """(T,) exact frame averages of the Feng model (activity units)."""
    area = feng_integral(timing.end_s, params) - feng_integral(timing.start_s, params)  # activity*min
    return area * 60.0 / timing.duration_s


def _chosen_frames(timing: FrameTiming, frames: Sequence[int] | np.ndarray | None,
                   window_min: tuple[float, float] | None) -> np.ndarray:
    if frames is not None and window_min is not None:
        raise InputError("Give either the frames or a time window for scaling the population input, not both.")
    if frames is not None:
        chosen = np.unique(np.asarray(frames, dtype=int).reshape(-1))
        if chosen.size and (chosen.min() < 0 or chosen.max() >= len(timing)):
            raise InputError(f"Frame indices {chosen.tolist()} are outside 0-{len(timing) - 1}.",
                             "Give 0-based frame indices of this sequence.")
    elif window_min is not None:
        start, end = (float(v) for v in window_min)
        tolerance = 1.0  # s: rounding of frame times
        chosen = np.flatnonzero((timing.start_s >= start * 60 - tolerance) & (timing.end_s <= end * 60 + tolerance))
    else:
        chosen = np.arange(len(timing))
    if chosen.size == 0:
        where = f"in {window_min[0]:g}-{window_min[1]:g} min" if window_min is not None else "selected"
        raise InputError(f"No frame lies {where}, so the population input function cannot be scaled "
                         f"(the frames run from {timing.start_s[0] / 60:.1f} to {timing.end_s[-1] / 60:.1f} min).",
                         "Choose a window that contains whole frames (e.g. the last 30 min of the scan).")
    return chosen


def population_scale(timing: FrameTiming, frame_means: Sequence[float] | np.ndarray,
                     frames: Sequence[int] | np.ndarray | None = None, window_min: tuple[float, float] | None = None,
                     params: Mapping[str, float] | None = None) -> float:
    """Least-squares scale ``s`` such that ``s x`` the template's frame averages match ``frame_means`` on the
    chosen frames: ``s = Σ P̄_j m_j / Σ P̄_j²``.

    frame_means: (T,) blood values per frame (image-derived blood-pool means, or venous samples averaged per
    frame); only the chosen ones must be finite. frames: 0-based indices; or window_min (start, end) in min
    selects the frames lying wholly inside; neither: all frames.
    """
    means = np.asarray(frame_means, dtype=float).reshape(-1)
    if means.size != len(timing):
        raise InputError(f"{means.size} frame values were given for {len(timing)} frames.",
                         "Give one blood value per frame (e.g. from mask_frame_means).")
    chosen = _chosen_frames(timing, frames, window_min)
    m = means[chosen]
    bad = chosen[~np.isfinite(m)]
    if bad.size:
        raise InputError(f"The blood value of frame(s) {', '.join(str(int(i) + 1) for i in bad)} is missing (NaN).",
                         "Choose other frames or fix the blood-pool values.")
    template = _template_frame_means(timing, params)[chosen]
    scale = float(np.dot(template, m) / np.dot(template, template))
    if not scale > 0:
        raise InputError("The blood values in the chosen frames are not positive, so the population input "
                         "function cannot be scaled to them.", "Check the blood-pool mask and the frame values.")
    return scale


def scaled_population_input(timing: FrameTiming, frame_means: Sequence[float] | np.ndarray,
                            frames: Sequence[int] | np.ndarray | None = None,
                            window_min: tuple[float, float] | None = None,
                            params: Mapping[str, float] | None = None, end_s: float | None = None, unit: str = "",
                            step_s: float = 1.0) -> InputFunction:
    """Scaled population input function (PBIFNI / sPBIF): the Feng template (``params``, default the FDG one)
    times the :func:`population_scale` fitted to the late frame values, sampled every ``step_s`` s from the
    injection to ``end_s`` (default: the end of the last frame).

    The early peak comes entirely from the template: only its height changes, not its shape or delay.
    """
    scale = population_scale(timing, frame_means, frames, window_min, params)
    end = float(timing.end_s[-1]) if end_s is None else float(end_s)
    end = float(np.ceil(end / step_s) * step_s)
    return population_input(end, step_s, scale, params, unit)
