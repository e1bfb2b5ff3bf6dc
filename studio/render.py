"""Headless rendering: `python -m studio render STORYBOARD.yaml --out film.mp4 [--regenerate SHOT]`.

The flow (DESIGN.md section 4): import the storyboard into its project (or update the one it made before), train
missing adapters, generate what has no take, export the film. `--regenerate SHOT` (1-based over the whole film, or
`scene.shot`) makes one new take of that shot and re-exports.

This module holds what the foundation can do without a model: validating the file and the shot reference. The
worker engineer completes `render_storyboard` by enqueuing jobs (train_adapter, generate_scene or
regenerate_shot, export_film) and waiting for them; until then it refuses with BackendUnavailableError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from studio.storyboard_file import StoryboardDoc, StoryboardError, load_storyboard


class BackendUnavailableError(RuntimeError):
    """No generation backend is installed in this studio yet."""


@dataclass(frozen=True)
class ShotRef:
    """A shot picked on the command line: (scene index, shot index within the scene), both 0-based."""

    scene_index: int
    shot_index: int


def parse_shot_ref(doc: StoryboardDoc, ref: str) -> ShotRef:
    """`7` = the 7th shot of the film; `2.3` = scene 2, shot 3 (1-based, as a film-maker counts)."""
    text = str(ref).strip()
    counts = [len(scene.shots) for scene in doc.scenes]
    total = sum(counts)
    try:
        if "." in text:
            scene_text, shot_text = text.split(".", 1)
            scene_number, shot_number = int(scene_text), int(shot_text)
            if not 1 <= scene_number <= len(counts) or not 1 <= shot_number <= counts[scene_number - 1]:
                raise IndexError
            return ShotRef(scene_number - 1, shot_number - 1)
        number = int(text)
        if not 1 <= number <= total:
            raise IndexError
    except ValueError:
        raise StoryboardError(
            f"--regenerate {ref!r}: give a shot number (1..{total}) or scene.shot (e.g. 1.2)", doc.source
        ) from None
    except IndexError:
        layout = ", ".join(f"scene {i + 1}: {n} shots" for i, n in enumerate(counts))
        raise StoryboardError(f"--regenerate {ref!r}: no such shot ({layout})", doc.source) from None
    for scene_index, count in enumerate(counts):
        if number <= count:
            return ShotRef(scene_index, number - 1)
        number -= count
    raise AssertionError("unreachable")


def render_storyboard(services, path: str | Path, out: str | Path, regenerate: str | None = None) -> Path:
    """Render the storyboard at `path` to the film `out`; returns the film's path.

    Raises StoryboardError for a bad file or shot reference, BackendUnavailableError while no model backend exists.
    """
    doc = load_storyboard(path)
    if regenerate is not None:
        parse_shot_ref(doc, regenerate)
    raise BackendUnavailableError(
        "no model backend is available yet: this studio cannot generate video, so nothing was queued "
        "(the storyboard file is valid; `python -m studio import` stores it in a project)"
    )
