"""Reference-region models on a dynamic PET study, for ``scanai pet --method srtm ... --reference MASK``.

The maps and regional fits of :mod:`scanai.pet.reference_models` are returned as the blood-input analyses' own
:class:`~scanai.pet.analysis.ParametricResult` and :class:`~scanai.pet.models.TacFit`, so the CLI writes them,
their statistics and their regional curves the same way.
"""

from __future__ import annotations

import numpy as np

from scanai.core.errors import InputError
from scanai.core.progress import Progress
from scanai.pet.analysis import ParametricResult, region_tacs
from scanai.pet.models import TacFit
from scanai.pet.reference_models import (
    REFERENCE_UNITS,
    ReferenceFit,
    ReferenceMaps,
    fit_reference,
    reference_maps,
)

#: Display names of the reference-region models (``--method`` keys).
REFERENCE_LABELS: dict[str, str] = {
    "srtm": "SRTM", "srtm2": "SRTM2", "mrtm": "MRTM", "mrtm2": "MRTM2",
    "logan_ref": "Logan (reference region)", "patlak_ref": "Patlak (reference region)",
}


def reference_curve(sequence, inside: np.ndarray) -> np.ndarray:
    """(T,) mean curve of the reference region ``inside`` ((k, j, i) bool on the sequence grid)."""
    curves = region_tacs(sequence, {"reference": inside})
    if "reference" not in curves:
        raise InputError("The reference-region mask is empty on the PET grid.",
                         "Give a mask with the reference region's voxels (non-zero) on the PET grid.")
    return curves["reference"]


def as_parametric_result(maps: ReferenceMaps) -> ParametricResult:
    """The maps of a reference-region model as a :class:`ParametricResult` (quality: RMSE and bound_hit)."""
    return ParametricResult(method=maps.model, maps=dict(maps.parameters),
                            quality={"RMSE": maps.rmse, "bound_hit": maps.bound_hit},
                            units={name: REFERENCE_UNITS.get(name, "") for name in maps.parameters}, mask=maps.mask)


def as_tac_fit(fit: ReferenceFit, tacs: np.ndarray) -> TacFit:
    """Regional fits ``fit`` of ``tacs`` (N, T) as a :class:`TacFit`; R² over the fitted frames where the model
    predicts a curve (SRTM, SRTM2, MRTM, MRTM2), NaN for the plots (Logan, Patlak)."""
    predicted = np.asarray(fit.predicted, dtype=float).reshape(tacs.shape)
    frames = np.asarray(fit.frames, dtype=int)
    measured, model = tacs[:, frames], predicted[:, frames]
    residual = np.sum((measured - model) ** 2, axis=1)
    spread = np.sum((measured - measured.mean(axis=1, keepdims=True)) ** 2, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(spread > 0, 1.0 - residual / spread, np.nan)
    n = len(tacs)
    parameters = {name: np.asarray(values, dtype=float).reshape(n) for name, values in fit.parameters.items()}
    return TacFit(method=fit.model, parameters=parameters,
                  r2=r2, rmse=np.asarray(fit.rmse, dtype=float).reshape(n),
                  bound_hit=np.asarray(fit.bound_hit, dtype=bool).reshape(n), predicted=predicted,
                  skipped=np.zeros(n, dtype=bool), delay_s=np.zeros(n))


def reference_map_result(sequence, reference: np.ndarray, timing, model: str, mask: np.ndarray | None = None,
                         weights=None, t_star_min: float | None = None, k2_ref_per_min: float | None = None,
                         progress: Progress | None = None) -> ParametricResult:
    """Voxel maps of a reference-region ``model`` as a :class:`ParametricResult` (the job ``pet.reference_maps``
    the module runs in a worker process); arguments as :func:`scanai.pet.reference_models.reference_maps`."""
    return as_parametric_result(reference_maps(sequence, reference, timing, model, mask=mask, weights=weights,
                                               t_star_min=t_star_min, k2_ref_per_min=k2_ref_per_min,
                                               progress=progress))


def regional_reference_fits(sequence, reference: np.ndarray, timing, model: str, regions: dict[str, np.ndarray],
                            weights=None, t_star_min: float | None = None, k2_ref_per_min: float | None = None
                            ) -> tuple[list[str], np.ndarray, TacFit] | None:
    """The refined fit of each region's mean curve: (region names, (R, T) curves, fits), None without a region."""
    curves = region_tacs(sequence, regions)
    if not curves:
        return None
    tacs = np.stack(list(curves.values()))
    fit = fit_reference(tacs, reference, timing, model, weights=weights, t_star_min=t_star_min,
                        k2_ref_per_min=k2_ref_per_min)
    return list(curves), tacs, as_tac_fit(fit, tacs)


def reference_analysis(study, model: str, reference: np.ndarray, mask: np.ndarray | None,
                       regions: dict[str, np.ndarray], weights, t_star_min: float | None,
                       k2_ref_per_min: float | None, progress: Progress | None = None
                       ) -> tuple[ParametricResult, tuple[list[str], np.ndarray, TacFit] | None]:
    """Voxel maps of ``model`` over ``mask`` (None: every voxel) and, with ``regions`` (name -> (k, j, i) bool),
    the refined fit of each region's mean curve. ``reference``: (T,) reference curve, the image's unit.

    Returns the maps and ``(region names, (R, T) curves, fits)`` or None without regions."""
    progress = Progress.ensure(progress)
    result = reference_map_result(study.sequence, reference, study.timing, model, mask, weights, t_star_min,
                                  k2_ref_per_min, progress.sub(0.0, 0.9))
    region_fit = regional_reference_fits(study.sequence, reference, study.timing, model, regions, weights,
                                         t_star_min, k2_ref_per_min)
    progress(1.0, "Reference-region fits done")
    return result, region_fit
