"""The demo model's example storyboard (assets/examples/demo_world.yaml): its kai reference stills.

    python -m training.demo_example            # rewrites assets/examples/refs/kai_1.png .. kai_6.png

The stills are `training.world.reference_stills` (the same shots `eval/evaluate_adapters.py` trains on),
deterministic, so the PNGs in the repository equal a fresh render (tests/demo/test_demo_example.py checks it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.loading import DEMO_MODEL_DIR
from training.world import NEW_CHARACTERS, recorded_figure_scale, reference_stills

EXAMPLE = Path(__file__).resolve().parent.parent / "assets" / "examples" / "demo_world.yaml"
REFS_DIR = EXAMPLE.parent / "refs"
CHARACTER = NEW_CHARACTERS[0].name  # kai
REFERENCE_COUNT = 6


def reference_paths(out_dir: Path = REFS_DIR, count: int = REFERENCE_COUNT) -> list[Path]:
    return [out_dir / f"{CHARACTER}_{i + 1}.png" for i in range(count)]


def reference_images(count: int = REFERENCE_COUNT) -> list[np.ndarray]:
    """The example's kai references, uint8 [64, 64, 3] each, drawn at the figure scale the shipped model was trained
    on (a reference of another size than the model draws would teach the LoRA a figure the shots never show)."""
    return reference_stills(CHARACTER, count, figure_scale=recorded_figure_scale(DEMO_MODEL_DIR))


def write_references(out_dir: Path = REFS_DIR, count: int = REFERENCE_COUNT) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = reference_paths(out_dir, count)
    for path, image in zip(paths, reference_images(count), strict=True):
        Image.fromarray(image).save(path, format="PNG", optimize=True)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REFS_DIR, help="folder for kai_N.png")
    parser.add_argument("--count", type=int, default=REFERENCE_COUNT, help="reference stills, 4 to 8")
    args = parser.parse_args(argv)
    for path in write_references(args.out, args.count):
        print(path)


if __name__ == "__main__":
    main()
