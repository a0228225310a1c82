"""The batch manifest: a CSV file with one study per row, turned into each study's command line.

Columns:

- ``study_id`` (required): names the study's output folder ``DIR/<study_id>`` and its report row; letters, digits,
  ``.``, ``_`` and ``-``, unique. It is all the runner ever prints about a study, so it must be a pseudonym, never a
  patient identifier.
- the command's inputs, named as in ``scanai COMMAND --help``: ``input`` (motion, kspace, chest), ``image`` (pet),
  ``inputs`` (motion-correct);
- any option of the command, by its long name with or without the dashes, ``-`` or ``_`` alike: ``method``,
  ``t-star-min``, ``input_function``, ...

Cells: an empty cell leaves the option at the command's default; a switch (``--refine``) is on for ``1``, ``true``,
``yes``, ``y``, ``x`` or ``on`` and off for ``0``, ``false``, ``no``, ``n``, ``off`` or empty; an argument with several
values (``inputs``, ``window``) or a repeatable one (``where``) takes them separated by ``;``. Relative paths are
relative to the manifest's folder (they are made absolute, so that workers on other machines find them on the shared
file system). ``--out`` and ``--overwrite`` are the runner's. Every row is checked with the command's own parser
before any study runs.
"""

from __future__ import annotations

import argparse
import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scanai.core.errors import FileFormatError, InputError

#: The cells that turn a switch on / off.
TRUE_WORDS = frozenset({"1", "true", "yes", "y", "x", "on"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "n", "off"})
#: Separator of several values in one cell.
SEPARATOR = ";"
#: Arguments the runner sets itself.
RESERVED = frozenset({"out", "overwrite", "help"})
_STUDY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: Names in the batch folder that are not studies' (the combined report and its figure).
TAKEN_NAMES = frozenset({"report.csv", "summary.png"})


@dataclass(frozen=True)
class Study:
    """One row of a manifest.

    study_id: the row's ``study_id``; row: its line number in the file (the header is line 1);
    argv: the command's arguments, without the command name and without ``--out``.
    """

    study_id: str
    row: int
    argv: tuple[str, ...]


def _column_key(name: str) -> str:
    return name.strip().lstrip("-").replace("_", "-").lower()


def _columns(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Column key -> the parser's action: positionals by their name, options by their long name."""
    columns: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse has no public list of its actions
        if not action.option_strings:
            columns[_column_key(action.dest)] = action
            continue
        names = [name for name in action.option_strings if name.startswith("--")]
        if names and _column_key(names[0]) not in RESERVED:
            columns[_column_key(names[0])] = action
    return columns


def _values(cell: str, action: argparse.Action, folder: Path) -> list[str]:
    values = [v.strip() for v in cell.split(SEPARATOR)] if (action.nargs not in (None, "?") or isinstance(
        action, argparse._AppendAction)) else [cell]
    if action.type is Path:
        values = [str((folder / Path(v).expanduser()).absolute()) if v else v for v in values]
    return values


def _arguments(cell: str, column: str, action: argparse.Action, folder: Path, where: str) -> list[str]:
    """The command-line words for one cell (empty for an empty cell or a switch that is off)."""
    if action.nargs == 0:  # a switch
        word = cell.lower()
        if word not in TRUE_WORDS | FALSE_WORDS:
            raise InputError(f"{where}: '{cell}' in column '{column}' is not yes or no.",
                             f"Write one of {', '.join(sorted(TRUE_WORDS))} to turn it on, or leave the cell empty.")
        return [action.option_strings[-1]] if word in TRUE_WORDS else []
    if not cell:
        return []
    values = _values(cell, action, folder)
    if not action.option_strings:
        return values
    flag = next(name for name in action.option_strings if name.startswith("--"))
    if isinstance(action, argparse._AppendAction):
        return [word for value in values for word in (flag, value)]
    return [flag, *values]


def _check_row(parser: argparse.ArgumentParser, argv: list[str], where: str) -> None:
    """Parse ``argv`` with the command's parser; its complaint becomes an InputError naming the row."""

    def refuse(message: str):
        raise InputError(f"{where}: {message}.", "Correct the manifest; no study was run.")

    previous = parser.error
    parser.error = refuse  # argparse reports through error(); exit_on_error=False does not cover every case
    try:
        parser.parse_args([*argv, "--out", "unused"])
    finally:
        parser.error = previous


def read_manifest(path: Path, command: str, command_parser: Callable[[str], argparse.ArgumentParser]) -> list[Study]:
    """The studies of the manifest at ``path`` for ``command``, each checked with ``command_parser(command)``;
    InputError (naming the row and the column) for anything the command would refuse, FileFormatError for a file
    that is not a readable CSV."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"The manifest {path} does not exist.", "Check the path of the manifest CSV.")
    parser = command_parser(command)
    columns = _columns(parser)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            rows = [(number, row) for number, row in enumerate(reader, start=2) if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as error:
        raise FileFormatError(f"The manifest {path.name} is not a readable CSV file ({error}).",
                              "Save it as CSV (UTF-8), one study per row with a header row.") from error
    keys = [_column_key(name) for name in header]
    if "study-id" not in keys:
        raise InputError(f"The manifest {path.name} has no 'study_id' column.",
                         "Add a study_id column: one pseudonymous id per study (it names the output folder).")
    unknown = [name for name, key in zip(header, keys, strict=True) if key != "study-id" and key not in columns]
    if unknown:
        raise InputError(f"The manifest's column(s) {', '.join(repr(n) for n in unknown)} are not arguments of "
                         f"'scanai {command}'.",
                         f"Use study_id and these columns: {', '.join(sorted(columns))} (see scanai {command} -h).")
    if len(set(keys)) != len(keys):
        raise InputError(f"The manifest {path.name} names a column twice.", "Keep one column per argument.")
    if not rows:
        raise InputError(f"The manifest {path.name} holds no study.", "Add one row per study below the header.")
    studies: list[Study] = []
    seen: set[str] = set()
    for number, row in rows:
        if len(row) != len(header):
            raise InputError(f"Row {number} of {path.name} has {len(row)} cells for {len(header)} columns.",
                             "Give every row one cell per column (quote cells that hold commas).")
        cells = {key: cell.strip() for key, cell in zip(keys, row, strict=True)}
        study_id = cells.pop("study-id")
        where = f"Row {number} of {path.name} (study {study_id or '?'})"
        if not _STUDY_ID.fullmatch(study_id) or study_id.lower() in TAKEN_NAMES:
            raise InputError(f"{where}: the study_id '{study_id}' cannot name a folder.",
                             "Use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit.")
        if study_id in seen:
            raise InputError(f"{where}: the study_id '{study_id}' is used twice.", "Give each study its own id.")
        seen.add(study_id)
        positional = [key for key, action in columns.items() if not action.option_strings and key in cells]
        argv = [word for key in positional for word in _arguments(cells[key], key, columns[key], path.parent, where)]
        argv += [word for key, cell in cells.items() if columns[key].option_strings
                 for word in _arguments(cell, key, columns[key], path.parent, where)]
        _check_row(parser, argv, where)
        studies.append(Study(study_id, number, tuple(argv)))
    return studies
