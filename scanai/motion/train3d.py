"""Train the 3-D multi-pair motion network (seeded, reproducible on the CPU):

    python -m scanai.motion.train3d --out scanai/models --seed 0

Training data: beating-ventricle phantoms (:func:`scanai.motion.phantom3d.beating_ventricle_phantom`, exact
truth) with random grid, size, elongation, wall thickness, contraction, twist, long-axis shortening, noise,
texture, frame count and reference frame; and real-texture volumes (:func:`real_texture_volumes`: a volume of
the shared Sunnybrook short-axis stack, images only, moved by the same analytic motion about the LV found in it).
Per clip a random intensity transform, flips and an in-plane transpose, and in 40 % of the phantom clips every
2nd-4th slice only (a stack of thick slices, its through-plane truth in those slices). No real 3-D+t cine with
truth exists in the shared data; the Sunnybrook stack's contours (never used in training) are the real test
(``make bench``).

Loss per clip (as the 2-D network's, digest §4.2): end-point error against the exact field (whole grid plus
myocardium), local NCC between the reference and each warped frame and smoothness of the fields (the phantom
gives the myocardium at the reference only, so there is no Dice term). A quarter of the steps run the pairs
independently (``joint=False``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scanai.core.catalog import ModelCard, save_and_report
from scanai.core.errors import InputError
from scanai.core.paths import shared_data_dir
from scanai.motion.network import (
    build_motion_network,
    local_ncc_loss,
    normalise_video,
    smoothness_loss,
)
from scanai.motion.network3d import ARCHITECTURE_3D, MODEL_NAME_3D, padded_volumes, predict_volume_fields
from scanai.motion.pairs import make_pairs
from scanai.motion.phantom3d import beating_ventricle_phantom
from scanai.motion.train import _intensity_transform, run_steps, training_parser

TRAINING_COMMAND = "python -m scanai.motion.train3d --out scanai/models --seed 0"
WEIGHTS = {"endpoint": 1.0, "similarity": 1.0, "smoothness": 0.5}
#: Share of the clips kept as a stack of thick slices (every 2nd, 3rd or 4th slice).
THICK_SHARE = 0.4
#: Fewest slices a thinned clip keeps (the real stacks' 12 slices are not thinned).
MIN_SLICES = 8
#: Share of the steps on real-texture volumes (:func:`real_texture_volumes`) when the shared data is present.
REAL_SHARE = 0.5


@dataclass(frozen=True)
class Volumes:
    """One 3-D+t training cine. frames (T, K, J, I) float32 raw; truth (T, K, J, I, 3) pull-back voxels (dk, dj, di)
    relative to ``reference``; myocardium (K, J, I) bool at the reference."""

    frames: np.ndarray
    truth: np.ndarray
    myocardium: np.ndarray
    reference: int


def random_ventricle(rng: np.random.Generator, default_like: bool = False) -> Volumes:
    """A beating-ventricle phantom with random parameters (``default_like``: the benchmark's grid and frame count,
    64 x 64 x 48 voxels, 10 frames, reference 0, with random motion, size, noise and texture)."""
    while True:
        radius = rng.uniform(6.0, 12.0)
        in_plane = 64 if default_like else int(rng.choice([48, 56, 64]))
        try:
            phantom = beating_ventricle_phantom(
                n_frames=10 if default_like else int(rng.integers(8, 13)),
                shape=(48 if default_like else int(rng.choice([32, 40, 48])), in_plane, in_plane),
                endo_radius_px=radius, wall_px=rng.uniform(3.0, 6.0), elongation=rng.uniform(1.3, 1.9),
                amplitude_px=rng.uniform(0.15, 0.45) * radius, twist_deg=rng.uniform(-15.0, 15.0),
                shortening=rng.uniform(0.04, 0.18), noise=rng.uniform(0.003, 0.03),
                reference_index=0 if default_like else int(rng.integers(0, 3)), seed=int(rng.integers(1, 1 << 30)))
        except InputError:  # the ventricle does not fit this grid: draw again
            continue
        spacing = phantom.sequence.geometry.spacing_mm[0]
        truth = (phantom.displacement_mm[..., ::-1] / spacing).astype(np.float32)
        return Volumes(phantom.sequence.frames, truth, phantom.myocardium, phantom.reference_index)


def real_stacks(data_dir: Path | None) -> list[tuple[np.ndarray, tuple[float, float, float], list[np.ndarray]]]:
    """Every cine folder under ``data_dir/cardiac/sunnybrook/dicoms`` as one 3-D+t stack, images only: [(frames
    (T, K, H, W) float32, spacing (k, j, i) mm, the heart found in each slice (K entries of (T, 3) row, column,
    radius in pixels, :func:`scanai.motion.train.find_heart`))]; [] without the data folder."""
    from scanai.io.cine import read_cine_stack
    from scanai.motion.train import find_heart

    if data_dir is None:
        return []
    stacks = []
    for folder in sorted((data_dir / "cardiac" / "sunnybrook" / "dicoms").glob("*")):
        stack = read_cine_stack(folder)
        frames = stack.frames.astype(np.float32)
        hearts = find_heart([frames[:, k] for k in range(frames.shape[1])])
        stacks.append((frames, tuple(float(v) for v in stack.geometry.spacing_mm[::-1]), hearts))
    return stacks


def real_texture_volumes(frames: np.ndarray, spacing_mm: tuple[float, float, float], hearts: list[np.ndarray],
                         rng: np.random.Generator, size: int = 64) -> Volumes:
    """One volume of a real short-axis stack moved by the phantom's analytic ventricle motion
    (:func:`scanai.motion.phantom3d.to_material`) about the LV found in it: real anatomy and noise, exact truth.

    frames (T, K, H, W) with voxels of ``spacing_mm`` (k, j, i); hearts: per slice (T, 3) row, column, radius
    (pixels). The volume is taken at full or half in-plane resolution (as the network sees a 256² stack), cropped
    to ``size``² about the LV (± 8 px) and flipped along the long axis at random; the ventricle's endocardium is the
    found pool's radius (x 0.8-1.2), its wall 30-60 % of that, its centre at 30-70 % of the stack's height, and it
    contracts, twists and shortens as the phantoms do. The stack's slices are sampled linearly.
    """
    from scipy import ndimage

    from scanai.motion.phantom import contraction_profile
    from scanai.motion.phantom3d import Ventricle, _tissues, to_frame, to_material
    from scanai.motion.train import _reduced

    t = int(rng.integers(len(frames)))
    factor = int(rng.choice([1, 2]))
    volume = np.stack([_reduced(plane.astype(np.float64), factor) for plane in frames[t]])
    if rng.random() < 0.5:
        volume = volume[::-1]
    row, column, radius = np.median(np.stack([heart[t] for heart in hearts]), axis=0) / factor
    height, width = volume.shape[1:]
    size = min(size, height, width)
    top = int(np.clip(round(row) - size // 2 + rng.integers(-8, 9), 0, height - size))
    left = int(np.clip(round(column) - size // 2 + rng.integers(-8, 9), 0, width - size))
    volume = volume[:, top:top + size, left:left + size]
    spacing = np.array([spacing_mm[0], spacing_mm[1] * factor, spacing_mm[2] * factor])  # (k, j, i)
    rho_endo = float(radius * spacing[2] * rng.uniform(0.8, 1.2))
    rho_epi = rho_endo * rng.uniform(1.3, 1.6)
    elongation = rng.uniform(1.3, 1.9)
    centre = np.array([(column - left) * spacing[2], (row - top) * spacing[1],
                       rng.uniform(0.3, 0.7) * (len(volume) - 1) * spacing[0]])
    heart = Ventricle(centre_mm=centre, rho_endo_mm=rho_endo, rho_epi_mm=rho_epi, elongation=elongation,
                      base_mm=0.25 * rho_epi * elongation, amplitude_mm=rng.uniform(0.15, 0.45) * rho_endo,
                      twist_rad=np.deg2rad(rng.uniform(-15.0, 15.0)), shortening=rng.uniform(0.04, 0.18),
                      taper_mm=6.0 * spacing[2])
    grid = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in volume.shape), indexing="ij"), axis=-1)
    grid_mm = (grid * spacing)[..., ::-1]  # axis-frame (x, y, z) = (i, j, k) mm
    states = contraction_profile(int(rng.integers(8, 13)))
    level = float(np.percentile(volume, 99))
    moved = np.empty((len(states), *volume.shape), dtype=np.float32)
    truth = np.empty((len(states), *volume.shape, 3), dtype=np.float32)
    for index, s in enumerate(states):
        material = to_material(grid_mm, heart, s)[..., ::-1] / spacing  # (k, j, i) voxels
        moved[index] = ndimage.map_coordinates(volume, np.moveaxis(material, -1, 0), order=1, mode="nearest")
        moved[index] += rng.normal(0.0, rng.uniform(0.0, 0.02) * level, size=volume.shape)
        truth[index] = (to_frame(grid_mm, heart, s) - grid_mm)[..., ::-1] / spacing
    myocardium = _tissues(grid_mm, heart, 1e-6 * spacing[2])[1] > 0.5
    return Volumes(moved, truth, myocardium, 0)


def make_clip(volumes: Volumes, rng: np.random.Generator, max_frames: int = 8):
    """(video (N, K, J, I) in [0, 1], truth (N, K, J, I, 3) voxels, myocardium (K, J, I) float32): the reference
    first, then up to ``max_frames - 1`` other frames in cyclic order, augmented (see the module docstring)."""
    count = len(volumes.frames)
    others = [(volumes.reference + k) % count for k in range(1, count)]
    chosen = sorted(rng.choice(len(others), size=min(len(others), max_frames - 1), replace=False))
    order = [volumes.reference] + [others[k] for k in chosen]
    frames, truth, mask = volumes.frames[order], volumes.truth[order].copy(), volumes.myocardium.astype(np.float32)
    steps = [step for step in (2, 3, 4) if frames.shape[1] // step >= MIN_SLICES]
    if steps and rng.random() < THICK_SHARE:
        step = int(rng.choice(steps))
        start = int(rng.integers(step))
        frames, truth, mask = frames[:, start::step], truth[:, start::step], mask[start::step]
        truth[..., 0] /= step
    for axis in (1, 2):  # flips in-plane (j, i)
        if rng.random() < 0.5:
            frames, truth, mask = np.flip(frames, axis + 1), np.flip(truth, axis + 1), np.flip(mask, axis)
            truth = truth * np.array([1, -1, 1] if axis == 1 else [1, 1, -1], dtype=np.float32)
    if rng.random() < 0.5:
        frames, truth, mask = np.flip(frames, 1), np.flip(truth, 1), np.flip(mask, 0)  # along the long axis
        truth = truth * np.array([-1, 1, 1], dtype=np.float32)
    if rng.random() < 0.5:
        frames, truth, mask = frames.swapaxes(2, 3), truth.swapaxes(2, 3)[..., [0, 2, 1]], mask.swapaxes(1, 2)
    video = normalise_video(_intensity_transform(frames, rng))
    return np.ascontiguousarray(video), np.ascontiguousarray(truth), np.ascontiguousarray(mask)


def clip_loss(model, video: np.ndarray, truth: np.ndarray, mask: np.ndarray, joint: bool):
    """Training loss of one clip and its terms (floats) for logging; the grid is edge-padded to multiples of 16
    for the network and the loss taken on the clip's own voxels."""
    import torch

    from scanai.motion.layers import warp

    k, j, i = video.shape[1:]
    tensor = torch.from_numpy(video)[:, None]
    pairs = make_pairs(len(video), 0, "reference")
    fields = model(padded_volumes(tensor)[None], pairs, joint=joint)[0][..., :k, :j, :i]
    target = torch.from_numpy(truth[1:]).permute(0, 4, 1, 2, 3)
    wall = torch.from_numpy(mask)[None, None]
    error = ((fields - target) ** 2).sum(dim=1).add(1e-6).sqrt()  # [P, K, J, I] voxels
    moving = tensor[1:]
    terms = {"endpoint": error.mean() + (error * wall[0]).sum() / (wall.sum() * len(error) + 1.0),
             "similarity": local_ncc_loss(tensor[:1].expand_as(moving), warp(moving, fields), 5),
             "smoothness": smoothness_loss(fields)}
    total = sum(WEIGHTS[name] * value for name, value in terms.items())
    return total, {name: float(value.detach()) for name, value in terms.items()}


def evaluate(model, cases: list[Volumes], joint: bool) -> dict[str, float]:
    """Mean myocardial end-point error (voxels) at end-systole (the frame of largest true motion) and over all
    frames, the network alone."""
    es_errors, all_errors = [], []
    for case in cases:
        pairs = make_pairs(len(case.frames), case.reference, "reference")
        fields = predict_volume_fields(model, normalise_video(case.frames), pairs, joint)
        others = [b for _, b in pairs]
        error = np.linalg.norm(fields - case.truth[others], axis=-1)[:, case.myocardium]  # (P, voxels)
        motion = np.linalg.norm(case.truth[others], axis=-1)[:, case.myocardium].mean(axis=1)
        es_errors.append(error[int(np.argmax(motion))].mean())
        all_errors.append(error.mean())
    return {"es_epe_voxels": float(np.mean(es_errors)), "mean_epe_voxels": float(np.mean(all_errors))}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return training_parser("Train the 3-D multi-pair cardiac motion network.", 2000, 40,
                           "phantoms, and real-texture volumes, generated for training").parse_args(argv)


def main(argv: list[str] | None = None) -> ModelCard:
    from scanai.core.device import set_determinism

    args = parse_args(argv)
    set_determinism(args.seed, args.threads)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    phantoms = [random_ventricle(rng) for _ in range(args.pool)]
    stacks = real_stacks(shared_data_dir())
    textured = [real_texture_volumes(*stacks[int(rng.integers(len(stacks)))], rng)
                for _ in range(args.pool if stacks else 0)]
    print(f"{len(phantoms)} phantoms, {len(textured)} real-texture volumes ({time.perf_counter() - started:.0f} s)",
          flush=True)
    model = build_motion_network(ARCHITECTURE_3D)

    def step_loss():
        pool = textured if textured and rng.random() < REAL_SHARE else phantoms
        video, truth, mask = make_clip(pool[int(rng.integers(len(pool)))], rng)
        return clip_loss(model, video, truth, mask, joint=rng.random() >= 0.25)

    run_steps(model, step_loss, args.steps, 1e-3, 50, started)
    model.eval()
    held_out_rng = np.random.default_rng(args.seed + 1000)
    held_out = [random_ventricle(held_out_rng, default_like=True) for _ in range(4)]
    metrics = {f"{'joint' if joint else 'pairwise'}_{key}": round(value, 4)
               for joint in (True, False) for key, value in evaluate(model, held_out, joint).items()}
    print(metrics)
    card = ModelCard(
        name=MODEL_NAME_3D, version="1.0", task="3-D+t cardiac motion estimation (multi-pair, US 2025/0259316)",
        architecture=ARCHITECTURE_3D,
        input_contract={"dimensions": 3, "min_frames": 2, "size_multiple": 16, "intensity": "cine percentile 1-99"},
        training_data=(f"{args.pool} beating-ventricle phantoms (scanai.motion.phantom3d; 32-48 x 48-64 x 48-64 "
                       "voxels, 8-12 frames, random size, elongation, wall, contraction 0.15-0.45 of the radius, "
                       "twist ±15°, shortening 4-18 %, noise 0.003-0.03, texture, reference frame 0-2) and "
                       f"{len(textured)} real-texture volumes ({REAL_SHARE:.0%} of the steps: a volume of the "
                       f"{len(stacks)} Sunnybrook SCD0000101 short-axis stack (12 slices of 10 mm, images only; the "
                       "contours never used), full or half in-plane resolution, cropped to 64² about the LV found "
                       "in it, moved by the same analytic ventricle motion sized from the LV); per clip an "
                       f"intensity transform, flips, in-plane transpose, {THICK_SHARE:.0%} of the phantom clips as "
                       "thick-slice stacks (every 2nd-4th slice); exact truth. No real 3-D+t data with truth."),
        training_command=TRAINING_COMMAND + f" --threads {args.threads}",
        metrics=metrics, sha256="",
        notes=(f"{args.steps} Adam steps, one clip (up to 8 frames) per step, seed {args.seed}; metrics: the network "
               "alone on 4 held-out phantoms on the benchmark's grid (64 x 64 x 48 voxels, 10 frames, other seeds), "
               "myocardial end-point error in voxels at end-systole and over all frames. Trained in "
               f"{time.perf_counter() - started:.0f} s on {args.threads} CPU threads."))
    return save_and_report(model, card, args.out, time.perf_counter() - started)


if __name__ == "__main__":
    main()
