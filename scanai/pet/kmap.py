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
    """Regional TACs of one scan: ``tacs`` maps a region name to its (T,) frame values; ``input_function`` is
    None when the file holds none (pair the study with a blood table); ``weights`` (T,) the table's frame weights
    (its ``Weights`` column, 0 = frame not fitted) or None when it has none."""

    timing: FrameTiming
    input_function: InputFunction | None
    tacs: dict[str, np.ndarray]
    name: str = ""
    weights: np.ndarray | None = None


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


#: Columns of a TAC table that are no region (lower case).
_TIMING_COLUMNS = {"starttime", "start_s", "duration", "duration_s", "times", "weights", "mid_s", "end_s"}


def _check_placeholders(zero_length: np.ndarray, columns: dict[str, tuple[str, np.ndarray]], name: str) -> None:
    """FileFormatError for a zero-length frame that holds a measured value: only an all-zero row is a placeholder
    (kinfitr's first row); another one is a damaged duration, and dropping it would silently lose a frame."""
    regions = [values for key, (_, values) in columns.items() if key not in _TIMING_COLUMNS]
    if not regions:
        return
    rows = np.flatnonzero(zero_length & np.any(np.nan_to_num(np.array(regions)) != 0, axis=0))
    if rows.size:
        raise FileFormatError(f"Frame {int(rows[0]) + 1} of the TAC table {name} has a zero duration but measured "
                              "values; only an all-zero placeholder row may have a zero duration.",
                              "Correct its Duration (seconds); the file may have been damaged.")


def load_tac_table(path: str | Path, where: dict[str, str] | None = None) -> RegionalStudy:
    """Regional TACs from a CSV (kinfitr layout): ``StartTime`` and ``Duration`` (s) or ``start_s`` and
    ``duration_s``, one numeric column per region; a ``Weights`` column (kinfitr's frame weights, >= 0) is kept as
    ``weights``, ``Times`` is ignored; zero-length all-zero placeholder frames are dropped (a zero-length frame with
    values is an error). ``where`` selects one scan, e.g. ``{"PET": "cgyu_1"}``.
    """
    from scanai.pet.tables import read_pet_table

    columns = {name.lower(): (name, values) for name, values in read_pet_table(path, "TAC table", where).items()}
    start = columns.get("starttime") or columns.get("start_s")
    duration = columns.get("duration") or columns.get("duration_s")
    if start is None or duration is None:
        raise FileFormatError(f"{Path(path).name} has no StartTime/Duration (or start_s/duration_s) columns.",
                              "Add the frame start and duration in seconds after injection.")
    keep = duration[1] > 0
    _check_placeholders(~keep, columns, Path(path).name)
    timing = FrameTiming(start[1][keep], duration[1][keep])
    tacs = {name: values[keep] for key, (name, values) in columns.items() if key not in _TIMING_COLUMNS}
    if not tacs:
        raise FileFormatError(f"{Path(path).name} holds no region column.")
    weights = columns["weights"][1][keep] if "weights" in columns else None
    if weights is not None and (not np.all(np.isfinite(weights)) or np.any(weights < 0)):
        raise FileFormatError(f"The Weights column of {Path(path).name} holds a negative or missing value.",
                              "Give every frame a weight >= 0 (0: not fitted), or delete the column.")
    name = Path(path).stem if where is None else "_".join(where.values())
    return RegionalStudy(timing, None, tacs, name, weights)
