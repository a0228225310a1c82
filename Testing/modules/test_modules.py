"""The four scripted modules, loaded as Slicer loads them, on a real MRML scene (headless harness).

Each module's ``*Test`` methods run one by one on real nodes; the module class, parameter node and logic are
checked the way Slicer's generic module test does.
"""

from __future__ import annotations

import ast
import inspect
import os

import pytest
import slicer_harness

MODULES = ["MotionCorrection", "ParametricPET", "KSpaceCalibration", "ChestQC"]

scene = slicer_harness.install()


def _test_methods(name: str) -> list[str]:
    source = (slicer_harness.HOME / name / f"{name}.py").read_text()
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == f"{name}Test":
            return [f.name for f in node.body if isinstance(f, ast.FunctionDef) and f.name.startswith("test_")]
    return []


SELF_TESTS = [(name, method) for name in MODULES for method in _test_methods(name)]


@pytest.mark.parametrize("name", MODULES)
def test_module_loads_with_complete_metadata(name):
    module = slicer_harness.load_module(name)
    parent = module._harness_parent
    assert parent.title and parent.categories and parent.contributors
    assert "href=" in parent.helpText, "help text must link to the README section"
    assert parent.acknowledgementText
    for suffix in ("Widget", "Logic", "Test", "ParameterNode"):
        assert hasattr(module, f"{name}{suffix}"), f"{name}{suffix} is missing"


@pytest.mark.parametrize("name", MODULES)
def test_parameter_node_is_a_singleton_with_defaults(name):
    import slicer

    module = slicer_harness.load_module(name)
    scene.Clear(0)
    leftover = scene.GetSingletonNode(name, "vtkMRMLScriptedModuleNode")  # Clear(0) only resets singletons
    if leftover is not None:
        scene.RemoveNode(leftover)
    logic = slicer.modules.__dict__[name.lower()].logic()
    first, second = logic.getParameterNode(), logic.getParameterNode()
    assert first.parameterNode is second.parameterNode
    assert first.parameterNode.GetAttribute("ModuleName") == name
    for parameter, info in module.__dict__[f"{name}ParameterNode"].allParameters.items():
        assert getattr(first, parameter) == info.default.value


def test_every_module_has_self_tests():
    for name in MODULES:
        assert _test_methods(name), f"{name}Test has no test_ methods"


@pytest.mark.parametrize("name", MODULES)
def test_run_test_runs_every_test_method(name):
    module = slicer_harness.load_module(name)
    source = inspect.getsource(module.__dict__[f"{name}Test"].runTest)
    assert "mrml.run_test_methods(self)" in source, f"{name}Test.runTest must run every test_ method"


@pytest.mark.parametrize(("name", "method"), SELF_TESTS, ids=[f"{n}.{m}" for n, m in SELF_TESTS])
def test_module_self_test(name, method):
    """Runs one ``test_*`` method of the module's Test class, as Slicer's self-test does, with setUp first."""
    import unittest

    module = slicer_harness.load_module(name)
    case = module.__dict__[f"{name}Test"](method)
    result = unittest.TestResult()
    case.run(result)
    if result.skipped:
        pytest.skip(result.skipped[0][1])
    problems = result.errors + result.failures
    assert not problems, problems[0][1]


def test_modules_run_on_slicers_own_python_layer():
    """ScriptedLoadableModule, parameterNodeWrapper, slicer.util, slicer.packaging, ... are Slicer's own files
    (../shared/slicer-python), not stand-ins; only the Qt/CTK/qMRML widget classes stand in."""
    files = slicer_harness.real_layer_files()
    assert all(path.startswith(str(slicer_harness.SLICER_PYTHON)) for path in files.values()), files
    module = slicer_harness.load_module("ChestQC")
    assert module.ScriptedLoadableModuleWidget.__module__ == "slicer.ScriptedLoadableModule"
    assert module.parameterNodeWrapper.__module__.startswith("slicer.parameterNodeWrapper")


@pytest.mark.skipif(not os.environ.get("SCANAI_STOCK_SLICER"), reason="only in the stock-Slicer environment")
def test_the_stock_slicer_environment_has_only_what_slicer_bundles():
    import importlib.util

    absent = ("torch", "twixtools", "h5py", "tqdm", "matplotlib", "skimage")
    assert [name for name in absent if importlib.util.find_spec(name) is not None] == []
