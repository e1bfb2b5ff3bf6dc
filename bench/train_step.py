"""The demo model's transformer training step, part by part and as the training loop runs it.

    .venv/bin/python bench/train_step.py [--device cpu|cuda] [--layout 4|8] [--tokens N] [--steps 20]

Uses `training.train_demo`'s own functions (scene draws and composition, noise levels, `flow_matching_loss`, the
fused AdamW and the EMA update) on a synthetic shot pool: real world labels and captions (the shipped tokenizer,
a random text encoder), random latents of the chosen VAE layout (4: 16x16 latents, 8: 8x8) under the transformer
layout `train_demo.TRANSFORMER_LAYOUTS` gives a new model on them (4: patch 4, 8 heads, ffn 640, the shipped
layout; 8: patch 2, 6 heads, ffn 768). Prints markdown tables
(copied into docs/PERFORMANCE.md):

1. parts of one step, each timed with a device synchronisation around it (what each costs on its own);
2. the loop as `train_demo train` runs it (no synchronisation inside a step, the loss read every 50 steps): on a
   GPU the host prepares step i+1 while the device still runs step i, so this is less than the sum of the parts.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.attention import multishot_attention  # noqa: E402
from training import train_demo  # noqa: E402
from training.tokenizer import build_world_tokenizer  # noqa: E402
from training.world import sample_shot  # noqa: E402

FRAME_SIDE = 64  # the world's frames; a VAE of spatial compression c gives latents FRAME_SIDE // c wide


def synthetic_data(pool: int, side: int, device: torch.device) -> train_demo.SceneComposer:
    """A shot pool of `pool` real labels with random latents `[16, 5, side, side]`, captions encoded as in training."""
    labels = [asdict(sample_shot(np.random.default_rng([0, i]))) for i in range(pool)]
    gen = torch.Generator().manual_seed(0)
    latents = [torch.randn(16, 5, side, side, generator=gen).half() for _ in labels]
    stats = {"latents_mean": [0.0] * 16, "latents_std": [1.0] * 16}
    text: dict[str, torch.Tensor] = {}
    data = train_demo.SceneComposer({"latents": latents, "labels": labels}, stats, text)
    tokenizer, encoder = build_world_tokenizer(), train_demo.build_text_encoder(0)
    for t in data.texts():
        text[t] = train_demo.encode_text(tokenizer, encoder, t).to(device)
    return data.to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layout", type=int, choices=[4, 8], default=4, help="VAE spatial compression")
    parser.add_argument("--tokens", type=int, default=None, help="video tokens a step (default: 32000 cuda, 1280 cpu)")
    parser.add_argument("--steps", type=int, default=20, help="steps timed per row (after 3 warm-up steps)")
    parser.add_argument("--pool", type=int, default=2000, help="shots in the synthetic pool")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tokens = args.tokens or (32000 if device.type == "cuda" else train_demo.TOKENS_PER_BATCH)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    side = FRAME_SIDE // args.layout
    config = train_demo.new_transformer_config(side)
    data = synthetic_data(args.pool, side, device)
    layouts = train_demo.scene_layouts(data, config["patch_size"][1])
    transformer = train_demo.build_transformer(0, config).to(device).train()
    ema = copy.deepcopy(transformer).requires_grad_(False)
    params, ema_params = list(transformer.parameters()), list(ema.parameters())
    optimizer = train_demo.build_optimizer(params, 1e-4)
    gen = torch.Generator(device).manual_seed(1)
    n_params = sum(p.numel() for p in params)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"{where}; layout {args.layout}x, transformer {n_params / 1e6:.2f}M; {tokens} video tokens a step\n")

    with multishot_attention(transformer, layouts.captioned[2], "mmrope", "full") as state:

        def step(k: int, drop: bool = False) -> torch.Tensor:
            batch = max(1, tokens // (layouts.tokens_per_shot * k))
            loss = train_demo.flow_matching_loss(transformer, state, data, layouts, k, batch, drop, gen)
            train_demo.optimiser_step(loss, optimizer, params, ema_params, 100, 0.999)
            return loss

        def clip_and_step() -> None:
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()

        parts: dict[str, list[float]] = {}

        def timed(name: str, fn, *fn_args, **fn_kwargs):
            sync()
            t = time.perf_counter()
            out = fn(*fn_args, **fn_kwargs)
            sync()
            parts.setdefault(name, []).append(time.perf_counter() - t)
            return out

        for k in (2, 3, 4):
            batch = max(1, tokens // (layouts.tokens_per_shot * k))
            shape = (batch, 16, k * layouts.latent_frames, side, side)
            for _ in range(3):
                step(k)
            for _ in range(args.steps):
                timed(f"draw and compose the scenes/{k}", data.batch, k, batch, gen)
                timed(f"noise levels/{k}", train_demo.sample_sigmas, gen, batch, k)
                timed(f"noise/{k}", torch.randn, shape, generator=gen, device=device)
                args_ = (transformer, state, data, layouts, k, batch, False, gen)
                loss = timed(f"loss (the three above + forward)/{k}", train_demo.flow_matching_loss, *args_)
                optimizer.zero_grad(set_to_none=True)
                timed(f"backward/{k}", loss.backward)
                timed(f"clip + fused AdamW/{k}", clip_and_step)
                timed(f"EMA (one foreach lerp)/{k}", train_demo.ema_update, ema_params, params, 100, 0.999)
        print("| part (synchronised) | K=2 ms | K=3 ms | K=4 ms |")
        print("|---|---|---|---|")
        for name in dict.fromkeys(key.rsplit("/", 1)[0] for key in parts):
            cells = [1000 * float(np.mean(parts[f"{name}/{k}"])) for k in (2, 3, 4)]
            print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in cells) + " |")

        print("\n| loop as trained (K drawn 50/35/15%, 10% caption dropout) | steps | s/step | video tokens/s |")
        print("|---|---|---|---|")
        rng = torch.Generator().manual_seed(0)
        probs = torch.tensor(list(train_demo.SHOTS_PER_SCENE.values()))
        for _ in range(3):
            step(2)
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t, done = time.perf_counter(), 0
        loss_sum = torch.zeros((), device=device)
        for _ in range(args.steps):
            k = list(train_demo.SHOTS_PER_SCENE)[int(torch.multinomial(probs, 1, generator=rng))]
            loss_sum += step(k, torch.rand(1, generator=rng).item() < 0.1).detach()
            done += max(1, tokens // (layouts.tokens_per_shot * k)) * layouts.tokens_per_shot * k
        loss_sum.item()
        elapsed = time.perf_counter() - t
        print(f"| {tokens} tokens a step | {args.steps} | {elapsed / args.steps:.3f} | {done / elapsed:,.0f} |")
        if device.type == "cuda":
            print(f"\npeak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
