"""ChestQC library: chest radiograph reading, the patent's normalisation, detection backends, the quality grade with
its reasons and the clinical findings, and a synthetic chest phantom.

Public entry points: :func:`scanai.chest.pipeline.analyse_file` / :func:`~scanai.chest.pipeline.analyse_radiograph`
(a radiograph -> :class:`~scanai.chest.pipeline.ChestResult`), :func:`~scanai.chest.pipeline.detector_by_name`
("network" or "classical"), :func:`scanai.chest.io.read_radiograph`, :func:`scanai.chest.preprocess.normalise`,
:func:`scanai.chest.phantom.make_chest_phantom`. Nothing here imports torch at load time (the network backend
imports it when it is chosen).
"""

from scanai.chest.io import Radiograph, read_radiograph
from scanai.chest.pipeline import ChestResult, analyse_file, analyse_radiograph, detector_by_name
from scanai.chest.preprocess import normalise, percentile_rescale, standardise

__all__ = ["ChestResult", "Radiograph", "analyse_file", "analyse_radiograph", "detector_by_name", "normalise",
           "percentile_rescale", "read_radiograph", "standardise"]
