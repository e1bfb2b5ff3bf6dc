"""Step caches on the bundled demo model: transformer passes, wall time and the demo evaluation's scores per cache.

    nice -n 10 .venv/bin/python bench/step_cache.py --scenes 40 --json step_cache.json
    .venv/bin/python bench/step_cache.py --calibrate-magcache        # MagCache ratios for pipelines.acceleration
    nice -n 10 .venv/bin/python bench/step_cache.py --regenerate 4   # passes when one shot is regenerated

Every configuration renders the same held-out storyboards (`eval.evaluate_demo.held_out_scenes`, the demo
evaluation's seeds) at the demo preset's steps and guidance, with diffusers' cache hooks set through
`pipelines.acceleration.apply_runtime`. Reported per configuration: full passes through the block stack per scene
(`BlockPassCounter`; exact, the uncached count is 2 x steps with guidance), the reduction against no cache, CPU
seconds per scene of this process (one thread: its compute, much steadier than wall time on a shared machine) and
wall seconds (noisy there; the pass count is the number to trust), and `eval.evaluate_demo.score`'s
per-attribute adherence, coherent figures and consistency, with the largest drop of any of them against no cache.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from eval.evaluate_demo import (  # noqa: E402
    ATTRIBUTES,
    DEMO_GUIDANCE,
    DEMO_STEPS,
    held_out_scenes,
    load_demo_pipeline,
    render_storyboard,
    score,
)
from pipelines.acceleration import (  # noqa: E402
    Acceleration,
    BlockPassCounter,
    apply_runtime,
    calibrate_mag_ratios,
    regeneration_share,
)
from training.detector import read_shot  # noqa: E402
from training.world import recorded_figure_scale, sample_scene  # noqa: E402

DEFAULT_CONFIGS = (
    "off",
    "first-block:0.05",
    "first-block:0.1",
    "first-block:0.2",
    "magcache:0.06",
    "magcache:0.12",
    "magcache:0.24",
    "taylorseer:2",
    "taylorseer:3",
    "taylorseer:4",
)
SCORED = (*ATTRIBUTES, "coherent", "consistency", "consistent+correct")
CALIBRATION_SEEDS = range(4)  # training-world scenes (held-out scenes start at 10**6)


def parse_config(text: str) -> Acceleration:
    """`off`, `first-block:THRESHOLD`, `magcache:THRESHOLD` or `taylorseer:INTERVAL`."""
    kind, _, value = text.partition(":")
    if kind == "off":
        return Acceleration()
    if kind == "taylorseer":
        return Acceleration(step_cache=kind, cache_interval=int(value) if value else None)
    return Acceleration(step_cache=kind, cache_threshold=float(value) if value else None)


def calibrate(pipe, steps: int, guidance: float, figure_scale: str) -> list[float]:
    """MagCache ratios averaged over a few training-world scenes (never the held-out ones)."""
    from pipelines import ShotSpec

    runs = []
    for seed in CALIBRATION_SEEDS:
        scene = sample_scene(seed, num_shots=3, num_frames=17, figure_scale=figure_scale)
        runs.append(
            calibrate_mag_ratios(
                pipe,
                shots=[ShotSpec(caption=c, num_frames=17) for c in scene.captions],
                global_caption=scene.global_caption,
                height=64,
                width=64,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=torch.Generator().manual_seed(seed),
                max_sequence_length=None,
                output_type="latent",
            )
        )
    return [round(sum(r[i] for r in runs) / len(runs), 5) for i in range(steps)]


def regeneration_passes(pipe, scenes, configs: list[str], steps: int, guidance: float) -> str:
    """Full block passes to generate each scene and to regenerate its second shot against the others (the
    preset's regeneration mode), per cache: a cache decides once per pass over the whole sequence, so the context
    shots' tokens weigh in the decision for the regenerated one."""
    from pipelines import ShotSpec

    lines = [
        "| cache | scene passes | regenerate-1-shot passes | same, threshold x regenerated share | shots |",
        "|---|---|---|---|---|",
    ]
    for text in configs:
        setting = parse_config(text)
        scene_passes = regen_passes = scaled_passes = shots = 0
        for scene in scenes:
            kwargs = dict(
                shots=[ShotSpec(caption=c, num_frames=17) for c in scene.captions],
                global_caption=scene.global_caption,
                height=64,
                width=64,
                num_inference_steps=steps,
                guidance_scale=guidance,
                max_sequence_length=None,
                output_type="latent",
            )
            apply_runtime(pipe, setting, steps, "demo")
            with BlockPassCounter(pipe.transformer) as counter:
                out = pipe(generator=torch.Generator().manual_seed(scene.seed), **kwargs)
            scene_passes += counter.passes
            share = regeneration_share([5] * len(scene.captions), [1], pipe.config.regenerate_mode)
            for scale, total in ((1.0, "regen"), (share, "scaled")):
                apply_runtime(pipe, setting, steps, "demo", scale)
                with BlockPassCounter(pipe.transformer) as counter:
                    pipe(
                        generator=torch.Generator().manual_seed(scene.seed + 1),
                        regenerate=[1],
                        context_latents=out.latents,
                        **kwargs,
                    )
                if total == "regen":
                    regen_passes += counter.passes
                else:
                    scaled_passes += counter.passes
            shots += len(scene.captions)
        n = len(scenes)
        lines.append(
            f"| {text} | {scene_passes / n:.1f} | {regen_passes / n:.1f} | {scaled_passes / n:.1f} | {shots / n:.1f} |"
        )
    return "\n".join(lines)


def table(rows: dict[str, dict]) -> str:
    cols = [*SCORED]
    head = "| cache | passes/scene | fewer | CPU s/scene | wall s/scene | " + " | ".join(cols) + " | worst drop |"
    lines = [head, "|---" * (len(cols) + 6) + "|"]
    for name, r in rows.items():
        scores = " | ".join(f"{100 * r['scores'][c]:.1f}%" for c in cols)
        lines.append(
            f"| {name} | {r['passes']:.1f} | {r['fewer']:.2f}x | {r['cpu_seconds']:.2f} | {r['seconds']:.1f} | "
            f"{scores} | {r['worst_drop']:.1f} ({r['worst_column']}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("assets/demo"))
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--steps", type=int, default=DEMO_STEPS)
    parser.add_argument("--guidance", type=float, default=DEMO_GUIDANCE)
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help="comma-separated, first is the baseline")
    parser.add_argument("--calibrate-magcache", action="store_true", help="print MagCache ratios for the demo model")
    parser.add_argument("--regenerate", type=int, default=0, help="only: passes to regenerate a shot, N scenes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = load_demo_pipeline(args.model)
    scale = recorded_figure_scale(args.model)
    if args.calibrate_magcache:
        print(json.dumps(calibrate(pipe, args.steps, args.guidance, scale)))
        return

    scenes = held_out_scenes(max(args.scenes, args.regenerate), figure_scale=scale)
    if args.regenerate:
        configs = [c.strip() for c in args.configs.split(",")]
        print(regeneration_passes(pipe, scenes[: args.regenerate], configs, args.steps, args.guidance))
        return
    rows: dict[str, dict] = {}
    baseline = None
    for text in args.configs.split(","):
        setting = parse_config(text.strip())
        apply_runtime(pipe, setting, args.steps, "demo")
        readings, passes, started, cpu_started = [], 0, time.perf_counter(), time.process_time()
        for scene in scenes:
            with BlockPassCounter(pipe.transformer) as counter:
                shots = render_storyboard(
                    pipe, scene.captions, scene.global_caption, scene.seed, args.steps, args.guidance
                )
            passes += counter.passes
            readings.append([read_shot(frames, scale) for frames in shots])
        seconds = (time.perf_counter() - started) / len(scenes)
        cpu_seconds = (time.process_time() - cpu_started) / len(scenes)
        result = score(scenes, readings)
        row = {"setting": setting.record(), "passes": passes / len(scenes), "seconds": seconds, "scores": result}
        row["cpu_seconds"] = cpu_seconds
        baseline = baseline or row
        drops = {c: 100 * (baseline["scores"][c] - result[c]) for c in SCORED}
        row["worst_column"] = max(drops, key=drops.get)
        row["worst_drop"] = drops[row["worst_column"]]
        row["fewer"] = baseline["passes"] / row["passes"]
        rows[text.strip()] = row
        print(f"{text}: {row['passes']:.1f} passes/scene, {cpu_seconds:.2f} CPU s/scene, {seconds:.2f} wall s/scene")
    print(f"\n{len(scenes)} held-out scenes, {args.steps} steps, guidance {args.guidance}, {args.threads} thread(s)\n")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"scenes": len(scenes), "steps": args.steps, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
