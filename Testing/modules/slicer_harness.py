"""Headless Slicer on Slicer's own Python layer: the modules load and run as Slicer runs them.

What is real:

- the MRML scene, ``vtkSlicerApplicationLogic`` and the module logics (Volumes, Sequences, Segmentations, Tables,
  Markups, ...) from the ``slicer-core`` wheel;
- Slicer's pure-Python layer from ``../shared/slicer-python`` (unchanged copies of Slicer's files, never part of
  this project): ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper`` (serializers, validators, GUI
  connectors), ``slicer.util``, ``slicer.i18n``, ``slicer.packaging``, ``slicer.testing``; and the ``SampleData``
  and ``PyTorchUtils`` modules.

What stands in, because it needs the Qt application: the widget classes (:mod:`qt_standins`: ``qt``, ``ctk`` and the
qMRML widgets, with the behaviour the connectors and the modules rely on) and ``slicer.app`` (:class:`Application`:
settings, module manager, main window and File menu, the IO manager's readers, override cursor, start-up
environment, testing mode, the ``startupCompleted()`` signal, a hook on ``processEvents``).

:func:`install` builds the environment once (it skips the calling test module with the reason when
``../shared/slicer-python`` is absent); :func:`load_module` loads a module file the way Slicer's module factory does
(the module's ``parent.path`` set, ``slicer.modules.<name>`` registered); :func:`open_widget` creates its widget the
way Slicer shows a module panel; :func:`unload_module` emits Slicer's "module about to be unloaded" signal;
:func:`dialogs` leaves testing mode and records every message box a user would see, answering with a chosen button.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import pathlib
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import qt_standins

HOME = pathlib.Path(__file__).resolve().parents[2]
#: Slicer's own pure-Python layer (see its README): ``$SCANAI_SLICER_PYTHON``, else ``../shared/slicer-python``.
SLICER_PYTHON = pathlib.Path(os.environ.get("SCANAI_SLICER_PYTHON", HOME.parent / "shared" / "slicer-python"))
#: The modules of Slicer's Python layer that the harness takes from :data:`SLICER_PYTHON`.
REAL_MODULES = ("util", "i18n", "ScriptedLoadableModule", "parameterNodeWrapper", "packaging", "testing")
SKIP_REASON = (f"Slicer's own Python layer is absent ({SLICER_PYTHON}); the module tests need it "
               "(see ../shared/slicer-python/README.md)")

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


def available() -> bool:
    """Whether Slicer's Python layer is there to load the modules on."""
    return (SLICER_PYTHON / "slicer" / "ScriptedLoadableModule.py").is_file()


# ---------------------------------------------------------------------------------------------- application


class ModuleHandle:
    """What ``slicer.modules.<name>`` gives: ``name``, ``path``, ``logic()`` and ``widgetRepresentation()``."""

    def __init__(self, name: str, logic_factory: Callable, path: str = "") -> None:
        self.name = name
        self.path = path
        self._factory = logic_factory
        self._logic = None
        self.widget = None

    def logic(self):
        if self._logic is None:
            self._logic = self._factory()
        return self._logic

    def widgetRepresentation(self):
        return self.widget.parent if self.widget is not None else None


class ModuleManager(qt_standins.QObject):
    """``slicer.app.moduleManager()``: the unload signal and the loaded modules."""

    moduleAboutToBeUnloaded = qt_standins.Signal("moduleAboutToBeUnloaded(QString)")

    def module(self, name: str):
        return getattr(slicer().modules, name.lower(), None)


class Application(qt_standins.QObject):
    """Stand-in for ``slicer.app`` (a ``qSlicerApplication``) without a GUI.

    ``testing`` is Slicer's testing mode (``--testing``: message boxes return their default at once); ``on_events``
    is called by every ``processEvents()``, so a test can act when the module lets the event loop run, as a user's
    click would.
    """

    applicationName = "3D Slicer"
    startupCompleted = qt_standins.Signal("startupCompleted()")
    documentationBaseUrl = "https://slicer.readthedocs.io/en/latest/"

    def __init__(self) -> None:
        super().__init__()
        self._temporary = tempfile.TemporaryDirectory(prefix="scanai-slicer-")  # removed with the application
        self.temporaryPath = self._temporary.name
        self.cachePath = self.temporaryPath
        self.testing = True
        self.on_events: Callable[[], None] | None = None
        self.events = 0
        self.event_times: list[float] = []  # time.monotonic() of each processEvents call
        self._module_manager = ModuleManager()
        self._settings = qt_standins.QSettings()
        self.main_window = qt_standins.QWidget()
        self.main_window.objectName = "qSlicerMainWindow"
        self.file_menu = FileMenu()
        self.io_manager = CoreIOManager()

    def testingEnabled(self) -> bool:
        return self.testing

    def commandOptions(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(noMainWindow=False, testingEnabled=self.testing)

    def processEvents(self) -> None:
        self.events += 1
        self.event_times.append(time.monotonic())
        if self.on_events is not None:
            self.on_events()

    def startupEnvironment(self) -> ProcessEnvironment:
        """The environment Slicer started with (a ``QProcessEnvironment``): this process's."""
        return ProcessEnvironment(os.environ)

    def translate(self, context: str, text: str) -> str:
        """No translation is installed: the source text (as Slicer in English)."""
        return text

    def moduleManager(self) -> ModuleManager:
        return self._module_manager

    def settings(self) -> qt_standins.QSettings:
        return self._settings

    def userSettings(self) -> qt_standins.QSettings:
        return self._settings

    def topLevelWidgets(self) -> list:
        return [self.main_window, self.file_menu]

    def coreIOManager(self) -> CoreIOManager:
        return self.io_manager

    def layoutManager(self):
        return None

    def moduleDocumentationUrl(self, name: str) -> str:
        return f"{self.documentationBaseUrl}user_guide/modules/{name.lower()}.html"

    def setOverrideCursor(self, cursor) -> None:
        qt_standins.QApplication.setOverrideCursor(cursor)

    def restoreOverrideCursor(self) -> None:
        qt_standins.QApplication.restoreOverrideCursor()

    def pauseRender(self) -> None:
        pass

    def resumeRender(self) -> None:
        pass


class FileMenu(qt_standins.QWidget):
    """The main window's File menu (``lookupTopLevelWidget("FileMenu")``)."""

    def __init__(self) -> None:
        super().__init__()
        self.objectName = "FileMenu"
        self._actions: list = []

    def actions(self) -> list:
        return list(self._actions)

    def insertAction(self, before, action) -> None:
        self._actions.insert(self._actions.index(before), action)

    def insertSeparator(self, before) -> None:
        pass


class CoreIOManager:
    """``slicer.app.coreIOManager()`` as Sample Data calls it. Each file type is read with the module logic that
    Slicer's reader of that type calls: qSlicerVolumesReader (AddArchetypeVolume), qSlicerSequencesReader
    (AddSequence, then a browser node with the sequence as master and its proxy nodes), qSlicerSegmentationsReader
    (LoadSegmentationFromFile) and qSlicerTablesReader (AddTable, which reads the ``.schema.csv`` beside it)."""

    SUFFIXES = ((".seq.nrrd", "SequenceFile"), (".seg.nrrd", "SegmentationFile"), (".csv", "TableFile"),
                (".tsv", "TableFile"), (".nrrd", "VolumeFile"), (".nii.gz", "VolumeFile"), (".nii", "VolumeFile"))

    def __init__(self) -> None:
        self.loaded: list[tuple[str, str]] = []  # (file type, file name) of every load, for the tests

    def fileType(self, fileName: str) -> str:
        name = str(fileName).lower()
        return next((kind for suffix, kind in self.SUFFIXES if name.endswith(suffix)), "NoFile")

    def loadNodes(self, fileType, properties, loadedNodes=None, userMessages=None) -> bool:
        path, name = str(properties["fileName"]), properties.get("name")
        nodes = getattr(self, f"_read{fileType}", lambda *args: [])(path, name)
        for node in nodes:
            if loadedNodes is not None:
                loadedNodes.AddItem(node)
        self.loaded.append((fileType, path.replace("\\", "/").rsplit("/", 1)[-1]))
        return bool(nodes)

    @staticmethod
    def _readVolumeFile(path, name):
        node = slicer().modules.volumes.logic().AddArchetypeVolume(path, name, 8)  # bit 3: automatic window/level
        return [node] if node is not None else []

    @staticmethod
    def _readSequenceFile(path, name):
        logic = slicer().modules.sequences.logic()
        node = logic.AddSequence(path)
        if node is None:
            return []
        if name:
            node.SetName(slicer().mrmlScene.GetUniqueNameByString(name))
        browser = slicer().mrmlScene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{node.GetName()} browser")
        browser.SetAndObserveMasterSequenceNodeID(node.GetID())
        logic.UpdateProxyNodesFromSequences(browser)
        return [node, browser]

    @staticmethod
    def _readSegmentationFile(path, name):
        node = slicer().modules.segmentations.logic().LoadSegmentationFromFile(path, True, name)
        return [node] if node is not None else []

    @staticmethod
    def _readTableFile(path, name):
        node = slicer().modules.tables.logic().AddTable(path, name)
        return [node] if node is not None else []


class ProcessEnvironment:
    """``qt.QProcessEnvironment``: ``keys()`` and ``value(key)``."""

    def __init__(self, variables) -> None:
        self._variables = dict(variables)

    def keys(self) -> list[str]:
        return list(self._variables)

    def value(self, key: str, default: str = "") -> str:
        return self._variables.get(key, default)


class MessageBox(qt_standins.QWidget):
    """``ctk.ctkMessageBox``: what ``slicer.util.messageBox`` shows outside testing mode. ``exec_`` records the box
    in :data:`SHOWN` and returns :data:`ANSWER` (the button the simulated user presses)."""

    def __init__(self, parent=None) -> None:
        super().__init__(None)
        self.text = ""
        self.detailedText = ""
        self.icon = qt_standins.QMessageBox.Information
        self.standardButtons = qt_standins.QMessageBox.Ok

    def exec_(self) -> int:
        SHOWN.append({key: value for key, value in self.__dict__.items() if not key.startswith("_")})
        return ANSWER[0]


SHOWN: list[dict[str, Any]] = []
ANSWER = [qt_standins.QMessageBox.Ok]


class Dialog(qt_standins.QWidget):
    """``qt.QDialog`` for ``slicer.util.delayDisplay``: closes when its timer fires, which is at once here."""

    def close(self) -> None:
        self.visible = False

    def exec_(self) -> int:
        return 0


# ---------------------------------------------------------------------------------------------- install


def slicer() -> types.ModuleType:
    """The ``slicer`` module (after :func:`install`)."""
    return sys.modules["slicer"]


def _install_widget_stand_ins() -> None:
    qt = qt_standins.qt_module()
    qt.QDialog = Dialog
    ctk = qt_standins.ctk_module()
    ctk.ctkMessageBox = MessageBox
    sys.modules["qt"], sys.modules["ctk"] = qt, ctk


def _load_real_layer(module: types.ModuleType) -> None:
    """Put Slicer's Python layer in front of the ``slicer`` package and (re)import its modules from there."""
    folder = str(SLICER_PYTHON / "slicer")
    if folder not in module.__path__:
        module.__path__.insert(0, folder)
    for widget_class in qt_standins.QMRML_CLASSES:  # Slicer exposes the qMRML widget classes on ``slicer``
        setattr(module, widget_class.__name__, widget_class)
    for name in REAL_MODULES:
        sys.modules.pop(f"slicer.{name}", None)
        setattr(module, name, importlib.import_module(f"slicer.{name}"))


def install():
    """Build (once) the application-like environment; returns ``slicer.mrmlScene``. Skips the calling test module
    (pytest) when Slicer's Python layer is absent."""
    if not available():
        import pytest

        pytest.skip(SKIP_REASON, allow_module_level=True)
    import slicer as module

    if getattr(module, "_scanai_harness", False):
        return module.mrmlScene
    _install_widget_stand_ins()
    _load_real_layer(module)
    scene = module.vtkMRMLScene()
    application_logic = module.vtkSlicerApplicationLogic()
    application_logic.SetMRMLScene(scene)
    module.mrmlScene = scene
    module.app = Application()
    cache = module.vtkCacheManager()  # Slicer's remote-data cache (Sample Data downloads into it)
    cache.SetRemoteCacheDirectory(module.app.cachePath)
    scene.SetCacheManager(cache)
    module.modules = types.SimpleNamespace()
    for name, class_name in CORE_LOGICS.items():
        logic = getattr(module, class_name)()
        logic.SetMRMLApplicationLogic(application_logic)
        logic.SetMRMLScene(scene)
        application_logic.SetModuleLogic(name, logic)
        setattr(module.modules, name, ModuleHandle(name, lambda logic=logic: logic))
    module.applicationLogic = application_logic
    module._scanai_harness = True
    return scene


def real_layer_files() -> dict[str, str]:
    """Module name -> the file it was loaded from, for the modules of Slicer's Python layer."""
    return {f"slicer.{name}": sys.modules[f"slicer.{name}"].__file__ for name in REAL_MODULES}


# ---------------------------------------------------------------------------------------------- modules


def _import_file(name: str, path: pathlib.Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_module(name: str, folder: pathlib.Path | None = None) -> types.ModuleType:
    """Import ``<folder>/<name>.py`` (default: the extension's ``<name>/<name>.py``) as Slicer's scripted module
    factory does: the module object is created with a parent whose ``path`` is the file, and
    ``slicer.modules.<name>`` gives its path and logic. Loaded once per test session."""
    install()
    if name in sys.modules and hasattr(sys.modules[name], "_harness_module"):
        return sys.modules[name]
    path = (folder or HOME / name) / f"{name}.py"
    module = _import_file(name, path)
    parent = types.SimpleNamespace(path=str(path))
    module._harness_parent = parent
    module._harness_module = getattr(module, name)(parent)
    logic_class = getattr(module, f"{name}Logic")
    setattr(slicer().modules, name.lower(), ModuleHandle(name, logic_class, str(path)))
    return module


def load_slicer_module(name: str) -> types.ModuleType:
    """One of Slicer's own scripted modules from :data:`SLICER_PYTHON` ``/modules`` (``SampleData``,
    ``PyTorchUtils``)."""
    return load_module(name, SLICER_PYTHON / "modules")


def open_widget(name: str):
    """The module's widget as Slicer builds a module panel: created with a ``qSlicerScriptedLoadableModuleWidget``
    parent (a layout, the scene), ``setup()``, then ``enter()`` as the panel is shown. Returns the widget."""
    module = load_module(name)
    panel = qt_standins.qSlicerScriptedLoadableModuleWidget()
    panel.setLayout(qt_standins.QVBoxLayout())
    panel.setMRMLScene(slicer().mrmlScene)
    widget = getattr(module, f"{name}Widget")(panel)
    widget.setup()
    getattr(slicer().modules, name.lower()).widget = widget
    panel.isEntered = True
    widget.enter()
    return widget


def close_widget(widget) -> None:
    """The user leaves the module: ``exit()`` and the panel is no longer entered."""
    widget.parent.isEntered = False
    widget.exit()


def unload_module(name: str) -> None:
    """Slicer's module manager announces that the module is about to be unloaded (e.g. Reload)."""
    slicer().app.moduleManager().moduleAboutToBeUnloaded.emit(name)


@contextlib.contextmanager
def dialogs(answer: int = qt_standins.QMessageBox.Ok) -> Iterator[list[dict[str, Any]]]:
    """Leave testing mode inside the block: every message box Slicer would show is recorded (its text, buttons,
    ...) in the yielded list, and the simulated user answers ``answer``."""
    app = slicer().app
    SHOWN.clear()
    ANSWER[0] = answer
    app.testing = False
    try:
        yield SHOWN
    finally:
        app.testing = True
        ANSWER[0] = qt_standins.QMessageBox.Ok


@contextlib.contextmanager
def quiet_logging() -> Iterator[None]:
    """Silence the info messages of Slicer's layer (testing-mode dialog notes) inside the block."""
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.WARNING)
    try:
        yield
    finally:
        logging.getLogger().setLevel(level)
