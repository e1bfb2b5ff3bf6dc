"""Per-shot LoRA scope: a character's LoRA changes only the tokens of the shots that show the character.

A LoRA loaded into the transformer acts on every token of the scene, so in a joint generation the other shots
drift too (measured on the demo model: the other character's shot drawn as captioned fell from 83% to 17% with a
character LoRA, docs/QUALITY.md, "Character adapters"). The multi-shot layout knows which shot every token belongs
to, as it does for caption routing; `scoped_loras` uses it to mask each LoRA's contribution per token:

- video tokens (every projection whose input is the video sequence): kept for the shots in the LoRA's scope;
- text tokens (cross-attention keys and values): kept for the captions of those shots; global-caption and negative
  prompt tokens are shared by every shot, so they are left without the LoRA.

It works on PEFT LoRA layers (what `load_lora_weights` adds) by a forward hook on each `lora_B` of the named
adapters: PEFT adds `lora_B(lora_A(x)) * scaling` to the base projection, so masking `lora_B`'s output per token
masks exactly the adapter's delta. Fused (merged) LoRAs have no such layer and cannot be scoped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch

from .layout import ShotLayout


def lora_layers(transformer, adapter_name: str) -> list[torch.nn.Module]:
    """The `lora_B` modules of `adapter_name` in `transformer` (empty when it is not loaded, or fused)."""
    layers = []
    for module in transformer.modules():
        lora_b = getattr(module, "lora_B", None)
        if isinstance(lora_b, torch.nn.ModuleDict) and adapter_name in lora_b:
            layers.append(lora_b[adapter_name])
    return layers


# Projections whose input is the text sequence (cross-attention keys/values, the text embedder); the others read video.
TEXT_INPUT_LAYERS = (".attn2.to_k", ".attn2.to_v", "condition_embedder.text_embedder.")


def reads_text(module_name: str) -> bool:
    """Whether the projection `module_name` (a transformer module path) takes the text sequence as input."""
    return any(part in f".{module_name}" for part in TEXT_INPUT_LAYERS)


def token_mask(
    layout: ShotLayout, shots: frozenset[int], length: int, text: bool | None = None
) -> torch.Tensor | None:
    """[length] bool: which tokens of a sequence of `length` belong to `shots` (video tokens, or caption tokens), or
    None when `length` is not the sequence it should be (left unmasked). `text` says which sequence the layer
    reads (a text sequence may be exactly as long as the video one, e.g. a padded negative prompt); None: guessed
    from the length, video first."""
    if text is not True and length == layout.num_video_tokens:
        owner = layout.video_shot
    elif text is not False and length == layout.num_text_tokens:
        owner = layout.text_owner  # -1 (global caption) is never in `shots`
    else:
        return None
    return torch.isin(owner, torch.tensor(sorted(shots), dtype=torch.long))


@contextmanager
def scoped_loras(
    transformer, adapter_shots: Mapping[str, Sequence[int]], current_layout: Callable[[], ShotLayout]
) -> Iterator[None]:
    """Within the block, each LoRA named in `adapter_shots` acts only on the tokens of its shots (indices into the
    scene); `current_layout()` gives the layout of the pass being run (conditional or unconditional)."""
    cache: dict[tuple, torch.Tensor | None] = {}

    def hook_for(shots: frozenset[int], text: bool):
        def hook(module, inputs, output):
            layout = current_layout()
            key = (id(layout), shots, text, output.shape[-2], output.device, output.dtype)
            if key not in cache:
                mask = token_mask(layout, shots, output.shape[-2], text)
                cache[key] = None if mask is None else mask.to(output.device, output.dtype).unsqueeze(-1)
            mask = cache[key]
            return output if mask is None else output * mask

        return hook

    handles = []
    try:
        for name, shots in adapter_shots.items():
            scope = frozenset(int(k) for k in shots)
            hooks = {text: hook_for(scope, text) for text in (False, True)}
            for module_name, module in transformer.named_modules():
                lora_b = getattr(module, "lora_B", None)
                if isinstance(lora_b, torch.nn.ModuleDict) and name in lora_b:
                    handles.append(lora_b[name].register_forward_hook(hooks[reads_text(module_name)]))
        yield
    finally:
        for handle in handles:
            handle.remove()
