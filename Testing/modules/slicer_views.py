"""Screenshots of a MRML scene drawn by Slicer's own displayable managers, offscreen and without Qt.

``slicer-core`` ships MRML's slice logic (``vtkMRMLSliceLogic``: reslicing and blending of the background,
foreground and label layers) and the displayable managers of Slicer's slice views (segmentations as 2-D fill and
outline, markups lines / ROIs / points, colour legends, ...). In Slicer, Qt widgets (``qMRMLSliceWidget``) put them
into a render window; here :class:`SliceView` does the same into an offscreen VTK render window, so a screenshot
shows what a user sees in a slice view of Slicer after a module's Apply.

Offscreen rendering needs an OpenGL driver that works without a display. The ``vtk`` wheel picks one at run time;
on a head-less Linux machine that is EGL (Mesa's ``libEGL_mesa`` with its software rasteriser, Debian packages
``libegl1 libegl-mesa0 libgl1-mesa-dri``). :func:`offscreen_rendering_available` probes it in a subprocess (a
missing driver can abort the process that tries), so callers can skip cleanly.

Typical use (after ``slicer_harness.install()``)::

    image = render_slice_view(scene, background=volume_node, label_or_segmentation=segmentation_node)
    save_png(image, "view.png")
"""

from __future__ import annotations

import functools
import os
import pathlib
import subprocess
import sys
from collections.abc import Mapping, Sequence

import numpy as np

#: Slicer's names of the module logics that its displayable managers look up in the application logic.
_MODULE_LOGIC_NAMES = {"Markups": "markups", "Segmentations": "segmentations", "Colors": "colors",
                       "Volumes": "volumes", "Sequences": "sequences", "Transforms": "transforms"}

#: The slice-view displayable managers that Slicer registers for the data this project adds to the scene.
SLICE_DISPLAYABLE_MANAGERS = (
    "vtkMRMLSegmentationsDisplayableManager2D",  # segmentations: fill and outline
    "vtkMRMLMarkupsDisplayableManager",          # markups: lines, ROIs, point lists, curves
    "vtkMRMLModelSliceDisplayableManager",       # model intersections
    "vtkMRMLColorLegendDisplayableManager",      # colour legends (scalar bars) of volumes
)

#: vtkCornerAnnotation positions by name.
CORNERS = {"lower left": 0, "lower right": 1, "upper left": 2, "upper right": 3}

_PROBE = """
import numpy as np
from vtkmodules.vtkRenderingCore import vtkRenderWindow, vtkRenderer, vtkWindowToImageFilter
import vtkmodules.vtkRenderingOpenGL2
from vtkmodules.util.numpy_support import vtk_to_numpy
window = vtkRenderWindow()
window.SetOffScreenRendering(1)
window.SetSize(8, 8)
renderer = vtkRenderer()
renderer.SetBackground(1.0, 0.0, 0.0)
window.AddRenderer(renderer)
window.Render()
grab = vtkWindowToImageFilter()
grab.SetInput(window)
grab.Update()
pixels = vtk_to_numpy(grab.GetOutput().GetPointData().GetScalars())
assert pixels[:, 0].min() > 200 and pixels[:, 1].max() < 50, pixels[:4]
print(window.GetClassName())
"""


def _headless() -> bool:
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@functools.lru_cache(maxsize=1)
def offscreen_rendering_available() -> tuple[bool, str]:
    """(True, render-window class) when VTK can render offscreen here, else (False, the reason).

    Probed once per process, in a subprocess: first with EGL (the head-less choice), then with VTK's own default
    order (X, EGL, OSMesa). The working choice is put in ``VTK_DEFAULT_OPENGL_WINDOW`` for this process.
    """
    attempts = []
    if "VTK_DEFAULT_OPENGL_WINDOW" in os.environ:
        attempts.append(os.environ["VTK_DEFAULT_OPENGL_WINDOW"])
    elif _headless():
        attempts.append("vtkEGLRenderWindow")
    attempts.append(None)
    reasons = []
    for choice in attempts:
        env = dict(os.environ)
        env.pop("VTK_DEFAULT_OPENGL_WINDOW", None)
        if choice:
            env["VTK_DEFAULT_OPENGL_WINDOW"] = choice
        try:
            done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
                                  timeout=60)
        except subprocess.TimeoutExpired:
            reasons.append(f"{choice or 'VTK default'}: timed out")
            continue
        if done.returncode == 0:
            window_class = done.stdout.strip().splitlines()[-1]
            os.environ["VTK_DEFAULT_OPENGL_WINDOW"] = window_class
            return True, window_class
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        reasons.append(f"{choice or 'VTK default'}: {last}")
    return False, ("VTK cannot render offscreen here (" + "; ".join(reasons) + "). On Debian/Ubuntu install "
                   "libegl1 libegl-mesa0 libgl1-mesa-dri.")


def application_logic(scene):
    """The application logic that owns ``scene`` (the harness's ``slicer.applicationLogic``), with Slicer's module
    logics registered under the names its displayable managers ask for ("Markups", "Colors", ...).

    Without one (a bare scene), a ``vtkSlicerApplicationLogic`` is made for the scene and kept on it."""
    import slicer

    logic = None
    for candidate in (getattr(slicer, "applicationLogic", None), getattr(scene, "_scanai_application_logic", None)):
        if candidate is not None and candidate.GetMRMLScene() is scene:
            logic = candidate
            break
    if logic is None:
        logic = slicer.vtkSlicerApplicationLogic()
        logic.SetMRMLScene(scene)
        scene._scanai_application_logic = logic
    modules = getattr(slicer, "modules", None)
    for slicer_name, harness_name in _MODULE_LOGIC_NAMES.items():
        if logic.GetModuleLogic(slicer_name) is not None:
            continue
        module_logic = logic.GetModuleLogic(harness_name)
        if module_logic is None and modules is not None and hasattr(modules, harness_name):
            module_logic = getattr(modules, harness_name).logic()
        if module_logic is None and slicer_name in ("Markups", "Colors"):  # the two the managers cannot miss
            module_logic = slicer.vtkSlicerMarkupsLogic() if slicer_name == "Markups" else slicer.vtkSlicerColorLogic()
            module_logic.SetMRMLApplicationLogic(logic)
            module_logic.SetMRMLScene(scene)
        if module_logic is not None:
            logic.SetModuleLogic(slicer_name, module_logic)
    if logic.GetColorLogic() is None and logic.GetModuleLogic("Colors") is not None:
        logic.SetColorLogic(logic.GetModuleLogic("Colors"))
    if logic.GetSliceLogics() is None:  # in Slicer the layout manager makes this list
        import vtk

        logic.SetSliceLogics(vtk.vtkCollection())
    return logic


def register_node_classes(scene, class_names: Sequence[str] = ("vtkMRMLColorLegendDisplayNode",)) -> None:
    """Register with ``scene`` the MRML node classes that Slicer's modules register but a bare scene lacks
    (the Colors module's colour-legend display node), so the displayable managers can be fed with them."""
    import slicer

    for name in class_names:
        if not scene.IsNodeClassRegistered(name) and hasattr(slicer, name):
            scene.RegisterNodeClass(getattr(slicer, name)())


def _register_displayable_managers(factory, application, names: Sequence[str]) -> None:
    """Register managers by class name with a displayable-manager factory (a process-wide singleton, as in Slicer)."""
    factory.SetMRMLApplicationLogic(application)
    for name in names:
        if not factory.IsDisplayableManagerRegistered(name):
            factory.RegisterDisplayableManager(name)


def _grab(window) -> np.ndarray:
    """The render window's pixels as (H, W, 3) uint8, top row first."""
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

    grab = vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.SetInputBufferTypeToRGB()
    grab.ReadFrontBufferOff()
    grab.ShouldRerenderOn()
    grab.Update()
    output = grab.GetOutput()
    width, height, _ = output.GetDimensions()
    pixels = vtk_to_numpy(output.GetPointData().GetScalars()).reshape(height, width, -1)[::-1, :, :3]
    return np.ascontiguousarray(pixels, dtype=np.uint8)


class SliceView:
    """One offscreen slice view of ``scene``, like a Slicer slice viewer: its own slice and slice-composite nodes
    (layout name ``name``), a ``vtkMRMLSliceLogic`` and the displayable managers of
    :data:`SLICE_DISPLAYABLE_MANAGERS`. Use as a context manager, or call :meth:`close`, which removes the view's
    nodes from the scene again.

    >>> with SliceView(scene, (512, 512)) as view:
    ...     view.show(background=volume, foreground=ki_map, foreground_opacity=0.5)
    ...     image = view.capture()
    """

    _count = 0

    def __init__(self, scene, size: tuple[int, int] = (512, 512), name: str | None = None,
                 managers: Sequence[str] = SLICE_DISPLAYABLE_MANAGERS) -> None:
        available, reason = offscreen_rendering_available()
        if not available:
            raise RuntimeError(reason)
        import slicer
        import vtkmodules.vtkRenderingFreeType  # noqa: F401  (text)
        import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (the OpenGL render window)
        from vtkmodules.vtkRenderingAnnotation import vtkCornerAnnotation
        from vtkmodules.vtkRenderingCore import vtkActor2D, vtkImageMapper, vtkRenderer, vtkRenderWindow
        from vtkmodules.vtkRenderingUI import vtkGenericRenderWindowInteractor

        SliceView._count += 1
        self.scene = scene
        self.size = (int(size[0]), int(size[1]))
        self.name = name or f"ScanAIScreenshot{SliceView._count}"
        self.application = application_logic(scene)
        register_node_classes(scene)

        self.window = vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.SetSize(*self.size)
        self.window.SetMultiSamples(0)
        self.window.SetNumberOfLayers(3)  # managers draw in renderers of their own on layers 1, 2 (colour legend)
        self.window.SetAlphaBitPlanes(1)
        self.renderer = vtkRenderer()
        self.renderer.SetBackground(0.0, 0.0, 0.0)
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        self.window.AddRenderer(self.renderer)
        self.interactor = vtkGenericRenderWindowInteractor()  # widgets of the managers need one; never started
        self.interactor.SetRenderWindow(self.window)

        # What CTK's light-box renderer manager does in Slicer: the blended layers as the background image. It is the
        # renderer's first prop, so the managers' translucent fills (segments, ROIs) blend over it.
        self.image_mapper = vtkImageMapper()
        self.image_mapper.SetColorWindow(255.0)
        self.image_mapper.SetColorLevel(127.5)
        self.image_actor = vtkActor2D()
        self.image_actor.SetMapper(self.image_mapper)
        self.image_actor.GetProperty().SetDisplayLocationToBackground()
        self.renderer.AddViewProp(self.image_actor)

        factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
        _register_displayable_managers(factory, self.application, managers)
        self.managers = slicer.vtkMRMLDisplayableManagerGroup()
        self.managers.Initialize(factory, self.renderer)

        self.logic = slicer.vtkMRMLSliceLogic()
        self.logic.SetMRMLApplicationLogic(self.application)
        self.logic.SetMRMLScene(scene)
        self.application.GetSliceLogics().AddItem(self.logic)
        self.slice_node = self.logic.AddSliceNode(self.name)
        self.composite_node = self.logic.GetSliceCompositeNode()
        self.composite_node.SetDoPropagateVolumeSelection(False)
        self.managers.SetMRMLDisplayableNode(self.slice_node)

        self.annotation = vtkCornerAnnotation()  # Slicer's corner annotations (layer names)
        self.annotation.SetMaximumFontSize(max(12, self.size[1] // 32))
        self.annotation.SetMinimumFontSize(10)
        self.annotation.SetLinearFontScaleFactor(2.0)
        self.annotation.SetNonlinearFontScaleFactor(1.0)
        text = self.annotation.GetTextProperty()
        text.SetColor(1.0, 1.0, 1.0)
        text.ShadowOn()
        text.SetFontFamilyToArial()
        self.renderer.AddViewProp(self.annotation)
        self.logic.ResizeSliceNode(*self.size)
        self._closed = False

    # --------------------------------------------------------------------------------------------- context
    def __enter__(self) -> SliceView:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self) -> None:
        """Detach the managers, remove the view's slice and composite nodes from the scene, free the window."""
        if self._closed:
            return
        self._closed = True
        self.managers.SetMRMLDisplayableNode(None)
        self.application.GetSliceLogics().RemoveItem(self.logic)
        # the view's nodes: its slice and composite nodes and the model (with display and transform) that shows the
        # slice in 3-D views; the logic leaves the scene first, so it does not make them again
        owned = [self.composite_node, self.slice_node, self.logic.GetSliceModelNode(),
                 self.logic.GetSliceModelDisplayNode(), self.logic.GetSliceModelTransformNode()]
        self.logic.SetMRMLScene(None)
        for node in owned:
            if node is not None and node.GetScene() is self.scene:
                self.scene.RemoveNode(node)
        self.renderer.RemoveAllViewProps()
        self.window.Finalize()

    # --------------------------------------------------------------------------------------------- set-up
    def show(self, background, foreground=None, foreground_opacity: float = 0.5, label=None,
             label_opacity: float = 1.0, orientation: str = "Axial", align_to_volume: bool = True,
             slice_index: int | None = None, center_ras: Sequence[float] | None = None,
             field_of_view_mm: float | None = None) -> None:
        """Put volumes in the layers and place the slice, as Slicer's "show volume" and "reset field of view" do.

        background / foreground: volume nodes (or None); ``foreground_opacity`` blends the foreground over it.
        label: a labelmap volume node for the label layer, or a segmentation node to make sure is visible in 2-D
        (segmentations and markups of the scene are drawn by their display nodes in any case).
        orientation: "Axial", "Sagittal" or "Coronal"; with ``align_to_volume`` the slice is then rotated onto the
        background volume's closest voxel axes (Slicer does this for oblique images, e.g. a cardiac short axis).
        slice_index: the background voxel slice (k, the axis closest to the view normal) to show; default the
        middle one. center_ras / field_of_view_mm: zoom on a region (the view's height and width are at least
        ``field_of_view_mm``); default: fit the background volume.
        """
        composite = self.composite_node
        composite.SetBackgroundVolumeID(background.GetID() if background is not None else None)
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(float(foreground_opacity))
        if label is not None and label.IsA("vtkMRMLLabelMapVolumeNode"):
            composite.SetLabelVolumeID(label.GetID())
            composite.SetLabelOpacity(float(label_opacity))
        else:
            composite.SetLabelVolumeID(None)
            if label is not None:
                if label.GetDisplayNode() is None:
                    label.CreateDefaultDisplayNodes()
                display = label.GetDisplayNode()
                display.SetVisibility(True)
                display.SetVisibility2D(True)
        self.slice_node.SetOrientation(orientation)
        if align_to_volume and background is not None:
            self.slice_node.RotateToVolumePlane(background)  # Slicer's "rotate to volume plane"
        self.logic.ResizeSliceNode(*self.size)
        self.logic.FitSliceToBackground(*self.size)
        if background is not None:
            self._jump_to_slice(background, slice_index)
        if center_ras is not None or field_of_view_mm is not None:
            self.zoom(center_ras, field_of_view_mm)

    def _jump_to_slice(self, volume, slice_index: int | None) -> None:
        """Move the slice plane onto the centre of voxel slice ``slice_index`` of ``volume`` (default: middle)."""
        import vtk

        image = volume.GetImageData()
        if image is None:
            return
        dims = image.GetDimensions()
        matrix = vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(matrix)
        columns = np.array([[matrix.GetElement(r, c) for c in range(3)] for r in range(3)])
        normal = np.array([self.slice_node.GetSliceToRAS().GetElement(r, 2) for r in range(3)])
        axis = int(np.argmax(np.abs(normal @ (columns / np.linalg.norm(columns, axis=0)))))
        index = [(d - 1) / 2.0 for d in dims]
        count = dims[axis]
        chosen = count // 2 if slice_index is None else int(slice_index)
        if not 0 <= chosen < count:
            raise IndexError(f"slice {chosen} is outside the volume's {count} slices")
        index[axis] = chosen
        ras = [sum(matrix.GetElement(r, c) * index[c] for c in range(3)) + matrix.GetElement(r, 3) for r in range(3)]
        self.slice_node.JumpSliceByOffsetting(*ras)

    def zoom(self, center_ras: Sequence[float] | None = None, field_of_view_mm: float | None = None) -> None:
        """Centre the view on ``center_ras`` (kept in the current slice plane) with at least ``field_of_view_mm``
        visible across its smaller side."""
        node = self.slice_node
        if field_of_view_mm is not None:
            width, height = self.size
            fov = float(field_of_view_mm)
            fov_x, fov_y = (fov * width / height, fov) if width >= height else (fov, fov * height / width)
            node.SetFieldOfView(fov_x, fov_y, node.GetFieldOfView()[2])
        if center_ras is not None:
            offset = self.logic.GetSliceOffset()
            node.JumpSliceByCentering(*map(float, center_ras))
            self.logic.SetSliceOffset(offset)

    def ras_to_pixel(self, ras: Sequence[float]) -> tuple[float, float]:
        """(column, row) in :meth:`capture`'s image (row 0 at the top) of the RAS point ``ras`` projected on the
        slice plane."""
        import vtk

        xy_to_ras = vtk.vtkMatrix4x4()
        xy_to_ras.DeepCopy(self.slice_node.GetXYToRAS())
        xy_to_ras.Invert()
        x, y, _z, _w = xy_to_ras.MultiplyPoint((*map(float, ras), 1.0))
        return x, self.size[1] - 1 - y

    def add_color_legend(self, volume, title: str | None = None, label_format: str | None = None,
                         size: tuple[float, float] | None = None):
        """Show ``volume``'s colour legend (Slicer's Colors module legend: a scalar bar of its colour table over its
        window) in the view; returns the legend display node.

        The colour-legend manager picks up legend nodes added while the view exists (in Slicer the views exist
        before the data), so legends are made here, after the view."""
        import slicer

        register_node_classes(self.scene)
        legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(volume)
        if legend is None:
            return None
        if title is not None:
            legend.SetTitleText(title)
        if label_format is not None:
            legend.SetLabelFormat(label_format)
        if size is not None:
            legend.SetSize(*size)
        legend.SetVisibility(True)
        return legend

    def annotate(self, corners: Mapping[str, str]) -> None:
        """Corner texts, as Slicer's slice-view annotations: keys from :data:`CORNERS`, values the text."""
        for where, text in corners.items():
            self.annotation.SetText(CORNERS[where], text)

    # --------------------------------------------------------------------------------------------- output
    def capture(self) -> np.ndarray:
        """Render and return the view as an (H, W, 3) uint8 array."""
        self.image_mapper.SetInputConnection(self.logic.GetImageDataConnection())
        self.window.Render()
        return _grab(self.window)


def layer_annotation(background=None, foreground=None, foreground_opacity: float = 0.5, label=None) -> str:
    """The lower-left text of a Slicer slice view: "F: name (opacity)", "B: name" (and "L: name")."""
    lines = []
    if label is not None and label.IsA("vtkMRMLLabelMapVolumeNode"):
        lines.append(f"L: {label.GetName()}")
    if foreground is not None:
        lines.append(f"F: {foreground.GetName()} ({foreground_opacity:.1f})")
    if background is not None:
        lines.append(f"B: {background.GetName()}")
    return "\n".join(lines)


def render_slice_view(scene, background, foreground=None, foreground_opacity: float = 0.5,
                      label_or_segmentation=None, orientation: str = "Axial", slice_index: int | None = None,
                      size: tuple[int, int] = (512, 512), center_ras: Sequence[float] | None = None,
                      field_of_view_mm: float | None = None, annotate: bool = True,
                      corners: Mapping[str, str] | None = None, color_legend: bool = False) -> np.ndarray:
    """Render one slice view of ``scene`` offscreen with Slicer's slice logic and displayable managers.

    background / foreground: volume nodes (foreground blended at ``foreground_opacity``, with its display node's
    colour table and window). label_or_segmentation: a labelmap volume (label layer) or a segmentation node (made
    visible in 2-D). Every visible segmentation and markups node of the scene is drawn by its display node, as in
    Slicer. orientation, slice_index, center_ras, field_of_view_mm: see :meth:`SliceView.show`. annotate: write the
    layer names in the lower-left corner, as Slicer does; ``corners`` adds texts (see :data:`CORNERS`).
    color_legend: show the colour legend of the foreground (else the background) volume.
    Returns the view as an (H, W, 3) uint8 array (H = size[1], W = size[0]). A new render window is made and
    freed per call, and the view's nodes are removed from the scene afterwards.
    """
    with SliceView(scene, size) as view:
        view.show(background, foreground, foreground_opacity, label_or_segmentation, orientation=orientation,
                  slice_index=slice_index, center_ras=center_ras, field_of_view_mm=field_of_view_mm)
        texts = dict(corners or {})
        if annotate:
            layers = layer_annotation(background, foreground, foreground_opacity, label_or_segmentation)
            texts["lower left"] = "\n".join(t for t in (texts.get("lower left", ""), layers) if t)
        view.annotate(texts)
        if color_legend:
            view.add_color_legend(foreground if foreground is not None else background)
        return view.capture()


# ------------------------------------------------------------------------------------------------- images


def side_by_side(images: Sequence[np.ndarray], gap: int = 4, colour: tuple[int, int, int] = (40, 40, 40)
                 ) -> np.ndarray:
    """Panels (H_n, W_n, 3) joined left to right on a ``colour`` background, top-aligned."""
    height = max(image.shape[0] for image in images)
    width = sum(image.shape[1] for image in images) + gap * (len(images) - 1)
    out = np.empty((height, width, 3), dtype=np.uint8)
    out[:] = colour
    x = 0
    for image in images:
        out[:image.shape[0], x:x + image.shape[1]] = image[..., :3]
        x += image.shape[1] + gap
    return out


def _wrap(text: str, font, width: int) -> list[str]:
    """``text`` broken into lines no wider than ``width`` pixels (at spaces; explicit newlines kept)."""
    lines = []
    for paragraph in text.splitlines() or [""]:
        words, line = paragraph.split(" "), ""
        for word in words:
            candidate = f"{line} {word}" if line else word
            if line and font.getlength(candidate) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def add_caption(image: np.ndarray, text: str, font_size: int = 15, colour: tuple[int, int, int] = (235, 235, 235),
                background: tuple[int, int, int] = (30, 30, 30)) -> np.ndarray:
    """``image`` with a band of ``text`` below it (wrapped to the image width), in Slicer's dark panel colours."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    margin = 8
    lines = _wrap(text, font, image.shape[1] - 2 * margin)
    line_height = int(font_size * 1.35)
    band = Image.new("RGB", (image.shape[1], line_height * len(lines) + margin), background)
    draw = ImageDraw.Draw(band)
    for number, line in enumerate(lines):
        draw.text((margin, margin // 2 + number * line_height), line, fill=colour, font=font)
    return np.concatenate([image[..., :3], np.asarray(band, dtype=np.uint8)], axis=0)


def save_png(image: np.ndarray, path: str | os.PathLike, max_width: int | None = None,
             colours: int | None = None, fast_palette: bool = False) -> pathlib.Path:
    """Write an (H, W, 3) uint8 image as PNG; returns the path.

    max_width: shrink (Lanczos) to this many pixels wide when wider. colours: store with a palette of this many
    colours (at most 256, no dithering): median cut, which keeps grey ramps smooth, or with ``fast_palette`` an
    octree, which gives smaller files for noisy images.
    """
    from PIL import Image

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(np.ascontiguousarray(image[..., :3], dtype=np.uint8))
    if max_width is not None and picture.width > max_width:
        picture = picture.resize((max_width, round(picture.height * max_width / picture.width)), Image.LANCZOS)
    if colours is not None:
        method = Image.Quantize.FASTOCTREE if fast_palette else Image.Quantize.MEDIANCUT
        picture = picture.quantize(min(int(colours), 256), method=method, dither=Image.Dither.NONE)
    picture.save(path, optimize=True)
    return path
