"""Tiny Wan components built in code: the `tiny` preset and the test suites use them.

Nothing here touches a model hub. The classes are the real diffusers/transformers ones, only the configs are
small, so every code path that serves real Wan weights is exercised by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from tokenizers.processors import TemplateProcessing
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

PAD_TOKEN, EOS_TOKEN, UNK_TOKEN = "<pad>", "</s>", "<unk>"

# A small plain-English vocabulary: enough for test captions to tokenize to distinct ids.
DEFAULT_WORDS = (
    "a an the and of in on at to with is are his her their its from into over under by for "
    "wide medium close up close-up shot scene night day stormy coast lighthouse keeper red blue green yellow "
    "white black scarf lamp stairs climbs lights walks runs looks left right up down grows shrinks stays "
    "camera pan static slow fast man woman girl boy dog cat bird tree house sea sky rain sun moon "
    "circle square triangle star ring cross diamond heart forest desert city room street field "
    "mara tom ana leo figure character small large big tiny enters leaves sits stands , . : ;"
).split()


def build_word_tokenizer(words: list[str] | tuple[str, ...] = DEFAULT_WORDS) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer with T5's conventions: pad id 0, eos id 1 appended, unk id 2."""
    vocab = {PAD_TOKEN: 0, EOS_TOKEN: 1, UNK_TOKEN: 2}
    for word in words:
        vocab.setdefault(word.lower(), len(vocab))
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tok.normalizer = normalizers.Lowercase()
    # Punctuation splits off so "Mara," and "Mara" share an id; "<mara>"-style trigger tokens are added whole
    # as special tokens by the adapters, so they never reach this pre-tokenizer.
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = TemplateProcessing(single=f"$A {EOS_TOKEN}", special_tokens=[(EOS_TOKEN, 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN, unk_token=UNK_TOKEN, model_max_length=512
    )


@dataclass
class TinyWanConfig:
    """Sizes of the tiny model family. Defaults follow diffusers' own Wan pipeline tests."""

    text_dim: int = 32  # UMT5 d_model, also the transformer's text_dim
    text_layers: int = 2  # UMT5 encoder layers
    text_heads: int = 4  # UMT5 attention heads
    z_dim: int = 16  # VAE latent channels = transformer in/out channels
    vae_base_dim: int = 3  # VAE base width
    heads: int = 2  # transformer attention heads
    head_dim: int = 12  # transformer head size (must split into 3 rotary bands: t, h, w)
    layers: int = 2  # transformer blocks
    ffn_dim: int = 32  # transformer feed-forward width
    freq_dim: int = 256  # timestep embedding width
    words: tuple[str, ...] = field(default=tuple(DEFAULT_WORDS))  # tokenizer vocabulary


def build_tiny_components(config: TinyWanConfig | None = None, seed: int = 0) -> dict:
    """Return `tokenizer, text_encoder, vae, transformer, scheduler` with deterministic random weights.

    `MultiShotPipeline(**build_tiny_components())` and `diffusers.WanPipeline(**build_tiny_components())` both work.
    """
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

    cfg = config or TinyWanConfig()
    tokenizer = build_word_tokenizer(cfg.words)

    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=max(len(tokenizer), 64),
            d_model=cfg.text_dim,
            d_kv=cfg.text_dim // cfg.text_heads,
            d_ff=cfg.text_dim * 2,
            num_layers=cfg.text_layers,
            num_heads=cfg.text_heads,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    ).eval()

    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(
        base_dim=cfg.vae_base_dim,
        z_dim=cfg.z_dim,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    ).eval()

    torch.manual_seed(seed + 2)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=cfg.heads,
        attention_head_dim=cfg.head_dim,
        in_channels=cfg.z_dim,
        out_channels=cfg.z_dim,
        text_dim=cfg.text_dim,
        freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim,
        num_layers=cfg.layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ).eval()

    scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    return {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "vae": vae,
        "transformer": transformer,
        "scheduler": scheduler,
    }


def build_tiny_two_expert_components(
    config: TinyWanConfig | None = None, seed: int = 0, boundary_ratio: float = 0.875
) -> dict:
    """The tiny components plus a second transformer (`transformer_2`, the low-noise expert) and `boundary_ratio`:
    the layout of Wan2.2 T2V-A14B. `WanPipeline(**components)` and `MultiShotPipeline(**components)` both take it."""
    from diffusers import WanTransformer3DModel

    components = build_tiny_components(config, seed)
    torch.manual_seed(seed + 3)
    components["transformer_2"] = WanTransformer3DModel.from_config(components["transformer"].config).eval()
    components["boundary_ratio"] = boundary_ratio
    return components


_DIFFUSERS_TO_ORIGINAL = (
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("attn1", "self_attn"),
    ("attn2", "cross_attn"),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    (".to_out.0.", ".o."),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
    ("proj_out", "head.head"),
)


def to_original_wan_keys(state_dict: dict, prefix: str = "") -> dict:
    """A diffusers `WanTransformer3DModel` state dict in Wan's original key names (what the official checkpoints,
    ComfyUI's repackages and HoloCine's expert files use), optionally behind ComfyUI's `model.diffusion_model.`."""
    out = {}
    for key, value in state_dict.items():
        new = key
        for diffusers_name, original_name in _DIFFUSERS_TO_ORIGINAL:
            new = new.replace(diffusers_name, original_name)
        # diffusers' norm2 is the original norm3 (the cross-attention norm) and the other way round.
        new = new.replace(".norm2.", ".norm__swap.").replace(".norm3.", ".norm2.").replace(".norm__swap.", ".norm3.")
        if new == "scale_shift_table":
            new = "head.modulation"
        elif new.endswith(".scale_shift_table"):
            new = new.removesuffix("scale_shift_table") + "modulation"
        out[prefix + new] = value
    return out
