"""The demo model's example storyboard (assets/examples/demo_world.yaml): it imports, its captions are words the
demo model knows, its kai references are the world's own stills, and its first scene renders as captioned."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipelines.loading import DEMO_MODEL_DIR
from studio.characters.records import default_trigger
from studio.storyboard_file import import_storyboard, load_storyboard
from training.demo_example import CHARACTER, EXAMPLE, reference_images, reference_paths
from training.world import (
    ALL_CHARACTER_BY_NAME,
    LOCATION_BY_NAME,
    SHOT_SIZES,
    SIZE_PHRASES,
    reference_caption,
    reference_shots,
)

KAI_TRIGGER = "<kai>"
SIZE_BY_PHRASE = {SIZE_PHRASES[s]: s for s in SHOT_SIZES}


def _doc():
    return load_storyboard(EXAMPLE)


def test_example_imports_into_a_fresh_project(sqlite_services):
    doc = _doc()
    assert (doc.title, doc.model, doc.width, doc.height, doc.fps) == ("Snow Day", "demo", 64, 64, 8)
    assert 2 <= len(doc.scenes) <= 3 and all(2 <= len(scene.shots) <= 3 for scene in doc.scenes)
    assert all(shot.frames == 17 for scene in doc.scenes for shot in scene.shots)
    kai = next(c for c in doc.characters if c.name == "Kai")
    assert kai.adapter == "lora" and default_trigger(kai.name) == KAI_TRIGGER and 4 <= len(kai.references) <= 6
    assert [c.name for c in doc.characters] == ["Mara", "Tom", "Kai"]
    assert not any(KAI_TRIGGER in shot.caption for shot in doc.scenes[0].shots)  # scene 1 needs no adapter

    report = import_storyboard(sqlite_services, doc, EXAMPLE.parent)
    assert report.project_created
    assert (report.characters_created, report.references_added) == (3, len(kai.references))
    kai_id = next(c.id for c in sqlite_services.characters.list(report.project_id) if c.name == "Kai")
    stored = [r.caption for r in sqlite_services.characters.list_references(kai_id)]
    assert stored == list(kai.reference_captions) and all(KAI_TRIGGER in caption for caption in stored)
    assert (report.scenes_created, report.shots_created) == (len(doc.scenes), doc.shot_count)
    assert not import_storyboard(sqlite_services, doc, EXAMPLE.parent).changed


def test_every_caption_is_in_the_demo_vocabulary():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(DEMO_MODEL_DIR / "tokenizer")
    unk = tokenizer.unk_token_id
    assert unk in tokenizer(KAI_TRIGGER).input_ids  # unknown: the LoRA adds it as a token (adapters.lora)
    doc = _doc()
    captions = [scene.caption for scene in doc.scenes] + [shot.caption for s in doc.scenes for shot in s.shots]
    captions += [caption for c in doc.characters for caption in c.reference_captions if caption]
    for caption in captions:
        assert unk not in tokenizer(caption.replace(KAI_TRIGGER, "")).input_ids, caption
    for scene in doc.scenes:  # the world's grammar: `a scene in the {location} with {name} and {name}`
        words = scene.caption.split()
        assert words[:4] == ["a", "scene", "in", "the"] and words[4] in LOCATION_BY_NAME, scene.caption
        for shot in scene.shots:
            size, rest = shot.caption.split(", ", 1)
            name = rest.split()[0].strip("<>")
            assert size in SIZE_BY_PHRASE and name in ALL_CHARACTER_BY_NAME, shot.caption
            assert [c.lower() for c in shot.characters] == [name], shot.caption


def test_kai_references_equal_a_fresh_render():
    kai = next(c for c in _doc().characters if c.name == "Kai")
    paths = reference_paths(count=len(kai.references))
    assert [str(p.relative_to(EXAMPLE.parent)) for p in paths] == list(kai.references)
    # Each caption is the caption of the shot its still was taken from (size, action, camera).
    shots = reference_shots(CHARACTER, len(kai.references))
    wanted = [reference_caption(shot, KAI_TRIGGER) for shot in shots]  # what eval/evaluate_adapters.py trains on
    assert wanted[1] == f"{SIZE_PHRASES[shots[1].shot_size]}, {KAI_TRIGGER} moves left, camera is static"
    assert list(kai.reference_captions) == wanted
    for path, image in zip(paths, reference_images(len(paths)), strict=True):
        stored = np.asarray(Image.open(path).convert("RGB"))
        assert stored.shape == (64, 64, 3) and np.array_equal(stored, image), path
        assert path.stat().st_size < 4096


@pytest.mark.skipif(not (DEMO_MODEL_DIR / "model_index.json").exists(), reason="assets/demo is not exported yet")
def test_first_scene_renders_as_captioned(demo_pipe):
    """Scene 1 (no adapter) with the shipped weights, 10 steps on the CPU, read back by the world's detector:
    location, colour and shot size (the attributes docs/QUALITY.md measures at 88-100%)."""
    from eval.evaluate_demo import render_storyboard
    from training.detector import read_shot
    from training.world import recorded_figure_scale

    scene = _doc().scenes[0]
    captions = [shot.caption for shot in scene.shots]
    rendered = render_storyboard(
        demo_pipe, captions, scene.caption, seed=0, steps=10, num_frames=scene.shots[0].frames
    )
    location = scene.caption.split()[4]
    assert len(rendered) == len(scene.shots)
    for shot, frames in zip(scene.shots, rendered, strict=True):
        size, rest = shot.caption.split(", ", 1)
        character = ALL_CHARACTER_BY_NAME[rest.split()[0]]
        reading = read_shot(frames, recorded_figure_scale(DEMO_MODEL_DIR))
        seen = (reading.location, reading.colour, reading.shot_size)
        assert seen == (location, character.colour, SIZE_BY_PHRASE[size]), shot.caption


def test_kais_shipped_lora_is_current_so_the_first_render_trains_nothing(sqlite_services):
    """The example ships Kai's LoRA as `python -m training.example_lora` trains it: its recorded recipe is the one
    the studio would train now (same stills, captions, settings and base model), so the import attaches it."""
    from adapters.common import default_hyperparameters
    from adapters.lora import read_lora_metadata
    from studio.characters.adapters import ensure_adapters
    from training.example_lora import DEFAULT_OUT

    kai = next(c for c in _doc().characters if c.name == "Kai")
    assert (EXAMPLE.parent / kai.adapter_weights).resolve() == DEFAULT_OUT.resolve()
    record = read_lora_metadata(DEFAULT_OUT)
    assert record["steps_done"] == default_hyperparameters("demo", "lora")["steps"] == 2000
    assert record["trigger"] == KAI_TRIGGER and record["trigger_words_added"] == ["kai"]
    assert 0.5e6 < DEFAULT_OUT.stat().st_size < 2e6  # rank 8 on the demo transformer's attention: about 1 MB

    report = import_storyboard(sqlite_services, _doc(), EXAMPLE.parent)
    assert (report.adapters_attached, report.notes) == (1, [])
    assert ensure_adapters(sqlite_services, report.project_id) == []
    kai_id = next(c.id for c in sqlite_services.characters.list(report.project_id) if c.name == "Kai")
    [adapter] = sqlite_services.characters.list_adapters(kai_id)
    assert (adapter.kind, adapter.status, adapter.hyperparameters["steps"]) == ("lora", "ready", 2000)


def test_model_fingerprint_reads_weights_and_configs_not_the_provenance_record(tmp_path, monkeypatch):
    import shutil

    import pipelines.loading
    from studio.characters.training import model_fingerprint

    folder = tmp_path / "demo"
    shutil.copytree(DEMO_MODEL_DIR, folder)
    monkeypatch.setattr(pipelines.loading, "DEMO_MODEL_DIR", folder)
    before = model_fingerprint(None, "demo")
    record = folder / "vae" / "training.json"
    record.write_text(record.read_text().replace('"what": "', '"what": "edited: ', 1))
    assert model_fingerprint(None, "demo") == before  # Kai's shipped LoRA stays current
    config = folder / "vae" / "config.json"
    config.write_text(config.read_text() + "\n")
    assert model_fingerprint(None, "demo") != before  # a changed configuration is another model


@pytest.mark.slow
def test_the_documented_command_trains_the_shipped_lora(tmp_path):
    """`python -m training.example_lora` (2,000 steps: 5-40 minutes on a CPU) writes a LoRA of the shipped one's
    recipe and layout."""
    from safetensors import safe_open

    from adapters.lora import read_lora_metadata
    from training.example_lora import DEFAULT_OUT, train_example_lora

    fresh = train_example_lora(tmp_path / "kai_lora.safetensors", log=lambda line: None)
    assert read_lora_metadata(fresh)["record"] == read_lora_metadata(DEFAULT_OUT)["record"]
    with safe_open(str(fresh), "pt") as new, safe_open(str(DEFAULT_OUT), "pt") as shipped:
        assert sorted(new.keys()) == sorted(shipped.keys())
        assert all(new.get_slice(k).get_shape() == shipped.get_slice(k).get_shape() for k in new.keys())
