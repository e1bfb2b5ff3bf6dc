"""A character's LoRA shipped beside a storyboard (`adapter_weights:` in the file), used instead of training only
while it is what the studio would train now.

    outcome = attach_shipped_lora(services, character_id, path)   # .attached, .note (for the import report)

A LoRA trained by the studio records its recipe in its header (`studio.characters.training.training_recipe`: base
model, each reference picture with its caption, settings). The shipped file is registered as the character's trained
LoRA when that recipe equals the one the character would train with today; otherwise it is left out and the note
says what differs, so the render trains a fresh one (a stale adapter never stands in for a current one).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from studio.services.errors import ValidationError


@dataclass(frozen=True)
class ShippedLora:
    attached: bool  # registered now as the character's trained LoRA
    note: str = ""  # why the file is not used ("" when attached or when a current LoRA was already there)


def _differences(shipped: dict, wanted: dict) -> list[str]:
    """What differs between two recipes, in a film-maker's words."""
    words = {
        "model": "another base model",
        "preset": "another model preset",
        "references": "other reference pictures or captions",
        "trigger": "another trigger",
        "description": "another description",
        "kind": "another adapter kind",
    }
    found = []
    for key in sorted(set(shipped) | set(wanted)):
        if shipped.get(key) == wanted.get(key):
            continue
        if key == "config":
            old, new = shipped.get(key) or {}, wanted.get(key) or {}
            changed = [name for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]
            found.append("other settings: " + ", ".join(f"{n} {old.get(n)} (now {new.get(n)})" for n in changed))
        else:
            found.append(words.get(key, f"another {key}"))
    return found


def attach_shipped_lora(services, character_id: int, path: str | Path) -> ShippedLora:
    """Register the LoRA at `path` as the character's trained LoRA when its recorded recipe is the current one.

    Nothing happens when the character already has a current LoRA (this file's, attached by an earlier import, or
    one trained since). Raises ValidationError for a file that is not a LoRA the studio trained."""
    from adapters.lora import read_lora_metadata
    from studio.characters.adapters import reference_fingerprint, training_need
    from studio.characters.training import _config, recipe_fingerprint, training_recipe

    path = Path(path)
    character = services.characters.get(character_id)
    preset = services.projects.get(character.project_id).preset
    if training_need(services, character, preset, "lora") is None:
        return ShippedLora(attached=False)
    try:
        info = read_lora_metadata(path)
    except Exception as error:  # noqa: BLE001 - safetensors raises several kinds for a file that is not one
        raise ValidationError(f"{path.name}: not a LoRA .safetensors file ({error})") from None
    shipped = (info.get("record") or {}).get("recipe")
    if info.get("kind") != "lora" or not shipped:
        raise ValidationError(
            f"{path.name}: this LoRA records no training recipe, so it cannot be checked against {character.name}'s "
            f"references; bring it in with `python -m studio adapter import` instead"
        )
    references = services.characters.list_references(character.id)
    config = _config("lora", preset, {})
    try:
        wanted = training_recipe(services, character, references, "lora", config)
    except (OSError, ValueError) as error:  # the base model's weights are not installed: nothing to check against
        return ShippedLora(attached=False, note=f"{character.name}: the shipped LoRA {path.name} is not used: {error}")
    if shipped != wanted:
        differences = "; ".join(_differences(shipped, wanted))
        return ShippedLora(
            attached=False,
            note=f"{character.name}: the shipped LoRA {path.name} was trained with {differences}, so it is not used: "
            "a new one is trained before the first render",
        )
    data = path.read_bytes()
    hyperparameters = {
        **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "trigger": character.trigger,
        "trigger_text": info.get("trigger_text"),
        "references": sorted(int(r.asset_id) for r in references),
        "reference_fingerprint": reference_fingerprint(references),
        "recipe_fingerprint": recipe_fingerprint(wanted),
        "source_file": path.name,
    }
    adapter = services.characters.add_adapter(
        character.id, "lora", preset, hyperparameters=hyperparameters, status="ready", weights=data
    )
    metrics = {
        "steps": info.get("steps_done"),
        "eval_loss_before": info.get("eval_loss_before"),
        "eval_loss_after": info.get("eval_loss_after"),
    }
    message = f"shipped with the storyboard ({path.name}, trained {info.get('steps_done')} steps)"
    services.characters.update_adapter_status(adapter.id, "ready", message=message, metrics=metrics)
    return ShippedLora(attached=True)
