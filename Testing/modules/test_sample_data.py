"""Sample data in one click: each module registers a generated (offline) data set with Slicer's own Sample Data module
when Slicer has started, Sample Data loads it into the scene with Slicer's readers, the module's inputs are selected,
and the module's logic runs on it (classical methods: no PyTorch, so this also runs in the stock-Slicer venv).

The application's parts that Sample Data uses (its File menu, ``coreIOManager``'s readers, the scene's cache
manager) are the harness's :class:`slicer_harness.Application` stand-ins.
"""

from __future__ import annotations

import pathlib
import socket
import types
import urllib.parse

import numpy as np
import pytest
import slicer_harness

from scanai import samples

scene = slicer_harness.install()
import slicer  # the harness's slicer (after install)

MODULES = list(samples.SAMPLES)

# ---------------------------------------------------------------------------------------------- application


@pytest.fixture
def application(monkeypatch, tmp_path):
    """The four modules and Sample Data loaded as in Slicer, a fresh cache folder, no network, and the parts of the
    application that Sample Data uses. Sample Data's registry starts empty; the
    ``startupCompleted()`` signal has not been emitted yet. Yields the IO manager stand-in."""
    app = slicer.app
    io = app.coreIOManager()
    io.loaded.clear()
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setattr(app, "cachePath", str(cache))
    previous = scene.GetCacheManager().GetRemoteCacheDirectory()
    scene.GetCacheManager().SetRemoteCacheDirectory(str(cache))

    def offline(*args, **kwargs):
        raise AssertionError("sample data must not use the network")

    monkeypatch.setattr(socket.socket, "connect", offline)
    monkeypatch.setattr(socket, "create_connection", offline)
    monkeypatch.setattr(slicer.modules, "sampleDataSources", {}, raising=False)
    monkeypatch.setattr(slicer.modules, "sampleDataUrlRewriteRules", {}, raising=False)
    slicer_harness.load_slicer_module("SampleData")
    for name in MODULES:
        slicer_harness.load_module(name)
    scene.Clear(0)
    yield io
    scene.Clear(0)
    for name in MODULES:  # the tests select inputs on the modules' parameter nodes: leave them as found
        node = scene.GetSingletonNode(name, "vtkMRMLScriptedModuleNode")
        if node is not None:
            scene.RemoveNode(node)
    scene.GetCacheManager().SetRemoteCacheDirectory(previous)


def _start(application) -> types.ModuleType:
    """Slicer has started: the application emits startupCompleted(). Returns the SampleData module."""
    slicer.app.startupCompleted.emit()
    return slicer_harness.load_slicer_module("SampleData")


def _source(module: str):
    sampleData = slicer_harness.load_slicer_module("SampleData")
    source = sampleData.SampleDataLogic().sourceForSampleName(samples.SAMPLES[module].sample_name)
    assert source is not None, f"{module}'s sample data is not registered"
    return source


def _click(module: str) -> list:
    """The user clicks the sample's button in Sample Data: the widget calls ``source.customDownloader(source)``."""
    source = _source(module)
    return source.customDownloader(source)


def _parameters(module: str):
    return getattr(slicer.modules, module.lower()).logic().getParameterNode()


# ---------------------------------------------------------------------------------------------- registration


def test_every_module_registers_its_sample_when_slicer_has_started(application):
    sampleData = slicer_harness.load_slicer_module("SampleData")
    assert samples.CATEGORY not in sampleData.SampleDataLogic.sampleDataSourcesByCategory()  # not before startup
    _start(application)
    sources = sampleData.SampleDataLogic.sampleDataSourcesByCategory(samples.CATEGORY)
    assert sorted(source.sampleName for source in sources) == sorted(s.sample_name for s in samples.SAMPLES.values())
    folder = samples.sample_folder(slicer.app.cachePath)
    for module in MODULES:
        source = _source(module)
        assert source.customDownloader is slicer_harness.load_module(module).loadSampleData
        assert source.thumbnailFileName.endswith(f"{module}.png")
        assert slicer_harness.HOME.joinpath(module, "Resources", "Icons", f"{module}.png").is_file()
        assert all(urllib.parse.urlparse(uri).scheme == "file" for uri in source.uris)  # offline by construction
        assert [samples.path_of_url(uri) for uri in source.uris] == [folder / n for n in source.fileNames]
        assert "To try it" in slicer_harness.load_module(module)._harness_parent.helpText
        assert samples.SAMPLES[module].sample_name in slicer_harness.load_module(module)._harness_parent.helpText
    assert not folder.exists(), "registering must not generate anything (Slicer's startup stays fast)"
    assert samples.generate_for_url in slicer.modules.sampleDataUrlRewriteRules.values()
    _start(application)  # a second startupCompleted (or module) registers nothing twice
    assert len(sampleData.SampleDataLogic.sampleDataSourcesByCategory(samples.CATEGORY)) == len(MODULES)


# ---------------------------------------------------------------------------------------------- each module


def test_motion_sample_loads_and_the_logic_runs(application):
    _start(application)
    nodes = _click("MotionCorrection")
    assert [node.GetClassName() for node in nodes] == ["vtkMRMLSequenceNode", "vtkMRMLSegmentationNode"]
    assert [kind for kind, _name in application.loaded] == ["SequenceFile", "SegmentationFile"]
    sequence, segmentation = nodes
    settings = samples.MOTION_PHANTOM
    assert sequence.GetNumberOfDataNodes() == settings["n_frames"]
    assert (sequence.GetIndexName(), sequence.GetIndexUnit()) == ("time", "s")
    assert slicer.util.arrayFromVolume(sequence.GetNthDataNode(0)).shape == settings["shape"]
    assert slicer.modules.sequences.logic().GetFirstBrowserNodeForSequenceNode(sequence) is not None
    names = [segmentation.GetSegmentation().GetNthSegment(i).GetName()
             for i in range(segmentation.GetSegmentation().GetNumberOfSegments())]
    assert names == ["LV myocardium", "LV blood pool"]
    p = _parameters("MotionCorrection")
    assert (p.inputSequence, p.inputSegmentation, p.referenceFrame, p.task) == (sequence, segmentation, 1, "motion")
    logic = slicer_harness.load_module("MotionCorrection").MotionCorrectionLogic()
    outputs = logic.process(p.inputSequence, p.referenceFrame, "demons", createWarped=False, createJacobian=False,
                            inputSegmentation=p.inputSegmentation, createPropagated=False)
    strain = slicer_harness.load_module("MotionCorrection").mrml.table_from_node(outputs["table"])
    assert strain["GCS_pct"].min() < -2.0 < 2.0 < strain["GRS_pct"].max()  # the phantom contracts


def test_pet_sample_loads_and_the_logic_runs(application):
    from scanai.pet.phantom import pet_phantom

    _start(application)
    nodes = _click("ParametricPET")
    assert [node.GetClassName() for node in nodes] == ["vtkMRMLSequenceNode", "vtkMRMLTableNode"]
    assert [kind for kind, _name in application.loaded] == ["SequenceFile", "TableFile"]  # the schema is only copied
    sequence, table = nodes
    assert sequence.GetNumberOfDataNodes() == 32
    assert [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())] == ["time_s", "Cp"]
    assert (table.GetColumnUnitLabel("time_s"), table.GetColumnUnitLabel("Cp")) == ("s", "uCi/mL")
    assert table.GetTable().GetColumnByName("Cp").GetDataTypeAsString() == "double"
    p = _parameters("ParametricPET")
    assert (p.inputSequence, p.inputFunctionTable, p.inputFunctionSource) == (sequence, table, "table")
    module = slicer_harness.load_module("ParametricPET")
    outputs = module.ParametricPETLogic().process(p.inputSequence, "Patlak", p.inputFunctionTable,
                                                  p.frameTimingTable, createFitQuality=False)
    ki = slicer.util.arrayFromVolume(outputs["maps"]["Ki"])
    truth = pet_phantom(**samples.PET_PHANTOM).ki_true.array
    inside = truth > 0
    # Patlak from 20 min on, with blood samples every 2 s then 30 s: a few % from the phantom's exact Ki
    assert np.median(np.abs(ki[inside] / truth[inside] - 1)) < 0.05


def test_kspace_sample_loads_and_the_logic_runs(application):
    _start(application)
    nodes = _click("KSpaceCalibration")
    assert [node.GetClassName() for node in nodes] == ["vtkMRMLScalarVolumeNode"]
    assert application.loaded == [("VolumeFile", samples.SAMPLES["KSpaceCalibration"].files[1].name)]
    path = _parameters("KSpaceCalibration").inputPath
    assert path.suffix == ".npz" and path.is_file()
    module = slicer_harness.load_module("KSpaceCalibration")
    outputs = module.KSpaceCalibrationLogic().process(path, detector="classical")
    assert outputs["spikes"].GetNumberOfRows() > 0
    clean = slicer.util.arrayFromVolume(nodes[0])
    before = slicer.util.arrayFromVolume(outputs["original"])
    after = slicer.util.arrayFromVolume(outputs["corrected"])
    assert before.shape == clean.shape
    assert np.abs(after - clean).mean() < 0.5 * np.abs(before - clean).mean()
    geometry = module.mrml.geometry_of_node
    assert geometry(outputs["corrected"]).is_close(geometry(nodes[0]))  # the clean image overlays the results


def test_chest_sample_loads_and_the_logic_runs(application):
    _start(application)
    nodes = _click("ChestQC")
    assert [node.GetClassName() for node in nodes] == ["vtkMRMLScalarVolumeNode"]
    volume = nodes[0]
    assert slicer.util.arrayFromVolume(volume).shape == (1, 512, 512)
    assert volume.GetSpacing()[:2] == pytest.approx((0.7, 0.7))
    p = _parameters("ChestQC")
    assert p.inputVolume == volume
    module = slicer_harness.load_module("ChestQC")
    logic = module.ChestQCLogic()
    outputs = logic.process(inputVolume=p.inputVolume, backend="classical", createNormalised=False)
    assert outputs["radiograph"] is volume
    assert logic.lastResult.radiograph.metadata["view_position"] == "PA"
    assert logic.lastResult.assessment.level in ("FIRST", "INTERMEDIATE", "SECOND")
    assert logic.lastResult.detections.lungs().any()
    assert "segmentation" in outputs


# ---------------------------------------------------------------------------------------------- scripting, cache


def test_download_sample_by_name_generates_and_loads(application):
    """``SampleData.downloadSample(name)`` (scripts, self-tests) fetches the addresses without the custom downloader:
    the registered URL rule generates the files first."""
    sampleData = _start(application)
    expected = {"MotionCorrection": "vtkMRMLSequenceNode", "ParametricPET": "vtkMRMLSequenceNode",
                "KSpaceCalibration": "vtkMRMLScalarVolumeNode", "ChestQC": "vtkMRMLScalarVolumeNode"}
    for module, className in expected.items():
        node = sampleData.downloadSample(samples.SAMPLES[module].sample_name)
        assert node.GetClassName() == className, module
    cache = slicer.mrmlScene.GetCacheManager().GetRemoteCacheDirectory()
    for sample in samples.SAMPLES.values():  # Sample Data copied every file (schema, .npz included) into its cache
        for name in sample.file_names():
            assert (pathlib.Path(cache) / name).is_file(), name


def test_a_second_click_reuses_the_generated_files(application):
    _start(application)
    _click("ChestQC")
    path = samples.sample_folder(slicer.app.cachePath) / samples.SAMPLES["ChestQC"].files[0].name
    stamp = path.stat().st_mtime_ns
    _click("ChestQC")
    assert path.stat().st_mtime_ns == stamp
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 2


# ---------------------------------------------------------------------------------------------- the library


def test_writers_are_atomic_and_leave_nothing_behind_on_failure(tmp_path, monkeypatch):
    def halfway(paths):
        first = next(iter(paths.values()))
        first.write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setitem(samples._WRITERS, "ParametricPET", halfway)
    with pytest.raises(RuntimeError, match="disk full"):
        samples.write_pet_sample(tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    paths = samples.write_pet_sample(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
    assert all(f"-v{samples.VERSION}." in p.name for p in paths)


def test_url_rule_only_touches_missing_scanai_files(tmp_path):
    chest = tmp_path / samples.SAMPLES["ChestQC"].files[0].name
    for url in ("https://example.org/" + chest.name, (tmp_path / "other.nrrd").as_uri()):
        assert samples.generate_for_url(url) == url
    assert list(tmp_path.iterdir()) == []
    assert samples.generate_for_url(chest.as_uri()) == chest.as_uri()
    assert chest.is_file()


@pytest.mark.parametrize("module", MODULES)
def test_source_arguments_fit_sample_data(module, tmp_path):
    arguments = samples.source_arguments(module, tmp_path)
    lengths = {len(arguments[key]) for key in ("uris", "fileNames", "nodeNames", "loadFileTypes", "loadFiles")}
    assert lengths == {len(samples.SAMPLES[module].files)}
    assert arguments["loadFiles"] == [kind is not None for kind in arguments["loadFileTypes"]]
    assert samples.module_of_file(arguments["fileNames"][0]) == module


# ---------------------------------------------------------------------------------------------- sequence files


def test_sequence_files_keep_their_index_in_slicer_and_back(tmp_path):
    """The index name and unit travel in the list axis's NRRD ``labels`` / ``units`` fields, where Slicer's reader
    takes them (the PET logic needs the unit "s"); a file written by Slicer (list axis last) reads back too."""
    from scanai.core.image import Geometry, VolumeSequence
    from scanai.io.sequence_file import read_sequence, write_sequence_nrrd

    frames = np.random.default_rng(0).random((3, 2, 4, 5)).astype(np.float32)
    sequence = VolumeSequence(frames, Geometry((1.5, 1.5, 8.0), (3.0, 4.0, 5.0)), (70.0, 75.0, 80.0), "phase", "%")
    node = slicer.modules.sequences.logic().AddSequence(str(write_sequence_nrrd(sequence, tmp_path / "a.seq.nrrd")))
    assert (node.GetIndexName(), node.GetIndexUnit()) == ("phase", "%")
    assert [node.GetNthIndexValue(i) for i in range(3)] == ["70", "75", "80"]
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeSequenceStorageNode")
    storage.SetFileName(str(tmp_path / "slicer.seq.nrrd"))
    assert storage.WriteData(node)
    back = read_sequence(tmp_path / "slicer.seq.nrrd")
    assert (back.index_name, back.index_unit, back.index_values) == ("phase", "%", (70.0, 75.0, 80.0))
    np.testing.assert_allclose(back.frames, frames)
    assert back.geometry.is_close(sequence.geometry)
    scene.Clear(0)
