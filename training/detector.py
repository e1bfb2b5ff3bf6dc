"""Reads frames of the procedural world back: location, and the one figure's colour, shape, size, position, motion.

Generated frames are judged by the same code that reads real frames at 100% (tests/demo/test_detector.py).
Every pixel is given the nearest colour of the world's palette; figure pixels (character colours and ink) are
grouped into 8-connected components and only the largest one is the figure. A figure is *coherent* when that one
component holds most of the figure pixels and matches a shape template; fragmented blobs are not coherent, so
cross-shot consistency cannot be won by colour fill alone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from training.world import ALL_COLOURS, ALL_SHAPES, DEFAULT_FIGURE_SCALE, FIGURE_SCALES, INK, LOCATIONS, shape_mask

TEMPLATE_SIZE = 24
MIN_FIGURE_PIXELS = 12  # at 64x64; fewer figure pixels than this means no figure
COHERENT_SHARE = 0.8  # the largest component must hold this share of all figure pixels
COHERENT_SCORE = 0.6  # and match its best shape template at least this well
MOTION_PIXELS = 5.0  # centre displacement (at 64x64) below which a figure "stays"
GROWTH_RATIO = 1.25  # last/first height ratio above which a figure "grows" (below the inverse: "shrinks")


@dataclass
class Figure:
    colour: str
    shape: str
    shape_score: float  # template IoU minus the aspect penalty, 1 = perfect
    cx: float  # centre of the bounding box, pixels at 64x64
    cy: float
    width: float
    height: float
    pixels: int  # pixels in the largest component
    share: float  # share of all figure pixels in the largest component

    @property
    def coherent(self) -> bool:
        return self.share >= COHERENT_SHARE and self.shape_score >= COHERENT_SCORE


@dataclass
class FrameReading:
    location: str
    figure: Figure | None


@dataclass
class ShotReading:
    location: str
    colour: str | None
    shape: str | None
    shot_size: str | None
    action: str | None
    coherent: bool  # a coherent figure was found in most frames
    frames: list[FrameReading]

    def attributes(self) -> dict[str, str | None]:
        return {
            "location": self.location,
            "colour": self.colour,
            "shape": self.shape,
            "shot_size": self.shot_size,
            "action": self.action,
        }


def _palette() -> tuple[np.ndarray, list[tuple[str, str]]]:
    colours, owners = [], []
    for loc in LOCATIONS:
        for rgb in (loc.sky, loc.ground, loc.post):
            colours.append(rgb)
            owners.append(("location", loc.name))
    for name, rgb in ALL_COLOURS.items():  # the held-out characters' colours too (world.NEW_COLOURS)
        colours.append(rgb)
        owners.append(("colour", name))
    colours.append(INK)
    owners.append(("ink", "ink"))
    return np.array(colours, dtype=np.float32), owners


PALETTE, PALETTE_OWNERS = _palette()
LOCATION_NAMES = [loc.name for loc in LOCATIONS]
COLOUR_NAMES = list(ALL_COLOURS)


@lru_cache(maxsize=1)
def _templates() -> dict[str, tuple[np.ndarray, float]]:
    """Each shape rendered large, cropped to its box and resized: (mask, width/height aspect)."""
    n = 480
    coords = (np.arange(n) + 0.5) / n * 2.4 - 1.2
    v, u = np.meshgrid(coords, coords, indexing="ij")
    out = {}
    for shape in ALL_SHAPES:  # the held-out shapes too (world.NEW_SHAPES)
        mask = shape_mask(shape, u, v)
        ys, xs = np.nonzero(mask)
        crop = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        aspect = crop.shape[1] / crop.shape[0]
        out[shape] = (_resize_mask(crop), aspect)
    return out


def _resize_mask(mask: np.ndarray) -> np.ndarray:
    """Area-resample a boolean crop to TEMPLATE_SIZE x TEMPLATE_SIZE and threshold at half coverage."""
    h, w = mask.shape
    ys = (np.arange(TEMPLATE_SIZE * 4) + 0.5) * h / (TEMPLATE_SIZE * 4)
    xs = (np.arange(TEMPLATE_SIZE * 4) + 0.5) * w / (TEMPLATE_SIZE * 4)
    fine = mask[ys.astype(int)][:, xs.astype(int)].astype(np.float32)
    coarse = fine.reshape(TEMPLATE_SIZE, 4, TEMPLATE_SIZE, 4).mean(axis=(1, 3))
    return coarse >= 0.5


def classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """Best shape for a boolean crop (the component's bounding box) and its score."""
    h, w = mask.shape
    observed = _resize_mask(mask)
    aspect = w / h
    best, best_score = ALL_SHAPES[0], -1e9
    for shape, (template, template_aspect) in _templates().items():
        iou = (observed & template).sum() / max(1, (observed | template).sum())
        score = iou - 0.5 * abs(np.log(aspect / template_aspect))
        if score > best_score:
            best, best_score = shape, float(score)
    return best, best_score


def classify_pixels(frame: np.ndarray) -> np.ndarray:
    """Index into PALETTE of the nearest palette colour of every pixel, [H, W]."""
    pixels = frame.reshape(-1, 3).astype(np.float32)
    dist = ((pixels[:, None, :] - PALETTE[None, :, :]) ** 2).sum(-1)
    return dist.argmin(-1).reshape(frame.shape[:2])


def read_frame(frame: np.ndarray) -> FrameReading:
    """One uint8 [H, W, 3] frame (any square size; positions are reported at 64x64)."""
    scale = 64 / frame.shape[1]
    labels = classify_pixels(frame)
    kinds = np.array([kind for kind, _ in PALETTE_OWNERS])
    names = np.array([name for _, name in PALETTE_OWNERS])
    kind_map, name_map = kinds[labels], names[labels]
    background = kind_map == "location"
    votes = Counter(name_map[background].tolist())
    location = votes.most_common(1)[0][0] if votes else LOCATION_NAMES[0]

    is_figure = ~background
    total = int(is_figure.sum())
    if total * scale * scale < MIN_FIGURE_PIXELS:
        return FrameReading(location, None)
    components, count = ndimage.label(is_figure, structure=np.ones((3, 3), dtype=int))
    sizes = np.bincount(components.ravel())[1:]
    largest = int(sizes.argmax()) + 1
    mask = components == largest
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    shape, score = classify_shape(mask[y0:y1, x0:x1])
    colour_votes = Counter(name_map[mask & (kind_map == "colour")].tolist())
    colour = colour_votes.most_common(1)[0][0] if colour_votes else "ink"
    figure = Figure(
        colour=colour,
        shape=shape,
        shape_score=score,
        cx=(x0 + x1) / 2 * scale,
        cy=(y0 + y1) / 2 * scale,
        width=(x1 - x0) * scale,
        height=(y1 - y0) * scale,
        pixels=int(mask.sum()),
        share=float(mask.sum() / total),
    )
    return FrameReading(location, figure)


def _majority(values: list) -> str | None:
    values = [v for v in values if v is not None]
    return Counter(values).most_common(1)[0][0] if values else None


def size_name(height: float, figure_scale: str = DEFAULT_FIGURE_SCALE) -> str:
    """Shot size of a median figure height (at 64x64) under the thresholds of `figure_scale` (world.FIGURE_SCALES)."""
    wide_medium, medium_close_up = FIGURE_SCALES[figure_scale].size_thresholds
    if height < wide_medium:
        return "wide"
    return "medium" if height < medium_close_up else "close-up"


def motion_name(first: Figure, last: Figure) -> str:
    ratio = last.height / first.height
    if ratio >= GROWTH_RATIO:
        return "grows"
    if ratio <= 1 / GROWTH_RATIO:
        return "shrinks"
    dx, dy = last.cx - first.cx, last.cy - first.cy
    if max(abs(dx), abs(dy)) < MOTION_PIXELS:
        return "stays"
    if abs(dx) >= abs(dy):
        return "moves right" if dx > 0 else "moves left"
    return "moves down" if dy > 0 else "moves up"


def read_shot(frames: np.ndarray, figure_scale: str = DEFAULT_FIGURE_SCALE) -> ShotReading:
    """One shot, uint8 [F, H, W, 3] (or float in [0, 1]); `figure_scale` names the shot sizes (world.FIGURE_SCALES)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
    readings = [read_frame(frame) for frame in frames]
    figures = [r.figure for r in readings if r.figure is not None]
    location = _majority([r.location for r in readings])
    if not figures:
        return ShotReading(location, None, None, None, None, False, readings)
    colour = _majority([f.colour for f in figures])
    shape = _majority([f.shape for f in figures])
    shot_size = size_name(float(np.median([f.height for f in figures])), figure_scale)
    action = motion_name(figures[0], figures[-1]) if len(figures) >= 2 else None
    coherent = sum(f.coherent for f in figures) >= 0.8 * len(readings)
    return ShotReading(location, colour, shape, shot_size, action, coherent, readings)


def consistent(readings: list[ShotReading]) -> bool:
    """Cross-shot consistency of one character: one coherent figure of the same colour and shape in every shot."""
    if not readings or not all(r.coherent for r in readings):
        return False
    return len({(r.colour, r.shape) for r in readings}) == 1
