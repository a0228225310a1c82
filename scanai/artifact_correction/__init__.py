"""Multi-phase cardiac CT motion-artifact correction (seed 000): phase windows from index values, timing tables or
an ECG, selection and ranking of the phase volumes, the trained N -> M network and the classical fusion baselines,
and a CT motion simulator for training and evaluation. :func:`correct_phase_sequence` is the one call behind the
MotionCorrection module's artifact task and ``scanai motion-correct``. Importing this package does not import
torch.
"""

from scanai.artifact_correction.pipeline import ArtifactCorrection, correct_phase_sequence, phase_windows

__all__ = ["ArtifactCorrection", "correct_phase_sequence", "phase_windows"]
