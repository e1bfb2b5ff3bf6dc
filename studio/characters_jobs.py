"""The character area's entry points for the worker and the render path (one import for the other areas).

- worker handler for `train_adapter` jobs: `run_train_adapter(services, job, report_progress, should_cancel,
  pipelines=None) -> dict` (the adapter is registered only once training finished);
- pipeline cache adapter swap: `apply_adapters(pipe, ((adapter_id, version), ...), services)`, then
  `substitute_captions(pipe, captions)` before calling the pipeline (each trigger becomes what its adapter
  answers to: a LoRA's word, an embedding's tokens);
- "on demand": `adapters_to_train(services, project_id)` and `ensure_adapters(services, project_id,
  character_ids)` (queues missing/stale trainings, returns the jobs to wait for); `scene_adapters(...)` picks the
  adapters a scene uses (ready, for the project's model preset);
- faces: `analyze_pending_references(services, project_id)` analyses references stored without faces (storyboard
  imports, uploads before the face models were installed); `score_take(services, take_id)` stores
  per-character identity scores (cosine) on the take.
"""

from __future__ import annotations

from studio.faces.jobs import run_train_adapter
from studio.faces.runtime import apply_adapters, substitute_captions
from studio.faces.service import (
    adapters_to_train,
    analyze_pending_references,
    current_adapter,
    ensure_adapters,
    request_training,
    score_take,
)


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


__all__ = [
    "adapters_to_train",
    "analyze_pending_references",
    "apply_adapters",
    "ensure_adapters",
    "request_training",
    "run_train_adapter",
    "scene_adapters",
    "score_take",
    "substitute_captions",
]
