"""Per-shot LoRA scope (pipelines/adapter_scope.py): a LoRA given `adapter_shots` changes only its shots' tokens."""

from __future__ import annotations

import pytest
import torch

from pipelines import MultiShotPipeline, ShotSpec
from pipelines.adapter_scope import token_mask
from pipelines.layout import ShotLayout
from pipelines.tiny import build_tiny_components

SHOTS = [
    ShotSpec("wide shot, mara climbs the stairs", 5),
    ShotSpec("close-up, mara lights the lamp", 5),
    ShotSpec("the sea under a stormy sky", 5),
]


def _run(pipe, **kwargs):
    generators = [torch.Generator().manual_seed(s) for s in (10, 11, 12)]
    kwargs = dict(height=32, width=32, num_inference_steps=2, max_sequence_length=16, output_type="latent") | kwargs
    return pipe(shots=SHOTS, global_caption="a lighthouse at night", generator=generators, **kwargs).latents


def _random_lora(pipe, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for b in range(len(pipe.transformer.blocks)):
        for attn in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v", "to_out.0"):
                key = f"transformer.blocks.{b}.{attn}.{proj}"
                state[f"{key}.lora_A.weight"] = torch.randn(4, 24, generator=g) * 0.5
                state[f"{key}.lora_B.weight"] = torch.randn(24, 4, generator=g) * 0.5
    return state


def test_a_scoped_lora_changes_its_shots_and_leaves_the_others_exactly_as_without_it():
    pipe = MultiShotPipeline(**build_tiny_components())
    pipe.set_progress_bar_config(disable=True)
    isolated = dict(self_attention="isolated")  # no shot sees another's tokens: the others must not move at all
    base = _run(pipe, **isolated)
    pipe.load_lora_weights(_random_lora(pipe), adapter_name="mara")
    whole = _run(pipe, **isolated)
    scoped = _run(pipe, adapter_shots={"mara": [0, 1]}, **isolated)
    assert (whole[2] - base[2]).abs().max() > 1e-3  # unscoped, the LoRA changes the sea too
    assert torch.equal(scoped[2], base[2])  # scoped, shot 3 is bit for bit the LoRA-free render
    for k in (0, 1):
        assert (scoped[k] - base[k]).abs().max() > 1e-3
    # Full self-attention: shot 3 now attends to the changed shots, so it moves, but less than under the whole LoRA.
    base_full, whole_full = _run(pipe, adapter_shots={"mara": []}), _run(pipe)
    scoped_full = _run(pipe, adapter_shots={"mara": [0, 1]})
    assert 0 < (scoped_full[2] - base_full[2]).abs().max() < (whole_full[2] - base_full[2]).abs().max()
    # Regenerating shot 3 alone in isolation, in context of the others: still untouched by the scoped LoRA.
    context = dict(regenerate=[2], context_latents=list(base), **isolated)
    assert torch.equal(
        _run(pipe, adapter_shots={"mara": [0, 1]}, **context)[2], _run(pipe, adapter_shots={"mara": []}, **context)[2]
    )
    # The hooks are gone after each call: an unscoped call gives the unscoped result again.
    assert torch.equal(_run(pipe, **isolated)[2], whole[2])

    with pytest.raises(ValueError, match="'tom', which is not a LoRA loaded on the transformer"):
        _run(pipe, adapter_shots={"tom": [0]})
    with pytest.raises(ValueError, match=r"adapter_shots\['mara'\] has \[3\]; shot indices run from 0 to 2"):
        _run(pipe, adapter_shots={"mara": [3]})


@pytest.mark.gpu
def test_scope_holds_in_bf16_on_cuda():
    """The mask is applied in the LoRA output's own dtype and device: bf16 on CUDA, as the studio runs real presets."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    components = build_tiny_components()
    components["transformer"].to("cuda", torch.bfloat16)
    components["text_encoder"].to("cuda")
    components["vae"].to("cuda")
    pipe = MultiShotPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    base = _run(pipe, self_attention="isolated")
    pipe.load_lora_weights(_random_lora(pipe), adapter_name="mara")
    pipe.transformer.to("cuda", torch.bfloat16)
    scoped = _run(pipe, adapter_shots={"mara": [0, 1]}, self_attention="isolated")
    assert torch.equal(scoped[2], base[2]) and (scoped[0] - base[0]).abs().max() > 1e-3


def test_token_masks_follow_the_layout():
    layout = ShotLayout.build([2, 1], 2, 2, caption_lengths=[3, 2], global_length=4)
    video = token_mask(layout, frozenset({1}), layout.num_video_tokens)
    assert video.tolist() == [False] * 8 + [True] * 4
    text = token_mask(layout, frozenset({0}), layout.num_text_tokens)
    assert text.tolist() == [False] * 4 + [True] * 3 + [False] * 2  # global tokens are everyone's: never scoped
    assert token_mask(layout, frozenset({0}), 7) is None  # neither sequence: left alone
