"""Headless Slicer: a real MRML scene from ``slicer-core`` plus test-only stand-ins for the application.

``slicer-core`` (PyPI) provides MRML and the Qt-free module logics (Sequences, Segmentations, Volumes,
SubjectHierarchy, Tables, Markups, Plots, Transforms) but not the Slicer application. :func:`install` builds an
application-like environment from it:

- a ``vtkMRMLScene`` with a ``vtkSlicerApplicationLogic`` and those logics registered, as ``slicer.mrmlScene``;
- ``slicer.modules.<name>.logic()`` for the core logics and for every scripted module loaded by :func:`load_module`;
- stand-ins, for tests only, of the application's pure-Python pieces that the wheel lacks:
  ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper``, ``slicer.i18n``, ``slicer.app``, and
  ``qt`` / ``ctk`` import stand-ins (widgets are checked statically, never instantiated).

The stand-ins follow the behaviour of Slicer 5.12 where the module code can observe it: parameter nodes are
singleton ``vtkMRMLScriptedModuleNode``\\s tagged with the module name, node-typed parameters are node
references, other parameters are stored as text, ``WithinRange`` is enforced on assignment.
"""

from __future__ import annotations

import contextlib
import enum
import importlib.util
import logging
import pathlib
import sys
import tempfile
import types
import typing
import unittest

import slicer

HOME = pathlib.Path(__file__).resolve().parent.parent

CORE_LOGICS = {
    "volumes": "vtkSlicerVolumesLogic",
    "sequences": "vtkSlicerSequencesLogic",
    "segmentations": "vtkSlicerSegmentationsModuleLogic",
    "subjecthierarchy": "vtkSlicerSubjectHierarchyModuleLogic",
    "tables": "vtkSlicerTablesLogic",
    "markups": "vtkSlicerMarkupsLogic",
    "plots": "vtkSlicerPlotsLogic",
    "transforms": "vtkSlicerTransformLogic",
    "colors": "vtkMRMLColorLogic",  # the default colour tables (PET-Heat, ...), as in the application
}


# ---------------------------------------------------------------------------------------------- application


class _ModuleHandle:
    """What ``slicer.modules.<name>`` gives: ``logic()`` and ``path``."""

    def __init__(self, name: str, logic_factory, path: str = "") -> None:
        self.name = name
        self._factory = logic_factory
        self._logic = None
        self.path = path

    def logic(self):
        if self._logic is None:
            self._logic = self._factory()
        return self._logic


class _Application:
    """Stand-in for ``slicer.app``: testing mode on, no GUI."""

    applicationName = "3D Slicer (headless test harness)"

    def __init__(self) -> None:
        self.temporaryPath = tempfile.mkdtemp(prefix="scanai-slicer-")
        self.commandOptions = types.SimpleNamespace(noMainWindow=True, testingEnabled=True)
        self.connections: list[tuple[str, object]] = []

    def testingEnabled(self) -> bool:
        return True

    def processEvents(self) -> None:
        pass

    def connect(self, signal: str, slot) -> None:
        self.connections.append((signal, slot))

    def layoutManager(self):
        return None

    def setOverrideCursor(self, cursor) -> None:
        pass

    def restoreOverrideCursor(self) -> None:
        pass

    def pauseRender(self) -> None:
        pass

    def resumeRender(self) -> None:
        pass


class _Permissive:
    """Any attribute, any call: stands in for Qt/CTK objects in code paths tests do not render."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __getattr__(self, name: str):
        return _Permissive()

    def __call__(self, *args, **kwargs):
        return _Permissive()


class _StandInModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Permissive()


# ---------------------------------------------------------------------------------------------- ScriptedLoadableModule


class ScriptedLoadableModule:
    def __init__(self, parent) -> None:
        self.parent = parent
        self.moduleName = self.__class__.__name__
        parent.title = ""
        parent.categories = []
        parent.dependencies = []
        parent.contributors = []
        parent.helpText = ""
        parent.acknowledgementText = ""

    def resourcePath(self, filename: str) -> str:
        module_dir = pathlib.Path(sys.modules[self.__class__.__module__].__file__).parent
        return str(module_dir / "Resources" / filename)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None) -> None:
        self.parent = parent
        self.moduleName = self.__class__.__name__.removesuffix("Widget")
        self.layout = _Permissive()

    def resourcePath(self, filename: str) -> str:
        module_dir = pathlib.Path(sys.modules[self.__class__.__module__].__file__).parent
        return str(module_dir / "Resources" / filename)

    def setup(self) -> None:
        pass

    def cleanup(self) -> None:
        pass


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None) -> None:
        self.moduleName = self.__class__.__name__.removesuffix("Logic")

    def getParameterNode(self):
        """The module's singleton parameter node, created on first use (as in Slicer)."""
        scene = slicer.mrmlScene
        node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node:
            return node
        node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)
        node.SetSingletonTag(self.moduleName)
        node.SetName(scene.GenerateUniqueName(self.moduleName))
        node.SetAttribute("ModuleName", self.moduleName)
        return scene.AddNode(node)


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message: str, msec: int = 1000) -> None:
        logging.info(message)

    def takeScreenshot(self, name: str, description: str, type: int = -1) -> None:
        pass


# ---------------------------------------------------------------------------------------------- parameterNodeWrapper


class WithinRange:
    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value) -> None:
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"{value} is not within [{self.minimum}, {self.maximum}]")


class Minimum(WithinRange):
    def __init__(self, minimum: float) -> None:
        super().__init__(minimum, float("inf"))


class Maximum(WithinRange):
    def __init__(self, maximum: float) -> None:
        super().__init__(float("-inf"), maximum)


class Choice:
    def __init__(self, choices) -> None:
        self.choices = list(choices)

    def validate(self, value) -> None:
        if value not in self.choices:
            raise ValueError(f"{value!r} is not one of {self.choices}")


class Default:
    def __init__(self, value) -> None:
        self.value = value


def _base_type(annotation):
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        return base, extras
    return annotation, []


def _is_node_type(base) -> bool:
    return isinstance(base, type) and issubclass(base, slicer.vtkMRMLNode)


def _decode(base, text: str):
    if base is bool:
        return text == "True"
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return base[text]
    if base is pathlib.Path:
        return pathlib.Path(text)
    return base(text)


def _encode(value) -> str:
    return value.name if isinstance(value, enum.Enum) else str(value)


def parameterNodeWrapper(cls):
    """Stand-in of ``slicer.parameterNodeWrapper.parameterNodeWrapper`` (typed fields persisted in the node)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {}
    for name, annotation in hints.items():
        base, extras = _base_type(annotation)
        default = getattr(cls, name, None)
        for extra in extras:
            if isinstance(extra, Default):
                default = extra.value
        fields[name] = (base, extras, default)

    def make_property(name: str, base, extras):
        def getter(self):
            if _is_node_type(base):
                return self.parameterNode.GetNodeReference(name)
            text = self.parameterNode.GetParameter(name)
            return _decode(base, text) if text != "" else None

        def setter(self, value):
            if _is_node_type(base):
                if value is not None and not value.IsA(base.__name__):
                    raise TypeError(f"{name} expects a {base.__name__}, got {value.GetClassName()}")
                self.parameterNode.SetNodeReferenceID(name, value.GetID() if value is not None else None)
                return
            for extra in extras:
                if hasattr(extra, "validate"):
                    extra.validate(value)
            self.parameterNode.SetParameter(name, _encode(value))

        return property(getter, setter)

    namespace = {"allParameters": dict(fields)}

    def __init__(self, parameterNode):
        self.parameterNode = parameterNode
        for name, (base, _extras, default) in fields.items():
            if not _is_node_type(base) and parameterNode.GetParameter(name) == "" and default is not None:
                setattr(self, name, default)

    namespace["__init__"] = __init__
    namespace["connectGui"] = lambda self, gui: object()
    namespace["disconnectGui"] = lambda self, tag: None
    namespace["AddObserver"] = lambda self, *args: self.parameterNode.AddObserver(*args)
    namespace["RemoveObserver"] = lambda self, tag: self.parameterNode.RemoveObserver(tag)
    for name, (base, extras, _default) in fields.items():
        namespace[name] = make_property(name, base, extras)
    return type(cls.__name__, (), namespace)


# ---------------------------------------------------------------------------------------------- install / load


def _stand_in_module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def _install_stand_ins() -> None:
    loadable = _stand_in_module(
        "slicer.ScriptedLoadableModule",
        ScriptedLoadableModule=ScriptedLoadableModule,
        ScriptedLoadableModuleWidget=ScriptedLoadableModuleWidget,
        ScriptedLoadableModuleLogic=ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest=ScriptedLoadableModuleTest,
        __all__=["ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic",
                 "ScriptedLoadableModuleTest"],
    )
    wrapper = _stand_in_module("slicer.parameterNodeWrapper", parameterNodeWrapper=parameterNodeWrapper,
                               WithinRange=WithinRange, Minimum=Minimum, Maximum=Maximum, Choice=Choice,
                               Default=Default)
    i18n = _stand_in_module("slicer.i18n", tr=lambda text: text, translate=lambda context, text: text)
    for name, module in {"slicer.ScriptedLoadableModule": loadable, "slicer.parameterNodeWrapper": wrapper,
                         "slicer.i18n": i18n}.items():
        sys.modules[name] = module
        setattr(slicer, name.split(".")[1], module)
    for name in ("qt", "ctk"):
        if importlib.util.find_spec(name) is None:
            sys.modules[name] = _StandInModule(name)
    util = importlib.import_module("slicer.util")
    if not hasattr(util, "tryWithErrorDisplay"):
        util.tryWithErrorDisplay = lambda *args, **kwargs: contextlib.nullcontext()


def install() -> slicer.vtkMRMLScene:
    """Build (once) the application-like environment; returns ``slicer.mrmlScene``."""
    if getattr(slicer, "_scanai_harness", False):
        return slicer.mrmlScene
    scene = slicer.vtkMRMLScene()
    application_logic = slicer.vtkSlicerApplicationLogic()
    application_logic.SetMRMLScene(scene)
    slicer.mrmlScene = scene
    slicer.app = _Application()
    slicer.modules = types.SimpleNamespace()
    for name, class_name in CORE_LOGICS.items():
        logic = getattr(slicer, class_name)()
        logic.SetMRMLApplicationLogic(application_logic)
        logic.SetMRMLScene(scene)
        application_logic.SetModuleLogic(name, logic)
        setattr(slicer.modules, name, _ModuleHandle(name, lambda logic=logic: logic))
    slicer.applicationLogic = application_logic
    _install_stand_ins()
    slicer._scanai_harness = True
    return scene


def load_module(name: str) -> types.ModuleType:
    """Import ``<name>/<name>.py`` of the extension as Slicer does, instantiate its module class, register it."""
    install()
    if name in sys.modules:
        return sys.modules[name]
    path = HOME / name / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    parent = types.SimpleNamespace()
    module_object = getattr(module, name)(parent)
    logic_class = getattr(module, f"{name}Logic")
    setattr(slicer.modules, name.lower(), _ModuleHandle(name, logic_class, str(path)))
    module._harness_parent = parent
    module._harness_module = module_object
    return module
