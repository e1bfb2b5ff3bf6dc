"""The storyboard file (docs/ARCHITECTURE.md, "Storyboard file"): parse, import into a project, export from a project.

- `doc`: the parsed document's dataclasses, the file's field names, `StoryboardLimits` and `StoryboardError`.
- `yaml_lines`: the safe YAML loader whose mappings remember their lines.
- `parse`: text -> `StoryboardDoc`, every error naming its line and field (`parse_storyboard`, `load_storyboard`).
- `importing`: a document -> a project, idempotent and all or nothing (`import_storyboard`, `ImportReport`).
- `exporting`: a project -> storyboard YAML (`export_storyboard`), and the pictures a file names that its project
  already holds (`held_reference_images`).
"""

from studio.storyboard_file.doc import (
    StoryboardCharacter,
    StoryboardDoc,
    StoryboardError,
    StoryboardLimits,
    StoryboardScene,
    StoryboardShot,
)
from studio.storyboard_file.exporting import export_storyboard, held_reference_images
from studio.storyboard_file.importing import ImportReport, import_storyboard
from studio.storyboard_file.parse import load_storyboard, parse_storyboard

__all__ = [
    "ImportReport",
    "StoryboardCharacter",
    "StoryboardDoc",
    "StoryboardError",
    "StoryboardLimits",
    "StoryboardScene",
    "StoryboardShot",
    "export_storyboard",
    "held_reference_images",
    "import_storyboard",
    "load_storyboard",
    "parse_storyboard",
]
