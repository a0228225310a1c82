"""Cardiac and general motion over a cine: the multi-pair network, classical registration, field utilities,
strain, segmentation propagation and phantoms (seed 004). Multi-phase CT motion-artifact correction (seed 000) is
its sibling package :mod:`scanai.artifact_correction`.

Motion fields follow one convention everywhere (see :mod:`scanai.motion.registration`): the pull-back field
``u_t`` on the reference grid, RAS mm, with ``warped_t(x) = frame_t(x + u_t(x))`` and ``u = 0`` at the
reference frame. :func:`analyse_cine` is the one call behind the MotionCorrection module's motion task and
``scanai motion``. Importing this package does not import torch.
"""

from scanai.motion.phantom import myocardium_mask, smooth_motion_phantom
from scanai.motion.pipeline import METHODS, CineMotion, analyse_cine, estimate_motion, strain_rows
from scanai.motion.registration import MotionFields, register_to_reference, warp

__all__ = ["METHODS", "CineMotion", "MotionFields", "analyse_cine", "estimate_motion", "myocardium_mask",
           "register_to_reference", "smooth_motion_phantom", "strain_rows", "warp"]
