"""A deterministic procedural film world: the data the bundled demo model is trained on and evaluated against.

A scene happens in one location (a two-tone background with posts in the ground, constant within the scene) with
two recurring characters. Each shot shows one character as one flat figure (its own colour, shape and
pattern) at a shot size (wide = small figure, close-up = large figure), doing one action (moves left / right /
up / down, grows, shrinks, stays) under a camera move (static, or a pan that scrolls the background).

Actions are in screen space: "mara moves left" means the figure's centre goes left in the frame whatever the camera
does, so the detector can read motion from the figure alone. Everything is drawn with hard edges on exact palette
colours so that `training.detector` reads real frames back without error.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# --- vocabulary ---------------------------------------------------------------------------------------------------

INK = (25, 25, 25)  # pattern colour of every character (no location uses a dark colour)


@dataclass(frozen=True)
class Character:
    name: str  # the word captions use
    colour: str
    shape: str
    pattern: str


@dataclass(frozen=True)
class Location:
    name: str
    sky: tuple[int, int, int]
    ground: tuple[int, int, int]

    @property
    def post(self) -> tuple[int, int, int]:
        """Posts planted in the ground: they scroll when the camera pans."""
        return tuple(int(c * 0.8) for c in self.ground)


COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "orange": (250, 140, 20),
    "yellow": (240, 225, 30),
    "green": (30, 175, 50),
    "cyan": (20, 205, 215),
    "blue": (40, 70, 225),
    "purple": (140, 45, 195),
    "pink": (250, 110, 195),
}

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring", "pillar", "tee")
PATTERNS = ("plain", "striped", "dotted", "checked")

CHARACTERS: tuple[Character, ...] = (
    Character("mara", "red", "circle", "plain"),
    Character("tom", "blue", "square", "striped"),
    Character("ana", "yellow", "triangle", "dotted"),
    Character("leo", "green", "diamond", "checked"),
    Character("ivy", "purple", "cross", "plain"),
    Character("max", "orange", "ring", "striped"),
    Character("zoe", "cyan", "pillar", "dotted"),
    Character("sam", "pink", "tee", "plain"),
)

LOCATIONS: tuple[Location, ...] = (
    Location("forest", sky=(165, 205, 150), ground=(90, 125, 70)),
    Location("desert", sky=(250, 230, 175), ground=(200, 150, 95)),
    Location("city", sky=(180, 180, 195), ground=(115, 115, 125)),
    Location("beach", sky=(140, 200, 245), ground=(235, 205, 150)),
    Location("snow", sky=(225, 235, 250), ground=(250, 250, 250)),
    Location("field", sky=(200, 225, 130), ground=(150, 120, 60)),
)

SHOT_SIZES = ("wide", "medium", "close-up")
ACTIONS = ("moves left", "moves right", "moves up", "moves down", "grows", "shrinks", "stays")
CAMERA_MOVES = ("static", "pans left", "pans right")


@dataclass(frozen=True)
class FigureScale:
    """How large each shot size draws the figure, and where the detector puts the boundaries between shot sizes."""

    figure_size: dict[str, int]  # figure height in pixels at 64x64 per shot size (scaled with the frame)
    size_thresholds: tuple[float, float]  # median figure height between wide|medium and medium|close-up


# Figure scales by name; a model records the one it was trained on (`figure_scale` in its training.json) and is
# evaluated on it. grows/shrinks go from size/GROWTH to size*GROWTH, so the median size still names the shot size.
FIGURE_SCALES = {
    # Models without a recorded scale: a wide figure of 14 px is 3.5 latent pixels of a 4x autoencoder, too few
    # for its outline to survive (docs/QUALITY.md, "The world").
    "wide14": FigureScale({"wide": 14, "medium": 24, "close-up": 38}, (18.5, 30.5)),
    # The shipped model's: a wide figure of 20 px (still under a third of the frame), medium 28 px so the two stay as
    # far apart (x1.4) as medium and close-up; thresholds at the geometric means.
    "wide20": FigureScale({"wide": 20, "medium": 28, "close-up": 38}, (23.5, 32.5)),
}
DEFAULT_FIGURE_SCALE = "wide14"


def recorded_figure_scale(folder: Path | None) -> str:
    """The figure scale a model or vae/ folder was trained on: `figure_scale` in its training.json. A checkpoint
    file, no folder, or a folder from before the key existed (the shipped model's) means the default."""
    info = folder / "training.json" if folder is not None and folder.is_dir() else None
    recorded = json.loads(info.read_text()).get("figure_scale") if info is not None and info.exists() else None
    return recorded or DEFAULT_FIGURE_SCALE


GROWTH = 1.25
TRAVEL = 16  # pixels (at 64x64) the figure's centre moves during a shot for moves left/right/up/down
HORIZON = 0.625  # sky above, ground below, as a fraction of the height
POST_SPACING = 16  # pixels between posts at 64x64

# Caption phrases. Every phrase of a kind has the same number of words, so every shot caption (and every global
# caption) is the same number of tokens: training batches scenes with identical token layouts, captions unpadded.
SIZE_PHRASES = {"wide": "wide shot", "medium": "medium shot", "close-up": "close-up shot"}
ACTION_PHRASES = {
    "moves left": "moves left",
    "moves right": "moves right",
    "moves up": "moves up",
    "moves down": "moves down",
    "grows": "grows bigger",
    "shrinks": "shrinks smaller",
    "stays": "stays still",
}
CAMERA_PHRASES = {"static": "camera is static", "pans left": "camera pans left", "pans right": "camera pans right"}

CHARACTER_BY_NAME = {c.name: c for c in CHARACTERS}

# Held-out characters: never drawn by `sample_shot`/`sample_scene` (the demo model never sees them in training)
# and not in `vocabulary()` (the shipped tokenizer does not know their names). They exist so that character
# adapters (LoRA, embedding) can be evaluated on a figure the base model cannot already draw: a colour, a shape and
# a pattern of their own, kept apart from the training world's tuples above so those stay exactly as trained.
# Teal is far from every palette and location colour (131 RGB units, L1, from the nearest, the city's ground) and
# is one the shipped VAE carries (docs/QUALITY.md, "The world": lime, magenta or mint came back as other colours, and
# an adapter cannot draw what the autoencoder cannot decode); the hourglass keeps a waist so it stays one 8-connected
# figure at the wide shot size.
NEW_COLOURS: dict[str, tuple[int, int, int]] = {"teal": (0, 128, 128)}
NEW_SHAPES = ("hourglass",)
NEW_PATTERNS = ("banded",)
NEW_CHARACTERS: tuple[Character, ...] = (Character("kai", "teal", "hourglass", "banded"),)
NEW_CHARACTER_BY_NAME = {c.name: c for c in NEW_CHARACTERS}
# Everything `render_shot` and `make_shot` can draw (training sampling only ever uses CHARACTERS).
ALL_COLOURS = {**COLOURS, **NEW_COLOURS}
ALL_SHAPES = SHAPES + NEW_SHAPES
ALL_CHARACTER_BY_NAME = {**CHARACTER_BY_NAME, **NEW_CHARACTER_BY_NAME}

LOCATION_BY_NAME = {loc.name: loc for loc in LOCATIONS}

# Extra plain words a user may type that the tokenizer should know (they carry no meaning for the demo model).
EXTRA_WORDS = (
    "a an the and of in on at to with is are his her their its from into over under by for then "
    "scene shot camera figure character she he they it , . : ;"
).split()


def vocabulary() -> list[str]:
    """Every word the world's captions use, in a stable order (the tokenizer is built from it)."""
    words: list[str] = []
    phrases = (
        [c.name for c in CHARACTERS]
        + [loc.name for loc in LOCATIONS]
        + list(COLOURS)
        + list(SHAPES)
        + list(PATTERNS)
        + list(SIZE_PHRASES.values())
        + list(ACTION_PHRASES.values())
        + list(CAMERA_PHRASES.values())
        + ["a scene in the with and"]
        + EXTRA_WORDS
    )
    for phrase in phrases:
        for word in phrase.replace(",", " , ").split():
            if word not in words:
                words.append(word)
    return words


# --- scene description ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShotLabels:
    """Ground truth of one shot: what the caption says and what the frames show."""

    character: str
    colour: str
    shape: str
    pattern: str
    location: str
    shot_size: str
    action: str
    camera: str
    start: tuple[float, float]  # figure centre (x, y) at the first frame, in pixels of a 64x64 frame
    figure_scale: str = DEFAULT_FIGURE_SCALE  # key of FIGURE_SCALES: how large the shot size draws the figure

    @property
    def caption(self) -> str:
        return shot_caption(self)


@dataclass
class Scene:
    seed: int
    location: str
    cast: list[str]
    global_caption: str
    shots: list[ShotLabels]
    frames: list[np.ndarray] = field(default_factory=list)  # one uint8 [F, H, W, 3] per shot

    @property
    def captions(self) -> list[str]:
        return [s.caption for s in self.shots]

    def labels(self) -> list[dict]:
        return [asdict(s) for s in self.shots]


def shot_caption(labels: ShotLabels) -> str:
    return reference_caption(labels, labels.character)


# The word an unnamed shot's caption has where the character's name would be (one word, so the caption keeps the
# named caption's token layout). A scene names each character in at least one shot; a later shot of the same
# character may leave it unnamed, and only the other shots' frames can then say who it is.
UNNAMED = "figure"


def unnamed_caption(labels: ShotLabels) -> str:
    """The shot's caption with its character left unnamed: `medium shot, figure moves left, camera is static`."""
    return reference_caption(labels, UNNAMED)


def repeat_appearances(characters: list[str]) -> list[bool]:
    """Per shot: whether an earlier shot of the scene shows the same character (the shots that may go unnamed)."""
    return [name in characters[:i] for i, name in enumerate(characters)]


def global_caption(location: str, cast: list[str]) -> str:
    if len(cast) != 2:
        raise ValueError(f"a scene's cast is two characters, got {cast}")
    return f"a scene in the {location} with {cast[0]} and {cast[1]}"


def make_shot(
    character: str,
    location: str,
    shot_size: str,
    action: str,
    camera: str = "static",
    rng: np.random.Generator | None = None,
    figure_scale: str = DEFAULT_FIGURE_SCALE,
) -> ShotLabels:
    """Labels of one shot; the start position is drawn from `rng` (centred when None) so the whole move fits."""
    if figure_scale not in FIGURE_SCALES:
        raise ValueError(f"unknown figure scale {figure_scale!r}; choose one of: {', '.join(FIGURE_SCALES)}")
    for value, allowed, what in (
        (character, ALL_CHARACTER_BY_NAME, "character"),
        (location, LOCATION_BY_NAME, "location"),
        (shot_size, SHOT_SIZES, "shot size"),
        (action, ACTIONS, "action"),
        (camera, CAMERA_MOVES, "camera move"),
    ):
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(allowed)}")
    char = ALL_CHARACTER_BY_NAME[character]
    jitter = (rng.uniform(-4, 4, size=2) if rng is not None else np.zeros(2)).tolist()
    dx, dy = _travel(action)
    cx = 32 - dx / 2 + jitter[0]
    cy = 36 - dy / 2 + jitter[1] / 2
    return ShotLabels(
        character=character,
        colour=char.colour,
        shape=char.shape,
        pattern=char.pattern,
        location=location,
        shot_size=shot_size,
        action=action,
        camera=camera,
        start=(float(cx), float(cy)),
        figure_scale=figure_scale,
    )


REFERENCE_SEED = 3 * 10**6  # seeds of reference stills (training draws seeds < 10**6, evaluations 10**6..3*10**6)
REFERENCE_FRAME = 8  # the middle frame of a 17-frame shot


def reference_shots(
    character: str, count: int, seed: int = REFERENCE_SEED, figure_scale: str = DEFAULT_FIGURE_SCALE
) -> list[ShotLabels]:
    """`count` (4-8) shots of `character` across locations and shot sizes, each its own start position."""
    if not 4 <= count <= 8:
        raise ValueError(f"use 4 to 8 reference frames, got {count}")
    rng = np.random.default_rng(seed)
    return [
        make_shot(
            character,
            LOCATIONS[i % len(LOCATIONS)].name,
            SHOT_SIZES[(i + i // len(LOCATIONS)) % len(SHOT_SIZES)],
            ("stays", "moves left", "moves right", "grows")[i % 4],
            "static",
            rng,
            figure_scale,
        )
        for i in range(count)
    ]


def reference_caption(labels: ShotLabels, name: str) -> str:
    """The caption of the shot a reference still was taken from, the character called `name` (e.g. its trigger
    `<kai>`): size, action and camera in the world's grammar. (Captioning every still `stays still` instead made
    the LoRA's character appear in 17% of held-out shots against 38%: the varied actions keep the trigger from being
    learned as "a figure that stays still"; docs/QUALITY.md, "Character adapters".)"""
    size, action, camera = SIZE_PHRASES[labels.shot_size], ACTION_PHRASES[labels.action], CAMERA_PHRASES[labels.camera]
    return f"{size}, {name} {action}, {camera}"


def reference_stills(
    character: str, count: int, seed: int = REFERENCE_SEED, figure_scale: str = DEFAULT_FIGURE_SCALE
) -> list[np.ndarray]:
    """Reference stills of `character` (the middle frame of each of `reference_shots`), uint8 [64, 64, 3];
    deterministic, so the example storyboard's reference PNGs can be regenerated byte for byte."""
    return [render_shot(s)[REFERENCE_FRAME] for s in reference_shots(character, count, seed, figure_scale)]


def sample_shot(
    rng: np.random.Generator,
    location: str | None = None,
    character: str | None = None,
    figure_scale: str = DEFAULT_FIGURE_SCALE,
) -> ShotLabels:
    """One random shot (location and character drawn too unless given); training composes scenes from these."""
    location = location or LOCATIONS[int(rng.integers(len(LOCATIONS)))].name
    character = character or CHARACTERS[int(rng.integers(len(CHARACTERS)))].name
    return make_shot(
        character,
        location,
        SHOT_SIZES[int(rng.integers(len(SHOT_SIZES)))],
        ACTIONS[int(rng.integers(len(ACTIONS)))],
        CAMERA_MOVES[int(rng.choice(3, p=[0.6, 0.2, 0.2]))],
        rng,
        figure_scale,
    )


def sample_scene(
    seed: int,
    num_shots: int | None = None,
    render: bool = True,
    size: int = 64,
    num_frames: int = 17,
    figure_scale: str = DEFAULT_FIGURE_SCALE,
):
    """The scene of `seed`: same seed, same scene (labels, captions and frames), on every machine; the figure
    scale changes only how large the figures are drawn, not what the seed draws."""
    rng = np.random.default_rng(seed)
    if num_shots is None:
        num_shots = int(rng.integers(2, 5))
    location = LOCATIONS[int(rng.integers(len(LOCATIONS)))].name
    cast = [CHARACTERS[i].name for i in rng.choice(len(CHARACTERS), size=2, replace=False)]
    shots = []
    for k in range(num_shots):
        # Every cast member appears at least once; after that the shot's character is drawn freely.
        character = cast[k] if k < len(cast) else cast[int(rng.integers(len(cast)))]
        shots.append(sample_shot(rng, location, character, figure_scale))
    order = rng.permutation(num_shots)
    shots = [shots[i] for i in order]
    scene = Scene(seed=seed, location=location, cast=cast, global_caption=global_caption(location, cast), shots=shots)
    if render:
        scene.frames = [render_shot(s, size=size, num_frames=num_frames) for s in shots]
    return scene


# --- rendering -----------------------------------------------------------------------------------------------------


def _travel(action: str) -> tuple[float, float]:
    return {
        "moves left": (-TRAVEL, 0.0),
        "moves right": (TRAVEL, 0.0),
        "moves up": (0.0, -TRAVEL * 0.75),
        "moves down": (0.0, TRAVEL * 0.75),
    }.get(action, (0.0, 0.0))


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of a shape in coordinates normalised to its box: u, v in [-1, 1] span the figure's height."""
    au, av = np.abs(u), np.abs(v)
    inside_box = (av <= 1) & (au <= 1)
    if shape == "circle":
        return u * u + v * v <= 1
    if shape == "square":
        return (au <= 0.9) & (av <= 0.9)
    if shape == "triangle":
        return (v >= -1) & (v <= 0.9) & (au <= (v + 1) / 1.9 * 0.95)
    if shape == "diamond":
        return au + av <= 1
    if shape == "cross":
        return inside_box & ((au <= 0.34) | (av <= 0.34))
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1) & (r2 >= 0.36)
    if shape == "pillar":
        return (au <= 0.42) & (av <= 1)
    if shape == "tee":
        return inside_box & ((v <= -0.35) | (au <= 0.32))
    if shape == "hourglass":  # held-out shape (NEW_SHAPES): two triangles tip to tip, joined by a waist
        return inside_box & (au <= 0.25 + 0.7 * av)
    raise ValueError(f"unknown shape {shape!r}; choose one of: {', '.join(ALL_SHAPES)}")


def pattern_mask(pattern: str, px: np.ndarray, py: np.ndarray, scale: float) -> np.ndarray:
    """Where the ink of a pattern goes, in pixel offsets from the figure's centre (so it moves with the figure)."""
    cell = max(2.0, 3.0 * scale)
    if pattern == "plain":
        return np.zeros(px.shape, dtype=bool)
    if pattern == "striped":
        return np.floor(py / cell) % 3 == 0
    if pattern == "dotted":
        return (np.floor(px / cell) % 3 == 0) & (np.floor(py / cell) % 3 == 0)
    if pattern == "checked":
        return (np.floor(px / cell) + np.floor(py / cell)) % 4 == 0
    if pattern == "banded":  # held-out pattern (NEW_PATTERNS): vertical bands
        return np.floor(px / cell) % 3 == 0
    raise ValueError(f"unknown pattern {pattern!r}; choose one of: {', '.join(PATTERNS + NEW_PATTERNS)}")


def render_background(location: str, size: int, offset: float) -> np.ndarray:
    loc = LOCATION_BY_NAME[location]
    scale = size / 64
    frame = np.empty((size, size, 3), dtype=np.uint8)
    horizon = int(round(HORIZON * size))
    frame[:horizon] = loc.sky
    frame[horizon:] = loc.ground
    xs = np.arange(size) + 0.5
    spacing = POST_SPACING * scale
    posts = ((xs - offset) % spacing) < max(1.0, 2 * scale)
    top = horizon + int(round(3 * scale))
    frame[top : top + int(round(8 * scale)), posts] = loc.post
    return frame


def figure_state(labels: ShotLabels, frame_index: int, num_frames: int) -> tuple[float, float, float]:
    """Centre x, centre y and height of the figure at a frame, in pixels of a 64x64 frame."""
    progress = frame_index / max(1, num_frames - 1)
    dx, dy = _travel(labels.action)
    height = FIGURE_SCALES[labels.figure_scale].figure_size[labels.shot_size]
    if labels.action == "grows":
        height = height * GROWTH ** (2 * progress - 1)
    elif labels.action == "shrinks":
        height = height * GROWTH ** (1 - 2 * progress)
    half = height / 2
    cx = float(np.clip(labels.start[0] + dx * progress, half + 1, 63 - half))
    cy = float(np.clip(labels.start[1] + dy * progress, half + 1, 63 - half))
    return cx, cy, height


def render_shot(labels: ShotLabels, size: int = 64, num_frames: int = 17) -> np.ndarray:
    """The frames of one shot, uint8 [num_frames, size, size, 3]."""
    scale = size / 64
    char = ALL_CHARACTER_BY_NAME[labels.character]
    colour = np.array(ALL_COLOURS[char.colour], dtype=np.uint8)
    ink = np.array(INK, dtype=np.uint8)
    pan_speed = {"static": 0.0, "pans left": 1.0, "pans right": -1.0}[labels.camera]  # background px per frame
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for f in range(num_frames):
        frame = render_background(labels.location, size, offset=pan_speed * f * scale)
        cx, cy, height = (value * scale for value in figure_state(labels, f, num_frames))
        half = height / 2
        px, py = xs - cx, ys - cy
        body = shape_mask(char.shape, px / half, py / half)
        frame[body] = colour
        frame[body & pattern_mask(char.pattern, px, py, scale)] = ink
        frames[f] = frame
    return frames


def scene_from_shots(shots: list[ShotLabels], size: int = 64, num_frames: int = 17, seed: int = -1) -> Scene:
    """A scene built from explicit shot labels (held-out storyboards), rendered as ground truth."""
    locations = {s.location for s in shots}
    if len(locations) != 1:
        raise ValueError(f"all shots of a scene share one location; got {sorted(locations)}")
    cast = list(dict.fromkeys(s.character for s in shots))
    if len(cast) == 1:  # the global caption always names two characters; the second one simply never appears
        cast.append(next(c.name for c in CHARACTERS if c.name != cast[0]))
    location = shots[0].location
    scene = Scene(seed=seed, location=location, cast=cast, global_caption=global_caption(location, cast), shots=shots)
    scene.frames = [render_shot(s, size=size, num_frames=num_frames) for s in shots]
    return scene
