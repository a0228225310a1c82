"""Stand-ins for the Qt, CTK and qMRML widget classes, which need the Slicer application (tests only).

Everything else a module runs on is Slicer's real Python layer (``../shared/slicer-python``, loaded by
:mod:`slicer_harness`). These classes behave like the real widgets where that layer and the modules touch them:

- **signals** connect, disconnect and emit; PythonQt's string form ``widget.connect("clicked(bool)", slot)`` works,
  and a slot that takes fewer arguments than the signal carries is called with the leading ones (as PythonQt does);
- **values** as Qt keeps them: a spin box clamps to its range and rounds to its decimals, a combo box's current
  index follows its items (the first item added becomes current), a check box emits ``stateChanged(int)``,
  setting a value that does not change emits nothing;
- **objects**: names, dynamic properties (``property`` / ``setProperty``), parents and ``children()``,
  ``findChildren``, enabled / visible / toolTip;
- ``qMRMLNodeComboBox`` lists the scene's nodes of its ``nodeTypes`` and, with ``noneEnabled`` off, selects the first
  one when the scene is set or a node is added, and another one when the current node is removed;
- ``QUiLoader`` builds these widgets from a Qt Designer ``.ui`` file: classes, names, properties in file order,
  layouts (children parented to the layout's widget), combo box items and the ``<connections>`` section.
"""

from __future__ import annotations

import inspect
import math
import types
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------- signals


def _accepted_arguments(slot: Callable) -> int | None:
    """How many positional arguments ``slot`` takes (None: any number)."""
    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty for p in parameters)


class BoundSignal:
    """One object's signal: ``connect(slot)``, ``disconnect(slot)`` and ``emit(*args)``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._slots: list[Callable] = []

    def connect(self, slot: Callable) -> None:
        self._slots.append(slot)

    def disconnect(self, slot: Callable | None = None) -> None:
        if slot is None:
            self._slots.clear()
        elif slot in self._slots:
            self._slots.remove(slot)

    def emit(self, *args: Any) -> None:
        for slot in list(self._slots):
            accepted = _accepted_arguments(slot)
            slot(*(args if accepted is None else args[:accepted]))

    @property
    def connections(self) -> int:
        """Number of connected slots (for tests)."""
        return len(self._slots)


class Signal:
    """A signal declared on a class, e.g. ``valueChanged = Signal("valueChanged(int)")``."""

    def __init__(self, signature: str) -> None:
        self.name = signature.split("(")[0]

    def __get__(self, instance, owner):
        if instance is None:
            return self
        signals = instance.__dict__.setdefault("_signals", {})
        if self.name not in signals:
            signals[self.name] = BoundSignal(self.name)
        return signals[self.name]


# ---------------------------------------------------------------------------------------------- objects


class QObject:
    """Name, dynamic properties, parent and children, string-form connections."""

    destroyed = Signal("destroyed()")

    def __init__(self, parent: QObject | None = None) -> None:
        self._properties: dict[str, Any] = {}
        self._children: list[QObject] = []
        self._parent: QObject | None = None
        self.objectName = ""
        if parent is not None:
            self.setParent(parent)

    # PythonQt exposes objectName as ``name`` too
    @property
    def name(self) -> str:
        return self.objectName

    @name.setter
    def name(self, value: str) -> None:
        self.objectName = value

    def setObjectName(self, value: str) -> None:
        self.objectName = value

    def className(self) -> str:
        return type(self).__name__

    def property(self, name: str) -> Any:
        return self._properties.get(name)

    def setProperty(self, name: str, value: Any) -> None:
        self._properties[name] = value

    def parent(self) -> QObject | None:
        return self._parent

    def setParent(self, parent: QObject | None) -> None:
        if self._parent is not None and self in self._parent._children:
            self._parent._children.remove(self)
        self._parent = parent
        if parent is not None:
            parent._children.append(self)

    def children(self) -> list[QObject]:
        return list(self._children)

    def findChildren(self, kind: type = None, name: str = "") -> list[QObject]:
        found = []
        for child in self._children:
            if (kind is None or isinstance(child, kind)) and (not name or child.objectName == name):
                found.append(child)
            found += child.findChildren(kind, name)
        return found

    def findChild(self, kind: type, name: str = "") -> QObject | None:
        found = self.findChildren(kind, name)
        return found[0] if found else None

    def isWidgetType(self) -> bool:
        return False

    def _signal(self, signature: str) -> BoundSignal:
        signal = getattr(self, signature.split("(")[0].strip(), None)
        if not isinstance(signal, BoundSignal):
            raise AttributeError(f"{type(self).__name__} has no signal {signature!r}")
        return signal

    def connect(self, signature: str, slot: Callable) -> bool:
        self._signal(signature).connect(slot)
        return True

    def disconnect(self, signature: str, slot: Callable | None = None) -> bool:
        self._signal(signature).disconnect(slot)
        return True

    def emit(self, signature: str, *args: Any) -> None:
        self._signal(signature).emit(*args)

    def deleteLater(self) -> None:
        self.destroyed.emit()
        self.setParent(None)


class QWidget(QObject):
    """Enabled, visible, tool tip, a layout; ``setMRMLScene`` only on qMRML widgets."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.enabled = True
        self.visible = True
        self.toolTip = ""
        self.windowTitle = ""
        self._layout: QLayout | None = None

    def isWidgetType(self) -> bool:
        return True

    def setEnabled(self, enabled: bool) -> None:
        self.enabled = bool(enabled)

    def isEnabled(self) -> bool:
        return self.enabled

    def setVisible(self, visible: bool) -> None:
        self.visible = bool(visible)

    def isVisible(self) -> bool:
        return self.visible

    def show(self) -> None:
        self.visible = True

    def hide(self) -> None:
        self.visible = False

    def setToolTip(self, text: str) -> None:
        self.toolTip = text

    def setLayout(self, layout: QLayout) -> None:
        self._layout = layout
        layout.setParent(self)

    def layout(self) -> QLayout | None:
        return self._layout


class QLayout(QObject):
    """A layout: what it is given becomes a child of the widget that owns it."""

    def _owner(self) -> QObject | None:
        owner = self.parent()
        while owner is not None and not owner.isWidgetType():
            owner = owner.parent()
        return owner

    def addWidget(self, widget: QWidget, *position: Any) -> None:
        widget.setParent(self._owner() or self)

    def addLayout(self, layout: QLayout, *position: Any) -> None:
        layout.setParent(self)

    def addRow(self, *items: Any) -> None:
        for item in items:
            if isinstance(item, QWidget):
                self.addWidget(item)
            elif isinstance(item, QLayout):
                self.addLayout(item)

    def addStretch(self, *args: Any) -> None:
        pass

    def addItem(self, *args: Any) -> None:
        pass


class QVBoxLayout(QLayout):
    pass


class QHBoxLayout(QLayout):
    pass


class QFormLayout(QLayout):
    pass


class QGridLayout(QLayout):
    pass


# ---------------------------------------------------------------------------------------------- value widgets


def _emit_if_changed(widget: QObject, attribute: str, value: Any, *signals: str) -> None:
    """Store ``value`` in ``widget.<attribute>`` and emit ``signals`` with it when it changed."""
    if widget.__dict__.get(attribute) == value:
        return
    widget.__dict__[attribute] = value
    for signal in signals:
        getattr(widget, signal).emit(value)


class QLabel(QWidget):
    def __init__(self, text: str = "", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.text = text
        self.wordWrap = False

    def setText(self, text: str) -> None:
        self.text = text


class QAbstractButton(QWidget):
    clicked = Signal("clicked(bool)")
    toggled = Signal("toggled(bool)")

    def __init__(self, text: str = "", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.text = text
        self.checkable = False
        self.__dict__["checked"] = False

    @property
    def checked(self) -> bool:
        return self.__dict__["checked"]

    @checked.setter
    def checked(self, value: bool) -> None:
        if self.__dict__["checked"] != bool(value):
            self.__dict__["checked"] = bool(value)
            self._checked_changed(bool(value))

    def _checked_changed(self, value: bool) -> None:
        self.toggled.emit(value)

    def setChecked(self, value: bool) -> None:
        self.checked = value

    def isChecked(self) -> bool:
        return self.checked

    def setText(self, text: str) -> None:
        self.text = text

    def click(self) -> None:
        """A user's click: nothing when disabled, else toggles a checkable button and emits ``clicked``."""
        if not self.enabled:
            return
        if self.checkable:
            self.checked = not self.checked
        self.clicked.emit(self.checked)


class QPushButton(QAbstractButton):
    pass


class QToolButton(QAbstractButton):
    pass


class QCheckBox(QAbstractButton):
    stateChanged = Signal("stateChanged(int)")

    def __init__(self, text: str = "", parent: QObject | None = None) -> None:
        super().__init__(text, parent)
        self.checkable = True

    def _checked_changed(self, value: bool) -> None:
        self.stateChanged.emit(2 if value else 0)
        self.toggled.emit(value)


class QLineEdit(QWidget):
    textChanged = Signal("textChanged(QString)")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.__dict__["text"] = ""
        self.placeholderText = ""

    @property
    def text(self) -> str:
        return self.__dict__["text"]

    @text.setter
    def text(self, value: str) -> None:
        _emit_if_changed(self, "text", str(value), "textChanged")

    def setText(self, value: str) -> None:
        self.text = value


class QTextEdit(QWidget):
    textChanged = Signal("textChanged()")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.plainText = ""
        self.readOnly = False

    def setPlainText(self, text: str) -> None:
        self.plainText = str(text)
        self.textChanged.emit()

    def toPlainText(self) -> str:
        return self.plainText

    def setHtml(self, html: str) -> None:
        self.setPlainText(html)

    def clear(self) -> None:
        self.setPlainText("")


class QTextBrowser(QTextEdit):
    pass


class QPlainTextEdit(QTextEdit):
    pass


class QProgressBar(QWidget):
    valueChanged = Signal("valueChanged(int)")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.minimum, self.maximum = 0, 100
        self.__dict__["value"] = 0
        self.format = "%p%"
        self.formats: list[str] = []  # every format set, in order (for tests)

    @property
    def value(self) -> int:
        return self.__dict__["value"]

    @value.setter
    def value(self, value: int) -> None:
        _emit_if_changed(self, "value", int(min(max(int(value), self.minimum), self.maximum)), "valueChanged")

    def setValue(self, value: int) -> None:
        self.value = value

    def setFormat(self, text: str) -> None:
        self.format = text
        self.formats.append(text)

    def setRange(self, minimum: int, maximum: int) -> None:
        self.minimum, self.maximum = int(minimum), int(maximum)


class QAbstractSpinBox(QWidget):
    """Value clamped to [minimum, maximum]; ``valueChanged`` only when the value changes."""

    valueChanged = Signal("valueChanged(double)")
    _defaults = (0, 99)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.__dict__["minimum"], self.__dict__["maximum"] = self._defaults
        self.__dict__["value"] = self._defaults[0]
        self.singleStep = 1
        self.suffix = ""
        self.prefix = ""
        self.specialValueText = ""

    def _fit(self, value: float) -> float:
        return min(max(value, self.minimum), self.maximum)

    @property
    def value(self):
        return self.__dict__["value"]

    @value.setter
    def value(self, value) -> None:
        _emit_if_changed(self, "value", self._fit(value), "valueChanged")

    def setValue(self, value) -> None:
        self.value = value

    @property
    def minimum(self):
        return self.__dict__["minimum"]

    @minimum.setter
    def minimum(self, value) -> None:
        self.__dict__["minimum"] = self._fit_bound(value)
        self.__dict__["maximum"] = max(self.maximum, self.minimum)
        self.value = self.value

    @property
    def maximum(self):
        return self.__dict__["maximum"]

    @maximum.setter
    def maximum(self, value) -> None:
        self.__dict__["maximum"] = self._fit_bound(value)
        self.__dict__["minimum"] = min(self.minimum, self.maximum)
        self.value = self.value

    def _fit_bound(self, value):
        return value

    def setMinimum(self, value) -> None:
        self.minimum = value

    def setMaximum(self, value) -> None:
        self.maximum = value

    def setRange(self, minimum, maximum) -> None:
        self.minimum, self.maximum = minimum, maximum


class QSpinBox(QAbstractSpinBox):
    valueChanged = Signal("valueChanged(int)")

    def _fit(self, value) -> int:
        return int(min(max(int(round(value)), self.minimum), self.maximum))

    def _fit_bound(self, value) -> int:
        return int(max(min(value, 2**31 - 1), -(2**31)))


class QSlider(QSpinBox):
    pass


class QDoubleSpinBox(QAbstractSpinBox):
    """Also rounds the value and its bounds to ``decimals`` (2 by default), as Qt does."""

    _defaults = (0.0, 99.99)

    def __init__(self, parent: QObject | None = None) -> None:
        self.__dict__["decimals"] = 2
        super().__init__(parent)

    @property
    def decimals(self) -> int:
        return self.__dict__["decimals"]

    @decimals.setter
    def decimals(self, value: int) -> None:
        self.__dict__["decimals"] = int(value)
        self.__dict__["minimum"] = self._fit_bound(self.minimum)
        self.__dict__["maximum"] = self._fit_bound(self.maximum)
        self.value = self.value

    def _fit_bound(self, value) -> float:
        value = float(value)
        return value if math.isinf(value) else round(value, self.decimals)

    def _fit(self, value) -> float:
        return float(min(max(round(float(value), self.decimals), self.minimum), self.maximum))


class QComboBox(QWidget):
    """Items and a current index; the first item added becomes current; ``clear`` leaves none (-1)."""

    currentIndexChanged = Signal("currentIndexChanged(int)")
    currentTextChanged = Signal("currentTextChanged(QString)")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._items: list[str] = []
        self.__dict__["currentIndex"] = -1

    @property
    def currentIndex(self) -> int:
        return self.__dict__["currentIndex"]

    @currentIndex.setter
    def currentIndex(self, index: int) -> None:
        index = int(index) if -1 <= int(index) < len(self._items) else -1
        if index != self.currentIndex:
            self.__dict__["currentIndex"] = index
            self.currentIndexChanged.emit(index)
            self.currentTextChanged.emit(self.currentText)

    def setCurrentIndex(self, index: int) -> None:
        self.currentIndex = index

    @property
    def currentText(self) -> str:
        return self._items[self.currentIndex] if self.currentIndex >= 0 else ""

    @currentText.setter
    def currentText(self, text: str) -> None:
        if text in self._items:
            self.currentIndex = self._items.index(text)

    def setCurrentText(self, text: str) -> None:
        self.currentText = text

    @property
    def count(self) -> int:
        return len(self._items)

    def addItem(self, text: str, *data: Any) -> None:
        self._items.append(str(text))
        if self.currentIndex < 0:
            self.currentIndex = 0

    def addItems(self, texts: list[str]) -> None:
        for text in texts:
            self.addItem(text)

    def itemText(self, index: int) -> str:
        return self._items[index]

    def setItemText(self, index: int, text: str) -> None:
        self._items[index] = str(text)

    def findText(self, text: str) -> int:
        return self._items.index(text) if text in self._items else -1

    def clear(self) -> None:
        self._items = []
        self.currentIndex = -1


# ---------------------------------------------------------------------------------------------- other Qt classes


class QAction(QObject):
    """A menu action (Sample Data adds one to the File menu)."""

    triggered = Signal("triggered()")

    def __init__(self, text: str = "", parent=None) -> None:
        super().__init__(parent)
        self.text = text
        self.toolTip = ""

    def setToolTip(self, text: str) -> None:
        self.toolTip = text


class QColor:
    """Enough of QColor for the parameterNodeWrapper's colour serializer: an #AARRGGBB name."""

    def __init__(self, name: str = "#ff000000") -> None:
        self._name = str(name)

    def name(self, format: int = 0) -> str:
        return self._name

    def setNamedColor(self, name: str) -> None:
        self._name = name

    def isValid(self) -> bool:
        return True


class QIcon:
    def __init__(self, path: str = "") -> None:
        self.path = str(path)


class QFile:
    ReadOnly = 1

    def __init__(self, path: str) -> None:
        self.path = str(path)

    def exists(self) -> bool:
        return Path(self.path).is_file()

    def open(self, mode: int) -> bool:
        return self.exists()

    def close(self) -> None:
        pass


class QSettings:
    """Application settings, kept in memory for the test run (shared by every instance, as one settings file)."""

    _values: dict[str, Any] = {}

    def value(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def setValue(self, key: str, value: Any) -> None:
        self._values[key] = value

    def contains(self, key: str) -> bool:
        return key in self._values


class QTimer(QObject):
    """``singleShot`` runs at once: there is no event loop in the harness."""

    timeout = Signal("timeout()")

    @staticmethod
    def singleShot(msec: int, callback: Callable) -> None:
        callback()


class QApplication:
    """The override-cursor stack that ``slicer.util`` consults."""

    _cursors: list[Any] = []

    @classmethod
    def overrideCursor(cls):
        return cls._cursors[-1] if cls._cursors else None

    @classmethod
    def setOverrideCursor(cls, cursor: Any) -> None:
        cls._cursors.append(cursor if isinstance(cursor, QCursor) else QCursor(cursor))  # a shape becomes a cursor

    @classmethod
    def restoreOverrideCursor(cls) -> None:
        if cls._cursors:
            cls._cursors.pop()

    @staticmethod
    def processEvents() -> None:
        pass


class QCursor:
    def __init__(self, shape: Any = None) -> None:
        self._shape = shape

    def shape(self) -> Any:
        return self._shape


class QMessageBox(QWidget):
    """Standard buttons as numbers; never shown (the harness runs in testing mode or records dialogs)."""

    Ok, Cancel, Yes, No, Retry, Close = 0x400, 0x400000, 0x4000, 0x10000, 0x80000, 0x200000
    Information, Warning, Critical, Question = 1, 2, 3, 4
    AcceptRole, RejectRole, ActionRole = 0, 1, 3


Qt = types.SimpleNamespace(WaitCursor=3, ArrowCursor=0, ShiftModifier=0x02000000, AlignLeft=1, Horizontal=1,
                           Vertical=2, Checked=2, Unchecked=0)


# ---------------------------------------------------------------------------------------------- CTK


class ctkCollapsibleButton(QAbstractButton):
    contentsCollapsed = Signal("contentsCollapsed(bool)")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__("", parent)
        self.__dict__["collapsed"] = False

    @property
    def collapsed(self) -> bool:
        return self.__dict__["collapsed"]

    @collapsed.setter
    def collapsed(self, value: bool) -> None:
        _emit_if_changed(self, "collapsed", bool(value), "contentsCollapsed")


class ctkPathLineEdit(QWidget):
    currentPathChanged = Signal("currentPathChanged(QString)")
    Files, Dirs = 1, 2

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.__dict__["currentPath"] = ""
        self.filters = 0
        self.nameFilters: list[str] = []

    @property
    def currentPath(self) -> str:
        return self.__dict__["currentPath"]

    @currentPath.setter
    def currentPath(self, value: str) -> None:
        _emit_if_changed(self, "currentPath", str(value), "currentPathChanged")

    def setCurrentPath(self, value: str) -> None:
        self.currentPath = value


class ctkCheckBox(QCheckBox):
    pass


class ctkComboBox(QComboBox):
    pass


class ctkDoubleSpinBox(QDoubleSpinBox):
    pass


class ctkSliderWidget(QDoubleSpinBox):
    pass


class ctkDoubleSlider(QDoubleSpinBox):
    pass


class ctkCheckablePushButton(QPushButton):
    pass


class ctkRangeWidget(QWidget):
    pass


class ctkDoubleRangeSlider(QWidget):
    pass


class ctkDirectoryButton(QWidget):
    directoryChanged = Signal("directoryChanged(QString)")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.directory = ""


class ctkColorPickerButton(QWidget):
    colorChanged = Signal("colorChanged(QColor)")


# ---------------------------------------------------------------------------------------------- qMRML


class qMRMLWidget(QWidget):
    """A widget with a scene: ``setMRMLScene`` emits ``mrmlSceneChanged`` (the .ui connects it to its selectors)."""

    mrmlSceneChanged = Signal("mrmlSceneChanged(vtkMRMLScene*)")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene) -> None:
        if scene is not self._scene:
            self._scene = scene
            self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):
        return self._scene


class qSlicerWidget(qMRMLWidget):
    pass


class qSlicerScriptedLoadableModuleWidget(qSlicerWidget):
    """The panel Slicer gives a scripted module's widget as ``parent``: ``isEntered`` while the module is shown."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.isEntered = False


class qMRMLNodeComboBox(qMRMLWidget):
    """The scene's nodes of ``nodeTypes`` (hidden ones only with ``showHidden``); see the module docstring."""

    currentNodeChanged = Signal("currentNodeChanged(vtkMRMLNode*)")
    currentNodeIDChanged = Signal("currentNodeIDChanged(QString)")
    nodeAdded = Signal("nodeAdded(vtkMRMLNode*)")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.nodeTypes: list[str] = []
        self.noneEnabled = False
        self.addEnabled = True
        self.removeEnabled = True
        self.renameEnabled = False
        self.editEnabled = False
        self.showHidden = False
        self.showChildNodeTypes = True
        self.selectNodeUponCreation = True
        self.noneDisplay = "None"
        self.baseName = ""
        self._attributes: dict[str, tuple[str, Any]] = {}
        self._current = None
        self._observations: list[int] = []

    def setMRMLScene(self, scene) -> None:
        if scene is self._scene:
            return
        if self._scene is not None:
            for tag in self._observations:
                self._scene.RemoveObserver(tag)
        self._observations = []
        self._scene = scene
        if scene is not None:
            self._observations = [scene.AddObserver(scene.NodeAddedEvent, self._onNodeAdded),
                                  scene.AddObserver(scene.NodeRemovedEvent, self._onNodeRemoved)]
        self.mrmlSceneChanged.emit(scene)
        if self._current is not None and (scene is None or self._current.GetScene() is not scene):
            self._select(None)
        self._selectDefault()

    def addAttribute(self, nodeType: str, name: str, value: Any = None) -> None:
        self._attributes[name] = (nodeType, value)

    def _matches(self, node) -> bool:
        if node is None or not any(node.IsA(kind) for kind in self.nodeTypes):
            return False
        if not self.showChildNodeTypes and node.GetClassName() not in self.nodeTypes:
            return False
        if not self.showHidden and node.GetHideFromEditors():
            return False
        return all(node.GetAttribute(name) == (None if value is None else str(value))
                   for name, (_kind, value) in self._attributes.items() if node.IsA(_kind))

    def nodes(self) -> list:
        if self._scene is None:
            return []
        all_nodes = (self._scene.GetNthNode(i) for i in range(self._scene.GetNumberOfNodes()))
        return [node for node in all_nodes if self._matches(node)]

    def nodeCount(self) -> int:
        return len(self.nodes())

    def currentNode(self):
        return self._current

    def currentNodeID(self) -> str:
        return self._current.GetID() if self._current is not None else ""

    def setCurrentNode(self, node) -> None:
        if node is not None and not self._matches(node):
            node = None
        self._select(node)
        if node is None:
            self._selectDefault()

    def setCurrentNodeID(self, node_id: str) -> None:
        self.setCurrentNode(self._scene.GetNodeByID(node_id) if self._scene is not None and node_id else None)

    def _select(self, node) -> None:
        if node is not self._current:
            self._current = node
            self.currentNodeChanged.emit(node)
            self.currentNodeIDChanged.emit(node.GetID() if node is not None else "")

    def _selectDefault(self) -> None:
        if self._current is None and not self.noneEnabled:
            candidates = self.nodes()
            if candidates:
                self._select(candidates[0])

    def _onNodeAdded(self, caller, event) -> None:
        self._selectDefault()

    def _onNodeRemoved(self, caller, event) -> None:
        if self._current is not None and self._current.GetScene() is not self._scene:
            self._select(None)
            self._selectDefault()


class qMRMLSliderWidget(ctkSliderWidget):
    pass


class qMRMLSpinBox(ctkDoubleSpinBox):
    pass


class qMRMLRangeWidget(ctkRangeWidget):
    pass


# ---------------------------------------------------------------------------------------------- .ui loading


def _value(element: ElementTree.Element) -> Any:
    """The Python value of a property's value element (<string>, <bool>, <number>, <double>, <stringlist>, ...)."""
    tag, text = element.tag, element.text or ""
    if tag == "bool":
        return text.strip() == "true"
    if tag == "number":
        return int(text)
    if tag == "double":
        return float(text)
    if tag == "stringlist":
        return [item.text or "" for item in element.findall("string")]
    if tag in ("enum", "set"):
        return text.split("::")[-1]
    return text


class QUiLoader:
    """Builds a widget tree from a Qt Designer ``.ui`` file with the stand-in classes."""

    def __init__(self, classes: dict[str, type] | None = None) -> None:
        self.classes = classes or {}

    def load(self, qfile: QFile) -> QWidget:
        root = ElementTree.parse(qfile.path).getroot()
        named: dict[str, QObject] = {}
        top = self._widget(root.find("widget"), None, named)
        for connection in root.iterfind("connections/connection"):
            sender, receiver = named[connection.findtext("sender")], named[connection.findtext("receiver")]
            slot = getattr(receiver, connection.findtext("slot").split("(")[0])
            sender.connect(connection.findtext("signal"), slot)
        return top

    def _class(self, name: str) -> type:
        if name not in self.classes:
            raise RuntimeError(f"The harness has no stand-in for the widget class {name} used in the .ui file.")
        return self.classes[name]

    def _widget(self, element: ElementTree.Element, parent: QObject | None, named: dict) -> QWidget:
        widget = self._class(element.get("class"))()
        if parent is not None:
            widget.setParent(parent)
        self._name_and_properties(widget, element, named)
        for child in element:
            if child.tag == "widget":
                self._widget(child, widget, named)
            elif child.tag == "layout":
                layout = self._layout(child, named)
                widget.setLayout(layout)
                self._layout_items(layout, child, named)
            elif child.tag == "item" and isinstance(widget, QComboBox):
                widget.addItem(child.findtext("property/string") or "")
        return widget

    def _layout(self, element: ElementTree.Element, named: dict) -> QLayout:
        layout = self._class(element.get("class"))()
        self._name_and_properties(layout, element, named)
        return layout

    def _layout_items(self, layout: QLayout, element: ElementTree.Element, named: dict) -> None:
        for item in element.iterfind("item"):
            for child in item:
                if child.tag == "widget":
                    layout.addWidget(self._widget(child, None, named))
                elif child.tag == "layout":
                    inner = self._layout(child, named)
                    layout.addLayout(inner)
                    self._layout_items(inner, child, named)

    @staticmethod
    def _name_and_properties(obj: QObject, element: ElementTree.Element, named: dict) -> None:
        name = element.get("name", "")
        obj.objectName = name
        if name:
            named[name] = obj
        for prop in element.iterfind("property"):
            value = _value(prop[0]) if len(prop) else None
            key = prop.get("name")
            if prop.get("stdset") == "0":
                obj.setProperty(key, value)
            elif key == "filters" and isinstance(obj, ctkPathLineEdit):
                obj.filters = getattr(ctkPathLineEdit, str(value), 0)
            elif key == "nameFilters" and isinstance(value, str):
                obj.nameFilters = value.split(";;")
            elif not key.startswith(("geometry", "sizePolicy", "orientation")):
                setattr(obj, key, value)


# ---------------------------------------------------------------------------------------------- modules


def _namespace(name: str, classes: list[type], **extra: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update({cls.__name__: cls for cls in classes}, **extra)
    return module


QT_CLASSES = [QObject, QWidget, QLayout, QVBoxLayout, QHBoxLayout, QFormLayout, QGridLayout, QLabel,
              QAbstractButton, QPushButton, QToolButton, QCheckBox, QLineEdit, QTextEdit, QTextBrowser,
              QPlainTextEdit, QProgressBar, QAbstractSpinBox, QSpinBox, QSlider, QDoubleSpinBox, QComboBox, QColor,
              QIcon, QFile, QSettings, QTimer, QApplication, QCursor, QMessageBox, QAction]
CTK_CLASSES = [ctkCollapsibleButton, ctkPathLineEdit, ctkCheckBox, ctkComboBox, ctkDoubleSpinBox, ctkSliderWidget,
               ctkDoubleSlider, ctkCheckablePushButton, ctkRangeWidget, ctkDoubleRangeSlider, ctkDirectoryButton,
               ctkColorPickerButton]
#: The qMRML / qSlicer widget classes, which Slicer exposes as attributes of the ``slicer`` module.
QMRML_CLASSES = [qMRMLWidget, qSlicerWidget, qSlicerScriptedLoadableModuleWidget, qMRMLNodeComboBox,
                 qMRMLSliderWidget, qMRMLSpinBox, qMRMLRangeWidget]
UI_CLASSES = {cls.__name__: cls for cls in QT_CLASSES + CTK_CLASSES + QMRML_CLASSES}


def qt_module() -> types.ModuleType:
    """The ``qt`` module stand-in (``QUiLoader`` knows every stand-in class)."""
    return _namespace("qt", QT_CLASSES, Qt=Qt, QUiLoader=lambda: QUiLoader(UI_CLASSES))


def ctk_module() -> types.ModuleType:
    """The ``ctk`` module stand-in."""
    return _namespace("ctk", CTK_CLASSES)
