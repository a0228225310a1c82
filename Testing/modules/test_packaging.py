"""Static checks of the extension: CMake listings, .ui bindings, import hygiene, metadata."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

HOME = Path(__file__).resolve().parents[2]
MODULES = ["MotionCorrection", "ParametricPET", "KSpaceCalibration", "ChestQC"]
MIXIN_UI_NAMES = {"applyButton", "cancelButton", "progressBar", "statusLabel"}


def _cmake_listed(cmake_file: Path) -> set[str]:
    """Every file path (relative to the CMakeLists folder) named in a CMakeLists.txt, with ${MODULE_NAME} expanded."""
    text = re.sub(r"#[^\n]*", "", cmake_file.read_text())
    name = re.search(r"set\(MODULE_NAME\s+(\S+)\)", text)
    if name:
        text = text.replace("${MODULE_NAME}", name.group(1))
    return set(re.findall(r"[\w./-]+\.(?:py|ui|png|json|pt|txt)", text))


def _files(folder: Path, patterns: tuple[str, ...]) -> set[str]:
    return {str(p.relative_to(folder)) for pattern in patterns for p in folder.rglob(pattern)
            if "__pycache__" not in p.parts}


@pytest.mark.parametrize("module", MODULES)
def test_every_module_file_is_listed_in_its_cmakelists(module):
    folder = HOME / module
    listed = _cmake_listed(folder / "CMakeLists.txt")
    shipped = _files(folder, ("*.py", "*.ui", "*.png")) - _files(folder / "Testing", ("*.py",))
    missing = shipped - listed
    assert not missing, f"{module}/CMakeLists.txt does not list {sorted(missing)} (Slicer would not package them)"
    absent = {f for f in listed if not (folder / f).exists() and not f.endswith("CMakeLists.txt")}
    assert not absent, f"{module}/CMakeLists.txt lists files that do not exist: {sorted(absent)}"


def test_every_library_file_is_listed_in_the_scanai_cmakelists():
    folder = HOME / "scanai"
    listed = _cmake_listed(folder / "CMakeLists.txt")
    shipped = _files(folder, ("*.py", "*.json", "*.pt"))
    assert not shipped - listed, f"scanai/CMakeLists.txt does not list {sorted(shipped - listed)}"
    assert not {f for f in listed if not (folder / f).exists()}, "scanai/CMakeLists.txt lists missing files"


def test_top_level_cmakelists_has_metadata_and_every_subdirectory():
    text = (HOME / "CMakeLists.txt").read_text()
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert re.search(rf'set\(EXTENSION_{key} "[^"]+"\)', text), f"EXTENSION_{key} is missing or empty"
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    for folder in ["scanai", *MODULES]:
        assert f"add_subdirectory({folder})" in text
        assert (HOME / folder / "CMakeLists.txt").is_file()
    assert (HOME / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert (HOME / "Resources" / "Icons" / "ScanAI.png").is_file()


@pytest.mark.parametrize("module", MODULES)
def test_module_cmakelists_registers_generic_and_python_tests(module):
    text = (HOME / module / "CMakeLists.txt").read_text()
    assert "WITH_GENERIC_TESTS" in text
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def _ui_widgets(module: str) -> tuple[ET.Element, dict[str, ET.Element]]:
    root = ET.parse(HOME / module / "Resources" / "UI" / f"{module}.ui").getroot()
    return root, {w.get("name"): w for w in root.iter("widget")}


def _parameter_fields(module: str) -> set[str]:
    tree = ast.parse((HOME / module / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(getattr(d, "id", "") == "parameterNodeWrapper"
                                                  for d in node.decorator_list):
            return {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError(f"{module}.py has no @parameterNodeWrapper class")


@pytest.mark.parametrize("module", MODULES)
def test_widget_names_only_existing_ui_objects(module):
    root, widgets = _ui_widgets(module)
    assert root.find("widget").get("class") == "qMRMLWidget", "the .ui root must be a qMRMLWidget"
    used = set(re.findall(r"self\.ui\.(\w+)", (HOME / module / f"{module}.py").read_text())) | MIXIN_UI_NAMES
    missing = used - set(widgets)
    assert not missing, f"{module}.py uses self.ui.{sorted(missing)} that {module}.ui does not define"
    sections = {w.find("property/string").text for w in widgets.values() if w.get("class") == "ctkCollapsibleButton"}
    assert {"Inputs", "Outputs", "Advanced"} <= sections  # a module may add task sections between them


@pytest.mark.parametrize("module", MODULES)
def test_ui_bindings_name_parameters_and_every_parameter_is_bound(module):
    _root, widgets = _ui_widgets(module)
    bound = {p.find("string").text for w in widgets.values() for p in w.findall("property")
             if p.get("name") == "SlicerParameterName"}
    fields = _parameter_fields(module)
    assert not bound - fields, f"{module}.ui binds unknown parameters {sorted(bound - fields)}"
    assert not fields - bound, f"parameters {sorted(fields - bound)} have no widget in {module}.ui"


@pytest.mark.parametrize("module", MODULES)
def test_node_selectors_follow_the_scene(module):
    root, widgets = _ui_widgets(module)
    selectors = {n for n, w in widgets.items() if w.get("class") == "qMRMLNodeComboBox"}
    connected = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    assert selectors <= connected, f"selectors {sorted(selectors - connected)} never get the scene"


def test_import_scanai_is_light():
    """Slicer imports every module at start-up: scanai and its domains must not pull torch (or Slicer) in."""
    code = ("import sys, scanai, scanai.core, scanai.cli, scanai.motion, scanai.pet, scanai.kspace, scanai.chest, "
            "scanai.artifact_correction, scanai.nn, scanai.motion.network, scanai.pet.network, "
            "scanai.kspace.network, scanai.chest.network, scanai.artifact_correction.network; "
            "heavy = [m for m in ('torch', 'slicer', 'vtk', 'qt') if m in sys.modules]; "
            "print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"importing scanai imported {result.stdout.strip()}"


def test_module_files_do_not_import_torch_at_load():
    """(Only scanai.mrml imports slicer: Testing/core/test_import_graph.py.)"""
    for module in MODULES:
        tree = ast.parse((HOME / module / f"{module}.py").read_text())
        top_level = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        for node in top_level:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not any(n.split(".")[0] == "torch" for n in names), f"{module}.py imports torch at load"


def test_cli_help_lists_every_module():
    result = subprocess.run([sys.executable, "-m", "scanai", "--help"], capture_output=True, text=True, check=True)
    for command in ("motion", "pet", "kspace", "chest", "demo"):
        assert command in result.stdout


def test_cli_reports_bad_input_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "scanai", "chest", str(tmp_path / "absent.dcm"), "--out",
                             str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
