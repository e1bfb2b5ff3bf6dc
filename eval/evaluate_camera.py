"""Does the demo model draw the camera moves its captions ask for? The background's scroll, read on held-out shots.

    python -m eval.evaluate_camera --scenes 24 [--model assets/demo] [--json out.json]

In the world a pan scrolls the ground posts 1 px a frame (`camera pans left`: posts move right, 16 px over a
17-frame shot; `pans right`: left) while the figure's screen motion is its action only (training/world.py). The
held-out storyboards of `eval/evaluate_demo.py` are used with their camera moves set in turn to static, pans left,
pans right (shot k of scene i: move (i + k) mod 3), so about two shots in three ask for a pan. Each shot is rendered
as the studio renders it (the demo preset's steps and guidance), and its background scroll is read from the post
band (the rows the posts stand in, columns the figure covers left out): per pair of frames the shift of -3..3 px
that best matches their column profiles, summed over the shot. A pan is **followed** when the sum goes the asked way
by at least half the travel (8 px); a static shot is **held** when it moves less than that. The same reading of
the real frames is the check of the measure (it must say 100% and 100%).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from training.world import CAMERA_MOVES, HORIZON, figure_state, global_caption, render_shot

TRAVEL_PX = 16  # a pan's scroll over a 17-frame shot
FOLLOWED_PX = TRAVEL_PX / 2
MAX_SHIFT = 3
EXPECTED_SIGN = {"static": 0, "pans left": 1, "pans right": -1}


def post_band(size: int = 64) -> slice:
    """The rows the world's ground posts stand in (render_background: from 3 px below the horizon, 8 px tall)."""
    top = int(round(HORIZON * size)) + 3
    return slice(top, top + 8)


def background_scroll(frames: np.ndarray, labels) -> float:
    """Pixels the post band moved right over the shot (negative: left), figure columns left out."""
    frames = np.asarray(frames, dtype=np.float64)
    if frames.max() > 1.5:
        frames = frames / 255.0
    count, size = frames.shape[0], frames.shape[2]
    profiles = frames[:, post_band(size)].mean(axis=(1, 3))  # [F, W] mean over the band rows and channels
    columns = np.arange(size)
    total = 0.0
    for f in range(count - 1):
        keep = np.ones(size, dtype=bool)
        for index in (f, f + 1):
            cx, _, height = figure_state(labels, index, count)
            keep &= np.abs(columns + 0.5 - cx) > height / 2 + 2
        best, best_error = 0, np.inf
        for shift in range(-MAX_SHIFT, MAX_SHIFT + 1):
            # frame f+1 at x + shift shows what frame f showed at x
            x = columns[keep]
            x = x[(x + shift >= 0) & (x + shift < size) & keep[np.clip(x + shift, 0, size - 1)]]
            if len(x) < size // 4:
                continue
            error = float(np.mean((profiles[f, x] - profiles[f + 1, x + shift]) ** 2))
            if error < best_error - 1e-12 or (abs(error - best_error) <= 1e-12 and abs(shift) < abs(best)):
                best, best_error = shift, error
        total += best
    return total


def camera_shots(scenes: list) -> list:
    """The held-out scenes with their shots' camera moves set in turn (static, pans left, pans right)."""
    out = []
    for i, scene in enumerate(scenes):
        shots = [replace(shot, camera=CAMERA_MOVES[(i + k) % 3]) for k, shot in enumerate(scene.shots)]
        out.append((scene.seed, global_caption(scene.location, scene.cast), shots))
    return out


def score(readings: list[tuple[str, float]]) -> dict:
    pans = [(camera, scroll) for camera, scroll in readings if camera != "static"]
    static = [scroll for camera, scroll in readings if camera == "static"]
    followed = [EXPECTED_SIGN[camera] * scroll >= FOLLOWED_PX for camera, scroll in pans]
    return {
        "pans_followed": float(np.mean(followed)) if followed else None,
        "static_held": float(np.mean([abs(s) < FOLLOWED_PX for s in static])) if static else None,
        "pan_shots": len(pans),
        "static_shots": len(static),
        "mean_pan_scroll_px": float(np.mean([EXPECTED_SIGN[c] * s for c, s in pans])) if pans else None,
    }


def main(argv: list[str] | None = None) -> None:
    from eval.evaluate_demo import held_out_scenes, load_demo_pipeline, render_storyboard
    from pipelines.loading import DEMO_MODEL_DIR
    from training.world import recorded_figure_scale

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=24)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped assets/demo)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    folder = args.model or DEMO_MODEL_DIR
    scenes = camera_shots(held_out_scenes(args.scenes, figure_scale=recorded_figure_scale(folder)))
    pipe = load_demo_pipeline(args.model)
    real, generated = [], []
    for seed, caption, shots in scenes:
        frames = render_storyboard(pipe, [s.caption for s in shots], caption, seed)
        for shot, made in zip(shots, frames, strict=True):
            real.append((shot.camera, background_scroll(render_shot(shot), shot)))
            generated.append((shot.camera, background_scroll(made, shot)))
    rows = {"real frames (check of the measure)": score(real), "generated (demo model)": score(generated)}
    print("| frames | pans followed | static held | mean scroll the asked way | pan shots | static shots |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(
            f"| {name} | {100 * row['pans_followed']:.0f}% | {100 * row['static_held']:.0f}% | "
            f"{row['mean_pan_scroll_px']:.1f} px | {row['pan_shots']} | {row['static_shots']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
