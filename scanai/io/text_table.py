"""Read a small text table (CSV, TSV or semicolon-separated, with a header row) as the user saved it."""

from __future__ import annotations

import csv
from pathlib import Path

from scanai.core.errors import FileFormatError


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
