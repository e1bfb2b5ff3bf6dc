"""Character adapters and faces: training speed and effect, adapter swap cost, import check, face analysis.

    .venv/bin/python bench/adapters.py [--steps 150] [--threads 1]

Prints markdown tables (copied into docs/PERFORMANCE.md). Random-weight models only: the numbers measure the
code paths (time per step, what a swap costs, how far an adapter pulls generation toward its reference), not
the quality a real Wan model would reach.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "characters"))

from adapters.common import encode_images  # noqa: E402
from adapters.embedding import EmbeddingTrainingConfig, train_embedding  # noqa: E402
from adapters.importing import check_compatibility, expected_linear_shapes  # noqa: E402
from adapters.loading import AdapterSpec, apply_adapters  # noqa: E402
from adapters.lora import LoraTrainingConfig, train_lora  # noqa: E402
from pipelines import MultiShotPipeline, ShotSpec  # noqa: E402
from pipelines.tiny import TinyWanConfig, build_tiny_components  # noqa: E402

SMALL = TinyWanConfig(text_dim=64, heads=4, head_dim=24, layers=4, ffn_dim=192)  # inner width 96


def reference_picture(size: int = 96):
    from PIL import Image

    array = np.zeros((size, size, 3), np.uint8)
    array[size // 6 : size * 5 // 6, size // 4 : size * 3 // 4] = (230, 40, 40)
    array[: size // 6] = (40, 40, 200)
    array[size // 3 : size // 2, size // 3 : size * 2 // 3] = (250, 220, 180)
    return Image.fromarray(array)


def generate_latent(pipe, caption: str, size: int, max_len) -> torch.Tensor:
    out = pipe(
        shots=[ShotSpec(caption=caption, num_frames=1)],
        height=size,
        width=size,
        num_inference_steps=4,
        guidance_scale=1.0,
        max_sequence_length=max_len,
        output_type="latent",
        generator=torch.Generator().manual_seed(1),
    )
    return out.latents[0][0]


def training_rows(steps: int) -> list[str]:
    rows = []
    for label, config, size in (("tiny (dim 24, 2 blocks)", None, 32), ("small (dim 96, 4 blocks)", SMALL, 64)):
        for kind in ("lora", "embedding"):
            components = build_tiny_components(config)
            picture = reference_picture()
            reference = encode_images(components["vae"], [picture.resize((size, size))])[0]
            pipe = MultiShotPipeline(**components, cross_attention="full")
            pipe.set_progress_bar_config(disable=True)
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "adapter.safetensors"
                started = time.perf_counter()
                if kind == "lora":
                    cfg = LoraTrainingConfig.for_preset("tiny", steps=steps, width=size, height=size)
                    result = train_lora(components, [picture], "<mara>", path, config=cfg)
                    caption = "mara"
                    spec = AdapterSpec(1, "lora", path, "<mara>")
                else:
                    cfg = EmbeddingTrainingConfig.for_preset("tiny", steps=steps, width=size, height=size)
                    result = train_embedding(components, [picture], "<mara>", path, config=cfg)
                    caption = "<mara>"
                    spec = AdapterSpec(2, "embedding", path, "<mara>")
                seconds = time.perf_counter() - started
                base = generate_latent(pipe, "mara", size, 16)
                applied = apply_adapters(pipe, [spec])
                adapted = generate_latent(pipe, applied.substitute(caption), size, 16)
                error_base = float(((base - reference) ** 2).mean())
                error_adapted = float(((adapted - reference) ** 2).mean())
                rank = cfg.rank if kind == "lora" else "-"
                rows.append(
                    f"| {label} | {kind} | {rank} | {steps} | {1000 * seconds / steps:.1f} | "
                    f"{path.stat().st_size / 1024:.1f} | {result.eval_loss_before:.3f} -> "
                    f"{result.eval_loss_after:.3f} | {error_base:.3f} -> {error_adapted:.3f} |"
                )
                applied.unload()
    return rows


def swap_rows() -> list[str]:
    from safetensors.torch import save_file

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "adapters"))
    from adapter_helpers import random_lora_state

    components = build_tiny_components(SMALL)
    pipe = MultiShotPipeline(**components, cross_attention="full")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        specs = []
        for index in range(3):
            path = Path(folder) / f"{index}.safetensors"
            save_file(random_lora_state(components["transformer"], rank=8, seed=index), str(path))
            specs.append(AdapterSpec(index, "lora", path, f"<c{index}>"))
        cases = [
            ("load 1 LoRA (nothing loaded)", specs[:1]),
            ("same 1 LoRA again (cached)", specs[:1]),
            ("add a 2nd LoRA (1 cached)", specs[:2]),
            ("3 LoRAs (2 cached)", specs[:3]),
            ("back to 1 LoRA (2 removed)", specs[:1]),
            ("no LoRA (all removed)", []),
        ]
        for label, wanted in cases:
            started = time.perf_counter()
            apply_adapters(pipe, wanted)
            rows.append(f"| {label} | {1000 * (time.perf_counter() - started):.1f} |")
    return rows


def scope_rows(repeats: int = 3) -> list[str]:
    """A 3-shot scene on `small` (4 steps, CFG) with no LoRA, one LoRA on the whole scene, the same LoRA scoped to
    one shot (`adapter_shots`, per-token masks on every LoRA layer): CPU time per denoising step, best of `repeats`."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "adapters"))
    from adapter_helpers import random_lora_state

    components = build_tiny_components(SMALL)
    pipe = MultiShotPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    shots = [ShotSpec(c, 9) for c in ("mara climbs the stairs", "tom waits by the door", "the sea at night")]

    def step_ms(**kwargs) -> float:
        best = float("inf")
        for _ in range(repeats):
            started = time.process_time()
            pipe(shots=shots, height=64, width=64, num_inference_steps=4, output_type="latent", **kwargs)
            best = min(best, (time.process_time() - started) / 4 * 1000)
        return best

    rows = [("no LoRA", step_ms())]
    with tempfile.TemporaryDirectory() as folder:
        from safetensors.torch import save_file

        path = Path(folder) / "mara.safetensors"
        save_file(random_lora_state(components["transformer"], rank=8, seed=0), str(path))
        spec = AdapterSpec(0, "lora", path, "<mara>")
        apply_adapters(pipe, [spec])
        name = spec.adapter_name
        rows.append(("1 LoRA on the whole scene", step_ms()))
        rows.append(("1 LoRA scoped to shot 1 (`adapter_shots`)", step_ms(adapter_shots={name: [0]})))
    return [f"| {label} | {ms:.1f} |" for label, ms in rows]


def import_rows() -> list[str]:
    wan_1_3b = dict(
        patch_size=(1, 2, 2),
        num_attention_heads=12,
        attention_head_dim=128,
        in_channels=16,
        out_channels=16,
        text_dim=4096,
        freq_dim=256,
        ffn_dim=8960,
        num_layers=30,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
    )
    wan_14b = dict(wan_1_3b, num_attention_heads=40, ffn_dim=13824, num_layers=40)
    rows = []
    for label, config in (("Wan2.1 1.3B", wan_1_3b), ("Wan2.1 14B", wan_14b)):
        started = time.perf_counter()
        shapes = expected_linear_shapes(config)
        meta_ms = 1000 * (time.perf_counter() - started)
        rank = 16
        state = {}
        for name, (fan_in, fan_out) in shapes.items():
            if name.endswith(("to_q", "to_k", "to_v", "to_out.0")) and name.startswith("blocks."):
                state[f"transformer.{name}.lora_A.weight"] = torch.zeros(rank, fan_in)
                state[f"transformer.{name}.lora_B.weight"] = torch.zeros(fan_out, rank)
        started = time.perf_counter()
        check_compatibility(state, config)
        check_ms = 1000 * (time.perf_counter() - started)
        size_mb = sum(t.numel() * 2 for t in state.values()) / 2**20  # as a bf16 file
        rows.append(f"| {label} | {len(shapes)} | {meta_ms:.0f} | {rank} | {size_mb:.0f} | {check_ms:.0f} |")
    return rows


def face_rows() -> list[str]:
    from face_models import build_face_pack, face_picture

    from studio.characters.faces import FaceAnalyzer

    with tempfile.TemporaryDirectory() as folder:
        analyzer = FaceAnalyzer(build_face_pack(Path(folder)))
        started = time.perf_counter()
        analyzer.detect(face_picture([(10, 10, 60, (250, 60, 60))]))
        load_ms = 1000 * (time.perf_counter() - started)
        picture = face_picture([(10, 10, 60, (250, 60, 60)), (80, 80, 40, (60, 60, 250))])
        started = time.perf_counter()
        for _ in range(20):
            analyzer.analyze_reference(picture)
        per_ms = 1000 * (time.perf_counter() - started) / 20
    return [f"| test models (128x128 SCRFD-style + ArcFace-style) | {load_ms:.0f} | {per_ms:.1f} |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads: {args.threads}\n")
    print(
        "| model | kind | rank | steps | ms/step | file KB | eval loss before -> after | latent MSE to reference "
        "without -> with |"
    )
    print("|---|---|---:|---:|---:|---:|---|---|")
    for row in training_rows(args.steps):
        print(row)
    print("\n| adapter swap on `small` (rank-8 LoRAs) | ms |\n|---|---:|")
    for row in swap_rows():
        print(row)
    print("\n| 3-shot scene on `small`, 9 frames a shot, 64x64, CFG | ms per step |\n|---|---:|")
    for row in scope_rows():
        print(row)
    print("\n| import check against | Linear layers | meta model ms | LoRA rank | LoRA MB (bf16) | shape check ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in import_rows():
        print(row)
    print("\n| face models | first call (load) ms | analyze_reference ms |\n|---|---:|---:|")
    for row in face_rows():
        print(row)


if __name__ == "__main__":
    main()
