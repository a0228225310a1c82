"""Model catalog: shipped weights, each with a JSON model card, loaded only after checks.

A model ``NAME`` is two files in ``scanai/models/``: ``NAME.pt`` (a torch ``state_dict``) and ``NAME.json``
(its card). The card records what the model is, how it was trained and what it scores, the sha256 of the
weights, and the *input contract*: the facts an input must satisfy (e.g. ``{"channels": 1, "spatial_dims": 2,
"min_size": 64}``). :func:`load_model` refuses weights whose sha256 differs from the card and
:func:`check_contract` refuses inputs that break the contract, each with a clear :class:`ModelError`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scanai.core.errors import ModelError

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


@dataclass(frozen=True)
class ModelCard:
    """What a shipped model is. ``metrics`` are held-out scores; ``input_contract`` the input's required facts."""

    name: str
    version: str
    task: str
    architecture: dict[str, Any]
    input_contract: dict[str, Any]
    training_data: str
    training_command: str
    metrics: dict[str, float]
    sha256: str
    weights_file: str = ""
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, path: Path) -> ModelCard:
        try:
            data = json.loads(Path(path).read_text())
            return cls(**data)
        except (OSError, json.JSONDecodeError, TypeError) as error:
            raise ModelError(f"The model card {Path(path).name} is missing or damaged ({error}).",
                             "Reinstall the ScanAI extension.") from error

    def to_json(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def card_path(name: str, models_dir: Path = MODELS_DIR) -> Path:
    return Path(models_dir) / f"{name}.json"


def load_card(name: str, models_dir: Path = MODELS_DIR) -> ModelCard:
    """The card of model ``name``; :class:`ModelError` when it is not installed."""
    path = card_path(name, models_dir)
    if not path.is_file():
        available = sorted(p.stem for p in Path(models_dir).glob("*.json"))
        raise ModelError(f"The model '{name}' is not installed (available: {', '.join(available) or 'none'}).",
                         "Reinstall the ScanAI extension, or train it with its training command.")
    return ModelCard.from_json(path)


def list_models(models_dir: Path = MODELS_DIR) -> list[ModelCard]:
    """Cards of every installed model."""
    return [ModelCard.from_json(p) for p in sorted(Path(models_dir).glob("*.json"))]


def check_contract(card: ModelCard, **facts: Any) -> None:
    """Raise :class:`ModelError` when an input fact breaks the card's contract.

    Keys ``min_<x>`` / ``max_<x>`` bound a fact ``<x>``; other keys must be equal (lists: membership).
    Facts the contract does not mention are ignored.
    """
    contract: Mapping[str, Any] = card.input_contract
    for key, value in facts.items():
        if f"min_{key}" in contract and value < contract[f"min_{key}"]:
            raise ModelError(f"The model '{card.name}' needs {key} of at least {contract[f'min_{key}']}, "
                             f"but the input has {value}.", "Choose an input that fits, or the classical method.")
        if f"max_{key}" in contract and value > contract[f"max_{key}"]:
            raise ModelError(f"The model '{card.name}' accepts {key} of at most {contract[f'max_{key}']}, "
                             f"but the input has {value}.", "Choose an input that fits, or the classical method.")
        if key in contract:
            expected = contract[key]
            fits = value in expected if isinstance(expected, list) else value == expected
            if not fits:
                raise ModelError(f"The model '{card.name}' expects {key} = {expected}, but the input has {value}.",
                                 "Choose an input that fits, or the classical method.")


def load_model(name: str, build: Callable[[dict[str, Any]], Any], device: str = "auto",
               models_dir: Path = MODELS_DIR):
    """Build the network from its card's ``architecture``, load verified weights, return ``(model, card)``.

    ``build(architecture)`` returns an untrained ``torch.nn.Module``. The weights file's sha256 must equal
    the card's; the model is put in eval mode on the chosen device.
    """
    from scanai.core.device import choose_device, import_torch

    torch = import_torch()
    card = load_card(name, models_dir)
    weights = Path(models_dir) / (card.weights_file or f"{name}.pt")
    if not weights.is_file():
        raise ModelError(f"The weights of model '{name}' ({weights.name}) are missing.",
                         "Reinstall the ScanAI extension, or train it with: " + card.training_command)
    actual = sha256_of(weights)
    if actual != card.sha256:
        raise ModelError(f"The weights of model '{name}' are damaged or do not belong to its card "
                         f"(sha256 {actual[:12]}… instead of {card.sha256[:12]}…).",
                         "Reinstall the ScanAI extension, or retrain with: " + card.training_command)
    target = choose_device(device)
    model = build(card.architecture)
    try:
        state = torch.load(weights, map_location=target, weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as error:
        raise ModelError(f"The weights of model '{name}' do not fit its network ({error}).",
                         "Reinstall the ScanAI extension.") from error
    return model.to(target).eval(), card


_SHIPPED: dict[tuple[str, str, str], tuple[Any, ModelCard]] = {}


def load_shipped_model(name: str, build: Callable[[dict[str, Any]], Any], device: str = "auto",
                       models_dir: Path = MODELS_DIR, prepare: Callable[[Any], Any] | None = None):
    """:func:`load_model`, done once per (model, folder, device) and cached; ``prepare(model)`` (e.g. a memory-format
    change) runs once on the freshly loaded model. Returns ``(model, card)``."""
    key = (name, str(Path(models_dir).resolve()), str(device))
    if key not in _SHIPPED:
        model, card = load_model(name, build, device=device, models_dir=models_dir)
        _SHIPPED[key] = (prepare(model) if prepare is not None else model, card)
    return _SHIPPED[key]


def save_model(model, card: ModelCard, models_dir: Path = MODELS_DIR) -> ModelCard:
    """Write ``model``'s weights and its card (with the sha256 filled in); returns the final card."""
    from scanai.core.device import import_torch

    torch = import_torch()
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    weights = models_dir / f"{card.name}.pt"
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, weights)
    final = ModelCard(**{**asdict(card), "sha256": sha256_of(weights), "weights_file": weights.name})
    final.to_json(card_path(card.name, models_dir))
    return final


def save_and_report(model, card: ModelCard, models_dir: Path, seconds: float) -> ModelCard:
    """:func:`save_model`, then print what a training command reports: the weights file, the parameter count, the
    training time (s) and the card's held-out metrics; returns the final card."""
    final = save_model(model, card, models_dir)
    count = sum(p.numel() for p in model.parameters())
    print(f"wrote {Path(models_dir) / (card.name + '.pt')} ({count} parameters, {seconds:.0f} s)")
    for key, value in final.metrics.items():
        print(f"  {key}: {value}")
    return final
