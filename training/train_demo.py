"""Train the bundled demo model: a small Wan-architecture multi-shot model of the procedural film world.

Three stages, each resumable and reproducible from `--seed`:

    # 1. encode scenes of the world into a latent cache with the trained VAE (training/train_vae.py)
    python -m training.train_demo cache --run /work/runs/demo --vae /work/runs/demo/vae/last.pt
    # 2. train the transformer multi-shot natively (continues from <run>/last.pt, or from --init assets/demo)
    python -m training.train_demo train --run /work/runs/demo --minutes 60
    # 3. write the EMA weights and every other component into the diffusers folder layout
    python -m training.train_demo export --run /work/runs/demo --dest assets/demo

Training runs the stock `WanTransformer3DModel` inside `pipelines.attention.multishot_attention`, exactly as
`MultiShotPipeline` runs it: scenes of 2-4 shots, `mmrope` cross-attention over `[global; caption_1..K]` (captions
unpadded), full self-attention, flow matching (velocity target `noise - x0`, `x_t = (1 - s) x0 + s noise`) with
per-shot noise levels: half the batches share one level (plain generation), the rest draw one per shot, and some
keep shots clean at timestep 0 (what `context` regeneration feeds the model). Caption dropout to the empty
negative prompt (one global token) trains the unconditional branch of classifier-free guidance. EMA weights are
what ships. The UMT5 text encoder is a small random one, kept frozen: its outputs only need to tell words apart.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pipelines.attention import multishot_attention
from pipelines.layout import ShotLayout
from training.tokenizer import build_world_tokenizer
from training.train_vae import (
    VAE_CONFIG,
    WEIGHTS_DTYPE,
    build_vae,
    frames_to_pixels,
    load_vae_weights,
    save_model_folder,
    save_vae_folder,
)
from training.world import (
    DEFAULT_FIGURE_SCALE,
    FIGURE_SCALES,
    ShotLabels,
    global_caption,
    recorded_figure_scale,
    render_shot,
    sample_shot,
    unnamed_caption,
)

SHOT_FRAMES = 17  # frames per shot the demo model is trained on (5 latent frames)
SIZE = 64
TEXT_CONFIG = dict(
    vocab_size=128,  # room for adapter trigger tokens beyond the world's vocabulary
    d_model=64,
    d_kv=16,
    d_ff=128,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=32,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)
TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=6,
    attention_head_dim=32,
    in_channels=VAE_CONFIG["z_dim"],
    out_channels=VAE_CONFIG["z_dim"],
    text_dim=TEXT_CONFIG["d_model"],
    freq_dim=256,
    ffn_dim=768,
    num_layers=8,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=64,
)
FLOW_SHIFT = 3.0  # the demo preset's scheduler shift; training draws noise levels with the same shift
SHOTS_PER_SCENE = {2: 0.5, 3: 0.35, 4: 0.15}  # how often a batch has K shots
TOKENS_PER_BATCH = 1280  # video tokens per step (batch size = this / (80 * K))


# --- components ------------------------------------------------------------------------------------------------------


def build_text_encoder(seed: int = 0, path: Path | None = None):
    """The frozen text encoder: from `path` (a saved `text_encoder/` folder, e.g. assets/demo/text_encoder) when
    given, so that training on another machine (another transformers version, another initialiser) sees exactly
    the shipped encoder; else a fresh random one from `seed`."""
    from transformers import UMT5Config, UMT5EncoderModel

    if path is not None:
        encoder = UMT5EncoderModel.from_pretrained(path, local_files_only=True, torch_dtype=torch.float32)
        return encoder.eval().requires_grad_(False)
    torch.manual_seed(seed + 7)
    return UMT5EncoderModel(UMT5Config(**TEXT_CONFIG)).eval().requires_grad_(False)


def transformer_config(patch: int = 2, heads: int | None = None, ffn_dim: int | None = None) -> dict:
    """TRANSFORMER_CONFIG with another spatial patch (4 on a 4x VAE keeps 80 tokens a shot), head count or
    feed-forward width (8 heads with the default 768 would put the shipped weights just over 40 MB)."""
    config = dict(TRANSFORMER_CONFIG, patch_size=(1, patch, patch))
    if heads is not None:
        config["num_attention_heads"] = heads
    if ffn_dim is not None:
        config["ffn_dim"] = ffn_dim
    return config


# A new transformer's layout (spatial patch, heads, feed-forward width) by its shot pool's latent side, i.e. by the
# autoencoder's spatial compression of the world's 64x64 frames. Each keeps 80 video tokens a shot (5 latent frames
# of 4x4 patches) and the exported model under the 40 MB cap (docs/QUALITY.md, "The model").
TRANSFORMER_LAYOUTS = {
    8: {"patch": 2, "heads": 6, "ffn_dim": 768},  # 8x autoencoder, 8x8 latents
    16: {"patch": 4, "heads": 8, "ffn_dim": 640},  # 4x autoencoder, 16x16 latents: the shipped model's layout
}


def new_transformer_config(
    latent_side: int, patch: int | None = None, heads: int | None = None, ffn_dim: int | None = None
) -> dict:
    """The config of a new transformer for latents `latent_side` wide: TRANSFORMER_LAYOUTS' layout for that side,
    with any of `patch`, `heads`, `ffn_dim` given explicitly taking its place."""
    layout = TRANSFORMER_LAYOUTS.get(latent_side)
    if layout is None and None in (patch, heads, ffn_dim):
        raise ValueError(
            f"no transformer layout is registered for {latent_side}x{latent_side} latents "
            f"(registered: {', '.join(f'{side}x{side}' for side in TRANSFORMER_LAYOUTS)}); "
            "pass --patch, --heads and --ffn-dim"
        )
    layout = layout or {}
    return transformer_config(
        patch if patch is not None else layout["patch"],
        heads if heads is not None else layout["heads"],
        ffn_dim if ffn_dim is not None else layout["ffn_dim"],
    )


def build_transformer(seed: int = 0, config: dict | None = None):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed + 11)
    return WanTransformer3DModel(**(config or TRANSFORMER_CONFIG))


@torch.no_grad()
def encode_text(tokenizer, text_encoder, text: str) -> torch.Tensor:
    """`[n, D]` as `MultiShotPipeline.encode_caption(text, max_sequence_length=None)` computes it."""
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    inputs = tokenizer(
        [prompt_clean(text)],
        padding=False,
        max_length=tokenizer.model_max_length,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    return text_encoder(inputs.input_ids, inputs.attention_mask).last_hidden_state[0].float()


# --- stage 1: latent cache ------------------------------------------------------------------------------------------


@torch.no_grad()
def encode_shot(vae, frames: np.ndarray) -> torch.Tensor:
    """uint8 [F, H, W, 3] -> posterior mean [C, n, h, w] (unnormalised)."""
    return vae.encode(frames_to_pixels(torch.from_numpy(frames)[None])).latent_dist.mode()[0]


def save_shot_pool(
    run: Path,
    cache: dict,
    vae_source: str,
    figure_scale: str = DEFAULT_FIGURE_SCALE,
    stats: tuple[list[float], list[float]] | None = None,
) -> None:
    """Write `<run>/shots.pt` and, the first time, `<run>/latent_stats.json`: the transformer's latent normalisation
    (`stats`, the latent space's own (mean, std), else measured on this pool), fixed once so it never moves under a
    resumed run, and the pool's figure scale. The one writer of that file."""
    cache_path = run / "shots.pt"
    tmp = cache_path.with_suffix(".tmp")
    torch.save(cache, tmp)
    os.replace(tmp, cache_path)  # the trainer may be reading it: never a half-written file
    stats_path = run / "latent_stats.json"
    if stats_path.exists():
        return
    mean, std = stats if stats is not None else latent_statistics(cache["latents"])
    record = {"latents_mean": list(mean), "latents_std": list(std), "vae": vae_source, "figure_scale": figure_scale}
    stats_path.write_text(json.dumps(record, indent=1))
    measured = "given" if stats is not None else f"from {len(cache['latents'])} shots"
    print(f"latent stats {measured}: |mean| {np.abs(mean).mean():.3f} std {np.mean(std):.3f}", flush=True)


def pool_figure_scale(run: Path) -> str | None:
    """The figure scale of the shot pool in `run` (None before there is one; pools made before scales had names
    were all drawn at the default)."""
    stats_path = run / "latent_stats.json"
    if not stats_path.exists():
        return None
    return json.loads(stats_path.read_text()).get("figure_scale", DEFAULT_FIGURE_SCALE)


def latent_statistics(latents: list[torch.Tensor]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std over shots `[C, n, h, w]`: the VAE config's `latents_mean` / `latents_std`."""
    allz = torch.stack(latents).float()  # [N, C, n, h, w]
    return allz.mean(dim=(0, 2, 3, 4)).tolist(), allz.std(dim=(0, 2, 3, 4)).tolist()


def cmd_cache(args) -> None:
    """Encode a pool of single shots; training composes scenes from them (any shots of one location and two
    characters make a scene), so a few thousand encoded shots give far more distinct scenes than encoding scenes."""
    torch.set_num_threads(args.threads)
    run = args.run
    run.mkdir(parents=True, exist_ok=True)
    pool_scale = pool_figure_scale(run)
    if pool_scale is not None and pool_scale != args.figure_scale:
        raise ValueError(
            f"{run} holds a pool of figure scale {pool_scale!r}; pass --figure-scale {pool_scale} to grow it, "
            f"or use a new --run folder for {args.figure_scale!r}"
        )
    if args.vae.is_dir():  # an exported model's vae/ folder: continue in the shipped latent space
        from diffusers import AutoencoderKLWan

        shipped = AutoencoderKLWan.from_pretrained(args.vae, local_files_only=True, torch_dtype=torch.float32)
        vae = shipped
        vae_state = {"vae": shipped.state_dict(), "step": -1}
        fixed_stats = (list(shipped.config["latents_mean"]), list(shipped.config["latents_std"]))
    else:
        vae_state = torch.load(args.vae, weights_only=False)
        fixed_stats = None  # a checkpoint of a new latent space: measured on the pool
        vae = build_vae(args.seed, vae_state.get("config"))
    vae.load_state_dict(vae_state["vae"])
    vae.eval()
    encoder_copy = run / "vae_encoder.pt"  # the latent space: export checks the shipped encoder is this one
    if not encoder_copy.exists():
        torch.save({"vae": vae_state["vae"], "step": vae_state["step"], "source": str(args.vae)}, encoder_copy)
    cache_path = run / "shots.pt"
    cache = torch.load(cache_path, weights_only=False) if cache_path.exists() else {"latents": [], "labels": []}
    start = time.time()

    def save():
        save_shot_pool(run, cache, str(args.vae), args.figure_scale, fixed_stats)

    while len(cache["labels"]) < args.shots:
        # Shot i is drawn from its own seed, so the pool is the same however often the cache was resumed.
        i = len(cache["labels"])
        labels = sample_shot(np.random.default_rng([args.seed, i]), figure_scale=args.figure_scale)
        frames = render_shot(labels, size=SIZE, num_frames=SHOT_FRAMES)
        cache["latents"].append(encode_shot(vae, frames).half())
        cache["labels"].append(asdict(labels))
        if (i + 1) % args.save_every == 0:
            print(f"{i + 1} shots encoded, {time.time() - start:.0f}s", flush=True)
            save()
    save()
    print(f"cache: {len(cache['labels'])} shots", flush=True)


# --- stage 2: training -----------------------------------------------------------------------------------------------


def shifted(s: torch.Tensor, shift: float = FLOW_SHIFT) -> torch.Tensor:
    return shift * s / (1 + (shift - 1) * s)


def sample_sigmas(rng: torch.Generator, batch: int, shots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-shot noise levels `[B, K]` and the loss mask `[B, K]` (shots kept clean carry no loss), drawn on the
    generator's device in a fixed number of calls (no per-scene loop: on a GPU, host work per scene is what bounds a
    step). Half the scenes share one level (generation), 30% draw one level per shot, 20% keep some shots clean at
    timestep 0 with the rest at one level (`context` regeneration), never all of them."""
    device = rng.device
    shared = torch.sigmoid(torch.randn(batch, 1, generator=rng, device=device)).expand(batch, shots)
    own = torch.sigmoid(torch.randn(batch, shots, generator=rng, device=device))
    kind = torch.rand(batch, 1, generator=rng, device=device)
    s = torch.where(kind < 0.3, own, shared)
    context = (kind >= 0.3) & (kind < 0.5)
    clean = context & (torch.rand(batch, shots, generator=rng, device=device) < 0.5)
    # A scene drawn all clean keeps one random shot noisy.
    keep = torch.randint(shots, (batch, 1), generator=rng, device=device)
    all_clean = clean.all(dim=1, keepdim=True)
    clean &= ~(all_clean & (torch.arange(shots, device=device) == keep))
    s = s.masked_fill(clean, 0.0)
    return shifted(s), (~clean).float()


class SceneComposer:
    """Scenes of K shots composed from the shot pool: one location, a cast of two, each cast member on screen.

    Whole batches are drawn with a few vectorised calls on the generator's device and gathered from tables there
    (`to(device)`): a batch of 32000 tokens holds 100-200 scenes, and drawing and concatenating them one by one cost
    tens of milliseconds of host time a step (docs/PERFORMANCE.md, "Demo-model training")."""

    def __init__(self, cache: dict, stats: dict, text: dict[str, torch.Tensor]):
        mean = torch.tensor(stats["latents_mean"]).view(1, -1, 1, 1, 1)
        std = torch.tensor(stats["latents_std"]).view(1, -1, 1, 1, 1)
        self.latents = (torch.stack(cache["latents"]).float() - mean) / std  # [N, C, n, h, w]
        self.labels = [ShotLabels(**{**lab, "start": tuple(lab["start"])}) for lab in cache["labels"]]
        self.by_pair: dict[tuple[str, str], list[int]] = {}
        for i, lab in enumerate(self.labels):
            self.by_pair.setdefault((lab.location, lab.character), []).append(i)
        self.locations = sorted({loc for loc, _ in self.by_pair})
        self.characters = sorted({c for _, c in self.by_pair})
        index = {name: i for i, name in enumerate(self.characters)}
        self.character_of = torch.tensor([index[lab.character] for lab in self.labels], dtype=torch.long)
        self.text = text
        # Draw tables. Location l has names_at[l, :count_at[l]] (character indices, sorted by name); the pool
        # shots of (location l, character c) are pool[offset[pair[l, c]] : + size[pair[l, c]]].
        n_loc, n_char = len(self.locations), len(self.characters)
        self.names_at = torch.zeros(n_loc, n_char, dtype=torch.long)
        self.count_at = torch.zeros(n_loc, dtype=torch.long)
        self.pair = torch.full((n_loc, n_char), -1, dtype=torch.long)
        pool, offsets, sizes = [], [], []
        for li, loc in enumerate(self.locations):
            for ci, name in enumerate(self.characters):
                shots = self.by_pair.get((loc, name))
                if not shots:
                    continue
                self.names_at[li, self.count_at[li]] = ci
                self.count_at[li] += 1
                self.pair[li, ci] = len(offsets)
                offsets.append(len(pool))
                sizes.append(len(shots))
                pool += shots
        if (self.count_at < 2).any():
            lonely = [loc for loc, n in zip(self.locations, self.count_at.tolist(), strict=True) if n < 2]
            raise ValueError(f"the shot pool has fewer than two characters at {lonely}: encode more shots")
        self.pool = torch.tensor(pool, dtype=torch.long)
        self.offset = torch.tensor(offsets, dtype=torch.long)
        self.size = torch.tensor(sizes, dtype=torch.long)

    def global_caption(self, location: int, first: int, second: int) -> str:
        return global_caption(self.locations[location], [self.characters[first], self.characters[second]])

    def to(self, device: torch.device | str) -> SceneComposer:
        """Move the latents, the draw tables and the text tables to `device` (call once `text` holds every caption
        of `texts()`). Text tables: the global caption of every (location, first, second) and one caption per shot."""
        for name in ("latents", "names_at", "count_at", "pair", "pool", "offset", "size", "character_of"):
            setattr(self, name, getattr(self, name).to(device))
        n_loc, n_char = len(self.locations), len(self.characters)
        like = self.text[self.global_caption(0, *self.names_at[0, :2].tolist())]
        self.global_text = like.new_zeros(n_loc, n_char, n_char, *like.shape)
        for li in range(n_loc):
            names = self.names_at[li, : self.count_at[li]].tolist()
            for a in names:
                for b in names:
                    if a != b:
                        self.global_text[li, a, b] = self.text[self.global_caption(li, a, b)]
        captions = sorted({lab.caption for lab in self.labels} | {unnamed_caption(lab) for lab in self.labels})
        row = {c: i for i, c in enumerate(captions)}
        self.caption_text = torch.stack([self.text[c] for c in captions]).to(device)
        self.shot_caption = torch.tensor([row[lab.caption] for lab in self.labels], device=device)
        self.shot_unnamed_caption = torch.tensor([row[unnamed_caption(lab)] for lab in self.labels], device=device)
        self.global_text = self.global_text.to(device)
        return self

    def draw(self, k: int, size: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`size` scenes of `k` shots: pool indices `[B, K]`, location `[B]` and cast `[B, 2]` (character indices, the
        order the global caption names them), on the generator's device (where the tables must be)."""
        device = rng.device

        def below(n: torch.Tensor) -> torch.Tensor:  # one uniform integer in [0, n) per entry of n
            u = torch.rand(n.shape, generator=rng, device=device)
            return torch.minimum((u * n).long(), n - 1)

        location = torch.randint(len(self.locations), (size,), generator=rng, device=device)
        count = self.count_at[location]
        first = below(count)
        second = below(count - 1)
        second = second + (second >= first).long()  # any name but the first
        cast = torch.stack([self.names_at[location, first], self.names_at[location, second]], dim=1)
        extra = torch.randint(2, (size, k - 2), generator=rng, device=device)
        who = torch.cat([cast, cast.gather(1, extra)], dim=1)  # both on screen, the rest either of them
        order = torch.rand(size, k, generator=rng, device=device).argsort(dim=1)
        who = who.gather(1, order)
        pair = self.pair[location[:, None], who]
        shots = self.pool[self.offset[pair] + below(self.size[pair])]
        return shots, location, cast

    def batch(
        self, k: int, size: int, rng: torch.Generator, unnamed: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x0 `[B, C, K*n, h, w]` (shots concatenated in time) and text `[B, L, D]` = [global; caption_1..K].
        `unnamed`: the chance that a shot whose character an earlier shot of the scene already showed is captioned
        without the name (`world.unnamed_caption`); only the other shots' frames then say who it is, which is what
        attention across shots has to learn to carry."""
        shots, location, cast = self.draw(k, size, rng)
        x0 = self.latents[shots]  # [B, K, C, n, h, w]
        x0 = x0.transpose(1, 2).flatten(2, 3)
        rows = self.shot_caption[shots]  # [B, K]
        if unnamed > 0:  # no draw otherwise: runs without it keep their random streams
            who = self.character_of[shots]
            earlier = (who[:, :, None] == who[:, None, :]).tril(-1).any(dim=2)  # [B, K]: seen in an earlier shot
            leave = earlier & (torch.rand(who.shape, generator=rng, device=rng.device) < unnamed)
            rows = torch.where(leave, self.shot_unnamed_caption[shots], rows)
        captions = self.caption_text[rows].flatten(1, 2)  # [B, K * L_c, D]
        return x0, torch.cat([self.global_text[location, cast[:, 0], cast[:, 1]], captions], dim=1)

    def texts(self) -> list[str]:
        texts = {"", *(lab.caption for lab in self.labels), *(unnamed_caption(lab) for lab in self.labels)}
        for loc in self.locations:
            names = sorted(c for lc, c in self.by_pair if lc == loc)
            texts.update(global_caption(loc, [a, b]) for a in names for b in names if a != b)
        return sorted(texts)


@dataclass
class SceneLayouts:
    """The token layouts of training batches, one per shot count K (every shot n latent frames, fixed caption
    lengths): captioned `[global; caption_1..K]`, and caption-dropped (the empty negative prompt as one global token,
    what the pipeline's unconditional pass gives the model)."""

    captioned: dict[int, ShotLayout]
    dropped: dict[int, ShotLayout]
    latent_frames: int  # per shot
    tokens_per_shot: int


def scene_layouts(data: SceneComposer, patch: int) -> SceneLayouts:
    """Layouts for `data` (moved with `.to()`: its text tables fix the caption lengths) and a transformer `patch`."""
    lengths = {t.shape[0] for c, t in data.text.items() if c}
    global_len, caption_len = data.global_text.shape[3], data.caption_text.shape[1]
    if lengths != {caption_len, global_len}:
        raise ValueError(f"training batches need fixed caption lengths; the world's captions have {sorted(lengths)}")
    n_lat, grid = data.latents.shape[2], data.latents.shape[3] // patch
    captioned = {k: ShotLayout.build([n_lat] * k, grid, grid, [caption_len] * k, global_len) for k in SHOTS_PER_SCENE}
    dropped = {k: layout.with_text([0] * k, data.text[""].shape[0]) for k, layout in captioned.items()}
    return SceneLayouts(captioned, dropped, n_lat, n_lat * grid * grid)


def flow_matching_loss(
    transformer,
    state,
    data: SceneComposer,
    layouts: SceneLayouts,
    k: int,
    batch: int,
    drop: bool,
    gen,
    unnamed: float = 0.0,
) -> torch.Tensor:
    """The loss of one batch of `batch` scenes of `k` shots (drawn with `gen`, on the training device): velocity
    target `noise - x0` at per-shot noise levels, shots kept clean carrying no loss; `drop`: the batch sees only the
    empty negative prompt; `unnamed`: see `SceneComposer.batch`. `state` is `multishot_attention`'s, whose layout
    this sets."""
    x0, cond = data.batch(k, batch, gen, unnamed)
    sig, mask = sample_sigmas(gen, batch, k)
    n_lat = layouts.latent_frames
    sig_tok = layouts.captioned[k].token_timesteps(sig)  # [B, S]
    noise = torch.randn(x0.shape, generator=gen, device=x0.device)
    sig_frames = sig.repeat_interleave(n_lat, dim=1)[:, None, :, None, None]  # [B, 1, K*n, 1, 1]
    xt = (1 - sig_frames) * x0 + sig_frames * noise
    if drop:
        state.layout = layouts.dropped[k]
        cond = data.text[""].unsqueeze(0).expand(batch, -1, -1)
    else:
        state.layout = layouts.captioned[k]
    pred = transformer(hidden_states=xt, timestep=sig_tok * 1000, encoder_hidden_states=cond).sample
    per_frame = (pred - (noise - x0)).pow(2).mean(dim=(1, 3, 4))  # [B, K*n]
    weight = mask.repeat_interleave(n_lat, dim=1)
    return (per_frame * weight).sum() / weight.sum()


def build_optimizer(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """AdamW, fused: one kernel for the whole update instead of a few per parameter tensor (231 of them)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.99), fused=True)


def optimiser_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    ema_params: list[torch.Tensor],
    step: int,
    ema: float,
) -> None:
    """Backward, clip, update, then the EMA as it stands after `step` updates."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    ema_update(ema_params, params, step, ema)


def ema_update(ema_params: list[torch.Tensor], params: list[torch.Tensor], step: int, ema: float) -> None:
    """EMA of the weights after `step` optimiser steps (a short horizon early on), one fused call for all tensors."""
    decay = min(ema, (1 + step) / (10 + step))
    with torch.no_grad():
        torch._foreach_lerp_(ema_params, params, 1 - decay)


# With `--schedule cosine` the rate falls to this fraction of --lr by the end of the run (by --minutes or
# --max-steps, whichever comes first): the weights settle instead of ending on a full-size step. A CPU anneal of the
# shipped transformer at a tenth of the rate showed what settling is worth (shape 76% -> 81%).
COSINE_FLOOR = 0.05
LR_SCHEDULES = ("constant", "cosine")


def learning_rate(base: float, step: int, warmup: int, progress: float, schedule: str) -> float:
    """The rate of optimiser step `step + 1`: linear warm-up over `warmup` steps, then constant or a cosine from
    `base` down to `COSINE_FLOOR * base` as `progress` (0 at the start of this run, 1 at its end) goes by."""
    rate = base * min(1.0, (step + 1) / warmup)
    if schedule == "cosine":
        progress = min(max(progress, 0.0), 1.0)
        rate *= COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress))
    elif schedule != "constant":
        raise ValueError(f"unknown learning-rate schedule {schedule!r}: use 'constant' or 'cosine'")
    return rate


def cmd_train(args) -> int:
    torch.set_num_threads(args.threads)
    run = args.run
    stats = json.loads((run / "latent_stats.json").read_text())
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 weights, TF32 matmuls: no autocast to get wrong
        torch.backends.cudnn.allow_tf32 = True
    tokenizer = build_world_tokenizer()
    text_encoder = build_text_encoder(args.seed, args.text_encoder)
    text: dict[str, torch.Tensor] = {}

    def load_data() -> SceneComposer:
        """(Re)load the shot pool: the cache stage may still be adding shots while training runs."""
        data = SceneComposer(torch.load(run / "shots.pt", weights_only=False), stats, text)
        for t in data.texts():
            if t not in text:
                text[t] = encode_text(tokenizer, text_encoder, t).to(device)
        print(f"shot pool: {len(data.labels)} shots", flush=True)
        return data.to(device)  # scenes are drawn and composed where the model trains

    data = load_data()
    pool_mtime = (run / "shots.pt").stat().st_mtime
    ks = list(SHOTS_PER_SCENE)
    probs = torch.tensor([SHOTS_PER_SCENE[k] for k in ks])
    resumed = (
        torch.load(run / "last.pt", weights_only=False, map_location=device) if (run / "last.pt").exists() else None
    )
    if resumed is not None:
        config = resumed["config"]
    else:  # a new transformer's layout follows its latents unless the flags say otherwise
        config = new_transformer_config(data.latents.shape[3], args.patch, args.heads, args.ffn_dim)
    transformer = build_transformer(args.seed, config)
    if args.init is not None and resumed is None:
        from diffusers import WanTransformer3DModel

        transformer = WanTransformer3DModel.from_pretrained(
            args.init / "transformer", local_files_only=True, torch_dtype=torch.float32
        )
        # its own layout, whatever --patch/--heads/--ffn-dim say: checkpoints and the export rebuild from `config`
        config = {key: value for key, value in transformer.config.items() if not key.startswith("_")}
        print(f"initialised from {args.init}", flush=True)
    layouts = scene_layouts(data, config["patch_size"][1])
    tokens_per_shot = layouts.tokens_per_shot
    transformer.to(device)
    ema = copy.deepcopy(transformer).requires_grad_(False)
    optimizer = build_optimizer(list(transformer.parameters()), args.lr)
    # Two generators: `rng` (host) makes the decisions that shape a step (shots per scene, caption dropout), `gen`
    # (the training device) draws scenes, noise levels and noise, so a step needs no host-to-device copy (each one
    # from pageable memory waits for the GPU) and no per-scene host work.
    rng = torch.Generator().manual_seed(args.seed)
    gen = torch.Generator(device).manual_seed(args.seed + 1)
    step, losses = 0, []
    if resumed is not None:
        ckpt = resumed
        transformer.load_state_dict(ckpt["transformer"])
        ema.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step = ckpt["step"]
        rng.set_state(ckpt["rng"].cpu())
        if "gen" in ckpt:
            gen.set_state(ckpt["gen"].cpu())
        else:  # a checkpoint from before the device generator
            gen.manual_seed(args.seed + 1 + step)
        print(f"resumed from {run / 'last.pt'} at step {step}", flush=True)
    n_params = sum(p.numel() for p in transformer.parameters())
    print(f"transformer {n_params / 1e6:.2f}M params; shots {ks}; {tokens_per_shot} tokens/shot", flush=True)

    def save():
        tmp = run / "last.pt.tmp"
        state = {"transformer": transformer.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict()}
        state |= {"step": step, "rng": rng.get_state(), "gen": gen.get_state(), "config": config, "seed": args.seed}
        torch.save(state, tmp)
        os.replace(tmp, run / "last.pt")

    start = time.time()
    transformer.train()
    params, ema_params = list(transformer.parameters()), list(ema.parameters())
    first_step, window = step, 0
    loss_sum = torch.zeros((), device=device)  # read every 50 steps: a `.item()` per step would wait for the GPU
    with multishot_attention(transformer, layouts.captioned[ks[0]], "mmrope", "full") as state:
        while step < args.max_steps and time.time() - start < args.minutes * 60:
            k = ks[int(torch.multinomial(probs, 1, generator=rng))]
            batch = max(1, args.tokens // (tokens_per_shot * k))
            drop = torch.rand(1, generator=rng).item() < args.cfg_dropout  # caption dropout
            loss = flow_matching_loss(transformer, state, data, layouts, k, batch, drop, gen, args.unnamed)
            elapsed, done = time.time() - start, step - first_step
            progress = max(elapsed / (args.minutes * 60), done / max(1, args.max_steps - first_step))
            lr = learning_rate(args.lr, step, args.warmup, progress, args.schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step += 1
            optimiser_step(loss, optimizer, params, ema_params, step, args.ema)
            loss_sum += loss.detach()
            window += 1
            if step % 50 == 0:
                losses.append(loss_sum.item() / window)
                loss_sum.zero_()
                window = 0
                rate = (time.time() - start) / (step - first_step)
                print(f"step {step} loss {losses[-1]:.4f} lr {lr:.2e} {rate:.3f}s/step", flush=True)
            if step % args.save_every == 0:
                save()
            if step % args.reload_every == 0 and (run / "shots.pt").stat().st_mtime != pool_mtime:
                pool_mtime = (run / "shots.pt").stat().st_mtime
                data = load_data()
    save()
    print(f"saved {run / 'last.pt'} at step {step}", flush=True)
    return step


# --- stage 3: export -------------------------------------------------------------------------------------------------


def cmd_export(args) -> None:
    export_demo(
        args.run,
        args.dest,
        seed=args.seed,
        use_ema=not args.raw,
        vae_checkpoint=args.vae,
        text_encoder=args.text_encoder,
    )
    print(f"exported to {args.dest}")


def export_demo(
    run: Path,
    dest: Path,
    seed: int = 0,
    use_ema: bool = True,
    vae_checkpoint: Path | None = None,
    text_encoder: Path | None = None,
) -> None:
    """Write tokenizer, text encoder, VAE (with latent statistics), transformer and scheduler in the diffusers
    folder layout, weights as safetensors."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    dest.mkdir(parents=True, exist_ok=True)
    stats = json.loads((run / "latent_stats.json").read_text())
    vae_source = Path(vae_checkpoint or stats["vae"])  # a train_vae checkpoint or a vae/ folder (e.g. the shipped one)
    vae_config, vae_state = load_vae_weights(vae_source)
    cached = torch.load(run / "vae_encoder.pt", weights_only=False, map_location="cpu")["vae"]
    for name, value in cached.items():
        if name.startswith(("encoder.", "quant_conv.")) and not torch.equal(value, vae_state[name]):
            raise ValueError(f"the VAE encoder changed since the latent cache was made ({name}); retrain from it")
    save_vae_folder(vae_state, vae_config, stats["latents_mean"], stats["latents_std"], dest / "vae")

    ckpt = torch.load(run / "last.pt", weights_only=False, map_location="cpu")
    transformer = build_transformer(seed, ckpt.get("config"))
    transformer.load_state_dict(ckpt["ema" if use_ema else "transformer"])
    # Stored in half precision (the 40 MB budget; loaders upcast): the evaluation of the shipped weights is the same
    # to the shot either way (docs/QUALITY.md, "The model").
    save_model_folder(transformer, dest / "transformer")

    build_text_encoder(seed, text_encoder).save_pretrained(dest / "text_encoder", safe_serialization=True)
    build_world_tokenizer().save_pretrained(dest / "tokenizer")
    FlowMatchEulerDiscreteScheduler(shift=FLOW_SHIFT).save_pretrained(dest / "scheduler")
    import diffusers

    index = {
        "_class_name": "WanPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"],
    }
    (dest / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    info = {
        "trained_steps": ckpt["step"],
        "vae_steps": torch.load(vae_source, weights_only=False)["step"] if vae_source.is_file() else None,
        "vae": str(vae_source),
        "weights": "ema" if use_ema else "raw",
        "stored_dtype": str(WEIGHTS_DTYPE).removeprefix("torch."),
        "seed": seed,
        "shot_frames": SHOT_FRAMES,
        "size": SIZE,
        "figure_scale": stats.get("figure_scale", DEFAULT_FIGURE_SCALE),
        "command": "python -m training.train_demo train --run RUN --minutes M (see docs/QUALITY.md)",
    }
    (dest / "training.json").write_text(json.dumps(info, indent=2) + "\n")


def share(text: str) -> float:
    """argparse type of a probability: a number from 0 to 1."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a share from 0 to 1, got {text}")
    return value


def main(argv: list[str] | None = None):
    """Run one stage; returns what it returns (`train`: the step reached)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("cache", "train", "export"):
        p = sub.add_parser(name)
        p.add_argument("--run", type=Path, required=True, help="run folder (latent cache, checkpoints)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=1)
        p.add_argument(
            "--text-encoder",
            type=Path,
            default=None,
            help="a saved text_encoder/ folder to use (default: a fresh random one from --seed)",
        )
    cache = sub.choices["cache"]
    cache.add_argument("--vae", type=Path, required=True, help="VAE checkpoint from training/train_vae.py")
    cache.add_argument("--shots", type=int, default=1500, help="shots in the pool (resumable: raise it to add more)")
    cache.add_argument("--save-every", type=int, default=100)
    cache.add_argument(
        "--figure-scale",
        choices=sorted(FIGURE_SCALES),
        default=None,
        help="world.FIGURE_SCALES (default: the one a --vae folder records, else " + DEFAULT_FIGURE_SCALE + ")",
    )
    train = sub.choices["train"]
    train.add_argument("--minutes", type=float, default=60.0)
    train.add_argument("--device", default="cpu", help="cpu or cuda (same script, same results format)")
    train.add_argument("--max-steps", type=int, default=10**9)
    train.add_argument("--lr", type=float, default=5e-4)
    train.add_argument("--warmup", type=int, default=200)
    train.add_argument(
        "--schedule",
        choices=LR_SCHEDULES,
        default="constant",
        help="learning rate after the warm-up: constant, or a cosine down to a twentieth of --lr by the run's end",
    )
    train.add_argument("--ema", type=float, default=0.999)
    train.add_argument("--tokens", type=int, default=TOKENS_PER_BATCH)
    train.add_argument("--cfg-dropout", type=float, default=0.1)
    train.add_argument(
        "--unnamed",
        type=share,
        default=0.0,
        help="chance that a shot of a character an earlier shot showed is captioned without its name (0-1)",
    )
    train.add_argument("--save-every", type=int, default=100)
    train.add_argument("--reload-every", type=int, default=200, help="steps between looks for a grown shot pool")
    train.add_argument("--init", type=Path, default=None, help="start from an exported model folder")
    new_layout = "default: TRANSFORMER_LAYOUTS' for the pool's latents (8x8: 2, 6, 768; 16x16: 4, 8, 640)"
    train.add_argument("--patch", type=int, default=None, help=f"spatial patch of a new transformer ({new_layout})")
    train.add_argument("--heads", type=int, default=None, help="attention heads of a new transformer (32 wide each)")
    train.add_argument("--ffn-dim", type=int, default=None, help="feed-forward width of a new transformer")
    export = sub.choices["export"]
    export.add_argument("--dest", type=Path, default=Path("assets/demo"))
    export.add_argument(
        "--vae",
        type=Path,
        default=None,
        help="VAE checkpoint (default: the one the cache used); "
        "a decoder-only run from it sharpens the decoder and keeps the latent space",
    )
    export.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA")
    args = parser.parse_args(argv)
    if args.command == "cache" and args.figure_scale is None:
        args.figure_scale = recorded_figure_scale(args.vae)  # the shipped latent space: the shipped model's scale
    return {"cache": cmd_cache, "train": cmd_train, "export": cmd_export}[args.command](args)


if __name__ == "__main__":
    main()
