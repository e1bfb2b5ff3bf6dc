"""Character LoRA: peft low-rank adapters on the transformer's attention projections, trained on the character's
reference pictures as one-frame videos with Wan's flow-matching objective, saved in diffusers' LoRA format.

    result = train_lora(components, images, trigger="<mara>", output_path="mara.safetensors", preset="tiny")
    pipe.load_lora_weights(result.path, adapter_name="mara")   # any WanLoraLoaderMixin pipeline
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image

from adapters.common import (
    LORA_TARGET_MODULES,
    SHOTLINE_METADATA_KEY,
    ProgressCallback,
    StopCheck,
    TrainingResult,
    atomic_write,
    augmented_views,
    captions_per_view,
    cosine_lr,
    encode_images,
    evaluation_draws,
    evaluation_loss,
    load_image,
    preset_training_values,
    prompt_text_embeddings,
    run_training_steps,
    scheduler_shift,
    still_frames_check,
    training_captions,
    transformer_forward,
    trigger_text,
)

TRAINING_ADAPTER_NAME = "shotline_training"
# How the text-encoder row of a trigger word the tokenizer did not know is made (recorded with the LoRA).
TRIGGER_WORD_ROWS = "sha256-seeded normal, scaled to the vocabulary rows' mean norm (v1)"


def _unknown_to(tokenizer, word: str) -> bool:
    unk = getattr(tokenizer, "unk_token_id", None)
    return unk is not None and unk in tokenizer(word, add_special_tokens=False).input_ids


def _normalized(tokenizer, word: str) -> str:
    """The word as the tokenizer's normalizer sees it ('Kai' -> 'kai' on a lower-casing one)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    normalizer = getattr(backend, "normalizer", None)
    return normalizer.normalize_str(word) if normalizer is not None else word


@torch.no_grad()
def trigger_word_row(word: str, weight: torch.Tensor, vocabulary_rows: int) -> torch.Tensor:
    """The input-embedding row of an added trigger word: a function of the word and of the vocabulary's own rows
    only (never of the token's id, of added tokens or of embeddings), so every pipeline that adds the word, in
    whatever order, gives it the same vector. fp32, on the CPU."""
    seed = int(hashlib.sha256(word.encode("utf-8")).hexdigest()[:15], 16)
    vector = torch.randn(weight.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    rows = weight[:vocabulary_rows]
    # Mean row norm of the real vocabulary, in chunks (UMT5's table is 256k x 4096) and in fp32.
    norm = sum(float(rows[i : i + 4096].float().norm(dim=1).sum()) for i in range(0, rows.shape[0], 4096))
    norm = norm / max(1, rows.shape[0]) or 1.0
    return vector * (norm / float(vector.norm()))


def added_trigger_words(tokenizer, text: str) -> list[str]:
    """The words of `text` that stand as trigger words added by `add_trigger_words` (one whole, non-special added
    token each), whenever they were added."""
    added = getattr(tokenizer, "added_tokens_decoder", {})
    words = []
    for word in dict.fromkeys(text.split()):
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) == 1 and ids[0] in added and not added[ids[0]].special:
            words.append(word)
    return words


def add_trigger_words(tokenizer, text_encoder, text: str) -> list[str]:
    """Make every word of a LoRA's trigger `text` that `tokenizer` only spells with its unknown token one whole
    token, whose text-encoder input row is `trigger_word_row(word)`; return the words added now.

    Without this a word-level tokenizer (the demo model's) reads every unknown word as `<unk>`: any typo or other
    LoRA character's name would read as this character. Tokenizers that spell the word without `<unk>` (Wan's
    sentencepiece one always does) are left untouched, and so is a word added before: re-adding is a no-op. The
    new token gets a fresh id, so no vocabulary word's row and no embedding's trained row is ever written.
    """
    from tokenizers import AddedToken

    added = []
    for word in dict.fromkeys(text.split()):
        if not _unknown_to(tokenizer, word):
            continue
        vocabulary_rows = min(tokenizer.vocab_size, text_encoder.get_input_embeddings().weight.shape[0])
        # Whole word only ("kaiser" stays unknown) and matched after normalisation ("Kai" is the same token).
        tokenizer.add_tokens([AddedToken(word, single_word=True, normalized=True, special=False)])
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) != 1:  # a tokenizer whose normalizer the added token cannot match: nothing more to do
            continue
        token_id = ids[0]
        if token_id < tokenizer.vocab_size:
            raise RuntimeError(f"trigger word {word!r} got the id of a vocabulary word ({token_id})")
        if len(tokenizer) > text_encoder.get_input_embeddings().weight.shape[0]:
            # Only grow (spare rows are used first); the new rows' random init must not move the caller's RNG.
            with torch.random.fork_rng(devices=[]):
                text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        weight = text_encoder.get_input_embeddings().weight
        row = trigger_word_row(_normalized(tokenizer, word), weight, vocabulary_rows)
        with torch.no_grad():
            weight[token_id] = row.to(weight.device, weight.dtype)
        added.append(word)
    return added


@dataclass
class LoraTrainingConfig:
    rank: int = 8
    alpha: float = 8.0
    steps: int = 300
    learning_rate: float = 1e-3
    batch_size: int = 1
    width: int = 64  # training resolution: the preset's frame size
    height: int = 64
    max_sequence_length: int | None = None  # caption padding, the preset's convention
    augment_variants: int = 4  # views per reference: original, mirror, random crops
    target_modules: tuple[str, ...] = LORA_TARGET_MODULES
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    seed: int = 0
    gradient_checkpointing: bool = False  # trade compute for memory on large models
    # References are shown as clips held still for this many frames (4n+1; 1 = images). A model trained only on
    # clips (the demo model) learns a character from a still clip far better than from a one-frame video.
    still_frames: int = 1
    cross_attention: str | None = None  # the preset's mode: multi-frame training runs as the pipeline will

    @classmethod
    def for_preset(cls, preset, **overrides) -> LoraTrainingConfig:
        """Defaults from a `pipelines.registry.ModelPreset` (or a preset name), then explicit overrides."""
        # Real Wan models keep every block's activations for the backward pass otherwise: recompute them instead.
        values = preset_training_values(
            preset, "lora", overrides, lambda p: {"gradient_checkpointing": p.source == "local"}
        )
        return cls(**values)

    def validate(self) -> None:
        if self.rank < 1 or self.rank > 256:
            raise ValueError(f"LoRA rank must be between 1 and 256, got {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"LoRA alpha must be positive, got {self.alpha}")
        if self.steps < 1 or self.steps > 100_000:
            raise ValueError(f"training steps must be between 1 and 100000, got {self.steps}")
        if not 0 < self.learning_rate <= 1:
            raise ValueError(f"learning rate must be in (0, 1], got {self.learning_rate}")
        if self.width % 16 or self.height % 16:
            raise ValueError(f"training size must be a multiple of 16, got {self.width}x{self.height}")
        still_frames_check(self.still_frames)


@dataclass
class PreparedSamples:
    """Reference views encoded once: training then never runs the VAE or the text encoder again."""

    latents: torch.Tensor  # [N, C, n, h, w] (n = 1 for still images)
    text: list[torch.Tensor]  # per view, [L, D] (L: the caption's own length, or max_sequence_length)
    captions: list[str] = field(default_factory=list)


@torch.no_grad()
def prepare_samples(
    components: dict, images: Sequence, captions: Sequence[str], config: LoraTrainingConfig
) -> PreparedSamples:
    pictures = [load_image(image) for image in images]
    if not pictures:
        raise ValueError("a LoRA needs at least one reference picture: add references to the character first")
    view_captions = captions_per_view(captions, len(pictures), config.augment_variants, "LoRA")
    views = augmented_views(pictures, config.width, config.height, config.augment_variants, config.seed)
    latents = encode_images(components["vae"], views, frames=config.still_frames)
    # Each distinct caption once, on its own: batching the T5 encoder over every view would cost memory for
    # nothing, and padding captions of different lengths together would change what an unpadded model sees.
    encoded = {
        caption: prompt_text_embeddings(
            components["tokenizer"], components["text_encoder"], [caption], config.max_sequence_length
        )[0]
        .float()
        .cpu()
        for caption in dict.fromkeys(view_captions)
    }
    return PreparedSamples(latents=latents, text=[encoded[c] for c in view_captions], captions=view_captions)


def batch_text(samples: PreparedSamples, index: torch.Tensor) -> torch.Tensor:
    """[B, L, D] caption embeddings of the chosen samples, zero-padded to the longest of the batch."""
    rows = [samples.text[int(i)] for i in index]
    length = max(row.shape[0] for row in rows)
    return torch.stack([torch.cat([row, row.new_zeros(length - row.shape[0], row.shape[1])]) for row in rows])


def lora_config(config: LoraTrainingConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        init_lora_weights="gaussian",
        target_modules=list(config.target_modules),
    )


def save_lora(path: Path, transformer, adapter_name: str, info: dict) -> Path:
    """Write the adapter's weights as diffusers' Wan LoRA file: `transformer.`-prefixed peft keys plus the peft
    config under `lora_adapter_metadata` (so `load_lora_weights` rebuilds rank and alpha exactly), and Shotline's
    own record (trigger, preset, training settings) under its own header key."""
    from diffusers import WanPipeline
    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    layers = get_peft_model_state_dict(transformer, adapter_name=adapter_name)
    tensors = {
        k: v.detach().to("cpu", torch.float32).contiguous()
        for k, v in WanPipeline.pack_weights(layers, "transformer").items()
    }
    peft_config = transformer.peft_config[adapter_name].to_dict()
    peft_config = {k: sorted(v) if isinstance(v, set) else v for k, v in peft_config.items()}
    metadata = {
        "format": "pt",
        LORA_ADAPTER_METADATA_KEY: json.dumps({f"transformer.{k}": v for k, v in peft_config.items()}, sort_keys=True),
        SHOTLINE_METADATA_KEY: json.dumps(info, sort_keys=True),
    }
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def train_lora(
    components: dict,
    images: Sequence[Image.Image | bytes | str | Path],
    trigger: str,
    output_path: str | Path,
    config: LoraTrainingConfig | None = None,
    description: str = "",
    preset: str | None = None,
    captions: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
    record: dict | None = None,
) -> TrainingResult:
    """Train a character LoRA on `components["transformer"]` and write it to `output_path`.

    `captions`: one per reference picture (or one for all); the trigger in them (`<kai>`) becomes its caption word
    (`kai`), as storyboard captions do at generation. Default: the trigger word and the description.

    The transformer is left as it was found (the training adapter is deleted afterwards, even on error).
    `progress(step, total, loss)` is called after every step; when `should_stop()` turns true the run ends
    within one step and nothing is written (`result.stopped`, `result.path is None`). `record`: the caller's own
    account of the run (JSON), written into the file's header as `record` (what the studio checks a shipped LoRA
    against before using it).
    """
    config = config or (LoraTrainingConfig.for_preset(preset) if preset else LoraTrainingConfig())
    config.validate()
    transformer = components["transformer"]
    # Before any caption is encoded: the trigger word must not be read as the tokenizer's unknown token.
    word_text = trigger_text(trigger)
    add_trigger_words(components["tokenizer"], components["text_encoder"], word_text)
    words_added = added_trigger_words(components["tokenizer"], word_text)
    # Captions name the character by its trigger, as storyboard captions do; the LoRA sees what they become.
    captions = [c.replace(trigger, word_text) for c in (captions or training_captions(trigger, description))]
    samples = prepare_samples(components, images, captions, config)

    device = next(transformer.parameters()).device
    dtype = next(transformer.parameters()).dtype
    shift = scheduler_shift(components.get("scheduler"), default=3.0)
    generator = torch.Generator().manual_seed(config.seed)

    was_training = transformer.training
    requires_grad = {name: p.requires_grad for name, p in transformer.named_parameters()}
    prior_adapters = list(transformer.active_adapters()) if getattr(transformer, "peft_config", None) else []
    transformer.requires_grad_(False)
    # The LoRA's random init (lora_A gaussian, lora_B zero) from the run's seed, without moving the caller's RNGs.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        transformer.add_adapter(lora_config(config), adapter_name=TRAINING_ADAPTER_NAME)
    transformer.set_adapter(TRAINING_ADAPTER_NAME)
    params = [p for n, p in transformer.named_parameters() if TRAINING_ADAPTER_NAME in n]
    for p in params:
        p.data = p.data.float()  # train the low-rank factors in fp32 even when the base model runs in bf16
        p.requires_grad_(True)
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, config.steps, config.warmup_steps))
    draws = evaluation_draws(samples.latents, config.seed)

    def flow_loss(index: torch.Tensor, noisy: torch.Tensor, timestep: torch.Tensor, target: torch.Tensor):
        text = batch_text(samples, index).to(device, dtype)
        prediction = transformer_forward(
            transformer, noisy.to(device, dtype), timestep.to(device), text, config.cross_attention
        )
        return torch.nn.functional.mse_loss(prediction.float(), target.to(device))

    try:
        eval_before = evaluation_loss(flow_loss, draws)  # lora_B starts at zero: this is the base model's loss
        transformer.train()
        losses, stopped = run_training_steps(
            config, samples.latents, flow_loss, params, optimizer, scheduler, generator, shift, progress, should_stop
        )
        path = None
        info = {
            "kind": "lora",
            "trigger": trigger,
            "trigger_text": word_text,
            # Words of trigger_text the tokenizer did not know: added as whole tokens with the rows of
            # TRIGGER_WORD_ROWS (apply_adapters adds them the same way before rendering).
            "trigger_words_added": words_added,
            **({"trigger_word_rows": TRIGGER_WORD_ROWS} if words_added else {}),
            "preset": preset,
            # Trained on components["transformer"]: Wan2.2 A14B's high-noise expert; applied there only.
            "experts": ["transformer"],
            "captions": sorted(set(samples.captions)),
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
            "steps_done": len(losses),
            **({"record": record} if record is not None else {}),
        }
        transformer.eval()
        eval_after = evaluation_loss(flow_loss, draws)
        info["eval_loss_before"], info["eval_loss_after"] = eval_before, eval_after
        if not stopped:
            path = save_lora(Path(output_path), transformer, TRAINING_ADAPTER_NAME, info)
    finally:
        if config.gradient_checkpointing:
            transformer.disable_gradient_checkpointing()
        if prior_adapters or len(getattr(transformer, "peft_config", {})) > 1:
            transformer.delete_adapters(TRAINING_ADAPTER_NAME)
            if prior_adapters:
                transformer.set_adapter(prior_adapters)
        else:
            transformer.unload_lora()  # no other adapters: take the peft wrappers out entirely
        for name, p in transformer.named_parameters():
            p.requires_grad_(requires_grad.get(name, False))
        transformer.train(was_training)
    return TrainingResult(
        path=path,
        loss_curve=losses,
        steps_done=len(losses),
        stopped=stopped,
        metadata=info,
        eval_loss_before=eval_before,
        eval_loss_after=eval_after,
    )


def read_lora_metadata(path: str | Path) -> dict:
    """Shotline's record from a LoRA file header ({} for files from elsewhere)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    raw = metadata.get(SHOTLINE_METADATA_KEY)
    return json.loads(raw) if raw else {}
