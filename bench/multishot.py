"""Multi-shot generation benchmark: per-step time and peak memory of MultiShotPipeline against stock WanPipeline.

    .venv/bin/python bench/multishot.py                      # small random-weight config on CPU (1 thread)
    .venv/bin/python bench/multishot.py --preset wan2.1-t2v-1.3b --random-weights    # GPU: 480p, 81 frames, bf16
    .venv/bin/python bench/multishot.py --preset wan2.2-t2v-a14b --random-weights    # GPU: two 14B experts
    .venv/bin/python bench/multishot.py --preset holocine-sparse --random-weights    # GPU: HoloCine conventions
    .venv/bin/python bench/multishot.py --two-experts --max-shots 2 --iters 1 --rounds 1   # CPU smoke, 2 experts
    .venv/bin/python bench/multishot.py --holocine --max-shots 2 --iters 1 --rounds 1      # CPU smoke, HoloCine
    .venv/bin/python bench/multishot.py --preset wan2.1-t2v-14b --random-weights --speed   # backends, compile, ...

`--speed` measures the speed settings instead (`pipelines.acceleration`): s/step for every attention backend this
machine has (the others are listed with what they need), the same with regional compile, with fp8 weight storage,
and a whole 50-step scene with each step cache against none (full block passes counted; random weights move
differently from trained ones between steps, so the cache rows show the mechanics, the demo model's bench/
step_cache.py the quality). Each row gives the card's FLOP bound (matmul + attention FLOP / `--peak-tflops`).

What is measured: one denoising step of the real pipeline (conditional + unconditional transformer pass and the
scheduler step), timed between consecutive `callback_on_step_end` calls: after `--warmup` steps the least of
`--iters`, and the least of `--rounds` such measurements, alternated with the row's baseline. Peak memory is what
the step adds on top of the loaded weights (CUDA: max allocated; CPU: peak RSS, reset through
/proc/self/clear_refs). Every shot has the same length, so "stock one by one" is the stock `diffusers.WanPipeline`
step of one shot times the number of shots. TFLOP/s counts matmuls and attention (only the query-key pairs each
mode visits) per measured second; on a GPU it is also given as a share of `--peak-tflops`. Prints Markdown tables
for docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import platform
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pipelines import MultiShotPipeline, ShotLayout, ShotSpec  # noqa: E402

CAPTIONS = [
    "wide shot, mara climbs the stairs of the lighthouse",
    "close-up, mara lights the lamp",
    "the sea under a stormy sky at night",
    "medium shot, tom walks on the coast in the rain",
]

# WanTransformer3DModel config of Wan-AI/Wan2.1-T2V-1.3B-Diffusers (transformer/config.json).
WAN_1_3B = dict(
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
    eps=1e-6,
    rope_max_seq_len=1024,
)
# Wan-AI/Wan2.2-T2V-A14B-Diffusers transformer/config.json (both experts; HoloCine's experts have the same size).
WAN_A14B = dict(WAN_1_3B, num_attention_heads=40, ffn_dim=13824, num_layers=40)
TWO_EXPERTS = ("wan2.2-t2v-a14b", "holocine-sparse")


# WanTransformer3DModel config of Wan-AI/Wan2.1-T2V-14B-Diffusers (transformer/config.json).
WAN_14B = dict(WAN_1_3B, num_attention_heads=40, ffn_dim=13824, num_layers=40)
PRESET_CONFIGS = {"wan2.1-t2v-1.3b": WAN_1_3B, "wan2.1-t2v-14b": WAN_14B, **dict.fromkeys(TWO_EXPERTS, WAN_A14B)}


def build_components(args) -> dict:
    """Random-weight components: a small CPU config, or the real preset's transformer size (text encoder and VAE
    stay small: they are not part of a denoising step)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from pipelines.tiny import build_word_tokenizer

    torch.manual_seed(0)
    if args.preset:
        transformer_config = dict(PRESET_CONFIGS[args.preset])
    else:
        transformer_config = dict(
            WAN_1_3B, num_attention_heads=4, attention_head_dim=32, text_dim=64, ffn_dim=512, num_layers=4
        )
    text_dim = transformer_config["text_dim"]
    tokenizer = build_word_tokenizer()
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=max(len(tokenizer), 64),
            d_model=text_dim,
            d_kv=64,
            d_ff=256,
            num_layers=1,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    ).eval()
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1).eval()
    experts = []
    for _ in range(2 if args.two_experts else 1):
        # Built in the run dtype on the device: two 14B experts in float32 would not fit beside each other.
        default_dtype = torch.get_default_dtype()
        torch.set_default_dtype(args.dtype)
        try:
            with torch.device(args.device):
                experts.append(WanTransformer3DModel(**transformer_config).eval())
        finally:
            torch.set_default_dtype(default_dtype)
    components = {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder.to(args.device, args.dtype),
        "vae": vae.to(args.device),
        "transformer": experts[0].to(args.dtype),
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
    }
    if args.two_experts:
        components.update(transformer_2=experts[1].to(args.dtype), boundary_ratio=0.875)
    if args.holocine:
        from pipelines.holocine import HoloCineFlowScheduler

        components["scheduler"] = HoloCineFlowScheduler(shift=5.0)
    return components


_LIBC = ctypes.CDLL("libc.so.6")


def _rss_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


class StepClock:
    """Callback that timestamps every denoising step: wall time on CUDA (after a sync), process CPU time on CPU
    (with one thread it is the step's compute cost; wall time on a shared CPU swings with other jobs)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stamps: list[float] = []

    def __call__(self, pipe, step, timestep, tensors):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.stamps.append(time.perf_counter())
        else:
            self.stamps.append(time.process_time())
        return {}


def measure(run, args) -> tuple[float, float]:
    """(least seconds per step, peak MiB above the loaded weights) of `run(callback, steps)`."""
    gc.collect()
    if args.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        _LIBC.malloc_trim(0)  # hand freed heap back first, so the baseline is the weights, not old garbage
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter (VmHWM)
        base = _rss_kib("VmRSS") * 1024
    clock = StepClock(args.device)
    run(clock, args.warmup + args.iters + 1)
    peak = torch.cuda.max_memory_allocated() if args.device.type == "cuda" else _rss_kib("VmHWM") * 1024
    steps = [b - a for a, b in zip(clock.stamps, clock.stamps[1:], strict=False)][args.warmup :]
    # The least time of the timed steps: on a shared machine the others only add other jobs' interference.
    return min(steps), max(0.0, (peak - base) / 2**20)


def step_tflop(config: dict, layout: ShotLayout, self_mode: str, cross_mode: str, text_uncond: int) -> float:
    """Matmul + attention TFLOP of one step (two transformer passes), from the layout the pipeline runs."""
    d = config["num_attention_heads"] * config["attention_head_dim"]
    f, layers = config["ffn_dim"], config["num_layers"]
    s = layout.num_video_tokens
    if self_mode == "full":
        self_pairs = s * s
    else:
        keys = layout.self_attention_keys(self_mode)
        self_pairs = sum(
            (layout.token_spans[k][1] - layout.token_spans[k][0]) * (v[1] - v[0] if isinstance(v, tuple) else len(v))
            for k, v in keys.items()
        )

    def one_pass(text_len: int, cross_pairs: int) -> float:
        linear = 2 * (s * 4 * d * d + s * 2 * d * d + text_len * 2 * d * d + s * 2 * d * f)
        attention = 4 * d * (self_pairs + cross_pairs)
        return layers * (linear + attention)

    if cross_mode == "window":
        cond_pairs = sum(
            (b - a) * (layout.global_length + layout.caption_lengths[k]) for k, (a, b) in layout.token_spans.items()
        )
    else:
        cond_pairs = s * layout.num_text_tokens
    head = config["attention_head_dim"]
    t_dim = head - 4 * (head // 6)
    # mm-rope with a global caption scores head + t_dim channels (padded to 8) in QK^T; A.V keeps the head size.
    qk = (head + t_dim + (-(head + t_dim) % 8)) / head if cross_mode == "mmrope" and layout.global_length else 1
    mmrope_factor = (qk + 1) / 2
    total = one_pass(layout.num_text_tokens, cond_pairs * mmrope_factor) + one_pass(text_uncond, s * text_uncond)
    return total / 1e12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESET_CONFIGS), help="real model size (needs --random-weights)")
    parser.add_argument("--two-experts", action="store_true", help="small config with a second expert (CPU smoke)")
    parser.add_argument("--holocine", action="store_true", help="small config run as HoloCine (CPU smoke)")
    parser.add_argument("--random-weights", action="store_true", help="random weights at the preset's size")
    parser.add_argument("--device", default=None, help="default: cuda with --preset, else cpu")
    parser.add_argument("--max-shots", type=int, default=4)
    parser.add_argument("--frames", type=int, default=None, help="frames per shot (4n+1)")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--max-sequence-length", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=None, help="timed steps per measurement (4 CPU, 2 GPU)")
    parser.add_argument("--rounds", type=int, default=None, help="alternated measurements per row (3 CPU, 1 GPU)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (the CPU table uses 1)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="card's dense bf16 peak (H100 SXM: 989)")
    parser.add_argument("--speed", action="store_true", help="attention backends, compile, fp8 and step caches")
    parser.add_argument("--shots", type=int, default=2, help="shots of the --speed scene")
    parser.add_argument("--scene-steps", type=int, default=50, help="steps of the --speed cache scene (0: none)")
    args = parser.parse_args()
    if args.preset and not args.random_weights:
        parser.error("--preset needs --random-weights (real weights are not part of the benchmark)")
    torch.set_num_threads(args.threads)
    args.holocine = args.holocine or args.preset == "holocine-sparse"
    args.two_experts = args.two_experts or args.holocine or args.preset in TWO_EXPERTS
    if args.preset:
        defaults = dict(device="cuda", frames=81, height=480, width=832, max_sequence_length=512, iters=2, rounds=1)
        args.dtype = torch.bfloat16
    else:
        defaults = dict(device="cpu", frames=33, height=128, width=128, max_sequence_length=32, iters=4, rounds=3)
        args.dtype = torch.float32
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.device = torch.device(args.device)

    components = build_components(args)
    config = dict(components["transformer"].config)
    if args.holocine:
        from pipelines.holocine import HoloCinePipeline

        pipe = HoloCinePipeline(**components, cross_attention="window", self_attention="sparse")
    else:
        pipe = MultiShotPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    from diffusers import WanPipeline

    stock = WanPipeline(**components)
    stock.set_progress_bar_config(disable=True)
    common = dict(
        height=args.height, width=args.width, guidance_scale=5.0, max_sequence_length=args.max_sequence_length
    )

    def shots(k: int) -> list[ShotSpec]:
        return [ShotSpec(CAPTIONS[i % len(CAPTIONS)], args.frames) for i in range(k)]

    def run_pipe(k, self_mode, cross_mode, **extra):
        def run(clock, steps):
            return pipe(
                shots=shots(k),
                num_inference_steps=steps,
                cross_attention=cross_mode,
                self_attention=self_mode,
                generator=torch.Generator().manual_seed(0),
                output_type="latent",
                callback_on_step_end=clock,
                **common,
                **extra,
            )

        return run

    def run_stock(clock, steps):
        stock(
            prompt=CAPTIONS[0],
            num_frames=args.frames,
            num_inference_steps=steps,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
            callback_on_step_end=clock,
            **common,
        )

    def layout_of(k: int, cross_mode: str) -> ShotLayout:
        n = (args.frames - 1) // 4 + 1
        # HoloCine: one prompt of max_sequence_length tokens shared by the shots (FLOP counts are approximate).
        text = args.max_sequence_length // k if args.holocine else args.max_sequence_length
        return ShotLayout.build([n] * k, args.height // 16, args.width // 16, [text] * k)

    name = f"{args.preset} random weights" if args.preset else "small random-weight Wan (dim 128, 4 layers)"
    if args.two_experts:
        name += ", two experts (boundary 0.875; one expert per step, stock WanPipeline with the same two)"
    self_modes = ("full", "sparse") if args.holocine else ("full", "sparse", "isolated")
    cross_modes = ("window",) if args.holocine else ("window", "mmrope", "full")
    regen_modes = ("inpaint",) if args.two_experts else ("inpaint", "context")
    device_name = (
        f"{torch.cuda.get_device_name()}, wall time"
        if args.device.type == "cuda"
        else f"CPU, {args.threads} thread(s), process CPU time"
    )
    tokens = layout_of(1, "window").num_video_tokens
    print(f"Multi-shot pipeline: {name}, {args.width}x{args.height}, {args.frames} frames/shot ({tokens} tokens), ")
    print(f"captions padded to {args.max_sequence_length}, CFG, {args.dtype}, {device_name}, ")
    print(f"torch {torch.__version__}, {platform.machine()}; best of {args.iters} steps x {args.rounds} rounds\n")

    if args.speed:
        speed_tables(args, pipe, config, run_pipe, layout_of)
        return

    measure(run_stock, args)  # first calls allocate caches and encode captions: keep them out of the table
    warm_cross = "window" if args.holocine else "full"
    measure(run_pipe(args.max_shots, "full", warm_cross, global_caption="a lighthouse at night"), args)
    stock_step, stock_mem = measure(run_stock, args)
    stock_flop = step_tflop(config, layout_of(1, "full"), "full", "full", args.max_sequence_length)
    gpu = args.device.type == "cuda"
    flop_col = " | % of peak" if gpu else ""

    def alternate(run, other) -> tuple[float, float, float]:
        """(s/step, peak MiB) of `run` and s/step of `other`, measured alternately `--rounds` times (least of each):
        on a shared CPU other jobs' load drifts minute to minute, and both sides then see the same drift."""
        seconds, mem, other_s = float("inf"), 0.0, float("inf")
        for _ in range(args.rounds):
            s_run, m_run = measure(run, args)
            seconds, mem = min(seconds, s_run), max(mem, m_run)
            other_s = min(other_s, measure(other, args)[0])
        return seconds, mem, other_s

    def paired(run) -> tuple[float, float, float]:
        """`alternate(run, stock)`; on a GPU the one stock measurement is steady enough."""
        if gpu:
            return (*measure(run, args), stock_step)
        return alternate(run, run_stock)

    def flop_cell(tflop: float, seconds: float) -> str:
        rate = tflop / seconds
        return f"{rate:.3f}" + (f" | {100 * rate / args.peak_tflops:.0f}%" if gpu else "")

    print("### Joint generation vs stock WanPipeline one shot at a time (cross-attention `window`)\n")
    print(f"| shots | self-attention | s/step | stock one-by-one s/step | ratio | peak MiB | TFLOP/s{flop_col} |")
    print("|---|---|---|---|---|---|---|" + ("---|" if gpu else ""))
    print(
        f"| 1 | stock WanPipeline | {stock_step:.3f} | {stock_step:.3f} | 1.00 | {stock_mem:.0f} | "
        f"{flop_cell(stock_flop, stock_step)} |"
    )
    for k in range(1, args.max_shots + 1):
        for self_mode in self_modes:
            seconds, mem, stock_s = paired(run_pipe(k, self_mode, "window"))
            tflop = step_tflop(config, layout_of(k, "window"), self_mode, "window", args.max_sequence_length)
            baseline = k * stock_s
            print(
                f"| {k} | {self_mode} | {seconds:.3f} | {baseline:.3f} | {seconds / baseline:.2f} | {mem:.0f} | "
                f"{flop_cell(tflop, seconds)} |"
            )

    k = args.max_shots
    print(f"\n### Cross-attention modes, {k} shots, self-attention `sparse` (+ a global caption)\n")
    print(f"| cross-attention | s/step | ratio to stock one-by-one | peak MiB | TFLOP/s{flop_col} |")
    print("|---|---|---|---|---|" + ("---|" if gpu else ""))
    for cross_mode in cross_modes:
        seconds, mem, stock_s = paired(run_pipe(k, "sparse", cross_mode, global_caption="a lighthouse at night"))
        layout = layout_of(k, cross_mode).with_text([args.max_sequence_length] * k, args.max_sequence_length)
        tflop = step_tflop(config, layout, "sparse", cross_mode, args.max_sequence_length)
        print(
            f"| {cross_mode} | {seconds:.3f} | {seconds / (k * stock_s):.2f} | {mem:.0f} | "
            f"{flop_cell(tflop, seconds)} |"
        )

    print(f"\n### Regenerating one of {k} shots vs generating the scene (cross-attention `window`)\n")
    print("| self-attention | regenerate mode | scene s/step | regenerate 1 shot s/step | ratio | regen peak MiB |")
    print("|---|---|---|---|---|---|")
    n = (args.frames - 1) // 4 + 1
    context = [torch.randn(1, 16, n, args.height // 8, args.width // 8) for _ in range(k)]
    for self_mode in self_modes:
        for mode in regen_modes:
            regen, mem, scene = alternate(
                run_pipe(k, self_mode, "window", regenerate=[1], context_latents=context, regenerate_mode=mode),
                run_pipe(k, self_mode, "window"),
            )
            print(f"| {self_mode} | {mode} | {scene:.3f} | {regen:.3f} | {regen / scene:.2f} | {mem:.0f} |")


def speed_tables(args, pipe, config, run_pipe, layout_of) -> None:
    """s/step per attention backend, with compile and fp8 storage, then a whole scene per step cache."""
    from pipelines.acceleration import (
        ATTENTION_BACKENDS,
        Acceleration,
        BlockPassCounter,
        _backend_problem,
        apply_runtime,
        compile_blocks,
        store_in_fp8,
    )

    k, device = args.shots, args.device.type
    layout = layout_of(k, "window")
    tflop = step_tflop(config, layout, "sparse", "window", args.max_sequence_length)
    bound = tflop / args.peak_tflops
    run = run_pipe(k, "sparse", "window")
    print(f"### Speed settings, {k} shots, self-attention `sparse`, cross-attention `window`\n")
    print(f"FLOP per step {tflop:.3g} TFLOP; at {args.peak_tflops:.0f} TFLOP/s the bound is {bound:.3g} s/step.\n")
    print("| attention | compile | weights | s/step | x bound | peak MiB |")
    print("|---|---|---|---|---|---|")
    usable = []
    for backend in ATTENTION_BACKENDS:
        problem = _backend_problem(backend, device)
        if problem:
            print(f"| {backend} | - | - | not run: {problem} | | |")
            continue
        usable.append(backend)

    def row(backend, compiled, weights):
        apply_runtime(pipe, Acceleration(attention_backend=backend), 1, "bench")
        measure(run, args)  # warm: kernels chosen, blocks compiled for this backend
        seconds, mem = measure(run, args)
        print(f"| {backend} | {compiled} | {weights} | {seconds:.3f} | {seconds / bound:.2f} | {mem:.0f} |")

    for backend in usable:
        row(backend, "no", str(args.dtype).removeprefix("torch."))
    if device == "cuda":
        compile_blocks(pipe)
        for backend in usable:
            row(backend, "blocks", str(args.dtype).removeprefix("torch."))
    store_in_fp8(pipe, args.dtype)
    for backend in usable:
        row(backend, "blocks" if device == "cuda" else "no", "fp8 e4m3 storage")

    if not args.scene_steps:
        return
    print(f"\n### Step caches, one {args.scene_steps}-step scene of {k} shots (attention {usable[-1]})\n")
    print("| step cache | full block passes | s/scene | x faster |")
    print("|---|---|---|---|")
    baseline = None
    for setting in (
        Acceleration(),
        Acceleration(step_cache="first-block", cache_threshold=0.1),
        Acceleration(step_cache="first-block", cache_threshold=0.2),
        Acceleration(step_cache="taylorseer", cache_interval=3),
    ):
        apply_runtime(pipe, replace_backend(setting, usable[-1]), args.scene_steps, "bench")
        clock = StepClock(args.device)
        with BlockPassCounter(pipe.transformer) as counter:
            started = time.perf_counter()
            run(clock, args.scene_steps)
            if device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
        baseline = baseline or seconds
        strength = setting.threshold or setting.interval
        name = setting.step_cache + (f" {strength}" if strength else "")
        print(f"| {name} | {counter.passes} | {seconds:.1f} | {baseline / seconds:.2f} |")


def replace_backend(setting, backend):
    from dataclasses import replace

    return replace(setting, attention_backend=backend)


if __name__ == "__main__":
    main()
