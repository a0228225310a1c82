"""Parametric PET: frame timing and units, readers, input functions, kinetic models, maps, the short-scan network.

Times are seconds after injection; kinetic rate constants are 1/min (``ki_per_min``). Nothing here imports
torch, SimpleITK, pydicom or Slicer at import time.
"""

from scanai.pet.bids import read_bids_sidecar, timing_from_sidecar, write_bids_sidecar
from scanai.pet.blood import (
    BloodCurves,
    FengFit,
    correct_dispersion,
    fit_feng,
    image_derived_input,
    population_input,
    read_blood_table,
    scaled_population_input,
)
from scanai.pet.dynamic import DynamicPet
from scanai.pet.input_function import (
    FENG_FDG_PARAMS,
    InputFunction,
    check_frames_covered,
    feng_input,
    feng_integral,
)
from scanai.pet.kinetic_parameters import BOUNDS
from scanai.pet.kinetics import patlak_ki, tissue_curves_2tcm, two_tissue_tacs
from scanai.pet.kmap import RegionalStudy, load_kmap_mat, load_tac_table
from scanai.pet.logan import LoganResult, logan_fit
from scanai.pet.models import (
    DEFAULT_DELAY_RANGE_S,
    METHODS,
    PARAMETERS,
    UNITS,
    KineticMaps,
    TacFit,
    fit_tacs,
    kinetic_maps,
    model_tacs,
)
from scanai.pet.network import NetworkMaps, load_network, predict_parametric
from scanai.pet.patlak import PatlakMaps, PatlakResult, patlak_fit, patlak_maps
from scanai.pet.phantom import PetPhantom, pet_phantom
from scanai.pet.reference_models import (
    REFERENCE_MODELS,
    REFERENCE_PARAMETERS,
    ReferenceFit,
    ReferenceMaps,
    fit_reference,
    reference_maps,
)
from scanai.pet.study import read_dynamic_pet, write_dynamic_pet
from scanai.pet.timing import FrameTiming
from scanai.pet.units import (
    HALF_LIVES_S,
    check_compatible_units,
    decay_correct_frames,
    decay_correct_input,
    frame_decay_factors,
    half_life_s,
    suv_factor,
)

__all__ = [
    "BOUNDS",
    "DEFAULT_DELAY_RANGE_S",
    "FENG_FDG_PARAMS",
    "HALF_LIVES_S",
    "BloodCurves",
    "DynamicPet",
    "FengFit",
    "FrameTiming",
    "KineticMaps",
    "LoganResult",
    "METHODS",
    "NetworkMaps",
    "PARAMETERS",
    "TacFit",
    "UNITS",
    "InputFunction",
    "PatlakMaps",
    "PatlakResult",
    "PetPhantom",
    "REFERENCE_MODELS",
    "REFERENCE_PARAMETERS",
    "ReferenceFit",
    "ReferenceMaps",
    "RegionalStudy",
    "check_compatible_units",
    "check_frames_covered",
    "correct_dispersion",
    "decay_correct_frames",
    "decay_correct_input",
    "feng_input",
    "feng_integral",
    "fit_tacs",
    "kinetic_maps",
    "load_kmap_mat",
    "load_tac_table",
    "load_network",
    "logan_fit",
    "model_tacs",
    "predict_parametric",
    "fit_feng",
    "fit_reference",
    "frame_decay_factors",
    "half_life_s",
    "image_derived_input",
    "patlak_fit",
    "patlak_ki",
    "patlak_maps",
    "pet_phantom",
    "population_input",
    "read_bids_sidecar",
    "read_blood_table",
    "read_dynamic_pet",
    "reference_maps",
    "scaled_population_input",
    "suv_factor",
    "timing_from_sidecar",
    "tissue_curves_2tcm",
    "two_tissue_tacs",
    "write_bids_sidecar",
    "write_dynamic_pet",
]
