"""The PET text tables (blood samples, frame timing, regional TACs) read so that a damaged file is refused.

:func:`read_pet_table` reads the numeric columns as :func:`scanai.io.text_table.read_numeric_csv` does, after
checking what that reader would silently pass over: a row with fewer cells than the header (a file cut off in the
middle of a row, or a line break inserted), a file that stops right after a delimiter, a row with more non-empty
cells than the header (a decimal point turned into a delimiter), a number column with a cell that is not a number
(that reader drops the whole column, so a damaged plasma column would quietly be replaced by the whole-blood one),
and, with a row filter, a scan name that no other row has (a damaged name drops its row from the scan). Row numbers
in messages count the header as row 1 and skip blank lines.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from scanai.core.errors import FileFormatError

_DAMAGED = "The file may have been cut off or damaged while copying; export it again, or correct it in a text editor."
#: Cells other tools write for a missing value; the readers expect an empty cell, which the advice says.
_MISSING_WORDS = ("na", "n/a", "-", "none", "null")


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


_Rows = list[tuple[int, list[str]]]


def _selected(header: Sequence[str], rows: list[list[str]], where: Mapping[str, str] | None, name: str,
              what: str) -> _Rows:
    """(file row number, cells) of the rows the ``where`` filter keeps (all rows without a filter, or when a filter
    column is missing: the numeric reader reports that). FileFormatError when a row's filter value occurs in no
    other row (a damaged scan name would silently drop that row from its scan)."""
    numbered = [(number, row) for number, row in enumerate(rows, start=2)]
    if not where or any(key not in header for key in where):
        return numbered
    index = {key: header.index(key) for key in where}

    def cell(row: list[str], key: str) -> str:
        return (row[index[key]] if index[key] < len(row) else "").strip()

    kept = [(number, row) for number, row in numbered if all(cell(row, key) == value for key, value in where.items())]
    if len(kept) >= 3:  # a damaged scan name drops its row from the scan: it shows as a name no other row has
        for key in where:
            counts = Counter(cell(row, key) for _, row in numbered)
            lone = [(number, cell(row, key)) for number, row in numbered if counts[cell(row, key)] == 1]
            if lone:
                raise FileFormatError(f"Row {lone[0][0]} of the {what} file {name} has {key} = {lone[0][1]!r}, which "
                                      f"no other row has, while {len(kept)} rows have {key} = {where[key]!r}.",
                                      f"Check that row's {key}. " + _DAMAGED)
    return kept


def _check_row_lengths(header: Sequence[str], rows: _Rows, name: str, what: str) -> None:
    """FileFormatError naming the first row with fewer cells than the header, or more non-empty ones."""
    width = len(header)
    for number, row in rows:
        if len(row) < width:
            raise FileFormatError(f"Row {number} of the {what} file {name} has {len(row)} cell(s) but its header has "
                                  f"{width} ({', '.join(header)}): the row is incomplete.",
                                  "Leave an empty cell (a delimiter) for a missing value. " + _DAMAGED)
        if any(cell.strip() for cell in row[width:]):
            raise FileFormatError(f"Row {number} of the {what} file {name} has {len(row)} cells but its header has "
                                  f"{width} ({', '.join(header)}).",
                                  "Check that decimal points are '.', not the delimiter. " + _DAMAGED)


def _check_end(path: Path, rows: list[list[str]], what: str) -> None:
    """FileFormatError when the file stops right after a delimiter: its last row ends with an empty cell and no line
    break follows (a file cut off there would silently lose the last value)."""
    with open(path, "rb") as stream:
        stream.seek(0, 2)
        stream.seek(max(stream.tell() - 1, 0))
        last = stream.read(1)
    if rows and rows[-1] and not rows[-1][-1].strip() and last not in (b"\n", b"\r"):
        raise FileFormatError(f"The {what} file {path.name} ends inside a row: its last row ends with an empty cell "
                              "and no line break.", _DAMAGED)


def _check_number_columns(header: Sequence[str], rows: _Rows, name: str, what: str) -> None:
    """FileFormatError naming the first non-number cell of a column that otherwise holds numbers (at least as many
    number cells as other non-empty cells; a text column such as a scan name is left alone)."""
    for column, title in enumerate(header):
        cells = [(number, row[column].strip()) for number, row in rows if column < len(row) and row[column].strip()]
        numbers = sum(_is_number(cell) for _, cell in cells)
        wrong = [(number, cell) for number, cell in cells if not _is_number(cell)]
        if wrong and numbers >= len(wrong):
            number, cell = wrong[0]
            more = f" (and {len(wrong) - 1} more cell(s))" if len(wrong) > 1 else ""
            missing = cell.lower() in _MISSING_WORDS
            advice = ("Leave missing values empty." if missing else
                      "Correct the value; " + _DAMAGED[0].lower() + _DAMAGED[1:])
            raise FileFormatError(f"Row {number} of the {what} file {name}, column '{title.strip()}', holds {cell!r}, "
                                  f"which is not a number{more}.", advice)


def read_pet_table(path: str | Path, what: str = "table", where: Mapping[str, str] | None = None
                   ) -> dict[str, np.ndarray]:
    """Numeric columns ``{name: (rows,) float}`` of a CSV/TSV table with a header row, checked for damage.

    ``where`` keeps only the rows whose text columns equal the given values (e.g. ``{"PET": "cgyu_1"}``); only
    those rows are checked. ``what`` names the table in messages ("blood table", "frame timing", "TAC table").
    :class:`FileFormatError` for an incomplete row, extra cells, a file ending inside a row, a non-number cell in a
    number column or a lone scan name (module docstring); the other errors are those of
    :func:`scanai.io.text_table.read_numeric_csv`.
    """
    from scanai.io.text_table import read_numeric_csv, read_text_table

    header, rows = read_text_table(path, what)
    name = Path(path).name
    kept = _selected(header, rows, where, name, what)
    _check_row_lengths(header, kept, name, what)
    _check_end(Path(path), rows, what)
    _check_number_columns(header, kept, name, what)
    return read_numeric_csv(path, where=where, what=what)
