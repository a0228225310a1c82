"""Train the ChestQC detection network: ``python -m scanai.chest.train --data ../shared/data/chest/wingspan``.

Training data (issue 7):
- the 207 training radiographs of the fixed Wingspan split (never the 52 validation ones) with their real lung and
  heart masks, a spine mask made by an algorithm (¶0163 allows algorithmic labels: :func:`spine_pseudo_label`), and
  foreign objects, effusions and pneumothoraces composited onto them by :mod:`scanai.chest.generator`;
- procedural radiographs from :func:`scanai.chest.generator.generate_chest` with exact masks for every object.
Scapulae and clavicles are only labelled on generated images; on real ones those channels are left out of the loss.

Each sample is augmented (rotation, scale, shift, gamma, noise, and a mirror with sides relabelled by image
position), as ¶0155 and ¶0164 describe. Loss: binary cross-entropy plus soft Dice over the labelled channels.
Seeded; CPU, 2 threads. The validation Dice and CTR error are written into the model card.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from scanai.chest import generator
from scanai.chest.detection import ANATOMY, OBJECTS, body_mask
from scanai.chest.network import INPUT_SIZE, MODEL_NAME, WIDTHS, build_chest_network, network_input
from scanai.chest.phantom import ChestPhantom
from scanai.chest.site_augment import site_augment
from scanai.chest.wingspan import load_cases
from scanai.core.catalog import MODELS_DIR, ModelCard, save_model
from scanai.core.device import import_torch, set_determinism

UNLABELLED_ON_REAL = ("scapula_right", "scapula_left", "clavicle_right", "clavicle_left")
MAX_SPINE_SLOPE = 0.06
SIDE_PAIRS = (("lung_right", "lung_left"), ("scapula_right", "scapula_left"), ("clavicle_right", "clavicle_left"))


@dataclass(frozen=True)
class Sample:
    """One training sample at INPUT_SIZE: ``image`` (H, W) float in [0, 1]; ``masks`` name -> (H, W) bool;
    ``labelled`` the object names whose masks are ground truth."""

    image: np.ndarray
    masks: dict[str, np.ndarray]
    labelled: frozenset[str]


def spine_pseudo_label(image: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """(H, W) bool spine mask made from the image and the true lung masks.

    Near the middle of the lungs, each row's brightest column (of the high-passed row profile smoothed over ~3 %
    of the width) is taken from the lung apices down to the lung bases; a Theil-Sen line through those points,
    its tilt limited to MAX_SPINE_SLOPE columns per row, is the spine centreline. The mask is a band of 5.5 % of
    the lung-union width on each side, from 8 % of the image height above the apices to the bases.
    """
    from scipy.stats import theilslopes

    rows = np.flatnonzero(lungs.any(axis=1))
    cols = np.flatnonzero(lungs.any(axis=0))
    width = cols[-1] - cols[0] + 1
    smooth = ndimage.gaussian_filter(image.astype(float), (image.shape[0] * 0.01, image.shape[1] * 0.03))
    smooth = smooth - ndimage.gaussian_filter(image.astype(float), image.shape[1] * 0.12)
    centre = (cols[0] + cols[-1]) / 2.0
    band = (int(centre - 0.12 * width), int(centre + 0.12 * width) + 1)
    picked_rows, picked_cols = [], []
    for row in rows[:: max(1, len(rows) // 60)]:
        profile = smooth[row, band[0]:band[1]]
        picked_rows.append(row)
        picked_cols.append(band[0] + int(np.argmax(profile)))
    slope = float(np.clip(theilslopes(picked_cols, picked_rows)[0], -MAX_SPINE_SLOPE, MAX_SPINE_SLOPE))
    intercept = float(np.median(np.asarray(picked_cols) - slope * np.asarray(picked_rows)))
    grid_rows, grid_cols = np.indices(image.shape)
    line = intercept + slope * grid_rows
    top = max(0, rows[0] - int(0.08 * image.shape[0]))
    return (np.abs(grid_cols - line) <= 0.055 * width) & (grid_rows >= top) & (grid_rows <= rows[-1])


def _downsample(array: np.ndarray, size: int) -> np.ndarray:
    """Block-average a square (N, N) array to (size, size) (N a multiple of size)."""
    factor = array.shape[0] // size
    return array[: factor * size, : factor * size].reshape(size, factor, size, factor).mean(axis=(1, 3))


def real_pool(root: Path, size: int = INPUT_SIZE) -> list[ChestPhantom]:
    """The Wingspan training images at size x size in [0, 1], with lung, heart, spine (algorithmic) and body masks."""
    pool = []
    for case in load_cases(root, "train"):
        image = _downsample(case.image / 255.0, size)
        masks = {name: _downsample(mask.astype(float), size) > 0.5 for name, mask in case.masks.items()}
        masks["spine"] = spine_pseudo_label(image, masks["lung_right"] | masks["lung_left"])
        masks["body"] = body_mask(image)
        pool.append(ChestPhantom(image, masks, 1.0))
    return pool


def _composite(phantom: ChestPhantom, rng: np.random.Generator) -> ChestPhantom:
    """Add, at random, foreign objects, an effusion and a pneumothorax (each kept only when it fits)."""
    for _ in range(int(rng.choice([0, 0, 1, 1, 2]))):
        phantom = generator.add_foreign_object(phantom, rng, inside_lung=bool(rng.random() < 0.5))
    for paint in (generator.add_effusion, generator.add_pneumothorax):
        if rng.random() < 0.18:
            side = str(rng.choice(["right", "left"]))
            try:
                phantom = paint(phantom, rng, float(rng.uniform(0.03, 0.4)), side)
            except Exception:  # noqa: BLE001 - a region that does not fit is simply skipped
                continue
    return phantom


def _augment(image: np.ndarray, masks: dict[str, np.ndarray], rng: np.random.Generator
             ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Random rotation (+-7 deg), scale (0.9-1.1), shift (+-4 %), gamma, noise and mirror (sides relabelled)."""
    size = image.shape[0]
    angle = np.deg2rad(rng.normal(0.0, 3.5))
    scale = rng.uniform(0.9, 1.1)
    matrix = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / scale
    centre = np.array([size / 2.0, size / 2.0])
    offset = centre - matrix @ centre + rng.uniform(-0.04, 0.04, 2) * size
    fill = float(np.percentile(image, 1))
    image = ndimage.affine_transform(image, matrix, offset, order=1, mode="constant", cval=fill)
    masks = {name: ndimage.affine_transform(mask.astype(np.uint8), matrix, offset, order=0) > 0
             for name, mask in masks.items()}
    low, high = image.min(), image.max()
    image = ((image - low) / max(high - low, 1e-6)) ** rng.uniform(0.7, 1.4)
    image = image + rng.normal(0, rng.uniform(0.0, 0.02), image.shape)
    if rng.random() < 0.25:
        image = image[:, ::-1]
        masks = {name: mask[:, ::-1] for name, mask in masks.items()}
        for right, left in SIDE_PAIRS:
            masks[right], masks[left] = masks.get(left), masks.get(right)
        masks = {name: mask for name, mask in masks.items() if mask is not None}
    return np.ascontiguousarray(image), masks


def draw_sample(real: list[ChestPhantom], rng: np.random.Generator, real_fraction: float = 0.65,
                site_probability: float = 0.0) -> Sample:
    """One augmented sample: a real radiograph (with composites) or a generated one; with ``site_probability`` > 0
    it then goes through :func:`scanai.chest.site_augment.site_augment` (other sites' look; off by default, so the
    default draws are exactly those that made the shipped weights)."""
    if rng.random() < real_fraction:
        phantom = real[int(rng.integers(len(real)))]
        labelled = frozenset(OBJECTS) - frozenset(UNLABELLED_ON_REAL)
    else:
        phantom = generator.generate_chest(rng, INPUT_SIZE)
        labelled = frozenset(OBJECTS)
    phantom = _composite(phantom, rng)
    image, masks = _augment(phantom.image, {k: v for k, v in phantom.masks.items() if k in OBJECTS}, rng)
    if site_probability > 0:
        image, masks = site_augment(image, masks, rng, site_probability)
    return Sample(image, masks, labelled)


def batch_tensors(samples: list[Sample]):
    """(images (B, 1, H, W), targets (B, C, H, W), weights (B, C, 1, 1)) torch tensors."""
    torch = import_torch()
    images = np.stack([network_input(s.image) for s in samples])[:, None]
    empty = np.zeros(samples[0].image.shape, dtype=bool)
    targets = np.stack([[s.masks.get(name, empty) for name in OBJECTS] for s in samples]).astype(np.float32)
    weights = np.array([[name in s.labelled for name in OBJECTS] for s in samples], dtype=np.float32)
    return torch.from_numpy(images), torch.from_numpy(targets), torch.from_numpy(weights)[:, :, None, None]


def loss_function(logits, targets, weights):
    """Binary cross-entropy plus soft Dice, both only over labelled channels (Dice only where the target has
    pixels, so empty channels are learnt from the cross-entropy)."""
    torch = import_torch()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    bce = (bce * weights).sum() / (weights.sum() * logits.shape[-1] * logits.shape[-2]).clamp(min=1)
    probabilities = torch.sigmoid(logits)
    inter = (probabilities * targets).sum(dim=(2, 3))
    total = probabilities.sum(dim=(2, 3)) + targets.sum(dim=(2, 3))
    dice = 1 - (2 * inter + 1) / (total + 1)
    present = weights[:, :, 0, 0] * (targets.sum(dim=(2, 3)) > 0)
    return bce + (dice * present).sum() / present.sum().clamp(min=1)


def validation_scores(model, root: Path) -> dict[str, float]:
    """Dice per lung and heart, CTR error on the Wingspan validation split (never trained on), measured by
    :func:`scanai.chest.evaluate.evaluate_detector`."""
    from scanai.chest.evaluate import evaluate_detector
    from scanai.chest.network import NetworkDetector

    summary = evaluate_detector(NetworkDetector(model.eval()), load_cases(root, "validation"))["summary"]
    scores = {f"validation_dice_{name}_{stat}": float(summary[f"dice_{name}_{stat}"])
              for stat in ("mean", "min") for name in ("lung_right", "lung_left", "heart")}
    scores["validation_ctr_mae"] = float(summary["ctr_mae"])
    return scores


def scenario_scores(model, seeds: range = range(1000, 1020)) -> dict[str, float]:
    """Dice per object on generated chests with seeds the training never draws (held-out phantoms)."""
    from scanai.chest.evaluate import dice
    from scanai.chest.network import NetworkDetector

    detector = NetworkDetector(model.eval())
    scores = {name: [] for name in ANATOMY}
    for seed in seeds:
        phantom = generator.generate_chest(np.random.default_rng(seed), 256)
        detections = detector.detect(phantom.image)
        for name in ANATOMY:
            if phantom.masks[name].any():
                scores[name].append(dice(phantom.masks[name], detections.mask(name)))
    return {f"generated_dice_{name}_mean": float(np.mean(v)) for name, v in scores.items()}


def train(root: Path, steps: int, batch: int, seed: int, threads: int, lr: float = 3e-3, init: Path | None = None,
          site_probability: float = 0.0):
    """Train from scratch, or go on from the weights ``init`` (a second, fine-tuning stage); returns the model
    (eval mode). ``site_probability`` > 0 turns on site augmentation (:mod:`scanai.chest.site_augment`)."""
    torch = import_torch()
    set_determinism(seed, threads)
    rng = np.random.default_rng(seed + 1)
    real = real_pool(root)
    model = build_chest_network()
    if init is not None:
        model.load_state_dict(torch.load(init, map_location="cpu", weights_only=True))
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    start, running = time.time(), 0.0
    for step in range(steps):
        samples = [draw_sample(real, rng, site_probability=site_probability) for _ in range(batch)]
        images, targets, weights = batch_tensors(samples)
        loss = loss_function(model(images), targets, weights)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {running:.4f}  {time.time() - start:6.0f} s", flush=True)
    return model.eval()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train the ChestQC detection network.")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared/data/chest/wingspan",
                        help="the Wingspan folder (png/, mask/, ctr_ground_truth.csv)")
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="folder for the weights and model card")
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of the one-cycle schedule")
    parser.add_argument("--init", type=Path, default=None,
                        help="start from these weights (the fine-tuning stage) instead of from scratch")
    parser.add_argument("--site-augment", action="store_true",
                        help="also reproduce other sites (tone curves, bit depth, grids, noise, markers, collimation, "
                             "portable AP: scanai.chest.site_augment); off by default")
    parser.add_argument("--site-probability", type=float, default=0.7,
                        help="with --site-augment, the chance that a sample goes through the site transforms")
    parser.add_argument("--previous-command", default="",
                        help="the command that made --init (recorded in the model card)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> ModelCard:
    args = parse_args(argv)
    start = time.time()
    site_probability = args.site_probability if args.site_augment else 0.0
    model = train(args.data, args.steps, args.batch, args.seed, args.threads, args.lr, args.init, site_probability)
    seconds = time.time() - start
    metrics = {**validation_scores(model, args.data), **scenario_scores(model)}
    print(metrics)
    card = ModelCard(
        name=MODEL_NAME, version="1", task="chest radiograph anatomy, foreign object and abnormal-part segmentation",
        architecture={"widths": list(WIDTHS), "input_size": INPUT_SIZE, "objects": list(OBJECTS)},
        input_contract={"dimensions": 2, "view": "frontal (PA/AP)"},
        training_data=(
            "Wingspan CTR set (MIT, Dong et al. MICCAI 2018/2019): the 207 training images of the fixed split "
            "scanai/chest/wingspan_split.json with their lung and heart masks, an algorithmic spine mask "
            "(scanai.chest.train.spine_pseudo_label) and composited foreign objects, effusions and pneumothoraces; "
            "plus procedural chests (scanai.chest.generator) with exact masks for every object. Scapulae and "
            "clavicles are learnt from procedural chests only."),
        training_command=" && ".join(filter(None, [args.previous_command, (
            f"python -m scanai.chest.train --data ../shared/data/chest/wingspan --steps {args.steps} "
            f"--batch {args.batch} --seed {args.seed} --threads {args.threads} --lr {args.lr}"
            + (f" --init {args.init}" if args.init else "")
            + (f" --site-augment --site-probability {args.site_probability}" if args.site_augment else ""))])),
        metrics={key: round(value, 4) for key, value in metrics.items()}, sha256="",
        notes=("Validation: the 52 Wingspan validation images (never trained on); generated: 20 procedural chests "
               "with unseen seeds. Sides are named by image position for a standard PA display (image left = "
               "patient right). Scapula, clavicle, foreign-object and abnormal-part outputs are trained on "
               "synthetic objects only and have not been validated on real annotations; real devices (ECG leads, "
               "pacemakers) on the Wingspan images were not labelled and count as background."),
        extra={"training_seconds": round(seconds, 1), "steps": args.steps, "batch": args.batch,
               **({"site_probability": args.site_probability} if args.site_augment else {})})
    return save_model(model, card, args.out)


if __name__ == "__main__":
    main()
