"""`character add`, `adapter train`, `adapter import`: results printed, refusals on one line with exit 1."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import pytest
import torch
from character_helpers import GREEN, RED, png_bytes, tiny_project
from face_models import face_picture
from safetensors.torch import save

from pipelines.tiny import build_tiny_components
from studio.characters import commands

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "adapters"))
from adapter_helpers import random_lora_state  # noqa: E402

from studio.services.job_specs import TrainAdapter, spec_of


def run(services, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="studio")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args, services)


def test_character_add_with_references(sqlite_services, tmp_path, capsys):
    services = sqlite_services
    tiny_project(services, "Lighthouse")
    one = tmp_path / "mara.png"
    one.write_bytes(png_bytes(face_picture([(20, 30, 64, RED)])))
    two = tmp_path / "group.png"
    two.write_bytes(png_bytes(face_picture([(2, 2, 36, GREEN), (60, 56, 64, RED)])))
    code = run(
        services,
        "character",
        "add",
        "Lighthouse",
        "Mara",
        "--ref",
        str(one),
        "--ref",
        str(two),
        "--adapter",
        "lora",
        "--description",
        "a keeper",
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "character Mara" in out and "<mara>" in out
    assert "stored (faces not analysed)" in out  # no face models in this data dir
    assert "note: face models not found" in err and "buffalo_l" in err
    [mara] = services.characters.list(services.projects.get_by_name("Lighthouse").id)
    assert mara.adapter_kind == "lora" and len(services.characters.list_references(mara.id)) == 2

    # Without the face models `analyze` refuses with where to put them; with them it finds the faces.
    assert run(services, "character", "analyze", "Lighthouse", "Mara") == 1
    assert "buffalo_l" in capsys.readouterr().err
    from face_models import build_face_pack

    build_face_pack(services.settings.resolved_face_model_dir)
    assert run(services, "character", "analyze", "Lighthouse", "Mara") == 0
    out = capsys.readouterr().out
    assert "mara.png\tface at [20, 30, 84, 94]" in out and "2 faces found" in out
    assert run(services, "character", "refs", "Lighthouse", "Mara") == 0
    assert "several faces" in capsys.readouterr().out

    assert run(services, "character", "add", "Lighthouse", "Mara") == 1
    assert capsys.readouterr().err.startswith("error: this project already has a character named 'Mara'")
    assert run(services, "character", "add", "Lighthouse", "Tom", "--ref", str(tmp_path / "gone.png")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and "gone.png" in err
    assert [c.name for c in services.characters.list(mara.project_id)] == ["Mara"]  # Tom not half-made
    assert run(services, "character", "add", "Nowhere", "Tom") == 1
    assert "error:" in capsys.readouterr().err


def test_adapter_train_queue_and_now(sqlite_services, tmp_path, capsys):
    services = sqlite_services
    project = tiny_project(services, "Lighthouse")
    mara = services.characters.create(project.id, "Mara")
    services.characters.add_reference(mara.id, "m.png", png_bytes(face_picture([(20, 30, 64, RED)])))
    assert run(services, "adapter", "train", "Lighthouse", "Mara", "--kind", "embedding", "--rank", "4") == 1
    assert "--rank is a LoRA setting" in capsys.readouterr().err
    assert run(services, "adapter", "train", "Lighthouse", "Mara", "--steps", "5") == 0
    assert "queued job" in capsys.readouterr().out
    [job] = services.jobs.list_jobs(project_id=project.id)
    assert spec_of(job) == TrainAdapter(character_id=mara.id, kind="lora", hyperparameters={"steps": 5})
    # A Tom job queued first: `--now` runs the queue in order, so Tom's job is done too, not left claimed.
    tom = services.characters.create(project.id, "Tom")
    services.characters.add_reference(tom.id, "t.png", png_bytes(face_picture([(20, 30, 50, GREEN)])))
    tom_job = services.jobs.enqueue(
        TrainAdapter(character_id=tom.id, kind="embedding", hyperparameters={"steps": 3}),
        project_id=project.id,
    )
    services.jobs.request_cancel(job.id)
    services.jobs.mark_cancelled(job.id)

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = run(services, "adapter", "train", "Lighthouse", "mara", "--steps", "10", "--now")
    finally:
        torch.set_num_threads(previous)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "lora v1) ready" in out and "lora step 10/10" in err
    [adapter] = services.characters.list_adapters(mara.id)
    assert adapter.status == "ready" and services.jobs.get(adapter.job_id).status == "done"
    assert services.jobs.get(tom_job.id).status == "done"
    assert [a.kind for a in services.characters.list_adapters(tom.id)] == ["embedding"]
    assert run(services, "adapter", "list", "Lighthouse", "Mara") == 0
    assert "lora v1\tready\ttiny" in capsys.readouterr().out


def test_adapter_import_and_refusals(sqlite_services, tmp_path, capsys):
    services = sqlite_services
    project = tiny_project(services, "Lighthouse")
    mara = services.characters.create(project.id, "Mara")
    state = random_lora_state(build_tiny_components()["transformer"])
    good = tmp_path / "mara.safetensors"
    good.write_bytes(save(state))
    assert run(services, "adapter", "import", "Lighthouse", "Mara", str(good), "--trigger-text", "mara") == 0
    assert "diffusers layout, rank 2, 16 layers" in capsys.readouterr().out

    pickle = tmp_path / "mara.pt"
    buffer = io.BytesIO()
    torch.save(state, buffer)
    pickle.write_bytes(buffer.getvalue())
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(save(state)[:50])
    cases = [
        (str(pickle), "pickles that can run code"),
        (str(broken), "safetensors"),
        (str(tmp_path / "gone.safetensors"), "gone.safetensors"),
        (str(tmp_path), "is a folder"),
    ]
    for path, message in cases:
        assert run(services, "adapter", "import", "Lighthouse", "Mara", path) == 1
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err and err.count("\n") == 1, err
    assert run(services, "adapter", "import", "Lighthouse", "Nobody", str(good)) == 1
    assert "no character 'Nobody'" in capsys.readouterr().err
    assert len(services.characters.list_adapters(mara.id)) == 1


@pytest.mark.parametrize("argv", [["character"], ["adapter"]])
def test_subcommand_is_required(sqlite_services, argv):
    with pytest.raises(SystemExit):
        run(sqlite_services, *argv)


def test_character_caption_sets_shows_and_refuses(sqlite_services, tmp_path, capsys):
    services = sqlite_services
    project = tiny_project(services, "Lighthouse")
    mara = services.characters.create(project.id, "Mara")
    reference = services.characters.add_reference(mara.id, "mara.png", png_bytes(face_picture([(20, 30, 64, RED)])))
    capsys.readouterr()
    assert run(services, "character", "caption", "Lighthouse", "Mara", "mara.png", "close-up shot, <mara> smiles") == 0
    assert capsys.readouterr().out.strip() == f"{reference.id}\tmara.png\tclose-up shot, <mara> smiles"
    assert run(services, "character", "refs", "Lighthouse", "Mara") == 0
    assert capsys.readouterr().out.rstrip("\n").endswith("\tclose-up shot, <mara> smiles")

    assert run(services, "character", "caption", "Lighthouse", "Mara", str(reference.id), "a keeper smiles") == 1
    assert "must name Mara by the trigger <mara>" in capsys.readouterr().err
    assert run(services, "character", "caption", "Lighthouse", "Mara", "tom.png", "<mara>") == 1
    assert f"'tom.png' is not one of them: Mara's references are {reference.id} (mara.png)" in capsys.readouterr().err
    assert services.characters.get_reference(reference.id).caption == "close-up shot, <mara> smiles"  # unchanged
    assert run(services, "character", "caption", "Lighthouse", "Mara", "mara.png", "") == 0
    assert services.characters.get_reference(reference.id).caption == ""
