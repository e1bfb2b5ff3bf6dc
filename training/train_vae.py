"""Train the demo model's small `AutoencoderKLWan` on frames of the procedural world.

    python -m training.train_vae --out /work/runs/demo/vae --minutes 25 --seed 0
    python -m training.train_vae --out /work/runs/demo/vae --minutes 20 --decoder-only   # encoder frozen
    # sharpen the shipped decoder on whole shots (the latent space stays the shipped transformer's):
    python -m training.train_vae --out RUNS/decoder --init assets/demo/vae --decoder-only --clip-frames 17
        --batch 2 --lr 3e-4 --minutes 95

Clips are 5 frames (the causal VAE's image frame + one 4-frame group) drawn from random scenes, so both halves of
the causal encoder are trained; `--clip-frames 17` trains on whole shots instead (what the decoder needs for its
temporal cache: a decoder sharpened on 5-frame clips got worse at motion, docs/QUALITY.md, "Known limits").
Loss: L1 + MSE on pixels in [-1, 1], figure pixels weighted up, a tiny KL. On a GPU, `training/train_gpu.py`
runs the same loss on whole 17-frame shots. `--decoder-only` keeps the encoder (and so the latent space the
transformer is trained in) fixed and sharpens the decoder.
Resumable: re-running with the same --out continues from `last.pt`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from training.world import COLOURS, DEFAULT_FIGURE_SCALE, FIGURE_SCALES, INK, recorded_figure_scale, sample_scene

VAE_CONFIG = dict(
    base_dim=16,
    z_dim=16,
    dim_mult=[1, 2, 2, 4],
    num_res_blocks=1,
    attn_scales=[],
    temperal_downsample=[False, True, True],
    dropout=0.0,
)
# 4x spatial compression (16x16 latents at 64x64): keeps the outline of a wide shot's figure, which 8x blurs into
# a blob (docs/QUALITY.md, "The model"); the shipped autoencoder's (`train_gpu --vae-compression 4`).
VAE_CONFIGS = {
    8: VAE_CONFIG,
    4: {**VAE_CONFIG, "dim_mult": [1, 2, 4], "temperal_downsample": [True, True], "scale_factor_spatial": 4},
}
CLIP_FRAMES = 5
# Exported weights (vae/ and transformer/ folders) are stored in float16: half the bytes of the 40 MB budget, and
# every loader asks for float32 (the evaluation reads the same either way, docs/QUALITY.md, "The model").
WEIGHTS_DTYPE = torch.float16
SHOT_FRAMES = 17  # frames of one world shot (training.world.render_shot's default)


def build_vae(seed: int = 0, config: dict | None = None):
    """A fresh VAE of `config` (default: the shipped layout; a checkpoint's own "config" to rebuild it)."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    return AutoencoderKLWan(**(config or VAE_CONFIG))


def frames_to_pixels(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames `[B, F, H, W, 3]` (the world's) -> the autoencoder's input `[B, 3, F, H, W]` in [-1, 1]."""
    return frames.permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)


def sample_clips(
    rng: np.random.Generator,
    batch: int,
    size: int = 64,
    crop: int | None = None,
    frames: int = CLIP_FRAMES,
    figure_scale: str = DEFAULT_FIGURE_SCALE,
) -> torch.Tensor:
    """[B, 3, frames, crop, crop] in [-1, 1]: random windows of `frames` frames (5, or 17 = whole shots) of random
    shots, randomly cropped (the VAE is convolutional: crops buy four times the steps for the same compute)."""
    if (frames - 1) % 4 or not 1 <= frames <= SHOT_FRAMES:
        raise ValueError(
            f"clip frames must be 4k+1 between 1 and {SHOT_FRAMES} (the causal VAE's layout), got {frames}"
        )
    clips = []
    crop = crop or size
    for _ in range(batch):
        scene = sample_scene(int(rng.integers(0, 2**31 - 1)), num_shots=2, size=size, figure_scale=figure_scale)
        shot = scene.frames[int(rng.integers(len(scene.frames)))]
        start = int(rng.integers(0, shot.shape[0] - frames + 1))
        y, x = (int(rng.integers(0, (size - crop) // 8 + 1)) * 8 for _ in range(2))
        clips.append(shot[start : start + frames, y : y + crop, x : x + crop])
    return frames_to_pixels(torch.from_numpy(np.stack(clips))).contiguous()


def late_lr_scale(elapsed: float, budget: float) -> float:
    """Learning-rate factor of a time-budgeted run: the last fifth at a tenth of the rate, so the weights settle
    instead of ending on a noisy step."""
    return 0.1 if elapsed > 0.8 * budget else 1.0


# Figure pixels are a few percent of a wide shot: without extra weight the autoencoder learns the background and
# blurs the figures away, which is what the detector (and the film-maker) reads.
FIGURE_WEIGHT = 5.0
# With --balance-figures: the figure share of a close-up shot (wide 2.6%, medium 8.3%, measured on 300 shots), and
# the most a small figure's weight is raised (a crop holding a sliver of a figure).
CLOSE_UP_AREA = 0.20
BALANCE_CAP = 8.0


def figure_mask(x: torch.Tensor) -> torch.Tensor:
    """`[B, 1, F, H, W]` 1.0 where a pixel of `x` (`[B, 3, F, H, W]` in [-1, 1]) is a character colour or pattern ink.
    The world draws exact palette colours, so a small tolerance finds them."""
    palette = torch.tensor([*COLOURS.values(), INK], dtype=x.dtype, device=x.device).div(127.5).sub(1.0)
    dist = (x.unsqueeze(1) - palette.view(1, -1, 3, 1, 1, 1)).abs().amax(dim=2)  # [B, P, F, H, W]
    return (dist.amin(dim=1, keepdim=True) < 4 / 127.5).to(x.dtype)


def figure_weights(mask: torch.Tensor, balance: bool = False) -> torch.Tensor:
    """Per-pixel loss weights from the figure mask `[B, 1, F, H, W]`: 1 for the background, FIGURE_WEIGHT on the
    figure. With `balance`, a clip's figure weight is also multiplied by CLOSE_UP_AREA / its figure area (between 1
    and BALANCE_CAP): a wide shot's figure (2.6% of the frame) then weighs about what a close-up's (20%) does.
    Unbalanced, the 8x and 4x autoencoders both blur wide-shot figures into circles (docs/QUALITY.md, "The model")."""
    if not balance:
        return 1.0 + (FIGURE_WEIGHT - 1.0) * mask
    area = mask.mean(dim=(1, 2, 3, 4), keepdim=True)
    scale = (CLOSE_UP_AREA / area.clamp_min(1e-6)).clamp(1.0, BALANCE_CAP)
    return 1.0 + (FIGURE_WEIGHT - 1.0) * mask * scale


def reconstruction_loss(
    vae, x: torch.Tensor, kl: float = 0.0, mask: torch.Tensor | None = None, balance: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, l1) of one autoencoding pass: figure-weighted L1 + MSE on pixels, a tiny KL on the posterior.
    `mask` is the figure mask (default: found in `x` by its palette colours); `balance`: see `figure_weights`."""
    posterior = vae.encode(x).latent_dist
    # The mean, not a sample: with a tiny KL weight a sampled z is mostly noise, and the decoder ignores it.
    recon = vae.decode(posterior.mode()).sample
    weight = figure_weights(figure_mask(x) if mask is None else mask, balance)
    err = recon - x
    loss = ((err.abs() + err.pow(2)) * weight).mean() / weight.mean()
    if kl:
        loss = loss + kl * posterior.kl().mean()
    return loss, err.abs().mean()


def permute_colours(x: torch.Tensor, gen: torch.Generator, share: float = 0.5) -> torch.Tensor:
    """Swap the colour channels of a random `share` of the clips (`[B, 3, F, H, W]`): the autoencoder also sees
    colours the world does not use, so a character adapter's new colour (world.NEW_COLOURS) survives the VAE."""
    perms = torch.stack([torch.randperm(3, generator=gen) for _ in range(len(x))])
    keep = torch.rand(len(x), generator=gen) >= share
    perms[keep] = torch.arange(3)
    index = perms.to(x.device)[:, :, None, None, None].expand_as(x)
    return torch.gather(x, 1, index)


def trainable_parameters(vae, decoder_only: bool) -> list[torch.nn.Parameter]:
    """What an autoencoder run trains: everything, or with `decoder_only` the decoder side alone (the encoder, and
    so the latent space a transformer was trained in, is frozen)."""
    if not decoder_only:
        return list(vae.parameters())
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    return list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())


def autoencoder_step(
    vae,
    x: torch.Tensor,
    optimizer,
    params,
    kl: float,
    colour_gen: torch.Generator,
    permute: float = 0.5,
    balance: bool = False,
) -> tuple[float, float]:
    """One optimiser step on clips `x` (figure mask taken before the colour swap): returns (loss, l1)."""
    mask = figure_mask(x)
    x = permute_colours(x, colour_gen, permute)
    loss, l1 = reconstruction_loss(vae, x, kl, mask, balance)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    return loss.item(), l1.item()


def save_autoencoder(path: Path, vae, optimizer, step: int, decoder_only: bool, config: dict, rng=None) -> None:
    """A resumable checkpoint (`train_vae`'s format: the cache, the decoder run and the export read it), written
    atomically; weights on the CPU."""
    state = {"vae": {k: v.cpu() for k, v in vae.state_dict().items()}, "optimizer": optimizer.state_dict()}
    state |= {"step": step, "rng": rng, "decoder_only": decoder_only, "config": config}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def layout_config(config) -> dict:
    """The layout arguments (`build_vae`'s config) within a saved autoencoder's full diffusers config."""
    return {key: config[key] for key in VAE_CONFIG} | {"scale_factor_spatial": config["scale_factor_spatial"]}


def load_vae_weights(path: Path) -> tuple[dict, dict]:
    """(layout config, state dict) of an exported `vae/` folder or a `train_vae` checkpoint file: what a run that
    starts from it (`train_gpu --init-vae`) rebuilds with `build_vae`."""
    if path.is_dir():
        from diffusers import AutoencoderKLWan

        vae = AutoencoderKLWan.from_pretrained(path, local_files_only=True, torch_dtype=torch.float32)
        return layout_config(vae.config), vae.state_dict()
    checkpoint = torch.load(path, weights_only=False, map_location="cpu")
    return checkpoint.get("config") or VAE_CONFIG, checkpoint["vae"]  # early checkpoints: the shipped layout


@torch.no_grad()
def round_to_stored(model) -> None:
    """Round `model`'s parameters to what WEIGHTS_DTYPE stores (kept as float32): a run that ends on these has its
    checkpoint equal to its export, and an encoder frozen here gives exactly the latent space that ships."""
    for param in model.parameters():
        param.copy_(param.to(WEIGHTS_DTYPE))


def save_model_folder(model, dest: Path) -> None:
    """`model.save_pretrained(dest)` with the weights stored as WEIGHTS_DTYPE; the model in memory is untouched
    (casting it would also cast the modules diffusers keeps in float32, and warn about it)."""
    from safetensors.torch import load_file, save_file

    model.save_pretrained(dest, safe_serialization=True)
    for path in Path(dest).glob("*.safetensors"):
        weights = load_file(path)
        half = {
            name: value.to(WEIGHTS_DTYPE) if value.is_floating_point() else value for name, value in weights.items()
        }
        save_file(half, path, metadata={"format": "pt"})


def save_vae_folder(
    state: dict, config: dict, latents_mean: list[float], latents_std: list[float], dest: Path
) -> None:
    """Write weights of layout `config` as a diffusers `vae/` folder with the latent statistics the transformer
    trains on, stored as WEIGHTS_DTYPE. Written beside `dest` first and swapped in, so an interrupted export never
    leaves a half-written model."""
    import shutil

    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan(**config, latents_mean=list(latents_mean), latents_std=list(latents_std))
    vae.load_state_dict({name: value.cpu() for name, value in state.items()})
    tmp, old = dest.with_name(dest.name + ".tmp"), dest.with_name(dest.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model_folder(vae, tmp)
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def export_vae(vae_state: dict, like: Path, dest: Path) -> None:
    """Write trained weights as an exported `vae/` folder with the layout and latent statistics of `like` (the
    folder the run started from: the transformer was trained on its latents)."""
    from diffusers import AutoencoderKLWan

    config = AutoencoderKLWan.load_config(like, local_files_only=True)
    save_vae_folder(vae_state, layout_config(config), config["latents_mean"], config["latents_std"], dest)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--minutes", type=float, default=25.0, help="stop after this wall-clock time")
    parser.add_argument("--max-steps", type=int, default=10**9)
    parser.add_argument("--crop", type=int, default=None, help="train on random crops of this size (multiple of 8)")
    parser.add_argument("--kl", type=float, default=1e-6)
    parser.add_argument("--decoder-only", action="store_true")
    parser.add_argument("--permute", type=float, default=0.5, help="share of clips with their colour channels swapped")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--init", type=Path, default=None, help="start from an exported vae/ folder")
    parser.add_argument(
        "--compression", type=int, choices=sorted(VAE_CONFIGS), default=8, help="spatial factor (without --init)"
    )
    parser.add_argument("--save-every", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=0, help="steps of linear learning-rate warm-up")
    parser.add_argument("--clip-frames", type=int, default=CLIP_FRAMES, help="frames per clip (17: whole shots)")
    parser.add_argument("--balance-figures", action="store_true", help="small figures weigh what large ones do")
    parser.add_argument(
        "--figure-scale",
        choices=sorted(FIGURE_SCALES),
        default=None,
        help="world.FIGURE_SCALES (default: the one the --init folder records, else " + DEFAULT_FIGURE_SCALE + ")",
    )
    parser.add_argument(
        "--export-to", type=Path, default=None, help="with --init: write the result as a vae/ folder here"
    )
    args = parser.parse_args(argv)
    args.figure_scale = args.figure_scale or recorded_figure_scale(args.init)  # a tuned decoder's own scale
    if args.export_to is not None and args.init is None:
        parser.error("--export-to needs --init: the exported folder takes its latent statistics from it")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    # A run from an exported folder keeps that folder's layout (a 4x folder stays 4x whatever --compression says).
    init_config, init_state = load_vae_weights(args.init) if args.init is not None else (None, None)
    config = init_config or VAE_CONFIGS[args.compression]
    vae = build_vae(args.seed, config)
    params = trainable_parameters(vae, args.decoder_only)
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    step, rng_state = 0, None
    last = args.out / "last.pt"
    init = args.out / "init.pt"  # --decoder-only starts from the joint run's weights placed here
    if last.exists():
        ckpt = torch.load(last, weights_only=False)
        vae.load_state_dict(ckpt["vae"])
        if ckpt.get("decoder_only", False) == args.decoder_only:
            optimizer.load_state_dict(ckpt["optimizer"])
            step, rng_state = ckpt["step"], ckpt["rng"]
        print(f"resumed from {last} at step {step}", flush=True)
    elif init.exists():
        vae.load_state_dict(torch.load(init, weights_only=False)["vae"])
        print(f"initialised from {init}", flush=True)
    elif init_state is not None:  # an exported model's vae/ folder
        vae.load_state_dict(init_state)
        print(f"initialised from {args.init}", flush=True)
    rng = np.random.default_rng(args.seed + 1000 * (1 + int(args.decoder_only)))
    if rng_state is not None:
        rng.bit_generator.state = rng_state
    torch.manual_seed(args.seed + step)
    colour_gen = torch.Generator().manual_seed(args.seed + step)

    def save():
        save_autoencoder(last, vae, optimizer, step, args.decoder_only, config, rng.bit_generator.state)

    start, log = time.time(), []
    vae.train()
    while step < args.max_steps and time.time() - start < args.minutes * 60:
        x = sample_clips(rng, args.batch, crop=args.crop, frames=args.clip_frames, figure_scale=args.figure_scale)
        for group in optimizer.param_groups:
            warm = min(1.0, (step + 1) / args.warmup) if args.warmup else 1.0  # fine-tuning: no jolt from a fresh Adam
            group["lr"] = args.lr * warm * late_lr_scale(time.time() - start, args.minutes * 60)
        kl = 0.0 if args.decoder_only else args.kl
        loss, l1 = autoencoder_step(vae, x, optimizer, params, kl, colour_gen, args.permute, args.balance_figures)
        step += 1
        log.append(l1)
        if step % 50 == 0:
            rate = (time.time() - start) / max(1, len(log))
            print(f"step {step} l1 {np.mean(log[-50:]):.4f} loss {loss:.4f} {rate:.2f}s/step", flush=True)
        if step % args.save_every == 0:
            save()
    save()
    (args.out / "done.json").write_text(json.dumps({"step": step, "l1": float(np.mean(log[-50:] or [0]))}))
    print(f"saved {last} at step {step}", flush=True)
    if args.export_to is not None:
        export_vae(vae.state_dict(), args.init, args.export_to)
        print(f"exported to {args.export_to}", flush=True)


if __name__ == "__main__":
    main()
