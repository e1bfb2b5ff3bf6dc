"""Projects and characters: defaults from the preset, validation messages, bin, references, adapters."""

from __future__ import annotations

import pytest

from pipelines.registry import get_preset
from studio.services.errors import ConflictError, NotFoundError, ValidationError
from studio.services.job_specs import GenerateScene
from tests.core_services.helpers import png_bytes, safetensors_bytes


def test_project_defaults_come_from_the_preset(services):
    project = services.projects.create("Lighthouse")
    assert (project.preset, project.width, project.height, project.fps, project.steps) == ("demo", 64, 64, 8, 20)
    assert project.guidance == get_preset("demo").guidance_scale == 2.0
    wan = services.projects.create("Big", preset="wan2.1-t2v-1.3b", steps=30)
    assert (wan.width, wan.height, wan.fps, wan.steps) == (832, 480, 16, 30)
    assert "blurry" in wan.negative_prompt
    assert [p.name for p in services.projects.list()] == ["Big", "Lighthouse"]
    assert services.projects.get_by_name("Lighthouse").id == project.id
    assert services.projects.find(str(project.id)).id == project.id


def test_find_reads_a_name_before_an_id(sqlite_services):
    first = sqlite_services.projects.create("Lighthouse")
    second = sqlite_services.projects.create("Harbour")
    # A film titled with the other project's id: the name wins, digits fall back to an id only when no name matches.
    titled = sqlite_services.projects.create(str(first.id))
    assert titled.id != first.id
    assert sqlite_services.projects.find(str(first.id)).id == titled.id
    assert sqlite_services.projects.find(str(second.id)).id == second.id
    assert sqlite_services.projects.find(first.id).id == first.id
    with pytest.raises(NotFoundError):
        sqlite_services.projects.find("no such film")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "  "}, "project name is empty"),
        ({"name": "x" * 201}, "shorten it to 200"),
        ({"name": "P", "preset": "sora"}, "unknown model preset 'sora'"),
        ({"name": "P", "width": 70}, "width must be a multiple of 16 for preset demo \\(e.g. 64 or 80\\)"),
        ({"name": "P", "preset": "wan2.2-ti2v-5b", "height": 720}, "multiple of 32"),
        ({"name": "P", "fps": 0}, "fps must be between 1 and 120"),
        ({"name": "P", "guidance": "high"}, "guidance must be a number"),
        ({"name": "P", "colour": "red"}, "unknown project setting"),
    ],
)
def test_project_validation(sqlite_services, kwargs, message):
    with pytest.raises(ValidationError, match=message):
        sqlite_services.projects.create(**kwargs)


def test_project_names_are_unique_ignoring_case(services):
    services.projects.create("Lighthouse")
    with pytest.raises(ConflictError, match="already exists"):
        services.projects.create("lighthouse")
    other = services.projects.create("Harbour")
    with pytest.raises(ConflictError):
        services.projects.rename(other.id, "LIGHTHOUSE")
    assert services.projects.rename(other.id, "Harbour at dawn").name == "Harbour at dawn"


def test_project_bin_and_restore(services):
    project = services.projects.create("Binned")
    assert services.projects.delete(project.id).in_bin
    assert services.projects.list() == []
    assert [p.id for p in services.projects.list(include_binned=True)] == [project.id]
    assert not services.projects.restore(project.id).in_bin
    with pytest.raises(NotFoundError, match="project 999"):
        services.projects.get(999)


def test_update_settings_checks_shots_against_new_preset(services):
    project = services.projects.create("P", preset="demo")
    scene = services.storyboard.add_scene(project.id)
    services.storyboard.add_shot(scene.id, "wide", num_frames=33)
    updated = services.projects.update_settings(project.id, steps=8, negative_prompt="blur")
    assert (updated.steps, updated.negative_prompt, updated.width) == (8, "blur", 64)
    # demo allows 33 frames; tiny allows 33 too, wan 1.3b allows 5..81: fine. Shrink via a preset with max 33 ok.
    with pytest.raises(ValidationError, match="multiple of 16"):
        services.projects.update_settings(project.id, width=72)
    assert services.projects.update_settings(project.id, preset="tiny").preset == "tiny"


def test_character_defaults_and_uniqueness(services):
    project = services.projects.create("P")
    mara = services.characters.create(project.id, "Mara", description="keeper in a red scarf")
    assert (mara.trigger, mara.adapter_kind, mara.reference_count) == ("<mara>", "none", 0)
    tom = services.characters.create(project.id, "Old Tom")
    assert tom.trigger == "<old-tom>"
    with pytest.raises(ConflictError, match="already has a character named 'Mara'"):
        services.characters.create(project.id, "mara")
    with pytest.raises(ConflictError, match="trigger <mara> is already used by Mara"):
        services.characters.create(project.id, "Mara Two", trigger="<mara>")
    with pytest.raises(ValidationError, match="must look like <mara>"):
        services.characters.create(project.id, "Ann", trigger="ann")
    # the same name is fine in another project
    other = services.projects.create("Other")
    assert services.characters.create(other.id, "Mara").project_id == other.id
    updated = services.characters.update(tom.id, name="Tom", description="the old keeper", adapter_kind="lora")
    assert (updated.name, updated.trigger, updated.adapter_kind) == ("Tom", "<old-tom>", "lora")
    assert [c.name for c in services.characters.list(project.id)] == ["Mara", "Tom"]


def test_references_are_validated_and_analysed(services):
    project = services.projects.create("P")
    mara = services.characters.create(project.id, "Mara")
    reference = services.characters.add_reference(mara.id, "refs/mara_1.png", png_bytes(40, 30))
    assert (reference.width, reference.height, reference.original_name) == (40, 30, "refs/mara_1.png")
    assert reference.face_box is None and reference.flags == ()
    assert services.assets.get(reference.asset_id).mime == "image/png"
    with pytest.raises(ConflictError, match="already a reference"):
        services.characters.add_reference(mara.id, "copy.png", png_bytes(40, 30))
    with pytest.raises(ValidationError, match="not a readable"):
        services.characters.add_reference(mara.id, "evil.png", b"<?php system($_GET['x']); ?>")
    analysed = services.characters.set_reference_analysis(
        reference.id, face_box=[1, 2, 30, 28], embedding=[0.5] * 512, flags=["low_quality"]
    )
    assert analysed.face_box == (1.0, 2.0, 30.0, 28.0)
    assert len(analysed.face_embedding) == 512 and analysed.flags == ("low_quality",)
    assert analysed.analyzed_at is not None
    with pytest.raises(ValidationError, match="512 finite floats"):
        services.characters.set_reference_analysis(reference.id, face_box=None, embedding=[0.1] * 10)
    with pytest.raises(ValidationError, match="unknown flag"):
        services.characters.set_reference_analysis(reference.id, face_box=None, embedding=None, flags=["blurry"])
    assert services.characters.get(mara.id).reference_count == 1
    image_path = services.assets.path_of(reference.asset_id)
    assert image_path.exists()
    services.characters.delete_reference(reference.id)
    assert services.characters.list_references(mara.id) == []
    assert not image_path.exists()  # nothing else used the file


def test_adapters_version_and_status(services):
    project = services.projects.create("P")
    mara = services.characters.create(project.id, "Mara")
    first = services.characters.add_adapter(mara.id, "lora", "demo", {"rank": 8, "steps": 200})
    assert (first.version, first.status, first.weights_asset_id) == (1, "pending", None)
    with pytest.raises(ValidationError, match="only be ready with its weights"):
        services.characters.update_adapter_status(first.id, "ready")
    ready = services.characters.update_adapter_status(
        first.id, "ready", metrics={"loss": 0.12}, weights=safetensors_bytes()
    )
    assert ready.status == "ready" and ready.metrics == {"loss": 0.12} and ready.weights_asset_id is not None
    second = services.characters.add_adapter(mara.id, "lora", "demo")
    assert second.version == 2
    assert services.characters.latest_ready_adapter(mara.id).id == first.id
    with pytest.raises(ValidationError, match="not a .safetensors"):
        services.characters.add_adapter(mara.id, "imported", "demo", weights=b"\x80\x04pickle")
    imported = services.characters.add_adapter(
        mara.id, "imported", "demo", status="ready", weights=safetensors_bytes()
    )
    assert imported.version == 1 and imported.weights_asset_id is not None
    with pytest.raises(ValidationError, match="unknown adapter kind"):
        services.characters.add_adapter(mara.id, "dreambooth", "demo")
    assert [a.id for a in services.characters.list_adapters(mara.id)] == [first.id, second.id, imported.id]


def test_purge_removes_a_binned_project_and_only_its_files(services):
    from tests.core_services.helpers import add_take

    keep = services.projects.create("Keep")
    gone = services.projects.create("Gone")
    shared = png_bytes(30, 30, color=(1, 2, 3))
    for project in (keep, gone):
        character = services.characters.create(project.id, "Mara")
        services.characters.add_reference(character.id, "mara.png", shared)
    scene = services.storyboard.add_scene(gone.id)
    shot = services.storyboard.add_shot(scene.id, "wide")
    take = add_take(services, shot.id)
    job = services.jobs.enqueue(GenerateScene(scene_id=scene.id), project_id=gone.id)
    video = services.assets.path_of(take.video_asset_id)
    with pytest.raises(ConflictError, match="not in the bin"):
        services.projects.purge(gone.id)
    services.projects.delete(gone.id)
    assert services.projects.purge(gone.id) == 3  # video, thumbnail, latents; the shared reference stays
    assert not video.exists()
    assert [p.name for p in services.projects.list(include_binned=True)] == ["Keep"]
    [reference] = services.characters.list_references(services.characters.list(keep.id)[0].id)
    assert services.assets.read_bytes(reference.asset_id) == shared
    assert services.jobs.get(job.id).project_id is None
