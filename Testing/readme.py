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


def run_python_example(section: str, data: Path) -> dict:
    """Run :func:`python_example` of ``section`` with its ``../shared/data`` pointing at ``data``; returns the
    namespace it leaves."""
    code = python_example(section)
    namespace: dict = {}
    exec(compile(code.replace("../shared/data", str(data)), f"README.md ({section} Python)", "exec"), namespace)
    return namespace
