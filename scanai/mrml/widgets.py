"""What the four module widgets share: progress and Cancel, computations in a worker process, package and PyTorch
installation, sample data, self-test running, and :class:`ModuleWidgetMixin`."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import slicer
import vtk

from scanai.core.device import torch_available
from scanai.core.progress import CancelToken, Progress

try:  # Slicer's translation function (the status texts, dialogs and errors a user reads)
    from slicer.i18n import tr as _
except ImportError:  # slicer-core without Slicer's Python layer: the source text

    def _(text: str) -> str:
        return text


# ---------------------------------------------------------------------------------------------- progress


def slicer_progress(progress_bar=None, token: CancelToken | None = None) -> Progress:
    """A :class:`Progress` that drives a ``QProgressBar`` and keeps the application responsive.

    The widget's Cancel button calls ``token.cancel()``; the next progress report then raises ``Cancelled``.
    """

    def update(fraction: float, message: str) -> None:
        if progress_bar is not None:
            progress_bar.value = int(round(100 * fraction))
            progress_bar.setFormat(f"{message} (%p%)" if message else "%p%")
        app = getattr(slicer, "app", None)
        if app is not None:
            app.processEvents()

    return Progress(update, token or CancelToken())


# ---------------------------------------------------------------------------------------------- computations


def compute(job: str, progress: Progress, in_worker: bool = False, **arguments):
    """Run one of the library's computations (a key of :data:`scanai.core.jobs.JOBS`) with ``arguments``.

    in_worker=False: in this process (tests, Python users, the CLI). in_worker=True (the module widgets): in a
    worker process run by Slicer's Python (:func:`scanai.core.jobs.run_worker`), so Slicer's window keeps
    answering (its events are processed at least every 50 ms) and Cancel ends the worker at once; the scene is
    not touched until the result is back.
    """
    from scanai.core import jobs

    if not in_worker:
        return jobs.function_of(job)(**arguments, progress=progress)
    return jobs.run_worker(job, arguments, progress, launch=_launch_worker, idle=slicer.app.processEvents)


def _launch_worker(command: list[str], environment: dict[str, str]):
    """Start the worker with Slicer's own Python (``PythonSlicer``; this interpreter outside Slicer), in Slicer's
    start-up environment with ScanAI's folder on PYTHONPATH, as SlicerMONAIAuto3DSeg launches its inference."""
    import shutil

    from scanai.core.jobs import worker_environment

    python = shutil.which("PythonSlicer") or command[0]
    return slicer.util.launchConsoleProcess([python, *command[1:]], useStartupEnvironment=True,
                                            updateEnvironment=worker_environment(slicer.util.startupEnvironment()))


# ---------------------------------------------------------------------------------------------- sample data


def register_sample_data(module: str, module_file: str, loader) -> None:
    """Add ``module``'s sample (generated on this computer by :mod:`scanai.samples`, never downloaded) to Slicer's
    Sample Data module, category ScanAI, with the module's icon; its button calls ``loader(source)``. Also lets
    ``SampleData.downloadSample(name)`` generate the files (a URL rule, where Sample Data has them)."""
    import SampleData

    from scanai import samples

    logic = SampleData.SampleDataLogic
    logic.registerCustomSampleDataSource(
        **samples.source_arguments(module, samples.sample_folder(slicer.app.cachePath)),
        thumbnailFileName=str(pathlib.Path(module_file).parent / "Resources" / "Icons" / f"{module}.png"),
        customDownloader=loader)
    if hasattr(logic, "registerUrlRewriteRule"):
        logic.registerUrlRewriteRule(samples.CATEGORY, samples.generate_for_url)


def load_sample_data(module: str, source=None) -> tuple[list, list[pathlib.Path]]:
    """Generate ``module``'s sample files when missing and load them with Sample Data (``source``: its registered
    source, default looked up by name); returns (loaded nodes, the sample's files)."""
    import SampleData

    from scanai import samples

    logic = SampleData.SampleDataLogic()
    source = source or logic.sourceForSampleName(samples.SAMPLES[module].sample_name)
    files = samples.write_sample(module, samples.path_of_url(source.uris[0]).parent)
    return logic.downloadFromSource(source), files


# ---------------------------------------------------------------------------------------------- self-tests


def run_test_methods(case) -> None:
    """Slicer's "Reload and Test" for a module's ``*Test`` case: every ``test_*`` method, each after ``setUp``.

    A method that raises ``unittest.SkipTest`` (e.g. real data absent) is logged and the others still run.
    """
    import logging
    import unittest

    for name in sorted(n for n in dir(case) if n.startswith("test_")):
        case.setUp()
        try:
            getattr(case, name)()
        except unittest.SkipTest as reason:
            logging.info(f"{type(case).__name__}.{name} skipped: {reason}")


# ---------------------------------------------------------------------------------------------- requirements

def read_requirements(path: pathlib.Path) -> list:
    """The requirements of a module's ``Resources/requirements.txt`` (``packaging`` Requirement objects; comments
    and blank lines skipped)."""
    from packaging.requirements import Requirement

    lines = (line.split("#")[0].strip() for line in pathlib.Path(path).read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def missing_requirements(requirements: Sequence) -> list:
    """The requirements whose distribution is not installed at a version they accept."""
    import importlib.metadata

    missing = []
    for requirement in requirements:
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            version = None
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            missing.append(requirement)
    return missing


def ensure_requirements(path: pathlib.Path, names: Sequence[str] | None = None, requester: str = "ScanAI") -> None:
    """Make a module's requirements (``path``: its ``Resources/requirements.txt``; only the distributions
    ``names`` of it when given) installed, asking the user first and never at import: ``slicer.packaging.pip_ensure``
    (its own dialog and progress) on Slicer >= 5.11, a confirmation and ``slicer.util.pip_install`` on 5.10.
    Nothing is asked when they are all there. ScanAIError when the user declines."""
    from scanai.core.errors import ScanAIError

    wanted = {name.lower() for name in names} if names is not None else None
    requirements = [r for r in read_requirements(path) if wanted is None or r.name.lower() in wanted]
    missing = missing_requirements(requirements)
    if not missing:
        return
    declined = ScanAIError(_("{requester} needs Python packages that are not installed: {packages}.").format(
        requester=requester, packages=", ".join(str(r) for r in missing)),
        _("Click Apply again and accept the installation, or install them from the Python console with "
          "slicer.util.pip_install()."))
    try:
        import slicer.packaging as packaging
    except ImportError:  # Slicer 5.10
        packaging = None
    if packaging is not None:
        try:
            packaging.pip_ensure(missing, requester=requester)
        except RuntimeError as error:
            if "declined" in str(error):
                raise declined from error
            raise
        return
    if not slicer.util.confirmOkCancelDisplay(_("{requester} needs these Python packages, which are not installed "
                                                "yet:\n{packages}\n\nInstall them now?").format(
                                                  requester=requester, packages="\n".join(str(r) for r in missing))):
        raise declined
    slicer.util.pip_install(" ".join(f'"{r}"' for r in missing))


#: The torch versions ScanAI's shipped networks are tested with (asked of the PyTorch extension's installer).
TORCH_REQUIREMENT = ">=2.0"


def install_torch_or_classical(method: str, classical: str) -> str:
    """Ask the user, when PyTorch is missing, whether to install it (through the PyTorch extension, as
    SlicerTotalSegmentator does) or to run the classical method instead. Returns "torch" (installed), "classical"
    or "cancel". ``method`` / ``classical`` name the two methods in the question."""
    import qt

    answer = slicer.util.messageBox(
        _("The {method} needs PyTorch, which is not installed in Slicer yet.\n\n"
          "Yes: install PyTorch now through the PyTorch extension (a large download; Slicer may need a restart).\n"
          "No: use the {classical} instead (no PyTorch needed).\nCancel: do nothing.").format(
              method=method, classical=classical),
        windowTitle=_("ScanAI: PyTorch is not installed"),
        standardButtons=qt.QMessageBox.Yes | qt.QMessageBox.No | qt.QMessageBox.Cancel)
    if answer == qt.QMessageBox.No:
        return "classical"
    if answer != qt.QMessageBox.Yes:
        return "cancel"
    import PyTorchUtils

    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True,
                                                          torchVersionRequirement=TORCH_REQUIREMENT)
    return "torch" if torch is not None else "cancel"


def selected_file(path: pathlib.Path | None) -> pathlib.Path | None:
    """The path a path box holds when it names an existing file, else None. (An empty box reads as ``Path()``, the
    current folder, which exists: only a file counts as chosen.)"""
    return path if path is not None and path.is_file() else None


# ---------------------------------------------------------------------------------------------- module widgets


class ModuleWidgetMixin:
    """The behaviour the four ScanAI module widgets share, on top of Slicer's ScriptedLoadableModuleWidget.

    The module's widget class inherits ``(ModuleWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin)``
    (the mixin first, so that its ``cleanup``, ``enter`` and ``exit`` replace the base class's empty ones), sets
    ``self.logic`` and implements:

    - ``missingInputs(parameterNode) -> str``: why Apply cannot run yet ("" when it can);
    - ``process(parameterNode, progress) -> str``: run the logic, return a one-line summary for the status;
    - ``classicalAlternative(parameterNode) -> (parameter, value) | None``: when the chosen method needs PyTorch,
      the parameter and value that select the module's classical method instead (None when it needs no PyTorch);
    - optionally ``requiredPackages(parameterNode)``: which distributions of its ``Resources/requirements.txt``
      (what it needs beyond Slicer's own Python) this run needs, when that depends on the input.

    Its ``.ui`` file must hold ``applyButton``, ``cancelButton``, ``progressBar`` and ``statusLabel``. Errors are
    shown with ``slicer.util.tryWithErrorDisplay``; the logic runs inside :func:`scene_transaction`, so a failure
    or a Cancel leaves no partial output.
    """

    def requiredPackages(self, parameterNode) -> tuple[str, ...] | None:
        """The distributions of ``Resources/requirements.txt`` this run needs (None: all of them)."""
        return None

    def setupWidget(self, uiFileName: str) -> None:
        """Load the .ui, bind the common buttons, observe scene close, create the parameter node; the logic's
        computations run in a worker process from now on (:func:`compute`)."""
        self.logic.runInWorker = True
        uiWidget = slicer.util.loadUI(self.resourcePath(f"UI/{uiFileName}"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._cancelToken = None
        self._observedInputs: list = []
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.cancelButton.enabled = False
        self.ui.progressBar.visible = False
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Slicer unloads the module (e.g. Reload): unbind the GUI and remove every observer."""
        self.setParameterNode(None)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()
        else:
            self._observeInputs([])

    def _observeInputs(self, nodes: list) -> None:
        """Observe exactly ``nodes`` (the selected input nodes), so that Apply is re-checked when one of them
        changes (e.g. a sequence that gets its frames after it was selected)."""
        observed = self._observedInputs
        for node in [n for n in observed if n not in nodes]:
            self.removeObserver(node, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        for node in [n for n in nodes if n not in observed]:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._observedInputs = list(nodes)

    def _checkCanApply(self, caller=None, event=None) -> None:
        if self._parameterNode:
            values = (getattr(self._parameterNode, name) for name in self._parameterNode.allParameters)
            self._observeInputs([value for value in values if isinstance(value, slicer.vtkMRMLNode)])
        reason = self.missingInputs(self._parameterNode) if self._parameterNode else _("No parameter node.")
        running = self._cancelToken is not None
        self.ui.applyButton.enabled = not reason and not running
        self.ui.applyButton.toolTip = reason or _("Run with the selected inputs.")

    def onCancelButton(self) -> None:
        if self._cancelToken is not None:
            self._cancelToken.cancel()
            self.ui.statusLabel.text = _("Cancelling…")

    def _torchOrClassical(self) -> bool:
        """When the chosen method needs PyTorch and Slicer has none: install it or switch to the classical method,
        as the user chooses (:func:`install_torch_or_classical`). False when the user cancels."""
        alternative = self.classicalAlternative(self._parameterNode)
        if alternative is None or torch_available():
            return True
        name, classical = alternative
        choice = install_torch_or_classical(_("{method} method").format(method=getattr(self._parameterNode, name)),
                                            _("classical method ({method})").format(method=classical))
        if choice == "classical":
            setattr(self._parameterNode, name, classical)
        return choice != "cancel"

    def onApplyButton(self) -> None:
        from scanai.core.errors import Cancelled

        self._cancelToken = CancelToken()
        self.ui.applyButton.enabled = False
        self.ui.cancelButton.enabled = True
        self.ui.progressBar.visible = True
        self.ui.statusLabel.text = _("Running…")
        try:
            with slicer.util.tryWithErrorDisplay(_("ScanAI could not complete the computation."), waitCursor=True):
                ensure_requirements(self.resourcePath("requirements.txt"), self.requiredPackages(self._parameterNode),
                                    self.moduleName)
                try:
                    if not self._torchOrClassical():
                        raise Cancelled()
                    summary = self.process(self._parameterNode, slicer_progress(self.ui.progressBar, self._cancelToken))
                    self.ui.statusLabel.text = summary or _("Done.")
                except Cancelled:
                    self.ui.statusLabel.text = _("Cancelled: nothing was added to the scene.")
        finally:
            self._cancelToken = None
            self.ui.cancelButton.enabled = False
            self.ui.progressBar.visible = False
            self._checkCanApply()
