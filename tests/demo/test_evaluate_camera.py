"""The camera-move reading of eval/evaluate_camera.py: a pan's background scroll on real frames, none on a still
background, whatever the figure does."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from eval.evaluate_camera import TRAVEL_PX, background_scroll, camera_shots, score
from eval.evaluate_demo import held_out_scenes
from training.world import render_shot


def test_real_pans_scroll_their_travel_and_a_still_background_reads_still():
    scenes = camera_shots(held_out_scenes(6))
    shots = [shot for _, _, scene_shots in scenes for shot in scene_shots]
    assert {shot.camera for shot in shots} == {"static", "pans left", "pans right"}
    readings = [(shot.camera, background_scroll(render_shot(shot), shot)) for shot in shots]
    for camera, scroll in readings:
        wanted = {"static": 0, "pans left": TRAVEL_PX, "pans right": -TRAVEL_PX}[camera]
        assert abs(scroll - wanted) <= 4, (camera, scroll)
    assert score(readings)["pans_followed"] == 1.0 and score(readings)["static_held"] == 1.0
    # A pan drawn with the background frozen (what the demo model mostly does) is not followed.
    pan = next(shot for shot in shots if shot.camera == "pans left" and shot.action in ("moves left", "moves right"))
    frozen = render_shot(replace(pan, camera="static"))
    assert background_scroll(frozen, pan) == 0
    assert score([("pans left", background_scroll(frozen, pan))])["pans_followed"] == 0.0
    assert background_scroll(np.repeat(render_shot(pan)[:1], 17, axis=0), pan) == 0
