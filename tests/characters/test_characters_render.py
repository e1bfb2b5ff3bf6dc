"""`render` with a character that asks for a LoRA: trained on demand before generation, used and recorded by
the takes; new reference pictures in the storyboard make it stale, and the next render trains version 2."""

from __future__ import annotations

import pytest
import torch
from character_helpers import BLUE, RED, png_bytes
from face_models import face_picture

from studio.render import render_storyboard

STORYBOARD = """\
title: Keeper
model: tiny
width: 32
height: 32
fps: 8
steps: 2
characters:
  - name: Mara
    references: [{refs}]
    description: a keeper in red
    adapter: lora
scenes:
  - caption: a lighthouse at night
    shots:
      - caption: Mara climbs the stairs
        frames: 5
        characters: [Mara]
"""


@pytest.mark.slow
def test_render_trains_missing_and_stale_adapters_first(sqlite_services, tmp_path):
    services = sqlite_services
    (tmp_path / "mara_1.png").write_bytes(png_bytes(face_picture([(20, 30, 64, RED)])))
    (tmp_path / "mara_2.png").write_bytes(png_bytes(face_picture([(10, 10, 70, BLUE)])))
    story = tmp_path / "story.yaml"
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        story.write_text(STORYBOARD.format(refs="mara_1.png"))
        lines = []
        render_storyboard(services, story, tmp_path / "film.mp4", log=lines.append)
        # How long the training takes is said before it starts (no training ran here before: its steps only).
        first = "training Mara's LoRA first (150 steps; no training has run on this machine yet to time it)"
        said = lines.index(first)
        assert not any(line.startswith("training adapters:") for line in lines[:said])
        project = services.projects.get_by_name("Keeper")
        [mara] = services.characters.list(project.id)
        [first] = services.characters.list_adapters(mara.id)
        assert (first.kind, first.version, first.status) == ("lora", 1, "ready")
        [shot] = services.storyboard.film_shots(project.id)
        take = services.takes.chosen_take(shot.id)
        assert [(a["id"], a["version"]) for a in take.params["adapters"]] == [(first.id, 1)]
        assert take.params["adapter_shots"] == {f"lora_{first.id}_v1": [0]}  # Mara's LoRA scoped to her shot
        assert "<mara>" not in take.params["caption"] and "mara" in take.params["caption"]
        training_jobs = [j for j in services.jobs.list_jobs(project_id=project.id) if j.kind == "train_adapter"]
        assert len(training_jobs) == 1 and training_jobs[0].id == first.job_id

        # A new reference: the LoRA is stale, the next render trains version 2 before regenerating anything.
        story.write_text(STORYBOARD.format(refs="mara_1.png, mara_2.png"))
        lines.clear()
        render_storyboard(services, story, tmp_path / "film.mp4", regenerate="1", log=lines.append)
        # The first training timed this machine: the second is estimated from it.
        assert any(
            line.startswith("training Mara's LoRA first, about ") and line.endswith(" on this machine (150 steps)")
            for line in lines
        )
        versions = sorted(a.version for a in services.characters.list_adapters(mara.id))
        assert versions == [1, 2]
        newest = services.takes.chosen_take(shot.id)
        second = max(services.characters.list_adapters(mara.id), key=lambda a: a.version)
        assert [(a["id"], a["version"]) for a in newest.params["adapters"]] == [(second.id, 2)]
    finally:
        torch.set_num_threads(previous)
