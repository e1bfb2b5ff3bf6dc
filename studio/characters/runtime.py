"""Character adapters on the worker's pipeline: which adapters a scene uses, and what `studio.worker.cache` calls
to swap them.

chosen = scene_adapters(services, project_id, character_ids)   # adapter rows, ready, for the project's preset
applied = apply_adapters(pipe, ((adapter_id, version), ...), services)
captions = substitute_captions(pipe, captions)   # "<mara> climbs" -> "mara climbs" / "<mara> <mara_1> climbs"
"""

from __future__ import annotations

from pathlib import Path

from studio.characters.adapters import current_adapter

# adapters (torch, diffusers, peft) is imported inside the functions: importing this module, e.g. in the render
# command or the UI process, must stay cheap.
SUBSTITUTIONS_ATTRIBUTE = "_studio_trigger_substitutions"


def scene_adapters(services, project_id: int, character_ids) -> list:
    """The adapters a scene with these characters uses: per character, its current LoRA (trained or imported)
    and its current embedding, both only if made for the project's model preset. Stale ones are still used (a
    retraining may be queued by `ensure_adapters`); adapters of another preset never are (they would not load)."""
    preset = services.projects.get(project_id).preset
    chosen = []
    for character_id in dict.fromkeys(character_ids):
        for kind in ("lora", "embedding"):
            adapter = current_adapter(services, character_id, kind, preset)
            if adapter is not None:
                chosen.append(adapter)
    return chosen


def adapter_specs(services, adapters) -> list:
    """`adapters.loading.AdapterSpec`s for `((adapter_id, version), ...)` from the adapter rows and weights."""
    from adapters.loading import AdapterSpec

    specs = []
    for adapter_id, version in adapters:
        adapter = services.characters.get_adapter(int(adapter_id))
        if adapter.version != int(version):
            raise ValueError(f"adapter {adapter_id} is version {adapter.version}, not {version}: plan the scene again")
        if adapter.weights_asset_id is None:
            raise ValueError(f"adapter {adapter_id} has no weights (status {adapter.status})")
        character = services.characters.get(adapter.character_id)
        specs.append(
            AdapterSpec(
                adapter_id=adapter.id,
                kind=adapter.kind,
                path=Path(services.assets.path_of(adapter.weights_asset_id)),
                trigger=character.trigger,
                weight=float(adapter.hyperparameters.get("weight", 1.0)),
                version=adapter.version,
                character=character.name,
                trigger_text=adapter.hyperparameters.get("trigger_text"),
            )
        )
    return specs


def apply_adapters(pipe, adapters, context):
    """Put exactly `adapters` on `pipe` (others removed) and remember the trigger substitutions on it; returns
    `adapters.loading.AppliedAdapters`."""
    from adapters.loading import apply_adapters as apply_specs

    applied = apply_specs(pipe, adapter_specs(context, adapters))
    setattr(pipe, SUBSTITUTIONS_ATTRIBUTE, dict(applied.substitutions))
    return applied


def substitute_captions(pipe, captions: list[str]) -> list[str]:
    """Captions with each trigger replaced by what the loaded adapter answers to (unchanged without adapters)."""
    from adapters.loading import substitute_triggers

    substitutions = getattr(pipe, SUBSTITUTIONS_ATTRIBUTE, None) or {}
    return [substitute_triggers(caption, substitutions) for caption in captions]
