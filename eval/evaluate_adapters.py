"""Character adapters on the demo model: does a character it never saw appear when its trigger is used?

    python -m eval.evaluate_adapters --model assets/demo --references 6 --shots 24 --json adapters.json

The character is `training.world.NEW_CHARACTERS[0]` (kai: a teal hourglass with vertical bands; colour, shape and
pattern none of the training world's characters has, never drawn by the training world's sampler, and not a word
of the shipped tokenizer). Its trigger is `<kai>`, as the studio would give it (`default_trigger`).

1. References: `--references` (4-8) stills (middle frame) of kai's own shots in different locations, shot sizes
   and positions, rendered by the world (real frames).
2. Training, each arm on a freshly loaded pipeline (weights re-read from `--model`), through the project's adapter
   code exactly as the studio's `train_adapter` job calls it (`adapters.lora.train_lora`,
   `adapters.embedding.train_embedding` with the demo preset's defaults unless `--lora-steps` etc. say otherwise),
   then loading through `adapters.loading.apply_adapters` and caption substitution with its `substitute` (the
   global caption is substituted too: it names the cast).
3. Held-out shots (`--shots`, seeds from 2*10**6): captions in the world's grammar with the trigger in the
   character's place, e.g. `medium shot, <kai> stays still, camera is static`, in every location and shot size,
   alternately one-shot scenes and two-shot scenes with a training character in the other shot (global caption
   `a scene in the forest with <kai> and tom`). Rendered with `MultiShotPipeline` (demo preset: mmrope, 20 steps,
   guidance 2, trimmed captions), the same seed per scene in every arm, and read back by `training.detector`.

Reported per arm: **appears** = share of kai's shots where the detected figure has kai's colour AND shape (the
headline number), colour and shape alone, coherent (one coherent figure found), **leak** = share of the
other character's shots (two-shot scenes) where kai's colour and shape show up instead, and the adapter's training
loss on fixed noise draws before and after training (`TrainingResult.eval_loss_*`). Reference rows: the detector
on kai's real frames (must be 100%), the same frames through the demo VAE (what the latent space can carry at all:
the VAE was trained on the world's colours only), and the baseline (same captions, no adapter).

Trigger words on the demo tokenizer (a word-level vocabulary of the world; unknown words become `<unk>`):
- embedding: `train_embedding` adds `<kai>` and `<kai_1>` as whole tokens (rows of the text encoder's spare
  capacity: the shipped one has 128 rows for 89 words) and trains exactly those rows; `apply_adapters` writes
  them back and substitutes `<kai>` -> `<kai> <kai_1>`. Works as designed on this tokenizer.
- LoRA: the studio substitutes `<kai>` with the LoRA's trigger text, the bracket-less word `kai`
  (`adapters.common.trigger_text`), which this tokenizer does not know. `train_lora` (before encoding captions)
  and `apply_adapters` (before rendering) therefore add it as one whole token (`adapters.lora.add_trigger_words`)
  whose text-encoder row is a function of the word alone (a normal vector seeded by the word's sha256, scaled to
  the vocabulary rows' mean norm), so training and rendering see the same vector whatever id the word gets; the
  LoRA's metadata lists it (`trigger_words_added`). Arm `lora` runs exactly that studio code. There is no arm for a
  trigger read as `<unk>`: the studio never produces it, and making it would mean bypassing the adapter code, not
  measuring it.
- Training captions: both trainers take one caption per reference, naming the character by the trigger (the LoRA
  reads it as its word `kai`, the embedding as its tokens `<kai> <kai_1>`). By default (`--lora-captions shot`,
  `--embedding-captions shot`) each reference is captioned with the shot its still was taken from
  (`training.world.reference_caption`: `close-up shot, <kai> moves left, camera is static`), the grammar the demo
  model was trained on and what the example storyboard's references say, so this is the studio's train_adapter job
  on captioned references. `still`: the same with every action `stays still`. `studio`: the trigger and the
  character's description (`kai`), what the job sends for a reference without a caption, a two-token caption the
  model has never seen.
- Both trainers run the transformer as a stock Wan model on one-frame videos over the caption alone. For one
  still and no global caption that forward is exactly the multi-shot one (`multishot_attention` with a one-shot,
  one-latent-frame mmrope layout gives the same output to the last bit: every temporal rotation is at position 0),
  so the gap between training and inference is only what the trainers cannot express: the global caption (the
  scene's `[global; caption]` text with the location and cast) and the temporal frames of a clip.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from eval.evaluate_demo import DEMO_GUIDANCE, DEMO_STEPS, load_demo_pipeline, render_storyboard, vae_roundtrip
from training.detector import ShotReading, read_shot
from training.world import (
    ACTIONS,
    CHARACTER_BY_NAME,
    CHARACTERS,
    DEFAULT_FIGURE_SCALE,
    LOCATIONS,
    NEW_CHARACTERS,
    REFERENCE_FRAME,
    REFERENCE_SEED,
    SHOT_SIZES,
    ShotLabels,
    global_caption,
    make_shot,
    recorded_figure_scale,
    reference_caption,
    render_shot,
)
from training.world import reference_shots as world_reference_shots

CHARACTER = NEW_CHARACTERS[0]
TRIGGER = f"<{CHARACTER.name}>"
HELD_OUT_SEED = 2 * 10**6  # held-out scenes of this evaluation (training draws seeds < 10**6, evaluate_demo 10**6..)
ARMS = ("baseline", "lora", "embedding")
COMPONENT_NAMES = ("tokenizer", "text_encoder", "vae", "transformer", "scheduler")


@dataclass
class EvalScene:
    """One held-out scene: kai's shot and, in two-shot scenes, a training character's shot."""

    seed: int
    location: str
    shots: list[ShotLabels]
    target: int  # index of kai's shot

    @property
    def cast(self) -> list[str]:
        names = [s.character for s in self.shots]
        if len(names) == 1:  # the world's global caption always names two characters
            names.append(CHARACTERS[self.seed % len(CHARACTERS)].name)
        return names

    def captions(self, trigger: str) -> list[str]:
        return [caption_with_trigger(s, trigger) for s in self.shots]

    def global_caption(self, trigger: str) -> str:
        return global_caption(self.location, [trigger if n == CHARACTER.name else n for n in self.cast])


def caption_with_trigger(labels: ShotLabels, trigger: str) -> str:
    """The world's shot caption with the new character's name replaced by its trigger (others unchanged)."""
    return reference_caption(labels, trigger if labels.character == CHARACTER.name else labels.character)


def reference_shots(count: int, figure_scale: str = DEFAULT_FIGURE_SCALE) -> list[ShotLabels]:
    """`count` (4-8) shots of the new character across locations and shot sizes (`training.world.reference_shots`)."""
    return world_reference_shots(CHARACTER.name, count, REFERENCE_SEED, figure_scale)


def reference_frames(shots: list[ShotLabels]) -> list[np.ndarray]:
    """The middle frame of each reference shot, uint8 [64, 64, 3]."""
    return [render_shot(s)[REFERENCE_FRAME] for s in shots]


def held_out_scenes(count: int, figure_scale: str = DEFAULT_FIGURE_SCALE) -> list[EvalScene]:
    """Odd scenes are two-shot (kai and a training character, kai first or second); even ones kai alone."""
    scenes = []
    for i in range(count):
        rng = np.random.default_rng([HELD_OUT_SEED, i])
        location = LOCATIONS[i % len(LOCATIONS)].name
        kai = make_shot(
            CHARACTER.name,
            location,
            SHOT_SIZES[(i + i // len(LOCATIONS)) % len(SHOT_SIZES)],  # every location in every size over 18
            "stays" if i % 3 == 0 else ACTIONS[int(rng.integers(len(ACTIONS)))],
            "static",
            rng,
            figure_scale,
        )
        shots, target = [kai], 0
        if i % 2 == 1:
            other = make_shot(
                CHARACTERS[(i // 2) % len(CHARACTERS)].name,
                location,
                SHOT_SIZES[int(rng.integers(len(SHOT_SIZES)))],
                ACTIONS[int(rng.integers(len(ACTIONS)))],
                "static",
                rng,
                figure_scale,
            )
            shots, target = ([kai, other], 0) if i % 4 == 1 else ([other, kai], 1)
        scenes.append(EvalScene(seed=HELD_OUT_SEED + i, location=location, shots=shots, target=target))
    return scenes


def render_scene(
    pipe, scene: EvalScene, substitute, steps: int, guidance: float, loras: list[str] | None = None
) -> list[np.ndarray]:
    """One held-out scene; `loras` (loaded LoRA names) act on the new character's shot only, as the studio scopes
    a character's LoRA to the shots that show the character (None: on the whole scene)."""
    captions = [substitute(c) for c in scene.captions(TRIGGER)]
    scope = {name: [scene.target] for name in loras} if loras else None
    global_caption = substitute(scene.global_caption(TRIGGER))
    return render_storyboard(pipe, captions, global_caption, scene.seed, steps, guidance, adapter_shots=scope)


def is_character(reading: ShotReading) -> bool:
    return reading.colour == CHARACTER.colour and reading.shape == CHARACTER.shape


def score(scenes: list[EvalScene], readings: list[list[ShotReading]]) -> dict:
    """Appearance of the new character in its own shots, and its leak into the other character's shots."""
    own = [r[s.target] for s, r in zip(scenes, readings, strict=True)]
    others = [r[k] for s, r in zip(scenes, readings, strict=True) for k in range(len(s.shots)) if k != s.target]
    other_labels = [s.shots[k] for s in scenes for k in range(len(s.shots)) if k != s.target]
    n = max(1, len(own))
    return {
        "appears": sum(is_character(r) for r in own) / n,
        "colour": sum(r.colour == CHARACTER.colour for r in own) / n,
        "shape": sum(r.shape == CHARACTER.shape for r in own) / n,
        "coherent": sum(r.coherent for r in own) / n,
        "leak": sum(is_character(r) for r in others) / max(1, len(others)),
        # The other character's shots as captioned (its colour AND shape): an adapter's weights act on every shot.
        "others_kept": sum(
            (r.colour, r.shape) == (CHARACTER_BY_NAME[lab.character].colour, CHARACTER_BY_NAME[lab.character].shape)
            for r, lab in zip(others, other_labels, strict=True)
        )
        / max(1, len(others)),
        "shots": len(own),
        "other_shots": len(others),
        # What the detector saw in the new character's shots instead (diagnostics, most common first).
        "seen": dict(Counter(f"{r.colour} {r.shape}" for r in own).most_common(4)),
    }


def train_arm(arm: str, pipe, references: list[np.ndarray], ref_shots: list[ShotLabels], args, workdir: Path):
    """Train `arm`'s adapter on `pipe`'s components and apply it; returns (applied adapters, training info)."""
    from adapters.embedding import EmbeddingTrainingConfig, train_embedding
    from adapters.loading import AdapterSpec, apply_adapters
    from adapters.lora import LoraTrainingConfig, train_lora

    components = {name: getattr(pipe, name) for name in COMPONENT_NAMES}
    path = workdir / f"{arm}.safetensors"
    if arm not in ARMS or arm == "baseline":
        raise ValueError(f"unknown arm {arm!r}; choose from {', '.join(a for a in ARMS if a != 'baseline')}")
    # Each reference captioned with the shot its still comes from (`still`: every action "stays still"), the trigger
    # in the character's place (the trainers turn it into the LoRA's word or the embedding's tokens), or None: the
    # trigger and description (`studio`).
    if arm == "lora" and getattr(args, "lora_file", None) is not None:
        return shipped_lora_arm(pipe, args.lora_file)
    mode = args.lora_captions if arm == "lora" else args.embedding_captions
    shots = {"shot": ref_shots, "still": [replace(s, action="stays") for s in ref_shots], "studio": []}[mode]
    captions = [reference_caption(s, TRIGGER) for s in shots] or None
    start = time.time()
    if arm == "lora":
        config = LoraTrainingConfig.for_preset(
            "demo", steps=args.lora_steps, rank=args.lora_rank, learning_rate=args.lora_lr, seed=args.seed
        )
        train = train_lora
    else:
        config = EmbeddingTrainingConfig.for_preset(
            "demo",
            steps=args.embedding_steps,
            learning_rate=args.embedding_lr,
            num_vectors=args.embedding_vectors,
            seed=args.seed,
        )
        train = train_embedding
    result = train(components, references, TRIGGER, path, config, args.description, preset="demo", captions=captions)
    if arm == "lora":
        word = CHARACTER.name  # what adapters.common.trigger_text makes of the trigger
        ids = pipe.tokenizer(word, add_special_tokens=False).input_ids  # after train_lora added the word
        token_note = {
            "trigger_word": word,
            "trigger_ids": ids,
            "unk": pipe.tokenizer.unk_token_id in ids,
            "trigger_words_added": result.metadata.get("trigger_words_added"),
        }
    else:
        token_note = {"tokens": result.metadata.get("caption")}
    train_s = time.time() - start
    applied = apply_adapters(pipe, [AdapterSpec(adapter_id=arm, kind=arm, path=path, trigger=TRIGGER)])
    metrics = result.metrics
    info = {
        "train_s": round(train_s, 1),
        "steps": result.steps_done,
        "loss_first": metrics["loss_first"],
        "loss_last": metrics["loss_last"],
        "eval_loss_before": result.eval_loss_before,
        "eval_loss_after": result.eval_loss_after,
        "substitution": applied.substitutions.get(TRIGGER),
        "training_captions": sorted(set(result.metadata.get("captions", [result.metadata.get("caption")]))),
        **token_note,
    }
    return applied, info


def shipped_lora_arm(pipe, path: Path):
    """Arm `lora` from a trained file (e.g. the example's shipped `assets/examples/refs/kai_lora.safetensors`) instead
    of a training run: loaded as the studio loads it; its training record comes from the file's header."""
    from adapters.loading import AdapterSpec, apply_adapters
    from adapters.lora import read_lora_metadata

    record = read_lora_metadata(path)
    applied = apply_adapters(pipe, [AdapterSpec(adapter_id="lora", kind="lora", path=Path(path), trigger=TRIGGER)])
    info = {
        "train_s": 0.0,
        "steps": record.get("steps_done"),
        "loss_first": None,
        "loss_last": None,
        "eval_loss_before": record.get("eval_loss_before"),
        "eval_loss_after": record.get("eval_loss_after"),
        "substitution": applied.substitutions.get(TRIGGER),
        "training_captions": record.get("captions"),
        "source_file": str(path),
    }
    return applied, info


def evaluate(args) -> dict:
    torch.set_num_threads(args.threads)
    # References and held-out shots are drawn at the figure sizes the model was trained on.
    scale = recorded_figure_scale(args.model)
    ref_shots = reference_shots(args.references, scale)
    references = reference_frames(ref_shots)
    scenes = held_out_scenes(args.shots, scale)
    real = [[read_shot(render_shot(s), scale) for s in scene.shots] for scene in scenes]
    rows: dict[str, dict] = {"real frames (detector check)": score(scenes, real)}
    training: dict[str, dict] = {}
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="shotline-adapters-") as tmp:
        for index, arm in enumerate(args.arms):
            pipe = load_demo_pipeline(args.model)  # fresh weights and tokenizer for every arm
            if index == 0:
                # Held-out kai frames through the VAE: how much of the new colour and shape the latent space keeps.
                rows["real frames through the VAE"] = score(
                    scenes,
                    [[read_shot(vae_roundtrip(pipe.vae, render_shot(s)), scale) for s in sc.shots] for sc in scenes],
                )
            if arm == "baseline":

                def substitute(caption: str) -> str:
                    return caption  # no adapter: the studio leaves "<kai>" as written (-> <unk>)

            loras = None
            if arm != "baseline":
                applied, training[arm] = train_arm(arm, pipe, references, ref_shots, args, Path(tmp))
                substitute = applied.substitute
                loras = applied.lora_names if args.lora_scope == "shots" else None
            start = time.time()
            readings = [
                [read_shot(f, scale) for f in render_scene(pipe, s, substitute, args.steps, args.guidance, loras)]
                for s in scenes
            ]
            timings[arm] = round((time.time() - start) / max(1, len(scenes)), 2)
            rows[arm] = score(scenes, readings)
            rows[arm]["example_caption"] = substitute(scenes[-1].captions(TRIGGER)[scenes[-1].target])
            print(f"{arm}: {rows[arm]['appears']:.0%} appears ({timings[arm]:.1f} s/scene)", flush=True)
    return {
        "figure_scale": scale,
        "character": {"name": CHARACTER.name, "colour": CHARACTER.colour, "shape": CHARACTER.shape},
        "trigger": TRIGGER,
        "references": [s.caption for s in ref_shots],
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"},
        "steps": args.steps,
        "guidance": args.guidance,
        "rows": rows,
        "training": training,
        "seconds_per_scene": timings,
    }


def table(result: dict) -> str:
    cols = ("appears", "colour", "shape", "coherent", "leak", "others_kept")
    lines = [
        "| arm | appears (colour AND shape) | colour | shape | coherent | leak into other shots | other shots as "
        "captioned | shots | train loss (fixed draws) before -> after | train s |",
        "|---" * 10 + "|",
    ]
    for name, row in result["rows"].items():
        info = result["training"].get(name)
        loss = f"{info['eval_loss_before']:.3f} -> {info['eval_loss_after']:.3f}" if info else "-"
        seconds = f"{info['train_s']:.0f}" if info else "-"
        cells = " | ".join(f"{100 * row[c]:.0f}%" for c in cols)
        lines.append(f"| {name} | {cells} | {row['shots']} | {loss} | {seconds} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("assets/demo"))
    parser.add_argument("--references", type=int, default=6, help="reference frames, 4 to 8")
    parser.add_argument("--shots", type=int, default=24, help="held-out scenes (one shot of the new character each)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {', '.join(ARMS)}")
    parser.add_argument("--steps", type=int, default=DEMO_STEPS, help="inference steps (default: the demo preset's)")
    parser.add_argument("--guidance", type=float, default=DEMO_GUIDANCE, help="default: the demo preset's")
    parser.add_argument("--lora-steps", type=int, default=None, help="default: the demo preset's (adapters/common.py)")
    parser.add_argument("--lora-rank", type=int, default=None)
    parser.add_argument("--lora-lr", type=float, default=None)
    parser.add_argument(
        "--lora-scope",
        choices=("shots", "scene"),
        default="shots",
        help="the LoRA acts on the new character's shot only (the studio's way) or on the whole scene",
    )
    parser.add_argument("--lora-captions", choices=("shot", "still", "studio"), default="shot")
    parser.add_argument("--lora-file", type=Path, default=None, help="arm lora from this trained file (no training)")
    parser.add_argument("--embedding-captions", choices=("shot", "still", "studio"), default="shot")
    parser.add_argument("--embedding-steps", type=int, default=None)
    parser.add_argument("--embedding-lr", type=float, default=None)
    parser.add_argument("--embedding-vectors", type=int, default=None, help="tokens the trigger stands for")
    parser.add_argument("--description", default="", help="the character's description (studio: optional)")
    parser.add_argument("--seed", type=int, default=0, help="adapter training seed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        parser.error(f"unknown arm(s) {unknown}; choose from {', '.join(ARMS)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = evaluate(args)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=float))
    return result


if __name__ == "__main__":
    main()
