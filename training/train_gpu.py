"""Train the whole demo model in one command on a GPU machine, within a budget of minutes rather than hours.

    bash training/gpu_session.sh OUT_DIR 480     # on the GPU machine: installs the wheel, runs this, packs
    python -m training.train_gpu all --out runs/gpu --device cuda --budget-seconds 480 \
        --text-encoder assets/demo/text_encoder

Every stage is bounded by wall-clock time so that the command ends inside its budget:

1. render a pool of shots of the world with every CPU core (before CUDA starts, since the workers fork);
2. train the VAE jointly on whole 17-frame shots with the figure-weighted loss of `training.train_vae`;
3. freeze the encoder and encode the pool: the shot pool and latent statistics `training.train_demo` trains from;
4. train the transformer (`train_demo train`, same loop as on the CPU) while a second process sharpens the decoder;
5. export the diffusers folder (`train_demo export`) to `<out>/demo`.

Two more commands, for budgets too short to train both halves (docs/QUALITY.md, "Training method"):

    python -m training.train_gpu vae --out OUT --budget-seconds 560 --init-vae assets/demo/vae
        # the autoencoder alone for the whole budget: joint, then the decoder alone; exported as OUT/vae
        # (--vae-seconds 0: the decoder alone, the encoder, its latent space and statistics kept)
    python -m training.train_gpu all ... --init-vae assets/demo/vae --vae-seconds 0 [--init-transformer assets/demo]
        # the transformer on that autoencoder's latent space (its latent statistics kept), the decoder going on
        # beside it; --init-transformer goes on from an exported model in the same latent space (the shipped one)
    python -m training.train_gpu continue --out OUT --seconds 200 ...
        # a second call on the same warm machine (`all --keep-pool` first): both go on, the export is redone

Everything lands in `--out` in the formats the CPU scripts use (`vae_joint.pt` and `vae_decoder.pt` as
`train_vae` checkpoints, `run/` as a `train_demo` run folder), so they resume from it on any machine. Shot `i` of
the pool is `sample_shot(default_rng([seed, i]))`, the same draw as `train_demo cache`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from training import train_demo
from training.train_vae import (
    VAE_CONFIGS,
    autoencoder_step,
    build_vae,
    frames_to_pixels,
    late_lr_scale,
    load_vae_weights,
    round_to_stored,
    save_autoencoder,
    save_vae_folder,
    trainable_parameters,
)
from training.world import DEFAULT_FIGURE_SCALE, FIGURE_SCALES, recorded_figure_scale, render_shot, sample_shot


def _render(job: tuple[int, int, str]) -> tuple[np.ndarray, dict]:
    seed, index, figure_scale = job
    labels = sample_shot(np.random.default_rng([seed, index]), figure_scale=figure_scale)
    frames = render_shot(labels, size=train_demo.SIZE, num_frames=train_demo.SHOT_FRAMES)
    return frames, asdict(labels)


def render_pool(
    seed: int, count: int, workers: int, figure_scale: str = DEFAULT_FIGURE_SCALE
) -> tuple[np.ndarray, list[dict]]:
    """uint8 `[N, F, H, W, 3]` frames and the labels of shots 0..N-1."""
    jobs = [(seed, i, figure_scale) for i in range(count)]
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = pool.map(_render, jobs, chunksize=64)
    else:
        results = [_render(job) for job in jobs]
    return np.stack([frames for frames, _ in results]), [labels for _, labels in results]


def train_autoencoder(
    vae,
    config: dict,
    pool: torch.Tensor,
    seconds: float,
    batch: int,
    lr: float,
    decoder_only: bool,
    seed: int,
    save_to: Path,
    resume: dict | None = None,
    balance: bool = False,
) -> int:
    """Train on random whole shots of `pool` (uint8, on the training device) for `seconds`; save a `train_vae`
    checkpoint to `save_to` (atomically, every few hundred steps and at the end). `resume`: a checkpoint of the same
    kind to go on from (optimizer state and step count). Returns the step reached."""
    params = trainable_parameters(vae, decoder_only)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    step = 0
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        step = resume["step"]
    gen = torch.Generator().manual_seed(seed + step)  # a resumed run draws other shots than its first part
    first, losses, start = step, [], time.time()

    vae.train()
    while time.time() - start < seconds:
        index = torch.randint(len(pool), (batch,), generator=gen).to(pool.device)
        for group in optimizer.param_groups:
            group["lr"] = lr * late_lr_scale(time.time() - start, seconds)
        x = frames_to_pixels(pool[index])
        _, l1 = autoencoder_step(vae, x, optimizer, params, 0.0 if decoder_only else 1e-6, gen, balance=balance)
        step += 1
        losses.append(l1)
        if step % 50 == 0:
            rate = (time.time() - start) / (step - first)
            kind = "decoder" if decoder_only else "vae"
            print(f"{kind} step {step} l1 {np.mean(losses[-50:]):.4f} {rate:.3f}s/step", flush=True)
        if step % 500 == 0:
            save_autoencoder(save_to, vae, optimizer, step, decoder_only, config)
    # The weights end as they will be stored: the joint run's encoder then encodes the pool in exactly the latent
    # space that ships, and every checkpoint equals its export.
    round_to_stored(vae)
    save_autoencoder(save_to, vae, optimizer, step, decoder_only, config)
    return step


@torch.no_grad()
def encode_pool(vae, pool: torch.Tensor, batch: int = 64) -> list[torch.Tensor]:
    """Posterior means `[C, n, h, w]` (half, CPU) of every shot, as `train_demo.encode_shot` computes them."""
    vae.eval()
    out = []
    for i in range(0, len(pool), batch):
        z = vae.encode(frames_to_pixels(pool[i : i + batch])).latent_dist.mode()
        out.extend(z.half().cpu())
    return out


def cmd_decoder(args) -> None:
    """Second process of stage 4: sharpen the decoder of `vae_joint.pt` on the pool while the transformer trains
    (`--resume`: go on from `vae_decoder.pt`, the `continue` stage)."""
    device = torch.device(args.device)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    pool = torch.from_numpy(np.load(args.out / "pool.npy")).to(device)
    start = torch.load(args.out / ("vae_decoder.pt" if args.resume else "vae_joint.pt"), weights_only=False)
    vae = build_vae(args.seed, start["config"])
    vae.load_state_dict(start["vae"])
    vae.to(device)
    steps = train_autoencoder(
        vae,
        start["config"],
        pool,
        args.seconds,
        args.vae_batch,
        args.lr / 2,
        True,
        args.seed + 1,
        args.out / "vae_decoder.pt",
        resume=start if args.resume else None,
        balance=args.balance_figures,
    )
    print(f"decoder: step {steps}", flush=True)


def train_side_by_side_and_export(args, seconds: float, report: dict, resume: bool, t0: float) -> None:
    """Stages 4 and 5: the transformer (resuming `run/last.pt` when there is one) and, in a second process, the
    decoder, for `seconds`; then export `<out>/demo` and write `<out>/report.json` (`total_s`: what earlier calls
    recorded plus the time since `t0`)."""
    earlier_s = report.get("total_s", 0.0)
    out, run = args.out, args.out / "run"
    decoder = None
    if not args.no_decoder:
        decoder_cmd = [sys.executable, "-m", "training.train_gpu", "decoder", "--out", str(out)]
        decoder_cmd += ["--device", args.device, "--seconds", str(seconds), "--seed", str(args.seed)]
        decoder_cmd += ["--vae-batch", str(args.vae_batch), "--lr", str(args.lr)] + ["--resume"] * resume
        decoder = subprocess.Popen(decoder_cmd + ["--balance-figures"] * args.balance_figures)
    t = time.time()
    train_args = ["train", "--run", str(run), "--device", args.device, "--minutes", str(seconds / 60)]
    train_args += ["--tokens", str(args.tokens), "--lr", str(args.transformer_lr), "--warmup", "300"]
    train_args += ["--schedule", args.transformer_schedule, "--unnamed", str(args.unnamed)]
    train_args += ["--save-every", "1000", "--seed", str(args.seed), "--ema", str(args.ema)]
    if args.patch is not None:
        train_args += ["--patch", str(args.patch)]
    if args.heads is not None:
        train_args += ["--heads", str(args.heads)]
    if args.ffn_dim is not None:
        train_args += ["--ffn-dim", str(args.ffn_dim)]
    if args.text_encoder is not None:
        train_args += ["--text-encoder", str(args.text_encoder)]
    if getattr(args, "init_transformer", None) is not None and not (run / "last.pt").exists():
        train_args += ["--init", str(args.init_transformer)]
        report["init_transformer"] = str(args.init_transformer)
    report["transformer_steps"] = train_demo.main(train_args)
    report["transformer_s"] = round(report.get("transformer_s", 0.0) + time.time() - t, 1)
    if decoder is not None:
        if decoder.wait() != 0:
            raise RuntimeError(f"the decoder process failed with exit code {decoder.returncode}")
        report["decoder_steps"] = torch.load(out / "vae_decoder.pt", weights_only=False)["step"]
    else:
        report.setdefault("decoder_steps", 0)
    # --no-decoder: the autoencoder as the joint stage left it, or as an earlier call's decoder process left it
    vae_checkpoint = out / "vae_decoder.pt" if (out / "vae_decoder.pt").exists() else out / "vae_joint.pt"

    # 5. export
    train_demo.export_demo(
        run, out / "demo", seed=args.seed, vae_checkpoint=vae_checkpoint, text_encoder=args.text_encoder
    )
    if torch.cuda.is_available() and args.device.startswith("cuda"):
        report["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    report["total_s"] = round(earlier_s + time.time() - t0, 1)
    info_path = out / "demo" / "training.json"
    info = json.loads(info_path.read_text()) | {"gpu_session": report}
    info["command"] = "python -m training.train_gpu (see docs/QUALITY.md)"
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    if not args.keep_pool:
        (out / "pool.npy").unlink()
    print(json.dumps(report), flush=True)


def cmd_continue(args) -> None:
    """More of stages 4 and 5 on a finished `all` run kept with `--keep-pool` (a second call on the same warm
    machine): the transformer and the decoder go on from their checkpoints, then the export is redone."""
    if not (args.out / "pool.npy").exists():
        raise SystemExit(f"{args.out / 'pool.npy'} is missing: run `all` with --keep-pool first")
    report = json.loads((args.out / "report.json").read_text())
    report["continue_s"] = report.get("continue_s", 0.0) + args.seconds
    train_side_by_side_and_export(args, args.seconds, report, resume=True, t0=time.time())


def render_and_upload(args, report: dict) -> tuple[torch.Tensor, list[dict]]:
    """Stage 1: render the pool (forked workers: before CUDA is initialised), save it for the decoder process and
    put it on the training device."""
    t = time.time()
    frames, labels = render_pool(args.seed, args.shots, args.workers or os.cpu_count() or 1, args.figure_scale)
    np.save(args.out / "pool.npy", frames)
    report["render_s"] = round(time.time() - t, 1)
    report["figure_scale"] = args.figure_scale
    print(f"rendered {len(frames)} shots in {report['render_s']}s", flush=True)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        report["gpu"] = torch.cuda.get_device_name(device)
    return torch.from_numpy(frames).to(device), labels


def train_joint(args, pool: torch.Tensor, seconds: float, report: dict):
    """Stage 2: the autoencoder, jointly, from scratch or going on from --init-vae (0 seconds keeps that one's
    latent space); saved as `<out>/vae_joint.pt`. Returns the model (on the training device) and its layout."""
    t = time.time()
    config = VAE_CONFIGS[args.vae_compression]
    if args.init_vae is not None:
        config, state = load_vae_weights(args.init_vae)
        report["init_vae"] = str(args.init_vae)
    vae = build_vae(args.seed, config)
    if args.init_vae is not None:
        vae.load_state_dict(state)
    vae.to(pool.device)
    report["vae_steps"] = train_autoencoder(
        vae,
        config,
        pool,
        seconds,
        args.vae_batch,
        args.lr,
        False,
        args.seed,
        args.out / "vae_joint.pt",
        balance=args.balance_figures,
    )
    report["vae_s"] = round(time.time() - t, 1)
    return vae, config


def kept_latent_statistics(args) -> tuple[list[float], list[float]] | None:
    """The latent statistics of --init-vae when its encoder is kept (a vae/ folder and no joint training): a
    transformer trained in that latent space (--init-transformer, or the next session's) was normalised with exactly
    these, so they are not re-estimated from this session's pool."""
    if args.init_vae is None or not args.init_vae.is_dir() or args.vae_seconds != 0:
        return None
    config = json.loads((args.init_vae / "config.json").read_text())
    return config["latents_mean"], config["latents_std"]


def cmd_vae(args) -> None:
    """The autoencoder alone, for a whole budget: joint for --vae-seconds, then the decoder alone for what is left
    of the budget; exported with its latent statistics as `<out>/vae` (an `--init-vae` for a later `all`)."""
    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"device": args.device, "shots": args.shots, "stage": "vae"}
    pool, _ = render_and_upload(args, report)
    vae, config = train_joint(args, pool, args.vae_seconds, report)
    t = time.time()
    decoder_seconds = max(1.0, args.budget_seconds - (time.time() - t0) - args.reserve_seconds)
    report["decoder_steps"] = train_autoencoder(
        vae,
        config,
        pool,
        decoder_seconds,
        args.vae_batch,
        args.lr / 2,
        True,
        args.seed + 1,
        args.out / "vae_decoder.pt",
        balance=args.balance_figures,
    )
    report["decoder_s"] = round(time.time() - t, 1)
    mean, std = kept_latent_statistics(args) or train_demo.latent_statistics(encode_pool(vae, pool))
    save_vae_folder(vae.state_dict(), config, mean, std, args.out / "vae")
    (args.out / "pool.npy").unlink()
    report["total_s"] = round(time.time() - t0, 1)
    (args.out / "vae" / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report), flush=True)


def cmd_all(args) -> None:
    t0 = time.time()
    out, run = args.out, args.out / "run"
    run.mkdir(parents=True, exist_ok=True)
    report: dict = {"device": args.device, "shots": args.shots}
    # 1. and 2. the pool, then the autoencoder jointly
    pool, labels = render_and_upload(args, report)
    vae, _ = train_joint(args, pool, min(args.vae_seconds, args.budget_seconds * 0.3), report)
    device = pool.device

    # 3. the latent space is fixed from here: encode the pool into train_demo's shot-pool format
    t = time.time()
    joint = torch.load(out / "vae_joint.pt", weights_only=False)
    latents = encode_pool(vae, pool)
    encoder_state = {"vae": joint["vae"], "step": joint["step"], "source": str(out / "vae_joint.pt")}
    torch.save(encoder_state, run / "vae_encoder.pt")
    kept = kept_latent_statistics(args)  # the --init-vae latent space's statistics, else measured on this pool
    source = str(args.init_vae) if kept is not None else str(out / "vae_joint.pt")
    pool_state = {"latents": latents, "labels": labels}
    train_demo.save_shot_pool(run, pool_state, source, args.figure_scale, kept)
    del vae, pool
    if device.type == "cuda":
        torch.cuda.empty_cache()
    report["encode_s"] = round(time.time() - t, 1)

    # 4. and 5. transformer and decoder side by side, for what is left of the budget, then the export
    left = args.budget_seconds - (time.time() - t0) - args.reserve_seconds
    train_side_by_side_and_export(args, max(10.0, min(args.transformer_seconds, left)), report, False, t0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("all", "vae", "continue", "decoder"):
        p = sub.add_parser(name)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--device", default="cuda")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--vae-batch", type=int, default=16, help="whole 17-frame shots per autoencoder step")
        p.add_argument("--lr", type=float, default=1e-3, help="autoencoder learning rate (the decoder: half)")
        p.add_argument("--balance-figures", action="store_true", help="autoencoder: small figures weigh as large")
    for name in ("all", "continue"):
        p = sub.choices[name]
        p.add_argument("--tokens", type=int, default=16000, help="video tokens per transformer step")
        p.add_argument("--transformer-lr", type=float, default=1e-3)
        p.add_argument(
            "--transformer-schedule",
            choices=train_demo.LR_SCHEDULES,
            default="constant",
            help="transformer learning rate after the warm-up (cosine: down to a twentieth by the call's end)",
        )
        p.add_argument("--ema", type=float, default=0.999)
        p.add_argument(
            "--unnamed", type=train_demo.share, default=0.0, help="train_demo train --unnamed: repeat shots unnamed"
        )
        layout = "default: train_demo.TRANSFORMER_LAYOUTS' for the autoencoder's latents"
        p.add_argument("--patch", type=int, default=None, help=f"transformer spatial patch ({layout})")
        p.add_argument("--heads", type=int, default=None, help=f"transformer heads, 32 wide each ({layout})")
        p.add_argument("--ffn-dim", type=int, default=None, help=f"transformer feed-forward width ({layout})")
        p.add_argument("--text-encoder", type=Path, default=None, help="a saved text_encoder/ folder to train with")
        p.add_argument("--keep-pool", action="store_true", help="keep <out>/pool.npy for a later `continue`")
        p.add_argument(
            "--no-decoder",
            action="store_true",
            help="the whole card to the transformer: no decoder process beside it (two processes time-slice the card)",
        )
    for name in ("all", "vae"):
        p = sub.choices[name]
        p.add_argument("--budget-seconds", type=float, default=500.0, help="wall clock for the whole command")
        p.add_argument("--reserve-seconds", type=float, default=30.0, help="kept back for the export")
        p.add_argument("--shots", type=int, default=8000, help="shots in the pool")
        p.add_argument(
            "--figure-scale",
            choices=sorted(FIGURE_SCALES),
            default=None,
            help="world.FIGURE_SCALES (default: the one --init-vae records, else " + DEFAULT_FIGURE_SCALE + ")",
        )
        p.add_argument("--workers", type=int, default=0, help="render processes (0: one per CPU core)")
        p.add_argument("--vae-seconds", type=float, default=150.0, help="joint autoencoder training (0: none)")
        p.add_argument(
            "--init-vae", type=Path, default=None, help="start from this vae/ folder or checkpoint (its own layout)"
        )
        p.add_argument(
            "--vae-compression", type=int, choices=sorted(VAE_CONFIGS), default=8, help="spatial factor of a new VAE"
        )
    sub.choices["all"].add_argument(
        "--init-transformer",
        type=Path,
        default=None,
        help="start the transformer from this exported model folder (an earlier session's demo/, trained in the "
        "latent space of --init-vae with --vae-seconds 0)",
    )
    sub.choices["all"].add_argument(
        "--transformer-seconds", type=float, default=10**6, help="at most this (else: what is left)"
    )
    sub.choices["continue"].add_argument("--seconds", type=float, required=True, help="transformer and decoder")
    sub.choices["decoder"].add_argument("--seconds", type=float, required=True)
    sub.choices["decoder"].add_argument("--resume", action="store_true", help="go on from <out>/vae_decoder.pt")
    args = parser.parse_args(argv)
    if args.command in ("all", "vae") and args.figure_scale is None:
        args.figure_scale = recorded_figure_scale(args.init_vae)  # the scale its decoder was trained on
    {"all": cmd_all, "vae": cmd_vae, "continue": cmd_continue, "decoder": cmd_decoder}[args.command](args)


if __name__ == "__main__":
    main()
