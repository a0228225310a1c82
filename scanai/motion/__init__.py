"""Cardiac and general motion: registration to a reference frame, warping, phantoms (more to come).

Motion fields follow one convention everywhere (see :mod:`scanai.motion.registration`): the pull-back field
``u_t`` on the reference grid, RAS mm, with ``warped_t(x) = frame_t(x + u_t(x))`` and ``u = 0`` at the
reference frame.
"""

from scanai.motion.phantom import myocardium_mask, smooth_motion_phantom
from scanai.motion.registration import MotionFields, register_to_reference, warp

__all__ = ["MotionFields", "myocardium_mask", "register_to_reference", "smooth_motion_phantom", "warp"]
