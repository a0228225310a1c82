"""One entry point for parametric PET analysis, shared by the CLI and the Slicer module.

:func:`compute_maps` runs any method (the kinetic models of :mod:`scanai.pet.models` or the short-scan network
of :mod:`scanai.pet.network`) on a dynamic PET sequence and returns named parameter maps with their units;
:func:`region_statistics`, :func:`region_tacs` and :func:`graphical_axes` give what a clinician looks at next:
per-region statistics, regional curves with model fits, and the Patlak or Logan plot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from scanai.core.errors import GeometryError, InputError
from scanai.core.image import Volume, VolumeSequence, mask_on_grid
from scanai.core.progress import Progress
from scanai.pet.input_function import InputFunction
from scanai.pet.timing import FrameTiming

#: Method key -> label shown to users.
METHOD_LABELS: dict[str, str] = {
    "patlak": "Patlak",
    "logan": "Logan",
    "1tcm": "1TCM",
    "2tcm_irreversible": "2TCM irreversible",
    "2tcm": "2TCM",
    "network": "Network (short scan)",
}
#: Methods validated on simulated phantoms only (no real short-scan PET with a full-scan reference here): never the
#: default, and labelled experimental wherever their maps are shown (validated on real data, or withheld).
EXPERIMENTAL_METHODS = ("network",)
EXPERIMENTAL_NOTE = ("experimental: the short-scan Ki network is validated on simulated phantoms only, not on real "
                     "PET; compare with Patlak on the full scan")
#: Network window default (min after injection): the patent's worked example, frames 30-40 and 40-50 min.
DEFAULT_WINDOW_MIN = (30.0, 50.0)
#: Blood-pool frames with mid-time from this late on (min; blood and tracer mixed) scale the population input.
POPULATION_SCALING_FROM_MIN = 20.0


def method_key(method: str) -> str:
    """The method key for a key or a label (case-insensitive), or an :class:`InputError` listing the choices."""
    wanted = method.strip().lower()
    for key, label in METHOD_LABELS.items():
        if wanted in (key, label.lower()):
            return key
    raise InputError(f"Unknown kinetic method '{method}'.", f"Choose one of: {', '.join(METHOD_LABELS.values())}.")


@dataclass(frozen=True, eq=False)
class ParametricResult:
    """Parameter maps of one analysis, all on the input sequence's grid (0 outside the mask).

    method:  method key (see :data:`METHOD_LABELS`).
    maps:    parameter name (e.g. "Ki", "K1", "VT") -> map, in ``units[name]``.
    quality: "R2", "RMSE" (activity units) and "bound_hit" (1 where a parameter sits on a bound), when available.
    units:   parameter name -> unit text.
    mask:    (k, j, i) bool, the voxels analysed.
    delay_s: the input delay used for every voxel, s (given or fitted; 0 for none).
    """

    method: str
    maps: dict[str, Volume]
    quality: dict[str, Volume]
    units: dict[str, str]
    mask: np.ndarray
    delay_s: float = 0.0


def in_frame_unit(frames_unit: str, plasma: InputFunction,
                  whole_blood: InputFunction | None = None) -> tuple[InputFunction, InputFunction | None]:
    """The blood curves converted to the frames' activity unit (e.g. kBq/mL -> Bq/mL).

    :class:`InputError` when one side is SUV and the other an activity concentration; unknown units are taken
    as equal (the user vouches for them).
    """
    from scanai.pet.units import check_compatible_units

    scale = check_compatible_units(frames_unit, plasma.unit)
    if scale == 1.0:
        return plasma, whole_blood
    unit = frames_unit or plasma.unit

    def converted(curve: InputFunction | None) -> InputFunction | None:
        return None if curve is None else InputFunction(curve.t_s, curve.activity * scale, unit)

    return converted(plasma), converted(whole_blood)


def blood_pool_input(sequence: VolumeSequence, timing: FrameTiming, pool: Volume | np.ndarray,
                     population: bool = False, unit: str = "") -> InputFunction:
    """Input function from a blood-pool mask (k, j, i) on the sequence grid.

    Without ``population``: the pool's frame means themselves (image-derived input). With it: the Feng population
    curve scaled to the pool's frames from :data:`POPULATION_SCALING_FROM_MIN` on (the early peak is taken from
    the population shape, which a late or slow acquisition cannot measure).
    """
    from scanai.pet.blood import image_derived_input, mask_frame_means, scaled_population_input

    if not population:
        return image_derived_input(sequence, timing, pool, unit=unit)
    late = np.flatnonzero(timing.mid_min >= POPULATION_SCALING_FROM_MIN)
    return scaled_population_input(timing, mask_frame_means(sequence, pool), frames=late, unit=unit)


def feng_fitted_input(samples: InputFunction, timing: FrameTiming) -> InputFunction:
    """The Feng model fitted to blood ``samples``, sampled up to the later of the last sample and the last frame."""
    from scanai.pet.blood import fit_feng

    return fit_feng(samples).curve(max(samples.end_s, float(timing.end_s[-1])))


def compute_maps(sequence: VolumeSequence, timing: FrameTiming, plasma: InputFunction, method: str, *,
                 whole_blood: InputFunction | None = None, mask: Volume | np.ndarray | None = None,
                 t_star_min: float | None = None, weights: np.ndarray | str | None = None, refine: bool = False,
                 vb: float | None = None, window_min: tuple[float, float] = DEFAULT_WINDOW_MIN, device: str = "auto",
                 bounds: dict[str, tuple[float, float]] | None = None,
                 delay_s: float | tuple[float, float] | None = None,
                 progress: Progress | None = None) -> ParametricResult:
    """Parametric maps of ``sequence`` (T, k, j, i) with frame ``timing`` and plasma input ``plasma``.

    method:      a key or label of :data:`METHOD_LABELS`.
    whole_blood: blood curve for the vB term of compartment models (default: plasma).
    t_star_min:  start of the linear phase for Patlak / Logan (None: the method's default).
    weights:     frame weights of the fits: None, "duration", "counts" or (T,) numbers.
    refine:      Levenberg-Marquardt refinement of compartment-model fits.
    vb:          fixed blood volume fraction, or None to fit it.
    window_min:  (start, end) of the late window used by the network, min after injection.
    bounds:      name -> (lower, upper) of the refined compartment parameters (needs ``refine``).
    delay_s:     input delay, s, or a (low, high) range to fit one on the mean curve of the mask (compartment
                 models; see :func:`scanai.pet.models.kinetic_maps`).
    """
    key = method_key(method)
    inside = mask_on_grid(mask, sequence.frames.shape[1:], sequence.geometry)
    if key == "network":
        from scanai.pet.network import predict_parametric

        result = predict_parametric(sequence, timing, plasma, mask=inside, window_min=window_min, device=device,
                                    progress=progress)
        maps = {"Ki": result.ki}
        if getattr(result, "v", None) is not None:
            maps["V"] = result.v
        return ParametricResult(key, maps, {}, {"Ki": "1/min", "V": "mL/mL"}, inside)

    from scanai.pet.models import UNITS, kinetic_maps

    options = {"t_star_min": t_star_min, "weights": weights, "whole_blood": whole_blood, "vb": vb, "refine": refine,
               "device": device, "bounds": bounds, "delay_s": delay_s}
    result = kinetic_maps(sequence, timing, plasma, key, mask=inside, progress=progress, **options)
    quality = {"R2": result.r2, "RMSE": result.rmse, "bound_hit": result.bound_hit}
    return ParametricResult(key, dict(result.parameters), quality,
                            {name: UNITS.get(name, "") for name in result.parameters}, result.mask, result.delay_s)


# ------------------------------------------------------------------------------------------- fit checks
#: The map a fit is judged by, per method (the one a clinician reads first).
MAIN_PARAMETER: dict[str, str] = {"patlak": "Ki", "logan": "VT", "1tcm": "VT", "2tcm_irreversible": "Ki",
                                  "2tcm": "VT", "network": "Ki"}
#: A fit is suspicious when more than this fraction of its fitted voxels sit on a fit bound ...
BOUND_FRACTION = 0.5
#: ... or when its main map is zero or undefined in at least this fraction of them ...
EMPTY_FRACTION = 0.9
#: ... or when the input function's typical value is more than this many times the image's, or less than its
#: inverse (real studies give 0.1 to 15: plasma against the hottest tenth of the tissue, over the scan).
MAGNITUDE_RATIO = 100.0
#: A magnitude ratio within this factor of the ratio of two units is named as their likely mix-up.
MIX_UP_TOLERANCE = 5.0


def bound_voxels(result: ParametricResult) -> np.ndarray | None:
    """(k, j, i) bool: the voxels whose fit sits on a bound (``bound_hit`` = 1), or None without that map."""
    flags = result.quality.get("bound_hit")
    return None if flags is None else result.mask & (np.asarray(flags.array) == 1)


def fitted_voxels(result: ParametricResult) -> np.ndarray:
    """(k, j, i) bool: the voxels of ``result.mask`` that were fitted, i.e. not skipped for an activity below the
    area threshold (``bound_hit`` = 2, their parameters are 0 without having been fitted)."""
    flags = result.quality.get("bound_hit")
    if flags is None:
        return result.mask.copy()
    return result.mask & (np.asarray(flags.array) != 2)


def map_medians(result: ParametricResult) -> dict[str, float]:
    """Median of each map over the fitted voxels (:func:`fitted_voxels`), NaN when no voxel was fitted."""
    fitted = fitted_voxels(result)
    return {name: float(np.nanmedian(volume.array[fitted])) if fitted.any() and np.isfinite(volume.array[fitted]).any()
            else float("nan") for name, volume in result.maps.items()}


def magnitude_ratio(sequence: VolumeSequence, timing: FrameTiming, plasma: InputFunction, voxels: np.ndarray) -> float:
    """Typical input-function value over typical image value (a number, NaN when the image part is not positive).

    Input function: its duration-weighted mean over the frames. Image: the 90th percentile, over ``voxels``
    ((k, j, i) bool), of each voxel's duration-weighted mean over the frames (the tissue, not the air).
    """
    if not voxels.any():
        return float("nan")
    weights = timing.duration_s / timing.duration_s.sum()
    means = np.tensordot(weights, np.asarray(sequence.frames)[:, voxels].astype(float), axes=1)
    image = float(np.nanpercentile(means, 90))
    blood = float(np.sum(weights * plasma.mean_over_frames(timing)))
    return blood / image if image > 0 and np.isfinite(blood) else float("nan")


def _unit_mix_up(ratio: float) -> str:
    """Words for the unit mix-up a magnitude ratio (input / image) looks like, e.g. "an input function in Bq/mL
    against an image in kBq/mL (x1000)"; "" when it looks like none (within a factor 10 of 1, or farther than
    :data:`MIX_UP_TOLERANCE` from every ratio of two units: tissue and plasma differ by themselves)."""
    from scanai.pet.units import CONCENTRATION_UNITS

    if not np.isfinite(ratio) or ratio <= 0 or abs(np.log10(ratio)) < 1.0:
        return ""
    pairs = [(image / blood, f"an input function in {b} against an image in {i}")
             for i, image in CONCENTRATION_UNITS.items() for b, blood in CONCENTRATION_UNITS.items() if i != b]
    factor, words = min(pairs, key=lambda pair: abs(np.log10(pair[0] / ratio)))
    if abs(np.log10(factor / ratio)) > np.log10(MIX_UP_TOLERANCE):
        return ""
    shown = f"x{factor:g}" if factor >= 1 else f"x1/{1 / factor:g}"
    return f"{words} ({shown})"


def _symptom(result: ParametricResult, fitted: np.ndarray, ratio: float) -> str:
    """What looks wrong with a fit (the first of the checks of :func:`fit_warning` that fails), or ""."""
    inside, count = int(result.mask.sum()), int(fitted.sum())
    label = METHOD_LABELS.get(result.method, result.method).split(" (")[0]
    if count == 0:
        return (f"none of the {inside} voxels inside the mask was fitted (their activity is below 1 % of the input "
                f"function's), so every {label} value is 0")
    flags = result.quality.get("bound_hit")
    on_bound = int(np.count_nonzero(np.asarray(flags.array)[fitted] == 1)) if flags is not None else 0
    if on_bound > BOUND_FRACTION * count:
        return f"{100 * on_bound / count:.0f} % of the {count} fitted voxels sit on a fit bound"
    main = MAIN_PARAMETER.get(result.method, next(iter(result.maps)))
    values = result.maps[main].array[fitted] if main in result.maps else np.ones(count)
    empty = int(np.count_nonzero(~np.isfinite(values) | (values == 0)))
    if empty >= EMPTY_FRACTION * count:
        return f"the {main} map is zero or undefined in {100 * empty / count:.0f} % of the {count} fitted voxels"
    if np.isfinite(ratio) and not (1 / MAGNITUDE_RATIO <= ratio <= MAGNITUDE_RATIO):
        return f"the input function's values are {ratio:.3g} times the image's, far from the 0.1 to 15 of real studies"
    return ""


def fit_warning(result: ParametricResult, sequence: VolumeSequence, timing: FrameTiming, plasma: InputFunction,
                image_unit: str = "", input_unit: str | None = None) -> str:
    """One paragraph warning that a finished fit looks wrong, with its likely causes; "" when it looks sound.

    Checks: no voxel of the mask fitted; more than :data:`BOUND_FRACTION` of the fitted voxels on a fit bound; the
    main map (:data:`MAIN_PARAMETER`) zero or undefined in :data:`EMPTY_FRACTION` of them; the typical input
    function value (``plasma``, as fitted, in the image's unit) more than :data:`MAGNITUDE_RATIO` times the image's
    or less than its inverse. ``image_unit`` / ``input_unit``: the units as the user gave them ("" unknown; the
    input's defaults to ``plasma.unit``), named in the warning with the ratio of the typical magnitudes.
    """
    fitted = fitted_voxels(result)
    ratio = magnitude_ratio(sequence, timing, plasma, fitted if fitted.any() else result.mask)
    symptom = _symptom(result, fitted, ratio)
    if not symptom:
        return ""
    input_unit = plasma.unit if input_unit is None else input_unit
    stated = input_unit or ("no stated unit (taken as the image's)" if image_unit else "an unknown unit")
    units = f"the image is in {image_unit or 'an unknown unit'} and the input function in {stated}"
    magnitude = f"; the input function's typical value is {ratio:.3g} times the image's" if np.isfinite(ratio) else ""
    mix_up = _unit_mix_up(ratio)
    mix_up = f", which suggests {mix_up}" if mix_up else ""
    label = METHOD_LABELS.get(result.method, result.method).split(" (")[0]
    return (f"The {label} fit looks wrong: {symptom}. Likely causes: (1) a unit mismatch between the image and the "
            f"input function ({units}{magnitude}{mix_up}): state the unit of each; (2) a wrong input function "
            "(another scan's, whole blood instead of plasma, times in minutes read as seconds); (3) wrong frame times "
            "(minutes given as seconds, or times not counted from the injection).")


# ------------------------------------------------------------------------------------------------- regions
def region_tacs(sequence: VolumeSequence, regions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Mean time-activity curve (T,) of each region (name -> (k, j, i) bool on the sequence grid)."""
    curves = {}
    for name, inside in regions.items():
        inside = np.asarray(inside, dtype=bool)
        if inside.shape != sequence.frames.shape[1:]:
            raise GeometryError(f"The region '{name}' has size {inside.shape}, the PET frames "
                                f"{sequence.frames.shape[1:]}.", "Use regions drawn on the PET grid.")
        if not inside.any():
            continue
        curves[name] = sequence.frames[:, inside].astype(float).mean(axis=1)
    return curves


def region_statistics(maps: Mapping[str, Volume], regions: Mapping[str, np.ndarray],
                      fitted: np.ndarray | None = None, on_bound: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One row per non-empty region: name, voxel count, fitted voxel count, voxels on a fit bound, volume (mL), and
    mean / SD / median of each map over the region's fitted voxels (``fitted`` (k, j, i) bool, e.g.
    :func:`fitted_voxels`; default all: voxels skipped below the area threshold hold 0 without having been fitted and
    must not count). ``on_bound`` (k, j, i) bool: voxels whose fit sits on a bound (``bound_hit`` = 1). NaN
    statistics where a region has no fitted voxel.

    Returns columns ``{"region": (R,) str, "voxels", "fitted_voxels", "bound_hit_voxels", "volume_ml",
    "<map>_mean", "<map>_sd", "<map>_median"}`` (``bound_hit_voxels`` only with ``on_bound``).
    """
    names = [name for name, inside in regions.items() if np.any(inside)]
    columns: dict[str, list] = {"region": names, "voxels": [], "fitted_voxels": [], "volume_ml": []}
    if on_bound is not None:
        columns["bound_hit_voxels"] = [int(np.count_nonzero(on_bound & np.asarray(regions[n], bool))) for n in names]
    voxel_ml = float(np.prod(next(iter(maps.values())).geometry.spacing_mm)) / 1000.0 if maps else 0.0
    for name in names:
        inside = np.asarray(regions[name], dtype=bool)
        used = inside if fitted is None else inside & fitted
        columns["voxels"].append(int(inside.sum()))
        columns["fitted_voxels"].append(int(used.sum()))
        columns["volume_ml"].append(inside.sum() * voxel_ml)
        for map_name, volume in maps.items():
            values = volume.array[used].astype(float)
            empty = values.size == 0
            for statistic, value in (("mean", np.nan if empty else values.mean()),
                                     ("sd", values.std(ddof=1) if values.size > 1 else (np.nan if empty else 0.0)),
                                     ("median", np.nan if empty else np.median(values))):
                columns.setdefault(f"{map_name}_{statistic}", []).append(float(value))
    return {name: np.asarray(values) for name, values in columns.items()}


def graphical_axes(method: str, tacs: np.ndarray, timing: FrameTiming,
                   plasma: InputFunction) -> tuple[np.ndarray, np.ndarray, str, str]:
    """The Patlak (irreversible methods) or Logan (reversible methods) plot of curves ``tacs`` (N, T).

    Returns ``(x (N, T), y (N, T), x label, y label)``; entries where the plot is undefined are NaN.
    """
    key = method_key(method)
    tacs = np.atleast_2d(np.asarray(tacs, dtype=float))
    if key in ("logan", "1tcm", "2tcm"):
        from scanai.pet.logan import tissue_running_integral

        with np.errstate(divide="ignore", invalid="ignore"):
            safe = np.where(tacs > 0, tacs, np.nan)
            x = plasma.mean_integral_over_frames(timing) / safe
            y = tissue_running_integral(tacs, timing) / safe
        return x, y, "∫Cp / C (min)", "∫C / C (min)"
    cp = plasma.mean_over_frames(timing)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(cp > 0, plasma.mean_integral_over_frames(timing) / cp, np.nan)
        y = np.where(cp > 0, tacs / cp, np.nan)
    return np.broadcast_to(x, tacs.shape).copy(), y, "∫Cp / Cp (min)", "C / Cp"
