"""Characters: their records, reference pictures and faces, adapters (trained, imported, shipped) and the
character CLI commands. Each concept has one module; import from it directly:

- `records`: `CharacterService` (`services.characters`): characters, trigger tokens, reference rows, adapter rows;
- `faces`: `FaceAnalyzer`, insightface face detection and ArcFace embeddings (no studio services);
- `references`: reference pictures through the services: faces found (`analyze_reference`,
  `analyze_pending_references`) and identity scores of takes (`score_take`);
- `adapters`: which adapter is current, which are missing or stale (`adapters_to_train`, `ensure_adapters`),
  queueing training (`request_training`) and its time estimate, importing a LoRA (`import_adapter`);
- `training`: the worker's `train_adapter` job (`run_train_adapter`);
- `runtime`: the adapters a scene uses (`scene_adapters`) and their swap on a pipeline (`apply_adapters`,
  `substitute_captions`);
- `shipped`: a LoRA shipped beside a storyboard, attached when it is what the studio would train now;
- `commands`: `python -m studio character ...` and `python -m studio adapter ...`.

This file imports nothing: `studio.services` imports `records`, and the other modules import `studio.services`.
"""
