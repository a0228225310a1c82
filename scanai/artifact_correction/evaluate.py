"""Score motion-artifact correction methods side by side on simulated cases with exact truth (issue 6 acceptance).

For each :class:`~scanai.artifact_correction.simulator.SimulatedCase` and method: RMSE to the truth (HU, whole slice and
inside the heart), SSIM in the cardiac window (¶87: a case is positive when SSIM > 0.90), the relative error of
the coronary widths (FWHM vs the noise-free reconstruction of the frozen phantom) and the run time. The "centre
phase" reference is the better of the two inner input phases (the stricter comparison). ``network`` is the raw
network, ``network-guarded`` its identity-preserving guarded correction (:mod:`scanai.artifact_correction.guard`,
what `--method network` delivers when it does not fall back). ``network-shuffled`` feeds the network the same phase
volumes in a random order (¶65: the order must matter).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from scanai.artifact_correction import baselines as baselines
from scanai.artifact_correction.image_quality import rmse, ssim, vessel_fwhm_mm
from scanai.artifact_correction.reconstruction import ScanProtocol
from scanai.artifact_correction.simulator import SimulatedCase, heart_mask
from scanai.core.progress import Progress

#: The methods scored, in table order ("centre" = the better inner input phase, no correction).
METHODS = ("network", "network-guarded", "registration-fusion", "halfway", "best-phase", "mean", "centre",
           "network-shuffled")
SSIM_POSITIVE = 0.90


def _inputs(case: SimulatedCase) -> np.ndarray:
    """(N, 1, H, W) HU phase volumes of one simulated slice."""
    return np.asarray(case.inputs, dtype=np.float64)[:, None]


def method_outputs(corrector=None, seed: int = 0) -> dict[str, Callable[[SimulatedCase], np.ndarray]]:
    """name -> function (case -> (H, W) HU corrected slice) for :data:`METHODS` (network ones need ``corrector``)."""
    def pixel_spacing(case: SimulatedCase) -> tuple[float, float, float]:
        return (case.pixel_mm, case.pixel_mm, 1.0)

    def network(case: SimulatedCase, order: Sequence[int] | None = None) -> np.ndarray:
        phases = [w.phase_pct for w in case.windows]
        order = list(range(len(phases))) if order is None else list(order)
        return corrector.correct_on_grid(_inputs(case)[order], [phases[k] for k in order],
                                         (case.pixel_mm, case.pixel_mm))[0, 0]

    def guarded(case: SimulatedCase) -> np.ndarray:
        phases = [w.phase_pct for w in case.windows]
        return corrector.correct_guarded(_inputs(case), phases, (case.pixel_mm, case.pixel_mm)).output[0, 0]

    def shuffled(case: SimulatedCase) -> np.ndarray:
        order = list(range(len(case.windows)))
        rng = np.random.default_rng(seed)
        while order == sorted(order):
            order = list(rng.permutation(len(case.windows)))
        return network(case, order)

    def centre(case: SimulatedCase) -> np.ndarray:
        middle = len(case.windows) // 2
        inner = [middle - 1, middle] if len(case.windows) % 2 == 0 else [middle]
        return min((case.inputs[k] for k in inner), key=lambda image: rmse(image, case.target[0]))

    outputs = {
        "registration-fusion": lambda case: baselines.registration_fusion(_inputs(case), pixel_spacing(case))[0],
        "halfway": lambda case: baselines.halfway_warp(*_inputs(case)[[len(case.windows) // 2 - 1,
                                                                        len(case.windows) // 2]],
                                                       pixel_spacing(case))[0],
        "best-phase": lambda case: baselines.best_phase(_inputs(case))[1][0],
        "mean": lambda case: baselines.plain_mean(_inputs(case))[0],
        "centre": centre,
    }
    if corrector is not None:
        outputs = {"network": network, "network-guarded": guarded, **outputs, "network-shuffled": shuffled}
    return outputs


def coronary_width_error(image: np.ndarray, case: SimulatedCase) -> float:
    """Mean |FWHM(image) / FWHM(truth) - 1| over the case's coronaries (NaN when none can be measured)."""
    errors = []
    for point in case.coronaries:
        truth = vessel_fwhm_mm(case.target[0], point, case.pixel_mm)
        width = vessel_fwhm_mm(image, point, case.pixel_mm)
        if np.isfinite(truth) and truth > 0:
            errors.append(abs(width / truth - 1.0) if np.isfinite(width) else 1.0)
    return float(np.mean(errors)) if errors else float("nan")


def case_heart(case: SimulatedCase) -> np.ndarray:
    """(H, W) bool: the heart of ``case`` at its (first) output window on the case's own grid
    (:func:`~scanai.artifact_correction.simulator.heart_mask`)."""
    grid = ScanProtocol(pixels=case.target.shape[-1], pixel_mm=case.pixel_mm)
    return heart_mask(case.phantom, case.target_windows[0].mid_s, case.r_peaks, grid)


def score_case(image: np.ndarray, case: SimulatedCase, seconds: float) -> dict[str, float]:
    """RMSE (whole slice and heart), SSIM and coronary width error of one (H, W) output."""
    target = case.target[0]
    heart = case_heart(case)
    return {"rmse_hu": rmse(image, target), "rmse_heart_hu": rmse(image, target, heart),
            "ssim": ssim(image, target), "coronary_width_error": coronary_width_error(image, case),
            "seconds": float(seconds)}


def evaluate_methods(cases: Sequence[SimulatedCase], corrector=None, methods: Sequence[str] | None = None,
                     progress: Progress | None = None) -> dict:
    """Every method on every case: {"rows": [{case, method, metrics...}], "summary": {method: {...}}}.

    Summary per method: mean RMSE / heart RMSE / SSIM, the ¶87 accuracy rate (SSIM > 0.90), the mean ratio of
    RMSE to the centre phase's, the fraction of cases with a lower RMSE than each classical method, the median
    coronary width error and the mean seconds per case.
    """
    progress = Progress.ensure(progress)
    available = method_outputs(corrector)
    methods = [m for m in (methods or METHODS) if m in available]
    rows = []
    for number, case in progress.iterate(list(cases), "scoring methods"):
        for method in methods:
            start = time.perf_counter()
            image = available[method](case)
            rows.append({"case": number, "method": method, **score_case(image, case, time.perf_counter() - start)})
    return {"rows": rows, "summary": summarise(rows, methods)}


def summarise(rows: Sequence[dict], methods: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per-method summary of :func:`evaluate_methods` rows (see there)."""
    def values(method: str, key: str) -> np.ndarray:
        return np.array([row[key] for row in rows if row["method"] == method], dtype=np.float64)

    summary = {}
    for method in methods:
        scores = {key: float(np.mean(values(method, key))) for key in ("rmse_hu", "rmse_heart_hu", "ssim", "seconds")}
        scores["accuracy_rate_ssim_gt_0.90"] = float(np.mean(values(method, "ssim") > SSIM_POSITIVE))
        scores["coronary_width_error_median"] = float(np.nanmedian(values(method, "coronary_width_error")))
        if "centre" in methods:
            scores["rmse_ratio_to_centre"] = float(np.mean(values(method, "rmse_hu") / values("centre", "rmse_hu")))
        for other in methods:
            if other != method:
                scores[f"fraction_below_{other}"] = float(np.mean(values(method, "rmse_hu") < values(other, "rmse_hu")))
        summary[method] = scores
    return summary
