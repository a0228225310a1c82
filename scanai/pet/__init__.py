"""Parametric PET: frame timing, plasma input functions, 2TCM forward model, Patlak maps, PET phantom.

Times are seconds after injection; kinetic rate constants are 1/min (``ki_per_min``). Nothing here imports
torch, SimpleITK or Slicer at import time.
"""

from scanai.pet.input_function import FENG_FDG_PARAMS, InputFunction, feng_input, feng_integral
from scanai.pet.kinetics import patlak_ki, tissue_curves_2tcm, two_tissue_tacs
from scanai.pet.patlak import PatlakMaps, PatlakResult, patlak_fit, patlak_maps
from scanai.pet.phantom import PetPhantom, pet_phantom
from scanai.pet.timing import FrameTiming

__all__ = [
    "FENG_FDG_PARAMS",
    "FrameTiming",
    "InputFunction",
    "PatlakMaps",
    "PatlakResult",
    "PetPhantom",
    "feng_input",
    "feng_integral",
    "patlak_fit",
    "patlak_ki",
    "patlak_maps",
    "pet_phantom",
    "tissue_curves_2tcm",
    "two_tissue_tacs",
]
