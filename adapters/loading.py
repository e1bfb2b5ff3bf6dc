"""Use a scene's character adapters at inference: load and combine LoRAs (`set_adapters` with weights), write
embedding rows, and substitute each character's trigger in the captions with what its adapter answers to (a
LoRA's trigger words that the tokenizer does not know are added as whole tokens first, as `train_lora` does).

    applied = apply_adapters(pipe, [AdapterSpec(...), ...], fallback_texts={"<tom>": "tom, a fisherman"})
    captions = [applied.substitute(c) for c in captions]
    out = pipe(...)
    take_params["adapters"] = applied.records()
    applied.unload()            # or keep them loaded for the next scene with the same cast

`pipe` is any diffusers pipeline with `WanLoraLoaderMixin` (`pipelines.MultiShotPipeline`, `WanPipeline`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from adapters.common import trigger_text as default_trigger_text
from adapters.embedding import load_embedding_into
from adapters.lora import add_trigger_words, read_lora_metadata


@dataclass(frozen=True)
class AdapterSpec:
    """One character adapter to use: what the studio's Adapter row says, plus the weights file path."""

    adapter_id: int | str
    kind: str  # lora | embedding | imported
    path: Path
    trigger: str  # the character's trigger as written in captions, e.g. "<mara>"
    weight: float = 1.0  # LoRA strength in the combination
    version: int = 1
    character: str | None = None  # for the take's record
    trigger_text: str | None = None  # override of what a LoRA answers to (imported LoRAs' own trigger words)

    @property
    def adapter_name(self) -> str:
        """Unique per adapter version, so a retrained adapter never reuses a stale loaded copy."""
        return lora_adapter_name(self.kind, self.adapter_id, self.version)


def lora_adapter_name(kind: str, adapter_id: int | str, version: int) -> str:
    """The name an adapter is loaded under on the transformer (`AdapterSpec.adapter_name`)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{kind}_{adapter_id}_v{version}")


@dataclass
class AppliedAdapters:
    pipe: object
    specs: list[AdapterSpec]
    substitutions: dict[str, str]  # trigger -> replacement text
    lora_names: list[str] = field(default_factory=list)

    def substitute(self, caption: str) -> str:
        return substitute_triggers(caption, self.substitutions)

    def records(self) -> list[dict]:
        """What a take stores about the adapters it was made with."""
        return [
            {
                "adapter_id": spec.adapter_id,
                "kind": spec.kind,
                "version": spec.version,
                "weight": spec.weight,
                "character": spec.character,
                "trigger": spec.trigger,
            }
            for spec in self.specs
        ]

    def unload(self) -> None:
        """Remove this scene's LoRAs from the transformer. Embedding rows stay (their tokens only appear in
        captions that were substituted for them, so they are inert otherwise)."""
        if self.lora_names:
            unload_loras(self.pipe, self.lora_names)
            self.lora_names = []


def substitute_triggers(caption: str, substitutions: dict[str, str]) -> str:
    """Replace every trigger in one pass (longest first), so a replacement that contains a trigger (an embedding's
    own token) is never replaced again."""
    if not substitutions:
        return caption
    pattern = re.compile("|".join(re.escape(t) for t in sorted(substitutions, key=len, reverse=True)))
    return pattern.sub(lambda m: substitutions[m.group(0)], caption)


def loaded_loras(pipe) -> list[str]:
    try:
        listed = pipe.get_list_adapters()
    except (ValueError, AttributeError):  # no peft layers yet
        return []
    return sorted({name for names in listed.values() for name in names})


def unload_loras(pipe, names: Iterable[str]) -> None:
    present = set(loaded_loras(pipe))
    names = [n for n in names if n in present]
    if not names:
        return
    if set(names) == present:
        pipe.unload_lora_weights()  # nothing else loaded: remove the peft wrappers too
    else:
        pipe.delete_adapters(names)


EXPERTS = ("transformer", "transformer_2")


def lora_experts(pipe, path: str | Path) -> list[str]:
    """The experts a LoRA file is for: its Shotline metadata `experts` (e.g. ["transformer"] for one trained on
    Wan2.2's high-noise expert), else every expert the pipeline has (a Wan2.2 A14B character LoRA made as one
    file is used on both, as their trainers ship it)."""
    present = [name for name in EXPERTS if getattr(pipe, name, None) is not None]
    named = read_lora_metadata(path).get("experts")
    if not named:
        return present
    unknown = [name for name in named if name not in EXPERTS]
    if unknown:
        raise ValueError(f"{path}: metadata names experts {unknown}; expected some of {list(EXPERTS)}")
    chosen = [name for name in named if name in present]
    if not chosen:
        raise ValueError(
            f"{path} was made for {', '.join(named)}, which this model does not have (it has {', '.join(present)}); "
            "use a LoRA trained for this model preset"
        )
    return chosen


def load_lora_into_experts(pipe, path: Path, adapter_name: str) -> list[str]:
    """Load a LoRA file into the expert(s) it is for (`lora_experts`); returns them."""
    experts = lora_experts(pipe, path)
    for name in experts:
        extra = {"load_into_transformer_2": True} if name == "transformer_2" else {}
        pipe.load_lora_weights(str(path), adapter_name=adapter_name, **extra)
    return experts


def _set_adapters(pipe, names: list[str], weights: list[float]) -> None:
    """`set_adapters` per expert with the adapters loaded on it (diffusers' pipeline-level call wants every name
    on every denoiser; a LoRA made for one Wan2.2 expert is on one only)."""
    experts = [getattr(pipe, name) for name in EXPERTS if getattr(pipe, name, None) is not None]
    if len(experts) == 1:
        pipe.set_adapters(names, adapter_weights=weights)
        return
    for expert in experts:
        loaded = set(getattr(expert, "peft_config", {}) or {})
        pairs = [(n, w) for n, w in zip(names, weights, strict=True) if n in loaded]
        if pairs:
            expert.set_adapters([n for n, _ in pairs], [w for _, w in pairs])
        elif loaded:
            expert.disable_adapters()


def apply_adapters(
    pipe,
    specs: Sequence[AdapterSpec],
    fallback_texts: dict[str, str] | None = None,
    keep_loaded: bool = False,
) -> AppliedAdapters:
    """Load and activate exactly `specs` on `pipe`; return the substitutions to apply to captions.

    LoRAs already loaded under the same name (same adapter and version) are reused; other loaded LoRAs are
    removed unless `keep_loaded`. `fallback_texts` gives the replacement for triggers of characters without an
    adapter (e.g. their name and description); other text is left as written.
    """
    substitutions = dict(fallback_texts or {})
    lora_specs = [s for s in specs if s.kind in ("lora", "imported")]
    wanted = [s.adapter_name for s in lora_specs]
    # LoRAs the pipeline keeps for every scene (a project's accelerator, `pipelines.acceleration.load_accelerator`).
    persistent = dict(getattr(pipe, "persistent_loras", None) or {})
    if not keep_loaded:
        unload_loras(pipe, [n for n in loaded_loras(pipe) if n not in wanted and n not in persistent])
    present = set(loaded_loras(pipe))
    per_trigger: dict[str, list[str]] = {}
    words_added: list[str] = []
    for spec in specs:
        path = Path(spec.path)
        if not path.is_file():
            raise FileNotFoundError(f"adapter file for {spec.character or spec.trigger} is missing: {path}")
        if spec.kind == "embedding":
            tokens = load_embedding_into(pipe.tokenizer, pipe.text_encoder, path)
            per_trigger.setdefault(spec.trigger, []).insert(0, " ".join(tokens))
        elif spec.kind in ("lora", "imported"):
            if spec.adapter_name not in present:
                load_lora_into_experts(pipe, path, spec.adapter_name)
            text = spec.trigger_text or read_lora_metadata(path).get("trigger_text")
            text = text or default_trigger_text(spec.trigger)
            if getattr(pipe, "tokenizer", None) is not None and getattr(pipe, "text_encoder", None) is not None:
                # The trigger words as train_lora saw them: words the tokenizer does not know become whole tokens
                # with the same rows as at training (a function of the word alone), instead of `<unk>`.
                words_added += add_trigger_words(pipe.tokenizer, pipe.text_encoder, text)
            per_trigger.setdefault(spec.trigger, []).append(text)
        else:
            raise ValueError(f"unknown adapter kind {spec.kind!r}; choose one of: lora, embedding, imported")
    if (words_added or any(spec.kind == "embedding" for spec in specs)) and hasattr(pipe, "clear_text_cache"):
        # Embedding or trigger-word rows were written in place: captions encoded before must be encoded again.
        pipe.clear_text_cache()
    if lora_specs or persistent:
        pipe.enable_lora()  # a previous scene without LoRAs may have disabled them
        _set_adapters(pipe, wanted + list(persistent), [s.weight for s in lora_specs] + list(persistent.values()))
    elif loaded_loras(pipe):
        # Kept-loaded LoRAs of other scenes must not leak into this one.
        pipe.disable_lora()
    for trigger, texts in per_trigger.items():
        # Embedding tokens first, then the LoRA's words: "<mara> mara" when a character has both.
        substitutions[trigger] = " ".join(dict.fromkeys(texts))
    return AppliedAdapters(pipe=pipe, specs=list(specs), substitutions=substitutions, lora_names=wanted)
