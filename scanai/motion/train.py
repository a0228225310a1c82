"""Train the multi-pair motion network (seeded, reproducible on the CPU):

    python -m scanai.motion.train --out scanai/models --seed 0

Training data
- **Textured analytic phantoms** (:func:`scanai.motion.phantom.smooth_motion_phantom`) with random size,
  contraction, twist, texture, noise, reference frame and crop offset, and a random intensity transform. In
  half of the clips one or two frames are corrupted (strong noise, blur or an intensity drop): there only the
  other pairs can tell the motion, which is what the joint refinement is for.
- **Real-texture videos** (:func:`real_texture_video`): a frame of a real cine moved by the same analytic
  heart motion about a point near the image centre, at the cine's resolution or halved (as the network sees a
  256² cine): real anatomy and noise with an exact field, since the phantoms alone did not carry over.
- **Real cine MR**: every slice of the Sunnybrook case in ``../shared/data/cardiac/sunnybrook`` (images only;
  the manual contours are never used for training, they are the test of propagation).

Loss per clip (digest §4.2): local NCC between each pair's first image and its warped second image
(¶0043 similarity), + smoothness of the field, + temporal consistency (the acceleration of each point's
trajectory reference -> t, small for cardiac motion), + for consecutive pairs the composed long-range term
(¶0043) and, when the clip spans the whole cycle, cycle closure (composition around the cycle = identity; in
joint steps the network's loop constraint already removes the first-order part); on
phantoms also the supervised end-point error against the exact field (¶0042; whole image plus myocardium) and
the Dice of the warped myocardium mask. A quarter of the steps run the pairs independently (``joint=False``) so
that the same weights
serve the pair-by-pair ablation.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scanai.core.catalog import MODELS_DIR, ModelCard, save_model
from scanai.core.paths import shared_data_dir
from scanai.motion.network import (
    DEFAULT_ARCHITECTURE,
    MODEL_NAME,
    build_motion_network,
    local_ncc_loss,
    normalise_video,
    smoothness_loss,
)
from scanai.motion.pairs import make_pairs
from scanai.motion.phantom import contraction_profile, heart_motion_on_image, myocardium_mask, smooth_motion_phantom

TRAINING_COMMAND = "python -m scanai.motion.train --out scanai/models --seed 0"


@dataclass(frozen=True)
class Video:
    """One cine slice for training. frames (T, H, W) float32 raw; truth (T, H, W, 2) pull-back pixels (dy, dx)
    relative to ``reference`` or None; masks (T, H, W) bool myocardium or None."""

    frames: np.ndarray
    truth: np.ndarray | None
    masks: np.ndarray | None
    reference: int


@dataclass(frozen=True)
class Clip:
    """Frames in visiting order from the clip's reference (index 0). video (N, H, W) in [0, 1]; truth (N, H, W, 2)
    or None; masks (N, H, W) float32 or None; closed: the clip spans whole cycles (its last frame precedes the
    first)."""

    video: np.ndarray
    truth: np.ndarray | None
    masks: np.ndarray | None
    closed: bool


# ---------------------------------------------------------------------------------------------- data
def random_phantom(rng: np.random.Generator, size: int, n_frames: int | None = None,
                   corrupt: bool = False) -> Video:
    """A textured beating-ring phantom with random parameters (see the module docstring), cropped to size²."""
    n_frames = n_frames or int(rng.integers(12, 25))
    render = size + 16
    r_endo = 0.16 * render
    amplitude = float(rng.uniform(0.12, 0.42) * r_endo)
    twist = float(rng.uniform(-10.0, 10.0))
    reference = int(rng.integers(0, n_frames)) if rng.random() < 0.3 else 0
    sequence, truth = smooth_motion_phantom(n_frames=n_frames, shape=(1, render, render), amplitude_px=amplitude,
                                            twist_deg=twist, noise=float(rng.uniform(0.005, 0.04)),
                                            reference_index=reference, seed=int(rng.integers(1 << 30)))
    masks = np.stack([myocardium_mask(sequence, t, amplitude, twist)[0] for t in range(n_frames)])
    top, left = (int(v) for v in rng.integers(0, 17, size=2))
    window = (slice(top, top + size), slice(left, left + size))
    frames = sequence.frames[:, 0][(slice(None), *window)]
    pixels = truth[:, 0][(slice(None), *window)][..., [1, 0]].astype(np.float32)  # RAS = (i, j) here -> (dy, dx)
    frames = _intensity_transform(frames, rng)
    if corrupt:
        frames = _corrupt_frames(frames, reference, rng)
    return Video(frames.astype(np.float32), pixels, masks[(slice(None), *window)], reference)


def real_texture_video(frames: np.ndarray, rng: np.random.Generator, size: int = 96) -> Video:
    """One frame of a real cine, moved by the analytic heart motion about a point near the image centre (where
    a short-axis LV usually is), at its own resolution or halved: real-image texture with exact truth. Cropped
    to size² about the ring."""
    from scanai.motion.network import WORKING_SIZE

    image = frames[int(rng.integers(len(frames)))].astype(np.float64)
    if rng.random() < 0.5 and max(image.shape) > WORKING_SIZE:
        image = image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2]
        image = image.reshape(image.shape[0] // 2, 2, image.shape[1] // 2, 2).mean(axis=(1, 3))
    height, width = image.shape
    centre = (height / 2 + rng.uniform(-0.1, 0.1) * height, width / 2 + rng.uniform(-0.1, 0.1) * width)
    r_endo = float(rng.uniform(8.0, 20.0))
    n_frames = int(rng.integers(12, 25))
    moved, truth, masks = heart_motion_on_image(image, n_frames, centre, r_endo, rng.uniform(0.12, 0.42) * r_endo,
                                                rng.uniform(-10.0, 10.0))
    top = int(np.clip(round(centre[0]) - size // 2 + rng.integers(-12, 13), 0, height - size))
    left = int(np.clip(round(centre[1]) - size // 2 + rng.integers(-12, 13), 0, width - size))
    window = (slice(None), slice(top, top + size), slice(left, left + size))
    moved = moved[window] + rng.normal(0.0, rng.uniform(0.0, 0.02) * float(np.percentile(image, 99)),
                                       size=moved[window].shape)
    return Video(moved.astype(np.float32), truth[window], masks[window], 0)


def _intensity_transform(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Same random gamma, gain, offset and smooth bias field for every frame."""
    from scipy import ndimage

    gamma = rng.uniform(0.7, 1.5)
    bias = ndimage.gaussian_filter(rng.normal(size=frames.shape[1:]), sigma=frames.shape[1] / 4)
    bias = 1.0 + 0.3 * bias / (np.abs(bias).max() + 1e-6)
    return rng.uniform(0.7, 1.3) * np.clip(frames, 0, None) ** gamma * bias + rng.uniform(-0.1, 0.1)


def _corrupt_frames(frames: np.ndarray, reference: int, rng: np.random.Generator) -> np.ndarray:
    """Corrupt one or two non-reference frames: strong noise, blur, or an intensity drop."""
    from scipy import ndimage

    out = frames.copy()
    candidates = [t for t in range(len(frames)) if t != reference]
    for t in rng.choice(candidates, size=min(len(candidates), int(rng.integers(1, 3))), replace=False):
        kind = rng.integers(3)
        if kind == 0:
            out[t] = out[t] + rng.normal(0.0, rng.uniform(0.08, 0.15), size=out[t].shape)
        elif kind == 1:
            out[t] = ndimage.gaussian_filter(out[t], rng.uniform(1.5, 2.5))
        else:
            out[t] = out[t] * rng.uniform(0.5, 0.8) + rng.uniform(0.0, 0.1)
    return out


def real_videos(data_dir: Path | None) -> list[Video]:
    """Every slice of the Sunnybrook cine (images only), or [] without the data folder."""
    from scanai.io.cine import list_cine_slices, read_sunnybrook_cine

    if data_dir is None:
        return []
    folder = data_dir / "cardiac" / "sunnybrook" / "dicoms" / "SCD0000101"
    slices = len(list_cine_slices(folder))
    return [Video(read_sunnybrook_cine(folder, slice_index=s).frames[:, 0].astype(np.float32), None, None, 0)
            for s in range(slices)]


def make_clip(video: Video, rng: np.random.Generator, max_frames: int, crop: int | None, closed: bool) -> Clip:
    """Frames of ``video`` from its reference in cyclic order with a random stride; a random crop (real data)."""
    count = len(video.frames)
    if closed:
        strides = [s for s in (1, 2, 3) if count % s == 0 and count // s <= max_frames] or [count // 4]
        stride = int(rng.choice(strides))
        order = [(video.reference + k * stride) % count for k in range(count // stride)]
    else:
        stride = int(rng.integers(1, 3))
        length = int(rng.integers(4, max_frames + 1))
        order = [(video.reference + k * stride) % count for k in range(min(length, count // stride))]
    frames = video.frames[order]
    if crop is not None:
        height, width = frames.shape[1:]
        top = (height - crop) // 2 + int(rng.integers(-16, 17))
        left = (width - crop) // 2 + int(rng.integers(-16, 17))
        frames = frames[:, top:top + crop, left:left + crop]
    truth = video.truth[order] if video.truth is not None else None
    masks = video.masks[order].astype(np.float32) if video.masks is not None else None
    return Clip(normalise_video(frames), truth, masks, closed)


# ---------------------------------------------------------------------------------------------- losses
def soft_dice_loss(a, b):
    """1 - soft Dice of [N, 1, H, W] masks in [0, 1]."""
    return 1.0 - (2 * (a * b).sum() + 1.0) / (a.sum() + b.sum() + 1.0)


def lagrangian_fields(fields, pairs: list[tuple[int, int]]):
    """Pair fields [K, 2, H, W] -> {frame: reference -> frame field}: directly for reference pairs, composed along
    consecutive pairs (the last entry of a closed cycle is keyed by the reference frame 0)."""
    from scanai.motion.layers import compose

    if all(a == pairs[0][0] for a, _ in pairs):
        return {b: fields[k:k + 1] for k, (_, b) in enumerate(pairs)}
    out, total = {}, None
    for k, (_, b) in enumerate(pairs):
        total = fields[k:k + 1] if total is None else compose(total, fields[k:k + 1])
        out[b] = total
    return out


def clip_loss(model, clip: Clip, scheme: str, joint: bool, weights: dict[str, float]):
    """Training loss of one clip and its terms (floats) for logging."""
    import torch

    from scanai.motion.layers import warp

    video = torch.from_numpy(clip.video)[:, None]  # [N, 1, H, W]
    pairs = make_pairs(len(video), 0, scheme, closed=clip.closed and scheme == "consecutive")
    fields = model(video[None], pairs, joint=joint)[0]  # [K, 2, H, W]
    first = video[[a for a, _ in pairs]]
    second = video[[b for _, b in pairs]]
    terms = {"similarity": local_ncc_loss(first, warp(second, fields)), "smoothness": smoothness_loss(fields)}
    lagrangian = lagrangian_fields(fields, pairs)
    if len(lagrangian) >= 3:  # cardiac motion is smooth in time: penalise the trajectories' acceleration
        ordered = torch.cat([lagrangian[t] for t in sorted(t for t in lagrangian if t != 0)])
        ordered = torch.cat([torch.zeros_like(ordered[:1]), ordered])
        terms["temporal"] = (ordered[2:] - 2 * ordered[1:-1] + ordered[:-2]).pow(2).sum(dim=1).add(1e-6).sqrt().mean()
    if scheme == "consecutive":
        frames = [t for t in lagrangian if t != 0]
        composed = torch.cat([lagrangian[t] for t in frames])
        terms["long_range"] = local_ncc_loss(video[[0] * len(frames)], warp(video[frames], composed))
        if 0 in lagrangian:
            terms["cycle"] = (lagrangian[0] ** 2).sum(dim=1).add(1e-6).sqrt().mean()  # finite gradient at 0
    if clip.truth is not None:
        frames = [t for t in lagrangian if t != 0]
        estimate = torch.cat([lagrangian[t] for t in frames])
        truth = torch.from_numpy(clip.truth[frames]).permute(0, 3, 1, 2)
        masks = torch.from_numpy(clip.masks)[:, None]
        error = ((estimate - truth) ** 2).sum(dim=1).add(1e-6).sqrt()  # [F, H, W] pixels
        terms["endpoint"] = error.mean() + (error * masks[0]).sum() / (masks[0].sum() * len(frames) + 1.0)
        terms["dice"] = soft_dice_loss(masks[[0] * len(frames)], warp(masks[frames], estimate))
    total = sum(weights[name] * value for name, value in terms.items())
    return total, {name: float(value.detach()) for name, value in terms.items()}


# ---------------------------------------------------------------------------------------------- evaluation
def evaluation_set(seed: int, count: int, corrupt: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Held-out phantoms like the acceptance case (96², 20 frames, 3-6 px contraction, ±8° twist, noise 0.01):
    (frames (T, H, W), truth (T, H, W, 2) pixels, ED myocardium mask (H, W))."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        sequence, truth = smooth_motion_phantom(n_frames=20, shape=(1, 96, 96), amplitude_px=rng.uniform(3, 6),
                                                twist_deg=rng.uniform(-8, 8), noise=0.01,
                                                seed=int(rng.integers(1 << 30)))
        frames = sequence.frames[:, 0].copy()
        if corrupt:
            frames = _corrupt_frames(frames, 0, rng)
        cases.append((frames, truth[:, 0][..., [1, 0]].astype(np.float32), myocardium_mask(sequence, 0)[0]))
    return cases


def evaluate(model, cases, joint: bool, scheme: str = "reference") -> dict[str, float]:
    """Mean myocardial end-point error at end-systole and over all frames (pixels) on ``cases``."""
    from scanai.motion.network import _lagrangian_from_pairs, predict_pair_fields

    es_errors, all_errors = [], []
    for frames, truth, mask in cases:
        pairs = make_pairs(len(frames), 0, scheme)
        fields = _lagrangian_from_pairs(predict_pair_fields(model, normalise_video(frames), pairs, joint), pairs,
                                        len(frames), scheme)
        error = np.linalg.norm(fields - truth, axis=-1)[:, mask]  # (T, P)
        es = int(np.argmax(contraction_profile(len(frames))))
        es_errors.append(error[es].mean())
        all_errors.append(error[1:].mean())
    return {"es_epe_px": float(np.mean(es_errors)), "mean_epe_px": float(np.mean(all_errors))}


# ---------------------------------------------------------------------------------------------- main
WEIGHTS = {"similarity": 1.0, "smoothness": 0.5, "long_range": 0.5, "cycle": 0.2, "temporal": 0.2, "endpoint": 1.0,
           "dice": 0.5}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train the multi-pair cardiac motion network.")
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="folder for the weights and model card")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=9000)
    parser.add_argument("--pool", type=int, default=120, help="phantom videos generated for training")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> ModelCard:
    import torch

    from scanai.core.device import set_determinism

    args = parse_args(argv)
    set_determinism(args.seed, args.threads)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    phantoms = [random_phantom(rng, int(rng.choice([64, 80])), corrupt=bool(rng.random() < 0.5))
                for _ in range(args.pool)]
    real = real_videos(shared_data_dir())
    textured = [real_texture_video(real[int(rng.integers(len(real)))].frames, rng) for _ in range(args.pool)
                if real]
    print(f"{len(phantoms)} phantom videos, {len(real)} real cine slices, {len(textured)} real-texture videos "
          f"({time.perf_counter() - started:.0f} s)")
    model = build_motion_network(DEFAULT_ARCHITECTURE)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-4, total_steps=args.steps, pct_start=0.05)
    running: dict[str, float] = {}
    for step in range(args.steps):
        source = rng.random()
        use_real = bool(real) and source < 0.3
        scheme = "consecutive" if rng.random() < 0.3 else "reference"
        closed = scheme == "consecutive" and rng.random() < 0.5
        pool = real if use_real else textured if textured and source < 0.6 else phantoms
        video = pool[int(rng.integers(len(pool)))]
        clip = make_clip(video, rng, max_frames=10, crop=96 if use_real else None,
                         closed=closed)
        joint = rng.random() >= 0.25
        loss, terms = clip_loss(model, clip, scheme, joint, WEIGHTS)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        optimiser.step()
        schedule.step()
        for name, value in terms.items():
            running[name] = 0.98 * running.get(name, value) + 0.02 * value
        if step % 100 == 0 or step == args.steps - 1:
            text = " ".join(f"{k} {v:.3f}" for k, v in sorted(running.items()))
            print(f"step {step} ({time.perf_counter() - started:.0f} s): {text}", flush=True)
    model.eval()
    held_out = evaluation_set(args.seed + 1000, 8, corrupt=False)
    corrupted = evaluation_set(args.seed + 2000, 8, corrupt=True)
    metrics = {}
    for name, cases in (("clean", held_out), ("corrupted", corrupted)):
        for joint in (True, False):
            for key, value in evaluate(model, cases, joint).items():
                metrics[f"{name}_{'joint' if joint else 'pairwise'}_{key}"] = round(value, 4)
    print(metrics)
    card = ModelCard(
        name=MODEL_NAME, version="1.0", task="cardiac cine motion estimation (multi-pair, US 2025/0259316)",
        architecture=DEFAULT_ARCHITECTURE,
        input_contract={"dimensions": 2, "min_frames": 2, "size_multiple": 16, "intensity": "cine percentile 1-99"},
        training_data=(f"{args.pool} textured analytic beating-ring phantoms (64-80 px, 12-24 frames, random "
                       "contraction, twist, texture, noise, intensity transform; half with 1-2 corrupted frames), "
                       f"{len(textured)} real-texture videos (a Sunnybrook frame moved by the same analytic motion "
                       f"about a point near the image centre, exact truth) and {len(real)} real Sunnybrook "
                       "SCD0000101 cine slices (images only, unsupervised; contours never used)."),
        training_command=TRAINING_COMMAND, metrics=metrics, sha256="",
        notes=(f"{args.steps} Adam steps, one clip per step, seed {args.seed}; metrics on 8 + 8 held-out phantoms "
               "(96², 20 frames, 3-6 px, ±8° twist; the second set with 1-2 corrupted frames), myocardial end-point "
               f"error in pixels. Trained in {time.perf_counter() - started:.0f} s on {args.threads} CPU threads."))
    final = save_model(model, card, args.out)
    print(f"saved {args.out / (MODEL_NAME + '.pt')} sha256 {final.sha256[:12]}")
    return final


if __name__ == "__main__":
    main()
