"""Character LoRAs must act per token: lightx2v/CausVid-style files (time embedding, norm differences) are refused
as character adapters with a clear message, while per-token layers (attention with `diff_b` biases, the head's
`proj_out`) stay scoped to their shots."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save

from adapters.importing import AdapterImportError, import_lora
from pipelines import MultiShotPipeline, ShotSpec
from pipelines.tiny import build_tiny_components

SHOTS = [ShotSpec("wide shot, mara climbs the stairs", 5), ShotSpec("the sea under a stormy sky", 5)]


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return build_tiny_components()


def wan_original_lora(transformer, time_embedding=False, norm_diff=False, head=False, seed=0) -> dict:
    """A LoRA in the original Wan key layout, as lightx2v and CausVid ship them (`diff_b` biases included)."""
    g = torch.Generator().manual_seed(seed)
    dim = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    state = {}
    for b in range(len(transformer.blocks)):
        for attn, proj in (("self_attn", "q"), ("self_attn", "o"), ("cross_attn", "v")):
            key = f"diffusion_model.blocks.{b}.{attn}.{proj}"
            state[f"{key}.lora_down.weight"] = torch.randn(2, dim, generator=g) * 0.5
            state[f"{key}.lora_up.weight"] = torch.randn(dim, 2, generator=g) * 0.5
            state[f"{key}.diff_b"] = torch.randn(dim, generator=g) * 0.5
        if norm_diff:
            state[f"diffusion_model.blocks.{b}.norm3.diff"] = torch.randn(dim, generator=g) * 0.1
    if time_embedding:
        state["diffusion_model.time_embedding.0.lora_down.weight"] = torch.randn(2, 256, generator=g)
        state["diffusion_model.time_embedding.0.lora_up.weight"] = torch.randn(dim, 2, generator=g)
    if head:
        out = transformer.proj_out.out_features
        state["diffusion_model.head.head.lora_down.weight"] = torch.randn(2, dim, generator=g)
        state["diffusion_model.head.head.lora_up.weight"] = torch.randn(out, 2, generator=g)
    return state


def test_a_lora_of_the_time_embedding_is_refused_as_a_character_adapter(tiny):
    data = save(wan_original_lora(tiny["transformer"], time_embedding=True))
    with pytest.raises(AdapterImportError, match="time_embedder.linear_1, the time embedding every shot shares"):
        import_lora(data, tiny["transformer"], filename="lightx2v.safetensors", trigger="<mara>")


def test_norm_weight_differences_are_refused_rather_than_dropped(tiny):
    data = save(wan_original_lora(tiny["transformer"], norm_diff=True))
    with pytest.raises(AdapterImportError, match=r"2 full-weight norm difference\(s\) \(e.g. diffusion_model.blocks"):
        import_lora(data, tiny["transformer"], filename="causvid.safetensors", trigger="<mara>")


def test_per_token_layers_with_biases_and_the_head_stay_scoped_to_their_shots(tiny):
    normalised, found = import_lora(
        save(wan_original_lora(tiny["transformer"], head=True)), tiny["transformer"], filename="mara.safetensors"
    )
    assert "proj_out" in found.modules and any(k.endswith("lora_B.bias") for k in found.state_dict)
    pipe = MultiShotPipeline(**build_tiny_components())
    pipe.set_progress_bar_config(disable=True)

    def run(**kwargs):
        gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
        return pipe(
            shots=SHOTS,
            height=32,
            width=32,
            num_inference_steps=2,
            max_sequence_length=16,
            self_attention="isolated",
            generator=gens,
            output_type="latent",
            **kwargs,
        ).latents

    base = run()
    pipe.load_lora_weights(found.state_dict, adapter_name="mara")
    scoped = run(adapter_shots={"mara": [0]})
    assert (scoped[0] - base[0]).abs().max() > 1e-3
    assert torch.equal(scoped[1], base[1])  # biases and head included: the other shot is bit for bit untouched


def test_why_the_time_embedding_is_refused_it_leaks_past_the_scope(tiny):
    """Loaded by hand, a time-embedding LoRA changes the shot outside its scope: the per-token mask cannot hold it."""
    from diffusers import WanPipeline

    pipe = MultiShotPipeline(**build_tiny_components())
    pipe.set_progress_bar_config(disable=True)
    raw = wan_original_lora(tiny["transformer"], time_embedding=True)
    state = WanPipeline.lora_state_dict({k: v for k, v in raw.items() if not k.endswith(".diff_b")})
    kwargs = dict(shots=SHOTS, height=32, width=32, num_inference_steps=2, max_sequence_length=16)
    kwargs |= dict(self_attention="isolated", output_type="latent")
    base = pipe(generator=[torch.Generator().manual_seed(s) for s in (3, 4)], **kwargs).latents
    pipe.load_lora_weights(state, adapter_name="fast")
    scoped = pipe(
        generator=[torch.Generator().manual_seed(s) for s in (3, 4)], adapter_shots={"fast": [0]}, **kwargs
    ).latents
    assert (scoped[1] - base[1]).abs().max() > 1e-3


def test_a_text_sequence_as_long_as_the_video_is_masked_as_text():
    """A negative prompt padded to exactly the video's token count is still text: its tokens are all global, so a
    scoped LoRA of the cross-attention keys/values leaves them alone (reading them as video would not)."""
    from pipelines.adapter_scope import reads_text, token_mask
    from pipelines.layout import ShotLayout

    layout = ShotLayout.build([2, 2], 2, 2, caption_lengths=[5, 5], global_length=0).with_text([0, 0], 16)
    assert layout.num_video_tokens == layout.num_text_tokens == 16
    assert not token_mask(layout, frozenset({0}), 16, text=True).any()
    assert token_mask(layout, frozenset({0}), 16, text=False).sum() == 8
    assert reads_text("blocks.0.attn2.to_v") and reads_text("blocks.3.attn2.to_k")
    assert not reads_text("blocks.0.attn2.to_q") and not reads_text("blocks.0.attn1.to_v")
