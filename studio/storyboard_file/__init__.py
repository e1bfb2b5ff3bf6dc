"""The storyboard file (docs/ARCHITECTURE.md, "Storyboard file"): parse, import, export."""

from studio.storyboard_file.parse import (
    ImportReport,
    StoryboardCharacter,
    StoryboardDoc,
    StoryboardError,
    StoryboardLimits,
    StoryboardScene,
    StoryboardShot,
    export_storyboard,
    held_reference_images,
    import_storyboard,
    load_storyboard,
    parse_storyboard,
)

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
