"""Train the short-scan Ki network on physics simulation and write it with its model card.

    python -m scanai.pet.train [--out scanai/models] [--seed 0] [--epochs 25] [--threads 1] [--device auto|cpu|cuda]
                               [--quick]

Data (all generated here, seeded; :mod:`scanai.pet.simulate`): ``--phantoms`` 2-D phantom slices (torso and
head; Feng population input functions; FDG 2TCM tissue values with smooth ±10-20 % fields and 1-5 lesions),
split 80/20 **by phantom** into training and validation (patent ¶107), plus a separate test set of phantoms
from another seed stream for the card's held-out numbers. Every training step draws, per phantom, a fresh late
window (30-50 min half of the time, otherwise inside 25-60 min), a random frame schedule inside it (1-6
frames, equal or random cuts, sometimes a gap), a noise level (CV of a 10-min frame 5-30 %) and a PSF
(FWHM 4-6 mm), then a random 64×64 crop with flips/rotations.

Loss (feature-based cost, ¶121; digest §4.8): inside the body, ``L1(Ki/s) + 0.5 L1(∇Ki/s) + 0.25 L1(V)`` with
``s = KI_SCALE``, labels true Ki (label i) and the full-scan noise-free Patlak intercept (label ii).
Adam (¶123) with cosine learning-rate decay; after each epoch the validation NRMSE selects the weights
(early stopping with patience) and the patent's over/underfitting rule (¶110) is logged next to the usual one.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from scanai.core.catalog import MODELS_DIR, ModelCard, save_and_report
from scanai.core.device import set_determinism
from scanai.pet.network import (
    DEFAULT_ARCHITECTURE,
    FEATURE_SET,
    KI_SCALE,
    MODEL_NAME,
    N_CHANNELS,
    build_ki_network,
    patlak_features,
    run_network,
    window_axes,
)
from scanai.pet.simulate import (
    CV_RANGE,
    DEFAULT_VOXEL_MM,
    DEFAULT_WINDOW_MIN,
    PSF_FWHM_MM_RANGE,
    TRAIN_WINDOW_END_MAX_MIN,
    TRAIN_WINDOW_START_MIN,
    SimPhantom,
    make_phantom,
    noisy_frames,
    random_schedule,
    random_window,
    schedule,
)
from scanai.pet.timing import FrameTiming

VERSION = "1.0.0"
CROP = 64
GRADIENT_WEIGHT = 0.5
V_WEIGHT = 0.25
#: Test schedules of the card (all inside the default 30-50 min window).
DEFAULT_EPOCHS = 25
TEST_SCHEDULES = {"2x10min": 2, "4x5min": 4, "1x20min": 1}


# ---------------------------------------------------------------------------------------------- metrics
def nrmse(estimate: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """Normalised RMSE inside ``mask``: ``||est - ref||_2 / ||ref||_2`` over the masked voxels."""
    diff = (np.asarray(estimate, float) - np.asarray(reference, float))[mask]
    return float(np.sqrt(np.sum(diff**2) / max(np.sum(np.asarray(reference, float)[mask] ** 2), 1e-30)))


def ssim(estimate: np.ndarray, reference: np.ndarray, mask: np.ndarray, sigma: float = 1.5) -> float:
    """Mean structural similarity (Wang et al. 2004; Gaussian window σ = 1.5 px, K1 0.01, K2 0.03) of 2-D images
    (H, W) over ``mask``; both images are set to 0 outside the mask; data range = range of the reference."""
    x = np.where(mask, estimate, 0.0).astype(float)
    y = np.where(mask, reference, 0.0).astype(float)
    data_range = max(float(y[mask].max() - min(y[mask].min(), 0.0)), 1e-12)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = gaussian_filter(x, sigma), gaussian_filter(y, sigma)
    vx = gaussian_filter(x * x, sigma) - mx * mx
    vy = gaussian_filter(y * y, sigma) - my * my
    cxy = gaussian_filter(x * y, sigma) - mx * my
    value = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(value[mask].mean())


def lesion_biases(estimate: np.ndarray, reference: np.ndarray, lesions: np.ndarray) -> list[float]:
    """Relative bias of the lesion-mean value, one entry per lesion: ``mean(est) / mean(ref) - 1``."""
    out = []
    for number in np.unique(lesions[lesions > 0]):
        inside = lesions == number
        truth = float(reference[inside].mean())
        if truth > 0:
            out.append(float(estimate[inside].mean()) / truth - 1.0)
    return out


# ---------------------------------------------------------------------------------------------- samples
@dataclass
class Sample:
    """One rendered example. features (C, H, W) float32; target (2, H, W) float32 (true Ki, label-ii V);
    body (H, W) bool; patlak_ki (H, W) (0 with one frame); phantom index; timing."""

    features: np.ndarray
    target: np.ndarray
    body: np.ndarray
    patlak_ki: np.ndarray
    phantom: int
    timing: FrameTiming
    cv: float


def render_sample(phantom: SimPhantom, rng: np.random.Generator, timing: FrameTiming | None = None,
                  cv: float | None = None, index: int = -1) -> Sample:
    """Noisy frames of ``phantom`` on ``timing`` (default: random window and schedule) as network inputs."""
    timing = timing if timing is not None else random_schedule(rng, random_window(rng))
    noisy = noisy_frames(phantom, timing, rng, cv=cv)
    x_min, cp_mean, weights = window_axes(timing, phantom.input_function)
    features = patlak_features(noisy.frames, x_min, cp_mean, weights)
    target = np.stack([phantom.ki_true, phantom.v_patlak_full]).astype(np.float32)
    return Sample(features, target, phantom.body, features[0] * KI_SCALE * (len(timing) >= 2), index, timing,
                  noisy.cv)


def _crop_batch(samples: list[Sample], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random CROP×CROP crops of the samples' slices with random flips and 90° rotations: (x, target, body)."""
    xs, ys, ms = [], [], []
    for sample in samples:
        height, width = sample.body.shape
        j0 = int(rng.integers(0, height - CROP + 1))
        i0 = int(rng.integers(0, width - CROP + 1))
        window = (slice(j0, j0 + CROP), slice(i0, i0 + CROP))
        x, y, m = sample.features[(slice(None),) + window], sample.target[(slice(None),) + window], \
            sample.body[window]
        turns = int(rng.integers(4))
        x, y, m = np.rot90(x, turns, (1, 2)), np.rot90(y, turns, (1, 2)), np.rot90(m, turns)
        if rng.random() < 0.5:
            x, y, m = x[:, :, ::-1], y[:, :, ::-1], m[:, ::-1]
        xs.append(np.ascontiguousarray(x))
        ys.append(np.ascontiguousarray(y))
        ms.append(np.ascontiguousarray(m))
    return np.stack(xs), np.stack(ys), np.stack(ms)


def loss_terms(prediction, target, mask):
    """Training loss (torch): masked L1 of Ki/KI_SCALE + GRADIENT_WEIGHT * masked L1 of its finite differences
    + V_WEIGHT * masked L1 of V. prediction/target (B, 2, H, W), mask (B, H, W) float. Returns the scalar loss."""
    import torch

    ki, ki_ref = prediction[:, 0] / KI_SCALE, target[:, 0] / KI_SCALE
    count = mask.sum().clamp_min(1.0)
    l1 = ((ki - ki_ref).abs() * mask).sum() / count
    v1 = ((prediction[:, 1] - target[:, 1]).abs() * mask).sum() / count
    mask_x = mask[:, :, 1:] * mask[:, :, :-1]
    mask_y = mask[:, 1:, :] * mask[:, :-1, :]
    grad_x = (torch.diff(ki, dim=2) - torch.diff(ki_ref, dim=2)).abs()
    grad_y = (torch.diff(ki, dim=1) - torch.diff(ki_ref, dim=1)).abs()
    gradient = (grad_x * mask_x).sum() / mask_x.sum().clamp_min(1.0) + (grad_y * mask_y).sum() / \
        mask_y.sum().clamp_min(1.0)
    return l1 + GRADIENT_WEIGHT * gradient + V_WEIGHT * v1


def predict_samples(model, samples: list[Sample]) -> np.ndarray:
    """(N, 2, H, W) network output for the samples' full slices."""
    return run_network(model, np.stack([s.features for s in samples]), batch=16)


def mean_nrmse(model, samples: list[Sample]) -> float:
    """Mean Ki NRMSE (vs true Ki, in the body) of ``model`` over ``samples``."""
    prediction = predict_samples(model, samples)
    return float(np.mean([nrmse(p[0], s.target[0], s.body) for p, s in zip(prediction, samples, strict=True)]))


# ---------------------------------------------------------------------------------------------- training
def fitting_state(train_accuracy: float, validation_accuracy: float, best_validation: float,
                  threshold: float = 0.5) -> str:
    """The patent's ¶110 labels (accuracy = 1 - NRMSE): 'overfitting' when validation accuracy is below training
    accuracy and not improving; 'underfitting (patent rule)' when validation accuracy exceeds training accuracy
    (as ¶110 is written); 'underfitting (usual rule)' when both are below ``threshold``; else 'ok'."""
    labels = []
    if validation_accuracy < train_accuracy and validation_accuracy <= best_validation:
        labels.append("overfitting")
    if validation_accuracy > train_accuracy:
        labels.append("underfitting (patent rule)")
    if validation_accuracy < threshold and train_accuracy < threshold:
        labels.append("underfitting (usual rule)")
    return ", ".join(labels) or "ok"


def train_model(train: list[SimPhantom], validation: list[Sample], train_check: list[Sample], epochs: int,
                seed: int, device: str = "auto", batch_size: int = 16, learning_rate: float = 2e-3,
                patience: int = 8, log=print):
    """Train a :class:`KiNet`; returns (best model in eval mode, per-epoch history, best epoch)."""
    import copy

    import torch

    from scanai.core.device import choose_device

    target_device = choose_device(device)
    torch.manual_seed(seed)
    model = build_ki_network(DEFAULT_ARCHITECTURE).to(target_device)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    steps_per_epoch = max(1, len(train) // batch_size)
    schedule_lr = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs * steps_per_epoch,
                                                             eta_min=learning_rate * 0.02)
    history: list[dict[str, Any]] = []
    best = (np.inf, 0, copy.deepcopy(model.state_dict()))
    for epoch in range(epochs):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 3, epoch]))
        order = rng.permutation(len(train))
        model.train()
        total, started = 0.0, time.time()
        for step in range(steps_per_epoch):
            chosen = order[step * batch_size:(step + 1) * batch_size]
            samples = [render_sample(train[n], rng, index=int(n)) for n in chosen]
            x, y, m = _crop_batch(samples, rng)
            x, y = torch.from_numpy(x).to(target_device), torch.from_numpy(y).to(target_device)
            m = torch.from_numpy(m.astype(np.float32)).to(target_device)
            optimiser.zero_grad(set_to_none=True)
            loss = loss_terms(model(x), y, m)
            loss.backward()
            optimiser.step()
            schedule_lr.step()
            total += float(loss.detach())
        model.eval()
        val = mean_nrmse(model, validation)
        trn = mean_nrmse(model, train_check)
        state = fitting_state(1 - trn, 1 - val, 1 - best[0])
        history.append({"epoch": epoch + 1, "loss": round(total / steps_per_epoch, 5), "train_nrmse": round(trn, 5),
                        "validation_nrmse": round(val, 5), "state": state})
        log(f"  epoch {epoch + 1}/{epochs}: loss {total / steps_per_epoch:.4f}, train NRMSE {trn:.4f}, validation "
            f"NRMSE {val:.4f} [{state}] ({time.time() - started:.0f} s)", flush=True)
        if val < best[0]:
            best = (val, epoch + 1, copy.deepcopy(model.state_dict()))
        elif epoch + 1 - best[1] >= patience:
            log(f"  early stop: no validation improvement for {patience} epochs")
            break
    model.load_state_dict(best[2])
    return model.eval(), history, best[1]


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate(model, phantoms: list[SimPhantom], seed: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Held-out metrics on ``phantoms`` for each TEST_SCHEDULES entry (default window 30-50 min, noise CV drawn
    as in training): Ki NRMSE and SSIM vs true Ki (label i) and vs full-scan Patlak (label ii) for the network
    and for voxelwise Patlak on the same frames, the relative NRMSE reduction, and lesion-mean Ki bias."""
    metrics: dict[str, float] = {}
    extra: dict[str, Any] = {}
    for name, n_frames in TEST_SCHEDULES.items():
        rng = np.random.default_rng(np.random.SeedSequence([seed, 4, n_frames]))
        timing = schedule(DEFAULT_WINDOW_MIN, n_frames)
        samples = [render_sample(p, rng, timing, index=k) for k, p in enumerate(phantoms)]
        prediction = predict_samples(model, samples)
        rows: dict[str, list[float]] = {}
        for p, s, phantom in zip(prediction, samples, phantoms, strict=True):
            body = s.body
            estimates = {"network": p[0]} | ({"patlak": s.patlak_ki} if n_frames >= 2 else {})
            for method, estimate in estimates.items():
                for label, reference in (("true", phantom.ki_true), ("full_patlak", phantom.ki_patlak_full)):
                    rows.setdefault(f"nrmse_ki_{method}_vs_{label}", []).append(nrmse(estimate, reference, body))
                    rows.setdefault(f"ssim_ki_{method}_vs_{label}", []).append(ssim(estimate, reference, body))
                rows.setdefault(f"lesion_bias_{method}", []).extend(lesion_biases(estimate, phantom.ki_true,
                                                                                  phantom.lesions))
            rows.setdefault("nrmse_v_network_vs_full_patlak", []).append(nrmse(p[1], phantom.v_patlak_full, body))
        for key, values in rows.items():
            metrics[f"{name}_{key}"] = round(float(np.mean(values)), 5)
            if key.startswith("lesion_bias"):
                metrics[f"{name}_{key}_abs"] = round(float(np.mean(np.abs(values))), 5)
        if n_frames >= 2:
            for label in ("true", "full_patlak"):
                net, pat = metrics[f"{name}_nrmse_ki_network_vs_{label}"], metrics[f"{name}_nrmse_ki_patlak_vs_{label}"]
                metrics[f"{name}_nrmse_reduction_vs_{label}"] = round(1.0 - net / pat, 5)
        extra[f"{name}_n_lesions"] = len(rows.get("lesion_bias_network", []))
    return metrics, extra


# ---------------------------------------------------------------------------------------------- main
def split_phantoms(seed: int, count: int, test_count: int, log=print
                   ) -> tuple[list[SimPhantom], list[SimPhantom], list[SimPhantom]]:
    """(train 80 %, validation 20 %) by phantom from seed stream [seed, 1, n], and a test set from [seed, 2, n]."""
    started = time.time()
    phantoms = [make_phantom(np.random.default_rng(np.random.SeedSequence([seed, 1, n])), seed=n)
                for n in range(count)]
    test = [make_phantom(np.random.default_rng(np.random.SeedSequence([seed, 2, n])), seed=n)
            for n in range(test_count)]
    n_train = int(round(0.8 * count))
    log(f"  {count} phantoms ({n_train} train / {count - n_train} validation) + {test_count} test "
        f"({time.time() - started:.0f} s)", flush=True)
    return phantoms[:n_train], phantoms[n_train:], test


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scanai.pet.train", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="folder for the weights and card")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--phantoms", type=int, default=400, help="phantoms split 80/20 train/validation")
    parser.add_argument("--test-phantoms", type=int, default=40, help="held-out test phantoms (other seed stream)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (fixed for reproducibility; 1 is also fastest on a shared 2-core CPU)")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (seconds); not a usable model")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> ModelCard:
    """Simulate, train, select on validation, evaluate on the test phantoms, write ``<out>/pet_ki_network.*``."""
    args = parse_args(argv)
    set_determinism(args.seed, args.threads)
    started = time.time()
    count, test_count, epochs = (20, 4, 1) if args.quick else (args.phantoms, args.test_phantoms, args.epochs)
    print("simulating phantoms ...", flush=True)
    train, validation, test = split_phantoms(args.seed, count, test_count)
    rng = np.random.default_rng(np.random.SeedSequence([args.seed, 5]))
    validation_samples = [render_sample(p, rng, index=k) for k, p in enumerate(validation)]
    train_check = [render_sample(train[k], rng, index=k) for k in range(min(len(train), len(validation)))]
    model, history, best_epoch = train_model(train, validation_samples, train_check, epochs, args.seed,
                                             args.device, batch_size=8 if args.quick else 16)
    metrics, extra = evaluate(model, test, args.seed)
    seconds = time.time() - started
    n_parameters = sum(p.numel() for p in model.parameters())
    training_data = (
        f"Physics simulation (scanai.pet.simulate), seed {args.seed}: {count} 2-D phantom slices "
        f"({len(train)} train / {len(validation)} validation, split by phantom) of 96x96 voxels of "
        f"{DEFAULT_VOXEL_MM:g} mm, torso (thorax / upper abdomen / abdomen: lungs, liver, myocardium with blood "
        "pool, aorta, kidneys, spine) and head (grey/white matter, nuclei, skull) with FDG 2TCM values (k4 = 0; "
        "scanai.pet.simulate.FDG_TISSUES), a per-phantom region factor U(0.8, 1.2), smooth Gaussian random fields "
        "of +/-10-20 % on K1, k2, k3, vB 0.03-0.05 (1 in blood), 1-5 lesions (K1 0.15-0.9, k2 0.2-0.7, k3 "
        "0.05-0.25). Input functions: Feng FDG, A +/-20 %, lambda +/-10 %, delay 0-0.5 min, scale 0.5-1.5. Each "
        "step renders fresh frames: window 30-50 min (50 %) or start 25-40 min, length 10-30 min, end <= 60 min; "
        "1-6 frames (equal or random cuts, sometimes a gap); noise sigma^2 = s C exp(lambda t)/dt with the CV of a "
        f"10-min frame at 45 min log-uniform {CV_RANGE[0]:g}-{CV_RANGE[1]:g}; Gaussian PSF FWHM "
        f"{PSF_FWHM_MM_RANGE[0]:g}-{PSF_FWHM_MM_RANGE[1]:g} mm on signal and noise; 64x64 crops, flips, rotations. "
        "Labels: true Ki = (1 - vB) K1 k3/(k2 + k3) (loss) and the noise-free full-scan (0-60 min, 32 frames, "
        f"t* 20 min) Patlak intercept for V. Test: {test_count} phantoms of an unseen seed stream."
    )
    command = "python -m scanai.pet.train --out scanai/models --seed {}{}".format(
        args.seed, " --quick" if args.quick else (f" --epochs {args.epochs}" if args.epochs != DEFAULT_EPOCHS else ""))
    card = ModelCard(
        name=MODEL_NAME, version=VERSION + ("-quick" if args.quick else ""),
        task="Short-scan parametric PET (US 2021/0272340 embodiment B): late frames inside a window (default "
             "30-50 min p.i.) + plasma input function -> Ki (1/min) and Patlak intercept V maps, any frame schedule",
        architecture=dict(DEFAULT_ARCHITECTURE),
        input_contract={"channels": N_CHANNELS, "features": FEATURE_SET, "spatial_dims": 2, "min_frames": 1,
                        "min_window_start_min": TRAIN_WINDOW_START_MIN[0],
                        "max_window_end_min": TRAIN_WINDOW_END_MAX_MIN},
        training_data=training_data, training_command=command, metrics=metrics, sha256="",
        notes=("Inputs: scanai.pet.network.patlak_features (Patlak slope, mean ratio / mean x, intercept over the "
               "frames in the window; x-mean, x-spread and has-slope constants; duration weights), so the network "
               "is exactly invariant to a common scale of frames and input function and accepts any schedule of "
               ">= 1 frames in the window. Metrics: test phantoms (unseen seed stream), window 30-50 min, schedules "
               "2x10 min, 4x5 min, 1x20 min; NRMSE = ||est - ref|| / ||ref|| over body voxels, mean over phantoms; "
               "SSIM Gaussian sigma 1.5 px over the body; 'patlak' = voxelwise Patlak (duration weights) on the same "
               "noisy frames; 'true' = label (i), 'full_patlak' = label (ii), noise-free 0-60 min Patlak; "
               "nrmse_reduction = 1 - network/patlak; lesion_bias = mean over lesions of lesion-mean Ki / true - 1. "
               f"Trained at {DEFAULT_VOXEL_MM:g} mm voxels with a 4-6 mm PSF; other voxel sizes work but were not "
               "validated. Validation split used for weight selection (best epoch) only."),
        extra={"parameters": int(n_parameters), "training_seconds": round(seconds, 1), "epochs_run": len(history),
               "best_epoch": best_epoch, "seed": args.seed, "device": str(args.device), "threads": args.threads,
               "phantoms": count, "train_phantoms": len(train), "validation_phantoms": len(validation),
               "test_phantoms": len(test), "loss": f"L1(Ki/{KI_SCALE}) + {GRADIENT_WEIGHT} L1(grad Ki/{KI_SCALE}) "
                                                   f"+ {V_WEIGHT} L1(V), body mask",
               "optimiser": "Adam lr 2e-3, cosine decay to 4e-5, batch 16, 64x64 crops",
               "history": history, **extra},
    )
    return save_and_report(model, card, args.out, seconds)


if __name__ == "__main__":
    main(sys.argv[1:])
