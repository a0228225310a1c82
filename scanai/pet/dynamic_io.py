"""Read and write dynamic (4-D) PET images with SimpleITK, keeping the 3-D geometry exact (RAS).

Accepted: a 4-D NRRD/NIfTI/MHA image whose 4th axis is the frame (time) axis, or a 3-D image with one
component per frame (a Slicer ``.seq.nrrd`` sequence file, whose first NRRD axis is the frame list).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scanai.core.errors import FileFormatError
from scanai.core.image import Geometry, VolumeSequence
from scanai.io.sitk_image import LPS_TO_RAS, to_sitk


def _geometry_of_leading_axes(image) -> Geometry:
    """RAS geometry of the first three axes of a 3-D or 4-D ``SimpleITK.Image``."""
    dimension = image.GetDimension()
    spacing = image.GetSpacing()[:3]
    origin = np.asarray(image.GetOrigin()[:3])
    directions = np.asarray(image.GetDirection()).reshape(dimension, dimension)[:3, :3]
    return Geometry(tuple(spacing), tuple(LPS_TO_RAS @ origin), tuple(map(tuple, LPS_TO_RAS @ directions)))


def read_dynamic_image(path: str | Path) -> VolumeSequence:
    """A dynamic PET image as a :class:`VolumeSequence` (T, k, j, i); frame index values are 0..T-1.

    Frame times are not read from the file: give them separately (:class:`~scanai.pet.timing.FrameTiming`).
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"The dynamic PET image {path} does not exist.", "Check the path.")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise FileFormatError(f"{path.name} could not be read as an image: it may be corrupt or of an unsupported "
                              "format.", "Save the dynamic PET as a 4-D NRRD or NIfTI file.") from error
    dimension, components = image.GetDimension(), image.GetNumberOfComponentsPerPixel()
    array = sitk.GetArrayFromImage(image)
    if dimension == 4 and components == 1:
        frames = array  # (t, z, y, x)
    elif dimension == 3 and components > 1:
        frames = np.moveaxis(array, -1, 0)  # (z, y, x, t) -> (t, z, y, x)
    else:
        raise FileFormatError(
            f"{path.name} is a {dimension}-D image with {components} value(s) per voxel, not a dynamic (4-D) PET "
            "series.", "Save the frames as one 4-D NRRD/NIfTI file whose 4th axis is time.")
    if frames.shape[0] < 2:
        raise FileFormatError(f"{path.name} holds only {frames.shape[0]} frame; a dynamic series is needed.")
    return VolumeSequence(np.ascontiguousarray(frames), _geometry_of_leading_axes(image))


def write_dynamic_image(sequence: VolumeSequence, path: str | Path) -> Path:
    """Write a sequence as a 4-D image (NRRD/NIfTI/MHA by extension; 4th axis = frame); returns the path."""
    import SimpleITK as sitk

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.JoinSeries([to_sitk(sequence.frame(t)) for t in range(len(sequence))])
    sitk.WriteImage(image, str(path), useCompression=True)
    return path
