"""A LoRA shipped beside a storyboard (`adapter_weights:`): attached at import while its recorded recipe is the one
the studio would train now (so `render` trains nothing), left out with a note when a reference, caption or
setting changed (so a fresh one is trained), refused when it records no recipe."""

from __future__ import annotations

import shutil

import pytest
import torch
from character_helpers import BLUE, RED, png_bytes
from face_models import face_picture

from studio.characters.adapters import current_adapter, ensure_adapters, request_training, training_need
from studio.storyboard_file import StoryboardError, import_storyboard, load_storyboard, parse_storyboard
from studio.worker.process import Worker

STORYBOARD = """\
title: {title}
model: tiny
width: 32
height: 32
fps: 8
steps: 2
characters:
  - name: Mara
    references:
      - {{path: mara_1.png, caption: "{caption}"}}
      - mara_2.png
    description: a keeper in red
    adapter: lora
{weights}scenes:
  - caption: a lighthouse at night
    shots:
      - caption: <mara> climbs the stairs
        frames: 5
        characters: [Mara]
"""


def _story(folder, title="Keeper", caption="close-up shot, <mara> stays still", weights=None):
    line = f"    adapter_weights: {weights}\n" if weights else ""
    path = folder / f"{title.lower()}.yaml"
    path.write_text(STORYBOARD.format(title=title, caption=caption, weights=line))
    return path


@pytest.fixture(scope="module")
def shipped_files(tmp_path_factory):
    """Mara's pictures and her LoRA as the studio trains it (the train_adapter job on a tiny project, in a studio of
    its own), trained once for the module."""
    from studio.config import load_settings
    from studio.services import build_services

    folder = tmp_path_factory.mktemp("shipped")
    (folder / "mara_1.png").write_bytes(png_bytes(face_picture([(20, 30, 64, RED)])))
    (folder / "mara_2.png").write_bytes(png_bytes(face_picture([(10, 10, 70, BLUE)])))
    services = build_services(load_settings(data_dir=folder / "trainer-data"))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = import_storyboard(services, load_storyboard(_story(folder, title="Trainer")), folder)
        [mara] = services.characters.list(report.project_id)
        job = request_training(services, mara.id, "lora")
        Worker(services, worker_id="trainer").run(max_jobs=1)
        assert services.jobs.get(job.id).status == "done"
        adapter = current_adapter(services, mara.id, "lora", "tiny")
        shutil.copyfile(services.assets.path_of(adapter.weights_asset_id), folder / "mara_lora.safetensors")
    finally:
        torch.set_num_threads(previous)
        services.close()
    return folder


@pytest.fixture
def trained_lora(shipped_files, tmp_path):
    for name in ("mara_1.png", "mara_2.png", "mara_lora.safetensors"):
        shutil.copyfile(shipped_files / name, tmp_path / name)
    return tmp_path / "mara_lora.safetensors"


def test_a_current_shipped_lora_is_attached_and_nothing_trains(sqlite_services, tmp_path, trained_lora):
    services = sqlite_services
    story = _story(tmp_path, weights=trained_lora.name)
    report = import_storyboard(services, load_storyboard(story), tmp_path)
    assert report.adapters_attached == 1 and report.notes == []
    [mara] = services.characters.list(report.project_id)
    [adapter] = services.characters.list_adapters(mara.id)
    assert (adapter.kind, adapter.status, adapter.version) == ("lora", "ready", 1)
    assert adapter.hyperparameters["source_file"] == "mara_lora.safetensors"
    assert adapter.hyperparameters["trigger_text"] == "mara"
    assert services.assets.read_bytes(adapter.weights_asset_id) == trained_lora.read_bytes()
    assert training_need(services, mara, "tiny") is None
    assert ensure_adapters(services, report.project_id) == []  # render goes straight to generation

    again = import_storyboard(services, load_storyboard(story), tmp_path)
    assert not again.changed and again.adapters_attached == 0
    assert len(services.characters.list_adapters(mara.id)) == 1


def test_a_stale_shipped_lora_is_left_out_with_a_note_and_a_new_one_trains(sqlite_services, tmp_path, trained_lora):
    services = sqlite_services
    story = _story(tmp_path, caption="wide shot, <mara> moves left", weights=trained_lora.name)
    report = import_storyboard(services, load_storyboard(story), tmp_path)
    assert report.adapters_attached == 0
    [note] = report.notes
    assert "Mara" in note and "mara_lora.safetensors" in note and "other reference pictures or captions" in note
    assert "note: " + note in report.summary()
    [mara] = services.characters.list(report.project_id)
    assert services.characters.list_adapters(mara.id) == []
    [job] = ensure_adapters(services, report.project_id)
    assert (job.kind, job.payload["character_id"]) == ("train_adapter", mara.id)


def test_a_shipped_lora_without_a_recipe_a_bad_path_or_adapter_lora_is_refused(
    sqlite_services, tmp_path, trained_lora
):
    from safetensors.torch import load_file, save_file

    plain = tmp_path / "plain.safetensors"
    save_file(load_file(str(trained_lora)), str(plain))  # the same tensors, no Shotline header
    story = _story(tmp_path, weights="plain.safetensors")
    with pytest.raises(StoryboardError, match=r"line 14, characters\[0\].adapter_weights: .*records no training"):
        import_storyboard(sqlite_services, load_storyboard(story), tmp_path)
    assert sqlite_services.projects.list() == []  # all or nothing: no project was made

    with pytest.raises(StoryboardError, match=r"line 14, .*must be relative to the storyboard file"):
        import_storyboard(sqlite_services, load_storyboard(_story(tmp_path, weights="../mara.safetensors")), tmp_path)
    # A file that is not there (the page uploads only pictures) is a note: the render trains the LoRA instead.
    missing = import_storyboard(
        sqlite_services, load_storyboard(_story(tmp_path, weights="gone.safetensors")), tmp_path
    )
    assert missing.adapters_attached == 0 and "gone.safetensors is not beside the storyboard" in missing.notes[0]
    assert len(ensure_adapters(sqlite_services, missing.project_id)) == 1
    text = _story(tmp_path, weights="plain.safetensors").read_text().replace("adapter: lora", "adapter: embedding")
    with pytest.raises(StoryboardError, match=r"adapter_weights.*needs `adapter: lora`"):
        parse_storyboard(text, "keeper.yaml")
