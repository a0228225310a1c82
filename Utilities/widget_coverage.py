"""Statement coverage of the module widgets: the ``*Widget`` classes of the four module files and the shared widget
code (``scanai/mrml/widgets.py``: ``ModuleWidgetMixin`` and the functions it calls, and
``first_volume_sequence`` of ``scanai/mrml/nodes.py``), from a coverage data file.

    python -m coverage run --data-file=.coverage.widgets -m pytest Testing/modules/test_widgets.py ...
    python Utilities/widget_coverage.py --data-file .coverage.widgets --fail-under 95

Prints one line per class or function and the total; exits 1 below ``--fail-under`` percent.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

HOME = Path(__file__).resolve().parent.parent
MODULES = ("MotionCorrection", "ParametricPET", "KSpaceCalibration", "ChestQC")
#: The shared widget code outside scanai/mrml/widgets.py (all of which counts).
SHARED = {"nodes.py": ("first_volume_sequence",)}


def widget_blocks() -> dict[Path, list[tuple[str, int, int]]]:
    """File -> (name, first line, last line) of each block of widget code."""
    blocks: dict[Path, list[tuple[str, int, int]]] = {}
    for name in MODULES:
        path = HOME / name / f"{name}.py"
        tree = ast.parse(path.read_text())
        blocks[path] = [(node.name, node.lineno, node.end_lineno) for node in tree.body
                        if isinstance(node, ast.ClassDef) and node.name == f"{name}Widget"]
    path = HOME / "scanai" / "mrml" / "widgets.py"
    blocks[path] = [(node.name, node.lineno, node.end_lineno) for node in ast.parse(path.read_text()).body
                    if isinstance(node, ast.ClassDef | ast.FunctionDef)]
    for name, names in SHARED.items():
        path = HOME / "scanai" / "mrml" / name
        blocks[path] = [(node.name, node.lineno, node.end_lineno) for node in ast.parse(path.read_text()).body
                        if isinstance(node, ast.ClassDef | ast.FunctionDef) and node.name in names]
    return blocks


def main(argv: list[str] | None = None) -> int:
    import coverage

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-file", default=".coverage")
    parser.add_argument("--fail-under", type=float, default=0.0)
    args = parser.parse_args(argv)
    data = coverage.Coverage(data_file=args.data_file)
    data.load()
    covered = total = 0
    for path, blocks in widget_blocks().items():
        _, statements, _, missing, _ = data.analysis2(str(path))
        for name, first, last in blocks:
            lines = [line for line in statements if first <= line <= last]
            missed = [line for line in missing if first <= line <= last]
            covered, total = covered + len(lines) - len(missed), total + len(lines)
            print(f"{path.relative_to(HOME)}:{name}: {len(lines) - len(missed)}/{len(lines)}"
                  + (f"  missed lines {missed}" if missed else ""))
    percent = 100.0 * covered / max(total, 1)
    print(f"widget statement coverage: {covered}/{total} = {percent:.1f} %")
    return 0 if percent >= args.fail_under else 1


if __name__ == "__main__":
    sys.exit(main())
