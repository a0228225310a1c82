"""The batch's combined report: ``DIR/report.csv`` (one row per study) and ``DIR/summary.png``.

A row holds the study's ``study_id``, ``command``, ``status`` (ok / failed / error / pending), ``exit_code``,
``error`` (one line), ``attempts`` (more than 1 when a worker died under it), ``seconds`` (its run time in the
worker), ``outputs`` (files in its output folder) and a few headline results read from the files the command wrote
(:func:`headline`): chest: ``images``, ``image_errors``, and for one image its ``level`` and ``CTR``; pet: the first
statistics row's ``*_mean`` columns; kspace: ``spike_samples``; motion: ``frames`` and ``peak_GCS_pct`` (the most
negative global circumferential strain); motion-correct: ``method`` and ``selected_items``. A column that a command's
output does not have stays empty.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The columns every row starts with; headline columns follow in the order first met.
LEADING_COLUMNS = ("study_id", "command", "status", "exit_code", "error", "attempts", "seconds")
STATUSES = ("ok", "failed", "error", "pending")


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _chest(folder: Path) -> dict[str, Any]:
    rows = _csv_rows(folder / "report.csv")
    found: dict[str, Any] = {"images": len(rows), "image_errors": sum(row.get("level") == "ERROR" for row in rows)}
    if len(rows) == 1:
        found.update(level=rows[0].get("level", ""), CTR=rows[0].get("CTR", ""))
    return found


def _pet(folder: Path) -> dict[str, Any]:
    tables = sorted(folder.glob("*_statistics.csv"))
    rows = _csv_rows(tables[0]) if tables else []
    return {key: value for key, value in rows[0].items() if key.endswith("_mean")} if rows else {}


def _kspace(folder: Path) -> dict[str, Any]:
    return {"spike_samples": len(_csv_rows(folder / "spikes.csv"))}


def _motion(folder: Path) -> dict[str, Any]:
    rows = _csv_rows(folder / "motion.csv")
    strains = [v for v in (_number(row.get("GCS_pct")) for row in rows) if v is not None]
    return {"frames": len(rows), "peak_GCS_pct": f"{min(strains):.4g}" if strains else ""}


def _motion_correct(folder: Path) -> dict[str, Any]:
    summary = json.loads((folder / "summary.json").read_text())
    return {"method": summary.get("method", ""),
            "selected_items": ";".join(str(item) for item in summary.get("selected_items", []))}


_HEADLINES = {"chest": _chest, "pet": _pet, "kspace": _kspace, "motion": _motion, "motion-correct": _motion_correct}


def headline(command: str, folder: Path) -> dict[str, Any]:
    """A few results of one study read from its output ``folder`` (see the module docstring), with ``outputs``, the
    number of files written; the results a folder lacks are left out."""
    folder = Path(folder)
    found: dict[str, Any] = {"outputs": sum(1 for path in folder.rglob("*") if path.is_file())}
    try:
        found.update(_HEADLINES.get(command, lambda _folder: {})(folder))
    except (OSError, ValueError, KeyError, IndexError):
        pass  # an output the command did not write (e.g. a changed file layout): the columns stay empty
    return found


def report_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One report row per record: the leading columns, then its headline results."""
    rows = []
    for record in records:
        row = {column: record.get(column, "") for column in LEADING_COLUMNS}
        row["exit_code"] = "" if record.get("exit_code") is None else record["exit_code"]
        row["seconds"] = "" if record.get("seconds") is None else record["seconds"]
        rows.append({**row, **record.get("results", {})})
    return rows


def _write_atomically(path: Path, write) -> Path:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial{path.suffix}")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def write_report(records: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Write the report CSV (columns: :data:`LEADING_COLUMNS`, then the headline columns in the order first met),
    under a temporary name first; returns ``path``."""
    rows = report_rows(records)
    columns = list(LEADING_COLUMNS)
    for row in rows:
        columns += [key for key in row if key not in columns]

    def write(target: Path) -> None:
        with target.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)

    return _write_atomically(Path(path), write)


def status_counts(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Studies per status, in :data:`STATUSES` order."""
    return {status: sum(record.get("status") == status for record in records) for status in STATUSES}


def write_summary_figure(records: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path:
    """A PNG: studies per status (bars) and the distribution of the studies' run times (s, histogram)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    counts = status_counts(records)
    seconds = [float(r["seconds"]) for r in records if r.get("status") in ("ok", "failed") and r.get("seconds")]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    colours = {"ok": "#2e7d32", "failed": "#f9a825", "error": "#c62828", "pending": "#9e9e9e"}
    bars = left.bar(list(counts), list(counts.values()), color=[colours[s] for s in counts])
    left.bar_label(bars)
    left.set_ylim(0, 1.15 * max(max(counts.values()), 1))
    left.set_ylabel("studies")
    left.yaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_title(f"{len(records)} studies by status")
    if seconds:
        right.hist(seconds, bins=min(30, max(5, len(seconds) // 5)), color="#1565c0")
        right.set_title(f"run time per study: median {sorted(seconds)[len(seconds) // 2]:.2f} s")
    else:
        right.set_title("no study finished")
    right.set_xlabel("seconds in the worker")
    right.set_ylabel("studies")
    right.yaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle(title)
    figure.tight_layout()

    def write(target: Path) -> None:
        figure.savefig(target, dpi=100, format="png")

    try:
        return _write_atomically(Path(path), write)
    finally:
        plt.close(figure)
