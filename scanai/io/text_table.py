"""Read a small text table (CSV, TSV or semicolon-separated, with a header row): its text cells or numeric columns."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from scanai.core.errors import FileFormatError, InputError


def read_text_table(path: str | Path, what: str = "table") -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a delimited text table; the delimiter (comma, semicolon or tab) is sniffed.

    Blank rows are dropped; cells stay text. ``what`` names the table in messages. FileFormatError when the file is
    missing, unreadable, binary, or has no data row under its header.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"The {what} file {path} does not exist.", "Check the path.")
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            sample = stream.read(4096)
            stream.seek(0)
            try:
                dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
            except csv.Error:
                dialect = csv.excel
            rows = [row for row in csv.reader(stream, dialect) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise FileFormatError(f"The {what} file {path.name} could not be read as a text table ({error}).",
                              "Save it as comma- or tab-separated text with a header row.") from error
    if len(rows) < 2 or "\x00" in sample:
        raise FileFormatError(f"The {what} file {path.name} has no data rows or is not a text table.",
                              "Save it as comma- or tab-separated text: a header row, then one row per sample.")
    return rows[0], rows[1:]


def read_numeric_csv(path: str | Path, where: Mapping[str, str] | None = None,
                     what: str = "table") -> dict[str, np.ndarray]:
    """Numeric columns of a CSV file with a header row, as ``{name: (rows,) float array}``.

    Columns with any non-numeric cell other than an empty one are dropped (empty cells become NaN, which the
    consumer reports). ``where`` filters rows on exact text matches first.
    """
    name_of_file = Path(path).name
    header, cells = read_text_table(path, what)
    rows = [{name: (row[i] if i < len(row) else None) for i, name in enumerate(header)} for row in cells]
    if where:
        missing = [key for key in where if key not in rows[0]]
        if missing:
            raise InputError(f"The {what} file {name_of_file} has no column {', '.join(missing)} to select rows by.")
        rows = [row for row in rows if all((row.get(k) or "").strip() == v for k, v in where.items())]
        if not rows:
            raise InputError(f"No row of {name_of_file} matches {dict(where)}.", "Check the scan name.")
    columns: dict[str, np.ndarray] = {}
    for name in rows[0]:
        if name is None:
            continue
        values = []
        for row in rows:
            cell = (row.get(name) or "").strip()
            try:
                values.append(float(cell) if cell else math.nan)
            except ValueError:
                break
        else:
            if not all(math.isnan(v) for v in values):
                columns[name.strip()] = np.asarray(values, dtype=float)
    return columns
