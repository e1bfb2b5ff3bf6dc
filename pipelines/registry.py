"""Model presets: one entry per model family the studio can run, with the defaults a film-maker starts from.

The registry is data only. Loading components for a preset lives in `pipelines.loading`; the studio validates
projects against these numbers (frame range, resolution multiple) without loading any weights.
"""

from __future__ import annotations

from dataclasses import dataclass

CROSS_ATTENTION_MODES = ("mmrope", "window", "full")
SELF_ATTENTION_MODES = ("full", "sparse", "isolated")
REGENERATE_MODES = ("inpaint", "context")


@dataclass(frozen=True)
class ModelPreset:
    name: str  # registry key, also what projects and storyboard files store
    description: str  # one line shown in the UI
    source: str  # "code" (random weights built in code) | "bundled" (assets/) | "local" (folder or HF cache)
    repo_id: str | None  # Hugging Face repository looked up in the local cache only (local_files_only=True)
    width: int  # default output width in pixels
    height: int  # default output height in pixels
    fps: int  # frames per second the model was trained at
    default_frames: int  # frames of a new shot (4n+1)
    min_frames: int  # fewest frames a shot may have (4n+1)
    max_frames: int  # most frames a shot may have (4n+1)
    num_inference_steps: int  # default denoising steps
    guidance_scale: float  # default classifier-free guidance
    flow_shift: float  # flow-matching timestep shift of the scheduler
    cross_attention: str  # default cross-attention mode, one of CROSS_ATTENTION_MODES
    self_attention: str  # default self-attention mode, one of SELF_ATTENTION_MODES
    gap: int  # latent frames of empty RoPE time between shots
    max_sequence_length: int | None  # caption length the text encoder pads to; None = trimmed (demo model)
    regenerate_mode: str  # default single-shot regeneration mode, one of REGENERATE_MODES
    resolution_multiple: int  # width and height must be multiples of this (VAE stride x patch size)
    default_negative_prompt: str = ""  # negative prompt a new project starts with
    # Two-expert Wan2.2 A14B: low-noise expert's guidance and the switch point (fraction of the training timesteps);
    # the folder's model_index.json `boundary_ratio` wins over this one. None: a one-expert model.
    guidance_scale_2: float | None = None
    boundary_ratio: float | None = None
    # Single-file transformer checkpoints this preset knows by name, in expert order (high-noise first): found in
    # the preset's folder beside the diffusers config. Empty: any one `.safetensors` there (or a high/low pair).
    checkpoint_files: tuple[str, ...] = ()
    checkpoints_required: bool = False  # True: the named files ARE the model (a fine-tune of the folder's base)
    # True when the preset's flow_shift is part of the model (a fine-tune sampled with it) and replaces the shift
    # of the base folder's scheduler; otherwise the folder's own scheduler shift wins.
    force_flow_shift: bool = False
    downloads: str = ""  # what to download and where it goes (README Models section, UI model list)
    pipeline: str = "multishot"  # "multishot" (MultiShotPipeline) | "holocine" (pipelines.holocine.HoloCinePipeline)
    # More folder names under the model root holding this preset's diffusers folder (e.g. its base model's) and
    # the folders (relative to the model root) searched for its checkpoint files.
    also_in: tuple[str, ...] = ()
    checkpoint_dirs: tuple[str, ...] = ()
    transformer_params_b: float = 0.0  # parameters of one transformer (expert), billions (disk/VRAM estimates)
    text_encoder_params_b: float = 5.68  # UMT5-XXL encoder

    @property
    def num_experts(self) -> int:
        return 1 if self.boundary_ratio is None else 2


# HoloCine's negative prompt (their inference scripts' `scene_negative_prompt`, Wan's standard one).
HOLOCINE_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，"
    "残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，"
    "三条腿，背景人很多，倒着走"
)


# What every real Wan preset shares: weights from a local folder or the HF cache, 4n+1 frames from 5, captions padded
# to the 512 tokens Wan was trained on, window cross-attention and sparse inter-shot self-attention (training-free on
# stock Wan), inpaint regeneration (stock Wan has no per-token timesteps), Wan's usual negative prompt.
WAN_LOCAL = dict(
    source="local",
    min_frames=5,
    cross_attention="window",
    self_attention="sparse",
    gap=0,
    max_sequence_length=512,
    regenerate_mode="inpaint",
    resolution_multiple=16,
    default_negative_prompt="blurry, low quality, static, deformed, watermark, text",
)


def _holocine(variant: str) -> ModelPreset:
    """HoloCine's two expert files of one variant on the Wan2.2 T2V-A14B diffusers folder, with their defaults
    (HoloCine_inference_*.py: 480x832, 50 steps, guidance 5 for both experts, shift 5, switch at 0.875, up to 241
    frames a scene, saved at 15 fps)."""
    attention = "dense self-attention" if variant == "full" else "sparse inter-shot self-attention (faster)"
    return ModelPreset(
        **{**WAN_LOCAL, "self_attention": variant, "default_negative_prompt": HOLOCINE_NEGATIVE_PROMPT},
        name=f"holocine-{variant}",
        description=(
            f"HoloCine multi-shot scenes ({attention}) on Wan2.2 A14B: the cast stays the same across cuts; "
            "480p, up to 241 frames a scene; licence CC BY-NC-SA 4.0 (non-commercial)"
        ),
        repo_id="Wan-AI/Wan2.2-T2V-A14B-Diffusers",
        width=832,
        height=480,
        fps=15,
        default_frames=45,
        max_frames=241,
        num_inference_steps=50,
        guidance_scale=5.0,
        flow_shift=5.0,
        guidance_scale_2=5.0,
        boundary_ratio=0.875,
        checkpoint_files=(f"{variant}_high_noise.safetensors", f"{variant}_low_noise.safetensors"),
        checkpoints_required=True,
        force_flow_shift=True,
        pipeline="holocine",
        transformer_params_b=14.29,
        also_in=("wan2.2-t2v-a14b",),
        checkpoint_dirs=(f"holocine-{variant}", f"HoloCine_dit/{variant}", "HoloCine_dit"),
        downloads=(
            f"HoloCine's {variant}_high_noise.safetensors and {variant}_low_noise.safetensors go in "
            f"MODEL_DIR/holocine-{variant}/ or MODEL_DIR/HoloCine_dit/{variant}/ (the layout of their release)."
        ),
    )


PRESETS: dict[str, ModelPreset] = {
    "tiny": ModelPreset(
        name="tiny",
        description="Tiny random-weight Wan model built in code (tests and smoke runs; makes noise, not films)",
        source="code",
        repo_id=None,
        width=32,
        height=32,
        fps=8,
        default_frames=9,
        min_frames=1,
        max_frames=33,
        num_inference_steps=2,
        guidance_scale=5.0,
        flow_shift=7.0,
        cross_attention="mmrope",
        self_attention="full",
        gap=0,
        max_sequence_length=16,
        regenerate_mode="context",
        resolution_multiple=16,
    ),
    "demo": ModelPreset(
        name="demo",
        description="Shotline demo model: a small Wan-architecture model of a procedural film world (bundled)",
        source="bundled",
        repo_id=None,
        width=64,
        height=64,
        fps=8,
        default_frames=17,
        min_frames=5,
        max_frames=33,
        num_inference_steps=20,
        # Measured on held-out scenes (docs/QUALITY.md, "Inference settings"): guidance 1.5-2 beats 3 on motion,
        # coherent figures and consistency, and 4.5-6 lose on every attribute; a small closed-world model over-shoots.
        guidance_scale=2.0,
        flow_shift=3.0,
        cross_attention="mmrope",
        self_attention="full",
        gap=0,
        max_sequence_length=None,
        regenerate_mode="context",
        resolution_multiple=16,
    ),
    "wan2.1-t2v-1.3b": ModelPreset(
        **WAN_LOCAL,
        name="wan2.1-t2v-1.3b",
        description="Wan2.1 text-to-video 1.3B, 480p (weights from a local folder or the Hugging Face cache)",
        repo_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        width=832,
        height=480,
        fps=16,
        default_frames=81,
        max_frames=81,
        num_inference_steps=50,
        guidance_scale=5.0,
        flow_shift=3.0,
        transformer_params_b=1.42,
    ),
    "wan2.1-t2v-14b": ModelPreset(
        **WAN_LOCAL,
        name="wan2.1-t2v-14b",
        description="Wan2.1 text-to-video 14B, 720p (weights from a local folder or the Hugging Face cache)",
        repo_id="Wan-AI/Wan2.1-T2V-14B-Diffusers",
        width=1280,
        height=720,
        fps=16,
        default_frames=81,
        max_frames=81,
        num_inference_steps=50,
        guidance_scale=5.0,
        flow_shift=5.0,
        transformer_params_b=14.29,
    ),
    "wan2.2-ti2v-5b": ModelPreset(
        **{**WAN_LOCAL, "resolution_multiple": 32},
        name="wan2.2-ti2v-5b",
        description="Wan2.2 text/image-to-video 5B, 720p at 24 fps (weights from a local folder or the HF cache)",
        repo_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        width=1280,
        height=704,
        fps=24,
        default_frames=121,
        max_frames=121,
        num_inference_steps=50,
        guidance_scale=5.0,
        flow_shift=5.0,
        transformer_params_b=5.0,
    ),
    "wan2.2-t2v-a14b": ModelPreset(
        **WAN_LOCAL,
        name="wan2.2-t2v-a14b",
        description=(
            "Wan2.2 text-to-video A14B: two 14B experts (high-noise, then low-noise), 720p or 480p at 16 fps "
            "(weights from a local folder or the Hugging Face cache)"
        ),
        repo_id="Wan-AI/Wan2.2-T2V-A14B-Diffusers",
        width=1280,
        height=720,
        fps=16,
        default_frames=81,
        max_frames=81,
        # Wan2.2's own A14B config: 40 steps, guidance (3.0 low-noise, 4.0 high-noise), shift 12, boundary 0.875.
        num_inference_steps=40,
        guidance_scale=4.0,
        flow_shift=12.0,
        guidance_scale_2=3.0,
        boundary_ratio=0.875,
        checkpoint_files=(
            "wan2.2_t2v_high_noise_14B_fp16.safetensors",
            "wan2.2_t2v_low_noise_14B_fp16.safetensors",
        ),
        transformer_params_b=14.29,
    ),
    "holocine-full": _holocine("full"),
    "holocine-sparse": _holocine("sparse"),
}


def requirements(preset: ModelPreset) -> str:
    """What a preset needs on this machine, in one paragraph: files and where they go, disk, GPU memory per
    offload profile. Sizes are estimates from parameter counts at 2 bytes each (bf16), weights only: the
    activations of a long scene come on top."""
    if preset.source != "local":
        return "Nothing to download (" + ("built in code" if preset.source == "code" else "ships in assets/") + ")."
    experts = preset.num_experts * preset.transformer_params_b * 2
    text = preset.text_encoder_params_b * 2
    disk = experts + text + 0.5
    largest = max(preset.transformer_params_b * 2, text)
    folders = dict.fromkeys([preset.name, (preset.repo_id or "").split("/")[-1], *preset.also_in])
    places = ", ".join(f"MODEL_DIR/{name}/" for name in folders)
    needs = (
        f"Needs the diffusers folder {preset.repo_id} (model_index.json, tokenizer/, text_encoder/, vae/, scheduler/, "
        + ("transformer/ and transformer_2/" if preset.num_experts == 2 else "transformer/")
        + f") as {places} or in the Hugging Face cache"
    )
    if preset.checkpoints_required:
        needs += f", plus {' and '.join(preset.checkpoint_files)}. {preset.downloads}"
    elif preset.checkpoint_files:
        needs += f"; single-file checkpoints beside it ({', '.join(preset.checkpoint_files)}) may replace its weights."
    else:
        needs += "; a single-file .safetensors checkpoint beside it may replace its transformer weights."
    return (
        f"{needs} About {disk:.0f} GB on disk in bf16. GPU memory for the weights (estimated): offload none "
        f"~{experts + text + 0.5:.0f} GB, model ~{largest:.0f} GB (one model on the GPU at a time), sequential a "
        "few GB (slowest)."
    )


def get_preset(name: str) -> ModelPreset:
    """Look a preset up by name; an unknown name is an error that lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


def is_valid_frame_count(num_frames: int) -> bool:
    """Wan's causal VAE needs 4n+1 frames: the first frame is its own latent frame, then 4 frames per latent."""
    return num_frames >= 1 and (num_frames - 1) % 4 == 0
