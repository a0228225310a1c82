"""scanai.core: errors, progress and cancel, device choice, geometry, model catalog."""

from __future__ import annotations

import numpy as np
import pytest

from scanai.core import Cancelled, CancelToken, Geometry, GeometryError, InputError, ModelError, Progress, Volume
from scanai.core.catalog import ModelCard, check_contract, list_models, load_card, load_model, save_model
from scanai.core.device import choose_device
from scanai.core.image import VolumeSequence
from scanai.core.progress import tqdm_progress


def test_errors_say_what_and_what_to_do():
    error = InputError("The table has no time column.", "Add a column named time_s.")
    assert str(error) == "The table has no time column. Add a column named time_s."
    assert isinstance(error, ValueError) and error.action.startswith("Add")
    assert issubclass(GeometryError, InputError)


def test_progress_maps_sub_ranges_and_cancels_between_steps():
    seen = []
    token = CancelToken()
    progress = Progress(lambda f, m: seen.append((round(f, 3), m)), token)
    inner = progress.sub(0.5, 1.0)
    inner(0.5, "half of the second half")
    assert seen[-1] == (0.75, "half of the second half")
    items = []
    for index, item in inner.iterate("abc", "Frame"):
        items.append(item)
        if index == 1:
            token.cancel()
            with pytest.raises(Cancelled):
                progress(0.9, "after cancel")
            break
    assert items == ["a", "b"]
    assert seen[-1][1] == "Frame 2/3"


def test_silent_progress_and_tqdm_adapter():
    Progress.ensure(None)(0.3, "nothing to show")
    with tqdm_progress("test", disable=True) as progress:
        for _ in progress.iterate(range(3), "Step"):
            pass


def test_device_choice_falls_back_to_cpu(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device("auto").type == "cpu"
    assert choose_device("cpu").type == "cpu"
    with pytest.raises(ModelError, match="GPU"):
        choose_device("cuda")
    with pytest.raises(ModelError, match="Unknown device"):
        choose_device("tpu")


def test_geometry_round_trips_through_ijk_to_ras():
    rotation = np.linalg.qr(np.array([[1.0, 0.3, 0.1], [-0.3, 1.0, 0.2], [0.0, -0.2, 1.0]]))[0]
    geometry = Geometry((0.5, 0.75, 2.0), (10.0, -20.0, 5.0), tuple(map(tuple, rotation)))
    assert Geometry.from_ijk_to_ras(geometry.ijk_to_ras()).is_close(geometry, 1e-12)
    ijk = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    assert np.allclose(geometry.ijk_of_ras(geometry.ras_of_ijk(ijk)), ijk)
    assert np.allclose(geometry.ras_of_ijk(np.zeros(3)), geometry.origin_mm)


@pytest.mark.parametrize("spacing", [(0, 1, 1), (1, -1, 1), (1, float("nan"), 1)])
def test_bad_spacing_is_refused(spacing):
    with pytest.raises(GeometryError):
        Geometry(spacing)


def test_volume_and_sequence_validation():
    with pytest.raises(InputError, match="3 dimensions"):
        Volume(np.zeros((4, 4)))
    with pytest.raises(InputError, match="index values"):
        VolumeSequence(np.zeros((3, 1, 2, 2)), Geometry(), (0.0, 1.0))
    frames = [Volume(np.zeros((1, 2, 2))), Volume(np.zeros((1, 2, 2)), Geometry((2.0, 1.0, 1.0)))]
    with pytest.raises(GeometryError, match="Frame 2"):
        VolumeSequence.from_volumes(frames)


def _card(**changes) -> ModelCard:
    fields = dict(name="tiny", version="1.0.0", task="test", architecture={"width": 3},
                  input_contract={"channels": 1, "min_size": 8, "spatial_dims": [2, 3]},
                  training_data="none", training_command="python -m scanai.tests", metrics={"dice": 0.9},
                  sha256="")
    fields.update(changes)
    return ModelCard(**fields)


def _build(architecture):
    import torch

    return torch.nn.Conv2d(1, architecture["width"], 3)


def test_catalog_saves_loads_and_checks_sha256(tmp_path):
    pytest.importorskip("torch")
    model = _build({"width": 3})
    card = save_model(model, _card(), tmp_path)
    assert len(card.sha256) == 64 and load_card("tiny", tmp_path) == card
    loaded, loaded_card = load_model("tiny", _build, "cpu", tmp_path)
    assert loaded_card.metrics == {"dice": 0.9}
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True))
    weights = tmp_path / "tiny.pt"
    weights.write_bytes(weights.read_bytes() + b"tampered")
    with pytest.raises(ModelError, match="damaged"):
        load_model("tiny", _build, "cpu", tmp_path)


def test_catalog_refuses_missing_model_and_misfit_input(tmp_path):
    with pytest.raises(ModelError, match="not installed"):
        load_card("absent", tmp_path)
    card = _card()
    check_contract(card, channels=1, size=64, spatial_dims=2)
    with pytest.raises(ModelError, match="at least 8"):
        check_contract(card, size=4)
    with pytest.raises(ModelError, match="channels"):
        check_contract(card, channels=3)
    with pytest.raises(ModelError, match="spatial_dims"):
        check_contract(card, spatial_dims=4)


def test_shipped_model_cards_are_complete():
    for card in list_models():
        assert card.sha256 and card.training_command and card.metrics and card.training_data
