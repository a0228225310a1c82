"""Where the slow benchmarks (``make bench``) keep their numbers and figures."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "bench_output"
SCREENSHOTS = ROOT / "Resources" / "Screenshots"


def write_result(file_name: str, key: str, value) -> None:
    """Set ``key`` to ``value`` in ``bench_output/<file_name>`` (a JSON object, created when missing)."""
    OUTPUT.mkdir(exist_ok=True)
    path = OUTPUT / file_name
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[key] = value
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
