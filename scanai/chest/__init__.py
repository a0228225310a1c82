"""ChestQC library: chest radiograph reading, the patent's normalisation, and a synthetic chest phantom.

Public entry points: :func:`scanai.chest.io.read_radiograph`, :func:`scanai.chest.preprocess.normalise`,
:func:`scanai.chest.phantom.make_chest_phantom`. Submodules import numpy/SimpleITK/pydicom lazily where heavy.
"""

from scanai.chest.io import Radiograph, read_radiograph
from scanai.chest.preprocess import normalise, percentile_rescale, standardise

__all__ = ["Radiograph", "normalise", "percentile_rescale", "read_radiograph", "standardise"]
