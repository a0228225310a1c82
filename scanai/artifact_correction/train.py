"""Train the motion correction model on simulated cardiac CT (seeded, reproducible on the CPU):

    python -m scanai.artifact_correction.train --cases 1000 --steps 3000 --seed 0 --threads 1 --out scanai/models

(the shipped weights: the default ``--domain randomised`` and ``--loss relative``).

Training data (digest §7.3, [not in patent]: the patent trains on real reconstructions, ¶77). Case ``index`` of
seed ``s`` is :func:`scanai.artifact_correction.simulator.simulate_case` drawn with
``np.random.default_rng([s, index])``:
N = 4 consecutive half-scan windows of one 128² slice (moving phantom, FBP per window), M = 1 ground truth = the
phantom frozen at the centred output window (¶70), reconstructed the same way without noise. About 10 % of the
cases are zero-motion (``static=True``: the heart does not move; the target is the noise-free image), so that a
still input comes back unchanged. The cases are cached in ``--cache`` (default /tmp/artifact_cases.npz).

Split (¶82, 8:2): case indices with ``index % 5 == 4`` are the test portion, fixed by the case seed, never trained
on. Stop (¶85): every ``--eval-every`` steps the mean training loss of that interval is an evaluation; training
stops when the loss changed by at most ``--tolerance`` over 5 consecutive evaluations, or at ``--steps``.
Acceptance (¶87) on the test portion: a case is positive when SSIM(model, truth) > 0.90
(:func:`scanai.artifact_correction.image_quality.ssim`, data range = the cardiac HU window); the accuracy rate, and
the mean
RMSE of the model, of the centre (inner) input phases, of the plain mean and of the best single input phase, go
into the model card with the training command.

The card also records the training ranges of the inputs' features (pixel size, field of view, noise, HU-band
fractions; :func:`training_ranges`), which inference checks; ``--record-ranges`` recomputes them for a shipped card
from its own seeded training cases without retraining.

Loss: L1 (HU / 1000) + 0.2 (1 - SSIM in the cardiac window) of the network's output (``--loss plain``), of the
guard's blend of it with the phases' mean (``guarded``), or that blend's loss divided case by case by the loss of
the phases' mean (``relative``, the default: every case counts by its improvement on its own input); Adam with
cosine decay; batches of random D4 symmetries (flips and quarter turns: other gantry start angles and directions)
of whole slices (the randomised domain: of 128² windows of the heart-centred crops).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from scanai.artifact_correction.network import (
    DEFAULT_ARCHITECTURE,
    HU_MAX,
    HU_MIN,
    MIN_SIZE,
    MODEL_NAME,
    baseline_indices,
    build_artifact_network,
    denormalise_hu,
    network_input,
    normalise_hu,
    run_network,
    size_multiple,
)
from scanai.core.catalog import MODELS_DIR, ModelCard, save_model

N_INPUTS, N_OUTPUTS = 4, 1
#: "mini": the digest's simulator (one thorax, one protocol, 128² of 1 mm); "randomised":
#: :mod:`scanai.artifact_correction.domain` (physics and anatomy drawn per case), resampled to the model's 1 mm grid
#: and cropped to CROP² around the heart; training draws TRAIN_SIZE² windows from the crops.
DOMAINS = ("mini", "randomised")
LOSSES = ("plain", "guarded", "relative")
#: Weight of the raw output's loss beside the guarded blend's (``--loss guarded`` / ``relative``): keeps the raw
#: output sound.
RAW_LOSS_WEIGHT = 0.1
MODEL_PIXEL_MM = 1.0
CROP, TRAIN_SIZE = 144, 128
#: HU augmentation of the randomised domain: (HU + 1000) scaled by 1 +- HU_SCALE_JITTER, shifted by +- HU_OFFSET_JITTER.
HU_SCALE_JITTER, HU_OFFSET_JITTER = 0.03, 15.0
STATIC_FRACTION = 0.1
TEST_EVERY = 5  # index % TEST_EVERY == TEST_EVERY - 1 -> test portion (8:2)
WINDOW_HU = (-200.0, 800.0)
SSIM_THRESHOLD = 0.90
DEFAULT_CACHE = Path("/tmp/artifact_cases.npz")


# ---------------------------------------------------------------------------------------------- data
def is_test_case(index: int) -> bool:
    """The fixed 8:2 split: every fifth case index (4, 9, 14, ...) is in the test portion."""
    return index % TEST_EVERY == TEST_EVERY - 1


def case_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of case ``index`` of training seed ``seed``."""
    return np.random.default_rng([int(seed), int(index)])


@dataclass(frozen=True)
class Case:
    """One simulated slice: ``inputs`` (N, H, W) HU ranked by phase, ``phase_pct`` (N,), ``target`` (M, H, W) HU,
    ``static`` (zero motion), ``index`` (case index)."""

    inputs: np.ndarray
    phase_pct: np.ndarray
    target: np.ndarray
    static: bool
    index: int
    features: dict[str, float] | None = None  # guard.input_features of the inputs on their acquisition grid


def simulated_case(seed: int, index: int, domain: str = "mini", held_out: bool = False):
    """(the :class:`~scanai.artifact_correction.simulator.SimulatedCase` on its acquisition grid, static) of case
    ``index`` of seed ``seed`` in ``domain``; ``held_out`` (randomised domain only) draws the held-out settings."""
    from scanai.artifact_correction.domain import simulate_domain_case
    from scanai.artifact_correction.simulator import simulate_case

    rng = case_rng(seed, index)
    static = bool(rng.random() < STATIC_FRACTION)
    if domain == "randomised":
        return simulate_domain_case(rng, held_out, static, N_INPUTS, N_OUTPUTS)[0], static
    return simulate_case(rng, n_inputs=N_INPUTS, n_outputs=N_OUTPUTS, static=static), static


def held_out_cases(count: int, seed: int = 0, domain: str = "mini", held_out: bool = False) -> list:
    """The first ``count`` cases of the test portion of training seed ``seed`` (never trained on), as
    (SimulatedCase, static) pairs with their coronaries and phantom for evaluation; ``held_out`` draws them from
    the randomised domain's held-out settings instead."""
    indices = [index for index in range(TEST_EVERY * count) if is_test_case(index)][:count]
    return [simulated_case(seed, index, domain, held_out) for index in indices]


def card_draw(card: ModelCard) -> tuple[int, str]:
    """(seed, domain) the cases of a model card's training run were drawn with (cards from before the randomised
    domain were trained on the mini one)."""
    return int(card.extra["seed"]), card.extra.get("domain", "mini")


def heart_crop(images: np.ndarray, case, size: int = CROP) -> np.ndarray:
    """(..., size, size) window of images (..., H, W) on the model's grid, centred on the heart of ``case`` (a
    SimulatedCase of pixel size ``case.pixel_mm`` resampled by :func:`to_model_grid`), air outside the image."""
    from scanai.artifact_correction.simulator import heart_centre_px

    factor = case.pixel_mm / MODEL_PIXEL_MM
    centre = np.array([(pixel + 0.5) * factor - 0.5 for pixel in heart_centre_px(case)])
    start = np.round(centre).astype(int) - size // 2
    pad = max(0, -int(start.min()), int((start + size - np.array(images.shape[-2:])).max()))
    padded = np.pad(images, [(0, 0)] * (images.ndim - 2) + [(pad, pad)] * 2, constant_values=-1000.0)
    rows, columns = start + pad
    return padded[..., rows:rows + size, columns:columns + size]


def to_model_grid(images: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Images (..., H, W) of square pixels ``pixel_mm`` as the network sees them (the inference rule of
    :meth:`~scanai.artifact_correction.network.ArtifactCorrector.correct_on_grid`)."""
    from scanai.artifact_correction.network import needs_resampling, to_pixel_size

    if not needs_resampling((pixel_mm, pixel_mm), MODEL_PIXEL_MM):
        return np.asarray(images, np.float32)
    return to_pixel_size(images, (pixel_mm, pixel_mm), MODEL_PIXEL_MM)


def make_case(seed: int, index: int, domain: str = "mini", held_out: bool = False) -> Case:
    """Case ``index`` of seed ``seed`` (see the module docstring); the same (seed, index) gives the same case. In the
    randomised domain the slices are resampled to the model's grid and cropped around the heart; ``held_out`` draws
    the held-out settings."""
    from scanai.artifact_correction.guard import input_features

    case, static = simulated_case(seed, index, domain, held_out)
    phases = np.array([w.phase_pct for w in case.windows], dtype=np.float64)
    features = input_features(case.inputs[:, None], (case.pixel_mm, case.pixel_mm))
    inputs, target = np.asarray(case.inputs, np.float32), np.asarray(case.target, np.float32)
    if domain == "randomised":
        inputs = heart_crop(to_model_grid(inputs, case.pixel_mm), case)
        target = heart_crop(to_model_grid(target, case.pixel_mm), case)
    return Case(inputs, phases, target, static, index, features)


def _make_case_arrays(job: tuple[int, int, str, bool]) -> tuple:
    case = make_case(*job)
    return case.inputs, case.phase_pct, case.target, case.static, case.features


def simulate_cases(seed: int, count: int, cache: Path | None = DEFAULT_CACHE, workers: int = 2,
                   domain: str = "mini") -> list[Case]:
    """Cases 0..count-1 of ``seed`` in ``domain``, read from ``cache`` when it holds them (same seed and domain),
    else simulated in ``workers`` processes and written there."""
    if cache is not None and Path(cache).is_file():
        with np.load(cache) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("seed") == seed and meta.get("count", 0) >= count and meta.get("domain", "mini") == domain:
                inputs, phases, targets, static = (data[key][:count] for key in ("inputs", "phases", "targets",
                                                                                 "static"))
                features = meta.get("features") or [None] * count
                return [Case(inputs[i], phases[i], targets[i], bool(static[i]), i, features[i]) for i in range(count)]
    started = time.perf_counter()
    jobs = [(seed, index, domain, False) for index in range(count)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            arrays = list(pool.map(_make_case_arrays, jobs, chunksize=4))
    else:
        arrays = [_make_case_arrays(job) for job in jobs]
    print(f"simulated {count} cases in {time.perf_counter() - started:.0f} s", flush=True)
    cases = [Case(a[0], a[1], a[2], a[3], i, a[4]) for i, a in enumerate(arrays)]
    if cache is not None:
        np.savez(cache, inputs=np.stack([c.inputs for c in cases]), phases=np.stack([c.phase_pct for c in cases]),
                 targets=np.stack([c.target for c in cases]), static=np.array([c.static for c in cases]),
                 meta=json.dumps({"seed": seed, "count": count, "domain": domain,
                                  "features": [c.features for c in cases]}))
    return cases


def augment(inputs: np.ndarray, target: np.ndarray, rng: np.random.Generator, size: int | None = None,
            hu_jitter: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The same random D4 symmetry (quarter turns, mirror), ``size``² window (None = whole) and, with ``hu_jitter``,
    HU scale and offset (:data:`HU_SCALE_JITTER`, :data:`HU_OFFSET_JITTER`) of (N, H, W) inputs and (M, H, W)
    target."""
    turns, mirror = int(rng.integers(4)), bool(rng.random() < 0.5)
    rows, columns = inputs.shape[-2:]
    top = int(rng.integers(rows - size + 1)) if size else 0
    left = int(rng.integers(columns - size + 1)) if size else 0
    scale = 1.0 + rng.uniform(-HU_SCALE_JITTER, HU_SCALE_JITTER) if hu_jitter else 1.0
    offset = rng.uniform(-HU_OFFSET_JITTER, HU_OFFSET_JITTER) if hu_jitter else 0.0

    def apply(array: np.ndarray) -> np.ndarray:
        if size:
            array = array[:, top:top + size, left:left + size]
        if hu_jitter:
            array = (array + 1000.0) * scale - 1000.0 + offset
        array = np.rot90(array, turns, axes=(1, 2))
        return np.ascontiguousarray(array[:, :, ::-1] if mirror else array, dtype=np.float32)

    return apply(inputs), apply(target)


# ---------------------------------------------------------------------------------------------- loss
def _torch_ssim(a, b, window: int = 7, dims=None):
    """Mean SSIM of [B, C, H, W] tensors in [0, 1] (data range 1), uniform window, sample covariance (skimage's
    defaults), over the valid interior (and over ``dims`` only when given, e.g. (1, 2, 3): one value per sample)."""
    import torch.nn.functional as functional

    def mean(x):
        return functional.avg_pool2d(x, window, stride=1)

    scale = window * window / (window * window - 1.0)
    mu_a, mu_b = mean(a), mean(b)
    var_a = scale * (mean(a * a) - mu_a**2)
    var_b = scale * (mean(b * b) - mu_b**2)
    cov = scale * (mean(a * b) - mu_a * mu_b)
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim.mean(dim=dims)


def loss_function(output, target, per_sample: bool = False):
    """L1 in HU / 1000 plus 0.2 (1 - SSIM) in the cardiac window; output and target [B, M, H, W] in [0, 1].
    A scalar, or (B,) with ``per_sample``."""
    hu_scale = (HU_MAX - HU_MIN) / 1000.0
    dims = (1, 2, 3) if per_sample else None
    l1 = (output - target).abs().mean(dim=dims) * hu_scale
    low, high = WINDOW_HU

    def windowed(x):
        return ((x * (HU_MAX - HU_MIN) + HU_MIN - low) / (high - low)).clamp(0.0, 1.0)

    return l1 + 0.2 * (1.0 - _torch_ssim(windowed(output), windowed(target), dims=dims))


def gate_and_mean(phases_hu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gate, mean), each (H, W) float32, of one slice's (N, H, W) phases in HU: the guard's disagreement gate
    (:func:`scanai.artifact_correction.guard.disagreement_gate`, on the guard's own noise map) and the phases' mean
    in the network's [0, 1] scale -- what :func:`guarded_loss` blends the network's output with."""
    from scanai.artifact_correction.guard import disagreement_gate, noise_map_hu

    volumes = np.asarray(phases_hu, np.float32)[:, None]
    gate = disagreement_gate(volumes, noise_map_hu(volumes))[0]
    return gate.astype(np.float32), normalise_hu(volumes[:, 0].mean(axis=0))


def guarded_loss(output, target, gate, mean, per_sample: bool = False):
    """:func:`loss_function` of what users get -- the guard's ``mean + gate * (output - mean)`` -- plus
    :data:`RAW_LOSS_WEIGHT` times that of the raw output. output, target [B, M, H, W]; gate, mean [B, 1, H, W] (all
    in the [0, 1] scale). The loss is then spent where the phases disagree (motion), not on denoising still tissue,
    which the guard replaces by the phases' mean anyway. A scalar, or (B,) with ``per_sample``."""
    blended = mean + gate * (output - mean)
    return (loss_function(blended, target, per_sample) + RAW_LOSS_WEIGHT * loss_function(output, target,
                                                                                          per_sample))


def relative_loss(output, target, gate, mean):
    """:func:`guarded_loss` case by case, each divided by the same loss of the phases' mean (what the guard returns
    where nothing moves): every case counts by how much it improves on its own input, so that noisy cases, where
    averaging alone lowers the error most, do not outweigh low-noise cases with motion. Same shapes as
    :func:`guarded_loss`."""
    baseline = loss_function(mean.expand_as(target), target, per_sample=True).detach() + 1e-3
    return (guarded_loss(output, target, gate, mean, per_sample=True) / baseline).mean()


# ---------------------------------------------------------------------------------------------- training
def converged(history: list[float], tolerance: float, patience: int = 5) -> bool:
    """¶85: the loss changed by at most ``tolerance`` between each of the last ``patience`` pairs of consecutive
    evaluations."""
    if len(history) <= patience:
        return False
    recent = np.asarray(history[-patience - 1:])
    return bool(np.all(np.abs(np.diff(recent)) <= tolerance))


def train(cases: list[Case], args: argparse.Namespace, architecture: dict) -> tuple[object, dict]:
    """Train on ``cases`` (the training portion); returns (model in eval mode, training facts)."""
    import torch

    from scanai.core.device import set_determinism

    set_determinism(args.seed, args.threads)
    rng = np.random.default_rng(args.seed + 1)
    model = build_artifact_network(architecture)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=args.steps, eta_min=args.lr * 0.02)
    time_channels = architecture["time_channels"]
    started = time.perf_counter()
    history: list[float] = []
    interval: list[float] = []
    stop_reason = f"maximum of {args.steps} steps"
    model.train()
    randomised = args.domain == "randomised"  # crops of the stored windows and HU jitter
    step = 0
    for step in range(1, args.steps + 1):
        picks = rng.integers(len(cases), size=args.batch)
        inputs, targets, blends = [], [], []
        for pick in picks:
            case = cases[int(pick)]
            phases, target = augment(case.inputs, case.target, rng, TRAIN_SIZE if randomised else None, randomised)
            inputs.append(network_input(phases, case.phase_pct, time_channels))
            targets.append(np.clip((target - HU_MIN) / (HU_MAX - HU_MIN), 0.0, 1.0).astype(np.float32))
            if args.loss in ("guarded", "relative"):
                blends.append(np.stack(gate_and_mean(phases)))
        output, target = model(torch.from_numpy(np.stack(inputs))), torch.from_numpy(np.stack(targets))
        if blends:
            gate, mean = torch.from_numpy(np.stack(blends)).unbind(dim=1)
            blend_loss = relative_loss if args.loss == "relative" else guarded_loss
            loss = blend_loss(output, target, gate[:, None], mean[:, None])
        else:
            loss = loss_function(output, target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        interval.append(float(loss.detach()))
        if step % args.eval_every == 0:
            history.append(float(np.mean(interval)))
            interval = []
            print(f"step {step:5d}  loss {history[-1]:.5f}  {time.perf_counter() - started:6.0f} s", flush=True)
            if converged(history, args.tolerance):
                stop_reason = f"loss change <= {args.tolerance} over 5 evaluations (step {step})"
                break
    facts = {"steps_run": step, "stop_reason": stop_reason, "loss_history": [round(v, 5) for v in history],
             "training_seconds": round(time.perf_counter() - started, 1)}
    return model.eval(), facts


# ---------------------------------------------------------------------------------------------- evaluation
def predict_slice(model, architecture: dict, inputs: np.ndarray, phase_pct: np.ndarray) -> np.ndarray:
    """(M, H, W) HU model output for one (N, H, W) slice in HU."""
    batch = network_input(inputs, phase_pct, architecture["time_channels"])[None]
    return denormalise_hu(run_network(model, batch, size_multiple(architecture)))[0]


def evaluate(model, architecture: dict, cases: list[Case]) -> dict[str, float]:
    """¶87 acceptance and RMSE comparison on ``cases`` (the test portion); see the module docstring.

    rmse_centre_phase: the mean over the inner input phases (those averaged by the baseline) of each one's RMSE;
    rmse_best_input_phase: the best single input phase with hindsight (the smallest RMSE to the truth);
    rmse_best_phase: :func:`scanai.artifact_correction.baselines.best_phase` (least image motion amplitude).
    Ratios and RMSEs are over the moving cases; the static ones are scored apart.
    """
    from scanai.artifact_correction.baselines import best_phase
    from scanai.artifact_correction.image_quality import rmse, ssim

    groups = baseline_indices(N_INPUTS, N_OUTPUTS)
    rows: dict[str, list[float]] = {k: [] for k in ("ssim", "model", "centre", "mean", "best_input", "best_phase",
                                                    "static_model", "static_mean", "static_vs_input_mean")}
    for case in cases:
        output = predict_slice(model, architecture, case.inputs, case.phase_pct)
        truth = case.target
        for m, group in enumerate(groups):
            rows["ssim"].append(ssim(output[m], truth[m]))
            plain = case.inputs[list(group)].mean(axis=0)
            if case.static:
                rows["static_model"].append(rmse(output[m], truth[m]))
                rows["static_mean"].append(rmse(plain, truth[m]))
                rows["static_vs_input_mean"].append(rmse(output[m], case.inputs.mean(axis=0)))
                continue
            rows["model"].append(rmse(output[m], truth[m]))
            rows["centre"].append(float(np.mean([rmse(case.inputs[k], truth[m]) for k in group])))
            rows["mean"].append(rmse(plain, truth[m]))
            rows["best_input"].append(min(rmse(phase, truth[m]) for phase in case.inputs))
            rows["best_phase"].append(rmse(best_phase(case.inputs[:, None])[1][0], truth[m]))
    ssims = np.asarray(rows["ssim"])
    model_rmse = np.asarray(rows["model"])
    metrics = {
        "test_cases": float(len(cases)),
        "test_static_cases": float(sum(c.static for c in cases)),
        "accuracy_rate_ssim_gt_0.90": float(np.mean(ssims > SSIM_THRESHOLD)),
        "ssim_mean": float(ssims.mean()),
        "ssim_min": float(ssims.min()),
        "rmse_model_hu": float(model_rmse.mean()),
        "rmse_centre_phase_hu": float(np.mean(rows["centre"])),
        "rmse_plain_mean_hu": float(np.mean(rows["mean"])),
        "rmse_best_input_phase_hu": float(np.mean(rows["best_input"])),
        "rmse_best_phase_hu": float(np.mean(rows["best_phase"])),
        "ratio_model_to_centre_phase_mean": float(np.mean(model_rmse / np.asarray(rows["centre"]))),
        "ratio_model_to_centre_phase_max": float(np.max(model_rmse / np.asarray(rows["centre"]))),
        "fraction_model_below_plain_mean": float(np.mean(model_rmse < np.asarray(rows["mean"]))),
        "fraction_model_below_best_input_phase": float(np.mean(model_rmse < np.asarray(rows["best_input"]))),
    }
    if rows["static_model"]:
        metrics.update({"static_rmse_model_hu": float(np.mean(rows["static_model"])),
                        "static_rmse_plain_mean_hu": float(np.mean(rows["static_mean"])),
                        "static_rmse_model_vs_input_mean_hu": float(np.max(rows["static_vs_input_mean"]))})
    return metrics


def training_ranges(cases: list[Case]) -> dict[str, list[float]]:
    """{feature: [min, max]} of :func:`scanai.artifact_correction.guard.input_features` of ``cases`` (the training
    portion) on their acquisition grids: what the network has seen, for the out-of-distribution check at
    inference."""
    from scanai.artifact_correction.guard import feature_ranges

    return feature_ranges([case.features for case in cases])


def record_ranges(args: argparse.Namespace) -> ModelCard:
    """``--record-ranges``: recompute the training ranges from the card's own seeded training cases, simulated
    again (the case cache may hold features of an older :func:`~scanai.artifact_correction.guard.input_features`),
    and write them into the card in ``--out`` (weights unchanged)."""
    from scanai.core.catalog import card_path, load_card

    card = load_card(MODEL_NAME, args.out)
    (seed, domain), count = card_draw(card), int(card.extra["cases"])
    cases = [c for c in simulate_cases(seed, count, None, args.workers, domain) if not is_test_case(c.index)]
    contract = {**card.input_contract, "training_ranges": training_ranges(cases)}
    updated = replace(card, input_contract=contract, extra={
        **card.extra, "training_ranges_recorded_by": f"python -m scanai.artifact_correction.train --record-ranges "
                                                     f"(seed {seed}, {len(cases)} training cases)"})
    updated.to_json(card_path(MODEL_NAME, args.out))
    print(json.dumps(contract["training_ranges"], indent=1))
    return updated


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train the multi-phase cardiac CT motion correction model.")
    parser.add_argument("--cases", type=int, default=400, help="simulated cases (8:2 train:test)")
    parser.add_argument("--steps", type=int, default=3000, help="maximum training steps (¶85)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="folder for the weights and model card")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (cosine decay to 2 %%)")
    parser.add_argument("--widths", default=",".join(str(w) for w in DEFAULT_ARCHITECTURE["widths"]),
                        help="U-Net widths per level, comma-separated")
    parser.add_argument("--time-channels", default=DEFAULT_ARCHITECTURE["time_channels"],
                        choices=["none", "phase", "sincos"])
    parser.add_argument("--eval-every", type=int, default=100, help="steps per loss evaluation (¶85)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="¶85 loss-change threshold")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="processes simulating the cases")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="simulated-case cache (npz)")
    parser.add_argument("--domain", default="randomised", choices=DOMAINS,
                        help="training simulation: the digest's mini thorax, or physics and anatomy drawn per case")
    parser.add_argument("--loss", default="relative", choices=LOSSES,
                        help="plain: L1 + SSIM of the network's output; guarded: of the guard's blend of it with the "
                             "phases' mean (the loss spent on motion, not on denoising still tissue); relative (the "
                             "shipped weights): the guarded loss of each case divided by that of the phases' mean")
    parser.add_argument("--held-out", type=int, default=40,
                        help="cases of the held-out settings (randomised domain) to evaluate after training")
    parser.add_argument("--record-ranges", action="store_true",
                        help="only recompute the training ranges (input features seen in training) into the card")
    return parser.parse_args(argv)


def training_data_text(args: argparse.Namespace, train_cases: list[Case]) -> str:
    """The model card's description of the training data."""
    from scanai.artifact_correction.simulator import ScanProtocol

    head = (f"{len(train_cases)} simulated cardiac CT slices (cases with index % 5 != 4 of {args.cases}, seed "
            f"{args.seed}; {sum(c.static for c in train_cases)} zero-motion), 4 consecutive half-scan windows each; "
            "target = the noise-free FBP of the phantom frozen at the centred window. ")
    if args.domain == "randomised":
        return head + (
            "Domain-randomised (scanai.artifact_correction.domain): parallel or fan-beam (20-48 deg, each ray at its "
            "own time) half-scans, rotation 0.25-0.35 s, 144/240 views, FBP kernels ramp/shepp-logan/cosine/hamming, "
            "white or photon-like noise 1.5-42 HU (log-uniform), 128-256 pixels of 0.75-1.9 mm resampled to 1 mm "
            f"and cropped to {CROP}² around the heart; 50-110 bpm, half arrhythmic, windows 15-40 ms apart; the mini "
            "thorax in one case in five, else a thorax built around the heart (subcutaneous fat, muscle, lungs, "
            "spine, sternum, ribs, aorta) and a heart with optional pericardial fat, RV, papillary muscle, calcium, "
            "twist and breathing; real CT texture (pydicom's CT_small.dcm detail) on the still anatomy in half the "
            f"cases; HU scale +-{HU_SCALE_JITTER:g} and offset +-{HU_OFFSET_JITTER:g} HU jitter. Held out "
            "(validation only): the hann kernel, 48-60 HU noise, 52-60 deg fans, coronary stents.")
    protocol = ScanProtocol()
    return head + (
        "The digest's simulator (scanai.artifact_correction.simulator.simulate_case): mini thorax, random heart "
        "phantom (LV, myocardium, coronaries, optional calcium and breathing), RR 0.6-1.1 s with arrhythmia, "
        f"windows 30 ms apart, FBP from {protocol.views} views with {protocol.noise_hu} HU sinogram noise, "
        f"{protocol.pixels}² at {protocol.pixel_mm} mm.")


def training_command(args: argparse.Namespace) -> str:
    return (f"python -m scanai.artifact_correction.train --cases {args.cases} --steps {args.steps} --seed {args.seed} "
            f"--out scanai/models --batch {args.batch} --lr {args.lr} --widths {args.widths} "
            f"--time-channels {args.time_channels} --eval-every {args.eval_every} --tolerance {args.tolerance} "
            f"--threads {args.threads} --domain {args.domain} --loss {args.loss} --held-out {args.held_out}")


def main(argv: list[str] | None = None) -> ModelCard:
    from scanai.artifact_correction.simulator import ScanProtocol

    args = parse_args(argv)
    if args.record_ranges:
        return record_ranges(args)
    started = time.perf_counter()
    cases = simulate_cases(args.seed, args.cases, args.cache, args.workers, args.domain)
    simulation_seconds = time.perf_counter() - started
    train_cases = [c for c in cases if not is_test_case(c.index)]
    test_cases = [c for c in cases if is_test_case(c.index)]
    architecture = {**DEFAULT_ARCHITECTURE, "n_inputs": N_INPUTS, "n_outputs": N_OUTPUTS,
                    "time_channels": args.time_channels, "widths": [int(w) for w in args.widths.split(",")]}
    model, facts = train(train_cases, args, architecture)
    metrics = evaluate(model, architecture, test_cases)
    if args.domain == "randomised" and args.held_out > 0:
        held_out = [make_case(args.seed, index, args.domain, held_out=True)
                    for index in filter(is_test_case, range(TEST_EVERY * args.held_out))]
        metrics.update({f"held_out_settings_{key}": value
                        for key, value in evaluate(model, architecture, held_out).items()})
    print(json.dumps(metrics, indent=1))
    protocol = ScanProtocol()
    accepted = metrics["accuracy_rate_ssim_gt_0.90"] >= 0.90
    card = ModelCard(
        name=MODEL_NAME, version="1",
        task=("multi-phase cardiac CT motion-artifact correction (US 12387302): 4 phase volumes ranked by ascending "
              "phase -> 1 corrected volume at the centred output window (¶70), 2-D slice by slice"),
        architecture=architecture,
        input_contract={"n_inputs": N_INPUTS, "n_outputs": N_OUTPUTS, "order": "ascending_phase",
                        "output_window_rule": "centre", "time_channels": args.time_channels,
                        "normalisation": {"clip_hu": [HU_MIN, HU_MAX], "scale": "(HU + 1024) / 4095"},
                        "dims": "2D", "pixel_mm": protocol.pixel_mm, "min_size": MIN_SIZE,
                        "training_ranges": training_ranges(train_cases)},
        training_data=training_data_text(args, train_cases),
        training_command=training_command(args),
        metrics={key: round(value, 4) for key, value in metrics.items()}, sha256="",
        notes=(f"Test portion: the {len(test_cases)} held-out cases (index % 5 == 4, never trained on). ¶87 "
               f"acceptance (SSIM > 0.90 in >= 90 % of the test cases, data range = HU window {WINDOW_HU}): "
               f"{'accepted' if accepted else 'NOT accepted'}. Widths {architecture['widths']} (narrower than the "
               "digest's 32-512, to train on 2 CPU threads); Adam lr "
               f"{args.lr} with cosine decay instead of 1e-4. RMSE over the whole slice; centre phase = the mean "
               "RMSE of the two inner input phases; best input phase = the single input with the smallest RMSE "
               "(hindsight); best phase = least image motion amplitude. Trained on simulated data only."),
        extra={**facts, "simulation_seconds": round(simulation_seconds, 1), "seed": args.seed, "cases": args.cases,
               "test_rule": "index % 5 == 4", "static_fraction": STATIC_FRACTION, "batch": args.batch,
               "accepted_p87": accepted, "domain": args.domain, "loss": args.loss})
    final = save_model(model, card, args.out)
    print(f"saved {args.out / (MODEL_NAME + '.pt')} sha256 {final.sha256[:12]} in "
          f"{time.perf_counter() - started:.0f} s")
    return final


if __name__ == "__main__":
    main()
