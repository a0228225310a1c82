"""Reader for the regional TAC files of the KMAP-M demos (MATLAB ``.mat``: ``Cp``, ``dt`` and region TACs).

Each file holds frame durations ``dt`` (T,) in s (contiguous frames from the injection, start =
cumsum(dt) - dt), an image-derived plasma input ``Cp`` (T,) given per frame, and one or more region TACs
(T,) (e.g. ``GM``, ``WM``, ``Liver``), all in Bq/mL. The frame values of Cp are taken as samples at the frame
mid-times; the input function ramps linearly from 0 at the injection to the first of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scanai.core.errors import FileFormatError
from scanai.pet.input_function import InputFunction
from scanai.pet.timing import FrameTiming


@dataclass(frozen=True, eq=False)
class RegionalStudy:
    """Regional TACs of one scan: ``tacs`` maps a region name to its (T,) frame values."""

    timing: FrameTiming
    input_function: InputFunction
    tacs: dict[str, np.ndarray]
    name: str = ""


def load_kmap_mat(path: str | Path) -> RegionalStudy:
    """Read a KMAP-M demo ``.mat`` file (``Cp``, ``dt``, region TACs) into a :class:`RegionalStudy`."""
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"The TAC file {path} does not exist.", "Check the path.")
    try:
        content = loadmat(str(path))
    except (OSError, ValueError, NotImplementedError) as error:
        raise FileFormatError(f"{path.name} could not be read as a MATLAB .mat file ({error}).") from error
    missing = [key for key in ("Cp", "dt") if key not in content]
    if missing:
        raise FileFormatError(f"{path.name} lacks the variable(s) {', '.join(missing)} (needs Cp, dt and a TAC).")
    timing = FrameTiming.from_durations(np.asarray(content["dt"], dtype=float).reshape(-1))
    cp = np.asarray(content["Cp"], dtype=float).reshape(-1)
    tacs = {key: np.asarray(value, dtype=float).reshape(-1) for key, value in content.items()
            if not key.startswith("__") and key not in ("Cp", "dt") and np.size(value) == len(timing)}
    if not tacs:
        raise FileFormatError(f"{path.name} holds no region TAC with {len(timing)} frames.")
    return RegionalStudy(timing, InputFunction(timing.mid_s, cp, "Bq/mL"), tacs, path.stem)
