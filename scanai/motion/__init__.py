"""Cardiac and general motion over a cine: the multi-pair network, classical registration, field utilities,
strain, segmentation propagation and phantoms; and multi-phase motion-artifact correction of a phase sequence
(:func:`correct_phase_sequence`: windows and phases, selection, ranking, the trained network or classical
baselines, with a CT motion simulator for training and evaluation).

Motion fields follow one convention everywhere (see :mod:`scanai.motion.registration`): the pull-back field
``u_t`` on the reference grid, RAS mm, with ``warped_t(x) = frame_t(x + u_t(x))`` and ``u = 0`` at the
reference frame. :func:`analyse_cine` is the one call behind the MotionCorrection module and ``scanai motion``;
:func:`correct_phase_sequence` the one behind its artifact task and ``scanai motion-correct``.
Importing this package does not import torch.
"""

from scanai.motion.artifact import ArtifactCorrection, correct_phase_sequence, phase_windows
from scanai.motion.phantom import myocardium_mask, smooth_motion_phantom
from scanai.motion.pipeline import METHODS, CineMotion, analyse_cine, estimate_motion, strain_rows
from scanai.motion.registration import MotionFields, register_to_reference, warp

__all__ = ["METHODS", "ArtifactCorrection", "CineMotion", "MotionFields", "analyse_cine", "correct_phase_sequence",
           "estimate_motion", "myocardium_mask", "phase_windows", "register_to_reference", "smooth_motion_phantom",
           "strain_rows", "warp"]
