"""The README's runnable examples, for the tests that run them as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_example(section: str) -> str:
    """The first ```python block of the "#### Python" subsection of the README's ``### {section}`` section."""
    text = README.read_text(encoding="utf-8")
    body = text[text.index(f"### {section}"):]
    body = body[:body.index("\n### ", 1)]
    return re.search(r"```python\n(.*?)```", body[body.index("#### Python"):], re.DOTALL).group(1)
