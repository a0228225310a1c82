"""Compartment models (1TCM, irreversible and reversible 2TCM, with blood volume) fitted voxelwise.

Model (rate constants in 1/min, times in min inside this module)::

    C_T(t)   = c1 e^{-a1 t} ⊗ Cp + c2 e^{-a2 t} ⊗ Cp                 (sum of exponentials, "macro" form)
    C_PET(t) = (1 - vB) C_T(t) + vB Cb(t)                             (Cb whole blood; plasma when not given)

    1TCM:            c1 = K1, a1 = k2                                  (c2 = 0)
    2TCM, k4 = 0:    a1 = 0, a2 = k2 + k3, c1 = K1 k3 / (k2 + k3) = Ki, c2 = K1 k2 / (k2 + k3)
    2TCM:            a1,2 = (s ∓ sqrt(s² - 4 k2 k4)) / 2, s = k2 + k3 + k4,
                     c1 = K1 (k3 + k4 - a1) / (a2 - a1), c2 = K1 (a2 - k3 - k4) / (a2 - a1)

Back from macro to micro parameters (any c1, c2 >= 0 with a1 < a2 gives k's >= 0)::

    K1 = c1 + c2,  k3 + k4 = (c1 a2 + c2 a1) / K1,  k2 = a1 + a2 - (k3 + k4),  k4 = a1 a2 / k2,  k3 = (k3 + k4) - k4

Every prediction is a **frame average**, computed exactly for the piecewise-linear input function (see
:class:`FrameConvolver`): no fine time grid, no mid-frame sampling.

Fast fit (basis functions): for a grid of exponents the frame-averaged basis curves are precomputed once, with
Gram-Schmidt tables of every pair (blood direction projected out first when vB is fitted), so that a voxel's
least-squares residual for every candidate (a1, a2) follows from its products with the single basis curves in a
few operations. The candidate with the least residual among physically valid solutions (c >= 0, 0 <= vB < 1, or
the face vB = 0) is found best-first: the unconstrained residual bounds a candidate from below, so only the best
few candidates of a voxel are solved for their coefficients (branch and bound; exhaustive when that does not
settle). The search runs coarse (float32, every 4th grid exponent) then fine (float64, around the coarse optimum).
Refinement: batched, bound-constrained (projected, active-set) Levenberg-Marquardt in torch (float64, CPU or CUDA)
on the exact model, starting from the basis-function solution, with an exact Jacobian (complex-step derivative of
the frame-averaged convolution); it reaches optima that lie on a bound (vB = 0, k4 = 0, a user bound).

Where each part lives (all re-exported here): :mod:`scanai.pet.frame_convolution` (exact frame averages),
:mod:`scanai.pet.kinetic_parameters` (names, bounds, micro <-> macro, Ki and VT), :mod:`scanai.pet.basis_fit` (the
fast fit) and :mod:`scanai.pet.lm_refine` (the refinement); the model curves (:func:`predict`) are here.
"""

from __future__ import annotations

from scanai.pet.basis_fit import (  # noqa: F401  (re-exported)
    GRID_1D_PER_MIN,
    GRID_PAIRS_PER_MIN,
    BasisSetup,
    basis_fit,
    prepare_basis,
)
from scanai.pet.frame_convolution import FrameConvolver  # noqa: F401  (re-exported)
from scanai.pet.kinetic_parameters import (  # noqa: F401  (re-exported)
    BOUNDS,
    KINETIC_PARAMETERS,
    check_method,
    derived,
    macro_from_micro,
    micro_from_macro,
    predict,
)
from scanai.pet.lm_refine import refine_lm  # noqa: F401  (re-exported)
