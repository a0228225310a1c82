"""A reference cardiac contraction curve over the R-R interval, shared by the CT motion simulator (which moves its
phantom with it) and the ECG-based motion amplitude of phase selection (¶57), which has no image to look at.

The curve c(phase) is a periodic cubic spline through keyframes (phase fraction, contraction): 0 at the R peak
(end-diastole), 1 at end-systole (35 %), a slow fall through diastasis (65–80 %) back to 0 at 90 % (digest §7.3).
Its rate |dc/dphase| is smallest in diastasis (about 70–85 %) and around end-systole, as in clinical cardiac CT.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: (phase fraction, contraction) keyframes of one R-R interval (the last equals the first: periodic).
CONTRACTION_KEYFRAMES = ((0.0, 0.0), (0.35, 1.0), (0.55, 0.3), (0.70, 0.15), (0.80, 0.12), (0.90, 0.0), (1.0, 0.0))


@lru_cache(maxsize=1)
def _spline():
    from scipy.interpolate import CubicSpline

    phases, values = np.array(CONTRACTION_KEYFRAMES, dtype=np.float64).T
    return CubicSpline(phases, values, bc_type="periodic")


def contraction(phase_fraction: np.ndarray | float) -> np.ndarray:
    """c(phase): contraction in [about -0.05, 1.05] at phase fractions (any shape; wrapped into [0, 1))."""
    return _spline()(np.mod(np.asarray(phase_fraction, dtype=np.float64), 1.0))


def contraction_rate(phase_fraction: np.ndarray | float) -> np.ndarray:
    """dc/dphase (per R-R interval) at phase fractions (any shape; wrapped into [0, 1))."""
    return _spline()(np.mod(np.asarray(phase_fraction, dtype=np.float64), 1.0), 1)
