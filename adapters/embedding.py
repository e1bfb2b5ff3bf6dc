"""Character embedding (textual inversion): new trigger token(s) in the tokenizer whose text-encoder input rows
are the only thing trained; every other weight, every other row included, stays bit for bit what it was.

Training never writes into the embedding matrix: the new rows live in a separate fp32 tensor that is swapped into
the input embeddings of the caption, and are written into the matrix only when the adapter is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image

from adapters.common import (
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
)

EMBEDDING_TENSOR_KEY = "embeddings"


@dataclass
class EmbeddingTrainingConfig:
    num_vectors: int = 2  # tokens the trigger stands for: more vectors, more capacity
    steps: int = 300
    learning_rate: float = 5e-3
    batch_size: int = 1
    width: int = 64
    height: int = 64
    max_sequence_length: int | None = None
    augment_variants: int = 4
    still_frames: int = 1  # references as clips held still for this many frames (see LoraTrainingConfig)
    cross_attention: str | None = None  # the preset's mode (see LoraTrainingConfig)
    init_text: str = ""  # words whose mean embedding starts the new rows ("" -> the description, else the mean row)
    max_grad_norm: float = 1.0
    seed: int = 0

    @classmethod
    def for_preset(cls, preset, **overrides) -> EmbeddingTrainingConfig:
        return cls(**preset_training_values(preset, "embedding", overrides))

    def validate(self) -> None:
        if not 1 <= self.num_vectors <= 16:
            raise ValueError(f"an embedding has 1 to 16 vectors, got {self.num_vectors}")
        if self.steps < 1 or self.steps > 100_000:
            raise ValueError(f"training steps must be between 1 and 100000, got {self.steps}")
        if not 0 < self.learning_rate <= 10:
            raise ValueError(f"learning rate must be in (0, 10], got {self.learning_rate}")
        if self.width % 16 or self.height % 16:
            raise ValueError(f"training size must be a multiple of 16, got {self.width}x{self.height}")
        still_frames_check(self.still_frames)


def placeholder_tokens(trigger: str, num_vectors: int) -> list[str]:
    """'<mara>' with 3 vectors -> ['<mara>', '<mara_1>', '<mara_2>']: the trigger itself is the first token."""
    if not (trigger.startswith("<") and trigger.endswith(">")) or len(trigger) < 3 or " " in trigger:
        raise ValueError(f"an embedding trigger must look like <name> with no spaces, got {trigger!r}")
    stem = trigger[1:-1]
    return [trigger] + [f"<{stem}_{i}>" for i in range(1, num_vectors)]


def add_tokens(tokenizer, text_encoder, tokens: Sequence[str]) -> list[int]:
    """Make every token one whole id in the tokenizer and give the text encoder rows for them; return the ids.

    Tokens already present keep their id (re-loading a new version of an embedding reuses its rows).
    """
    tokenizer.add_tokens(list(tokens), special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    rows = text_encoder.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        # Only grow (real UMT5 checkpoints already have spare rows past the tokenizer's vocabulary).
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return list(ids)


def token_sequence(trigger: str, num_vectors: int) -> str:
    """What the trigger is replaced with in captions: all its placeholder tokens, space separated."""
    return " ".join(placeholder_tokens(trigger, num_vectors))


def save_embedding(path: Path, vectors: torch.Tensor, tokens: list[str], info: dict) -> Path:
    from safetensors.torch import save_file

    metadata = {"format": "pt", SHOTLINE_METADATA_KEY: json.dumps({**info, "tokens": tokens}, sort_keys=True)}
    tensors = {EMBEDDING_TENSOR_KEY: vectors.detach().to("cpu", torch.float32).contiguous()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_embedding(path: str | Path) -> tuple[torch.Tensor, dict]:
    """(vectors [n, dim], Shotline's record with its `tokens`) from an embedding file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        if EMBEDDING_TENSOR_KEY not in handle.keys():
            raise ValueError(
                f"{Path(path).name} is not a Shotline embedding file (no '{EMBEDDING_TENSOR_KEY}' tensor)"
            )
        vectors = handle.get_tensor(EMBEDDING_TENSOR_KEY)
    info = json.loads(metadata.get(SHOTLINE_METADATA_KEY, "{}"))
    if len(info.get("tokens", [])) != vectors.shape[0]:
        raise ValueError(
            f"{Path(path).name}: header names {len(info.get('tokens', []))} tokens for {vectors.shape[0]} vectors"
        )
    return vectors, info


def _initial_rows(tokenizer, text_encoder, init_text: str, num_vectors: int) -> torch.Tensor:
    weight = text_encoder.get_input_embeddings().weight.detach()
    ids = [i for i in tokenizer(init_text, add_special_tokens=False).input_ids if i != tokenizer.unk_token_id]
    # Reduce in fp32 without copying the whole table to fp32 (UMT5's is 256k x 4096).
    base = weight[ids].float().mean(0) if ids else weight.mean(0, dtype=torch.float32)
    return base.unsqueeze(0).repeat(num_vectors, 1).cpu()


def train_embedding(
    components: dict,
    images: Sequence[Image.Image | bytes | str | Path],
    trigger: str,
    output_path: str | Path,
    config: EmbeddingTrainingConfig | None = None,
    description: str = "",
    preset: str | None = None,
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
    captions: Sequence[str] | None = None,
) -> TrainingResult:
    """Learn `config.num_vectors` token rows for `trigger` and write them to `output_path`.

    `captions`: one per reference picture (or one for all), each naming the character by `trigger`, e.g.
    `close-up shot, <kai> stays still, camera is static`: the rows are learned in the place a storyboard caption
    puts them. Default: the trigger alone (then `, description`).

    The tokenizer gains the placeholder tokens (harmless: nothing else uses them); the text encoder's weights are
    not modified. Stopping (`should_stop()`) ends the run within one step and writes nothing.
    """
    config = config or (EmbeddingTrainingConfig.for_preset(preset) if preset else EmbeddingTrainingConfig())
    config.validate()
    tokenizer, text_encoder, transformer = (
        components["tokenizer"],
        components["text_encoder"],
        components["transformer"],
    )
    pictures = [load_image(image) for image in images]
    if not pictures:
        raise ValueError("an embedding needs at least one reference picture: add references to the character first")

    tokens = placeholder_tokens(trigger, config.num_vectors)
    if captions:
        missing = [i + 1 for i, c in enumerate(captions) if trigger not in c]
        if missing:
            raise ValueError(f"caption(s) {missing} do not name the character: write its trigger {trigger} in each")
    else:
        captions = training_captions(trigger, description)
    subject = token_sequence(trigger, config.num_vectors)
    per_view = captions_per_view(captions, len(pictures), config.augment_variants, "embedding")
    view_captions = [caption.replace(trigger, subject) for caption in per_view]
    token_ids = add_tokens(tokenizer, text_encoder, tokens)
    views = augmented_views(pictures, config.width, config.height, config.augment_variants, config.seed)
    latents = encode_images(components["vae"], views, frames=config.still_frames)

    device = next(text_encoder.parameters()).device
    text_dtype = text_encoder.get_input_embeddings().weight.dtype
    dtype = next(transformer.parameters()).dtype
    vectors = _initial_rows(tokenizer, text_encoder, config.init_text or description, config.num_vectors)
    vectors = vectors.to(device).requires_grad_(True)
    id_tensor = torch.tensor(token_ids, device=device)

    def swap_in(input_ids: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        # Positions holding a placeholder take the trainable row; everything else is the frozen matrix's row.
        match = input_ids.unsqueeze(-1) == id_tensor  # [B, L, n]
        is_new = match.any(-1, keepdim=True)
        new_rows = (match.to(vectors.dtype) @ vectors).to(embeds.dtype)
        return torch.where(is_new, new_rows, embeds.detach())

    shift = scheduler_shift(components.get("scheduler"), default=3.0)
    generator = torch.Generator().manual_seed(config.seed)
    frozen = [
        (m, {n: p.requires_grad for n, p in m.named_parameters()}, m.training) for m in (text_encoder, transformer)
    ]
    for module in (text_encoder, transformer):
        module.requires_grad_(False)
        module.eval()
    optimizer = torch.optim.AdamW([vectors], lr=config.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, config.steps))
    draws = evaluation_draws(latents, config.seed)

    def flow_loss(index: torch.Tensor, noisy: torch.Tensor, timestep: torch.Tensor, target: torch.Tensor):
        batch_captions = [view_captions[int(i)] for i in index]
        text = prompt_text_embeddings(tokenizer, text_encoder, batch_captions, config.max_sequence_length, swap_in)
        prediction = transformer_forward(
            transformer, noisy.to(device, dtype), timestep.to(device), text.to(dtype), config.cross_attention
        )
        return torch.nn.functional.mse_loss(prediction.float(), target.to(device))

    try:
        eval_before = evaluation_loss(flow_loss, draws)
        losses, stopped = run_training_steps(
            config, latents, flow_loss, [vectors], optimizer, scheduler, generator, shift, progress, should_stop
        )
        eval_after = evaluation_loss(flow_loss, draws)
    finally:
        for module, flags, training in frozen:
            for name, p in module.named_parameters():
                p.requires_grad_(flags.get(name, False))
            module.train(training)
    info = {
        "kind": "embedding",
        "trigger": trigger,
        "preset": preset,
        "caption": view_captions[0],
        "captions": list(dict.fromkeys(view_captions)),
        "text_dim": int(vectors.shape[1]),
        "text_dtype": str(text_dtype),
        "config": asdict(config),
        "steps_done": len(losses),
        "eval_loss_before": eval_before,
        "eval_loss_after": eval_after,
    }
    path = None if stopped else save_embedding(Path(output_path), vectors, tokens, info)
    return TrainingResult(
        path=path,
        loss_curve=losses,
        steps_done=len(losses),
        stopped=stopped,
        metadata=info,
        eval_loss_before=eval_before,
        eval_loss_after=eval_after,
    )


def load_embedding_into(tokenizer, text_encoder, path: str | Path) -> list[str]:
    """Add the file's tokens to the tokenizer and write its vectors into their rows; return the tokens."""
    vectors, info = read_embedding(path)
    weight = text_encoder.get_input_embeddings().weight
    if vectors.shape[1] != weight.shape[1]:
        raise ValueError(
            f"{Path(path).name} was trained for a text encoder of width {vectors.shape[1]}, this model's is "
            f"{weight.shape[1]}: train the embedding again for this model"
        )
    tokens = list(info["tokens"])
    ids = add_tokens(tokenizer, text_encoder, tokens)
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[ids] = vectors.to(weight.device, weight.dtype)
    return tokens
