"""What LoRA and embedding training share: defaults per preset, reference images as one-frame samples,
caption encoding the way the pipelines do it, and the flow-matching objective of Wan's scheduler.

This package never imports `studio`: the worker hands it components, images and plain settings.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ProgressCallback = Callable[[int, int, float], None]  # (step, total_steps, loss)
StopCheck = Callable[[], bool]

ADAPTER_KINDS = ("lora", "embedding", "imported")
LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
# safetensors header key where Shotline keeps what it needs to use an adapter again (trigger, text, preset).
SHOTLINE_METADATA_KEY = "shotline"

# Defaults per model preset. Small models learn fast and have few parameters per projection; the big Wan models
# want a low learning rate so a character LoRA does not wash out the base model's look. The demo model's: its new
# character appeared in 65% of 48 held-out scenes at 2000 steps of 2e-3, 31% at 600 of 1e-3 (docs/QUALITY.md,
# "Character adapters").
_LORA_DEFAULTS = {
    "tiny": dict(rank=4, alpha=4.0, steps=150, learning_rate=1e-2),
    "demo": dict(rank=8, alpha=8.0, steps=2000, learning_rate=2e-3, still_frames=17),
    "wan2.1-t2v-1.3b": dict(rank=16, alpha=16.0, steps=800, learning_rate=1e-4),
    "wan2.1-t2v-14b": dict(rank=32, alpha=32.0, steps=800, learning_rate=5e-5),
    "wan2.2-ti2v-5b": dict(rank=32, alpha=32.0, steps=800, learning_rate=8e-5),
}
_EMBEDDING_DEFAULTS = {
    "tiny": dict(num_vectors=1, steps=100, learning_rate=5e-2),
    "demo": dict(num_vectors=2, steps=300, learning_rate=5e-3, still_frames=17),
    "wan2.1-t2v-1.3b": dict(num_vectors=2, steps=1000, learning_rate=5e-3),
    "wan2.1-t2v-14b": dict(num_vectors=2, steps=1000, learning_rate=3e-3),
    "wan2.2-ti2v-5b": dict(num_vectors=2, steps=1000, learning_rate=3e-3),
}


def default_hyperparameters(preset: str, kind: str) -> dict:
    """The hyper-parameters a new adapter of `kind` starts from for `preset` (unknown presets get demo's)."""
    if kind in ("lora", "imported"):
        return dict(_LORA_DEFAULTS.get(preset, _LORA_DEFAULTS["demo"]))
    if kind == "embedding":
        return dict(_EMBEDDING_DEFAULTS.get(preset, _EMBEDDING_DEFAULTS["demo"]))
    raise ValueError(f"unknown adapter kind {kind!r}; choose one of: lora, embedding")


def preset_training_values(preset, kind: str, overrides: dict, derived: Callable[[Any], dict] | None = None) -> dict:
    """A training config's values: `kind`'s defaults for a `pipelines.registry.ModelPreset` (or a preset name) with
    its frame size and caption length, then `derived(preset)` (settings that follow from the preset), then the
    explicit overrides."""
    if isinstance(preset, str):
        from pipelines.registry import get_preset

        preset = get_preset(preset)
    values = default_hyperparameters(preset.name, kind)
    values.update(width=preset.width, height=preset.height, max_sequence_length=preset.max_sequence_length)
    values.update(cross_attention=preset.cross_attention)
    if derived is not None:
        values.update(derived(preset))
    # None means "the preset's value" for every setting except the caption length, where it means unpadded.
    values.update({k: v for k, v in overrides.items() if v is not None or k == "max_sequence_length"})
    return values


@dataclass
class TrainingResult:
    """What a training run produced. `path` is None when the run was stopped (nothing was written)."""

    path: Path | None
    loss_curve: list[float]
    steps_done: int
    stopped: bool
    metadata: dict = field(default_factory=dict)
    # Loss on one fixed set of noise draws (same noise, same levels) before and after training: unlike the
    # per-step curve, which jumps with the random noise level of each step, these two are comparable.
    eval_loss_before: float | None = None
    eval_loss_after: float | None = None

    @property
    def metrics(self) -> dict:
        curve = self.loss_curve
        window = max(1, len(curve) // 10)
        return {
            "steps": self.steps_done,
            "loss_first": float(np.mean(curve[:window])) if curve else None,
            "loss_last": float(np.mean(curve[-window:])) if curve else None,
            "loss_curve": [round(float(v), 6) for v in curve],
            "eval_loss_before": self.eval_loss_before,
            "eval_loss_after": self.eval_loss_after,
        }


def load_image(image: Image.Image | bytes | str | Path | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, bytes):
        return Image.open(io.BytesIO(image)).convert("RGB")
    if isinstance(image, str | Path):
        return Image.open(image).convert("RGB")
    return Image.fromarray(np.asarray(image).astype(np.uint8)).convert("RGB")


def fit_to_size(image: Image.Image, width: int, height: int, crop_scale: float = 1.0, rng=None) -> Image.Image:
    """Crop the largest `crop_scale` part of the image with the target aspect ratio (random position when an
    `rng` is given, centred otherwise) and resize it to `width` x `height`."""
    src_w, src_h = image.size
    target_ratio = width / height
    crop_w, crop_h = (src_w, src_w / target_ratio) if src_w / src_h < target_ratio else (src_h * target_ratio, src_h)
    crop_w, crop_h = crop_w * crop_scale, crop_h * crop_scale
    if rng is None:
        left, top = (src_w - crop_w) / 2, (src_h - crop_h) / 2
    else:
        left, top = rng.uniform(0, src_w - crop_w), rng.uniform(0, src_h - crop_h)
    box = (round(left), round(top), round(left + crop_w), round(top + crop_h))
    return image.resize((width, height), Image.Resampling.BICUBIC, box=box)


def augmented_views(
    images: Sequence[Image.Image], width: int, height: int, variants: int, seed: int, min_crop: float = 0.8
) -> list[Image.Image]:
    """`variants` views of every reference: the whole picture, its mirror, then random crops (80-100% of the
    frame) flipped at random. Light on purpose: a character reference should stay recognisably itself."""
    rng = np.random.default_rng(seed)
    views = []
    for image in images:
        for index in range(max(1, variants)):
            if index == 0:
                view = fit_to_size(image, width, height)
            elif index == 1:
                view = fit_to_size(image, width, height).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            else:
                view = fit_to_size(image, width, height, crop_scale=rng.uniform(min_crop, 1.0), rng=rng)
                if rng.random() < 0.5:
                    view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            views.append(view)
    return views


def images_to_tensor(images: Sequence[Image.Image], frames: int = 1) -> torch.Tensor:
    """[N, 3, frames, H, W] in [-1, 1]: videos of each picture held still (one frame: an image), the layout Wan's
    causal VAE takes."""
    arrays = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0 for image in images])
    video = torch.from_numpy(arrays).permute(0, 3, 1, 2).unsqueeze(2)
    return video.repeat(1, 1, frames, 1, 1).contiguous()


def latent_normalization(vae) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan's per-channel latent mean and std, shaped [1, C, 1, 1, 1] (what WanPipeline undoes before decoding)."""
    z_dim = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(1, z_dim, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32).view(1, z_dim, 1, 1, 1)
    return mean, std


@torch.no_grad()
def encode_images(vae, images: Sequence[Image.Image], batch_size: int = 4, frames: int = 1) -> torch.Tensor:
    """VAE-encode pictures as videos held still for `frames` frames (1: one-frame videos) into the normalised
    latent space the transformer denoises."""
    device = next(vae.parameters()).device
    dtype = next(vae.parameters()).dtype
    mean, std = latent_normalization(vae)
    pixels = images_to_tensor(images, frames)
    latents = []
    for start in range(0, len(pixels), batch_size):
        batch = pixels[start : start + batch_size].to(device=device, dtype=dtype)
        # The distribution's mean, not a sample: the references are fixed, the noise comes from flow matching.
        z = vae.encode(batch).latent_dist.mode().float().cpu()
        latents.append((z - mean) / std)
    return torch.cat(latents)


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor) -> np.ndarray:
    """Inverse of `encode_images`: [N, C, F, h, w] normalised latents -> [N, F, H, W, 3] floats in [0, 1]."""
    device = next(vae.parameters()).device
    dtype = next(vae.parameters()).dtype
    mean, std = latent_normalization(vae)
    video = vae.decode((latents.float() * std + mean).to(device=device, dtype=dtype), return_dict=False)[0]
    return ((video.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1).cpu().numpy()


def prompt_text_embeddings(
    tokenizer,
    text_encoder,
    captions: Sequence[str],
    max_sequence_length: int | None,
    inputs_embeds_hook: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Encode captions as the pipelines do: each trimmed to its real length, then zero-padded to
    `max_sequence_length` (or, with None, to the longest caption of the batch, the demo model's convention).

    `inputs_embeds_hook(input_ids, embeds) -> embeds` lets textual inversion swap in trainable token rows.
    """
    device = next(text_encoder.parameters()).device
    limit = max_sequence_length or tokenizer.model_max_length
    tokens = tokenizer(
        list(captions),
        padding="max_length" if max_sequence_length else "longest",
        max_length=limit,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    input_ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
    if inputs_embeds_hook is None:
        hidden = text_encoder(input_ids, attention_mask=mask).last_hidden_state
    else:
        embeds = text_encoder.get_input_embeddings()(input_ids)
        hidden = text_encoder(
            inputs_embeds=inputs_embeds_hook(input_ids, embeds), attention_mask=mask
        ).last_hidden_state
    seq_lens = mask.gt(0).sum(dim=1)
    length = max_sequence_length or int(seq_lens.max())
    rows = [torch.cat([h[:n], h.new_zeros(length - int(n), h.size(1))]) for h, n in zip(hidden, seq_lens, strict=True)]
    return torch.stack(rows)


def sample_flow_matching(
    latents: torch.Tensor, generator: torch.Generator, shift: float, num_train_timesteps: int = 1000
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise clean latents to a random level of the scheduler's schedule; return (x_t, timestep, target).

    FlowMatchEulerDiscreteScheduler: x_t = (1 - s) x0 + s noise, the model predicts the velocity noise - x0, and
    the timestep it is told is s * 1000. The sigma is drawn uniformly then shifted exactly like the scheduler's
    `shift` (s' = shift s / (1 + (shift - 1) s)), so training sees noise levels in the proportion inference visits.
    """
    batch = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
    uniform = torch.rand(batch, generator=generator, dtype=torch.float32)
    sigma = shift * uniform / (1 + (shift - 1) * uniform)
    s = sigma.view(batch, *([1] * (latents.dim() - 1)))
    noisy = (1 - s) * latents.float() + s * noise
    return noisy, sigma * num_train_timesteps, noise - latents.float()


def evaluation_draws(
    latents: torch.Tensor, seed: int, per_sample: int = 4, max_samples: int = 4
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Fixed (index, x_t, timestep, target) draws at evenly spread noise levels, for before/after comparisons.

    Up to `max_samples` views spread over all references, `per_sample` noise levels each: 16 forward passes per
    evaluation by default, small next to hundreds of training steps on a real model.
    """
    generator = torch.Generator().manual_seed(seed + 1_000_003)
    count = min(latents.shape[0], max_samples)
    index = torch.linspace(0, latents.shape[0] - 1, count).round().long()
    clean = latents[index].float()
    draws = []
    for level in range(per_sample):
        sigma = torch.full((count,), (level + 0.5) / per_sample)
        noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32)
        s = sigma.view(count, *([1] * (latents.dim() - 1)))
        draws.append((index, (1 - s) * clean + s * noise, sigma * 1000, noise - clean))
    return draws


@torch.no_grad()
def evaluation_loss(flow_loss: Callable[..., torch.Tensor], draws: Sequence[tuple]) -> float:
    """Mean of `flow_loss(index, x_t, timestep, target)` over fixed `evaluation_draws`, without gradients."""
    return sum(float(flow_loss(*draw)) for draw in draws) / len(draws)


def run_training_steps(
    config,
    latents: torch.Tensor,
    flow_loss: Callable[..., torch.Tensor],
    params: Sequence[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler,
    generator: torch.Generator,
    shift: float,
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> tuple[list[float], bool]:
    """`config.steps` optimiser steps on random batches of `latents` noised by `sample_flow_matching`, gradients
    clipped to `config.max_grad_norm`; return (loss per step, whether `should_stop()` ended the run early)."""
    losses: list[float] = []
    for step in range(config.steps):
        if should_stop is not None and should_stop():
            return losses, True
        index = torch.randint(0, latents.shape[0], (config.batch_size,), generator=generator)
        noisy, timestep, target = sample_flow_matching(latents[index], generator, shift)
        loss = flow_loss(index, noisy, timestep, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, config.steps, losses[-1])
    return losses, False


def still_frames_check(frames: int) -> None:
    if frames < 1 or (frames - 1) % 4:
        raise ValueError(f"still clips must have 4n+1 frames (1 = a still image), got {frames}")


def transformer_forward(
    transformer,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    text: torch.Tensor,
    cross_attention: str | None = None,
) -> torch.Tensor:
    """One training forward of the stock Wan transformer over one shot and its caption.

    A clip of several latent frames runs inside `pipelines.attention.multishot_attention` as a one-shot scene with
    the preset's cross-attention mode, because that is how `MultiShotPipeline` will run the adapter: with `mmrope`
    the caption sits at the shot's temporal centre, which the stock forward does not do. One latent frame (an image)
    is the same either way, so it takes the stock forward."""
    if cross_attention is None or hidden_states.shape[2] == 1:
        return transformer(
            hidden_states=hidden_states, timestep=timestep, encoder_hidden_states=text, return_dict=False
        )[0]
    from pipelines.attention import multishot_attention
    from pipelines.layout import ShotLayout

    patch = transformer.config.patch_size
    _, _, frames, height, width = hidden_states.shape
    layout = ShotLayout.build([frames], height // patch[1], width // patch[2], [text.shape[1]])
    with multishot_attention(transformer, layout, cross_attention, "full"):
        return transformer(
            hidden_states=hidden_states, timestep=timestep, encoder_hidden_states=text, return_dict=False
        )[0]


def scheduler_shift(scheduler, default: float = 1.0) -> float:
    config = getattr(scheduler, "config", None)
    shift = getattr(config, "shift", None) if config is not None else None
    if getattr(config, "use_dynamic_shifting", False):
        return default
    return float(shift) if shift else default


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Write through `write(tmp_path)` to a temporary file in the same folder, fsync, then rename: a crash leaves
    either the old file or none, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def trigger_text(trigger: str) -> str:
    """What a LoRA learns to answer to in captions: the trigger without its angle brackets ('<mara>' -> 'mara'),
    which a subword tokenizer can always spell (a word-level one that does not know it gets it as a whole token:
    `adapters.lora.add_trigger_words`); textual inversion adds the bracketed token itself instead."""
    text = trigger.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text.replace("_", " ").strip() or trigger


def captions_per_view(captions: Sequence[str], pictures: int, variants: int, adapter: str) -> list[str]:
    """One caption per augmented view (`augmented_views` order: every picture's `variants` views in a row) from one
    caption for all pictures or one per picture."""
    captions = list(captions) * pictures if len(captions) == 1 else list(captions)
    if len(captions) != pictures:
        raise ValueError(
            f"{pictures} pictures but {len(captions)} captions for the {adapter}: give one caption or one per picture"
        )
    return [caption for caption in captions for _ in range(max(1, variants))]


def training_captions(trigger: str, description: str = "", count: int = 1) -> list[str]:
    """The caption of a reference without one of its own: the trigger (as captions write it, `<mara>`: each trainer
    turns it into what it reads) and the description, if any."""
    base = f"{trigger}, {description.strip()}" if description.strip() else trigger
    return [base] * count


def cosine_lr(step: int, total: int, warmup: int = 0) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to 10%."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
