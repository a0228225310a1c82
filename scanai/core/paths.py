"""Where the optional real public data set lives (``../shared/data`` beside a ScanAI checkout)."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    """The shared real-data folder, or None when absent.

    Looked up in ``$SCANAI_DATA``, then ``../shared/data`` beside the source checkout, then beside the
    working directory.
    """
    candidates = [os.environ.get("SCANAI_DATA"), PACKAGE_DIR.parent.parent / "shared" / "data",
                  Path.cwd().parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None
