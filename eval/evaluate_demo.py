"""Evaluate the bundled demo model on held-out storyboards of the procedural world.

    python -m eval.evaluate_demo --model assets/demo --scenes 40 --compare-scenes 16 --steps 20 --json out.json

Every storyboard (scene seeds from 10**6 up; training never draws those scenes) is rendered through
`MultiShotPipeline`, and the frames are read back by `training.detector`. Reported per configuration:
- per-shot caption adherence per attribute: location, colour, shape, shot size, motion (action);
- coherent: share of shots where the detector finds one coherent figure;
- consistency: share of (scene, character) pairs with two or more shots where that character comes out as one
  coherent figure of the same colour AND the same shape in every one of its shots; `consistent+correct` also asks
  that colour and shape are the captioned character's.
Also the shape by shot size. Reference rows: the detector on the real frames (must be 100%) and on real frames
through the VAE (the ceiling the latent space allows; `--vae DIR`: only these rows, for an autoencoder alone, e.g.
one a `train_gpu vae` session brought back). Then cross-attention `mmrope` / `window` / `full` and self-attention
`full` / `sparse` / `isolated` on the same storyboards and seeds.

`--unnamed-scenes N`: what attention across shots carries. In the world's captions every shot names its character,
so a shot never needs the others to know who it shows. Here the 3-shot scenes among the held-out ones are rendered
with the character's repeat appearance captioned without the name (`medium shot, figure moves left, ...`,
`world.unnamed_caption`; the global caption still names the cast of two), under `full` / `sparse` / `isolated`
self-attention, beside the same scenes fully named: how often the unnamed shot shows the character the other shots
named (one coherent figure of its colour and shape). Isolated shots cannot see each other, so their rate is what
the captions alone give.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from pipelines.registry import SELF_ATTENTION_MODES, get_preset
from training.detector import ShotReading, consistent, read_shot
from training.train_vae import frames_to_pixels
from training.world import (
    CHARACTER_BY_NAME,
    DEFAULT_FIGURE_SCALE,
    FIGURE_SCALES,
    Scene,
    recorded_figure_scale,
    repeat_appearances,
    sample_scene,
    unnamed_caption,
)

DEMO = get_preset("demo")  # the studio runs the demo model at its steps and guidance; so do the evaluations
DEMO_STEPS, DEMO_GUIDANCE = DEMO.num_inference_steps, DEMO.guidance_scale
ATTRIBUTES = ("location", "colour", "shape", "shot_size", "action")
SIZES = ("wide", "medium", "close-up")
HELD_OUT_SEED = 10**6


def load_demo_pipeline(model: Path | None = None):
    """`MultiShotPipeline` on the exported demo folder (default: the shipped one), through the studio's own loader
    (demo preset defaults), progress bars off."""
    from pipelines.loading import load_pipeline

    pipe = load_pipeline("demo", device="cpu", dtype="fp32", model_dir=model)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def held_out_scenes(count: int, num_frames: int = 17, figure_scale: str = DEFAULT_FIGURE_SCALE) -> list[Scene]:
    """Held-out storyboards with 2 or 3 shots (rendered frames are the ground truth)."""
    return [
        sample_scene(HELD_OUT_SEED + i, num_shots=2 + i % 2, num_frames=num_frames, figure_scale=figure_scale)
        for i in range(count)
    ]


def render_storyboard(
    pipe,
    captions: list[str],
    global_caption: str,
    seed: int,
    steps: int = DEMO_STEPS,
    guidance: float = DEMO_GUIDANCE,
    cross: str = "mmrope",
    self_attn: str = "full",
    num_frames: int = 17,
    adapter_shots: dict[str, list[int]] | None = None,
) -> list[np.ndarray]:
    """One scene of the demo world through `MultiShotPipeline` at 64x64 (captions unpadded, as trained): per shot,
    float frames `[F, 64, 64, 3]` in [0, 1], what `training.detector.read_shot` reads."""
    from pipelines import ShotSpec

    out = pipe(
        shots=[ShotSpec(caption=c, num_frames=num_frames) for c in captions],
        global_caption=global_caption,
        height=64,
        width=64,
        num_inference_steps=steps,
        guidance_scale=guidance,
        cross_attention=cross,
        self_attention=self_attn,
        generator=torch.Generator().manual_seed(seed),
        max_sequence_length=None,
        output_type="np",
        adapter_shots=adapter_shots,
    )
    return out.shots


def render(pipe, scene: Scene, steps: int, guidance: float, cross: str, self_attn: str, num_frames: int = 17):
    return render_storyboard(
        pipe, scene.captions, scene.global_caption, scene.seed, steps, guidance, cross, self_attn, num_frames
    )


@torch.no_grad()
def vae_roundtrip(vae, frames: np.ndarray) -> np.ndarray:
    """Real uint8 frames `[F, H, W, 3]` through the autoencoder (posterior mean), as floats in [0, 1]."""
    x = frames_to_pixels(torch.from_numpy(frames)[None])
    z = vae.encode(x).latent_dist.mode()
    y = vae.decode(z).sample[0].permute(1, 2, 3, 0)
    return y.add(1).div(2).clamp(0, 1).numpy()


def score(scenes: list[Scene], readings: list[list[ShotReading]]) -> dict[str, float]:
    """Adherence per attribute, coherent figures, consistency; and shape by shot size (`shape <size>`: where the
    autoencoder loses outlines, a wide shot's 14 px figure first)."""
    hits, shots = defaultdict(int), 0
    size_hits, size_shots = defaultdict(int), defaultdict(int)
    coherent = 0
    pairs = consistent_pairs = correct_pairs = 0
    for scene, scene_readings in zip(scenes, readings, strict=True):
        for labels, reading in zip(scene.shots, scene_readings, strict=True):
            shots += 1
            coherent += reading.coherent
            for attr, value in reading.attributes().items():
                hits[attr] += value == getattr(labels, attr)
            size_shots[labels.shot_size] += 1
            size_hits[labels.shot_size] += reading.shape == labels.shape
        by_character = defaultdict(list)
        for labels, reading in zip(scene.shots, scene_readings, strict=True):
            by_character[labels.character].append(reading)
        for name, rs in by_character.items():
            if len(rs) < 2:
                continue
            pairs += 1
            if consistent(rs):
                consistent_pairs += 1
                char = CHARACTER_BY_NAME[name]
                correct_pairs += (rs[0].colour, rs[0].shape) == (char.colour, char.shape)
    result = {attr: hits[attr] / max(1, shots) for attr in ATTRIBUTES}
    result["coherent"] = coherent / max(1, shots)
    result["consistency"] = consistent_pairs / max(1, pairs)
    result["consistent+correct"] = correct_pairs / max(1, pairs)
    for size in SIZES:
        result[f"shape {size}"] = size_hits[size] / max(1, size_shots[size])
    result["shots"] = shots
    result["pairs"] = pairs
    return result


def unnamed_captions(scene: Scene) -> tuple[list[str], list[bool]]:
    """The scene's shot captions with every repeat appearance of a character unnamed, and which shots those are."""
    unnamed = repeat_appearances([shot.character for shot in scene.shots])
    captions = [unnamed_caption(s) if u else s.caption for s, u in zip(scene.shots, unnamed, strict=True)]
    return captions, unnamed


UNNAMED_COLUMNS = (
    "first appearances right",
    "repeat: character",
    "repeat: colour",
    "repeat: shape",
    "repeat: coherent",
)


def score_unnamed(scenes: list[Scene], readings: list[list[ShotReading]]) -> dict[str, float]:
    """`score` plus, split into a character's first appearance and its repeat appearance (the shot
    `unnamed_captions` leaves unnamed): the share of first appearances that show their character (one coherent
    figure of its colour and shape), and of repeat appearances that show it, and their colour, shape and coherence."""
    result = score(scenes, readings)
    hits, counts = defaultdict(int), defaultdict(int)
    for scene, scene_readings in zip(scenes, readings, strict=True):
        _, unnamed = unnamed_captions(scene)
        for labels, reading, left in zip(scene.shots, scene_readings, unnamed, strict=True):
            right = reading.coherent and (reading.colour, reading.shape) == (labels.colour, labels.shape)
            if not left:
                hits["first appearances right"] += right
                counts["first appearances right"] += 1
                continue
            for column, hit in (
                ("repeat: character", right),
                ("repeat: colour", reading.colour == labels.colour),
                ("repeat: shape", reading.shape == labels.shape),
                ("repeat: coherent", reading.coherent),
            ):
                hits[column] += hit
                counts[column] += 1
    result |= {column: hits[column] / max(1, counts[column]) for column in UNNAMED_COLUMNS}
    result["repeat shots"] = counts["repeat: character"]
    return result


def unnamed_table(rows: dict[str, dict[str, float]]) -> str:
    cols = [*UNNAMED_COLUMNS, "consistency", "consistent+correct"]
    lines = ["| configuration | " + " | ".join(cols) + " | repeat shots |", "|---" * (len(cols) + 2) + "|"]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * r[c]:.0f}%" for c in cols) + f" | {r['repeat shots']} |")
    return "\n".join(lines)


def table(rows: dict[str, dict[str, float]]) -> str:
    cols = [*ATTRIBUTES, "coherent", "consistency", "consistent+correct", *(f"shape {size}" for size in SIZES)]
    lines = ["| configuration | " + " | ".join(cols) + " | shots |", "|---" * (len(cols) + 2) + "|"]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * r[c]:.0f}%" for c in cols) + f" | {r['shots']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("assets/demo"))
    parser.add_argument("--scenes", type=int, default=40, help="held-out scenes for the default configuration")
    parser.add_argument("--compare-scenes", type=int, default=16, help="scenes for each attention-mode comparison")
    parser.add_argument("--steps", type=int, default=DEMO_STEPS, help="default: the demo preset's")
    parser.add_argument("--guidance", type=float, default=DEMO_GUIDANCE, help="default: the demo preset's")
    parser.add_argument(
        "--self-attention",
        choices=SELF_ATTENTION_MODES,
        default="full",
        help="self-attention of the --scenes configuration (the comparisons run all three)",
    )
    parser.add_argument(
        "--unnamed-scenes",
        type=int,
        default=0,
        help="3-shot held-out scenes rendered with the repeat appearance unnamed, per self-attention mode",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--vae", type=Path, default=None, help="only the real-frame rows, through this vae/ folder (no rendering)"
    )
    parser.add_argument(
        "--figure-scale",
        choices=sorted(FIGURE_SCALES),
        default=None,
        help="world.FIGURE_SCALES (default: the training.json of --vae or --model, else " + DEFAULT_FIGURE_SCALE + ")",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    scale = args.figure_scale or recorded_figure_scale(args.vae or args.model)
    print(f"figure scale {scale}", flush=True)

    if args.vae is not None:
        from diffusers import AutoencoderKLWan

        vae = AutoencoderKLWan.from_pretrained(args.vae, local_files_only=True, torch_dtype=torch.float32).eval()
    else:
        pipe = load_demo_pipeline(args.model)
        vae = pipe.vae
    scenes = held_out_scenes(max(args.scenes, args.compare_scenes, 2 * args.unnamed_scenes), figure_scale=scale)
    rows: dict[str, dict[str, float]] = {}
    rows["real frames (detector check)"] = score(scenes, [[read_shot(f, scale) for f in s.frames] for s in scenes])
    rows["real frames through the VAE"] = score(
        scenes, [[read_shot(vae_roundtrip(vae, f), scale) for f in s.frames] for s in scenes]
    )
    configs = [("mmrope", args.self_attention, args.scenes)] if args.vae is None and args.scenes else []
    if args.compare_scenes and args.vae is None:
        configs += [(c, "full", args.compare_scenes) for c in ("window", "full")]
        configs += [("mmrope", s, args.compare_scenes) for s in SELF_ATTENTION_MODES if s != "full"]
    timings = {}
    for cross, self_attn, count in configs:
        start = time.time()
        subset = scenes[:count]
        readings = [
            [read_shot(f, scale) for f in render(pipe, s, args.steps, args.guidance, cross, self_attn)] for s in subset
        ]
        name = f"cross={cross}, self={self_attn} ({count} scenes)"
        rows[name] = score(subset, readings)
        timings[name] = (time.time() - start) / count
        print(f"{name}: {timings[name]:.1f}s/scene", flush=True)
    print(table(rows))
    unnamed_rows: dict[str, dict[str, float]] = {}
    if args.unnamed_scenes and args.vae is None:
        three_shot = [s for s in scenes if len(s.shots) == 3][: args.unnamed_scenes]  # 2-shot scenes never repeat
        for self_attn in (None, *SELF_ATTENTION_MODES):  # None: the same scenes, every shot named
            start = time.time()
            readings = []
            for s in three_shot:
                captions = s.captions if self_attn is None else unnamed_captions(s)[0]
                shots = render_storyboard(
                    pipe, captions, s.global_caption, s.seed, args.steps, args.guidance, "mmrope", self_attn or "full"
                )
                readings.append([read_shot(f, scale) for f in shots])
            name = f"repeat {'named' if self_attn is None else 'unnamed'}, self={self_attn or 'full'}"
            unnamed_rows[name] = score_unnamed(three_shot, readings)
            timings[name] = (time.time() - start) / len(three_shot)
            print(f"{name}: {timings[name]:.1f}s/scene", flush=True)
        print(f"\n{len(three_shot)} three-shot scenes, a character's repeat appearance named / unnamed:")
        print(unnamed_table(unnamed_rows))
    if args.json:
        info = {
            "steps": args.steps,
            "guidance": args.guidance,
            "figure_scale": scale,
            "rows": rows,
            "unnamed_rows": unnamed_rows,
            "seconds_per_scene": timings,
        }
        args.json.write_text(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
