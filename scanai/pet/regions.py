"""Region names for a label image: from a Slicer segmentation file's header or from a colour table.

A ``.seg.nrrd`` (one labelmap layer) names its segments in the header (``Segment<i>_Name``,
``Segment<i>_LabelValue``); a colour table (Slicer ``.ctbl`` / ``.txt``, FreeSurfer LUT) lists ``value name r g b
[a]`` per line (``#`` comments). Labels without a name are called ``label <value>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from scanai.core.errors import FileFormatError


def segmentation_names(path: str | Path) -> dict[int, str]:
    """Label value -> segment name from a Slicer ``.seg.nrrd`` header ({} when it names none)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise FileFormatError(f"{Path(path).name} could not be read as an image ({error}).") from error
    keys = set(reader.GetMetaDataKeys())
    names: dict[int, str] = {}
    index = 0
    while f"Segment{index}_Name" in keys:
        value_key = f"Segment{index}_LabelValue"
        layer_key = f"Segment{index}_Layer"
        if layer_key in keys and reader.GetMetaData(layer_key).strip() not in ("", "0"):
            raise FileFormatError(f"{Path(path).name} holds overlapping segments (several layers).",
                                  "Export the segmentation as one labelmap (segments must not overlap).")
        value = int(reader.GetMetaData(value_key)) if value_key in keys else index + 1
        names[value] = reader.GetMetaData(f"Segment{index}_Name").strip()
        index += 1
    return names


def colour_table_names(path: str | Path) -> dict[int, str]:
    """Label value -> name from a colour table (lines ``value name r g b [a]``; ``#`` comments)."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"The colour table {path} does not exist.", "Check the path.")
    names: dict[int, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.replace(",", " ").split()
        try:
            value = int(parts[0])
        except ValueError:
            raise FileFormatError(f"Line {number} of the colour table {path.name} does not start with a label "
                                  f"value: {line.strip()!r}.",
                                  "Each line reads 'value name r g b [a]' (Slicer .ctbl or FreeSurfer LUT).") from None
        if len(parts) < 2:
            raise FileFormatError(f"Line {number} of the colour table {path.name} has no name.")
        names[value] = parts[1]
    return names


def region_names(values: Iterable[int], labels_path: str | Path | None = None,
                 names_path: str | Path | None = None) -> dict[int, str]:
    """Name of each label value: the colour table ``names_path`` first, else the segmentation header of
    ``labels_path`` (a ``.seg.nrrd``), else ``label <value>``."""
    known: dict[int, str] = {}
    if labels_path is not None and str(labels_path).lower().endswith(".seg.nrrd"):
        known = segmentation_names(labels_path)
    if names_path is not None:
        known = colour_table_names(names_path)
    return {int(v): known.get(int(v), f"label {int(v)}") for v in values}
